//! The deletion lifecycle after `delete`: dual authorization, restore within the restore window,
//! and purge, which erases a key's material for good.

use keyward_crypto::Secret;
use time::OffsetDateTime;

use super::{Caller, KeyService, check_material_size, transition};
use crate::op;
use crate::pipeline::{Ctx, key_target};
use crate::{
    Action, DeletionAuthorization, EventKind, KeyError, KeyId, KeyNotice, KeyRecord, Rule,
    StoreError,
};

impl KeyService {
    /// First authorization of a dual-authorization delete: another identity may then delete the
    /// key within the dual-authorization window.
    pub async fn set_key_for_deletion(
        &self,
        caller: &Caller,
        id: KeyId,
    ) -> Result<KeyRecord, KeyError> {
        self.mark_for_deletion(caller, id, true).await
    }

    /// Withdraws a `setKeyForDeletion`.
    pub async fn unset_key_for_deletion(
        &self,
        caller: &Caller,
        id: KeyId,
    ) -> Result<KeyRecord, KeyError> {
        self.mark_for_deletion(caller, id, false).await
    }

    async fn mark_for_deletion(
        &self,
        caller: &Caller,
        id: KeyId,
        set: bool,
    ) -> Result<KeyRecord, KeyError> {
        let verb = if set {
            &op::SET_KEY_FOR_DELETION
        } else {
            &op::UNSET_KEY_FOR_DELETION
        };
        self.pipe
            .run(verb, caller, key_target(id), async |ctx| {
                let mut key = self.load(ctx, caller, id).await?.into_inner();
                transition(self.effective_state(&key), Action::AuthorizeDeletion)?;
                if !key.dual_auth_delete.as_ref().is_some_and(|p| p.enabled) {
                    return Err(KeyError::Refused(
                        Rule::DualAuthNotEnabled,
                        "the key has no dual authorization delete policy".into(),
                    ));
                }
                let now = self.clock.now();
                key.deletion_authorized = set.then(|| DeletionAuthorization {
                    by: caller.subject().to_owned(),
                    at: now,
                });
                self.save(ctx, &mut key, None, now, crate::Deletion::default())
                    .await?;
                Ok(key)
            })
            .await
    }

    /// Refuses the delete of a dual-authorization key unless another identity authorized it
    /// within the window.
    pub(super) fn check_dual_auth(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        now: OffsetDateTime,
    ) -> Result<(), KeyError> {
        if !key.dual_auth_delete.as_ref().is_some_and(|p| p.enabled) {
            return Ok(());
        }
        match &key.deletion_authorized {
            Some(a) if now < a.at + self.config.dual_auth_window => {
                if a.by == caller.subject() {
                    Err(KeyError::Refused(
                        Rule::DualAuthRequired,
                        "the identity that set the key for deletion cannot also delete it: a \
                         second identity must"
                            .into(),
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Err(KeyError::Refused(
                Rule::DualAuthRequired,
                "the key has a dual authorization delete policy: another identity must first \
                 set it for deletion (actions/setKeyForDeletion)"
                    .into(),
            )),
        }
    }

    /// Brings a deleted key back within the restore window. An imported key needs its current
    /// material again (`payload`), as in Key Protect; it must match what the key held.
    pub async fn restore(
        &self,
        caller: &Caller,
        id: KeyId,
        payload: Option<Secret>,
    ) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(&op::RESTORE, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                let now = self.clock.now();
                let next = transition(key.state, Action::Restore)?;
                let deleted_at = key.deleted_at.ok_or(KeyError::IntegrityFailure)?;
                if now < key.state_changed_at + self.config.enable_after_disable {
                    return Err(KeyError::ChangeTooSoon(
                        self.config.enable_after_disable.as_secs(),
                    ));
                }
                if key.expiration.is_some_and(|t| t <= now) {
                    return Err(KeyError::Refused(
                        Rule::KeyExpired,
                        "the key is past its expiration date and cannot be restored".into(),
                    ));
                }
                if now >= deleted_at + self.config.restore_window {
                    return Err(KeyError::Refused(
                        Rule::RestoreWindowPassed,
                        format!(
                            "the key can be restored only within {} days of its deletion",
                            self.config.restore_window.as_secs() / 86_400
                        ),
                    ));
                }
                match (key.imported, payload) {
                    (true, Some(p)) => {
                        check_material_size(key.kind, p.len())?;
                        let (_, material) =
                            self.version_material(&key, key.current_version).await?;
                        if !material.ct_eq(&p) {
                            return Err(KeyError::Refused(
                                Rule::RestoreMaterialMismatch,
                                "payload: does not match the key material the key was deleted with"
                                    .into(),
                            ));
                        }
                    }
                    (true, None) => {
                        return Err(KeyError::Refused(
                            Rule::RestorePayloadRequired,
                            "payload: an imported key is restored with its key material".into(),
                        ));
                    }
                    (false, Some(_)) => {
                        return Err(KeyError::InvalidInput(
                            "payload: only imported keys are restored with a payload".into(),
                        ));
                    }
                    (false, None) => {}
                }
                let mut key = key.into_inner();
                key.state = next;
                key.state_changed_at = now;
                key.deleted_at = None;
                key.deleted_by = None;
                key.next_rotation_at = self.next_rotation(&key);
                self.save(ctx, &mut key, None, now, crate::Deletion::default())
                    .await?;
                Ok(key)
            })
            .await
    }

    /// Erases a deleted key's material for good, once the purge wait has passed. Returns the
    /// tombstone. Nothing can unwrap under the key afterwards, not even after a restart.
    pub async fn purge(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(&op::PURGE, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                let now = self.clock.now();
                transition(key.state, Action::Purge)?;
                let deleted_at = key.deleted_at.ok_or(KeyError::IntegrityFailure)?;
                if now < deleted_at + self.config.purge_wait {
                    return Err(KeyError::Refused(
                        Rule::PurgeTooEarly,
                        format!(
                            "a deleted key can be purged {} hours after its deletion",
                            self.config.purge_wait.as_secs() / 3600
                        ),
                    ));
                }
                self.erase(ctx, key.into_inner(), now).await
            })
            .await
    }

    /// Writes the tombstone and drops the versions, in one transaction.
    pub(super) async fn erase(
        &self,
        ctx: &mut Ctx<'_>,
        mut key: KeyRecord,
        now: OffsetDateTime,
    ) -> Result<KeyRecord, KeyError> {
        key.purged_at = Some(now);
        key.revision = key.revision.checked_add(1).ok_or(KeyError::Conflict)?;
        key.updated_at = now;
        key.next_rotation_at = None;
        key.aliases.clear();
        self.sign_key(&mut key)?;
        let event = ctx.record_key(&key, None)?;
        let notice = KeyNotice {
            kind: EventKind::Purge,
            time: now,
            force_delete: false,
            override_prevention: false,
        };
        let purged = self
            .store
            .purge_key_notifying(&key, &event, Some(&notice))
            .await;
        self.cache.invalidate(key.id);
        purged.map_err(|e| match e {
            StoreError::Conflict => KeyError::Conflict,
            e => KeyError::Store(e),
        })?;
        Ok(key)
    }
}
