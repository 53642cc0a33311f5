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

pub mod access;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extract;
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
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use keyward_core::{Custody, IamService, KeyService, KmipService, KmipStore, Store, SystemClock};
use keyward_custody::SoftwareCustody;
use keyward_store::SqliteStore;
use tracing::Instrument;

pub use config::ServerConfig;
use error::ApiError;
use extract::RequestId;
use state::AppState;

/// Builds the router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    use routes::{identity, keys, policies, rings};
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
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
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Gives every request an id (in the audit event, the log and the `x-request-id` header) and
/// echoes the client's `correlation-id`.
async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let correlation = req
        .headers()
        .get(keyward_api::headers::CORRELATION_ID)
        .cloned();
    let span = tracing::debug_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span).await;
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
    let custody: Arc<dyn Custody> = match config.custody.pkcs11()? {
        None => Arc::new(SoftwareCustody::open_or_create(&config.data_dir)?.0),
        Some(hsm) => Arc::new(
            keyward_custody_pkcs11::Pkcs11Custody::open(&hsm)
                .context("opening the PKCS#11 custody backend")?,
        ),
    };
    let sqlite = Arc::new(SqliteStore::open(&config.data_dir)?);
    let event_notifications = sqlite.event_notifications();
    let store: Arc<dyn Store> = sqlite.clone();
    let issuer = bootstrap::token_issuer(&store, &custody, config.token_ttl_secs).await?;
    let keys = KeyService::new(
        store.clone(),
        custody.clone(),
        Arc::new(SystemClock),
        config.lifecycle(),
    );
    let kmip_store: Arc<dyn KmipStore> = sqlite;
    let kmip = KmipService::new(kmip_store, keys.clone(), Arc::new(SystemClock));
    let iam = IamService::new(
        store.clone(),
        custody.clone(),
        Arc::new(SystemClock),
        Arc::new(keyward_iam::Minter),
        &config.region,
    );
    let access = access::AccessGate::new(
        iam,
        store.clone(),
        std::time::Duration::from_millis(config.access_cache_ttl_ms),
        config.rate_limit.per_second,
        config.rate_limit.burst,
    );
    Ok(AppState::new(
        keys,
        kmip,
        access,
        issuer,
        config,
        event_notifications,
    ))
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
    scheduler: Option<tokio::task::JoinHandle<()>>,
    webhooks: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish (up to 10 s), and waits.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(s) = &self.scheduler {
            s.abort();
        }
        self.webhooks.abort();
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(10)));
        self.task.await??;
        Ok(())
    }

    /// Waits until the server stops by itself (it does not, unless it fails).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }

    /// A handle that can stop the server from elsewhere.
    pub fn handle(&self) -> axum_server::Handle<SocketAddr> {
        self.handle.clone()
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
    let scheduler = state
        .config
        .scheduler
        .enabled
        .then(|| scheduler::spawn(&state));
    let webhooks = webhooks::spawn(&state);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle.clone());
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
        scheduler,
        webhooks,
    })
}
