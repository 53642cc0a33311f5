//! Key policies (rotation, dual-authorization delete) and instance policies.

use super::{Caller, KeyService, authorize, check_months, transition};
use crate::access::{Operation, Target};
use crate::{
    Action, DualAuthPolicy, InstancePolicies, InstancePolicy, KeyError, KeyId, KeyKind, KeyRecord,
    Outcome, PolicyMeta, PolicySetting, RotationPolicy, Rule,
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
        let result = self.load(caller, id, Operation::ReadKeyPolicies).await;
        self.audit(caller, "kms.policies.read", Some(id), &result, |k| {
            (Some(k.state), None)
        })
        .await?;
        result
    }

    /// Sets a key's policies. Rotation policies are for root keys; a dual-authorization policy,
    /// once enabled, cannot be disabled.
    pub async fn put_key_policies(
        &self,
        caller: &Caller,
        id: KeyId,
        update: KeyPolicyUpdate,
    ) -> Result<KeyRecord, KeyError> {
        let action = "kms.policies.write";
        let result = async {
            let mut key = self.load(caller, id, Operation::WriteKeyPolicies).await?;
            // A deleted key's policies no longer matter; Key Protect refuses the change.
            transition(key.state, Action::Modify)?;
            let now = self.clock.now();
            let meta = |old: Option<&PolicyMeta>| PolicyMeta {
                created_at: old.map_or(now, |m| m.created_at),
                created_by: old.map_or_else(|| caller.subject.clone(), |m| m.created_by.clone()),
                updated_at: now,
                updated_by: caller.subject.clone(),
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
            self.save(caller, action, &mut key, None, now).await?;
            Ok(key)
        }
        .await;
        self.audit_failure(caller, action, Some(id), &result)
            .await?;
        result
    }

    /// The instance's policies.
    pub async fn instance_policies(
        &self,
        caller: &Caller,
        op: Operation,
    ) -> Result<InstancePolicies, KeyError> {
        let result = async {
            authorize(caller, op, Target::Instance)?;
            self.policies_of(caller.instance).await
        }
        .await;
        self.audit(caller, "kms.instancepolicies.read", None, &result, |_| {
            (None, None)
        })
        .await?;
        result
    }

    /// Creates or replaces instance policies, all or none.
    pub async fn put_instance_policies(
        &self,
        caller: &Caller,
        updates: Vec<InstancePolicyUpdate>,
    ) -> Result<InstancePolicies, KeyError> {
        let action = "kms.instancepolicies.write";
        let result = async {
            authorize(caller, Operation::WriteInstancePolicies, Target::Instance)?;
            let current = self.policies_of(caller.instance).await?;
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
                    instance: caller.instance,
                    enabled: u.enabled,
                    setting: u.setting,
                    meta: PolicyMeta {
                        created_at: old.map_or(now, |m| m.created_at),
                        created_by: old
                            .map_or_else(|| caller.subject.clone(), |m| m.created_by.clone()),
                        updated_at: now,
                        updated_by: caller.subject.clone(),
                    },
                    signature: Vec::new(),
                };
                p.signature = self.custody.sign_record(&p.signed_bytes())?;
                changed.push(p);
            }
            let event = self.event(caller, action, None, Outcome::Success, 204, None);
            self.store.put_instance_policies(&changed, &event).await?;
            self.policies_of(caller.instance).await
        }
        .await;
        self.audit_failure(caller, action, None, &result).await?;
        result
    }
}
