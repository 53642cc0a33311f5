//! `KeyService`: every key operation, with its checks, its custody calls and its audit event.
//! Transports translate requests into these calls and results back; they hold no rules.

use std::sync::Arc;
use std::time::Duration;

use keyward_crypto::{DekCiphertext, Secret};
use time::OffsetDateTime;

use crate::access::{Denial, Grants, Operation, Target};
use crate::cache::{CachedKey, KeyCache};
use crate::key::{ALLOWED_ROOT_KEY_BYTES, MAX_STANDARD_KEY_BYTES};
use crate::lifecycle::transition;
use crate::policy::InstancePolicies;
use crate::{
    Action, AuditEvent, Custody, CustodyError, DEFAULT_KEY_RING, DualAuthPolicy, EventKind,
    Initiator, InstanceId, KeyError, KeyId, KeyKind, KeyNotice, KeyRecord, KeyState, KeyVersion,
    KeyVersionId, Outcome, PolicyMeta, RotationPolicy, Rule, Store, StoreError,
};

mod audit;
mod deletion;
mod policies;
mod registrations;
mod rings;
mod scheduled;
mod transit;

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
const MAX_DESCRIPTION_CHARS: usize = 240;
const GENERATED_KEY_BYTES: usize = 32;
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
        }
    }
}

/// Who is calling, on which instance: established by the transport from a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    /// IAM id of the subject.
    pub subject: String,
    /// The instance the request is for.
    pub instance: InstanceId,
    /// Request id for audit and logs.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
    /// The key ring the caller names (`X-Kms-Key-Ring`): a key outside it is not found.
    pub key_ring: Option<String>,
    /// What the caller may do.
    pub access: Access,
}

/// What a caller may do: everything (Keyward's own scheduler), or what its grants allow.
#[derive(Debug, Clone)]
pub enum Access {
    /// Keyward itself (the scheduler): no access check.
    System,
    /// A caller with grants on the instance's account.
    Grants {
        /// The account that owns the instance.
        account: String,
        /// The caller's grants that could apply.
        grants: Arc<Grants>,
    },
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
        KeyService {
            store,
            custody,
            clock,
            config,
            cache,
        }
    }

    /// The store (for the transport's own audit events, e.g. refused authentication).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The custody backend.
    pub fn custody(&self) -> &Arc<dyn Custody> {
        &self.custody
    }

    /// Creates a root or standard key, generated or imported.
    pub async fn create_key(&self, caller: &Caller, spec: NewKey) -> Result<KeyRecord, KeyError> {
        let action = "kms.secrets.create";
        let result = self.create_key_inner(caller, spec, action).await;
        self.audit_failure(caller, action, None, &result).await?;
        result
    }

    async fn create_key_inner(
        &self,
        caller: &Caller,
        spec: NewKey,
        action: &str,
    ) -> Result<KeyRecord, KeyError> {
        validate_name(&spec.name)?;
        if let Some(d) = &spec.description
            && d.chars().count() > MAX_DESCRIPTION_CHARS
        {
            return Err(invalid(format!(
                "description: at most {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        let key_ring = spec.key_ring.unwrap_or_else(|| DEFAULT_KEY_RING.to_owned());
        let imported = spec.payload.is_some();
        let with_token = matches!(spec.payload, Some(Material::Secure(_)));
        let op = if imported {
            Operation::ImportKey
        } else {
            Operation::CreateKey
        };
        authorize(caller, op, Target::KeyRing(&key_ring))?;
        self.require_ring(caller, &key_ring).await?;
        let policies = self.policies_of(caller.instance).await?;
        if !policies.allows_creation(spec.kind, imported, with_token) {
            let what = match (imported, spec.kind) {
                (false, KeyKind::Root) => "creating root keys",
                (false, KeyKind::Standard) => "creating standard keys",
                (true, KeyKind::Root) => "importing root keys (without an import token)",
                (true, KeyKind::Standard) => "importing standard keys (without an import token)",
            };
            return Err(KeyError::Refused(
                Rule::CreateImportDenied,
                format!("the instance's keyCreateImportAccess policy forbids {what}"),
            ));
        }
        let now = self.clock.now();
        if let Some(exp) = spec.expiration
            && exp <= now
        {
            return Err(invalid("expirationDate: must be in the future".to_owned()));
        }
        let material = match spec.payload {
            Some(m) => self.material_in(caller, spec.kind, m, now).await?,
            None => self.custody.generate_material(GENERATED_KEY_BYTES)?,
        };
        let bits = u16::try_from(material.len().saturating_mul(8)).unwrap_or(u16::MAX);
        let id = KeyId::random();
        let version = self.new_version(caller.instance, id, 1, &material, now)?;
        let mut key = KeyRecord {
            id,
            instance: caller.instance,
            kind: spec.kind,
            name: spec.name,
            description: spec.description,
            state: KeyState::Active,
            imported,
            key_ring,
            expiration: spec.expiration,
            bits,
            current_version: 1,
            current_version_id: version.id,
            revision: 1,
            created_at: now,
            created_by: caller.subject.clone(),
            updated_at: now,
            state_changed_at: now,
            last_rotated_at: None,
            deleted_at: None,
            deleted_by: None,
            rotation: None,
            dual_auth_delete: None,
            deletion_authorized: None,
            purged_at: None,
            next_rotation_at: None,
            aliases: Vec::new(),
            signature: Vec::new(),
        };
        let meta = || PolicyMeta {
            created_at: now,
            created_by: caller.subject.clone(),
            updated_at: now,
            updated_by: caller.subject.clone(),
        };
        // Rotation policies are for root keys; the instance's applies unless overridden.
        let rotation = spec
            .overrides
            .rotation
            .or(policies.rotation_months().map(|m| (true, m)));
        if let (KeyKind::Root, Some((enabled, interval_month))) = (key.kind, rotation) {
            check_months(interval_month)?;
            key.rotation = Some(RotationPolicy {
                enabled,
                interval_month,
                meta: meta(),
            });
        }
        if spec
            .overrides
            .dual_auth_delete
            .unwrap_or(policies.dual_auth_delete())
        {
            key.dual_auth_delete = Some(DualAuthPolicy {
                enabled: true,
                meta: meta(),
            });
        }
        key.next_rotation_at = self.next_rotation(&key);
        self.sign_key(&mut key)?;
        let aliases = self.new_aliases(caller, key.id, &spec.aliases, now)?;
        let event = self.success_event(caller, action, &key, Some(version.id), 201);
        match self
            .store
            .insert_key_with_aliases(&key, &version, &aliases, &event)
            .await
        {
            Err(StoreError::Conflict) if !aliases.is_empty() => {
                return Err(KeyError::Refused(
                    Rule::AliasExists,
                    "aliases: one of them already names a key of this instance".into(),
                ));
            }
            r => r?,
        }
        key.aliases = spec.aliases;
        Ok(key)
    }

    /// A key's metadata and, for an active standard key, its payload.
    pub async fn get_key(
        &self,
        caller: &Caller,
        id: KeyId,
    ) -> Result<(KeyRecord, Option<Secret>), KeyError> {
        let action = "kms.secrets.read";
        let result = async {
            let key = self.load(caller, id, Operation::ReadPayload).await?;
            let payload = if key.kind == KeyKind::Standard
                && transition(self.effective_state(&key), Action::ReadPayload).is_ok()
            {
                let (_, material) = self.version_material(&key, key.current_version).await?;
                Some(material)
            } else {
                None
            };
            Ok((key, payload))
        }
        .await;
        self.audit(caller, action, Some(id), &result, |(k, _)| {
            (Some(k.state), None)
        })
        .await?;
        result
    }

    /// A key's metadata.
    pub async fn key_metadata(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        let result = self.load(caller, id, Operation::ReadMetadata).await;
        self.audit(caller, "kms.secrets.readmetadata", Some(id), &result, |k| {
            (Some(k.state), None)
        })
        .await?;
        result
    }

    /// A page of the instance's keys and the total that match.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<(Vec<KeyRecord>, u64), KeyError> {
        let result = async {
            let target = match &filter.key_ring {
                Some(ring) => Target::KeyRing(ring),
                None => Target::Instance,
            };
            authorize(caller, Operation::ListKeys, target)?;
            let (keys, total) = self.store.keys(caller.instance, filter).await?;
            for k in &keys {
                self.verify_key(k)?;
            }
            Ok((keys, total))
        }
        .await;
        self.audit(caller, "kms.secrets.list", None, &result, |_| (None, None))
            .await?;
        result
    }

    /// Every version of a key, oldest first, with the key.
    pub async fn key_versions(
        &self,
        caller: &Caller,
        id: KeyId,
        page: crate::Page,
    ) -> Result<(KeyRecord, Vec<KeyVersion>, u64), KeyError> {
        let result = async {
            let key = self.load(caller, id, Operation::ListVersions).await?;
            let (versions, total) = self.store.key_versions(id, page).await?;
            for v in &versions {
                self.verify_version(&key, v)?;
            }
            Ok((key, versions, total))
        }
        .await;
        self.audit(
            caller,
            "kms.secrets.listkeyversions",
            Some(id),
            &result,
            |(k, _, _)| (Some(k.state), None),
        )
        .await?;
        result
    }

    /// Encrypts `plaintext` (or a new 256-bit DEK when `None`) under the key's latest version.
    pub async fn wrap(
        &self,
        caller: &Caller,
        id: KeyId,
        plaintext: Option<Secret>,
        aad: &[String],
    ) -> Result<WrapOutput, KeyError> {
        let result = async {
            check_aad(aad)?;
            if let Some(p) = &plaintext
                && (p.is_empty() || p.len() > MAX_DEK_BYTES)
            {
                return Err(invalid(format!("plaintext: 1 to {MAX_DEK_BYTES} bytes")));
            }
            let entry = self
                .root_key(caller, id, Action::Wrap, Operation::Wrap)
                .await?;
            let (dek, generated) = match plaintext {
                Some(p) => (p, false),
                None => (self.custody.generate_material(GENERATED_KEY_BYTES)?, true),
            };
            let ct = seal(&entry.material, &entry.current, &aad_refs(aad), &dek)?;
            Ok((
                entry.key.state,
                WrapOutput {
                    ciphertext: ct,
                    generated: generated.then_some(dek),
                    version: entry.current.id,
                },
            ))
        }
        .await;
        self.audit(caller, "kms.secrets.wrap", Some(id), &result, |(s, o)| {
            (Some(*s), Some(o.version))
        })
        .await?;
        result.map(|(_, o)| o)
    }

    /// Decrypts a DEK ciphertext of any version of the key; when that version is not the latest,
    /// also returns the DEK sealed under the latest.
    pub async fn unwrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<UnwrapOutput, KeyError> {
        let result = self.open(caller, id, ciphertext, aad, Action::Unwrap).await;
        self.audit(caller, "kms.secrets.unwrap", Some(id), &result, |(s, o)| {
            (Some(*s), Some(o.version))
        })
        .await?;
        result.map(|(_, o)| o)
    }

    /// Decrypts a DEK ciphertext and seals it under the key's latest version.
    pub async fn rewrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<RewrapOutput, KeyError> {
        let result = async {
            let (state, out) = self
                .open(caller, id, ciphertext, aad, Action::Rewrap)
                .await?;
            let from = out.version;
            // `open` always reseals for Rewrap.
            let (ciphertext, to) = out.rewrapped.ok_or(KeyError::IntegrityFailure)?;
            Ok((
                state,
                RewrapOutput {
                    ciphertext,
                    from,
                    to,
                },
            ))
        }
        .await;
        self.audit(caller, "kms.secrets.rewrap", Some(id), &result, |(s, o)| {
            (Some(*s), Some(o.to))
        })
        .await?;
        result.map(|(_, r)| r)
    }

    async fn open(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
        action: Action,
    ) -> Result<(KeyState, UnwrapOutput), KeyError> {
        check_aad(aad)?;
        let ct = DekCiphertext::decode(ciphertext).map_err(|_| KeyError::InvalidCiphertext)?;
        let op = if action == Action::Rewrap {
            Operation::Rewrap
        } else {
            Operation::Unwrap
        };
        let entry = self.root_key(caller, id, action, op).await?;
        let (key, current) = (&entry.key, &entry.current);
        let version_id = KeyVersionId::from_bytes(ct.version_id);
        let aad = aad_refs(aad);
        let plaintext = if version_id == current.id {
            ct.open(&entry.material, key.id.as_bytes(), &aad)
        } else {
            let old = self
                .store
                .key_version_by_id(id, version_id)
                .await?
                .ok_or(KeyError::InvalidCiphertext)?;
            self.verify_version(key, &old)?;
            ct.open(&self.material(&old)?, key.id.as_bytes(), &aad)
        }
        .map_err(|_| KeyError::InvalidCiphertext)?;
        // Unwrap returns the DEK sealed under the latest version only when it was sealed under an
        // older one; rewrap always wants it, and the latest material is already in hand here.
        let rewrapped = if version_id != current.id || action == Action::Rewrap {
            Some((
                seal(&entry.material, current, &aad, &plaintext)?,
                current.id,
            ))
        } else {
            None
        };
        Ok((
            key.state,
            UnwrapOutput {
                plaintext,
                version: version_id,
                rewrapped,
            },
        ))
    }

    /// Creates a new version of a root key: generated, or from `payload` for an imported key.
    pub async fn rotate(
        &self,
        caller: &Caller,
        id: KeyId,
        payload: Option<Material>,
    ) -> Result<KeyRecord, KeyError> {
        self.rotate_inner(caller, id, payload, None).await
    }

    /// Rotation by hand (`scheduled_at: None`, at most once per interval) or by the scheduler
    /// under the key's rotation policy, which names the revision it found due: if the key has
    /// changed since (another scheduler rotated it), this is a lost race, not a second rotation.
    async fn rotate_inner(
        &self,
        caller: &Caller,
        id: KeyId,
        payload: Option<Material>,
        scheduled_at: Option<u64>,
    ) -> Result<KeyRecord, KeyError> {
        let action = "kms.secrets.rotate";
        let result = async {
            let (mut key, _) = self.load_root_fresh(caller, id, Operation::Rotate).await?;
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
            self.save(caller, action, &mut key, Some(&version), now)
                .await?;
            Ok(key)
        }
        .await;
        self.audit_failure(caller, action, Some(id), &result)
            .await?;
        result
    }

    /// Suspends a key: wrap and unwrap are refused until it is enabled.
    pub async fn disable(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.change_state(caller, id, Action::Disable, "kms.secrets.disable")
            .await
    }

    /// Reactivates a suspended key.
    pub async fn enable(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.change_state(caller, id, Action::Enable, "kms.secrets.enable")
            .await
    }

    /// Destroys a key: its material can no longer be used, until a restore within the restore
    /// window. A key under a dual-authorization policy needs a live `setKeyForDeletion` by
    /// another identity.
    pub async fn delete(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.delete_forced(caller, id, false).await
    }

    /// [`KeyService::delete`] with Key Protect's `force`: a key with registrations is deleted
    /// only with `force`, and never while one of them has `preventKeyDeletion`.
    pub async fn delete_forced(
        &self,
        caller: &Caller,
        id: KeyId,
        force: bool,
    ) -> Result<KeyRecord, KeyError> {
        self.change_state_with(caller, id, Action::Delete, "kms.secrets.delete", force)
            .await
    }

    async fn change_state(
        &self,
        caller: &Caller,
        id: KeyId,
        action: Action,
        event_action: &str,
    ) -> Result<KeyRecord, KeyError> {
        self.change_state_with(caller, id, action, event_action, false)
            .await
    }

    async fn change_state_with(
        &self,
        caller: &Caller,
        id: KeyId,
        action: Action,
        event_action: &str,
        force: bool,
    ) -> Result<KeyRecord, KeyError> {
        let result = async {
            let op = match action {
                Action::Disable => Operation::Disable,
                Action::Enable => Operation::Enable,
                _ => Operation::Delete,
            };
            let mut key = self.load(caller, id, op).await?;
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
                self.check_registrations_allow_delete(&key, force).await?;
                self.check_dual_auth(caller, &key, now)?;
                key.deleted_at = Some(now);
                key.deleted_by = Some(caller.subject.clone());
                key.deletion_authorized = None;
            }
            key.state = next;
            key.state_changed_at = now;
            self.save_with(caller, event_action, &mut key, None, now, force)
                .await?;
            Ok(key)
        }
        .await;
        self.audit_failure(caller, event_action, Some(id), &result)
            .await?;
        result
    }

    // ---- helpers ----

    /// The instance's policies.
    pub async fn policies_of(&self, instance: InstanceId) -> Result<InstancePolicies, KeyError> {
        let all = self.store.instance_policies(instance).await?;
        for p in &all {
            self.custody
                .verify_record(&p.signed_bytes(), &p.signature)
                .map_err(integrity)?;
        }
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

    /// Loads and verifies a key of the caller's instance.
    async fn load(&self, caller: &Caller, id: KeyId, op: Operation) -> Result<KeyRecord, KeyError> {
        let key = self
            .store
            .key(caller.instance, id)
            .await?
            .ok_or(KeyError::NotFound)?;
        self.verify_key(&key)?;
        check_ring(caller, &key)?;
        authorize(caller, op, Target::Key(key.id, &key.key_ring))?;
        // A purged key is gone, as in Key Protect; only its tombstone and audit trail remain.
        if key.purged_at.is_some() {
            return Err(KeyError::NotFound);
        }
        Ok(key)
    }

    /// A root key, its current version and material for `action`: from the cache when fresh,
    /// else read, verified and unwrapped, then cached.
    async fn root_key(
        &self,
        caller: &Caller,
        id: KeyId,
        action: Action,
        op: Operation,
    ) -> Result<Arc<CachedKey>, KeyError> {
        let entry = match self.cache.get(id) {
            // The cache is shared by all instances: an entry of another instance is not found.
            Some(e) if e.key.instance == caller.instance => e,
            Some(_) => return Err(KeyError::NotFound),
            None => {
                let (key, current) = self.load_root_fresh(caller, id, op).await?;
                let material = self.material(&current)?;
                self.cache.put(CachedKey::new(key, current, material))
            }
        };
        check_ring(caller, &entry.key)?;
        authorize(caller, op, Target::Key(entry.key.id, &entry.key.key_ring))?;
        transition(self.effective_state(&entry.key), action)?;
        Ok(entry)
    }

    /// Reads a root key and its current version from the store and verifies both signatures.
    async fn load_root_fresh(
        &self,
        caller: &Caller,
        id: KeyId,
        op: Operation,
    ) -> Result<(KeyRecord, KeyVersion), KeyError> {
        let (key, version) = self
            .store
            .key_with_current_version(caller.instance, id)
            .await?
            .ok_or(KeyError::NotFound)?;
        self.verify_key(&key)?;
        check_ring(caller, &key)?;
        authorize(caller, op, Target::Key(key.id, &key.key_ring))?;
        self.verify_version(&key, &version)?;
        if version.id != key.current_version_id {
            return Err(KeyError::IntegrityFailure);
        }
        if key.kind != KeyKind::Root {
            return Err(KeyError::WrongKeyKind(
                "this operation requires a root key (extractable: false)",
            ));
        }
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

    fn verify_key(&self, key: &KeyRecord) -> Result<(), KeyError> {
        self.custody
            .verify_record(&key.signed_bytes(), &key.signature)
            .map_err(integrity)
    }

    fn verify_version(&self, key: &KeyRecord, v: &KeyVersion) -> Result<(), KeyError> {
        if v.key_id != key.id {
            return Err(KeyError::IntegrityFailure);
        }
        self.custody
            .verify_record(&v.signed_bytes(key.instance), &v.signature)
            .map_err(integrity)
    }

    fn sign_key(&self, key: &mut KeyRecord) -> Result<(), KeyError> {
        key.signature = self.custody.sign_record(&key.signed_bytes())?;
        Ok(())
    }

    async fn version_material(
        &self,
        key: &KeyRecord,
        number: u32,
    ) -> Result<(KeyVersion, Secret), KeyError> {
        let version = self
            .store
            .key_version(key.id, number)
            .await?
            .ok_or(KeyError::IntegrityFailure)?;
        self.verify_version(key, &version)?;
        let material = self.material(&version)?;
        Ok((version, material))
    }

    /// Unwraps a verified version's material.
    fn material(&self, version: &KeyVersion) -> Result<Secret, KeyError> {
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
            id: KeyVersionId::random(),
            created_at: now,
            material: self.custody.wrap_material(material)?,
            signature: Vec::new(),
        };
        v.signature = self.custody.sign_record(&v.signed_bytes(instance))?;
        Ok(v)
    }

    async fn save(
        &self,
        caller: &Caller,
        action: &str,
        key: &mut KeyRecord,
        version: Option<&KeyVersion>,
        now: OffsetDateTime,
    ) -> Result<(), KeyError> {
        self.save_with(caller, action, key, version, now, false)
            .await
    }

    /// Saves a changed key; a lifecycle action (rotate, disable, enable, delete, restore) also
    /// writes its events to the services registered on the key, in the same transaction.
    async fn save_with(
        &self,
        caller: &Caller,
        action: &str,
        key: &mut KeyRecord,
        version: Option<&KeyVersion>,
        now: OffsetDateTime,
        force_delete: bool,
    ) -> Result<(), KeyError> {
        key.revision = key.revision.checked_add(1).ok_or(KeyError::Conflict)?;
        key.updated_at = now;
        self.sign_key(key)?;
        let code = if action == "kms.secrets.delete" {
            200
        } else {
            204
        };
        let event = self.success_event(caller, action, key, version.map(|v| v.id), code);
        let notice = EventKind::for_action(action).map(|kind| KeyNotice {
            kind,
            time: now,
            force_delete,
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

    fn success_event(
        &self,
        caller: &Caller,
        action: &str,
        key: &KeyRecord,
        version: Option<KeyVersionId>,
        code: u16,
    ) -> AuditEvent {
        let mut e = self.event(caller, action, Some(key.id), Outcome::Success, code, None);
        e.key_state = Some(key.state.code());
        e.key_version = version.map(|v| v.to_string());
        e
    }

    fn event(
        &self,
        caller: &Caller,
        action: &str,
        target: Option<KeyId>,
        outcome: Outcome,
        reason_code: u16,
        reason: Option<String>,
    ) -> AuditEvent {
        caller_event(
            caller,
            action,
            target.map(|t| t.to_string()),
            (outcome, reason_code, reason),
            self.clock.now(),
        )
    }

    /// Records the outcome of an action that changes nothing (success or failure).
    async fn audit<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: Option<KeyId>,
        result: &Result<T, KeyError>,
        describe: impl FnOnce(&T) -> (Option<KeyState>, Option<KeyVersionId>),
    ) -> Result<(), KeyError> {
        let event = match result {
            Ok(v) => {
                let (state, version) = describe(v);
                let mut e = self.event(caller, action, target, Outcome::Success, 200, None);
                e.key_state = state.map(KeyState::code);
                e.key_version = version.map(|v| v.to_string());
                e
            }
            Err(err) => self.failure_event(caller, action, target, err),
        };
        self.append(&event).await
    }

    /// Records a failure; successes of changing actions were recorded with the change itself.
    async fn audit_failure<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: Option<KeyId>,
        result: &Result<T, KeyError>,
    ) -> Result<(), KeyError> {
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                self.append(&self.failure_event(caller, action, target, err))
                    .await
            }
        }
    }

    async fn append(&self, event: &AuditEvent) -> Result<(), KeyError> {
        self.store
            .append_audit(event)
            .await
            .map_err(KeyError::Store)
    }

    fn failure_event(
        &self,
        caller: &Caller,
        action: &str,
        target: Option<KeyId>,
        err: &KeyError,
    ) -> AuditEvent {
        self.event(
            caller,
            action,
            target,
            Outcome::Failure,
            err.reason_code(),
            Some(err.to_string()),
        )
    }
}

impl KeyError {
    /// The HTTP-style reason code for this error: the status the API answers with and the CADF
    /// `reasonCode` of the audit event, from one table so they cannot disagree.
    pub fn reason_code(&self) -> u16 {
        match self {
            KeyError::NotFound => 404,
            KeyError::Forbidden(_) => 403,
            KeyError::InvalidInput(_) | KeyError::WrongKeyKind(_) | KeyError::PayloadRequired => {
                400
            }
            // Key Protect: a deleted key is gone (410); an expired one refuses new wraps (400).
            KeyError::InvalidState {
                state: KeyState::Destroyed,
                ..
            } => 410,
            KeyError::InvalidState {
                state: KeyState::Deactivated,
                action: Action::Wrap,
            } => 400,
            KeyError::InvalidState { .. } => 409,
            KeyError::InvalidCiphertext => 422,
            KeyError::RotationTooSoon(_) | KeyError::ChangeTooSoon(_) | KeyError::Conflict => 409,
            KeyError::Refused(rule, _) => rule.status(),
            KeyError::IntegrityFailure => 500,
            KeyError::Custody(CustodyError::Unavailable(_)) => 503,
            KeyError::Custody(CustodyError::IntegrityFailure) => 500,
            KeyError::Custody(_) => 500,
            KeyError::Store(StoreError::Conflict) => 409,
            KeyError::Store(StoreError::Unavailable(_)) => 503,
            KeyError::Store(_) => 500,
        }
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

fn seal(
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

/// The audit event of `caller`'s `action` on `target`, with its outcome, reason code and reason.
pub(crate) fn caller_event(
    caller: &Caller,
    action: &str,
    target: Option<String>,
    (outcome, reason_code, reason): (Outcome, u16, Option<String>),
    now: OffsetDateTime,
) -> AuditEvent {
    let initiator = Initiator {
        id: caller.subject.clone(),
        address: caller.address.clone(),
    };
    AuditEvent {
        reason,
        instance: Some(caller.instance.to_string()),
        target,
        ..AuditEvent::new(
            action,
            outcome,
            reason_code,
            initiator,
            caller.request_id.clone(),
            now,
        )
    }
}

/// Checks the caller's grants: a target the caller cannot see is not found; one it sees but may
/// not act on is forbidden.
pub(crate) fn authorize(
    caller: &Caller,
    op: Operation,
    target: Target<'_>,
) -> Result<(), KeyError> {
    match &caller.access {
        Access::System => Ok(()),
        Access::Grants { account, grants } => grants
            .check(op, account, caller.instance, target)
            .map_err(|d| match d {
                Denial::Invisible => KeyError::NotFound,
                Denial::Forbidden => KeyError::Forbidden(op),
            }),
    }
}

/// A key outside the key ring the caller named does not exist for that request.
fn check_ring(caller: &Caller, key: &KeyRecord) -> Result<(), KeyError> {
    match &caller.key_ring {
        Some(ring) if *ring != key.key_ring => Err(KeyError::NotFound),
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
