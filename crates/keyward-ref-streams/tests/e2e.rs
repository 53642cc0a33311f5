//! The event-stream store end to end, with real processes: a `keyward serve`, the service
//! running as its own service identity (Reader on the customer's KMS instance by
//! authorization), and the customer's administrator acting on the root key.

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

const SERVICE: &str = env!("CARGO_BIN_EXE_keyward-ref-streams");

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
        let tenant = Tenant::new(&kw, "messagehub").await;
        let data = dir.path().join("streams");
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

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.service.as_ref().unwrap().url)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn instance(&self, root_key_crn: Option<&str>) -> String {
        let mut body = json!({"name": "es-1"});
        if let Some(crn) = root_key_crn {
            body["rootKeyCrn"] = json!(crn);
        }
        let (s, inst) = self
            .call(reqwest::Method::POST, "/v1/instances", Some(body))
            .await;
        assert_eq!(s, 201, "{inst}");
        inst["id"].as_str().unwrap().to_owned()
    }

    async fn topic(&self, inst: &str, topic: &str) {
        let (s, b) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/instances/{inst}/topics/{topic}"),
                None,
            )
            .await;
        assert_eq!(s, 201, "{b}");
    }

    async fn produce(&self, inst: &str, topic: &str, value: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/instances/{inst}/topics/{topic}/messages"),
            Some(json!({"value": value})),
        )
        .await
    }

    async fn consume(&self, inst: &str, topic: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/instances/{inst}/topics/{topic}/messages"),
            None,
        )
        .await
    }

    async fn show(&self, inst: &str) -> Value {
        let (s, v) = self
            .call(reqwest::Method::GET, &format!("/v1/instances/{inst}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Polls consume until it answers `want`; returns how long that took.
    async fn until_consume(&self, inst: &str, topic: &str, want: u16) -> Duration {
        let start = Instant::now();
        loop {
            let (s, body) = self.consume(inst, topic).await;
            if s == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "consume still {s} (want {want}): {body}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn values(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file under `dir`, read whole.
fn scan(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produces_and_consumes_with_data_encrypted_at_rest_and_shows_its_key() {
    let w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let byok = w.instance(Some(&crn)).await;
    let plain = w.instance(None).await;
    for inst in [&byok, &plain] {
        w.topic(inst, "orders").await;
        for i in 0..3 {
            let (s, b) = w.produce(inst, "orders", &format!("order-{i}-{inst}")).await;
            assert_eq!(s, 201, "{b}");
            assert_eq!(b["offset"], i);
        }
        let (s, b) = w.consume(inst, "orders").await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            values(&b),
            (0..3)
                .map(|i| format!("order-{i}-{inst}"))
                .collect::<Vec<_>>()
        );
    }
    let v = w.show(&byok).await;
    assert_eq!(v["byok"], true);
    assert_eq!(v["rootKeyCrn"], crn.as_str());
    assert_eq!(v["rootKeyId"], key_id.as_str());
    assert_eq!(v["state"], "active");
    assert_eq!(w.show(&plain).await["byok"], false);

    // At rest, nothing is in the clear, BYOK or not.
    for (path, bytes) in scan(&w.data) {
        assert!(!contains(&bytes, b"order-"), "{}", path.display());
    }

    // Bad input is a clear 4xx.
    let post = reqwest::Method::POST;
    let (s, b) = w
        .call(
            post.clone(),
            "/v1/instances",
            Some(json!({"name": "x", "rootKeyCrn": "not-a-crn"})),
        )
        .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("BAD_REQUEST")));
    let (s, _) = w
        .call(post.clone(), "/v1/instances", Some(json!({"name": ""})))
        .await;
    assert_eq!(s, 400);
    // A CRN of a key the service cannot use (no such key): refused at provisioning.
    let ghost = crn.replace(&key_id, "00000000-0000-4000-8000-000000000000");
    let (s, b) = w
        .call(
            post.clone(),
            "/v1/instances",
            Some(json!({"name": "x", "rootKeyCrn": ghost})),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    let (s, _) = w.produce(&byok, "missing", "x").await;
    assert_eq!(s, 404);
    let (s, _) = w
        .call(
            reqwest::Method::PUT,
            &format!("/v1/instances/{byok}/topics/..bad"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = w
        .call(
            reqwest::Method::GET,
            &format!("/v1/instances/{byok}/topics/orders/messages?limit=0"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = w.consume("no-such-instance", "orders").await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_shuts_the_instance_down_and_enabling_it_resumes_with_nothing_lost() {
    let mut w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    w.topic(&inst, "t").await;
    for v in ["a", "b", "c"] {
        assert_eq!(w.produce(&inst, "t", v).await.0, 201);
    }

    w.tenant.admin.disable(&key_id).await.unwrap();
    w.until_consume(&inst, "t", 503).await;
    let (s, b) = w.produce(&inst, "t", "d").await;
    assert_eq!(s, 503);
    assert_eq!(b["error"]["code"], "INSTANCE_SHUT_DOWN");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("disabled"),
        "{b}"
    );
    let v = w.show(&inst).await;
    assert_eq!(v["state"], "shut_down");
    assert!(v["reason"].as_str().unwrap().contains("disabled"));

    // A restart while disabled stays shut down.
    w.start();
    w.until_consume(&inst, "t", 503).await;

    w.tenant.admin.enable(&key_id).await.unwrap();
    w.until_consume(&inst, "t", 200).await;
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["a", "b", "c"]);
    assert_eq!(w.produce(&inst, "t", "d").await.0, 201);

    // A restart while enabled: everything is still there.
    w.start();
    w.until_consume(&inst, "t", 200).await;
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["a", "b", "c", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_authorization_shuts_the_instance_down_and_restoring_it_resumes() {
    let mut w = World::new().await;
    let (_, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    w.topic(&inst, "t").await;
    assert_eq!(w.produce(&inst, "t", "kept").await.0, 201);

    w.tenant.deauthorize().await;
    w.until_consume(&inst, "t", 503).await;
    let v = w.show(&inst).await;
    assert_eq!(v["state"], "shut_down");
    assert!(
        v["reason"].as_str().unwrap().contains("access"),
        "{v}"
    );
    assert_eq!(w.produce(&inst, "t", "x").await.0, 503);

    w.tenant.authorize().await;
    w.until_consume(&inst, "t", 200).await;
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["kept"]);
    assert_eq!(w.produce(&inst, "t", "more").await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_key_crypto_shreds_the_data_for_good() {
    let mut w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    let secrets: Vec<String> = (0..5).map(|i| format!("shred-me-{i}-7f3a")).collect();
    for topic in ["t1", "t2"] {
        w.topic(&inst, topic).await;
        for s in &secrets {
            assert_eq!(w.produce(&inst, topic, s).await.0, 201);
        }
    }
    assert_eq!(values(&w.consume(&inst, "t1").await.1), secrets);
    let before: Vec<(PathBuf, Vec<u8>)> = scan(&w.data);
    let sealed_logs: Vec<Vec<u8>> = before
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "log"))
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(sealed_logs.len(), 2);

    w.tenant.admin.delete(&key_id).await.unwrap();
    w.until_consume(&inst, "t1", 410).await;
    let v = w.show(&inst).await;
    assert_eq!(v["state"], "shredded");

    // No file holds a plaintext, a sealed message, or a wrapped DEK any more.
    let after = scan(&w.data);
    for (path, bytes) in &after {
        for s in &secrets {
            assert!(!contains(bytes, s.as_bytes()), "{}", path.display());
        }
        assert!(
            path.extension().is_none_or(|e| e != "log"),
            "log left: {}",
            path.display()
        );
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("ciphertext"), "{}", path.display());
        for log in &sealed_logs {
            // Any 64-byte window of the old sealed records would betray a leftover.
            assert!(
                !contains(bytes, &log[4..68]),
                "sealed bytes in {}",
                path.display()
            );
        }
    }

    // Restoring the key does not bring the data back, nor does a restart of the service.
    w.tenant.admin.restore(&key_id, None).await.unwrap();
    for _ in 0..2 {
        let (s, b) = w.consume(&inst, "t1").await;
        assert_eq!(s, 410, "{b}");
        assert_eq!(b["error"]["code"], "INSTANCE_SHREDDED");
        w.start();
    }
    let (s, _) = w.consume(&inst, "t2").await;
    assert_eq!(s, 410);
    assert_eq!(w.produce(&inst, "t1", "new").await.0, 410);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_byok_on_an_instance_with_data_deletes_that_data() {
    let w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(None).await;
    w.topic(&inst, "t").await;
    for v in ["old-1", "old-2"] {
        assert_eq!(w.produce(&inst, "t", v).await.0, 201);
    }
    let (s, v) = w
        .call(
            reqwest::Method::PUT,
            &format!("/v1/instances/{inst}/root_key"),
            Some(json!({"rootKeyCrn": crn})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deletedMessages"], 2);
    assert_eq!(v["rootKeyId"], key_id.as_str());
    let (s, b) = w.consume(&inst, "t").await;
    assert_eq!(s, 200, "{b}");
    assert!(values(&b).is_empty());
    assert_eq!(w.produce(&inst, "t", "new-1").await.1["offset"], 0);
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["new-1"]);
    // The root key is fixed once chosen.
    let (s, _) = w
        .call(
            reqwest::Method::PUT,
            &format!("/v1/instances/{inst}/root_key"),
            Some(json!({"rootKeyCrn": crn})),
        )
        .await;
    assert_eq!(s, 409);
}
