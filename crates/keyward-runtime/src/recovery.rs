//! Offline recovery (issue 18, item 17): what an operator holding the data directory and its
//! custody (keystore and unseal secret, or the HSMs) can do when no administrator can: turn off
//! an instance's allowedIP policy that locks every administrator out, and give the bootstrap
//! administrator a new API key (its identity unlocked, or made again, with its Administrator
//! policy). Each change is signed by custody and audited as `keyward-recovery`, in the same
//! transaction as the change, like every write.

use std::sync::Arc;

use anyhow::Context;
use keyward_core::op::{self, Op};
use keyward_core::{
    ApiKeyRecord, AuditEvent, Custody, Initiator, InstanceRecord, Outcome, PolicyKind, Store,
};
use keyward_iam::ApiKey;
use time::OffsetDateTime;

use crate::bootstrap::{ADMIN_SUBJECT, ensure_admin_access};

/// The instance id type recovery commands take.
pub use keyward_core::InstanceId;

/// Who the audit trail names for a recovery.
pub const RECOVERY_ACTOR: &str = "keyward-recovery";

fn event(verb: &Op, instance: Option<InstanceId>, target: String) -> AuditEvent {
    let initiator = Initiator {
        id: RECOVERY_ACTOR.into(),
        address: None,
    };
    AuditEvent {
        target: Some(target),
        instance: instance.map(|i| i.to_string()),
        ..AuditEvent::new(
            verb.action,
            Outcome::Success,
            verb.status,
            initiator,
            format!("recovery-{}", uuid::Uuid::new_v4().simple()),
            OffsetDateTime::now_utc(),
        )
    }
}

async fn instance(store: &Arc<dyn Store>, id: InstanceId) -> anyhow::Result<InstanceRecord> {
    store
        .instances()
        .await?
        .into_iter()
        .find(|i| i.id == id)
        .with_context(|| format!("no instance {id} in this store"))
}

/// Turns off `instance`'s allowedIP policy (its addresses are kept, as a disable through the
/// API keeps them). Returns `false` when the instance has none in force.
pub async fn disable_allowed_ip(
    store: &Arc<dyn Store>,
    custody: &Arc<dyn Custody>,
    id: InstanceId,
) -> anyhow::Result<bool> {
    instance(store, id).await?;
    let policies = store.instance_policies(id).await?;
    let Some(stored) = policies
        .into_iter()
        .map(keyward_core::Unverified::unverified_inner)
        .find(|p| p.setting.kind() == PolicyKind::AllowedIp)
    else {
        return Ok(false);
    };
    if !stored.enabled {
        return Ok(false);
    }
    let mut policy = stored;
    policy.enabled = false;
    policy.meta.updated_at = OffsetDateTime::now_utc();
    policy.meta.updated_by = RECOVERY_ACTOR.into();
    policy.signature = custody
        .sign_record(&policy.signed_bytes())
        .context("signing the policy")?;
    store
        .put_instance_policies(
            std::slice::from_ref(&policy),
            &event(&op::WRITE_INSTANCE_POLICIES, Some(id), "allowedIP".into()),
        )
        .await?;
    Ok(true)
}

/// A new API key for the bootstrap administrator of `instance`'s account: its identity is
/// unlocked (or made again) and given its Administrator policy if it lost it. The key is
/// returned once; only its hash is stored.
pub async fn new_admin_api_key(
    store: &Arc<dyn Store>,
    custody: &Arc<dyn Custody>,
    id: InstanceId,
) -> anyhow::Result<ApiKey> {
    let account = instance(store, id).await?.account;
    let key = ApiKey::generate().map_err(|e| anyhow::anyhow!("generating an API key: {e}"))?;
    let record = ApiKeyRecord {
        id: key.id.clone(),
        secret_hash: key.secret_hash,
        subject: ADMIN_SUBJECT.into(),
        account: account.clone(),
        name: "recovery administrator key".into(),
        created_at: OffsetDateTime::now_utc(),
        locked: false,
    };
    store
        .insert_api_key(&record, &event(&op::CREATE_API_KEY, None, key.id.clone()))
        .await?;
    if let Some(identity) = store.identity(ADMIN_SUBJECT).await?
        && identity.locked
    {
        store
            .set_identity_locked(
                &account,
                ADMIN_SUBJECT,
                false,
                &event(&op::UNLOCK_IDENTITY, None, ADMIN_SUBJECT.into()),
            )
            .await?;
    }
    // Makes the identity and its Administrator policy again if they were deleted.
    ensure_admin_access(store, custody).await?;
    Ok(key)
}
