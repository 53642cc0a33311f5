//! Key policies (rotation, dual-authorization delete) and instance policies.

use super::{Caller, KeyService, check_months, transition};
use crate::access::Target;
use crate::op::{self, Op};
use crate::pipeline::key_target;
use crate::{
    Action, DualAuthPolicy, InstancePolicies, InstancePolicy, KeyError, KeyId, KeyKind, KeyRecord,
    PolicyMeta, PolicySetting, RotationPolicy, Rule,
};

/// A change to a key's policies; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct KeyPolicyUpdate {
    /// Rotation: (enabled, months).
    pub rotation: Option<(bool, u8)>,
    /// Dual-authorization delete.
    pub dual_auth_delete: Option<bool>,
}

/// A change to one instance policy.
#[derive(Debug, Clone)]
pub struct InstancePolicyUpdate {
    /// Whether it is in force.
    pub enabled: bool,
    /// What it says.
    pub setting: PolicySetting,
}

impl KeyService {
    /// A key's policies (the key record carries them).
    pub async fn key_policies(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(
                &op::READ_KEY_POLICIES,
                caller,
                key_target(id),
                async |ctx| Ok(self.load(ctx, caller, id).await?.into_inner()),
            )
            .await
    }

    /// Sets a key's policies. Rotation policies are for root keys; a dual-authorization policy,
    /// once enabled, cannot be disabled.
    pub async fn put_key_policies(
        &self,
        caller: &Caller,
        id: KeyId,
        update: KeyPolicyUpdate,
    ) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(
                &op::WRITE_KEY_POLICIES,
                caller,
                key_target(id),
                async |ctx| {
                    let mut key = self.load(ctx, caller, id).await?.into_inner();
                    // A deleted key's policies no longer matter; Key Protect refuses the change.
                    transition(key.state, Action::Modify)?;
                    let now = self.clock.now();
                    let meta = |old: Option<&PolicyMeta>| PolicyMeta {
                        created_at: old.map_or(now, |m| m.created_at),
                        created_by: old
                            .map_or_else(|| caller.subject().to_owned(), |m| m.created_by.clone()),
                        updated_at: now,
                        updated_by: caller.subject().to_owned(),
                    };
                    if let Some((enabled, interval_month)) = update.rotation {
                        if key.kind != KeyKind::Root {
                            return Err(KeyError::WrongKeyKind(
                                "rotation policies are for root keys (extractable: false)",
                            ));
                        }
                        check_months(interval_month)?;
                        key.rotation = Some(RotationPolicy {
                            enabled,
                            interval_month,
                            meta: meta(key.rotation.as_ref().map(|r| &r.meta)),
                        });
                        key.next_rotation_at = self.next_rotation(&key);
                    }
                    if let Some(enabled) = update.dual_auth_delete {
                        let was = key.dual_auth_delete.as_ref().is_some_and(|d| d.enabled);
                        if was && !enabled {
                            return Err(KeyError::Refused(
                        Rule::DualAuthPermanent,
                        "dualAuthDelete: a key's dual authorization policy cannot be disabled \
                         once enabled"
                            .into(),
                    ));
                        }
                        key.dual_auth_delete = Some(DualAuthPolicy {
                            enabled,
                            meta: meta(key.dual_auth_delete.as_ref().map(|d| &d.meta)),
                        });
                    }
                    self.save(ctx, &mut key, None, now, crate::Deletion::default())
                        .await?;
                    Ok(key)
                },
            )
            .await
    }

    /// The instance's policies, read as `verb` ([`op::READ_INSTANCE_POLICIES`], or
    /// [`op::READ_ALLOWED_IP_PORT`] for the private endpoint port).
    pub async fn instance_policies(
        &self,
        caller: &Caller,
        verb: &'static Op,
    ) -> Result<InstancePolicies, KeyError> {
        self.pipe
            .run_in(verb, caller, Target::Instance, async |_| {
                self.policies_of(caller.instance()).await
            })
            .await
    }

    /// Creates or replaces instance policies, all or none.
    pub async fn put_instance_policies(
        &self,
        caller: &Caller,
        updates: Vec<InstancePolicyUpdate>,
    ) -> Result<InstancePolicies, KeyError> {
        self.pipe
            .run_in(
                &op::WRITE_INSTANCE_POLICIES,
                caller,
                Target::Instance,
                async |ctx| {
                    let current = self.policies_of(caller.instance()).await?;
                    let now = self.clock.now();
                    let mut changed = Vec::with_capacity(updates.len());
                    for u in updates {
                        u.setting.validate()?;
                        let kind = u.setting.kind();
                        if changed
                            .iter()
                            .any(|p: &InstancePolicy| p.setting.kind() == kind)
                        {
                            return Err(KeyError::InvalidInput(format!(
                                "policy_type: {} appears more than once",
                                kind.name()
                            )));
                        }
                        let old = current.get(kind).map(|p| &p.meta);
                        let mut p = InstancePolicy {
                            instance: caller.instance(),
                            enabled: u.enabled,
                            setting: u.setting,
                            meta: PolicyMeta {
                                created_at: old.map_or(now, |m| m.created_at),
                                created_by: old.map_or_else(
                                    || caller.subject().to_owned(),
                                    |m| m.created_by.clone(),
                                ),
                                updated_at: now,
                                updated_by: caller.subject().to_owned(),
                            },
                            signature: Vec::new(),
                        };
                        p.signature = self.custody.sign_record(&p.signed_bytes())?;
                        changed.push(p);
                    }
                    let event = ctx.record()?;
                    self.store.put_instance_policies(&changed, &event).await?;
                    self.policies_of(caller.instance()).await
                },
            )
            .await
    }
}
