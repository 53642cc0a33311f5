//! Keyward's HTTP server: the Key Protect v2 routes, the IAM token endpoint, the one mapping of
//! errors to Key Protect's error body, `/metrics`, the web console's static files ([`console`]),
//! and listening (plain HTTP on loopback, else rustls).
//!
//! Handlers here translate HTTP to [`keyward_core::KeyService`] calls and back; no key rule lives
//! in this crate, and no background work: configuration, custody, store, bootstrap and the
//! background tasks are [`keyward_runtime`]'s, which [`serve`] puts behind the listener.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod connections;
pub mod console;
pub mod drain;
pub mod error;
pub mod extract;
mod kmip;
pub mod routes;
pub mod state;
pub mod views;

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
use keyward_core::{KmipService, SystemClock};
use keyward_iam::{AccessLimits, IamService, SourceLimits};
use keyward_runtime::{Background, Runtime, ServerConfig};
use tracing::Instrument;

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
        .route(
            "/api/v2/audit_events/verification",
            get(audit::verification),
        )
        .route("/api/v2/openapi.json", get(routes::openapi::document))
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
        .merge(routes::iam::router())
        .merge(console::router());
    if state.config.metrics.enabled {
        router = router.route("/metrics", get(audit::metrics));
    }
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            drain::unread_body,
        ))
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
/// client's own `x-request-id` is honoured once the client is authenticated: the audit events
/// of unauthenticated requests carry the server's id, logged beside the client's), echoes the
/// client's `correlation-id`, counts the request in the metrics by its route template, and
/// holds a refusal of an over-limit source ([`AppState::delay_refusal`]).
async fn request_id(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let own = uuid::Uuid::new_v4().to_string();
    let client = client_request_id(&req);
    let id = client.clone().unwrap_or_else(|| own.clone());
    req.extensions_mut().insert(RequestId {
        id: id.clone(),
        own: own.clone(),
    });
    let correlation = req
        .headers()
        .get(keyward_api::headers::CORRELATION_ID)
        .cloned();
    let operation = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        server_request_id = tracing::field::Empty
    );
    if client.is_some() {
        // What an unauthenticated request's audit event records instead of the client's id.
        span.record("server_request_id", own.as_str());
    }
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
    // After the metrics: the delay is the server's choice, not the request's latency.
    if resp.extensions().get::<state::SourceThrottled>().is_some() {
        state.delay_refusal().await;
    }
    resp
}

/// Opens the data directory through the runtime and builds the state (no listening, no
/// background work).
pub async fn open(config: ServerConfig) -> anyhow::Result<Arc<AppState>> {
    Ok(state_of(Runtime::open(config).await?))
}

/// The handlers' state over an opened runtime.
fn state_of(runtime: Runtime) -> Arc<AppState> {
    let Runtime {
        config,
        keys,
        stores,
        issuer,
        metrics,
        metrics_token,
        sender: _,
    } = runtime;
    let kmip = KmipService::new(stores.kmip, keys.clone(), Arc::new(SystemClock));
    let iam = IamService::new(
        stores.store.clone(),
        keys.custody().clone(),
        Arc::new(SystemClock),
        &config.region,
        AccessLimits {
            cache_ttl: std::time::Duration::from_millis(config.access_cache_ttl_ms),
            per_second: config.rate_limit.per_second,
            burst: config.rate_limit.burst,
        },
    )
    .with_source_limits(SourceLimits {
        token_per_second: config.ip_limits.token_per_second,
        token_burst: config.ip_limits.token_burst,
        unauthenticated_per_second: config.ip_limits.unauthenticated_per_second,
        unauthenticated_burst: config.ip_limits.unauthenticated_burst,
        audit_interval: std::time::Duration::from_secs(config.ip_limits.audit_interval_secs),
    });
    let extras = state::Extras {
        trail: stores.trail,
        metrics,
        metrics_token,
        event_notifications: stores.event_notifications,
    };
    let state = AppState::new(keys, kmip, iam, issuer, config, extras);
    if let Some(pg) = &stores.postgres {
        state.follow_changes(pg);
    }
    state.record_sampled_refusals();
    state
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
    /// The runtime's scheduler, checkpointer, export sinks and webhook worker: stopped at
    /// shutdown.
    background: Background,
    closing: tokio::sync::watch::Sender<bool>,
    /// The KMIP listener, when `[kmip]` configures one.
    kmip: Option<keyward_kmip::KmipServer>,
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
        if let Some(kmip) = self.kmip {
            kmip.stop().await;
        }
        self.background.stop().await;
        served??;
        Ok(())
    }

    /// The KMIP listener's address, when one is configured.
    pub fn kmip_addr(&self) -> Option<SocketAddr> {
        self.kmip.as_ref().map(keyward_kmip::KmipServer::addr)
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

/// Opens the data directory ([`Runtime::open`]) and [`serve`]s it.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    serve(Runtime::open(config).await?).await
}

/// Binds the listener of `runtime`'s config, runs the runtime's first start with the URL it
/// got, starts the runtime's background work, and serves. Returns once requests are being
/// served.
pub async fn serve(runtime: Runtime) -> anyhow::Result<RunningServer> {
    let listen = runtime.config.listen;
    let tls = match (&runtime.config.tls_cert, &runtime.config.tls_key) {
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
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let kmip_listener = match runtime.config.kmip.listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the KMIP listener on {at}"))?,
        ),
        None => None,
    };
    // bootstrap.json's URL is where a client on this host reaches the server: an unspecified
    // address (0.0.0.0, ::) is where the server listens, not an address to connect to.
    let bootstrap_url = if addr.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", addr.port())
    } else {
        url.clone()
    };
    let bootstrap_file = runtime.bootstrap(&bootstrap_url).await?;
    let background = runtime.start_background()?;
    let state = state_of(runtime);
    let kmip = match kmip_listener {
        Some(listener) => Some(kmip::start(&state, listener)?),
        None => None,
    };
    let _ = state.bound_port.set(addr.port());
    let handle = axum_server::Handle::new();
    let closing = state.closing.clone();
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let limits = &state.config.limits;
    let header_timeout = (limits.header_read_timeout_ms > 0)
        .then(|| std::time::Duration::from_millis(limits.header_read_timeout_ms));
    let acceptor = connections::LimitAcceptor::new(Arc::new(connections::ConnectionLimits::new(
        limits,
        state.metrics.clone(),
    )));
    // The header-read timeout also closes an HTTP/1.1 keep-alive connection that starts no new
    // request within it; the first-request timeout bounds a connection that never sends one
    // (an HTTP/2 one included) once TLS is done (the TLS handshake has its own 10 s).
    let task = match tls {
        Some(tls) => {
            let mut server = axum_server::from_tcp_rustls(listener, tls)?
                .map(|a| a.acceptor(acceptor))
                .first_request_timeout(header_timeout)
                .handle(handle.clone());
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .first_request_timeout(header_timeout)
                .handle(handle.clone());
            server
                .http_builder()
                .http1()
                .header_read_timeout(header_timeout);
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
        closing,
        kmip,
    })
}
