//! Prometheus metrics behind `GET /metrics`: requests by operation and status, latency
//! histograms, keys by state, custody health, scheduler activity, audit export progress, the
//! event-delivery backlog, and connections (open, refused at a cap, closed for idling).
//!
//! Built on the `prometheus` crate with its own `Registry` per server (no process-global
//! recorder: tests run several servers in one process, each with its own counters).

use std::time::Duration;

use keyward_core::{KeyState, SchedulerReport};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// What a scrape found of the custody backend.
#[derive(Debug, Clone, Default)]
pub struct CustodyHealth {
    /// It signed a probe.
    pub up: bool,
    /// Its name (`software`, `pkcs11`).
    pub backend: &'static str,
    /// Each HSM token's label and whether it is usable (empty for software custody).
    pub tokens: Vec<(String, bool)>,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    keys: IntGaugeVec,
    custody_up: IntGauge,
    custody_info: IntGaugeVec,
    custody_tokens: IntGaugeVec,
    scheduler_passes: IntCounterVec,
    scheduler_keys: IntCounterVec,
    exported: IntCounterVec,
    export_failures: IntCounterVec,
    export_lag: IntGaugeVec,
    export_held: IntGaugeVec,
    audit_head: IntGauge,
    backlog: IntGauge,
    connections: Connections,
    refused: IntCounterVec,
}

/// Connection counts: open now, refused at a cap, closed for idling.
struct Connections {
    open: IntGauge,
    refused: IntCounterVec,
    idle_closed: IntCounter,
}

/// Why a connection was closed as soon as it was accepted (a metrics label: a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// `[limits] max_connections` were open.
    MaxConnections,
    /// `[limits] max_connections_per_ip` were open from the same address.
    MaxConnectionsPerIp,
}

impl ConnectionRefusal {
    fn label(self) -> &'static str {
        match self {
            ConnectionRefusal::MaxConnections => "max_connections",
            ConnectionRefusal::MaxConnectionsPerIp => "max_connections_per_ip",
        }
    }
}

/// Why a request was refused before it was authenticated: the label of
/// `keyward_refused_requests_total` (a fixed set: nothing a client sends becomes a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A token exchange over its source's rate (429).
    TokenRate,
    /// A request with a refused token over its source's rate (429).
    UnauthenticatedRate,
    /// A token exchange refused (unknown API key, invalid or expired refresh token).
    Login,
    /// A request whose token was missing, invalid, expired or revoked (401).
    Authentication,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::TokenRate => "token_rate",
            Refusal::UnauthenticatedRate => "unauthenticated_rate",
            Refusal::Login => "login",
            Refusal::Authentication => "authentication",
        }
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("keyward_http_requests_total", "HTTP requests answered"),
            &["operation", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "keyward_http_request_duration_seconds",
                "Time from request to response",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
            &["operation", "method"],
        )?;
        let keys = IntGaugeVec::new(
            Opts::new("keyward_keys", "Keys (not purged) by state"),
            &["state"],
        )?;
        let custody_up = IntGauge::new(
            "keyward_custody_up",
            "1 if the custody backend signed a probe at the last scrape, else 0",
        )?;
        let custody_info = IntGaugeVec::new(
            Opts::new("keyward_custody_info", "The custody backend (always 1)"),
            &["backend"],
        )?;
        let custody_tokens = IntGaugeVec::new(
            Opts::new(
                "keyward_custody_token_up",
                "1 if the HSM token is usable at the last scrape, else 0 (PKCS#11 custody)",
            ),
            &["token"],
        )?;
        let scheduler_passes = IntCounterVec::new(
            Opts::new("keyward_scheduler_passes_total", "Scheduler passes"),
            &["result"],
        )?;
        let scheduler_keys = IntCounterVec::new(
            Opts::new(
                "keyward_scheduler_keys_total",
                "Keys the scheduler handled, by what happened",
            ),
            &["outcome"],
        )?;
        let exported = IntCounterVec::new(
            Opts::new("keyward_audit_exported_total", "Audit events exported"),
            &["sink"],
        )?;
        let export_failures = IntCounterVec::new(
            Opts::new(
                "keyward_audit_export_failures_total",
                "Failed audit export attempts (retried)",
            ),
            &["sink"],
        )?;
        let export_lag = IntGaugeVec::new(
            Opts::new(
                "keyward_audit_export_lag_events",
                "Audit events not yet exported, per sink",
            ),
            &["sink"],
        )?;
        let export_held = IntGaugeVec::new(
            Opts::new(
                "keyward_audit_export_lease_held",
                "1 while this server holds the sink's export lease (of servers on one database, \
                 one exports each sink)",
            ),
            &["sink"],
        )?;
        let audit_head = IntGauge::new(
            "keyward_audit_chain_head_seq",
            "Position of the newest audit event",
        )?;
        let backlog = IntGauge::new(
            "keyward_event_delivery_backlog",
            "Events waiting for delivery (0 until event delivery exists)",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(keys.clone()))?;
        registry.register(Box::new(custody_up.clone()))?;
        registry.register(Box::new(custody_info.clone()))?;
        registry.register(Box::new(custody_tokens.clone()))?;
        registry.register(Box::new(scheduler_passes.clone()))?;
        registry.register(Box::new(scheduler_keys.clone()))?;
        registry.register(Box::new(exported.clone()))?;
        registry.register(Box::new(export_failures.clone()))?;
        registry.register(Box::new(export_lag.clone()))?;
        registry.register(Box::new(export_held.clone()))?;
        registry.register(Box::new(audit_head.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "keyward_refused_requests_total",
                "Requests refused before authentication (bad credentials, and per-address limits)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(backlog.clone()))?;
        let connections = Connections {
            open: IntGauge::new("keyward_http_connections_open", "Open client connections")?,
            refused: IntCounterVec::new(
                Opts::new(
                    "keyward_http_connections_refused_total",
                    "Connections closed as soon as accepted, by the limit they were over",
                ),
                &["reason"],
            )?,
            idle_closed: IntCounter::new(
                "keyward_http_connections_idle_closed_total",
                "Connections closed after [limits] idle_timeout_secs with no byte moved",
            )?,
        };
        registry.register(Box::new(connections.open.clone()))?;
        registry.register(Box::new(connections.refused.clone()))?;
        registry.register(Box::new(connections.idle_closed.clone()))?;
        for r in [
            ConnectionRefusal::MaxConnections,
            ConnectionRefusal::MaxConnectionsPerIp,
        ] {
            connections.refused.with_label_values(&[r.label()]);
        }
        registry.register(Box::new(refused.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            keys,
            custody_up,
            custody_info,
            custody_tokens,
            scheduler_passes,
            scheduler_keys,
            exported,
            export_failures,
            export_lag,
            export_held,
            audit_head,
            backlog,
            connections,
            refused,
        })
    }

    /// A connection was accepted (`true`) or ended (`false`).
    pub fn connection_open(&self, open: bool) {
        if open {
            self.connections.open.inc();
        } else {
            self.connections.open.dec();
        }
    }

    /// A connection was closed as soon as accepted.
    pub fn connection_refused(&self, why: ConnectionRefusal) {
        self.connections
            .refused
            .with_label_values(&[why.label()])
            .inc();
    }

    /// A connection was closed for idling.
    pub fn connection_idle_closed(&self) {
        self.connections.idle_closed.inc();
    }

    /// Counts one answered request; `operation` is the matched route template (never a raw
    /// path, which would hold key ids and grow without bound) and the method one of a fixed set
    /// (an unauthenticated client chooses the method: labelled as sent, 20 000 made-up methods
    /// grew `/metrics` to 37 MB and the process by 230 MB, never freed; issue 18).
    pub fn request(&self, operation: &str, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        self.requests
            .with_label_values(&[operation, method, &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&[operation, method])
            .observe(took.as_secs_f64());
    }

    /// Counts one request refused before authentication.
    pub fn refused(&self, why: Refusal) {
        self.refused.with_label_values(&[why.label()]).inc();
    }

    /// Counts one scheduler pass.
    pub fn scheduler_pass(&self, report: Option<&SchedulerReport>) {
        match report {
            None => self.scheduler_passes.with_label_values(&["failed"]).inc(),
            Some(r) => {
                self.scheduler_passes.with_label_values(&["ok"]).inc();
                for (what, n) in [
                    ("rotated", r.rotated),
                    ("expired", r.expired),
                    ("purged", r.purged),
                    ("lost_race", r.lost_races),
                    ("failed", r.failed),
                ] {
                    self.scheduler_keys
                        .with_label_values(&[what])
                        .inc_by(u64::from(n));
                }
            }
        }
    }

    /// Events a sink delivered.
    pub fn exported(&self, sink: &str, n: u64) {
        self.exported.with_label_values(&[sink]).inc_by(n);
    }

    /// A failed delivery attempt.
    pub fn export_failed(&self, sink: &str) {
        self.export_failures.with_label_values(&[sink]).inc();
    }

    /// Events a sink has yet to deliver.
    pub fn export_lag(&self, sink: &str, lag: u64) {
        self.export_lag
            .with_label_values(&[sink])
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Whether this server holds a sink's export lease.
    pub fn export_held(&self, sink: &str, held: bool) {
        self.export_held
            .with_label_values(&[sink])
            .set(i64::from(held));
    }

    /// Sets the gauges read at scrape time, then renders everything in the text format.
    pub fn render(
        &self,
        keys_by_state: &[(u8, u64)],
        custody: &CustodyHealth,
        audit_head: u64,
        event_backlog: u64,
    ) -> Result<String, prometheus::Error> {
        for state in [
            KeyState::PreActive,
            KeyState::Active,
            KeyState::Suspended,
            KeyState::Deactivated,
            KeyState::Destroyed,
        ] {
            let n = keys_by_state
                .iter()
                .find(|(c, _)| *c == state.code())
                .map_or(0, |(_, n)| *n);
            self.keys
                .with_label_values(&[state_name(state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        self.custody_up.set(i64::from(custody.up));
        self.custody_info
            .with_label_values(&[custody.backend])
            .set(1);
        // The tokens are the configured ones: a fixed, small label set.
        for (label, up) in &custody.tokens {
            self.custody_tokens
                .with_label_values(&[label.as_str()])
                .set(i64::from(*up));
        }
        self.audit_head
            .set(i64::try_from(audit_head).unwrap_or(i64::MAX));
        self.backlog
            .set(i64::try_from(event_backlog).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn state_name(s: KeyState) -> &'static str {
    match s {
        KeyState::PreActive => "pre_active",
        KeyState::Active => "active",
        KeyState::Suspended => "suspended",
        KeyState::Deactivated => "deactivated",
        KeyState::Destroyed => "destroyed",
    }
}

/// The label of a request method: the methods HTTP defines, and `other` for anything else.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}
