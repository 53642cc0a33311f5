//! A key's state changes: rotate, disable, enable and delete.

use super::{Caller, GENERATED_KEY_BYTES, KeyService, Material, invalid, transition};
use crate::access::{Operation, Target};
use crate::op::{self, Op};
use crate::pipeline::Actor;
use crate::pipeline::{Ctx, key_target};
use crate::{Action, Deletion, KeyError, KeyId, KeyRecord};

impl KeyService {
    /// Creates a new version of a root key: generated, or from `payload` for an imported key.
    pub async fn rotate(
        &self,
        caller: &Caller,
        id: KeyId,
        payload: Option<Material>,
    ) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(&op::ROTATE, caller, key_target(id), async |ctx| {
                self.rotate_in(ctx, caller, id, payload, None).await
            })
            .await
    }

    /// Rotation by hand (`scheduled_at: None`, at most once per interval) or by the scheduler
    /// under the key's rotation policy, which names the revision it found due: if the key has
    /// changed since (another scheduler rotated it), this is a lost race, not a second rotation.
    pub(super) async fn rotate_in(
        &self,
        ctx: &mut Ctx<'_>,
        caller: &Caller,
        id: KeyId,
        payload: Option<Material>,
        scheduled_at: Option<u64>,
    ) -> Result<KeyRecord, KeyError> {
        let (key, _) = self.load_root_fresh(ctx, caller, id).await?;
        let mut key = key.into_inner();
        if scheduled_at.is_some_and(|r| r != key.revision) {
            return Err(KeyError::Conflict);
        }
        transition(self.effective_state(&key), Action::Rotate)?;
        let now = self.clock.now();
        if scheduled_at.is_none()
            && let Some(last) = key.last_rotated_at
            && now < last + self.config.min_rotation_interval
        {
            return Err(KeyError::RotationTooSoon(
                self.config.min_rotation_interval.as_secs(),
            ));
        }
        let material = match (key.imported, payload) {
            (true, Some(m)) => self.material_in(caller, key.kind, m, now).await?,
            (true, None) => return Err(KeyError::PayloadRequired),
            (false, Some(_)) => {
                return Err(invalid(
                    "payload: only imported keys are rotated with a payload".to_owned(),
                ));
            }
            (false, None) => self.custody.generate_material(GENERATED_KEY_BYTES)?,
        };
        let number = key
            .current_version
            .checked_add(1)
            .ok_or(KeyError::Conflict)?;
        let version = self.new_version(key.instance, key.id, number, &material, now)?;
        key.current_version = number;
        key.current_version_id = version.id;
        key.bits = u16::try_from(material.len().saturating_mul(8)).unwrap_or(u16::MAX);
        key.last_rotated_at = Some(now);
        key.next_rotation_at = self.next_rotation(&key);
        self.save(
            ctx,
            &mut key,
            Some(&version),
            now,
            crate::Deletion::default(),
        )
        .await?;
        Ok(key)
    }

    /// Suspends a key: wrap and unwrap are refused until it is enabled.
    pub async fn disable(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.change_state(&op::DISABLE, caller, id, Deletion::default())
            .await
    }

    /// Reactivates a suspended key.
    pub async fn enable(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.change_state(&op::ENABLE, caller, id, Deletion::default())
            .await
    }

    /// Destroys a key: its material can no longer be used, until a restore within the restore
    /// window. A key under a dual-authorization policy needs a live `setKeyForDeletion` by
    /// another identity.
    pub async fn delete(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.delete_forced(caller, id, Deletion::default()).await
    }

    /// [`KeyService::delete`] with Key Protect's `force`: a key with registrations is deleted
    /// only with `force`, and never while one of them has `preventKeyDeletion`, unless an
    /// operator overrides that: `override_prevention` (with `force`) needs KeyPurge on the key
    /// or Administrator, and the delete's audit event records it (issue 18, item 7: a Reader
    /// service must not be able to pin a key for ever).
    pub async fn delete_forced(
        &self,
        caller: &Caller,
        id: KeyId,
        deletion: Deletion,
    ) -> Result<KeyRecord, KeyError> {
        self.change_state(&op::DELETE, caller, id, deletion).await
    }

    async fn change_state(
        &self,
        verb: &'static Op,
        caller: &Caller,
        id: KeyId,
        deletion: Deletion,
    ) -> Result<KeyRecord, KeyError> {
        let action = verb.lifecycle.ok_or(KeyError::IntegrityFailure)?;
        self.pipe
            .run(verb, caller, key_target(id), async |ctx| {
                let mut key = self.load(ctx, caller, id).await?.into_inner();
                let now = self.clock.now();
                let next = transition(self.effective_state(&key), action)?;
                if action == Action::Enable
                    && now < key.state_changed_at + self.config.enable_after_disable
                {
                    return Err(KeyError::ChangeTooSoon(
                        self.config.enable_after_disable.as_secs(),
                    ));
                }
                if action == Action::Delete {
                    if deletion.override_prevention {
                        if !deletion.force {
                            return Err(invalid(
                                "preventKeyDeletionOverride: only with force=true".into(),
                            ));
                        }
                        let target = Target::Key(key.id, &key.key_ring);
                        if caller.check(Operation::Purge, target).is_err()
                            && caller
                                .check(Operation::ManageAccess, Target::Instance)
                                .is_err()
                        {
                            return Err(KeyError::Forbidden(Operation::Purge));
                        }
                        ctx.note("preventKeyDeletionOverride=true".to_owned());
                    }
                    self.check_registrations_allow_delete(&key, deletion)
                        .await?;
                    self.check_dual_auth(caller, &key, now)?;
                    key.deleted_at = Some(now);
                    key.deleted_by = Some(caller.subject().to_owned());
                    key.deletion_authorized = None;
                }
                key.state = next;
                key.state_changed_at = now;
                self.save(ctx, &mut key, None, now, deletion).await?;
                Ok(key)
            })
            .await
    }
}
