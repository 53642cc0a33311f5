//! The configuration store end to end, with real processes: OpenScale's case 1 (secrets
//! re-encrypted under a DEK wrapped by the customer's root key) and case 2 (back under the
//! service's global key), across restarts, and what the customer's key controls in each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keyward_test::process::{Keyward, Proc, Tenant, keyward, keyward_bin, spawn};
use serde_json::{Value, json};

const SERVICE: &str = env!("CARGO_BIN_EXE_keyward-ref-config");

struct World {
    _dir: tempfile::TempDir,
    kw: Keyward,
    tenant: Tenant,
    data: PathBuf,
    service: Option<Proc>,
    http: reqwest::Client,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let kms = dir.path().join("kms");
        std::fs::create_dir(&kms).unwrap();
        let kw = keyward(&keyward_bin(SERVICE), &kms);
        let tenant = Tenant::new(&kw, "aiopenscale").await;
        let data = dir.path().join("config");
        let mut w = World {
            _dir: dir,
            kw,
            tenant,
            data,
            service: None,
            http: reqwest::Client::new(),
        };
        w.start();
        w
    }

    fn start(&mut self) {
        self.service = None;
        self.service = Some(spawn(
            Path::new(SERVICE),
            &[
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                self.data.to_str().unwrap(),
                "--kms-url",
                &self.kw.proc.url,
            ],
            &[("KEYWARD_SERVICE_API_KEY", &self.tenant.service_api_key)],
            &self.data.with_extension("log"),
        ));
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(
            method,
            format!("{}{path}", self.service.as_ref().unwrap().url),
        );
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn put_source(&self, name: &str, password: &str) -> u16 {
        self.call(
            reqwest::Method::PUT,
            &format!("/v2/data_sources/{name}"),
            Some(json!({"host": "db.example", "user": "scott", "password": password})),
        )
        .await
        .0
    }

    async fn password(&self, name: &str) -> (u16, Value) {
        let (s, v) = self
            .call(
                reqwest::Method::GET,
                &format!("/v2/data_sources/{name}"),
                None,
            )
            .await;
        (s, v["password"].clone())
    }

    /// Polls until reading `name` answers `want`.
    async fn until(&self, name: &str, want: u16) {
        let start = Instant::now();
        loop {
            let (s, _) = self.password(name).await;
            if s == want {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "still {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stored(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.data.join("store.json")).unwrap()).unwrap()
    }
}

const SOURCES: [(&str, &str); 3] = [
    ("warehouse", "pw-warehouse-93a1"),
    ("scoring", "pw-scoring-17bc"),
    ("feedback", "pw-feedback-5d20"),
];

/// The DEK id (hex) a stored sealed password names.
fn dek_of(stored: &Value, name: &str) -> String {
    use base64::Engine;
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(
            stored["dataSources"][name]["sealedPassword"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    sealed[1..17].iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_no_plaintext(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        for (_, pw) in SOURCES {
            assert!(
                !bytes.windows(pw.len()).any(|w| w == pw.as_bytes()),
                "{}",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case_1_and_2_reencrypt_every_secret_under_the_customer_key_and_back() {
    let mut w = World::new().await;
    for (name, pw) in SOURCES {
        assert_eq!(w.put_source(name, pw).await, 201);
    }
    let global = "0".repeat(32);
    for (name, _) in SOURCES {
        assert_eq!(dek_of(&w.stored(), name), global);
    }
    assert_no_plaintext(&w.data);

    // Case 1: the customer's key.
    let (key_id, crn) = w.tenant.root_key("openscale-root").await;
    let (s, v) = w
        .call(
            reqwest::Method::PUT,
            "/v2/user_preferences/user_root_key_crn",
            Some(json!(crn)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["reencrypted"], 3);
    let stored = w.stored();
    assert_eq!(stored["userRootKeyCrn"], crn.as_str());
    let dek = stored["wrappedDek"].clone();
    assert_eq!(dek["keyId"], key_id.as_str());
    assert!(dek["ciphertext"].as_str().unwrap().len() > 40);
    for (name, pw) in SOURCES {
        assert_eq!(dek_of(&stored, name), dek["id"].as_str().unwrap());
        assert_eq!(w.password(name).await, (200, json!(pw)));
    }
    let (s, v) = w
        .call(
            reqwest::Method::GET,
            "/v2/user_preferences/user_root_key_crn",
            None,
        )
        .await;
    assert_eq!((s, v), (200, json!(crn)));
    // The customer sees this service instance registered on the key.
    let regs = w
        .tenant
        .admin
        .registrations(Some(&key_id), None)
        .await
        .unwrap()
        .resources;
    assert_eq!(regs.len(), 1);
    assert!(regs[0].resource_crn.contains(":aiopenscale:"), "{regs:?}");

    // A rotation: the service rewraps its DEK under the new version and acknowledges.
    let v1 = dek["keyVersion"].clone();
    w.tenant.admin.rotate(&key_id, None).await.unwrap();
    let current = w
        .tenant
        .admin
        .key_metadata(&key_id)
        .await
        .unwrap()
        .key_version
        .id;
    assert_ne!(v1, current.as_str());
    let start = Instant::now();
    while w.stored()["wrappedDek"]["keyVersion"] != current.as_str() {
        assert!(start.elapsed() < Duration::from_secs(10), "not rewrapped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.stored()["wrappedDek"]["id"], dek["id"]);
    w.start();
    w.until("warehouse", 200).await;
    assert_eq!(
        w.password("warehouse").await,
        (200, json!("pw-warehouse-93a1"))
    );

    // New secrets go under the customer's DEK too.
    assert_eq!(w.put_source("extra", "pw-extra").await, 201);
    assert_eq!(dek_of(&w.stored(), "extra"), dek["id"].as_str().unwrap());
    assert_no_plaintext(&w.data);

    // The unwrapped DEK is only cached: after a restart the persisted wrapped DEK is unwrapped.
    w.start();
    w.until("warehouse", 200).await;
    assert_eq!(w.password("scoring").await, (200, json!("pw-scoring-17bc")));

    // The customer's key now controls the secrets: disabled → refused, enabled → back.
    w.tenant.admin.disable(&key_id).await.unwrap();
    w.until("warehouse", 503).await;
    let (s, v) = w
        .call(reqwest::Method::GET, "/v2/data_sources/warehouse", None)
        .await;
    assert_eq!(s, 503);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{v}"
    );
    assert_eq!(w.put_source("more", "x").await, 503);
    // Case 2 needs the key to decrypt: refused while it is disabled.
    let (s, _) = w
        .call(
            reqwest::Method::DELETE,
            "/v2/user_preferences/user_root_key_crn",
            None,
        )
        .await;
    assert_eq!(s, 503);
    w.tenant.admin.enable(&key_id).await.unwrap();
    w.until("warehouse", 200).await;

    // Case 2: back under the global key.
    let (s, v) = w
        .call(
            reqwest::Method::DELETE,
            "/v2/user_preferences/user_root_key_crn",
            None,
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let stored = w.stored();
    assert!(stored["userRootKeyCrn"].is_null());
    assert!(
        w.tenant
            .admin
            .registrations(Some(&key_id), None)
            .await
            .unwrap()
            .resources
            .is_empty()
    );
    assert!(stored["wrappedDek"].is_null());
    for (name, pw) in SOURCES {
        assert_eq!(dek_of(&stored, name), global);
        assert_eq!(w.password(name).await, (200, json!(pw)));
    }
    // The customer's key no longer matters.
    w.tenant.admin.disable(&key_id).await.unwrap();
    w.start();
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (name, pw) in SOURCES {
        assert_eq!(w.password(name).await, (200, json!(pw)));
    }
    let (s, _) = w
        .call(
            reqwest::Method::GET,
            "/v2/user_preferences/user_root_key_crn",
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_no_plaintext(&w.data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_preferences_and_unusable_keys_are_refused_clearly() {
    let w = World::new().await;
    assert_eq!(w.put_source("warehouse", "pw-warehouse-93a1").await, 201);
    let put = |body: Value, pref: &'static str| {
        let w = &w;
        async move {
            w.call(
                reqwest::Method::PUT,
                &format!("/v2/user_preferences/{pref}"),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(put(json!("not-a-crn"), "user_root_key_crn").await.0, 400);
    assert_eq!(put(json!({"crn": 1}), "user_root_key_crn").await.0, 422);
    let (key_id, crn) = w.tenant.root_key("openscale-root").await;
    assert_eq!(put(json!(crn), "other_pref").await.0, 400);
    // A disabled key is refused, and nothing changes.
    w.tenant.admin.disable(&key_id).await.unwrap();
    let (s, v) = put(json!(crn), "user_root_key_crn").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["errors"][0]["code"], "ROOT_KEY_UNUSABLE");
    assert!(w.stored()["wrappedDek"].is_null());
    // A key the service may not see (no such key) likewise.
    let ghost = crn.replace(&key_id, "00000000-0000-4000-8000-000000000000");
    assert_eq!(put(json!(ghost), "user_root_key_crn").await.0, 409);
    assert_eq!(
        w.password("warehouse").await,
        (200, json!("pw-warehouse-93a1"))
    );
    // Case 2 without case 1: nothing to undo.
    let (s, _) = w
        .call(
            reqwest::Method::DELETE,
            "/v2/user_preferences/user_root_key_crn",
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(w.put_source("bad name!", "x").await, 400);
    assert_eq!(w.put_source("ok", "").await, 400);
    let (s, _) = w.password("missing").await;
    assert_eq!(s, 404);
}
