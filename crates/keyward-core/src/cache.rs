//! A short-lived cache of verified root keys for the wrap/unwrap hot path: the key record, its
//! current version and that version's unwrapped material, so a burst of requests on one key reads
//! and verifies the database once.
//!
//! Freshness: this process drops an entry the moment it changes the key (disable, rotate, delete),
//! so here a change is seen at once; another process sharing the database sees it within the TTL.
//! Material lives in `Secret`s (zeroized when the last reader drops the entry); expired entries are
//! swept as new ones arrive, so unused keys do not stay in memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyward_crypto::Secret;

use crate::{KeyId, KeyRecord, KeyVersion, Verified};

/// A verified root key with its current version and material.
pub(crate) struct CachedKey {
    pub key: Verified<KeyRecord>,
    pub current: Verified<KeyVersion>,
    pub material: Secret,
    loaded: Instant,
}

impl CachedKey {
    pub fn new(key: Verified<KeyRecord>, current: Verified<KeyVersion>, material: Secret) -> Self {
        CachedKey {
            key,
            current,
            material,
            loaded: Instant::now(),
        }
    }
}

/// Sweep expired entries once the map holds more than this many.
const SWEEP_ABOVE: usize = 256;

pub(crate) struct KeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<KeyId, Arc<CachedKey>>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        KeyCache {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// A fresh entry, if any. A zero TTL disables the cache.
    pub fn get(&self, id: KeyId) -> Option<Arc<CachedKey>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        entries
            .get(&id)
            .filter(|e| e.loaded.elapsed() < self.ttl)
            .cloned()
    }

    pub fn put(&self, entry: CachedKey) -> Arc<CachedKey> {
        let entry = Arc::new(entry);
        if self.ttl.is_zero() {
            return entry;
        }
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() > SWEEP_ABOVE {
                let ttl = self.ttl;
                entries.retain(|_, e| e.loaded.elapsed() < ttl);
            }
            entries.insert(entry.key.id, Arc::clone(&entry));
        }
        entry
    }

    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    pub fn invalidate(&self, id: KeyId) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(&id);
        }
    }
}
