//! Keyward's HTTP server: the Key Protect v2 routes, the IAM token endpoint, the one mapping of
//! errors to Key Protect's error body, and the wiring of custody, store and key service.
//!
//! Handlers here translate HTTP to [`keyward_core::KeyService`] calls and back; no key rule lives
//! in this crate.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod audit;
pub mod bootstrap;
pub mod config;
pub mod egress;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod rotation;
pub mod routes;
pub mod scheduler;
pub mod state;
pub mod views;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use keyward_core::{
    AuditStore, Custody, KeyService, KmipService, KmipStore, Secret, Store, SystemClock,
};
use keyward_custody::SoftwareCustody;
use keyward_store::SqliteStore;
use tracing::Instrument;

pub use config::ServerConfig;
use error::ApiError;
use extract::RequestId;
use state::AppState;

/// Builds the router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    use routes::{audit, identity, keys, policies, rings};
    let limit = state.config.max_body_bytes;
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v2/audit_events", get(audit::list))
        .route("/identity/token", post(identity::token))
        // IBM IAM answers on both paths; the Key Protect Go client uses /oidc/token.
        .route("/oidc/token", post(identity::token))
        .route("/identity/keys", get(identity::keys))
        .route(
            "/api/v2/keys",
            get(keys::list_keys)
                .head(keys::head_keys)
                .post(keys::create_key),
        )
        .route(
            "/api/v2/keys_with_policy_overrides",
            post(keys::create_key_with_overrides),
        )
        .route(
            "/api/v2/keys/{id}",
            get(keys::get_key)
                .delete(keys::delete_key)
                .post(keys::key_action_query)
                .patch(keys::patch_key),
        )
        .route("/api/v2/keys/{id}/restore", post(keys::restore_key))
        .route("/api/v2/keys/{id}/purge", delete(keys::purge_key))
        .route(
            "/api/v2/keys/{id}/aliases/{alias}",
            post(keys::create_alias).delete(keys::delete_alias),
        )
        .route(
            "/api/v2/keys/{id}/policies",
            get(policies::get_key_policies).put(policies::put_key_policies),
        )
        .route(
            "/api/v2/instance/policies",
            get(policies::get_instance_policies).put(policies::put_instance_policies),
        )
        .route(
            "/api/v2/instance/allowed_ip_port",
            get(policies::allowed_ip_port),
        )
        .route(
            "/api/v2/import_token",
            get(keys::get_import_token).post(keys::create_import_token),
        )
        .route("/api/v2/key_rings", get(rings::list))
        .route(
            "/api/v2/key_rings/{id}",
            post(rings::create).delete(rings::delete),
        )
        .route("/api/v2/keys/{id}/metadata", get(keys::get_key_metadata))
        .route("/api/v2/keys/{id}/versions", get(keys::key_versions))
        .route("/api/v2/keys/{id}/actions/{action}", post(keys::key_action))
        .merge(routes::registrations::router())
        .merge(routes::events::router())
        .merge(routes::kmip::router())
        .merge(routes::iam::router());
    if state.config.metrics.enabled {
        router = router.route("/metrics", get(audit::metrics));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// A client's `x-request-id` is kept when it is short and plain (it goes into logs and audit
/// events); anything else gets a fresh id.
fn client_request_id(req: &Request) -> Option<String> {
    let v = req
        .headers()
        .get(keyward_api::headers::REQUEST_ID)?
        .to_str()
        .ok()?;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    (1..=128)
        .contains(&v.len())
        .then_some(v)
        .filter(|v| v.chars().all(plain))
        .map(str::to_owned)
}

/// Gives every request an id (in the audit event, the log and the `x-request-id` header; a
/// client's own `x-request-id` is honoured), echoes the client's `correlation-id`, and counts
/// the request in the metrics by its route template.
async fn request_id(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = client_request_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let correlation = req
        .headers()
        .get(keyward_api::headers::CORRELATION_ID)
        .cloned();
    let operation = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    state
        .metrics
        .request(&operation, method.as_str(), status, took);
    span.in_scope(|| {
        tracing::debug!(
            method = %method,
            operation = %operation,
            status,
            micros = took.as_micros() as u64,
            "request"
        );
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut()
            .insert(keyward_api::headers::REQUEST_ID, v);
    }
    if let Some(c) = correlation {
        resp.headers_mut()
            .insert(keyward_api::headers::CORRELATION_ID, c);
    }
    resp
}

/// Opens everything in the data directory and builds the state (no listening yet).
pub async fn open(config: ServerConfig) -> anyhow::Result<Arc<AppState>> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let custody = open_custody(&config, true)?;
    let sqlite = Arc::new(SqliteStore::open(&config.data_dir)?);
    let event_notifications = sqlite.event_notifications();
    let store: Arc<dyn Store> = sqlite.clone();
    let trail: Arc<dyn AuditStore> = sqlite.clone();
    let metrics_token = match &config.metrics.bearer_token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading metrics.bearer_token_file {}", path.display()))?;
            let token = text.trim();
            anyhow::ensure!(!token.is_empty(), "metrics.bearer_token_file is empty");
            Some(Secret::new(token.as_bytes().to_vec()))
        }
    };
    let extras = state::Extras {
        trail,
        metrics: Arc::new(metrics::Metrics::new()?),
        metrics_token,
        event_notifications,
    };
    let issuer = bootstrap::token_issuer(&store, &custody, config.token_ttl_secs).await?;
    let keys = KeyService::new(
        store.clone(),
        custody.clone(),
        Arc::new(SystemClock),
        config.lifecycle(),
    );
    let kmip_store: Arc<dyn KmipStore> = sqlite;
    let kmip = KmipService::new(kmip_store, keys.clone(), Arc::new(SystemClock));
    let iam = keyward_iam::IamService::new(
        store.clone(),
        custody.clone(),
        Arc::new(SystemClock),
        &config.region,
        keyward_iam::AccessLimits {
            cache_ttl: std::time::Duration::from_millis(config.access_cache_ttl_ms),
            per_second: config.rate_limit.per_second,
            burst: config.rate_limit.burst,
        },
    );
    Ok(AppState::new(keys, kmip, iam, issuer, config, extras))
}

/// The custody backend `config` names. `create` makes a software keystore when there is none
/// (the server's first start); `keyward audit verify` opens an existing one only.
pub fn open_custody(config: &ServerConfig, create: bool) -> anyhow::Result<Arc<dyn Custody>> {
    Ok(match config.custody.pkcs11()? {
        None if create => Arc::new(SoftwareCustody::open_or_create(&config.data_dir)?.0),
        None => {
            let path = config.data_dir.join(keyward_custody::KEYSTORE_FILE);
            anyhow::ensure!(
                path.exists(),
                "no software keystore at {} (use --config for an HSM custody backend)",
                path.display()
            );
            Arc::new(SoftwareCustody::open_or_create(&config.data_dir)?.0)
        }
        Some(hsm) => Arc::new(
            keyward_custody_pkcs11::Pkcs11Custody::open(&hsm)
                .context("opening the PKCS#11 custody backend")?,
        ),
    })
}

/// A running server.
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// Its base URL.
    pub url: String,
    /// The bootstrap file, if this start wrote it.
    pub bootstrap_file: Option<PathBuf>,
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The scheduler, checkpointer, export sinks and webhook worker: aborted at shutdown.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Who this server is when it holds export leases (released at shutdown).
    export_holder: String,
    state: Arc<AppState>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to 10 s), and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.closer().close();
        self.wait().await
    }

    /// Waits until the server stops (after a graceful shutdown through [`handle`], or a
    /// failure), then stops the background tasks and signs a last audit checkpoint.
    ///
    /// [`handle`]: RunningServer::handle
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.task.await;
        for task in &self.background {
            task.abort();
        }
        if let Err(e) = self
            .state
            .trail
            .release_export_leases(&self.export_holder)
            .await
        {
            tracing::warn!(error = %e, "releasing export leases at shutdown failed");
        }
        if let Err(e) = audit::checkpoint(
            self.state.trail.as_ref(),
            self.state.keys.custody().as_ref(),
        )
        .await
        {
            tracing::warn!(error = %e, "audit checkpoint at shutdown failed");
        }
        served??;
        Ok(())
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> axum_server::Handle<SocketAddr> {
        self.handle.clone()
    }

    /// What stops the server gracefully from elsewhere (a signal handler): ends event streams,
    /// stops accepting, and lets other requests finish (up to 10 s).
    pub fn closer(&self) -> Closer {
        Closer {
            handle: self.handle.clone(),
            closing: self.closing.clone(),
        }
    }
}

/// Stops a [`RunningServer`] gracefully; see [`RunningServer::closer`].
pub struct Closer {
    handle: axum_server::Handle<SocketAddr>,
    closing: tokio::sync::watch::Sender<bool>,
}

impl Closer {
    /// Ends event streams, stops accepting, and lets requests in flight finish (up to 10 s).
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    }
}

/// Opens the data directory, binds, writes the bootstrap file on first start, and serves.
/// Returns once requests are being served.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    let listen = config.listen;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            Some(
                axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                    .await
                    .with_context(|| {
                        format!(
                            "loading TLS certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            )
        }
        _ => None,
    };
    let state = open(config).await?;
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let _ = state.bound_port.set(addr.port());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let bootstrap_file =
        bootstrap::first_start(state.store(), &state.config.data_dir, &url).await?;
    bootstrap::ensure_admin_access(state.store(), state.keys.custody()).await?;
    let handle = axum_server::Handle::new();
    let mut background = Vec::new();
    if state.config.scheduler.enabled {
        background.push(scheduler::spawn(&state));
    }
    let audit_config = &state.config.audit;
    background.push(audit::spawn_checkpointer(
        state.trail.clone(),
        state.keys.custody().clone(),
        std::time::Duration::from_secs(audit_config.checkpoint_interval_secs),
        audit_config.checkpoint_every_events,
    ));
    let poll = std::time::Duration::from_millis(audit_config.export_poll_ms);
    let mut sinks = Vec::new();
    for c in &audit_config.jsonl {
        sinks.push(audit::ExportSink::jsonl(c)?);
    }
    for c in &audit_config.webhook {
        sinks.push(audit::ExportSink::webhook(c)?);
    }
    let export_holder = uuid::Uuid::new_v4().to_string();
    for sink in sinks {
        background.push(audit::spawn_exporter(
            state.trail.clone(),
            state.metrics.clone(),
            sink,
            export_holder.clone(),
            poll,
        ));
    }
    background.push(webhooks::spawn(&state));
    let closing = state.closing.clone();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    // TCP_NODELAY on every connection: a response must not wait for the client's (possibly
    // delayed) ACK of the previous one on a keep-alive connection.
    let nodelay = axum_server::accept::NoDelayAcceptor::new;
    let task = match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)?
                .map(|a| a.acceptor(nodelay()))
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)?
                .acceptor(nodelay())
                .handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    handle
        .listening()
        .await
        .context("the server did not start listening")?;
    Ok(RunningServer {
        addr,
        url,
        bootstrap_file,
        handle,
        task,
        background,
        export_holder,
        state,
        closing,
    })
}
