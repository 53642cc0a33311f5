//! A short-lived cache of verified root keys for the wrap/unwrap hot path: the key record, its
//! current version and that version's unwrapped material, so a burst of requests on one key reads
//! and verifies the database once.
//!
//! Freshness: this process drops an entry the moment it changes the key (disable, rotate, delete),
//! so here a change is seen at once; another process sharing the database sees it within the TTL.
//! Material lives in `Secret`s (zeroized when the last reader drops the entry).
//!
//! Behind the entries with material, a larger cache keeps the verified records alone (material
//! still wrapped by custody) for as long as the store's *key generation* (a number the store
//! changes with every update or deletion of a key or version, `Store::key_generation`) stays
//! what it was when they were read. The generation is read again once half a TTL has passed, so
//! a change made by another process is still honoured within the TTL; a record found there
//! costs one custody unwrap instead of a database read and two signature checks. Stores that
//! keep no generation (`None`) get the TTL cache alone.
//!
//! Cost: every entry lives exactly one TTL from its load, so load order is expiry order. The
//! entries are kept in a hash map linked in insertion order (`hashlink`, already in the tree
//! through rusqlite): a lookup is one hash probe under a read lock, an insert pops the expired
//! entries from the front (each entry is popped once, so O(1) amortized) and, past
//! [`CAPACITY`], the oldest one. Sweeping the whole map on every insert once it held 256 entries
//! (as before) cost a third of the server's CPU with many keys in use (issue 19). Plain LRU would
//! need a write lock on every hit to reorder; here a hit only reads.

use std::hash::Hash;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;
use keyward_crypto::Secret;

use crate::{KeyId, KeyRecord, KeyVersion, Verified};

/// A verified root key with its current version and material.
pub(crate) struct CachedKey {
    pub key: Verified<KeyRecord>,
    pub current: Verified<KeyVersion>,
    pub material: Secret,
}

impl CachedKey {
    pub fn new(key: Verified<KeyRecord>, current: Verified<KeyVersion>, material: Secret) -> Self {
        CachedKey {
            key,
            current,
            material,
        }
    }
}

/// The most entries with material held at once (about 1 KiB each: a key record, a version and
/// 32 bytes of material), so memory stays bounded whatever the request rate; past it the oldest
/// entry goes.
pub(crate) const CAPACITY: usize = 16_384;

/// The most verified records (without material) held at once: about 1 KiB each, so at most
/// ~128 MiB with this many keys in use.
pub(crate) const RECORD_CAPACITY: usize = 131_072;

/// How long a verified record may be reused at most, whatever the generation says (so a
/// record is read and verified again now and then).
const RECORD_MAX_AGE: Duration = Duration::from_secs(600);

/// A verified root key and its current version, material still wrapped, read at `generation`.
pub(crate) struct CachedRecord {
    pub key: Verified<KeyRecord>,
    pub current: Verified<KeyVersion>,
    generation: u64,
}

/// The root-key cache.
pub(crate) struct KeyCache {
    ttl: Duration,
    entries: TtlCache<KeyId, CachedKey>,
    records: TtlCache<KeyId, CachedRecord>,
    /// The store's key generation and when its read began.
    observed: RwLock<Observed>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        let record_age = if ttl.is_zero() {
            Duration::ZERO
        } else {
            RECORD_MAX_AGE.max(ttl)
        };
        KeyCache {
            ttl,
            entries: TtlCache::new(ttl, CAPACITY),
            records: TtlCache::new(record_age, RECORD_CAPACITY),
            observed: RwLock::new(Observed::default()),
        }
    }

    /// A fresh entry, if any. A zero TTL disables the cache.
    pub fn get(&self, id: KeyId) -> Option<Arc<CachedKey>> {
        self.entries.get(&id, Instant::now())
    }

    /// Caches `entry` (unless the cache is disabled) and hands it back.
    pub fn put(&self, entry: CachedKey) -> Arc<CachedKey> {
        let id = entry.key.id;
        self.entries.put(id, entry, Instant::now())
    }

    /// The verified record of `id`, if it was read at `generation`.
    pub fn record(&self, id: KeyId, generation: u64) -> Option<Arc<CachedRecord>> {
        self.records
            .get(&id, Instant::now())
            .filter(|r| r.generation == generation)
    }

    /// Keeps the verified records of a key read at `generation`.
    pub fn put_record(
        &self,
        key: &Verified<KeyRecord>,
        current: &Verified<KeyVersion>,
        generation: u64,
    ) {
        let record = CachedRecord {
            key: key.clone(),
            current: current.clone(),
            generation,
        };
        self.records.put(key.id, record, Instant::now());
    }

    /// The key generation last read, unless half a TTL has passed since that read began (or
    /// the cache is disabled): then it must be read again.
    pub fn observed_generation(&self) -> Option<u64> {
        if self.ttl.is_zero() {
            return None;
        }
        let observed = self.observed.read().ok()?.last;
        observed
            .filter(|(at, _)| at.elapsed() < self.ttl / 2)
            .map(|(_, g)| g)
    }

    /// Records a generation whose read began at `at`. Generations only grow: a slower read of
    /// an older one does not replace a newer one, nor does a read begun before this process
    /// last changed a key.
    pub fn observe(&self, at: Instant, generation: u64) {
        if let Ok(mut o) = self.observed.write() {
            let older = matches!(o.last, Some((_, g)) if g > generation);
            let before_change = o.not_before.is_some_and(|nb| at < nb);
            if !older && !before_change {
                o.last = Some((at, generation));
            }
        }
    }

    /// Whether the cache is on at all.
    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    pub fn clear(&self) {
        self.entries.clear();
        self.records.clear();
        self.forget_generation();
    }

    pub fn invalidate(&self, id: KeyId) {
        self.entries.invalidate(&id);
        self.records.invalidate(&id);
        // The change this follows moved the generation: read it again before trusting records.
        self.forget_generation();
    }

    fn forget_generation(&self) {
        if let Ok(mut o) = self.observed.write() {
            *o = Observed {
                last: None,
                not_before: Some(Instant::now()),
            };
        }
    }
}

/// The last key generation read, and the earliest start a read must have to be believed.
#[derive(Default)]
struct Observed {
    last: Option<(Instant, u64)>,
    not_before: Option<Instant>,
}

/// Values that expire one TTL after their insertion, at most `capacity` of them, in a map
/// linked in insertion order. Times are passed in, so tests need no clock.
struct TtlCache<K, V> {
    ttl: Duration,
    capacity: usize,
    /// Oldest first.
    entries: RwLock<LinkedHashMap<K, (Instant, Arc<V>)>>,
}

impl<K: Hash + Eq, V> TtlCache<K, V> {
    fn new(ttl: Duration, capacity: usize) -> Self {
        TtlCache {
            ttl,
            capacity: capacity.max(1),
            entries: RwLock::new(LinkedHashMap::new()),
        }
    }

    fn fresh(&self, loaded: Instant, now: Instant) -> bool {
        now.saturating_duration_since(loaded) < self.ttl
    }

    fn get(&self, k: &K, now: Instant) -> Option<Arc<V>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.read().ok()?;
        entries
            .get(k)
            .filter(|(loaded, _)| self.fresh(*loaded, now))
            .map(|(_, v)| Arc::clone(v))
    }

    fn put(&self, k: K, v: V, now: Instant) -> Arc<V> {
        let v = Arc::new(v);
        if self.ttl.is_zero() {
            return v;
        }
        let mut dropped = Vec::new();
        if let Ok(mut entries) = self.entries.write() {
            // Expired entries are at the front: stop at the first fresh one (with room left).
            while let Some((_, (loaded, _))) = entries.front() {
                if self.fresh(*loaded, now) && entries.len() < self.capacity {
                    break;
                }
                dropped.extend(entries.pop_front().map(|(_, (_, v))| v));
            }
            // A reload moves the key to the back, with its new load time.
            dropped.extend(entries.insert(k, (now, Arc::clone(&v))).map(|(_, v)| v));
        }
        // Dropping (zeroizing) what left the cache happens outside the lock.
        drop(dropped);
        v
    }

    fn clear(&self) {
        let old = match self.entries.write() {
            Ok(mut entries) => std::mem::take(&mut *entries),
            Err(_) => return,
        };
        drop(old);
    }

    fn invalidate(&self, k: &K) {
        let old = match self.entries.write() {
            Ok(mut entries) => entries.remove(k),
            Err(_) => return,
        };
        drop(old);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_read_is_believed_for_half_a_ttl_and_only_grows() {
        let c = KeyCache::new(Duration::from_secs(3600));
        assert_eq!(c.observed_generation(), None);
        let t0 = Instant::now();
        c.observe(t0, 7);
        assert_eq!(c.observed_generation(), Some(7));
        // A slower read of an older generation does not win.
        c.observe(t0, 6);
        assert_eq!(c.observed_generation(), Some(7));
        c.observe(t0, 8);
        assert_eq!(c.observed_generation(), Some(8));
        // A read begun long enough ago is stale.
        let c = KeyCache::new(Duration::from_millis(10));
        if let Some(old) = t0.checked_sub(Duration::from_secs(1)) {
            c.observe(old, 1);
            assert_eq!(c.observed_generation(), None);
        }
    }

    #[test]
    fn a_local_change_forgets_the_generation_and_reads_begun_before_it() {
        let c = KeyCache::new(Duration::from_secs(3600));
        let before = Instant::now();
        c.observe(before, 3);
        c.invalidate(KeyId::random());
        assert_eq!(c.observed_generation(), None);
        // A read that began before the change may have seen the old generation.
        c.observe(before, 3);
        assert_eq!(c.observed_generation(), None);
        c.observe(Instant::now(), 4);
        assert_eq!(c.observed_generation(), Some(4));
        c.clear();
        assert_eq!(c.observed_generation(), None);
    }

    #[test]
    fn a_disabled_cache_trusts_no_generation() {
        let c = KeyCache::new(Duration::ZERO);
        c.observe(Instant::now(), 1);
        assert!(!c.enabled());
        assert_eq!(c.observed_generation(), None);
    }

    const TTL: Duration = Duration::from_secs(1);

    #[test]
    fn an_entry_is_served_until_its_ttl_and_not_after() {
        let c = TtlCache::new(TTL, 8);
        let t0 = Instant::now();
        c.put(1, "a", t0);
        assert_eq!(c.get(&1, t0).as_deref(), Some(&"a"));
        assert_eq!(
            c.get(&1, t0 + TTL - Duration::from_nanos(1)).as_deref(),
            Some(&"a")
        );
        assert_eq!(c.get(&1, t0 + TTL), None);
        assert_eq!(c.get(&2, t0), None);
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let c = TtlCache::new(Duration::ZERO, 8);
        let t0 = Instant::now();
        assert_eq!(*c.put(1, "a", t0), "a");
        assert_eq!(c.get(&1, t0), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn invalidation_and_clearing_take_effect_at_once() {
        let c = TtlCache::new(TTL, 8);
        let t0 = Instant::now();
        c.put(1, "a", t0);
        c.put(2, "b", t0);
        c.invalidate(&1);
        assert_eq!(c.get(&1, t0), None);
        assert_eq!(c.get(&2, t0).as_deref(), Some(&"b"));
        c.clear();
        assert_eq!(c.get(&2, t0), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn inserts_drop_expired_entries_and_stay_within_capacity() {
        let c = TtlCache::new(TTL, 4);
        let t0 = Instant::now();
        for k in 0..4 {
            c.put(k, k, t0);
        }
        // Full: the oldest goes.
        c.put(4, 4, t0);
        assert_eq!(c.len(), 4);
        assert_eq!(c.get(&0, t0), None);
        assert_eq!(c.get(&4, t0).as_deref(), Some(&4));
        // Past the TTL, one insert drops every expired entry.
        let t1 = t0 + TTL;
        c.put(9, 9, t1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get(&9, t1).as_deref(), Some(&9));
    }

    #[test]
    fn a_reload_replaces_the_entry_and_renews_its_ttl() {
        let c = TtlCache::new(TTL, 4);
        let t0 = Instant::now();
        c.put(1, "old", t0);
        c.put(2, "b", t0);
        let t1 = t0 + TTL / 2;
        c.put(1, "new", t1);
        assert_eq!(c.get(&1, t1).as_deref(), Some(&"new"));
        // Key 2 expires first although key 1 was inserted first.
        let t2 = t0 + TTL;
        c.put(3, "c", t2);
        assert_eq!(c.get(&2, t2), None);
        assert_eq!(c.get(&1, t2).as_deref(), Some(&"new"));
        assert_eq!(c.len(), 2);
    }
}
