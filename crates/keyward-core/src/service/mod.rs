//! `KeyService`: every key operation, with its checks, its custody calls and its audit event.
//! Transports translate requests into these calls and results back; they hold no rules.

use std::sync::Arc;
use std::time::Duration;

use keyward_crypto::{DekCiphertext, Secret};
use time::OffsetDateTime;

use crate::access::Target;
use crate::cache::{CachedKey, KeyCache};
pub use crate::caller::Caller;
use crate::key::{ALLOWED_ROOT_KEY_BYTES, MAX_STANDARD_KEY_BYTES};
use crate::lifecycle::transition;
use crate::pipeline::{Ctx, Pipeline};
use crate::policy::InstancePolicies;
use crate::{
    Action, Custody, CustodyError, EventKind, InstanceId, KeyError, KeyId, KeyKind, KeyNotice,
    KeyRecord, KeyState, KeyVersion, KeyVersionId, Store, StoreError, Unverified, Verified,
};

mod audit;
mod deletion;
mod envelope;
mod keys;
mod lifecycle;
mod policies;
mod registrations;
mod rings;
mod scheduled;
mod transit;

pub use audit::{AUDIT_TAIL_MAX, TailReport};
pub use policies::{InstancePolicyUpdate, KeyPolicyUpdate};
pub use registrations::{RegistrationSpec, RegistrationView, RegistrationWrite};
pub use rings::MAX_ALIASES_PER_KEY;
pub use scheduled::SchedulerReport;
pub use transit::{
    IMPORT_TOKEN_RETRIEVALS, IMPORT_TOKEN_SECONDS, ImportTokenRecord, Material, SecureImport,
};

/// Largest DEK accepted by `wrap`, in bytes.
pub const MAX_DEK_BYTES: usize = 4_096;
/// Most AAD strings accepted per request.
pub const MAX_AAD_ITEMS: usize = 32;
/// Longest AAD string, in characters (Key Protect: 255).
pub const MAX_AAD_ITEM_CHARS: usize = 255;
const NAME_CHARS: std::ops::RangeInclusive<usize> = 2..=90;
pub(super) const MAX_DESCRIPTION_CHARS: usize = 240;
pub(super) const GENERATED_KEY_BYTES: usize = 32;
const DAY: u64 = 24 * 3600;

/// Source of the current time (a trait so tests can move time).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> OffsetDateTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Key Protect's rate rules, configurable so tests need not wait.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// A key may be rotated by hand at most once per this interval (Key Protect: 1 hour).
    pub min_rotation_interval: Duration,
    /// A disabled key may be enabled only this long after it was disabled (Key Protect: 30 s).
    pub enable_after_disable: Duration,
    /// A deleted key may be restored for this long (Key Protect: 30 days).
    pub restore_window: Duration,
    /// A deleted key may be purged by hand this long after the delete (Key Protect: 4 hours).
    pub purge_wait: Duration,
    /// The scheduler purges deleted keys this long after the delete (Key Protect: 90 days).
    pub auto_purge_after: Duration,
    /// A `setKeyForDeletion` authorization lapses after this (Key Protect: 7 days).
    pub dual_auth_window: Duration,
    /// The length of one month of a rotation policy (30 days; shorter in tests).
    pub rotation_month: Duration,
    /// How long a verified root key may serve wrap and unwrap from memory. Changes made by this
    /// process apply at once; changes made by another process sharing the store, within this.
    /// Zero disables the cache.
    pub key_cache_ttl: Duration,
    /// How new keys and key versions are named.
    pub ids: crate::IdOrder,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            min_rotation_interval: Duration::from_secs(3600),
            enable_after_disable: Duration::from_secs(30),
            restore_window: Duration::from_secs(30 * DAY),
            purge_wait: Duration::from_secs(4 * 3600),
            auto_purge_after: Duration::from_secs(90 * DAY),
            dual_auth_window: Duration::from_secs(7 * DAY),
            rotation_month: Duration::from_secs(30 * DAY),
            key_cache_ttl: Duration::from_secs(1),
            ids: crate::IdOrder::default(),
        }
    }
}

/// A key to create.
#[derive(Debug)]
pub struct NewKey {
    /// Root or standard.
    pub kind: KeyKind,
    /// Name (2 to 90 characters).
    pub name: String,
    /// Optional description (at most 240 characters).
    pub description: Option<String>,
    /// Material to import, in the clear or through an import token; generated (256 bits) when
    /// absent.
    pub payload: Option<Material>,
    /// Optional expiration.
    pub expiration: Option<OffsetDateTime>,
    /// Key ring; `default` when absent.
    pub key_ring: Option<String>,
    /// Policies that override the instance's (`keys_with_policy_overrides`).
    pub overrides: PolicyOverrides,
    /// Aliases to give the key (at most five), created with it or not at all.
    pub aliases: Vec<String>,
}

/// Policies set on a key at creation instead of those the instance policies give it.
#[derive(Debug, Clone, Default)]
pub struct PolicyOverrides {
    /// A rotation policy: (enabled, months).
    pub rotation: Option<(bool, u8)>,
    /// A dual-authorization delete policy.
    pub dual_auth_delete: Option<bool>,
}

/// A search over key names and aliases (Key Protect's `search=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySearch {
    /// What to look for (case-insensitive).
    pub query: String,
    /// Match the whole name or alias, not a substring.
    pub exact: bool,
    /// Return the keys that do not match.
    pub not: bool,
    /// Search names.
    pub in_name: bool,
    /// Search aliases.
    pub in_alias: bool,
}

/// A key date that lists can sort and filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDate {
    /// `creationDate`.
    Creation,
    /// `lastUpdateDate`.
    LastUpdate,
    /// `lastRotateDate`.
    LastRotate,
    /// `deletionDate`.
    Deletion,
    /// `expirationDate`.
    Expiration,
}

/// What a list is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Key id.
    Id,
    /// State code.
    State,
    /// Standard before root, or the reverse.
    Extractable,
    /// Imported or generated.
    Imported,
    /// A date.
    Date(KeyDate),
}

/// A comparison in a date filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Equal.
    Eq,
    /// Before.
    Lt,
    /// At or before.
    Lte,
    /// After.
    Gt,
    /// At or after.
    Gte,
}

/// `field op value`; a `None` value means "the key has no such date".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateFilter {
    /// Which date.
    pub field: KeyDate,
    /// How to compare.
    pub op: Compare,
    /// The date, or none.
    pub value: Option<OffsetDateTime>,
}

/// Which keys to list.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
    /// Only these states (all but Destroyed when empty, as Key Protect does).
    pub states: Vec<KeyState>,
    /// Only standard (`true`) or root (`false`) keys.
    pub extractable: Option<bool>,
    /// Only keys of this key ring.
    pub key_ring: Option<String>,
    /// Only keys whose name or alias matches.
    pub search: Option<KeySearch>,
    /// Only keys whose dates pass every filter.
    pub dates: Vec<DateFilter>,
    /// Sort order, first key first (`true`: descending); creation order when empty.
    pub sort: Vec<(SortKey, bool)>,
}

/// Result of `wrap`.
#[derive(Debug)]
pub struct WrapOutput {
    /// The encoded DEK ciphertext.
    pub ciphertext: Vec<u8>,
    /// The DEK, when Keyward generated it (wrap without plaintext).
    pub generated: Option<Secret>,
    /// The root key version used.
    pub version: KeyVersionId,
}

/// Result of `unwrap` and `rewrap`.
#[derive(Debug)]
pub struct UnwrapOutput {
    /// The DEK.
    pub plaintext: Secret,
    /// The version that had sealed the ciphertext.
    pub version: KeyVersionId,
    /// When that version is not the latest: the DEK sealed again under the latest version.
    pub rewrapped: Option<(Vec<u8>, KeyVersionId)>,
}

/// Result of `rewrap`.
#[derive(Debug)]
pub struct RewrapOutput {
    /// The DEK sealed under the key's latest version.
    pub ciphertext: Vec<u8>,
    /// The version that had sealed the ciphertext sent in.
    pub from: KeyVersionId,
    /// The latest version, which sealed `ciphertext`.
    pub to: KeyVersionId,
}

/// The key service. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct KeyService {
    store: Arc<dyn Store>,
    custody: Arc<dyn Custody>,
    clock: Arc<dyn Clock>,
    config: LifecycleConfig,
    cache: Arc<KeyCache>,
    pipe: Pipeline,
    keygen: Arc<dyn crate::TransitKeygen>,
}

impl KeyService {
    /// A service over `store` and `custody`.
    pub fn new(
        store: Arc<dyn Store>,
        custody: Arc<dyn Custody>,
        clock: Arc<dyn Clock>,
        config: LifecycleConfig,
    ) -> Self {
        let cache = Arc::new(KeyCache::new(config.key_cache_ttl));
        let pipe = Pipeline::new(store.clone(), clock.clone());
        KeyService {
            pipe,
            store,
            custody,
            clock,
            config,
            cache,
            keygen: Arc::new(crate::InlineKeygen),
        }
    }

    /// Counts successful wraps, unwraps and rewraps in `aggregation` instead of recording each
    /// (`[audit] aggregate_crypto`); [`KeyService::flush_aggregated`] records the counts.
    pub fn with_crypto_aggregation(mut self, aggregation: Arc<crate::CryptoAggregation>) -> Self {
        self.pipe.aggregate(aggregation);
        self
    }

    /// Records the aggregated events of the seconds before `until`, or of every second counted
    /// so far when `None` (see [`Pipeline::flush_aggregated`]).
    pub async fn flush_aggregated(
        &self,
        until: Option<OffsetDateTime>,
    ) -> Result<usize, crate::StoreError> {
        self.pipe.flush_aggregated(until).await
    }

    /// Makes import tokens' transit keys through `keygen` (by default on the calling thread).
    pub fn with_transit_keygen(mut self, keygen: Arc<dyn crate::TransitKeygen>) -> Self {
        self.keygen = keygen;
        self
    }

    /// The store (for the transport's own audit events, e.g. refused authentication).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Drops what this process cached of a key (another node changed it).
    pub fn forget_cached_key(&self, id: KeyId) {
        self.cache.invalidate(id);
    }

    /// Drops every cached key (changes from other nodes may have been missed).
    pub fn forget_cached_keys(&self) {
        self.cache.clear();
    }

    /// The pipeline this service's operations run in (shared with the KMIP records service).
    pub(crate) fn pipe(&self) -> &Pipeline {
        &self.pipe
    }

    /// The custody backend.
    pub fn custody(&self) -> &Arc<dyn Custody> {
        &self.custody
    }

    // ---- helpers ----

    /// The instance's policies.
    pub async fn policies_of(&self, instance: InstanceId) -> Result<InstancePolicies, KeyError> {
        let all = self
            .store
            .instance_policies(instance)
            .await?
            .into_iter()
            .map(|p| {
                Verified::check(p, self.custody.as_ref())
                    .map(Verified::into_inner)
                    .map_err(integrity)
            })
            .collect::<Result<_, _>>()?;
        Ok(InstancePolicies { all })
    }

    /// When a key with a rotation policy is next due: its interval after the last rotation (or
    /// creation).
    fn next_rotation(&self, key: &KeyRecord) -> Option<OffsetDateTime> {
        // Imported keys are rotated only with new material from their owner: never automatically.
        let policy = key
            .rotation
            .as_ref()
            .filter(|r| r.enabled && !key.imported)?;
        let since = key.last_rotated_at.unwrap_or(key.created_at);
        Some(since + self.config.rotation_month * u32::from(policy.interval_month))
    }

    /// Loads and verifies a key of the caller's instance and authorizes the operation on it.
    async fn load(
        &self,
        ctx: &mut Ctx<'_>,
        caller: &Caller,
        id: KeyId,
    ) -> Result<Verified<KeyRecord>, KeyError> {
        let key = self.verify_key(
            self.store
                .key(caller.instance(), id)
                .await?
                .ok_or(KeyError::NotFound)?,
        )?;
        check_ring(caller, &key)?;
        ctx.authorize(Target::Key(key.id, &key.key_ring))?;
        // A purged key is gone, as in Key Protect; only its tombstone and audit trail remain.
        if key.purged_at.is_some() {
            return Err(KeyError::NotFound);
        }
        ctx.key(key.state, None);
        Ok(key)
    }

    /// A root key, its current version and material for `action`, with the operation
    /// authorized: from the cache when fresh, else read, verified and unwrapped, then cached.
    pub(crate) async fn root_key(
        &self,
        ctx: &mut Ctx<'_>,
        caller: &Caller,
        id: KeyId,
        action: Action,
    ) -> Result<Arc<CachedKey>, KeyError> {
        let entry = match self.cache.get(id) {
            // The cache is shared by all instances: an entry of another instance is not found.
            Some(e) if e.key.instance == caller.instance() => {
                check_ring(caller, &e.key)?;
                ctx.authorize(Target::Key(e.key.id, &e.key.key_ring))?;
                e
            }
            Some(_) => return Err(KeyError::NotFound),
            None => {
                // Read before the key, so a record is never tagged newer than it is.
                let generation = self.key_generation().await?;
                match generation.and_then(|g| self.cache.record(id, g)) {
                    // Verified, a root key and its current version when it was read, and no
                    // key changed since: only the material needs unwrapping.
                    Some(r) if r.key.instance == caller.instance() => {
                        check_ring(caller, &r.key)?;
                        ctx.authorize(Target::Key(r.key.id, &r.key.key_ring))?;
                        let material = self.material(&r.current)?;
                        self.cache
                            .put(CachedKey::new(r.key.clone(), r.current.clone(), material))
                    }
                    Some(_) => return Err(KeyError::NotFound),
                    None => {
                        let (key, current) = self.load_root_fresh(ctx, caller, id).await?;
                        if let Some(g) = generation {
                            self.cache.put_record(&key, &current, g);
                        }
                        let material = self.material(&current)?;
                        self.cache.put(CachedKey::new(key, current, material))
                    }
                }
            }
        };
        ctx.key(entry.key.state, None);
        transition(self.effective_state(&entry.key), action)?;
        Ok(entry)
    }

    /// The store's key generation, read again once half the cache TTL has passed since the
    /// last read; `None` when the cache is off or the store keeps none.
    async fn key_generation(&self) -> Result<Option<u64>, KeyError> {
        if !self.cache.enabled() {
            return Ok(None);
        }
        if let Some(g) = self.cache.observed_generation() {
            return Ok(Some(g));
        }
        let at = std::time::Instant::now();
        let g = self.store.key_generation().await?;
        if let Some(g) = g {
            self.cache.observe(at, g);
        }
        Ok(g)
    }

    /// Reads a root key and its current version from the store, verifies both signatures and
    /// authorizes the operation on the key.
    async fn load_root_fresh(
        &self,
        ctx: &mut Ctx<'_>,
        caller: &Caller,
        id: KeyId,
    ) -> Result<(Verified<KeyRecord>, Verified<KeyVersion>), KeyError> {
        let (key, version) = self
            .store
            .key_with_current_version(caller.instance(), id)
            .await?
            .ok_or(KeyError::NotFound)?;
        let key = self.verify_key(key)?;
        check_ring(caller, &key)?;
        ctx.authorize(Target::Key(key.id, &key.key_ring))?;
        let version = self.verify_version(&key, version)?;
        if version.id != key.current_version_id {
            return Err(KeyError::IntegrityFailure);
        }
        if key.kind != KeyKind::Root {
            return Err(KeyError::WrongKeyKind(
                "this operation requires a root key (extractable: false)",
            ));
        }
        ctx.key(key.state, None);
        Ok((key, version))
    }

    /// The state that governs use: an Active key past its expiration date is Deactivated even
    /// before the scheduler records it.
    fn effective_state(&self, key: &KeyRecord) -> KeyState {
        match (key.state, key.expiration) {
            (KeyState::Active, Some(exp)) if exp <= self.clock.now() => KeyState::Deactivated,
            (s, _) => s,
        }
    }

    /// Verifies a key record read from the store: `IntegrityFailure` (500) when its signature
    /// fails, the custody error (503 for an unavailable HSM) when custody cannot answer.
    pub(super) fn verify_key(
        &self,
        key: Unverified<KeyRecord>,
    ) -> Result<Verified<KeyRecord>, KeyError> {
        Verified::check(key, self.custody.as_ref()).map_err(integrity)
    }

    /// Verifies a version read from the store as a version of `key`.
    fn verify_version(
        &self,
        key: &Verified<KeyRecord>,
        v: Unverified<KeyVersion>,
    ) -> Result<Verified<KeyVersion>, KeyError> {
        Verified::check_version(v, key, self.custody.as_ref()).map_err(integrity)
    }

    fn sign_key(&self, key: &mut KeyRecord) -> Result<(), KeyError> {
        key.signature = self.custody.sign_record(&key.signed_bytes())?;
        Ok(())
    }

    async fn version_material(
        &self,
        key: &Verified<KeyRecord>,
        number: u32,
    ) -> Result<(Verified<KeyVersion>, Secret), KeyError> {
        let version = self
            .store
            .key_version(key.id, number)
            .await?
            .ok_or(KeyError::IntegrityFailure)?;
        let version = self.verify_version(key, version)?;
        let material = self.material(&version)?;
        Ok((version, material))
    }

    /// Unwraps a verified version's material.
    fn material(&self, version: &Verified<KeyVersion>) -> Result<Secret, KeyError> {
        self.custody
            .unwrap_material(&version.material)
            .map_err(integrity)
    }

    fn new_version(
        &self,
        instance: InstanceId,
        key_id: KeyId,
        number: u32,
        material: &Secret,
        now: OffsetDateTime,
    ) -> Result<KeyVersion, KeyError> {
        let mut v = KeyVersion {
            key_id,
            number,
            id: KeyVersionId::new(self.config.ids),
            created_at: now,
            material: self.custody.wrap_material(material)?,
            signature: Vec::new(),
        };
        v.signature = self.custody.sign_record(&v.signed_bytes(instance))?;
        Ok(v)
    }

    /// Saves a changed key with the operation's audit event; a lifecycle action (rotate,
    /// disable, enable, delete, restore) also writes its events to the services registered on
    /// the key, in the same transaction.
    async fn save(
        &self,
        ctx: &mut Ctx<'_>,
        key: &mut KeyRecord,
        version: Option<&KeyVersion>,
        now: OffsetDateTime,
        deletion: crate::Deletion,
    ) -> Result<(), KeyError> {
        key.revision = key.revision.checked_add(1).ok_or(KeyError::Conflict)?;
        key.updated_at = now;
        self.sign_key(key)?;
        let event = ctx.record_key(key, version.map(|v| v.id))?;
        let notice = ctx
            .op()
            .lifecycle
            .and_then(EventKind::for_lifecycle)
            .map(|kind| KeyNotice {
                kind,
                time: now,
                force_delete: deletion.force,
                override_prevention: deletion.override_prevention,
            });
        let saved = self
            .store
            .update_key_notifying(key, version, &event, notice.as_ref())
            .await;
        // Committed or not, this process stops using what it had cached for the key. (A request
        // that read the old row just before the commit may cache it again: at most one TTL.)
        self.cache.invalidate(key.id);
        saved.map_err(|e| match e {
            StoreError::Conflict => KeyError::Conflict,
            e => KeyError::Store(e),
        })
    }
}

impl KeyError {
    /// The status the API answers with (also the CADF `reasonCode` of the audit event) and Key
    /// Protect's reason code (its "error messages" reference): the one table from domain error
    /// to both, so the answer and the audit trail cannot disagree.
    pub fn reason(&self) -> (u16, &'static str) {
        use KeyError as K;
        match self {
            K::NotFound => (404, "KEY_NOT_FOUND_ERR"),
            K::Forbidden(_) => (403, "UNAUTHORIZED_ERR"),
            K::InvalidInput(_) => (400, "BAD_BODY_ERR"),
            K::WrongKeyKind(_) => (400, "KEY_ROOT_REQ_ERR"),
            K::PayloadRequired => (400, "KEY_PAYLOAD_REQ_ERR"),
            // Key Protect: a deleted key is gone (410); an expired one refuses new wraps (400).
            K::InvalidState {
                state: KeyState::Destroyed,
                ..
            } => (410, "KEY_DELETED_ERR"),
            K::InvalidState {
                state: KeyState::Deactivated,
                action: Action::Wrap,
            } => (400, "KEY_EXPIRED_ERR"),
            K::InvalidState { .. } => (409, "KEY_ACTION_INVALID_STATE_ERR"),
            K::InvalidCiphertext => (422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
            K::RotationTooSoon(_) => (409, "KEY_ROTATION_NOT_PERMITTED"),
            K::ChangeTooSoon(_) => (409, "REQ_TOO_EARLY_ERR"),
            K::Conflict | K::Store(StoreError::Conflict) => (409, "CONFLICT_ERR"),
            K::Refused(rule, _) => rule.reason(),
            K::Custody(CustodyError::Unavailable(_)) | K::Store(StoreError::Unavailable(_)) => {
                (503, "SERVICE_UNAVAILABLE_ERR")
            }
            // Key Protect: "Key metadata became corrupted".
            K::IntegrityFailure | K::Custody(CustodyError::IntegrityFailure) => {
                (500, "INCOMPLETE_METADATA_ERR")
            }
            K::Custody(_) | K::Store(_) => (500, "INTERNAL_SERVER_ERR"),
        }
    }

    /// The HTTP-style reason code for this error (the status of [`KeyError::reason`]).
    pub fn reason_code(&self) -> u16 {
        self.reason().0
    }
}

fn integrity(e: CustodyError) -> KeyError {
    match e {
        CustodyError::IntegrityFailure | CustodyError::UnknownWrappingKey(_) => {
            KeyError::IntegrityFailure
        }
        e => KeyError::Custody(e),
    }
}

fn invalid(msg: String) -> KeyError {
    KeyError::InvalidInput(msg)
}

pub(crate) fn seal(
    material: &Secret,
    version: &KeyVersion,
    aad: &[&str],
    dek: &Secret,
) -> Result<Vec<u8>, KeyError> {
    DekCiphertext::seal(
        material,
        *version.id.as_bytes(),
        version.key_id.as_bytes(),
        aad,
        dek,
    )
    .map(|c| c.encode())
    .map_err(|e| KeyError::Custody(CustodyError::Internal(e.to_string())))
}

fn aad_refs(aad: &[String]) -> Vec<&str> {
    aad.iter().map(String::as_str).collect()
}

fn check_aad(aad: &[String]) -> Result<(), KeyError> {
    if aad.len() > MAX_AAD_ITEMS {
        return Err(invalid(format!("aad: at most {MAX_AAD_ITEMS} strings")));
    }
    if aad.iter().any(|a| a.chars().count() > MAX_AAD_ITEM_CHARS) {
        return Err(invalid(format!(
            "aad: each string at most {MAX_AAD_ITEM_CHARS} characters"
        )));
    }
    Ok(())
}

fn check_material_size(kind: KeyKind, len: usize) -> Result<(), KeyError> {
    match kind {
        KeyKind::Root if !ALLOWED_ROOT_KEY_BYTES.contains(&len) => Err(invalid(format!(
            "payload: a root key must be 128, 192 or 256 bits (got {} bits)",
            len.saturating_mul(8)
        ))),
        KeyKind::Standard if len == 0 || len > MAX_STANDARD_KEY_BYTES => Err(invalid(format!(
            "payload: a standard key must be 1 to {MAX_STANDARD_KEY_BYTES} bytes"
        ))),
        _ => Ok(()),
    }
}

/// A key outside the key ring the caller named does not exist for that request.
fn check_ring(caller: &Caller, key: &KeyRecord) -> Result<(), KeyError> {
    match caller.key_ring() {
        Some(ring) if ring != key.key_ring => Err(KeyError::NotFound),
        _ => Ok(()),
    }
}

fn check_months(months: u8) -> Result<(), KeyError> {
    if crate::ROTATION_MONTHS.contains(&months) {
        Ok(())
    } else {
        Err(invalid("interval_month: must be 1 to 12".to_owned()))
    }
}

fn validate_name(name: &str) -> Result<(), KeyError> {
    let n = name.chars().count();
    if !NAME_CHARS.contains(&n) || name.chars().any(char::is_control) || name.trim() != name {
        return Err(invalid(
            "name: 2 to 90 characters, no control characters or surrounding spaces".to_owned(),
        ));
    }
    Ok(())
}
