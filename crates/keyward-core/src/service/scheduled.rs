//! Work the scheduler does without a caller: rotations due under a policy, expirations, and the
//! automatic purge of keys deleted long ago.
//!
//! Several server processes may share one store, each running a scheduler. Each change is a
//! compare-and-swap on the key's revision (as every key write is), so when two schedulers pick
//! the same key, exactly one change commits and the other sees a conflict and moves on: no key
//! is rotated twice for one due date, expired twice or purged twice.

use super::{Caller, KeyService, transition};
use crate::op;
use crate::pipeline::key_target;
use crate::{Action, DueWork, KeyError, KeyRecord, KeyState, Target, Verified};

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerReport {
    /// Keys rotated under their rotation policy.
    pub rotated: u32,
    /// Keys moved to Deactivated past their expiration date.
    pub expired: u32,
    /// Deleted keys purged.
    pub purged: u32,
    /// Items another process changed first (skipped, not failed).
    pub lost_races: u32,
    /// Items that failed (logged by the caller; retried next pass).
    pub failed: u32,
}

/// The identity the scheduler's audit events name.
pub const SCHEDULER_SUBJECT: &str = "keyward-scheduler";

impl KeyService {
    /// One pass over the keys with due work, at most `limit` of them.
    pub async fn run_due_work(&self, limit: u32) -> Result<SchedulerReport, KeyError> {
        let now = self.clock.now();
        let due = DueWork {
            rotate_before: now,
            expire_before: now,
            purge_deleted_before: now - self.config.auto_purge_after,
        };
        let mut report = SchedulerReport::default();
        for key in self.store.due_keys(&due, limit).await? {
            // Only the instance, to name the system caller; the key is verified before any use.
            let caller = Caller::system(
                key.peek_unverified().instance,
                SCHEDULER_SUBJECT,
                format!("scheduler-{}", uuid::Uuid::new_v4()),
            );
            let outcome = match self.verify_key(key) {
                Ok(key) => self.due_item(&caller, key, &due, &mut report).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => {}
                Err(KeyError::Conflict) => report.lost_races += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }

    async fn due_item(
        &self,
        caller: &Caller,
        key: Verified<KeyRecord>,
        due: &DueWork,
        report: &mut SchedulerReport,
    ) -> Result<(), KeyError> {
        let mut key = key.into_inner();
        if key.purged_at.is_some() {
            return Ok(());
        }
        if key.state == KeyState::Destroyed {
            if key
                .deleted_at
                .is_some_and(|t| t <= due.purge_deleted_before)
            {
                self.pipe
                    .run(&op::PURGE, caller, key_target(key.id), async |ctx| {
                        ctx.authorize(Target::Key(key.id, &key.key_ring))?;
                        self.erase(ctx, key, self.clock.now()).await
                    })
                    .await?;
                report.purged += 1;
            }
            return Ok(());
        }
        if key.state == KeyState::Active && key.expiration.is_some_and(|t| t <= due.expire_before) {
            self.pipe
                .run(&op::EXPIRE, caller, key_target(key.id), async |ctx| {
                    ctx.authorize(Target::Key(key.id, &key.key_ring))?;
                    let now = self.clock.now();
                    key.state = transition(key.state, Action::Expire)?;
                    key.state_changed_at = now;
                    key.next_rotation_at = None;
                    self.save(ctx, &mut key, None, now, crate::Deletion::default())
                        .await
                })
                .await?;
            report.expired += 1;
            return Ok(());
        }
        if key.state == KeyState::Active
            && key.next_rotation_at.is_some_and(|t| t <= due.rotate_before)
            && self
                .next_rotation(&key)
                .is_some_and(|t| t <= due.rotate_before)
        {
            let (id, revision) = (key.id, key.revision);
            self.pipe
                .run(&op::ROTATE, caller, key_target(id), async |ctx| {
                    self.rotate_in(ctx, caller, id, None, Some(revision)).await
                })
                .await?;
            report.rotated += 1;
        }
        Ok(())
    }
}
