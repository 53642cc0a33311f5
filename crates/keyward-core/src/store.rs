//! The `Store` seam: durable records and audit events. A write returns only once it is on disk,
//! together with the audit event that describes it (same transaction). Every custody-signed record
//! a read returns is [`Unverified`]: only custody makes it usable.

use keyward_crypto::Canonical;
use time::OffsetDateTime;

use crate::events::{KeyNotice, RegistrationStore};
use crate::identity::{AccessPolicyRecord, AuthorizationRecord, IdentityRecord};
use crate::service::ImportTokenRecord;
use crate::service::KeyFilter;
use crate::{
    AuditEvent, InstanceId, InstancePolicy, KeyId, KeyRecord, KeyVersion, KeyVersionId, Page,
    Unverified, WrappedMaterial,
};

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

/// A key ring of an instance. Every instance also has the implicit `default` ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRingRecord {
    /// The instance.
    pub instance: InstanceId,
    /// The ring's id (its name).
    pub id: String,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
}

/// An alias of a key, unique within the instance, signed so it cannot be moved to another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// The instance.
    pub instance: InstanceId,
    /// The alias.
    pub alias: String,
    /// The key it names.
    pub key_id: KeyId,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Custody signature over [`AliasRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl AliasRecord {
    /// The bytes the signature covers: instance, alias and key.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/alias/v1")
            .field(self.instance.as_bytes())
            .field(self.alias.as_bytes())
            .field(self.key_id.as_bytes());
        c.finish()
    }
}

/// Outcome of deleting a key ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingDeletion {
    /// Deleted.
    Deleted,
    /// No such ring.
    NotFound,
    /// It holds keys that are not deleted.
    HasLiveKeys,
    /// It holds only deleted keys (which a forced delete first moves to `default`).
    HasDeletedKeys,
}

/// What the scheduler may have to do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueWork {
    /// Rotate keys whose `next_rotation_at` is at or before this.
    pub rotate_before: OffsetDateTime,
    /// Deactivate active keys whose expiration is at or before this.
    pub expire_before: OffsetDateTime,
    /// Purge deleted keys deleted at or before this.
    pub purge_deleted_before: OffsetDateTime,
}

/// Durable storage of identities, API key state, access policies, service authorizations and
/// refresh tokens. Part of every [`Store`]; kept apart so each backend implements it in its own
/// module.
#[async_trait::async_trait]
pub trait IamStore: Send + Sync {
    /// An identity by IAM id.
    async fn identity(&self, iam_id: &str) -> Result<Option<IdentityRecord>, StoreError>;
    /// The identities of an account, oldest first.
    async fn identities(&self, account: &str) -> Result<Vec<IdentityRecord>, StoreError>;
    /// Creates an identity; [`StoreError::Conflict`] when the IAM id exists.
    async fn insert_identity(
        &self,
        identity: &IdentityRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Locks or unlocks an identity of an account; `false` when there is none.
    async fn set_identity_locked(
        &self,
        account: &str,
        iam_id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Deletes an identity of an account with its API keys, refresh tokens, access policies and
    /// the registrations it owns on the account's keys; `false` when there is none.
    async fn delete_identity(
        &self,
        account: &str,
        iam_id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// The API keys of an account (hashes only), oldest first.
    async fn api_keys_of(&self, account: &str) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Locks or unlocks an API key of an account; `false` when there is none.
    async fn set_api_key_locked(
        &self,
        account: &str,
        id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Deletes an API key of an account and its refresh tokens; `false` when there is none.
    async fn delete_api_key(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Access policies of an account, all or those of one subject.
    async fn access_policies(
        &self,
        account: &str,
        subject: Option<&str>,
    ) -> Result<Vec<Unverified<AccessPolicyRecord>>, StoreError>;
    /// Creates an access policy.
    async fn insert_access_policy(
        &self,
        policy: &AccessPolicyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes an access policy of an account; `false` when there is none.
    async fn delete_access_policy(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Service-to-service authorizations of an account, all or those of one source service.
    async fn authorizations(
        &self,
        account: &str,
        source_service: Option<&str>,
    ) -> Result<Vec<Unverified<AuthorizationRecord>>, StoreError>;
    /// Creates an authorization. One made under a delegating authorization (`delegated_from`)
    /// is refused with `Conflict` when that one no longer exists, checked in the write's
    /// transaction, so no delegated authorization outlives the one it came from.
    async fn insert_authorization(
        &self,
        authorization: &AuthorizationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes an authorization of an account, and in the same transaction every authorization
    /// delegated from it (`delegated_from`); `false` when there is none.
    async fn delete_authorization(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Stores a refresh token's hash for an API key, as the first of a new family (the tokens
    /// that descend from one login by refreshes).
    async fn insert_refresh_token(
        &self,
        hash: [u8; 32],
        api_key_id: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Spends a refresh token at `now` (each is used once; any attempt spends it) and, when it
    /// was unspent and unexpired, stores `successor` in its family in the same transaction. A
    /// spent one presented again revokes its family: every token of it still unspent is spent
    /// (RFC 6819 5.2.2.3: a token used twice was stolen, so its descendants are too).
    async fn spend_refresh_token(
        &self,
        hash: [u8; 32],
        successor: Successor,
        now: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError>;
    /// Deletes refresh tokens, spent or not, past their expiry at `now`; how many.
    async fn purge_refresh_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The refresh token issued in exchange for a spent one: its hash and expiry (its API key and
/// family are the spent one's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successor {
    /// SHA-256 of the new token.
    pub hash: [u8; 32],
    /// When it expires.
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token found ([`IamStore::spend_refresh_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// No such token (never issued, purged, or its API key deleted).
    Unknown,
    /// It was unspent and is now spent; its successor was stored if it had not expired.
    Spent {
        /// Its API key.
        api_key_id: String,
        /// When it expires (or expired).
        expires_at: OffsetDateTime,
    },
    /// It was spent already: its family is revoked.
    Reused {
        /// Its API key.
        api_key_id: String,
        /// Tokens of its family this revoked (still unspent until now).
        revoked: u64,
    },
}

/// Durable storage for Keyward. Every method that changes state takes the audit event that
/// describes the change and commits both atomically; it returns only after the commit is durable.
#[async_trait::async_trait]
pub trait Store: IamStore + RegistrationStore + Send + Sync {
    /// A key of an instance, or `None`.
    async fn key(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<Unverified<KeyRecord>>, StoreError>;
    /// A number that changes whenever any key record or key version is updated or deleted
    /// (creating keys leaves it alone), read cheaply: the key cache reuses verified records
    /// while it stays the same. `None` (the default): the backend keeps none, and the cache
    /// relies on its TTL (and, on PostgreSQL, on change notifications) alone.
    async fn key_generation(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// A key of an instance with its current version, in one read (the wrap/unwrap hot path).
    async fn key_with_current_version(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<(Unverified<KeyRecord>, Unverified<KeyVersion>)>, StoreError>;
    /// One version of a key by number.
    async fn key_version(
        &self,
        key: KeyId,
        number: u32,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError>;
    /// A version by its id.
    async fn key_version_by_id(
        &self,
        key: KeyId,
        id: KeyVersionId,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError>;
    /// A page of a key's versions, newest first, and how many versions it has.
    async fn key_versions(
        &self,
        key: KeyId,
        page: Page,
    ) -> Result<(Vec<Unverified<KeyVersion>>, u64), StoreError>;
    /// A page of an instance's keys matching `filter`, and the total matching.
    async fn keys(
        &self,
        instance: InstanceId,
        filter: &KeyFilter,
    ) -> Result<(Vec<Unverified<KeyRecord>>, u64), StoreError>;
    /// Inserts a new key with its first version.
    async fn insert_key(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.insert_key_with_aliases(key, version, &[], event).await
    }
    /// Inserts a new key with its first version and aliases, all or nothing
    /// ([`StoreError::Conflict`] when an alias is taken).
    async fn insert_key_with_aliases(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        aliases: &[AliasRecord],
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Replaces a key record if its stored revision is `key.revision - 1`; optionally adds a version.
    async fn update_key(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        self.update_key_notifying(key, new_version, event, None)
            .await
    }
    /// [`Store::update_key`], and with `notice`, in the same transaction, one lifecycle event per
    /// registration owner of the key (the transactional outbox). A `Delete` notice also checks,
    /// in that transaction, that no registration has `preventKeyDeletion`, and unless
    /// `force_delete`, that the key has no registration ([`StoreError::Conflict`] otherwise).
    async fn update_key_notifying(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError>;
    /// Appends an audit event for an action that changed nothing (wrap, unwrap, a refusal).
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Appends `events`, in order, in one transaction: all or none (the aggregated events of a
    /// flush, `[audit] aggregate_crypto`).
    async fn append_audits(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
    /// How many keys (not purged) are in each state, by Key Protect state number (for metrics).
    async fn key_counts_by_state(&self) -> Result<Vec<(u8, u64)>, StoreError>;

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
    /// Erases a deleted key's material for good: deletes its versions and aliases and stores the
    /// tombstone `key` (compare-and-swap on revision, as [`Store::update_key`]). Space the
    /// material used is overwritten, and the write-ahead log is truncated, before this returns.
    async fn purge_key(&self, key: &KeyRecord, event: &AuditEvent) -> Result<(), StoreError> {
        self.purge_key_notifying(key, event, None).await
    }
    /// [`Store::purge_key`], and with `notice`, the key's lifecycle events in the same
    /// transaction; the key's registrations are removed with its material.
    async fn purge_key_notifying(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError>;
    /// Keys of every instance the scheduler has work on (see [`DueWork`]), at most `limit`.
    async fn due_keys(
        &self,
        due: &DueWork,
        limit: u32,
    ) -> Result<Vec<Unverified<KeyRecord>>, StoreError>;

    /// An alias of an instance.
    async fn alias(
        &self,
        instance: InstanceId,
        alias: &str,
    ) -> Result<Option<Unverified<AliasRecord>>, StoreError>;
    /// Adds an alias unless its key already has `max_per_key`; `false` when it has.
    /// [`StoreError::Conflict`] when the alias exists in the instance.
    async fn insert_alias(
        &self,
        alias: &AliasRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Removes an alias of a key; `false` when there was none.
    async fn delete_alias(
        &self,
        instance: InstanceId,
        key: KeyId,
        alias: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// A page of an instance's key rings (without the implicit `default`), oldest first, and
    /// how many it has.
    async fn key_rings(
        &self,
        instance: InstanceId,
        page: Page,
    ) -> Result<(Vec<KeyRingRecord>, u64), StoreError>;
    /// Creates a key ring; [`StoreError::Conflict`] when it exists.
    async fn insert_key_ring(
        &self,
        ring: &KeyRingRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes a key ring if it holds no key (checked in the same transaction).
    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        event: &AuditEvent,
    ) -> Result<RingDeletion, StoreError>;

    /// Every stored policy of an instance.
    async fn instance_policies(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<Unverified<InstancePolicy>>, StoreError>;
    /// Creates or replaces the given policies of an instance, atomically.
    async fn put_instance_policies(
        &self,
        policies: &[InstancePolicy],
        event: &AuditEvent,
    ) -> Result<(), StoreError>;

    /// The instance's import token, live or not.
    async fn import_token(
        &self,
        instance: InstanceId,
    ) -> Result<Option<ImportTokenRecord>, StoreError>;
    /// Creates or replaces the instance's import token.
    async fn put_import_token(
        &self,
        token: &ImportTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Counts one retrieval of the instance's token and returns it, if it is live at `now` and
    /// has retrievals left (atomically: two retrievals never share the last one).
    async fn retrieve_import_token(
        &self,
        instance: InstanceId,
        now: OffsetDateTime,
    ) -> Result<Option<ImportTokenRecord>, StoreError>;

    /// All token-signing keys, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;
    /// Inserts a token-signing key.
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError>;
}

/// The audit trail as a hash chain: queries, export reads, signed checkpoints and export
/// cursors. Appending events is not here: every `Store` write appends its own, in its
/// transaction, and the store links it to the chain there.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// The newest event's position and hash, or `None` for an empty trail.
    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;
    /// Events matching `query`, oldest first, and how many match in all.
    async fn audit_events(
        &self,
        query: &crate::AuditQuery,
    ) -> Result<(Vec<crate::ChainedEvent>, u64), StoreError>;
    /// Up to `limit` events after position `seq`, oldest first (exports catch up with this).
    async fn audit_events_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<crate::ChainedEvent>, StoreError>;
    /// Records a signed checkpoint of the chain head.
    async fn insert_audit_checkpoint(
        &self,
        checkpoint: &crate::AuditCheckpoint,
    ) -> Result<(), StoreError>;
    /// The newest checkpoint, if any.
    async fn latest_audit_checkpoint(&self) -> Result<Option<crate::AuditCheckpoint>, StoreError>;
    /// The last position an export sink delivered (0 for a new sink).
    async fn export_cursor(&self, sink: &str) -> Result<u64, StoreError>;
    /// Moves an export sink's cursor forward to `seq` (durably); never back (a holder that lost
    /// its lease while delivering must not undo its successor's progress).
    async fn set_export_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError>;
    /// Takes or renews `holder`'s lease on an export sink until `until`: true when `holder` holds
    /// it now (it held it already, or nobody else held a lease live at `now`). Of several
    /// processes on one database, only the holder exports the sink.
    async fn lease_export(
        &self,
        sink: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError>;
    /// Gives up every export lease `holder` holds (at a graceful shutdown), so another process
    /// takes the sinks over at once rather than when the leases lapse.
    async fn release_export_leases(&self, holder: &str) -> Result<(), StoreError>;
    /// The lowest cursor among the export sinks (not the archive) that some process held, or
    /// moved, at or after `held_since`: what pruning must not pass even on a process that does
    /// not export those sinks itself. `None` when there is no such sink.
    async fn export_floor(&self, held_since: OffsetDateTime) -> Result<Option<u64>, StoreError>;
    /// The oldest event still in the database (older ones were pruned after archiving), or
    /// `None` for an empty trail.
    async fn audit_first_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Deletes one batch of the oldest events `prune` allows (see [`crate::AuditPrune`]), with
    /// the checkpoints at or below them, in one transaction; returns the events deleted. Never
    /// deletes the chain head (the next event links to it), never leaves a gap: what remains
    /// is always a suffix of the chain.
    async fn prune_audit(&self, prune: &crate::AuditPrune) -> Result<u64, StoreError>;
}
