//! Shared server state, passed explicitly to handlers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use keyward_core::{
    AuditStore, InstanceId, InstancePolicies, KeyError, KeyService, KmipService, LifecycleConfig,
    Secret, Store,
};
use keyward_iam::{IamService, TokenIssuer, TokenVerifier};

use crate::views::ViewCtx;
use keyward_runtime::ServerConfig;
use keyward_runtime::metrics::Metrics;

/// What every handler may use. Built once at start.
pub struct AppState {
    /// The key service.
    pub keys: KeyService,
    /// KMIP adapters, certificates and objects.
    pub kmip: KmipService,
    /// Identity and access: management, the token exchange, resolving tokens to callers.
    pub iam: IamService,
    /// Issues access tokens.
    pub issuer: TokenIssuer,
    /// Verifies access tokens.
    pub verifier: TokenVerifier,
    /// Resolved configuration.
    pub config: ServerConfig,
    /// Instance policies consulted on every request (allowedIP, allowedNetwork), kept for the
    /// key cache TTL; a change through this process applies at once.
    policies: RwLock<HashMap<InstanceId, (Instant, Arc<InstancePolicies>)>>,
    /// The core's lifecycle windows, for views.
    pub lifecycle: LifecycleConfig,
    /// The port actually bound (the configured one may be 0), set once at start.
    pub bound_port: std::sync::OnceLock<u16>,
    /// The audit trail: queries, checkpoints, export cursors.
    pub trail: Arc<dyn AuditStore>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token `/metrics` requires, if configured.
    pub metrics_token: Option<Secret>,
    /// Changes whenever this process commits lifecycle events (wakes event streams and the
    /// webhook worker; both also poll for events other processes commit).
    pub event_notifications: tokio::sync::watch::Receiver<u64>,
    /// Set when the server starts shutting down: long-lived responses (event streams) end so
    /// the graceful shutdown does not wait for them.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// On PostgreSQL: the task that drops what this node cached when another node changes it.
    listener: std::sync::OnceLock<AbortOnDrop>,
    /// The task that records sampled refusals.
    sampler: std::sync::OnceLock<AbortOnDrop>,
    /// Open event streams per identity (`[limits] event_streams_per_identity`).
    event_streams: std::sync::Mutex<HashMap<String, usize>>,
    /// Refusals of over-limit sources being held before they go out
    /// (`[ip_limits] max_delayed_refusals`).
    delayed_refusals: tokio::sync::Semaphore,
}

/// Marks a response refused because its source address is over its `[ip_limits]` limit: the
/// request middleware holds it for `refusal_delay_ms` before it goes out
/// ([`AppState::delay_refusal`]).
#[derive(Clone, Copy)]
pub struct SourceThrottled;

/// One open event stream of an identity, counted until it is dropped (the stream ended, or the
/// client went away).
pub struct StreamSlot {
    state: Arc<AppState>,
    subject: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .state
            .event_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.subject);
            }
        }
    }
}

/// A task aborted when its owner drops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the state holds besides the services and config.
pub struct Extras {
    /// The audit trail.
    pub trail: Arc<dyn AuditStore>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token `/metrics` requires, if configured.
    pub metrics_token: Option<Secret>,
    /// Changes whenever this process commits lifecycle events.
    pub event_notifications: tokio::sync::watch::Receiver<u64>,
}

impl AppState {
    /// State over a key service and token keys.
    pub fn new(
        keys: KeyService,
        kmip: KmipService,
        iam: IamService,
        issuer: TokenIssuer,
        config: ServerConfig,
        extras: Extras,
    ) -> Arc<Self> {
        let verifier = issuer.verifier();
        let lifecycle = config.lifecycle();
        Arc::new(AppState {
            keys,
            kmip,
            iam,
            issuer,
            verifier,
            policies: RwLock::new(HashMap::new()),
            lifecycle,
            bound_port: std::sync::OnceLock::new(),
            trail: extras.trail,
            metrics: extras.metrics,
            metrics_token: extras.metrics_token,
            event_notifications: extras.event_notifications,
            closing: tokio::sync::watch::Sender::new(false),
            listener: std::sync::OnceLock::new(),
            sampler: std::sync::OnceLock::new(),
            event_streams: std::sync::Mutex::new(HashMap::new()),
            delayed_refusals: tokio::sync::Semaphore::new(config.ip_limits.max_delayed_refusals),
            config,
        })
    }

    /// A slot for one more event stream of `subject`, unless it holds
    /// `[limits] event_streams_per_identity` already (0: no limit).
    pub fn open_event_stream(self: &Arc<Self>, subject: &str) -> Option<StreamSlot> {
        let max = self.config.limits.event_streams_per_identity;
        let mut open = self.event_streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(subject.to_owned()).or_insert(0);
        if max > 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            state: self.clone(),
            subject: subject.to_owned(),
        })
    }

    /// On PostgreSQL: drops cached keys, access and instance policies when any node commits a
    /// change to them (LISTEN/NOTIFY), for as long as this state lives. The cache TTLs stay the
    /// bound when a notification is late or lost.
    pub fn follow_changes(self: &Arc<Self>, store: &keyward_store::PgStore) {
        let state = Arc::downgrade(self);
        let task = store.listen_changes(move |change| {
            if let Some(s) = state.upgrade() {
                s.apply_change(change);
            }
        });
        let _ = self.listener.set(AbortOnDrop(task));
    }

    /// Holds a refusal of an over-limit source for `[ip_limits] refusal_delay_ms` (a flooding
    /// client waits on its connection rather than sending the next request), unless
    /// `max_delayed_refusals` are already held or the server is shutting down: then it goes
    /// out at once.
    pub async fn delay_refusal(&self) {
        let delay = Duration::from_millis(self.config.ip_limits.refusal_delay_ms);
        if delay.is_zero() {
            return;
        }
        let Ok(_held) = self.delayed_refusals.try_acquire() else {
            return;
        };
        let mut closing = self.closing.subscribe();
        if *closing.borrow_and_update() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = closing.changed() => {}
        }
    }

    /// Writes, every sampling interval for as long as this state lives, the refusals of
    /// unauthenticated requests that were counted but not recorded one by one.
    pub fn record_sampled_refusals(self: &Arc<Self>) {
        let state = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.ip_limits.audit_interval_secs.max(1));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(s) = state.upgrade() else { break };
                if let Err(e) = s.iam.record_sampled_refusals().await {
                    tracing::warn!(error = %e, "recording sampled refusals failed");
                }
            }
        });
        let _ = self.sampler.set(AbortOnDrop(task));
    }

    fn apply_change(&self, change: keyward_store::Change) {
        use keyward_store::Change;
        match change {
            Change::Key(id) => self.keys.forget_cached_key(id),
            Change::Access => {
                self.iam.forget_cached_access();
                self.forget_cached_policies();
            }
            Change::Missed => {
                self.keys.forget_cached_keys();
                self.iam.forget_cached_access();
                self.forget_cached_policies();
            }
        }
    }

    fn forget_cached_policies(&self) {
        if let Ok(mut p) = self.policies.write() {
            p.clear();
        }
    }

    /// How views render keys for `account`.
    pub fn view_ctx<'a>(&'a self, account: &'a str) -> ViewCtx<'a> {
        ViewCtx {
            region: &self.config.region,
            account,
            lifecycle: &self.lifecycle,
        }
    }

    /// The instance's policies, from memory when fresh.
    pub async fn instance_policies(
        &self,
        instance: InstanceId,
    ) -> Result<Arc<InstancePolicies>, KeyError> {
        let ttl = Duration::from_millis(self.config.key_cache_ttl_ms);
        if let Some((at, p)) = self
            .policies
            .read()
            .ok()
            .and_then(|m| m.get(&instance).cloned())
            && at.elapsed() < ttl
        {
            return Ok(p);
        }
        let p = Arc::new(self.keys.policies_of(instance).await?);
        if let Ok(mut m) = self.policies.write() {
            m.insert(instance, (Instant::now(), p.clone()));
        }
        Ok(p)
    }

    /// Drops the cached policies of `instance` (after a change through this process).
    pub fn forget_policies(&self, instance: InstanceId) {
        if let Ok(mut m) = self.policies.write() {
            m.remove(&instance);
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.keys.store()
    }
}
