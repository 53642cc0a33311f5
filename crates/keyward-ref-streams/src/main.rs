//! `keyward-ref-streams`: a reference integrated service, an event-stream store with BYOK in the
//! manner of IBM Event Streams, built only on `keyward-client`.
//!
//! Instances hold topics; messages are produced and consumed over HTTP and kept in append-only
//! files, each message sealed (AES-256-GCM) under its topic's DEK. A BYOK instance's DEKs are
//! wrapped by the customer's root key (chosen by CRN); other instances use the service's own
//! key. The service watches every root key it uses: disabled or access removed → the instance
//! shuts down (every call refused with the reason, DEKs dropped from memory); usable again → it
//! resumes with nothing lost; deleted → its data is crypto-shredded (files overwritten and
//! removed, wrapped DEKs discarded) for good.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Parser;
use keyward_client::api::events::KeyEvent;
use keyward_client::api::registrations::RegistrationInput;
use keyward_client::envelope::{
    DataKeyring, DekId, DekPolicy, KeyStatus, WrappedDek, open_with, seal_with,
};
use keyward_client::events::{EventHandler, HandlerError};
use keyward_client::{Client, ClientError, KeyCrn, Secret};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;

mod files;

#[derive(Parser)]
#[command(
    name = "keyward-ref-streams",
    about = "An event-stream store with BYOK"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8300")]
    listen: SocketAddr,
    /// Where instances, topics and messages are kept.
    #[arg(long)]
    data_dir: PathBuf,
    /// The key service (Keyward or Key Protect).
    #[arg(long)]
    kms_url: String,
    /// The service's own API key (a service identity authorized on customers' KMS instances).
    #[arg(long, env = "KEYWARD_SERVICE_API_KEY", hide_env_values = true)]
    kms_api_key: String,
    /// How often root keys are re-validated (ms).
    #[arg(long, default_value_t = 250)]
    revalidate_ms: u64,
    /// The longest a DEK stays cached after its last successful unwrap (s).
    #[arg(long, default_value_t = 1800)]
    dek_max_age_secs: u64,
}

/// The DEK id under which non-BYOK instances seal with the service's own key.
const LOCAL_DEK: DekId = DekId([0; 16]);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InstanceMeta {
    id: String,
    name: String,
    root_key_crn: Option<String>,
    /// Set once the root key was deleted and the data shredded; never cleared.
    shredded: bool,
    topics: BTreeMap<String, TopicMeta>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopicMeta {
    /// The topic's DEK, wrapped by the root key (BYOK instances; created on first produce).
    dek: Option<WrappedDek>,
}

/// The CRN of this service's instance `id`, registered on its root key.
fn instance_crn(root: &KeyCrn, id: &str) -> String {
    root.service_crn(SERVICE_NAME, id)
}

/// The service name in CRNs (Event Streams' own).
const SERVICE_NAME: &str = "messagehub";

/// An instance: its metadata and BYOK side under one lock, so a reconfiguration and a produce
/// never interleave.
struct Instance {
    state: Mutex<Inner>,
}

struct Inner {
    meta: InstanceMeta,
    byok: Option<Byok>,
}

impl Instance {
    fn new(meta: InstanceMeta, byok: Option<Byok>) -> Arc<Instance> {
        Arc::new(Instance {
            state: Mutex::new(Inner { meta, byok }),
        })
    }
}

struct Byok {
    root: KeyCrn,
    keyring: Arc<DataKeyring>,
    status: tokio::sync::watch::Receiver<KeyStatus>,
}

struct App {
    data: PathBuf,
    kms_url: String,
    kms_api_key: String,
    policy: DekPolicy,
    local_key: Secret,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    keyrings: Mutex<HashMap<String, Arc<DataKeyring>>>,
    /// Root keys already watched (one watcher per key, shared by its instances).
    watched: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
}

type Shared = Arc<App>;

/// A refusal, as JSON `{"error": {"code", "message"}}`.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        eprintln!("keyward-ref-streams: internal error: {e:#}");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error".into(),
        )
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no such {what}"),
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "BAD_REQUEST", msg.into())
}

impl App {
    fn instance_dir(&self, id: &str) -> PathBuf {
        self.data.join("instances").join(id)
    }

    fn topic_log(&self, id: &str, topic: &str) -> PathBuf {
        self.instance_dir(id)
            .join("topics")
            .join(format!("{topic}.log"))
    }

    fn persist(&self, meta: &InstanceMeta) -> anyhow::Result<()> {
        files::write_json(&self.instance_dir(&meta.id).join("instance.json"), meta)
    }

    /// The keyring of a KMS instance, and with it the listener of that instance's events.
    async fn keyring(self: &Arc<Self>, kms_instance: &str) -> anyhow::Result<Arc<DataKeyring>> {
        let mut map = self.keyrings.lock().await;
        if let Some(k) = map.get(kms_instance) {
            return Ok(Arc::clone(k));
        }
        let client = Client::new(&self.kms_url, &self.kms_api_key, kms_instance, None)?;
        let ring = Arc::new(DataKeyring::new(Arc::new(client), self.policy)?);
        map.insert(kms_instance.to_owned(), Arc::clone(&ring));
        keyward_client::events::listen(
            Arc::clone(&ring),
            Arc::new(Rewrapper(Arc::downgrade(self))),
        );
        Ok(ring)
    }

    /// After a rotation: every stored DEK under the rotated key, rewrapped under its latest
    /// version and persisted.
    async fn rewrap_all(&self, event: &KeyEvent) -> Result<Option<String>, HandlerError> {
        let instances: Vec<Arc<Instance>> = self.instances.lock().await.values().cloned().collect();
        let mut version = None;
        for inst in instances {
            let mut guard = inst.state.lock().await;
            let st = &mut *guard;
            let Some(b) = &st.byok else { continue };
            if b.root.key_id != event.key_id || b.root.instance != event.instance_id {
                continue;
            }
            for t in st.meta.topics.values_mut() {
                if let Some(dek) = &t.dek {
                    let new = b.keyring.rewrap(dek).await?;
                    version = Some(new.key_version.clone());
                    t.dek = Some(new);
                }
            }
            self.persist(&st.meta)?;
        }
        Ok(version)
    }

    /// The BYOK side of an instance: its keyring and a watcher on its root key.
    async fn byok(self: &Arc<Self>, crn: &str) -> anyhow::Result<Byok> {
        let root = KeyCrn::parse(crn).context("not a key CRN")?;
        let keyring = self.keyring(&root.instance).await?;
        {
            let mut watched = self.watched.lock().await;
            let k = format!("{}/{}", root.instance, root.key_id);
            watched
                .entry(k)
                .or_insert_with(|| keyring.watch_key(&root.key_id));
        }
        let status = keyring.status(&root.key_id);
        Ok(Byok {
            root,
            keyring,
            status,
        })
    }

    /// Shreds instance `id` once its root key is reported deleted.
    fn arm_shredder(self: &Arc<Self>, id: &str, byok: &Byok) {
        let mut deleted = byok.status.clone();
        let (app, id) = (Arc::clone(self), id.to_owned());
        tokio::spawn(async move {
            if deleted.wait_for(|s| *s == KeyStatus::Deleted).await.is_ok()
                && let Err(e) = app.shred(&id).await
            {
                eprintln!("keyward-ref-streams: shredding {id} failed: {e:#}");
            }
        });
    }

    /// Crypto-shredding: every message file overwritten and removed, every wrapped DEK
    /// discarded, the cached DEKs dropped; the instance is marked shredded for good.
    async fn shred(&self, id: &str) -> anyhow::Result<()> {
        let inst = self
            .instances
            .lock()
            .await
            .get(id)
            .cloned()
            .context("instance vanished")?;
        let mut st = inst.state.lock().await;
        if let Some(b) = &st.byok {
            b.keyring.drop_key(&b.root.key_id);
        }
        for (topic, t) in st.meta.topics.iter_mut() {
            files::shred(&self.topic_log(id, topic))?;
            t.dek = None;
        }
        st.meta.shredded = true;
        self.persist(&st.meta)?;
        eprintln!("keyward-ref-streams: instance {id} crypto-shredded (root key deleted)");
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Arc<Instance>, ApiError> {
        self.instances
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("instance"))
    }
}

/// The instance's state as its endpoint shows it, and the refusal every call gets when it is
/// not running.
fn state_of(st: &Inner) -> (&'static str, Option<String>) {
    if st.meta.shredded {
        return (
            "shredded",
            Some("the root key was deleted; the instance's data was crypto-shredded".into()),
        );
    }
    match &st.byok {
        None => ("active", None),
        Some(b) => {
            let status = b.status.borrow().clone();
            match status {
                KeyStatus::Active => ("active", None),
                KeyStatus::Unknown => (
                    "initializing",
                    Some("the instance is checking its root key".into()),
                ),
                other => ("shut_down", other.refusal()),
            }
        }
    }
}

fn gate(st: &Inner) -> Result<(), ApiError> {
    match state_of(st) {
        ("active", _) => Ok(()),
        ("shredded", reason) => Err(ApiError(
            StatusCode::GONE,
            "INSTANCE_SHREDDED",
            reason.unwrap_or_default(),
        )),
        (_, reason) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "INSTANCE_SHUT_DOWN",
            format!("instance shut down: {}", reason.unwrap_or_default()),
        )),
    }
}

fn view(st: &Inner) -> serde_json::Value {
    let (state, reason) = state_of(st);
    let meta = &st.meta;
    json!({
        "id": meta.id,
        "name": meta.name,
        "byok": meta.root_key_crn.is_some(),
        "rootKeyCrn": meta.root_key_crn,
        "rootKeyId": st.byok.as_ref().map(|b| b.root.key_id.clone()),
        "crn": st.byok.as_ref().map(|b| instance_crn(&b.root, &meta.id)),
        "state": state,
        "reason": reason,
        "topics": meta.topics.keys().collect::<Vec<_>>(),
    })
}

/// Rotations reach the service through this: it rewraps the stored DEKs.
struct Rewrapper(std::sync::Weak<App>);

impl EventHandler for Rewrapper {
    async fn rewrap(&self, event: &KeyEvent) -> Result<Option<String>, HandlerError> {
        match self.0.upgrade() {
            Some(app) => app.rewrap_all(event).await,
            None => Ok(None),
        }
    }

    async fn deleted(&self, event: &KeyEvent) -> Result<(), HandlerError> {
        let Some(app) = self.0.upgrade() else {
            return Ok(());
        };
        let instances: Vec<(String, Arc<Instance>)> = app
            .instances
            .lock()
            .await
            .iter()
            .map(|(id, i)| (id.clone(), Arc::clone(i)))
            .collect();
        for (id, inst) in instances {
            let on_key = inst.state.lock().await.byok.as_ref().is_some_and(|b| {
                b.root.key_id == event.key_id && b.root.instance == event.instance_id
            });
            if on_key {
                app.shred(&id).await?;
            }
        }
        Ok(())
    }
}

/// Registers instance `id` on its root key, so the customer sees which key protects it and the
/// service gets the key's lifecycle events.
async fn register(b: &Byok, id: &str, name: &str) -> Result<(), ApiError> {
    let input = RegistrationInput {
        description: Some(format!("Event Streams instance {name}")),
        registration_metadata: Some(json!({"instance": id}).to_string()),
        prevent_key_deletion: Some(false),
        key_version_id: None,
    };
    b.keyring
        .client()
        .create_registration(&b.root.key_id, &instance_crn(&b.root, id), input)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_GATEWAY,
                "REGISTRATION_FAILED",
                e.to_string(),
            )
        })?;
    Ok(())
}

/// The root key must be usable now: a service does not provision on a key it cannot use.
async fn check_root(b: &Byok) -> Result<(), ApiError> {
    let status = keyward_client::envelope::key_status(b.keyring.client(), &b.root.key_id)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, "KMS_UNAVAILABLE", e.to_string()))?;
    if let Some(reason) = status.refusal() {
        return Err(ApiError(StatusCode::CONFLICT, "ROOT_KEY_UNUSABLE", reason));
    }
    b.keyring.report(&b.root.key_id, status);
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateInstance {
    name: String,
    #[serde(default)]
    root_key_crn: Option<String>,
}

async fn create_instance(
    State(app): State<Shared>,
    Json(body): Json<CreateInstance>,
) -> Result<Response, ApiError> {
    if body.name.is_empty() || body.name.len() > 100 {
        return Err(bad("name must be 1 to 100 characters"));
    }
    if let Some(crn) = &body.root_key_crn
        && KeyCrn::parse(crn).is_none()
    {
        return Err(bad("rootKeyCrn is not a key CRN (crn:v1:…:kms:…:key:<id>)"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let meta = InstanceMeta {
        id: id.clone(),
        name: body.name,
        root_key_crn: body.root_key_crn.clone(),
        ..InstanceMeta::default()
    };
    let byok = match &body.root_key_crn {
        Some(crn) => {
            let b = app.byok(crn).await?;
            check_root(&b).await?;
            register(&b, &id, &meta.name).await?;
            app.arm_shredder(&id, &b);
            Some(b)
        }
        None => None,
    };
    std::fs::create_dir_all(app.instance_dir(&id).join("topics")).context("instance dir")?;
    app.persist(&meta)?;
    let inst = Instance::new(meta, byok);
    let body = view(&*inst.state.lock().await);
    app.instances.lock().await.insert(id, inst);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn show_instance(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let inst = app.get(&id).await?;
    let st = inst.state.lock().await;
    Ok(Json(view(&st)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnableByok {
    root_key_crn: String,
}

/// Enabling BYOK on an instance: as Event Streams warns, the data it holds is deleted.
async fn enable_byok(
    State(app): State<Shared>,
    Path(id): Path<String>,
    Json(body): Json<EnableByok>,
) -> Result<Response, ApiError> {
    if KeyCrn::parse(&body.root_key_crn).is_none() {
        return Err(bad("rootKeyCrn is not a key CRN (crn:v1:…:kms:…:key:<id>)"));
    }
    let inst = app.get(&id).await?;
    let mut guard = inst.state.lock().await;
    let st = &mut *guard;
    if st.meta.shredded || st.meta.root_key_crn.is_some() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "BYOK_ALREADY_ENABLED",
            "the instance already has a root key; it cannot be changed".into(),
        ));
    }
    let byok = app.byok(&body.root_key_crn).await?;
    check_root(&byok).await?;
    register(&byok, &id, &st.meta.name).await?;
    let mut deleted = 0usize;
    for topic in st.meta.topics.keys() {
        let log = app.topic_log(&id, topic);
        deleted += files::read_records(&log)?.len();
        files::shred(&log)?;
    }
    st.meta.root_key_crn = Some(body.root_key_crn);
    for t in st.meta.topics.values_mut() {
        t.dek = None;
    }
    app.persist(&st.meta)?;
    app.arm_shredder(&id, &byok);
    st.byok = Some(byok);
    let mut out = view(st);
    if let Some(o) = out.as_object_mut() {
        o.insert("deletedMessages".into(), json!(deleted));
    }
    Ok(Json(out).into_response())
}

/// Deletes an instance: its data shredded, its registration removed.
async fn delete_instance(
    State(app): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let inst = app.get(&id).await?;
    let st = inst.state.lock().await;
    if let Some(b) = &st.byok {
        match b
            .keyring
            .client()
            .delete_registration(&b.root.key_id, &instance_crn(&b.root, &id))
            .await
        {
            Ok(()) | Err(ClientError::Api { status: 404, .. }) => {}
            Err(e) => {
                return Err(ApiError(
                    StatusCode::BAD_GATEWAY,
                    "REGISTRATION_FAILED",
                    e.to_string(),
                ));
            }
        }
    }
    for topic in st.meta.topics.keys() {
        files::shred(&app.topic_log(&id, topic))?;
    }
    std::fs::remove_dir_all(app.instance_dir(&id)).context("instance dir")?;
    app.instances.lock().await.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn valid_topic(topic: &str) -> Result<(), ApiError> {
    let ok = !topic.is_empty()
        && topic.len() <= 100
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !topic.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            "topic names are 1 to 100 of [A-Za-z0-9._-], not starting with '.'",
        ))
    }
}

async fn create_topic(
    State(app): State<Shared>,
    Path((id, topic)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    valid_topic(&topic)?;
    let inst = app.get(&id).await?;
    let mut st = inst.state.lock().await;
    gate(&st)?;
    if st.meta.topics.contains_key(&topic) {
        return Ok(StatusCode::OK.into_response());
    }
    st.meta.topics.insert(topic, TopicMeta::default());
    app.persist(&st.meta)?;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Produce {
    /// The message, UTF-8.
    value: String,
}

fn aad(id: &str, topic: &str, offset: usize) -> Vec<u8> {
    format!("{id}/{topic}/{offset}").into_bytes()
}

async fn produce(
    State(app): State<Shared>,
    Path((id, topic)): Path<(String, String)>,
    Json(body): Json<Produce>,
) -> Result<Response, ApiError> {
    let inst = app.get(&id).await?;
    let mut guard = inst.state.lock().await;
    let st = &mut *guard;
    gate(st)?;
    let log = app.topic_log(&id, &topic);
    let Some(t) = st.meta.topics.get(&topic).cloned() else {
        return Err(not_found("topic"));
    };
    let offset = files::read_records(&log)?.len();
    let aad = aad(&id, &topic, offset);
    let sealed = match &st.byok {
        None => seal_with(&app.local_key, LOCAL_DEK, body.value.as_bytes(), &aad)
            .map_err(anyhow::Error::from)?,
        Some(b) => {
            let dek = match t.dek {
                Some(d) => d,
                None => {
                    let d = b
                        .keyring
                        .generate(&b.root.key_id)
                        .await
                        .map_err(kms_refusal)?;
                    if let Some(t) = st.meta.topics.get_mut(&topic) {
                        t.dek = Some(d.clone());
                    }
                    app.persist(&st.meta)?;
                    d
                }
            };
            b.keyring
                .seal(&dek, body.value.as_bytes(), &aad)
                .await
                .map_err(kms_refusal)?
        }
    };
    files::append_record(&log, &sealed)?;
    Ok((StatusCode::CREATED, Json(json!({"offset": offset}))).into_response())
}

/// A refusal by the key service while the instance looked usable (the watcher has not seen the
/// change yet) is refused as a shutdown would refuse it; stored data that fails authentication
/// (altered on disk) is an internal error, its detail only in the log.
fn kms_refusal(e: keyward_client::envelope::EnvelopeError) -> ApiError {
    match e {
        keyward_client::envelope::EnvelopeError::Client(e) => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "INSTANCE_SHUT_DOWN",
            format!("instance shut down: the root key refused: {e}"),
        ),
        other => anyhow::anyhow!("stored data: {other}").into(),
    }
}

#[derive(Deserialize)]
struct Consume {
    #[serde(default)]
    offset: usize,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

async fn consume(
    State(app): State<Shared>,
    Path((id, topic)): Path<(String, String)>,
    Query(q): Query<Consume>,
) -> Result<Response, ApiError> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(bad("limit must be 1 to 1000"));
    }
    let inst = app.get(&id).await?;
    let st = inst.state.lock().await;
    gate(&st)?;
    let Some(t) = st.meta.topics.get(&topic) else {
        return Err(not_found("topic"));
    };
    let records = files::read_records(&app.topic_log(&id, &topic))?;
    let mut out = Vec::new();
    for (offset, sealed) in records.iter().enumerate().skip(q.offset).take(q.limit) {
        let aad = aad(&id, &topic, offset);
        let plain = match (&st.byok, &t.dek) {
            (None, _) => {
                open_with(&app.local_key, LOCAL_DEK, sealed, &aad).map_err(anyhow::Error::from)?
            }
            (Some(b), Some(dek)) => b
                .keyring
                .open(dek, sealed, &aad)
                .await
                .map_err(kms_refusal)?,
            (Some(_), None) => return Err(anyhow::anyhow!("message without a DEK").into()),
        };
        let value = String::from_utf8(plain.expose().to_vec())
            .unwrap_or_else(|_| B64.encode(plain.expose()));
        out.push(json!({"offset": offset, "value": value}));
    }
    Ok(Json(json!({"messages": out})).into_response())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.data_dir.join("instances"))?;
    let policy = DekPolicy {
        revalidate_interval: Duration::from_millis(args.revalidate_ms),
        max_age: Duration::from_secs(args.dek_max_age_secs),
        ..DekPolicy::default()
    };
    policy.validate()?;
    let app = Arc::new(App {
        local_key: keyward_client::envelope::load_or_create_key_file(
            &args.data_dir.join("service.key"),
        )?,
        data: args.data_dir,
        kms_url: args.kms_url,
        kms_api_key: args.kms_api_key,
        policy,
        instances: Mutex::new(HashMap::new()),
        keyrings: Mutex::new(HashMap::new()),
        watched: Mutex::new(HashMap::new()),
    });
    for entry in std::fs::read_dir(app.data.join("instances"))? {
        let path = entry?.path().join("instance.json");
        let meta: InstanceMeta = files::read_json(&path)?;
        let byok = match (&meta.root_key_crn, meta.shredded) {
            (Some(crn), false) => {
                let b = app.byok(crn).await?;
                app.arm_shredder(&meta.id, &b);
                Some(b)
            }
            _ => None,
        };
        let id = meta.id.clone();
        app.instances
            .lock()
            .await
            .insert(id, Instance::new(meta, byok));
    }
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/instances", post(create_instance))
        .route(
            "/v1/instances/{id}",
            get(show_instance).delete(delete_instance),
        )
        .route("/v1/instances/{id}/root_key", put(enable_byok))
        .route("/v1/instances/{id}/topics/{topic}", put(create_topic))
        .route(
            "/v1/instances/{id}/topics/{topic}/messages",
            post(produce).get(consume),
        )
        .with_state(Arc::clone(&app));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!(
        "keyward-ref-streams: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(keyward_client::shutdown_signal())
        .await?;
    // Shutdown: every cached DEK zeroized before the process ends.
    for ring in app.keyrings.lock().await.values() {
        ring.drop_all();
    }
    Ok(())
}
