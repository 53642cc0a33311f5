//! Envelope encryption for integrated services: data encryption keys (DEKs) wrapped by a
//! customer's root key, data sealed locally with AES-256-GCM (through `keyward-crypto`), a DEK
//! cache bounded by idle time, use count and a hard age since the last successful unwrap, and
//! revalidation of the root key while DEKs are held.
//!
//! The sealed format is self-describing: `version (1) ‖ DEK id (16) ‖ nonce (12) ‖ ciphertext ‖
//! tag (16)`. The GCM AAD binds the format label, the version, the DEK id and the caller's AAD, so
//! a blob moved to another DEK, another context or altered in any byte fails to open. The DEK is
//! named by id, not carried inline: rewrapping after a rotation rewrites one stored [`WrappedDek`],
//! not every record sealed under it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_crypto::{
    Canonical, CryptoError, Framing, Secret, aead_open, aead_seal, random_array, random_secret,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::{Client, ClientError};

/// The version byte of the sealed format this module writes.
pub const SEALED_V1: u8 = 1;
const DEK_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + DEK_ID_LEN + NONCE_LEN;
const AAD_LABEL: &[u8] = b"keyward-envelope-v1";
/// The AAD label a DEK is wrapped under (with its id), so a wrapped DEK cannot be passed off as
/// another one.
const WRAP_AAD_LABEL: &str = "keyward-dek";

/// Key Protect's rule for integrated services: a DEK may be cached at most 4 hours after the
/// last successful unwrap.
pub const MAX_DEK_AGE_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// Key Protect's key states, as numbers on the wire.
const STATE_ACTIVE: u8 = 1;
const STATE_SUSPENDED: u8 = 2;
const STATE_DEACTIVATED: u8 = 3;
const STATE_DESTROYED: u8 = 5;

/// A failure of envelope encryption.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The key service refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Authenticated decryption failed: altered bytes, another DEK or another AAD.
    #[error("sealed data failed authentication (altered, or another DEK or AAD)")]
    Authentication,
    /// The bytes are not a sealed blob of a known version.
    #[error("malformed sealed data: {0}")]
    Malformed(&'static str),
    /// The blob names a DEK other than the one given to open it.
    #[error("sealed data names DEK {sealed}, not {given}")]
    WrongDek {
        /// The DEK id in the blob.
        sealed: DekId,
        /// The DEK id given.
        given: DekId,
    },
    /// A policy value is out of range.
    #[error("DEK policy: {0}")]
    Policy(String),
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(CryptoError),
}

impl From<CryptoError> for EnvelopeError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::AuthenticationFailed => EnvelopeError::Authentication,
            other => EnvelopeError::Crypto(other),
        }
    }
}

/// The identifier of a DEK (16 random bytes), named in every blob sealed under it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DekId(pub [u8; DEK_ID_LEN]);

impl DekId {
    /// A fresh random id.
    pub fn random() -> Result<Self, EnvelopeError> {
        Ok(DekId(random_array()?))
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, EnvelopeError> {
        let bytes = s.as_bytes();
        if bytes.len() != DEK_ID_LEN * 2 {
            return Err(EnvelopeError::Malformed("DEK id is not 32 hex digits"));
        }
        let mut out = [0u8; DEK_ID_LEN];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let s = std::str::from_utf8(pair)
                .map_err(|_| EnvelopeError::Malformed("DEK id is not hex"))?;
            *o = u8::from_str_radix(s, 16)
                .map_err(|_| EnvelopeError::Malformed("DEK id is not hex"))?;
        }
        Ok(DekId(out))
    }
}

impl std::fmt::Display for DekId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for DekId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DekId({self})")
    }
}

impl Serialize for DekId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DekId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DekId::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A DEK as an application persists it: its id, the root key that wraps it and the wrapped
/// bytes. Never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrappedDek {
    /// The DEK's id.
    pub id: DekId,
    /// The root key (id) that wraps it.
    pub key_id: String,
    /// The wrapped DEK, base64, as the key service returned it.
    pub ciphertext: String,
    /// The root key version that wrapped it.
    pub key_version: String,
}

impl WrappedDek {
    fn wrap_aad(&self) -> Vec<String> {
        wrap_aad(self.id)
    }
}

fn wrap_aad(id: DekId) -> Vec<String> {
    vec![WRAP_AAD_LABEL.to_owned(), id.to_string()]
}

/// A fresh random 256-bit key (e.g. a service's own key for data not under BYOK).
pub fn random_key() -> Result<Secret, EnvelopeError> {
    Ok(random_secret(32)?)
}

/// A service's own 256-bit key kept in a file (for data not under a customer's key): read from
/// `path`, or created there (mode 0600, fsynced) when absent. A file of another length is
/// refused.
pub fn load_or_create_key_file(path: &std::path::Path) -> std::io::Result<Secret> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() == 32 => Ok(Secret::new(bytes)),
        Ok(bytes) => {
            drop(Secret::new(bytes));
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_secret(32).map_err(std::io::Error::other)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)?;
            f.write_all(key.expose())?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The DEK id a sealed blob names (to find its [`WrappedDek`]).
pub fn sealed_dek_id(sealed: &[u8]) -> Result<DekId, EnvelopeError> {
    Ok(parse(sealed)?.0)
}

fn parse(sealed: &[u8]) -> Result<(DekId, [u8; NONCE_LEN], &[u8]), EnvelopeError> {
    let (&version, rest) = sealed
        .split_first()
        .ok_or(EnvelopeError::Malformed("empty"))?;
    if version != SEALED_V1 {
        return Err(EnvelopeError::Malformed("unknown version"));
    }
    if rest.len() < DEK_ID_LEN + NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed("too short"));
    }
    let (id, rest) = rest.split_at(DEK_ID_LEN);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let id: [u8; DEK_ID_LEN] = id
        .try_into()
        .map_err(|_| EnvelopeError::Malformed("too short"))?;
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| EnvelopeError::Malformed("too short"))?;
    Ok((DekId(id), nonce, body))
}

/// The GCM AAD: label, version, DEK id, then the caller's AAD (length-prefixed, so no two
/// (id, aad) pairs share an encoding).
fn gcm_aad(id: DekId, aad: &[u8]) -> Vec<u8> {
    // u64 framing: the one sealed format v1 was first written with.
    let mut c = Canonical::with_capacity(
        Framing::U64,
        AAD_LABEL.len() + 1 + DEK_ID_LEN + 8 + aad.len(),
    );
    c.fixed(AAD_LABEL).u8(SEALED_V1).fixed(&id.0).field(aad);
    c.finish()
}

/// Seals `plaintext` under `dek` (32 bytes) as DEK `id`, binding `aad`.
pub fn seal_with(
    dek: &Secret,
    id: DekId,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let nonce: [u8; NONCE_LEN] = random_array()?;
    let body = aead_seal(dek, nonce, &gcm_aad(id, aad), plaintext)?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&id.0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a blob sealed by [`seal_with`] under `dek` as DEK `id`, with the same `aad`.
pub fn open_with(
    dek: &Secret,
    id: DekId,
    sealed: &[u8],
    aad: &[u8],
) -> Result<Secret, EnvelopeError> {
    let (sealed_id, nonce, body) = parse(sealed)?;
    if sealed_id != id {
        return Err(EnvelopeError::WrongDek {
            sealed: sealed_id,
            given: id,
        });
    }
    Ok(aead_open(dek, nonce, &gcm_aad(id, aad), body)?)
}

/// How long and how often a cached DEK may be used before it must be unwrapped again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DekPolicy {
    /// Dropped when unused for this long.
    pub ttl: Duration,
    /// Dropped after this many seals and opens (then unwrapped again on the next use).
    pub max_uses: u64,
    /// Dropped this long after the last successful unwrap (or generation), however busy; at most
    /// [`MAX_DEK_AGE_LIMIT`].
    pub max_age: Duration,
    /// How often [`DataKeyring::watch_key`] re-reads a watched root key's metadata.
    pub revalidate_interval: Duration,
}

impl Default for DekPolicy {
    fn default() -> Self {
        DekPolicy {
            ttl: Duration::from_secs(5 * 60),
            max_uses: 1 << 20,
            max_age: Duration::from_secs(30 * 60),
            revalidate_interval: Duration::from_millis(250),
        }
    }
}

impl DekPolicy {
    /// Refuses values outside the ranges the cache can honour.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        if self.max_age > MAX_DEK_AGE_LIMIT {
            return Err(EnvelopeError::Policy(format!(
                "max_age {:?} exceeds Key Protect's 4 h limit",
                self.max_age
            )));
        }
        if self.max_uses == 0 || self.ttl.is_zero() || self.max_age.is_zero() {
            return Err(EnvelopeError::Policy(
                "ttl, max_uses and max_age must be positive".into(),
            ));
        }
        if self.revalidate_interval < Duration::from_millis(10) {
            return Err(EnvelopeError::Policy(
                "revalidate_interval must be at least 10 ms".into(),
            ));
        }
        Ok(())
    }
}

struct CachedDek {
    dek: Secret,
    key_id: String,
    unwrapped_at: Instant,
    last_used: Instant,
    uses: u64,
}

/// Unwrapped DEKs by id, each bounded by the [`DekPolicy`]. Time is passed in, so the bounds are
/// tested without sleeping.
pub struct DekCache {
    policy: DekPolicy,
    entries: HashMap<DekId, CachedDek>,
    /// Bumped by every drop: an unwrap that started before a drop must not refill the cache.
    epoch: u64,
}

impl std::fmt::Debug for DekCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DekCache")
            .field("policy", &self.policy)
            .field("entries", &self.entries.len())
            .finish()
    }
}

impl DekCache {
    /// An empty cache.
    pub fn new(policy: DekPolicy) -> Self {
        DekCache {
            policy,
            entries: HashMap::new(),
            epoch: 0,
        }
    }

    /// Caches `dek` (just unwrapped or generated at `now`) under root key `key_id`.
    pub fn insert(&mut self, id: DekId, key_id: &str, dek: Secret, now: Instant) {
        self.entries.insert(
            id,
            CachedDek {
                dek,
                key_id: key_id.to_owned(),
                unwrapped_at: now,
                last_used: now,
                uses: 0,
            },
        );
    }

    /// A copy of the DEK for one use at `now`, counting the use; `None` (and the entry dropped)
    /// when it is absent, idle past the TTL, used up, or older than the maximum age.
    pub fn take_use(&mut self, id: DekId, now: Instant) -> Option<Secret> {
        let p = self.policy;
        let fresh = self.entries.get(&id).is_some_and(|e| {
            now.saturating_duration_since(e.unwrapped_at) < p.max_age
                && now.saturating_duration_since(e.last_used) < p.ttl
                && e.uses < p.max_uses
        });
        if !fresh {
            self.entries.remove(&id);
            return None;
        }
        let e = self.entries.get_mut(&id)?;
        e.uses += 1;
        e.last_used = now;
        Some(Secret::from_slice(e.dek.expose()))
    }

    /// A counter that changes whenever DEKs are dropped (see [`DekCache::insert_if_epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Caches `dek` as [`DekCache::insert`] does, unless DEKs were dropped since `epoch` was
    /// read: a disable seen while the unwrap was in flight wins. Returns whether it was cached.
    pub fn insert_if_epoch(
        &mut self,
        epoch: u64,
        id: DekId,
        key_id: &str,
        dek: Secret,
        now: Instant,
    ) -> bool {
        if epoch != self.epoch {
            return false;
        }
        self.insert(id, key_id, dek, now);
        true
    }

    /// Drops every DEK wrapped by `key_id`; returns how many.
    pub fn drop_key(&mut self, key_id: &str) -> usize {
        self.epoch += 1;
        let before = self.entries.len();
        self.entries.retain(|_, e| e.key_id != key_id);
        before - self.entries.len()
    }

    /// Drops every DEK.
    pub fn drop_all(&mut self) {
        self.epoch += 1;
        self.entries.clear();
    }

    /// Drops entries past their bounds at `now` (so expired DEKs do not linger in memory).
    pub fn evict_expired(&mut self, now: Instant) {
        let p = self.policy;
        self.entries.retain(|_, e| {
            now.saturating_duration_since(e.unwrapped_at) < p.max_age
                && now.saturating_duration_since(e.last_used) < p.ttl
                && e.uses < p.max_uses
        });
    }

    /// How many DEKs are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no DEK is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many cached DEKs `key_id` wraps.
    pub fn count_for(&self, key_id: &str) -> usize {
        self.entries.values().filter(|e| e.key_id == key_id).count()
    }
}

/// What the key service says about a root key, as an integrated service must act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStatus {
    /// Not checked yet.
    Unknown,
    /// Usable for unwrap (Active, or Deactivated: an expired key still unwraps).
    Active,
    /// Suspended by its owner: shut down until enabled.
    Disabled,
    /// Deleted (Destroyed): the data it protects is to be crypto-shredded.
    Deleted,
    /// The service's access is gone (401, 403 or 404: authorization removed, key purged).
    NoAccess {
        /// The HTTP status.
        status: u16,
        /// Key Protect's reason code.
        code: String,
    },
}

impl KeyStatus {
    /// True when data under the key may be served.
    pub fn is_usable(&self) -> bool {
        matches!(self, KeyStatus::Active)
    }

    /// The reason a service gives for refusing calls, if it must.
    pub fn refusal(&self) -> Option<String> {
        match self {
            KeyStatus::Unknown => Some("the root key has not been checked yet".into()),
            KeyStatus::Active => None,
            KeyStatus::Disabled => Some("the root key is disabled".into()),
            KeyStatus::Deleted => Some("the root key was deleted; the data is destroyed".into()),
            KeyStatus::NoAccess { status, code } => Some(format!(
                "access to the root key was removed ({status} {code})"
            )),
        }
    }
}

/// A root key's status from `GET /api/v2/keys/{id}/metadata`. Transport failures and 5xx are
/// errors, not a status: an unreachable key service does not shut a service down (the DEK age
/// bound does, in time).
pub async fn key_status(client: &Client, key_id: &str) -> Result<KeyStatus, ClientError> {
    match client.key_metadata(key_id).await {
        Ok(k) => Ok(match k.state {
            STATE_ACTIVE | STATE_DEACTIVATED => KeyStatus::Active,
            STATE_SUSPENDED => KeyStatus::Disabled,
            STATE_DESTROYED => KeyStatus::Deleted,
            other => KeyStatus::NoAccess {
                status: 200,
                code: format!("KEY_STATE_{other}"),
            },
        }),
        Err(ClientError::Api { status: 410, .. }) => Ok(KeyStatus::Deleted),
        Err(ClientError::Api { status, code, .. }) if matches!(status, 401 | 403 | 404) => {
            Ok(KeyStatus::NoAccess { status, code })
        }
        Err(e) => Err(e),
    }
}

/// Envelope encryption over a [`Client`]: generates, unwraps, caches and rewraps DEKs, and seals
/// and opens data under them.
pub struct DataKeyring {
    client: Arc<Client>,
    policy: DekPolicy,
    cache: Mutex<DekCache>,
    status: Mutex<HashMap<String, watch::Sender<KeyStatus>>>,
}

impl std::fmt::Debug for DataKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKeyring")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl DataKeyring {
    /// A keyring over `client` with `policy`.
    pub fn new(client: Arc<Client>, policy: DekPolicy) -> Result<Self, EnvelopeError> {
        policy.validate()?;
        Ok(DataKeyring {
            client,
            policy,
            cache: Mutex::new(DekCache::new(policy)),
            status: Mutex::new(HashMap::new()),
        })
    }

    /// The client it calls.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// Its policy.
    pub fn policy(&self) -> DekPolicy {
        self.policy
    }

    fn cache(&self) -> MutexGuard<'_, DekCache> {
        // A panic while holding the lock leaves only DEKs behind; the map itself stays valid.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new DEK generated by the key service (`wrap` without plaintext: Key Protect returns the
    /// DEK and its wrapped form), cached.
    pub async fn generate(&self, key_id: &str) -> Result<WrappedDek, EnvelopeError> {
        let id = DekId::random()?;
        let epoch = self.cache().epoch();
        let resp = self.client.wrap(key_id, None, wrap_aad(id)).await?;
        // The base64 DEK is a `SecretText`: zeroized when `resp` drops.
        let dek = decode_secret(
            resp.plaintext
                .as_ref()
                .ok_or_else(|| ClientError::Decode("wrap returned no generated DEK".into()))?
                .expose(),
        )?;
        self.cache()
            .insert_if_epoch(epoch, id, key_id, dek, Instant::now());
        Ok(WrappedDek {
            id,
            key_id: key_id.to_owned(),
            ciphertext: resp.ciphertext,
            key_version: resp.key_version.id,
        })
    }

    /// A new DEK generated locally (aws-lc-rs randomness) and wrapped by the key service, cached.
    pub async fn generate_local(&self, key_id: &str) -> Result<WrappedDek, EnvelopeError> {
        let id = DekId::random()?;
        let epoch = self.cache().epoch();
        let dek = random_secret(32)?;
        let mut b64 = B64.encode(dek.expose());
        let resp = self
            .client
            .wrap(key_id, Some(b64.clone()), wrap_aad(id))
            .await;
        b64.zeroize();
        let resp = resp?;
        self.cache()
            .insert_if_epoch(epoch, id, key_id, dek, Instant::now());
        Ok(WrappedDek {
            id,
            key_id: key_id.to_owned(),
            ciphertext: resp.ciphertext,
            key_version: resp.key_version.id,
        })
    }

    /// The DEK for one use: from the cache, or unwrapped by the key service (and cached).
    async fn dek(&self, wrapped: &WrappedDek) -> Result<Secret, EnvelopeError> {
        let epoch = {
            let mut cache = self.cache();
            if let Some(dek) = cache.take_use(wrapped.id, Instant::now()) {
                return Ok(dek);
            }
            cache.epoch()
        };
        let resp = self
            .client
            .unwrap(
                &wrapped.key_id,
                wrapped.ciphertext.clone(),
                wrapped.wrap_aad(),
            )
            .await?;
        let dek = decode_secret(resp.plaintext.expose())?;
        drop(resp);
        let copy = Secret::from_slice(dek.expose());
        let mut cache = self.cache();
        let now = Instant::now();
        if cache.insert_if_epoch(epoch, wrapped.id, &wrapped.key_id, dek, now) {
            // The use just made counts against the entry's limit.
            drop(cache.take_use(wrapped.id, now));
        }
        Ok(copy)
    }

    /// Unwraps `wrapped` now (refreshing its cache entry), e.g. to check access on resume.
    pub async fn unwrap_now(&self, wrapped: &WrappedDek) -> Result<(), EnvelopeError> {
        self.cache().entries.remove(&wrapped.id);
        self.dek(wrapped).await.map(drop)
    }

    /// Seals `plaintext` under `wrapped`'s DEK, binding `aad`.
    pub async fn seal(
        &self,
        wrapped: &WrappedDek,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, EnvelopeError> {
        let dek = self.dek(wrapped).await?;
        seal_with(&dek, wrapped.id, plaintext, aad)
    }

    /// Opens a blob sealed under `wrapped`'s DEK with the same `aad`.
    pub async fn open(
        &self,
        wrapped: &WrappedDek,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Secret, EnvelopeError> {
        let sealed_id = sealed_dek_id(sealed)?;
        if sealed_id != wrapped.id {
            return Err(EnvelopeError::WrongDek {
                sealed: sealed_id,
                given: wrapped.id,
            });
        }
        let dek = self.dek(wrapped).await?;
        open_with(&dek, wrapped.id, sealed, aad)
    }

    /// `wrapped` rewrapped under the root key's latest version (`actions/rewrap`), after a
    /// rotation; the caller persists the result in place of the old one.
    pub async fn rewrap(&self, wrapped: &WrappedDek) -> Result<WrappedDek, EnvelopeError> {
        let resp = self
            .client
            .rewrap(
                &wrapped.key_id,
                wrapped.ciphertext.clone(),
                wrapped.wrap_aad(),
            )
            .await?;
        Ok(WrappedDek {
            id: wrapped.id,
            key_id: wrapped.key_id.clone(),
            ciphertext: resp.ciphertext,
            // `keyVersion` names the version that had wrapped it; the new one is this.
            key_version: resp.rewrapped_key_version.id,
        })
    }

    /// Drops every cached DEK wrapped by `key_id`; returns how many.
    pub fn drop_key(&self, key_id: &str) -> usize {
        self.cache().drop_key(key_id)
    }

    /// Drops every cached DEK (on shutdown).
    pub fn drop_all(&self) {
        self.cache().drop_all();
    }

    /// How many DEKs wrapped by `key_id` are cached.
    pub fn cached_for(&self, key_id: &str) -> usize {
        self.cache().count_for(key_id)
    }

    fn status_sender(&self, key_id: &str) -> watch::Sender<KeyStatus> {
        let mut map = self.status.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key_id.to_owned())
            .or_insert_with(|| watch::channel(KeyStatus::Unknown).0)
            .clone()
    }

    /// The latest known status of `key_id` (from [`DataKeyring::watch_key`] and
    /// [`DataKeyring::report`]), as a receiver that sees every change.
    pub fn status(&self, key_id: &str) -> watch::Receiver<KeyStatus> {
        self.status_sender(key_id).subscribe()
    }

    /// Records `status` for `key_id` (from a revalidation or a lifecycle event); a status that is
    /// not usable drops the key's cached DEKs first.
    pub fn report(&self, key_id: &str, status: KeyStatus) {
        if !status.is_usable() {
            self.drop_key(key_id);
        }
        self.status_sender(key_id).send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Re-reads `key_id`'s metadata every `revalidate_interval` until the returned handle is
    /// aborted: removal of access produces no lifecycle event, so this is how a service learns
    /// of it. A 401, 403 or 404, a disabled or a deleted key drops the key's cached DEKs and is
    /// reported through [`DataKeyring::status`]. It also sweeps expired DEKs from memory.
    pub fn watch_key(self: &Arc<Self>, key_id: &str) -> tokio::task::JoinHandle<()> {
        let this = Arc::clone(self);
        let key_id = key_id.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.policy.revalidate_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.cache().evict_expired(Instant::now());
                if let Ok(status) = key_status(&this.client, &key_id).await {
                    this.report(&key_id, status);
                }
            }
        })
    }
}

fn decode_secret(b64: &str) -> Result<Secret, EnvelopeError> {
    let bytes = B64
        .decode(b64)
        .map_err(|_| ClientError::Decode("DEK is not base64".into()))?;
    let dek = Secret::new(bytes);
    if dek.len() != 32 {
        return Err(EnvelopeError::Malformed("DEK is not 32 bytes"));
    }
    Ok(dek)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GCM AAD every sealed v1 message written so far authenticates.
    #[test]
    fn gcm_aad_known_answer() {
        let want = [
            b"keyward-envelope-v1".as_slice(),
            &[1],
            &[7; 16],
            &[0, 0, 0, 0, 0, 0, 0, 3],
            b"abc",
        ]
        .concat();
        assert_eq!(gcm_aad(DekId([7; 16]), b"abc"), want);
    }

    fn policy() -> DekPolicy {
        DekPolicy {
            ttl: Duration::from_secs(60),
            max_uses: 3,
            max_age: Duration::from_secs(300),
            revalidate_interval: Duration::from_millis(250),
        }
    }

    fn dek() -> Secret {
        random_secret(32).unwrap()
    }

    #[test]
    fn sealed_data_opens_with_its_dek_and_aad() {
        let (k, id) = (dek(), DekId::random().unwrap());
        let sealed = seal_with(&k, id, b"hello", b"topic/0").unwrap();
        assert_eq!(sealed.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(sealed[0], SEALED_V1);
        assert_eq!(sealed_dek_id(&sealed).unwrap(), id);
        assert_eq!(
            open_with(&k, id, &sealed, b"topic/0").unwrap().expose(),
            b"hello"
        );
    }

    #[test]
    fn open_refuses_every_single_byte_change() {
        let (k, id) = (dek(), DekId::random().unwrap());
        let sealed = seal_with(&k, id, b"attack at dawn", b"ctx").unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(open_with(&k, id, &bad, b"ctx").is_err(), "byte {i}");
        }
        for n in 0..sealed.len() {
            assert!(open_with(&k, id, &sealed[..n], b"ctx").is_err(), "len {n}");
        }
    }

    #[test]
    fn open_refuses_wrong_aad_wrong_dek_and_wrong_id() {
        let (k, id) = (dek(), DekId::random().unwrap());
        let sealed = seal_with(&k, id, b"secret", b"topic-a").unwrap();
        assert!(matches!(
            open_with(&k, id, &sealed, b"topic-b"),
            Err(EnvelopeError::Authentication)
        ));
        assert!(matches!(
            open_with(&k, id, &sealed, b""),
            Err(EnvelopeError::Authentication)
        ));
        assert!(matches!(
            open_with(&dek(), id, &sealed, b"topic-a"),
            Err(EnvelopeError::Authentication)
        ));
        let other = DekId::random().unwrap();
        assert!(matches!(
            open_with(&k, other, &sealed, b"topic-a"),
            Err(EnvelopeError::WrongDek { .. })
        ));
        // The id in the header is authenticated: rewriting it to another id fails too.
        let mut moved = sealed.clone();
        moved[1..1 + DEK_ID_LEN].copy_from_slice(&other.0);
        assert!(matches!(
            open_with(&k, other, &moved, b"topic-a"),
            Err(EnvelopeError::Authentication)
        ));
    }

    #[test]
    fn unknown_versions_and_short_input_are_malformed() {
        let (k, id) = (dek(), DekId::random().unwrap());
        let mut sealed = seal_with(&k, id, b"x", b"").unwrap();
        sealed[0] = 2;
        assert!(matches!(
            sealed_dek_id(&sealed),
            Err(EnvelopeError::Malformed("unknown version"))
        ));
        assert!(matches!(
            sealed_dek_id(&[]),
            Err(EnvelopeError::Malformed("empty"))
        ));
        assert!(matches!(
            sealed_dek_id(&[SEALED_V1; 20]),
            Err(EnvelopeError::Malformed("too short"))
        ));
    }

    #[test]
    fn dek_ids_round_trip_through_hex_and_json() {
        let id = DekId::random().unwrap();
        assert_eq!(DekId::from_hex(&id.to_string()).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<DekId>(&json).unwrap(), id);
        assert!(DekId::from_hex("zz").is_err());
        assert!(DekId::from_hex(&"g".repeat(32)).is_err());
    }

    #[test]
    fn cache_serves_within_bounds_and_counts_uses() {
        let mut c = DekCache::new(policy());
        let t0 = Instant::now();
        let id = DekId::random().unwrap();
        let k = dek();
        let bytes = k.expose().to_vec();
        c.insert(id, "root", k, t0);
        for i in 0..3 {
            let got = c.take_use(id, t0 + Duration::from_secs(i)).unwrap();
            assert_eq!(got.expose(), bytes.as_slice());
        }
        // Fourth use: the limit of 3 is reached; the entry is gone, not just refused.
        assert!(c.take_use(id, t0 + Duration::from_secs(4)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn cache_drops_an_entry_idle_past_its_ttl() {
        let mut c = DekCache::new(policy());
        let t0 = Instant::now();
        let id = DekId::random().unwrap();
        c.insert(id, "root", dek(), t0);
        assert!(c.take_use(id, t0 + Duration::from_secs(59)).is_some());
        // Used at 59 s: idle for 60 s from then is the end.
        assert!(c.take_use(id, t0 + Duration::from_secs(118)).is_some());
        assert!(c.take_use(id, t0 + Duration::from_secs(178)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn cache_never_serves_past_max_age_however_busy() {
        let mut c = DekCache::new(DekPolicy {
            max_uses: u64::MAX,
            ..policy()
        });
        let t0 = Instant::now();
        let id = DekId::random().unwrap();
        c.insert(id, "root", dek(), t0);
        let mut t = t0;
        while t < t0 + Duration::from_secs(299) {
            t += Duration::from_secs(30);
            let want = t < t0 + Duration::from_secs(300);
            assert_eq!(c.take_use(id, t).is_some(), want, "at {:?}", t - t0);
        }
        assert!(c.take_use(id, t0 + Duration::from_secs(300)).is_none());
        // A fresh unwrap restarts the clock.
        c.insert(id, "root", dek(), t0 + Duration::from_secs(301));
        assert!(c.take_use(id, t0 + Duration::from_secs(302)).is_some());
    }

    #[test]
    fn cache_drops_by_root_key_and_all_at_once() {
        let mut c = DekCache::new(policy());
        let t0 = Instant::now();
        let ids: Vec<DekId> = (0..4).map(|_| DekId::random().unwrap()).collect();
        for (i, id) in ids.iter().enumerate() {
            c.insert(*id, if i % 2 == 0 { "a" } else { "b" }, dek(), t0);
        }
        assert_eq!(c.count_for("a"), 2);
        assert_eq!(c.drop_key("a"), 2);
        assert!(c.take_use(ids[0], t0).is_none());
        assert!(c.take_use(ids[1], t0).is_some());
        c.drop_all();
        assert!(c.is_empty());
    }

    #[test]
    fn an_unwrap_that_raced_a_drop_does_not_refill_the_cache() {
        let mut c = DekCache::new(policy());
        let t0 = Instant::now();
        let id = DekId::random().unwrap();
        let before = c.epoch();
        // A disable is seen while the unwrap is in flight.
        c.drop_key("root");
        assert!(!c.insert_if_epoch(before, id, "root", dek(), t0));
        assert!(c.is_empty());
        assert!(c.insert_if_epoch(c.epoch(), id, "root", dek(), t0));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_key_file_is_created_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kw-keyfile-{}", DekId::random().unwrap()));
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("service.key");
        let a = load_or_create_key_file(&path).unwrap();
        let b = load_or_create_key_file(&path).unwrap();
        assert!(a.ct_eq(&b));
        assert_eq!(a.len(), 32);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        let err = load_or_create_key_file(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn evict_expired_sweeps_only_stale_entries() {
        let mut c = DekCache::new(policy());
        let t0 = Instant::now();
        let (old, new) = (DekId::random().unwrap(), DekId::random().unwrap());
        c.insert(old, "root", dek(), t0);
        c.insert(new, "root", dek(), t0 + Duration::from_secs(250));
        c.evict_expired(t0 + Duration::from_secs(300));
        assert_eq!(c.len(), 1);
        assert!(c.take_use(new, t0 + Duration::from_secs(300)).is_some());
    }

    #[test]
    fn policy_refuses_an_age_beyond_four_hours_and_zero_bounds() {
        assert!(DekPolicy::default().validate().is_ok());
        assert!(
            DekPolicy {
                max_age: MAX_DEK_AGE_LIMIT,
                ..DekPolicy::default()
            }
            .validate()
            .is_ok()
        );
        for bad in [
            DekPolicy {
                max_age: MAX_DEK_AGE_LIMIT + Duration::from_secs(1),
                ..DekPolicy::default()
            },
            DekPolicy {
                max_uses: 0,
                ..DekPolicy::default()
            },
            DekPolicy {
                ttl: Duration::ZERO,
                ..DekPolicy::default()
            },
            DekPolicy {
                revalidate_interval: Duration::from_millis(1),
                ..DekPolicy::default()
            },
        ] {
            assert!(matches!(bad.validate(), Err(EnvelopeError::Policy(_))));
        }
    }

    #[test]
    fn key_status_refusals_name_the_reason() {
        assert_eq!(KeyStatus::Active.refusal(), None);
        assert!(KeyStatus::Disabled.refusal().unwrap().contains("disabled"));
        assert!(
            KeyStatus::NoAccess {
                status: 404,
                code: "KEY_NOT_FOUND_ERR".into()
            }
            .refusal()
            .unwrap()
            .contains("access")
        );
    }
}
