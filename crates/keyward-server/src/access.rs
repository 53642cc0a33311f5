//! The access gate every authenticated request passes after its token verifies: the token's API
//! key and identity must still exist and be unlocked, the identity's grants are loaded, and its
//! request rate is limited.
//!
//! Grants and API key state are cached per API key for `access_cache_ttl_ms` (at most one
//! second), so a removed authorization, deleted policy, or locked or deleted API key takes effect
//! within that time on every server process sharing the store, not only on the one that made the
//! change (which also drops its own cache at once).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use keyward_core::{Grants, IamService, IdentityRecord, KeyError, Principal, Store};
use keyward_iam::Claims;

use crate::error::ApiError;

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
/// When an API key's state was read, and what it was (`None`: revoked).
type CacheEntry = (Instant, Option<Arc<Resolved>>);

/// A caller whose token, API key and identity checked out.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The identity.
    pub identity: IdentityRecord,
    /// Its grants in its account.
    pub grants: Arc<Grants>,
}

/// Revocation checks, grants and rate limits. One per process.
pub struct AccessGate {
    /// Identity and access management.
    pub iam: IamService,
    store: Arc<dyn Store>,
    ttl: Duration,
    cache: RwLock<HashMap<String, CacheEntry>>,
    limiter: Option<KeyedLimiter>,
}

impl AccessGate {
    /// A gate caching for `ttl`, limiting each identity to `per_second` requests (bursts of
    /// `burst`); `per_second == 0` turns the limit off.
    pub fn new(
        iam: IamService,
        store: Arc<dyn Store>,
        ttl: Duration,
        per_second: u32,
        burst: u32,
    ) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        AccessGate {
            iam,
            store,
            ttl,
            cache: RwLock::new(HashMap::new()),
            limiter,
        }
    }

    /// The identity and grants behind verified `claims`, or 401 when its API key or identity
    /// was deleted or locked since the token was issued.
    pub async fn resolve(&self, claims: &Claims) -> Result<Arc<Resolved>, ApiError> {
        if let Some((at, entry)) = self
            .cache
            .read()
            .ok()
            .and_then(|c| c.get(&claims.apikey_id).cloned())
            && at.elapsed() < self.ttl
        {
            return entry.ok_or_else(revoked);
        }
        let entry = self.load(claims).await.map_err(ApiError::Key)?;
        if let Ok(mut c) = self.cache.write() {
            // Bounded: entries expire, and a full map is cleared rather than grown.
            if c.len() > 100_000 {
                c.clear();
            }
            c.insert(claims.apikey_id.clone(), (Instant::now(), entry.clone()));
        }
        entry.ok_or_else(revoked)
    }

    async fn load(&self, claims: &Claims) -> Result<Option<Arc<Resolved>>, KeyError> {
        let Some(key) = self.store.api_key(&claims.apikey_id).await? else {
            return Ok(None);
        };
        if key.locked || key.subject != claims.sub || key.account != claims.account.bss {
            return Ok(None);
        }
        let Some(identity) = self.store.identity(&claims.sub).await? else {
            return Ok(None);
        };
        if identity.locked || identity.account != key.account {
            return Ok(None);
        }
        let grants = Arc::new(self.iam.grants(&identity, &identity.account).await?);
        Ok(Some(Arc::new(Resolved { identity, grants })))
    }

    /// Drops every cached entry (after a change to identities or access through this process).
    pub fn forget_all(&self) {
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    /// Counts a request against the identity's rate; 429 with the wait when it is over.
    pub fn throttle(&self, iam_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&iam_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests(wait.as_secs().max(1))
        })
    }

    /// The principal for the management API.
    pub fn principal(
        &self,
        resolved: &Resolved,
        request_id: String,
        address: Option<String>,
    ) -> Principal {
        Principal {
            identity: resolved.identity.clone(),
            grants: resolved.grants.clone(),
            request_id,
            address,
        }
    }
}

fn revoked() -> ApiError {
    ApiError::Unauthorized(
        "the token's API key or identity was deleted or locked; get a new token".into(),
    )
}
