//! The `Store` seam: durable records and audit events. A write returns only once it is on disk,
//! together with the audit event that describes it (same transaction).

use time::OffsetDateTime;

use crate::service::KeyFilter;
use crate::{AuditEvent, InstanceId, KeyId, KeyRecord, KeyVersion, KeyVersionId, WrappedMaterial};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A compare-and-swap write found the record changed, or a unique constraint was hit.
    #[error("conflicting concurrent write")]
    Conflict,
    /// A stored value could not be decoded (corruption outside Keyward).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store cannot serve (disk full, database locked for too long, writer gone).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A KMS instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    /// Its id (`bluemix-instance`).
    pub id: InstanceId,
    /// The account that owns it.
    pub account: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// An API key, stored hashed: `secret_hash` is SHA-256 of the secret part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public id (the first part of the API key string).
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// The IAM id of the subject it authenticates.
    pub subject: String,
    /// The subject's account.
    pub account: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// A locked key cannot be exchanged for tokens.
    pub locked: bool,
}

/// A token-signing key pair, its private half wrapped by custody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// JWT `kid`.
    pub kid: String,
    /// PKCS#8 private key, wrapped by the custody MKEK.
    pub private_key: WrappedMaterial,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// Durable storage for Keyward. Every method that changes state takes the audit event that
/// describes the change and commits both atomically; it returns only after the commit is durable.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// A key of an instance, or `None`.
    async fn key(&self, instance: InstanceId, id: KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// A key of an instance with its current version, in one read (the wrap/unwrap hot path).
    async fn key_with_current_version(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<(KeyRecord, KeyVersion)>, StoreError>;
    /// One version of a key by number.
    async fn key_version(&self, key: KeyId, number: u32) -> Result<Option<KeyVersion>, StoreError>;
    /// A version by its id.
    async fn key_version_by_id(
        &self,
        key: KeyId,
        id: KeyVersionId,
    ) -> Result<Option<KeyVersion>, StoreError>;
    /// All versions of a key, oldest first.
    async fn key_versions(&self, key: KeyId) -> Result<Vec<KeyVersion>, StoreError>;
    /// A page of an instance's keys matching `filter`, and the total matching.
    async fn keys(
        &self,
        instance: InstanceId,
        filter: &KeyFilter,
    ) -> Result<(Vec<KeyRecord>, u64), StoreError>;
    /// Inserts a new key with its first version.
    async fn insert_key(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Replaces a key record if its stored revision is `key.revision - 1`; optionally adds a version.
    async fn update_key(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Appends an audit event for an action that changed nothing (wrap, unwrap, a refusal).
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;

    /// Every instance.
    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError>;
    /// An instance by id.
    async fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError>;
    /// Inserts an instance.
    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// An API key by its public id.
    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Inserts an API key.
    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// All token-signing keys, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Inserts a token-signing key.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
}
