//! The ceiling of the wrap benchmark's ratio on this stack: a server with nothing of Keyward but
//! what every wrap must do, measured against its own `/healthz` by `scripts/bench-ceiling.sh`.
//!
//! `POST /wrap` takes the same request as Keyward's wrap (a bearer token of the same size, the
//! `bluemix-instance` header, a JSON body with a base64 DEK and an AAD), looks the token's SHA-256
//! up in a map (Keyward's verified-token cache hit), decodes the JSON and the DEK, seals it with
//! AES-256-GCM under a key already in memory (Keyward's root-key cache hit) and answers the same
//! JSON. No routing table, no middleware, no metrics, no access checks, no audit event. With
//! `CEILING_DURABLE=1`, each answer also waits for a ~300-byte record to be made durable by a
//! group-committing thread (one `write` and one `fdatasync` per batch): the least a durable audit
//! event can cost. `CEILING_PREALLOCATE=1` writes those records over a file of zeros made at
//! start, so a sync carries data only, never a new file size or block allocation.
//!
//! Not part of Keyward: it exists to tell how much of the gap between wrap and `/healthz` any
//! implementation on axum and hyper, on the machine at hand, must leave (BENCHMARKS.md).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex, mpsc};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Ceiling {
    tokens: Mutex<HashSet<[u8; 32]>>,
    key: LessSafeKey,
    rng: SystemRandom,
    durable: Option<mpsc::Sender<(Vec<u8>, oneshot::Sender<()>)>>,
}

#[derive(Deserialize)]
struct WrapRequest {
    plaintext: String,
    #[serde(default)]
    aad: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WrapResponse {
    ciphertext: String,
    key_version: Version,
}

#[derive(Serialize)]
struct Version {
    id: &'static str,
}

async fn wrap(State(c): State<Arc<Ceiling>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let hash: [u8; 32] = digest.as_ref().try_into().unwrap();
    c.tokens.lock().unwrap().insert(hash);
    let Some(instance) = headers.get("bluemix-instance") else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(req) = serde_json::from_slice::<WrapRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(mut sealed) = B64.decode(&req.plaintext) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut nonce = [0u8; 12];
    c.rng.fill(&mut nonce).unwrap();
    let aad = req.aad.join("\0");
    c.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut sealed,
        )
        .unwrap();
    let mut ct = nonce.to_vec();
    ct.extend_from_slice(&sealed);
    if let Some(durable) = &c.durable {
        let mut record = Vec::with_capacity(320);
        record.extend_from_slice(b"kms.secrets.wrap success 200 ");
        record.extend_from_slice(instance.as_bytes());
        record.extend_from_slice(token.as_bytes().get(..64).unwrap_or_default());
        record.resize(300, b' ');
        let (tx, rx) = oneshot::channel();
        durable.send((record, tx)).unwrap();
        rx.await.unwrap();
    }
    let body = WrapResponse {
        ciphertext: B64.encode(&ct),
        key_version: Version {
            id: "5ffd8039-5ed6-4ce8-848a-433c859c081e",
        },
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/vnd.ibm.kms.key_action+json",
        )],
        serde_json::to_vec(&body).unwrap(),
    )
        .into_response()
}

/// One `write` and one `fdatasync` per batch of whatever arrived meanwhile, then the answers.
/// `CEILING_PREALLOCATE=1` writes into a file of zeros made beforehand, so a sync carries no
/// change of the file's size; `CEILING_SYNC=0` skips the sync (the thread hop alone).
fn committer(path: std::path::PathBuf, rx: mpsc::Receiver<(Vec<u8>, oneshot::Sender<()>)>) {
    use std::os::unix::fs::FileExt;
    let preallocate = std::env::var("CEILING_PREALLOCATE").as_deref() == Ok("1");
    let sync = std::env::var("CEILING_SYNC").as_deref() != Ok("0");
    let file = std::fs::File::create(path).unwrap();
    if preallocate {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..128u64 {
            file.write_all_at(&zeros, i << 20).unwrap();
        }
        file.sync_all().unwrap();
    }
    let mut offset = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut buf = Vec::with_capacity(batch.len() * 300);
        for (record, _) in &batch {
            buf.extend_from_slice(record);
        }
        file.write_all_at(&buf, offset).unwrap();
        offset = (offset + buf.len() as u64) % (120 << 20);
        if sync {
            file.sync_data().unwrap();
        }
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
}

#[tokio::main]
async fn main() {
    let durable = std::env::var("CEILING_DURABLE").as_deref() == Ok("1");
    let durable = durable.then(|| {
        let (tx, rx) = mpsc::channel();
        let path = std::env::temp_dir().join(format!("http-ceiling-{}.log", std::process::id()));
        std::thread::spawn(move || committer(path, rx));
        tx
    });
    let rng = SystemRandom::new();
    let mut key = [0u8; 32];
    rng.fill(&mut key).unwrap();
    let state = Arc::new(Ceiling {
        tokens: Mutex::new(HashSet::new()),
        key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap()),
        rng,
        durable,
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/wrap", post(wrap))
        .with_state(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    println!("listening on http://{}", listener.local_addr().unwrap());
    axum_server::from_tcp(listener)
        .unwrap()
        .acceptor(axum_server::accept::NoDelayAcceptor::new())
        .serve(app.into_make_service())
        .await
        .unwrap();
}
