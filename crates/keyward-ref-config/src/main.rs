//! `keyward-ref-config`: a reference integrated service, a configuration store in the manner of
//! Watson OpenScale, built only on `keyward-client`.
//!
//! It keeps data-source passwords encrypted. By default they are sealed under the service's
//! global key (a local key file). `PUT /v2/user_preferences/user_root_key_crn` generates a DEK
//! wrapped by the customer's root key and re-encrypts every stored secret under it (OpenScale's
//! case 1); `DELETE` re-encrypts them under the global key again (case 2). The wrapped DEK is
//! persisted with the secrets; the unwrapped one is only cached. While the customer's key is
//! disabled, or the service's access to it is removed, secrets under it are refused.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use keyward_client::api::events::KeyEvent;
use keyward_client::api::registrations::RegistrationInput;
use keyward_client::envelope::{
    DataKeyring, DekId, DekPolicy, KeyStatus, WrappedDek, key_status, open_with, seal_with,
};
use keyward_client::events::{EventHandler, HandlerError};
use keyward_client::{Client, ClientError, KeyCrn, Secret};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(name = "keyward-ref-config", about = "A configuration store with BYOK")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8301")]
    listen: SocketAddr,
    /// Where the store and the global key are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// The key service (Keyward or Key Protect).
    #[arg(long)]
    kms_url: String,
    /// The service's own API key (a service identity authorized on the customer's KMS instance).
    #[arg(long, env = "KEYWARD_SERVICE_API_KEY", hide_env_values = true)]
    kms_api_key: String,
    /// How often the customer's root key is re-validated (ms).
    #[arg(long, default_value_t = 250)]
    revalidate_ms: u64,
}

/// The DEK id of secrets sealed under the global key.
const GLOBAL_DEK: DekId = DekId([0; 16]);
const USER_ROOT_KEY_CRN: &str = "user_root_key_crn";

/// The persisted store: one JSON file, replaced atomically on every change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// This service instance's id (generated on first start), named in its CRN.
    #[serde(default)]
    instance_id: String,
    /// The customer's root key, when BYOK is on.
    user_root_key_crn: Option<String>,
    /// The DEK the secrets are sealed under, wrapped by that key.
    wrapped_dek: Option<WrappedDek>,
    /// Data sources by name: their non-secret fields and the sealed password (base64).
    data_sources: BTreeMap<String, DataSource>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataSource {
    host: String,
    user: String,
    /// `version ‖ DEK id ‖ nonce ‖ ciphertext ‖ tag`, base64.
    sealed_password: String,
}

/// The service name in CRNs (OpenScale's own).
const SERVICE_NAME: &str = "aiopenscale";

/// The customer's key in use: its keyring, status, watcher and event listener.
struct Byok {
    keyring: Arc<DataKeyring>,
    key_id: String,
    /// This service instance's CRN, registered on the key.
    resource_crn: String,
    status: tokio::sync::watch::Receiver<KeyStatus>,
    watcher: tokio::task::JoinHandle<()>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Byok {
    fn drop(&mut self) {
        self.watcher.abort();
        self.listener.abort();
        self.keyring.drop_all();
    }
}

impl Byok {
    async fn register(&self) -> Result<(), ApiError> {
        let input = RegistrationInput {
            description: Some("Watson OpenScale data-source credentials".into()),
            registration_metadata: None,
            prevent_key_deletion: Some(false),
            key_version_id: None,
        };
        let client = self.keyring.client();
        let result = match client
            .create_registration(&self.key_id, &self.resource_crn, input.clone())
            .await
        {
            // Already registered (the same key set again, or a retry): replace it.
            Err(ClientError::Api { status: 409, .. }) => {
                client
                    .replace_registration(&self.key_id, &self.resource_crn, input)
                    .await
            }
            other => other,
        };
        result.map(drop).map_err(|e| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                "REGISTRATION_FAILED",
                e.to_string(),
            )
        })
    }

    async fn deregister(&self) -> Result<(), ApiError> {
        match self
            .keyring
            .client()
            .delete_registration(&self.key_id, &self.resource_crn)
            .await
        {
            Ok(()) | Err(ClientError::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(ApiError(
                StatusCode::BAD_GATEWAY,
                "REGISTRATION_FAILED",
                e.to_string(),
            )),
        }
    }
}

/// Rotations reach the service through this: it rewraps its DEK under the new version.
struct Rewrapper(std::sync::Weak<App>);

impl EventHandler for Rewrapper {
    async fn rewrap(&self, event: &KeyEvent) -> Result<Option<String>, HandlerError> {
        let Some(app) = self.0.upgrade() else {
            return Ok(None);
        };
        let mut inner = app.inner.lock().await;
        let (Some(b), Some(dek)) = (&inner.byok, &inner.stored.wrapped_dek) else {
            return Ok(None);
        };
        if b.key_id != event.key_id {
            return Ok(None);
        }
        let new = b.keyring.rewrap(dek).await?;
        let version = new.key_version.clone();
        let mut stored = inner.stored.clone();
        stored.wrapped_dek = Some(new);
        app.persist(&stored)?;
        inner.stored = stored;
        Ok(Some(version))
    }
}

struct Inner {
    stored: Stored,
    byok: Option<Byok>,
}

struct App {
    path: PathBuf,
    kms_url: String,
    kms_api_key: String,
    policy: DekPolicy,
    global: Secret,
    inner: Mutex<Inner>,
}

type Shared = Arc<App>;

struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"errors": [{"code": self.1, "message": self.2}]})),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        eprintln!("keyward-ref-config: internal error: {e:#}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error".into(),
        )
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "BAD_REQUEST", msg.into())
}

fn refused(e: keyward_client::envelope::EnvelopeError) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "ROOT_KEY_UNAVAILABLE",
        format!("the customer's root key refused: {e}"),
    )
}

impl App {
    fn byok(self: &Arc<Self>, crn: &str, instance_id: &str) -> anyhow::Result<Byok> {
        let root = KeyCrn::parse(crn).context("not a key CRN")?;
        let client = Client::new(&self.kms_url, &self.kms_api_key, &root.instance, None)?;
        let key_id = root.key_id.clone();
        let keyring = Arc::new(DataKeyring::new(Arc::new(client), self.policy)?);
        let watcher = keyring.watch_key(&key_id);
        let listener = keyward_client::events::listen(
            Arc::clone(&keyring),
            Arc::new(Rewrapper(Arc::downgrade(self))),
        );
        Ok(Byok {
            status: keyring.status(&key_id),
            resource_crn: root.service_crn(SERVICE_NAME, instance_id),
            listener,
            keyring,
            key_id,
            watcher,
        })
    }

    fn persist(&self, stored: &Stored) -> anyhow::Result<()> {
        write_json(&self.path, stored)
    }
}

/// Refuses calls that need the customer's key while it is not usable.
fn gate(inner: &Inner) -> Result<(), ApiError> {
    let Some(b) = &inner.byok else { return Ok(()) };
    match b.status.borrow().refusal() {
        None => Ok(()),
        Some(reason) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "ROOT_KEY_UNAVAILABLE",
            format!("secrets are unavailable: {reason}"),
        )),
    }
}

/// Opens a password sealed under the current scheme (the customer's DEK or the global key).
async fn open(app: &App, inner: &Inner, name: &str, sealed_b64: &str) -> Result<Secret, ApiError> {
    let sealed = b64_decode(sealed_b64).context("stored password is not base64")?;
    match (&inner.byok, &inner.stored.wrapped_dek) {
        (Some(b), Some(dek)) => b
            .keyring
            .open(dek, &sealed, name.as_bytes())
            .await
            .map_err(refused),
        _ => open_with(&app.global, GLOBAL_DEK, &sealed, name.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}").into()),
    }
}

async fn seal(
    app: &App,
    byok: Option<(&Byok, &WrappedDek)>,
    name: &str,
    password: &[u8],
) -> Result<String, ApiError> {
    let sealed = match byok {
        Some((b, dek)) => b
            .keyring
            .seal(dek, password, name.as_bytes())
            .await
            .map_err(refused)?,
        None => seal_with(&app.global, GLOBAL_DEK, password, name.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    Ok(b64_encode(&sealed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutDataSource {
    #[serde(default)]
    host: String,
    #[serde(default)]
    user: String,
    password: String,
}

fn valid_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(bad("data source names are 1 to 100 of [A-Za-z0-9._-]"));
    }
    Ok(())
}

async fn put_data_source(
    State(app): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<PutDataSource>,
) -> Result<Response, ApiError> {
    valid_name(&name)?;
    if body.password.is_empty() || body.password.len() > 4096 {
        return Err(bad("password must be 1 to 4096 bytes"));
    }
    let mut inner = app.inner.lock().await;
    gate(&inner)?;
    let byok = inner.byok.as_ref().zip(inner.stored.wrapped_dek.as_ref());
    let sealed_password = seal(&app, byok, &name, body.password.as_bytes()).await?;
    let mut stored = inner.stored.clone();
    let existed = stored
        .data_sources
        .insert(
            name.clone(),
            DataSource {
                host: body.host,
                user: body.user,
                sealed_password,
            },
        )
        .is_some();
    app.persist(&stored)?;
    inner.stored = stored;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({"name": name}))).into_response())
}

async fn get_data_source(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let inner = app.inner.lock().await;
    gate(&inner)?;
    let Some(ds) = inner.stored.data_sources.get(&name) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such data source".into(),
        ));
    };
    let password = open(&app, &inner, &name, &ds.sealed_password).await?;
    let password = String::from_utf8(password.expose().to_vec()).context("password not UTF-8")?;
    Ok(Json(json!({
        "name": name,
        "host": ds.host,
        "user": ds.user,
        "password": password,
    }))
    .into_response())
}

async fn delete_data_source(
    State(app): State<Shared>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut inner = app.inner.lock().await;
    let mut stored = inner.stored.clone();
    if stored.data_sources.remove(&name).is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such data source".into(),
        ));
    }
    app.persist(&stored)?;
    inner.stored = stored;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every stored password, opened under the current scheme.
async fn open_all(app: &App, inner: &Inner) -> Result<Vec<(String, Secret)>, ApiError> {
    let mut out = Vec::new();
    for (name, ds) in &inner.stored.data_sources {
        out.push((
            name.clone(),
            open(app, inner, name, &ds.sealed_password).await?,
        ));
    }
    Ok(out)
}

/// Case 1: a new DEK wrapped by the customer's key; every secret re-encrypted under it.
async fn put_root_key(
    State(app): State<Shared>,
    Path(pref): Path<String>,
    Json(crn): Json<String>,
) -> Result<Response, ApiError> {
    if pref != USER_ROOT_KEY_CRN {
        return Err(bad(format!("unknown preference {pref}")));
    }
    if KeyCrn::parse(&crn).is_none() {
        return Err(bad("not a key CRN (crn:v1:…:kms:…:key:<id>)"));
    }
    let mut inner = app.inner.lock().await;
    gate(&inner)?;
    let byok = app.byok(&crn, &inner.stored.instance_id)?;
    let status = key_status(byok.keyring.client(), &byok.key_id)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, "KMS_UNAVAILABLE", e.to_string()))?;
    if let Some(reason) = status.refusal() {
        return Err(ApiError(StatusCode::CONFLICT, "ROOT_KEY_UNUSABLE", reason));
    }
    byok.keyring.report(&byok.key_id, status);
    let plain = open_all(&app, &inner).await?;
    byok.register().await?;
    let dek = byok.keyring.generate(&byok.key_id).await.map_err(refused)?;
    let mut stored = inner.stored.clone();
    for (name, pw) in &plain {
        let sealed = seal(&app, Some((&byok, &dek)), name, pw.expose()).await?;
        if let Some(ds) = stored.data_sources.get_mut(name) {
            ds.sealed_password = sealed;
        }
    }
    stored.user_root_key_crn = Some(crn.clone());
    stored.wrapped_dek = Some(dek);
    app.persist(&stored)?;
    inner.stored = stored;
    // Moved to another key: the old one no longer protects anything here.
    let new_key = byok.key_id.clone();
    if let Some(old) = inner.byok.replace(byok)
        && old.key_id != new_key
        && let Err(e) = old.deregister().await
    {
        eprintln!("keyward-ref-config: old registration left behind: {}", e.2);
    }
    Ok(Json(json!({"user_root_key_crn": crn, "reencrypted": plain.len()})).into_response())
}

/// Case 2: every secret re-encrypted under the service's global key; the customer's DEK dropped.
async fn delete_root_key(
    State(app): State<Shared>,
    Path(pref): Path<String>,
) -> Result<Response, ApiError> {
    if pref != USER_ROOT_KEY_CRN {
        return Err(bad(format!("unknown preference {pref}")));
    }
    let mut inner = app.inner.lock().await;
    if inner.stored.user_root_key_crn.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no user root key is set".into(),
        ));
    }
    gate(&inner)?;
    let plain = open_all(&app, &inner).await?;
    let mut stored = inner.stored.clone();
    for (name, pw) in &plain {
        let sealed = seal(&app, None, name, pw.expose()).await?;
        if let Some(ds) = stored.data_sources.get_mut(name) {
            ds.sealed_password = sealed;
        }
    }
    stored.user_root_key_crn = None;
    stored.wrapped_dek = None;
    app.persist(&stored)?;
    inner.stored = stored;
    if let Some(old) = inner.byok.take() {
        old.deregister().await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_root_key(
    State(app): State<Shared>,
    Path(pref): Path<String>,
) -> Result<Response, ApiError> {
    let inner = app.inner.lock().await;
    match (pref.as_str(), &inner.stored.user_root_key_crn) {
        (USER_ROOT_KEY_CRN, Some(crn)) => Ok(Json(json!(crn)).into_response()),
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("preference {pref} is not set"),
        )),
    }
}

fn b64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn b64_decode(s: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
}

/// Writes `value` as JSON to `path`, atomically and durably (temporary file, fsync, rename,
/// fsync of the directory).
fn write_json<T: Serialize>(path: &FsPath, value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let policy = DekPolicy {
        revalidate_interval: Duration::from_millis(args.revalidate_ms),
        ..DekPolicy::default()
    };
    policy.validate()?;
    let path = args.data_dir.join("store.json");
    let mut stored: Stored = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("store.json")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
        Err(e) => return Err(e.into()),
    };
    if stored.instance_id.is_empty() {
        stored.instance_id = DekId::random()?.to_string();
        write_json(&path, &stored)?;
    }
    let app = Arc::new(App {
        global: keyward_client::envelope::load_or_create_key_file(
            &args.data_dir.join("global.key"),
        )?,
        path,
        kms_url: args.kms_url,
        kms_api_key: args.kms_api_key,
        policy,
        inner: Mutex::new(Inner {
            stored: Stored::default(),
            byok: None,
        }),
    });
    {
        let mut inner = app.inner.lock().await;
        inner.byok = match &stored.user_root_key_crn {
            Some(crn) => Some(app.byok(crn, &stored.instance_id)?),
            None => None,
        };
        inner.stored = stored;
    }
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v2/data_sources/{name}",
            get(get_data_source)
                .put(put_data_source)
                .delete(delete_data_source),
        )
        .route(
            "/v2/user_preferences/{pref}",
            get(get_root_key).put(put_root_key).delete(delete_root_key),
        )
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "keyward-ref-config: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(keyward_client::shutdown_signal())
        .await?;
    // Shutdown: the cached DEK zeroized before the process ends.
    app.inner.lock().await.byok = None;
    Ok(())
}
