//! Test harness: a real Keyward server on 127.0.0.1:0 over a temporary data directory, and a
//! small HTTP client that speaks to it as a Key Protect client would.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};

use keyward_runtime::ServerConfig;
use keyward_server::RunningServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub api_key: String,
    pub instance: String,
    pub token: String,
    pub http: reqwest::Client,
}

pub fn config(dir: &Path) -> ServerConfig {
    let mut c = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    c.lifecycle.min_rotation_interval_secs = 0;
    c.lifecycle.enable_after_disable_secs = 0;
    // Webhook receivers in these tests listen on loopback (off by default: public addresses only).
    c.webhooks.allow_private_addresses = true;
    if on_hsm() {
        c.custody = hsm_custody();
    }
    c
}

/// Whether this run uses the PKCS#11 custody backend (`KEYWARD_TEST_CUSTODY=pkcs11`, set by
/// `scripts/test.sh` for its second run of this suite, with `SOFTHSM2_CONF` and
/// `KEYWARD_TEST_HSM_PIN` naming throwaway SoftHSM2 tokens `keyward-a` and `keyward-b`).
pub fn on_hsm() -> bool {
    std::env::var("KEYWARD_TEST_CUSTODY").as_deref() == Ok("pkcs11")
}

/// The `[custody]` section for the SoftHSM2 tokens, whose objects are created once per test
/// binary (idempotent across binaries).
fn hsm_custody() -> keyward_runtime::config::CustodySection {
    use keyward_runtime::config::{CustodySection, HsmSection};
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let section = CustodySection {
        backend: "pkcs11".into(),
        module: Some("/usr/lib/softhsm/libsofthsm2.so".into()),
        pin_env: Some("KEYWARD_TEST_HSM_PIN".into()),
        hsm: ["keyward-a", "keyward-b"]
            .into_iter()
            .map(|l| HsmSection {
                token_label: l.into(),
            })
            .collect(),
        ..CustodySection::default()
    };
    READY.get_or_init(|| {
        let mut hsm = section.pkcs11().unwrap().unwrap();
        // Transit keys are not used by this backend yet; skip the slow RSA-4096 generation.
        hsm.tkek_count = 0;
        keyward_custody_pkcs11::init_objects(&hsm).expect("SoftHSM2 tokens initialized");
    });
    section
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        Self::start_in(dir, c).await
    }

    pub async fn start_in(dir: tempfile::TempDir, c: ServerConfig) -> Self {
        let server = keyward_server::start(c).await.expect("server starts");
        // On the HSM run, no software keystore may appear: the HSM holds the master keys.
        assert_eq!(
            dir.path().join("keystore.json").exists(),
            !on_hsm(),
            "custody backend"
        );
        let boot: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap(),
        )
        .unwrap();
        let http = reqwest::Client::new();
        let url = server.url.clone();
        let api_key = boot["api_key"].as_str().unwrap().to_owned();
        let token = login(&http, &url, &api_key).await;
        TestServer {
            server: Some(server),
            dir,
            url,
            api_key,
            instance: boot["instance_id"].as_str().unwrap().to_owned(),
            token,
            http,
        }
    }

    /// Stops the server and starts it again on the same data directory.
    pub async fn restart(mut self) -> Self {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
        let c = config(self.dir.path());
        let server = keyward_server::start(c).await.expect("server restarts");
        self.url = server.url.clone();
        self.server = Some(server);
        self
    }

    /// Stops the server and starts it again on the same data directory with `tweak` applied.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
        let mut c = config(self.dir.path());
        tweak(&mut c);
        let server = keyward_server::start(c).await.expect("server restarts");
        self.url = server.url.clone();
        self.server = Some(server);
        self
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("keyward.db")
    }

    /// A request with the admin's token and instance.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(method, path, body, Some(&self.token), Some(&self.instance))
            .await
    }

    pub async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        instance: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(i) = instance {
            req = req.header("bluemix-instance", i);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A GET in this server's instance as `token`, scoped to key ring `ring` (`X-Kms-Key-Ring`).
    pub async fn get_in_ring(
        &self,
        path: &str,
        token: &str,
        ring: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .get(format!("{}{}", self.url, path))
            .bearer_auth(token)
            .header("bluemix-instance", &self.instance);
        if let Some(ring) = ring {
            req = req.header("x-kms-key-ring", ring);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
            .header("content-type", "application/vnd.ibm.kms.key_action+json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn create_root_key(&self, name: &str) -> String {
        self.create_key(json!({"name": name, "extractable": false}))
            .await
    }

    pub async fn create_key(&self, resource: Value) -> String {
        let (s, b) = self
            .call(Method::POST, "/api/v2/keys", Some(json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                "resources": [resource],
            })))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["resources"][0]["id"].as_str().unwrap().to_owned()
    }

    pub async fn action(&self, id: &str, action: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/{action}"),
            Some(body),
        )
        .await
    }
}

pub async fn login(http: &reqwest::Client, url: &str, api_key: &str) -> String {
    let resp = http
        .post(format!("{url}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", api_key),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// Asserts a Key Protect error body with the given status and reason code.
pub fn assert_kp_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(
        body["metadata"]["collectionType"], "application/vnd.ibm.kms.error+json",
        "{body}"
    );
    let reason = &body["resources"][0]["reasons"][0];
    assert_eq!(reason["code"], code, "{body}");
    assert_eq!(reason["status"], want.as_u16(), "{body}");
    assert!(
        body["resources"][0]["errorMsg"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

pub const DEK_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

impl TestServer {
    /// A management API call as the bootstrap administrator.
    pub async fn iam(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(method, path, body, Some(&self.token), None)
            .await
    }

    /// Creates an identity of `kind` (`user`, `service_id`), gives it `roles` on this server's
    /// instance (none: no policy) and returns its iam_id, API key and a token.
    pub async fn identity_with(&self, kind: &str, roles: &[&str]) -> (String, String, String) {
        let (s, ident) = self
            .iam(
                Method::POST,
                "/iam/v1/identities",
                Some(json!({"kind": kind, "name": "test identity"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ident}");
        let iam_id = ident["iam_id"].as_str().unwrap().to_owned();
        let (s, key) = self
            .iam(
                Method::POST,
                "/iam/v1/apikeys",
                Some(json!({"iam_id": iam_id, "name": "k"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{key}");
        if !roles.is_empty() {
            let (s, p) = self
                .iam(
                    Method::POST,
                    "/iam/v1/policies",
                    Some(json!({"subject": iam_id, "roles": roles,
                                "resource": {"instance_id": self.instance}})),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{p}");
        }
        let api_key = key["apikey"].as_str().unwrap().to_owned();
        let token = login(&self.http, &self.url, &api_key).await;
        (iam_id, api_key, token)
    }
}
