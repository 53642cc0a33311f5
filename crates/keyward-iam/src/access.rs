//! The access gate every authenticated request passes after its token verifies: the token's API
//! key and identity must still exist and be unlocked, the identity's grants are loaded, its
//! request rate is limited, and the instance it names must belong to its account. What passes
//! becomes a [`Caller`] (the KMS API) or a [`Principal`] (the management API).
//!
//! Grants and API key state are cached per API key for [`AccessLimits::cache_ttl`] (at most one
//! second), so a removed authorization, deleted policy, or locked or deleted API key takes effect
//! within that time on every server process sharing the store; the process that made the change
//! drops its own cache at once (`IamService` does, with every change).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use keyward_core::{Authenticated, Caller, Grants, IdentityRecord, InstanceId, KeyError};

use crate::service::{IamService, Principal};
use crate::token::Claims;

type KeyedLimiter = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;
/// When an API key's state was read, and what it was (`None`: revoked).
type CacheEntry = (Instant, Option<Arc<Resolved>>);

/// How long access is cached, and how fast one identity may call.
#[derive(Debug, Clone, Copy)]
pub struct AccessLimits {
    /// How long an API key's state and its identity's grants are cached (at most one second).
    pub cache_ttl: Duration,
    /// Requests per second per identity; 0 turns the limit off.
    pub per_second: u32,
    /// The burst allowed above `per_second`.
    pub burst: u32,
}

/// A caller whose token, API key and identity checked out.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The identity.
    pub identity: IdentityRecord,
    /// Its grants in its account.
    pub grants: Arc<Grants>,
    /// The API key the token was issued for.
    pub api_key_id: String,
}

/// Why a verified token gets no access. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token's API key or identity was deleted or locked since it was issued (401).
    #[error("the token's API key or identity was deleted or locked; get a new token")]
    Revoked,
    /// The instance does not exist or belongs to another account: the two look the same (401).
    #[error("the user does not have access to the specified instance")]
    NoAccessToInstance,
    /// The identity is over its rate: retry after this many seconds (429).
    #[error("too many requests; retry after {0} s")]
    TooManyRequests(u64),
    /// The store or custody failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// This process's cached access state and rate limiter. One per `IamService`.
pub(crate) struct AccessCache {
    ttl: Duration,
    by_api_key: RwLock<HashMap<String, CacheEntry>>,
    /// Instance → owning account. Instances never change owner, so entries never go stale.
    instance_accounts: RwLock<HashMap<InstanceId, String>>,
    limiter: Option<KeyedLimiter>,
}

impl AccessCache {
    pub(crate) fn new(limits: AccessLimits) -> Self {
        let limiter = NonZeroU32::new(limits.per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.burst.max(limits.per_second)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        AccessCache {
            ttl: limits.cache_ttl,
            by_api_key: RwLock::new(HashMap::new()),
            instance_accounts: RwLock::new(HashMap::new()),
            limiter,
        }
    }

    /// Drops every cached entry (after a change to identities or access through this process).
    pub(crate) fn forget_all(&self) {
        if let Ok(mut c) = self.by_api_key.write() {
            c.clear();
        }
    }
}

impl IamService {
    /// The identity and grants behind verified `claims`, or [`AuthError::Revoked`] when its API
    /// key or identity was deleted or locked since the token was issued.
    pub async fn resolve(&self, claims: &Claims) -> Result<Arc<Resolved>, AuthError> {
        let cache = &self.access;
        if let Some((at, entry)) = cache
            .by_api_key
            .read()
            .ok()
            .and_then(|c| c.get(&claims.apikey_id).cloned())
            && at.elapsed() < cache.ttl
        {
            return entry.ok_or(AuthError::Revoked);
        }
        let entry = self.load(claims).await?;
        if let Ok(mut c) = cache.by_api_key.write() {
            // Bounded: entries expire, and a full map is cleared rather than grown.
            if c.len() > 100_000 {
                c.clear();
            }
            c.insert(claims.apikey_id.clone(), (Instant::now(), entry.clone()));
        }
        entry.ok_or(AuthError::Revoked)
    }

    async fn load(&self, claims: &Claims) -> Result<Option<Arc<Resolved>>, KeyError> {
        let Some(key) = self.store.api_key(&claims.apikey_id).await? else {
            return Ok(None);
        };
        if key.locked || key.subject != claims.sub || key.account != claims.account.bss {
            return Ok(None);
        }
        let Some(identity) = self.usable_identity(&key).await? else {
            return Ok(None);
        };
        let grants = Arc::new(self.grants(&identity, &identity.account).await?);
        Ok(Some(Arc::new(Resolved {
            identity,
            grants,
            api_key_id: key.id,
        })))
    }

    /// Counts a request against the identity's rate; [`AuthError::TooManyRequests`] with the
    /// wait when it is over.
    pub fn throttle(&self, iam_id: &str) -> Result<(), AuthError> {
        let Some(limiter) = &self.access.limiter else {
            return Ok(());
        };
        limiter.check_key(&iam_id.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            AuthError::TooManyRequests(wait.as_secs().max(1))
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
            api_key_id: resolved.api_key_id.clone(),
            request_id,
            address,
        }
    }

    /// The caller of `instance` that verified `claims` resolved to, once the instance is known
    /// to belong to the token's account; an instance of another account and one that does not
    /// exist are both [`AuthError::NoAccessToInstance`].
    pub async fn caller(
        &self,
        claims: &Claims,
        resolved: &Resolved,
        instance: InstanceId,
        request: Request,
    ) -> Result<Caller, AuthError> {
        if self.instance_account(instance).await?.as_deref() != Some(claims.account.bss.as_str()) {
            return Err(AuthError::NoAccessToInstance);
        }
        Ok(Caller::authenticated(Authenticated {
            subject: claims.sub.clone(),
            account: claims.account.bss.clone(),
            grants: resolved.grants.clone(),
            instance,
            request_id: request.request_id,
            address: request.address,
            key_ring: request.key_ring,
        }))
    }

    /// The account owning `instance`, if the instance exists (cached: instances never change
    /// owner).
    pub async fn instance_account(&self, instance: InstanceId) -> Result<Option<String>, KeyError> {
        let accounts = &self.access.instance_accounts;
        if let Some(a) = accounts.read().ok().and_then(|m| m.get(&instance).cloned()) {
            return Ok(Some(a));
        }
        let Some(rec) = self.store.instance(instance).await? else {
            return Ok(None);
        };
        if let Ok(mut m) = accounts.write() {
            m.insert(instance, rec.account.clone());
        }
        Ok(Some(rec.account))
    }
}

/// Where a request to the KMS API comes from, beyond its token and instance.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Request id for audit and logs.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
    /// The key ring the caller names (`X-Kms-Key-Ring`), if any.
    pub key_ring: Option<String>,
}
