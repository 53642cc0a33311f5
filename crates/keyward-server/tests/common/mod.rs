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
    if on_postgres() {
        // One database per data directory: a restart on the same directory finds its records.
        c.store = keyward_runtime::config::StoreSection {
            backend: "postgres".into(),
            url: Some(keyward_test::postgres::database_for(dir)),
            url_env: None,
            pool_size: 8,
            ..Default::default()
        };
    }
    c
}

/// Whether this run uses the PostgreSQL store (`KEYWARD_TEST_STORE=postgres`, set by
/// `scripts/test.sh` for its third run of this suite; the throwaway cluster starts by itself).
pub fn on_postgres() -> bool {
    std::env::var("KEYWARD_TEST_STORE").as_deref() == Ok("postgres")
}

/// For the few tests that read or alter the SQLite file itself (its bytes, its write-ahead log,
/// rows changed under the server): true, after saying so, when this run is on PostgreSQL,
/// where the same behaviour is covered by keyward-store's PostgreSQL tests.
pub fn sqlite_file_only(test: &str) -> bool {
    if on_postgres() {
        eprintln!("{test}: not run on PostgreSQL (it reads or alters keyward.db itself)");
        return true;
    }
    false
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
    /// The store's faces over this server's database, opened a second time (as another process
    /// on the same database would).
    pub async fn stores(&self) -> keyward_runtime::Stores {
        keyward_runtime::open_store(&config(self.dir.path()))
            .await
            .unwrap()
    }

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
        // On the PostgreSQL run, nothing of the store is written to the data directory.
        assert_eq!(
            dir.path().join(keyward_store::DB_FILE).exists(),
            !on_postgres(),
            "store backend"
        );
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

/// The test server's database, reached directly (as someone with access to it would), on either
/// backend. SQL is written once with `?N` placeholders; every value comes back as text (blobs as
/// lowercase hex, NULL as None).
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl TestServer {
    /// A direct connection to this server's database. On PostgreSQL, audit events committed
    /// so far are linked into the chain (`audit_events`) first, as any read of the trail does.
    pub async fn db(&self) -> Db {
        if on_postgres() {
            let url = keyward_test::postgres::database_for(self.dir.path());
            let options = keyward_store::PgOptions {
                url: url.clone(),
                pool_size: 1,
            };
            let store = keyward_store::PgStore::connect(&options).await.unwrap();
            store.link_pending().await.unwrap();
            let (client, conn) = url
                .parse::<tokio_postgres::Config>()
                .unwrap()
                .connect(tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            Db::Postgres(client)
        } else {
            Db::Sqlite(rusqlite::Connection::open(self.db_path()).unwrap())
        }
    }
}

/// `'value'` as an SQL string literal (tests only: values come from the test itself).
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

impl Db {
    /// `sql` with `?N` replaced by the N-th value as a literal (PostgreSQL's simple protocol
    /// takes no parameters; the literal's type is inferred from the column it meets).
    fn inline(sql: &str, params: &[&str]) -> String {
        let mut out = sql.to_owned();
        for (i, v) in params.iter().enumerate().rev() {
            out = out.replace(&format!("?{}", i + 1), &literal(v));
        }
        out
    }

    /// Runs a statement; returns the rows changed.
    pub async fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match self {
            Db::Sqlite(c) => c
                .execute(sql, rusqlite::params_from_iter(params.iter()))
                .unwrap() as u64,
            Db::Postgres(c) => c.execute(&Self::inline(sql, params), &[]).await.unwrap(),
        }
    }

    /// Every row of a query, each column as text.
    pub async fn rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(c) => {
                let mut stmt = c.prepare(sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    (0..n)
                        .map(|i| {
                            Ok(match r.get::<_, rusqlite::types::Value>(i)? {
                                rusqlite::types::Value::Null => None,
                                rusqlite::types::Value::Integer(v) => Some(v.to_string()),
                                rusqlite::types::Value::Real(v) => Some(v.to_string()),
                                rusqlite::types::Value::Text(t) => Some(t),
                                rusqlite::types::Value::Blob(b) => Some(hex(&b)),
                            })
                        })
                        .collect()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Db::Postgres(c) => c
                .simple_query(&Self::inline(sql, params))
                .await
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| {
                                r.get(i).map(|v| match v.strip_prefix("\\x") {
                                    Some(h) => h.to_owned(),
                                    None => v.to_owned(),
                                })
                            })
                            .collect(),
                    ),
                    _ => None,
                })
                .collect(),
        }
    }

    /// The single integer a query returns (a count).
    pub async fn int(&self, sql: &str, params: &[&str]) -> i64 {
        let rows = self.rows(sql, params).await;
        rows[0][0].as_deref().unwrap().parse().unwrap()
    }

    /// The first column of every row, decoded from hex (blob columns).
    pub async fn blobs(&self, sql: &str, params: &[&str]) -> Vec<Vec<u8>> {
        self.rows(sql, params)
            .await
            .into_iter()
            .map(|r| unhex(r[0].as_deref().unwrap()))
            .collect()
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}
