//! Master key rotation: moving every stored piece of wrapped material (key versions, the
//! token-signing key, import tokens' transit keys, webhook secrets) from older MKEK versions to the custody
//! backend's current one, online and resumably.
//!
//! Each item is replaced by a compare-and-swap on its old wrapped bytes, in its own durable write
//! with an audit event, so a rotation killed at any point leaves every item either on the old
//! MKEK or on the new one, never half-written, and running it again continues where it stopped.
//! Key versions are re-signed, because their signature covers the wrapped bytes; the version's
//! signature is verified before its material is touched.

use time::OffsetDateTime;

use crate::{
    AuditEvent, Custody, CustodyError, Initiator, InstanceId, KeyVersion, Outcome, StoreError,
    Unverified, Verified, WrappedMaterial,
};

/// A stored piece of wrapped material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrappedItem {
    /// A root or standard key's version (signed).
    KeyVersion {
        /// The owning key's instance (part of the signed bytes).
        instance: InstanceId,
        /// The version as stored.
        version: KeyVersion,
    },
    /// The access-token signing key.
    SigningKey {
        /// Its `kid`.
        kid: String,
        /// Its wrapped PKCS#8.
        material: WrappedMaterial,
    },
    /// An import token's transit private key.
    ImportToken {
        /// The instance the token belongs to.
        instance: InstanceId,
        /// Its wrapped PKCS#8.
        material: WrappedMaterial,
    },
    /// A webhook subscription's signing secret.
    WebhookSecret {
        /// The subscribed identity.
        recipient: String,
        /// The instance subscribed to.
        instance: InstanceId,
        /// The wrapped secret.
        material: WrappedMaterial,
    },
}

impl WrappedItem {
    /// The wrapped material it holds.
    pub fn material(&self) -> &WrappedMaterial {
        match self {
            WrappedItem::KeyVersion { version, .. } => &version.material,
            WrappedItem::SigningKey { material, .. }
            | WrappedItem::ImportToken { material, .. }
            | WrappedItem::WebhookSecret { material, .. } => material,
        }
    }

    /// A short description for audit events and progress output (no material).
    pub fn describe(&self) -> String {
        match self {
            WrappedItem::KeyVersion { version, .. } => {
                format!("key {} version {}", version.key_id, version.number)
            }
            WrappedItem::SigningKey { kid, .. } => format!("token-signing key {kid}"),
            WrappedItem::ImportToken { instance, .. } => format!("import token of {instance}"),
            WrappedItem::WebhookSecret {
                recipient,
                instance,
                ..
            } => format!("webhook secret of {recipient} on {instance}"),
        }
    }

    fn with_material(&self, material: WrappedMaterial) -> WrappedItem {
        let mut new = self.clone();
        match &mut new {
            WrappedItem::KeyVersion { version, .. } => version.material = material,
            WrappedItem::SigningKey { material: m, .. }
            | WrappedItem::ImportToken { material: m, .. }
            | WrappedItem::WebhookSecret { material: m, .. } => *m = material,
        }
        new
    }
}

/// Storage of wrapped material for master key rotation.
#[async_trait::async_trait]
pub trait RewrapStore: Send + Sync {
    /// Up to `limit` items whose material is not wrapped by `current`.
    async fn stale_wrapped(
        &self,
        current: &str,
        limit: u32,
    ) -> Result<Vec<WrappedItem>, StoreError>;

    /// Replaces `old` by `new` if the stored item still holds `old`'s material (compare and
    /// swap), committing `event` with it. `false`: the item changed or vanished meanwhile.
    async fn replace_wrapped(
        &self,
        old: &WrappedItem,
        new: &WrappedItem,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// How many stored items each wrapping key wraps (`wrapping key`, count).
    async fn wrapped_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
}

/// Why an item could not be moved.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    /// Custody failed (HSM down, unknown wrapping key, integrity).
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RewrapPass {
    /// Items moved to the current MKEK.
    pub moved: u64,
    /// Items that changed under us (moved again on the next pass).
    pub raced: u64,
}

/// Moves up to `limit` stale items to `custody`'s current MKEK; `on_item` is called after each.
/// Returns what it did; a pass that finds nothing stale returns zeros.
pub async fn rewrap_pass(
    custody: &dyn Custody,
    store: &dyn RewrapStore,
    limit: u32,
    mut on_item: impl FnMut(&WrappedItem),
) -> Result<RewrapPass, RewrapError> {
    let current = custody.current_wrapping_key()?;
    let mut pass = RewrapPass::default();
    for item in store.stale_wrapped(&current, limit).await? {
        let new = rewrap_item(custody, &item)?;
        if store
            .replace_wrapped(&item, &new, &event_for(&item))
            .await?
        {
            pass.moved += 1;
        } else {
            pass.raced += 1;
        }
        on_item(&item);
    }
    Ok(pass)
}

/// The item with its material unwrapped and wrapped again under the current MKEK; a key version
/// is verified first and signed again after.
pub fn rewrap_item(custody: &dyn Custody, item: &WrappedItem) -> Result<WrappedItem, RewrapError> {
    let material = match item {
        WrappedItem::KeyVersion { instance, version } => {
            let version =
                Verified::check_version_in(Unverified::new(version.clone()), *instance, custody)?;
            custody.unwrap_material(&version.material)?
        }
        _ => custody.unwrap_material(item.material())?,
    };
    let mut new = item.with_material(custody.wrap_material(&material)?);
    if let WrappedItem::KeyVersion { instance, version } = &mut new {
        version.signature = custody.sign_record(&version.signed_bytes(*instance))?;
    }
    Ok(new)
}

fn event_for(item: &WrappedItem) -> AuditEvent {
    let mut e = AuditEvent::new(
        crate::op::CUSTODY_REWRAP.action,
        Outcome::Success,
        200,
        Initiator {
            id: "keyward-rotate-master".into(),
            address: None,
        },
        "rotate-master".into(),
        OffsetDateTime::now_utc(),
    );
    match item {
        WrappedItem::KeyVersion { instance, version } => {
            e.instance = Some(instance.to_string());
            e.target = Some(version.key_id.to_string());
            e.key_version = Some(version.id.to_string());
        }
        WrappedItem::SigningKey { kid, .. } => e.target = Some(format!("signing-key/{kid}")),
        WrappedItem::ImportToken { instance, .. } => {
            e.instance = Some(instance.to_string());
            e.target = Some("import_token".into());
        }
        WrappedItem::WebhookSecret {
            recipient,
            instance,
            ..
        } => {
            e.instance = Some(instance.to_string());
            e.target = Some(format!("event_subscription/{recipient}"));
        }
    }
    e
}
