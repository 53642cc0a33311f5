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

use keyward_test::process::{
    Keyward, Proc, Tenant, free_addr, keyward, keyward_bin, keyward_on, spawn,
};
use serde_json::{Value, json};

const SERVICE: &str = env!("CARGO_BIN_EXE_keyward-ref-streams");

struct World {
    dir: tempfile::TempDir,
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
            dir,
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

    /// Stops the service (SIGKILL).
    fn stop(&mut self) {
        if let Some(p) = self.service.take() {
            p.kill();
        }
    }

    /// Restarts `keyward serve` on the same data (SIGKILL, then a new process on a new port).
    fn restart_kms(&mut self) {
        let bin = keyward_bin(SERVICE);
        let kms = self.dir.path().join("kms");
        self.kw.proc.child.kill().unwrap();
        self.kw.proc.child.wait().unwrap();
        self.kw = keyward(&bin, &kms);
        self.tenant.reconnect(&self.kw);
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
            let (s, b) = w
                .produce(inst, "orders", &format!("order-{i}-{inst}"))
                .await;
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

    // A message altered on disk is refused (500), never served altered, and never taken for a
    // shutdown.
    let log = w
        .data
        .join("instances")
        .join(&byok)
        .join("topics/orders.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&log, &bytes).unwrap();
    let (s, b) = w.consume(&byok, "orders").await;
    assert_eq!(
        (s, b["error"]["message"].as_str()),
        (500, Some("internal error"))
    );
    bytes[last] ^= 1;
    std::fs::write(&log, &bytes).unwrap();
    assert_eq!(w.consume(&byok, "orders").await.0, 200);

    // Neither the service's log nor the KMS's holds a message or the service's API key.
    let logs = [
        std::fs::read(w.data.with_extension("log")).unwrap(),
        std::fs::read(w.data.parent().unwrap().join("kms/server.log")).unwrap_or_default(),
    ];
    for log in &logs {
        assert!(!contains(log, b"order-"));
        assert!(!contains(log, w.tenant.service_api_key.as_bytes()));
    }
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
    assert!(v["reason"].as_str().unwrap().contains("access"), "{v}");
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

    // The key protects a registered resource: deleting it needs force, as in Key Protect.
    let refused = w.tenant.admin.delete_key(&key_id, false).await.unwrap_err();
    assert!(
        matches!(
            refused,
            keyward_client::ClientError::Api { status: 409, .. }
        ),
        "{refused:?}"
    );
    w.tenant.admin.delete_key(&key_id, true).await.unwrap();
    w.until_consume(&inst, "t1", 410).await;
    // The customer can see the service has acted on the deletion.
    settled(&w, &key_id, "DEK_DELETED").await;
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

/// A pause of 0 to 299 ms, so changes land at every phase of the service's revalidation timer
/// (right after a resume, they would all land just after a tick: the worst case every time).
async fn jitter() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    tokio::time::sleep(Duration::from_millis(u64::from(nanos % 300))).await;
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "SHUTDOWN-LATENCY {name} trials={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
        samples.len(),
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 99.0)),
        ms(*samples.last().unwrap()),
    )
}

/// Shutdown latency: from the 2xx of a disable (or of an authorization's removal) to the first
/// refused read, with the DEK cached before every trial. `TRIALS` (default 50) each; prints
/// `SHUTDOWN-LATENCY` lines that `scripts/bench-shutdown.sh` writes into BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with scripts/bench-shutdown.sh"]
async fn shutdown_latency() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let mut w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    w.topic(&inst, "t").await;
    assert_eq!(w.produce(&inst, "t", "m").await.0, 201);

    let mut disable = Vec::new();
    for _ in 0..trials {
        // A read caches the DEK: the trial measures dropping it, not a cold unwrap failing.
        w.until_consume(&inst, "t", 200).await;
        jitter().await;
        w.tenant.admin.disable(&key_id).await.unwrap();
        disable.push(w.until_consume(&inst, "t", 503).await);
        w.tenant.admin.enable(&key_id).await.unwrap();
    }
    let mut deauth = Vec::new();
    for _ in 0..trials {
        w.until_consume(&inst, "t", 200).await;
        jitter().await;
        w.tenant.deauthorize().await;
        deauth.push(w.until_consume(&inst, "t", 503).await);
        w.tenant.authorize().await;
    }
    println!("{}", summary("disable", disable));
    println!("{}", summary("authorization-removed", deauth));
}

/// Polls the key's registration until the service has acknowledged every event, and returns it.
async fn settled(w: &World, key_id: &str, want: &str) -> Value {
    let start = Instant::now();
    loop {
        let regs = w
            .tenant
            .admin
            .registrations(Some(key_id), None)
            .await
            .unwrap();
        let r = serde_json::to_value(&regs.resources[0]).unwrap();
        if r["pendingEvents"].as_array().is_some_and(Vec::is_empty) && r["adopterKeyState"] == want
        {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_is_registered_and_acts_on_every_lifecycle_event() {
    let w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    let view = w.show(&inst).await;
    let inst_crn = view["crn"].as_str().unwrap().to_owned();
    assert!(
        inst_crn.contains(":messagehub:") && inst_crn.contains(&inst),
        "{inst_crn}"
    );

    // The customer sees which resource the key protects, not the service's private metadata.
    let regs = w
        .tenant
        .admin
        .registrations(None, Some("crn:v1:*:messagehub:*"))
        .await
        .unwrap();
    assert_eq!(regs.resources.len(), 1);
    let r = &regs.resources[0];
    assert_eq!(
        (r.key_id.as_str(), r.resource_crn.as_str()),
        (key_id.as_str(), inst_crn.as_str())
    );
    assert!(!r.prevent_key_deletion);
    assert_eq!(r.registration_metadata, None);

    w.topic(&inst, "t").await;
    assert_eq!(w.produce(&inst, "t", "before-rotation").await.0, 201);
    let stored = |w: &World| -> Value {
        serde_json::from_slice(
            &std::fs::read(w.data.join("instances").join(&inst).join("instance.json")).unwrap(),
        )
        .unwrap()
    };
    let v1 = stored(&w)["topics"]["t"]["dek"]["keyVersion"].clone();

    // Rotate: the service rewraps its DEK under the new version and says so in its ack.
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
    settled(&w, &key_id, "DEK_ENABLED").await;
    assert_eq!(
        stored(&w)["topics"]["t"]["dek"]["keyVersion"],
        current.as_str()
    );
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["before-rotation"]);

    // Disable: refused, and the customer can see that the disable has taken effect.
    w.tenant.admin.disable(&key_id).await.unwrap();
    w.until_consume(&inst, "t", 503).await;
    settled(&w, &key_id, "DEK_DISABLED").await;
    w.tenant.admin.enable(&key_id).await.unwrap();
    w.until_consume(&inst, "t", 200).await;
    settled(&w, &key_id, "DEK_ENABLED").await;

    // Sync re-sends the current state; the service answers it too.
    w.tenant.admin.sync_key(&key_id).await.unwrap();
    settled(&w, &key_id, "DEK_ENABLED").await;

    // Deleting the instance removes its registration: the key is free to go without force.
    let (s, _) = w
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/instances/{inst}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert!(
        w.tenant
            .admin
            .registrations(Some(&key_id), None)
            .await
            .unwrap()
            .resources
            .is_empty()
    );
    assert_eq!(w.consume(&inst, "t").await.0, 404);
    w.tenant.admin.delete_key(&key_id, false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_sent_while_the_service_was_down_is_delivered_after_a_kms_restart() {
    let mut w = World::new().await;
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    w.topic(&inst, "t").await;
    assert_eq!(w.produce(&inst, "t", "kept").await.0, 201);

    // The service is down when the key is disabled, and the KMS restarts before it comes back.
    w.stop();
    w.tenant.admin.disable(&key_id).await.unwrap();
    let regs = w
        .tenant
        .admin
        .registrations(Some(&key_id), None)
        .await
        .unwrap();
    let pending = &regs.resources[0].pending_events;
    assert_eq!(pending.len(), 1, "{pending:?}");
    w.restart_kms();
    w.start();
    // The stream replays the unacknowledged disable; the service acts on it and acknowledges.
    let r = settled(&w, &key_id, "DEK_DISABLED").await;
    assert!(r["pendingEvents"].as_array().unwrap().is_empty());
    w.until_consume(&inst, "t", 503).await;
    w.tenant.admin.enable(&key_id).await.unwrap();
    settled(&w, &key_id, "DEK_ENABLED").await;
    w.until_consume(&inst, "t", 200).await;
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_a_kms_restart_and_acts_on_later_events() {
    let mut w = World::new().await;
    // A KMS that comes back on the same address.
    let addr = free_addr();
    let kms = w.dir.path().join("kms");
    w.kw.proc.child.kill().unwrap();
    w.kw.proc.child.wait().unwrap();
    w.kw = keyward_on(&keyward_bin(SERVICE), &kms, &addr);
    w.tenant.reconnect(&w.kw);
    w.start();
    let (key_id, crn) = w.tenant.root_key("es-root").await;
    let inst = w.instance(Some(&crn)).await;
    w.topic(&inst, "t").await;
    assert_eq!(w.produce(&inst, "t", "kept").await.0, 201);
    w.tenant.admin.disable(&key_id).await.unwrap();
    settled(&w, &key_id, "DEK_DISABLED").await;

    // The KMS restarts under the running service; its event stream breaks and reconnects.
    w.kw.proc.child.kill().unwrap();
    w.kw.proc.child.wait().unwrap();
    w.kw = keyward_on(&keyward_bin(SERVICE), &kms, &addr);
    w.tenant.reconnect(&w.kw);
    w.tenant.admin.enable(&key_id).await.unwrap();
    settled(&w, &key_id, "DEK_ENABLED").await;
    w.until_consume(&inst, "t", 200).await;
    w.tenant.admin.rotate(&key_id, None).await.unwrap();
    let current = w
        .tenant
        .admin
        .key_metadata(&key_id)
        .await
        .unwrap()
        .key_version
        .id;
    let r = settled(&w, &key_id, "DEK_ENABLED").await;
    assert!(r["pendingEvents"].as_array().unwrap().is_empty());
    let stored: Value = serde_json::from_slice(
        &std::fs::read(w.data.join("instances").join(&inst).join("instance.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["topics"]["t"]["dek"]["keyVersion"], current.as_str());
    assert_eq!(values(&w.consume(&inst, "t").await.1), ["kept"]);
}
