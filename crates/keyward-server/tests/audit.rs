//! The audit trail: the hash chain over real API traffic, signed checkpoints, the query API
//! (filters, paging, roles, instance isolation, bad input), the export sinks (JSON Lines
//! rotation, a webhook that is down and then recovers, signed with a timestamp, that follows no
//! redirect and reaches no private address unless allowed), `/metrics`, and request ids.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::{DEK_B64, TestServer, assert_kp_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Some traffic: two keys, wraps, an unwrap, a refused unwrap.
async fn traffic(ts: &TestServer) -> (String, String) {
    let a = ts.create_root_key("key-a").await;
    let b = ts.create_root_key("key-b").await;
    let (s, w) = ts
        .action(&a, "wrap", json!({"plaintext": DEK_B64, "aad": ["x"]}))
        .await;
    assert_eq!(s, StatusCode::OK, "{w}");
    let ct = w["ciphertext"].as_str().unwrap().to_owned();
    let (s, _) = ts
        .action(&a, "unwrap", json!({"ciphertext": ct, "aad": ["x"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = ts
        .action(&a, "unwrap", json!({"ciphertext": ct, "aad": ["wrong"]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    for _ in 0..3 {
        let (s, _) = ts.action(&b, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(s, StatusCode::OK);
    }
    (a, b)
}

async fn events(ts: &TestServer, query: &str) -> (StatusCode, Value) {
    ts.call(Method::GET, &format!("/api/v2/audit_events{query}"), None)
        .await
}

/// The newest event's position in the chain.
async fn audit_head(ts: &TestServer) -> u64 {
    ts.db()
        .await
        .int("SELECT MAX(seq) FROM audit_events", &[])
        .await as u64
}

/// `keyward audit verify` over the server's database, on either backend.
async fn verify(ts: &TestServer) -> keyward_core::ChainReport {
    let config = common::config(ts.dir.path());
    let custody = keyward_runtime::open_custody(&config, false).unwrap();
    match config.store.postgres().unwrap() {
        Some(options) => {
            let store = keyward_store::PgStore::connect(&options).await.unwrap();
            keyward_store::verify_audit_chain_pg(&store, custody.as_ref())
                .await
                .unwrap()
        }
        None => keyward_store::verify_audit_chain(ts.dir.path(), custody.as_ref()).unwrap(),
    }
}

#[tokio::test]
async fn api_traffic_builds_an_intact_chain_and_shutdown_signs_its_head() {
    let mut ts = TestServer::start().await;
    traffic(&ts).await;
    ts.stop().await;
    let report = verify(&ts).await;
    assert!(report.first_break.is_none(), "{report:?}");
    assert!(report.events >= 8, "{report:?}");
    let head = report.head.unwrap().0;
    assert_eq!(report.last_good_checkpoint, Some(head), "{report:?}");
    // Every stored event links to the one before it.
    let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = ts
        .db()
        .await
        .rows(
            "SELECT seq, prev_hash, hash FROM audit_events ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].as_deref().unwrap().parse().unwrap(),
                common::unhex(r[1].as_deref().unwrap()),
                common::unhex(r[2].as_deref().unwrap()),
            )
        })
        .collect();
    assert_eq!(rows[0].1, vec![0u8; 32]);
    for pair in rows.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1);
        assert_eq!(pair[1].1, pair[0].2);
    }
}

#[tokio::test]
async fn checkpoints_are_taken_in_the_background_every_n_events() {
    let ts = TestServer::start_with(|c| {
        c.audit.checkpoint_every_events = 3;
        c.audit.checkpoint_interval_secs = 3600;
    })
    .await;
    traffic(&ts).await;
    let db = ts.db().await;
    let mut n = 0i64;
    for _ in 0..50 {
        n = db.int("SELECT COUNT(*) FROM audit_checkpoints", &[]).await;
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(n > 0, "no checkpoint while the server runs");
    let report = verify(&ts).await;
    assert!(report.first_break.is_none(), "{report:?}");
    assert!(report.last_good_checkpoint.is_some());
}

#[tokio::test]
async fn audit_events_filter_page_and_stay_inside_the_instance() {
    let ts = TestServer::start().await;
    let (a, b) = traffic(&ts).await;

    let (s, all) = events(&ts, "?limit=5000").await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert_eq!(
        all["metadata"]["collectionType"],
        "application/vnd.keyward.audit_event+json"
    );
    let total = all["metadata"]["totalCount"].as_u64().unwrap();
    assert!(total >= 8, "{all}");
    let seqs: Vec<u64> = all["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "oldest first");
    // No key material or DEK in what the API shows.
    assert!(!all.to_string().contains(DEK_B64));

    let (_, wraps) = events(&ts, &format!("?action=kms.secrets.wrap&keyId={b}")).await;
    assert_eq!(wraps["metadata"]["totalCount"], 3, "{wraps}");
    assert!(
        wraps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["target"]["id"] == b.as_str() && e["outcome"] == "success")
    );
    let (_, failed) = events(&ts, &format!("?outcome=failure&keyId={a}")).await;
    assert_eq!(failed["metadata"]["totalCount"], 1, "{failed}");
    assert_eq!(failed["resources"][0]["reasonCode"], 422);

    // Pages of 2 cover the filtered set exactly once.
    let mut paged = Vec::new();
    for offset in (0..total).step_by(2) {
        let (s, page) = events(&ts, &format!("?limit=2&offset={offset}")).await;
        assert_eq!(s, StatusCode::OK);
        for e in page["resources"].as_array().unwrap() {
            paged.push(e["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(&paged[..seqs.len().min(paged.len())], &seqs[..]);

    // A time window in the future is empty; a window around now is not.
    let (_, future) = events(&ts, "?from=2999-01-01T00:00:00Z").await;
    assert_eq!(future["metadata"]["totalCount"], 0);
    let (_, past) = events(&ts, "?to=2000-01-01T00:00:00Z").await;
    assert_eq!(past["metadata"]["totalCount"], 0);
    let (_, window) = events(&ts, "?from=2000-01-01T00:00:00Z&to=2999-01-01T00:00:00Z").await;
    assert!(window["metadata"]["totalCount"].as_u64().unwrap() >= total);

    // Bad input: a clear 400, never a 500.
    for bad in [
        "?limit=5001",
        "?limit=-1",
        "?offset=x",
        "?outcome=maybe",
        "?from=yesterday",
        "?nosuch=1",
        "?action=",
    ] {
        let (s, body) = events(&ts, bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(
            body["metadata"]["collectionType"], "application/vnd.ibm.kms.error+json",
            "{bad}"
        );
    }

    // Only Managers read the trail; a Reader is refused and learns nothing.
    let (_, _, reader) = ts.identity_with("user", &["Reader"]).await;
    let (s, body) = ts
        .call_as(
            Method::GET,
            "/api/v2/audit_events",
            None,
            Some(&reader),
            Some(&ts.instance),
        )
        .await;
    assert_kp_error(s, &body, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    // No token: 401.
    let (s, _) = ts
        .call_as(
            Method::GET,
            "/api/v2/audit_events",
            None,
            None,
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Another instance of the same account sees none of this instance's events.
    let (s, inst) = ts
        .iam(
            Method::POST,
            "/iam/v1/instances",
            Some(json!({"name": "second"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inst}");
    let second = inst["id"].as_str().unwrap();
    let (s, other) = ts
        .call_as(
            Method::GET,
            "/api/v2/audit_events?limit=5000",
            None,
            Some(&ts.token),
            Some(second),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{other}");
    assert!(
        other["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["instanceId"] == second),
        "{other}"
    );
    assert!(!other.to_string().contains(&a));
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_joined_to_the_audit_event() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("rid").await;
    let resp = ts
        .http
        .post(format!("{}/api/v2/keys/{key}/actions/wrap", ts.url))
        .bearer_auth(&ts.token)
        .header("bluemix-instance", &ts.instance)
        .header("x-request-id", "client-req-42")
        .header("content-type", "application/json")
        .body(json!({"plaintext": DEK_B64}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "client-req-42");
    let (_, found) = events(&ts, &format!("?action=kms.secrets.wrap&keyId={key}")).await;
    assert_eq!(
        found["resources"][0]["requestId"], "client-req-42",
        "{found}"
    );
    // An unusable one (too long, odd characters) is replaced, not logged.
    let resp = ts
        .http
        .get(format!("{}/healthz", ts.url))
        .header("x-request-id", "a b\"c")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "a b\"c");
    assert_eq!(id.len(), 36);
}

/// The value of the first series `name` whose labels include `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let base = series.split('{').next()?;
        (base == name
            && labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\""))))
        .then(|| value.parse().ok())?
    })
}

/// Every non-comment line is `name{labels} value` with a float value; every series has HELP
/// and TYPE lines.
fn assert_prometheus_text(text: &str) {
    let mut typed = BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            typed.insert(it.next().unwrap().to_owned());
            assert!(
                ["counter", "gauge", "histogram"].contains(&it.next().unwrap()),
                "{l}"
            );
            continue;
        }
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("value of {l}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{l}"
        );
        let base = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_sum"))
            .or_else(|| name.strip_suffix("_count"))
            .filter(|b| typed.contains(*b))
            .unwrap_or(name);
        assert!(typed.contains(base), "no TYPE for {l}");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')));
        }
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_move_with_traffic() {
    let ts = TestServer::start().await;
    let scrape = || async {
        let resp = ts
            .http
            .get(format!("{}/metrics", ts.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        resp.text().await.unwrap()
    };
    let before = scrape().await;
    assert_prometheus_text(&before);
    let wraps = |t: &str| {
        sample(
            t,
            "keyward_http_requests_total",
            &[
                ("operation", "/api/v2/keys/{id}/actions/{action}"),
                ("status", "200"),
            ],
        )
        .unwrap_or(0.0)
    };
    let (a, _) = traffic(&ts).await;
    ts.action(&a, "disable", json!({})).await;
    let after = scrape().await;
    assert_prometheus_text(&after);
    assert!(wraps(&after) >= wraps(&before) + 5.0, "{after}");
    for needed in [
        "keyward_http_request_duration_seconds_bucket",
        "keyward_keys",
        "keyward_custody_up 1",
        "keyward_event_delivery_backlog 0",
        "keyward_audit_chain_head_seq",
    ] {
        assert!(after.contains(needed), "{needed} missing:\n{after}");
    }
    assert_eq!(
        sample(&after, "keyward_keys", &[("state", "active")]),
        Some(1.0),
        "{after}"
    );
    // The custody backend, and each HSM token's state on PKCS#11.
    let backend = if common::on_hsm() {
        "pkcs11"
    } else {
        "software"
    };
    assert_eq!(
        sample(&after, "keyward_custody_info", &[("backend", backend)]),
        Some(1.0),
        "{after}"
    );
    if common::on_hsm() {
        for token in ["keyward-a", "keyward-b"] {
            assert_eq!(
                sample(&after, "keyward_custody_token_up", &[("token", token)]),
                Some(1.0),
                "{after}"
            );
        }
    } else {
        assert!(!after.contains("keyward_custody_token_up{"), "{after}");
    }
    assert_eq!(
        sample(&after, "keyward_keys", &[("state", "suspended")]),
        Some(1.0)
    );
    let refused = sample(&after, "keyward_http_requests_total", &[("status", "422")]);
    assert_eq!(refused, Some(1.0), "{after}");
    // No key ids in label values: operations are route templates.
    assert!(!after.contains(&a));
}

/// Issue 18: the request counter labelled the raw method, so made-up methods grew `/metrics`
/// (and the process) without bound. Anything but a defined method is `other`.
#[tokio::test]
async fn metrics_label_made_up_methods_as_other() {
    let ts = TestServer::start().await;
    for i in 0..50 {
        let method = reqwest::Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let resp = ts
            .http
            .request(method, format!("{}/healthz", ts.url))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let text = ts
        .http
        .get(format!("{}/metrics", ts.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_prometheus_text(&text);
    assert!(!text.contains("MADEUP"), "{text}");
    let other = sample(&text, "keyward_http_requests_total", &[("method", "other")]);
    assert_eq!(other, Some(50.0), "{text}");
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token_or_be_off() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("metrics.token");
    std::fs::write(&token_file, "scrape-secret\n").unwrap();
    let ts = TestServer::start_with(|c| {
        c.metrics.bearer_token_file = Some(token_file);
    })
    .await;
    let url = format!("{}/metrics", ts.url);
    let s = ts.http.get(&url).send().await.unwrap().status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = ts
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let s = ts
        .http
        .get(&url)
        .bearer_auth("scrape-secret")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::OK);
    let off = TestServer::start_with(|c| c.metrics.enabled = false).await;
    let s = off
        .http
        .get(format!("{}/metrics", off.url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The seqs exported into `base` and its rotated files (oldest first), the number of files and
/// their sizes. The sink may rotate between listing the directory and reading a file, or be
/// mid-line: such a snapshot is taken again, so only a consistent one is returned.
fn exported_seqs(dir: &std::path::Path, base: &str) -> (Vec<u64>, usize, Vec<u64>) {
    for _ in 0..500 {
        if let Some(snapshot) = try_exported_seqs(dir, base) {
            return snapshot;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no consistent snapshot of {base} in 5 s");
}

fn try_exported_seqs(dir: &std::path::Path, base: &str) -> Option<(Vec<u64>, usize, Vec<u64>)> {
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name()?.to_str()?.to_owned();
            if name == base {
                Some((u32::MAX, p))
            } else {
                let n = name.strip_prefix(&format!("{base}."))?.parse().ok()?;
                Some((n, p))
            }
        })
        .collect();
    files.sort();
    let mut seqs = Vec::new();
    let mut sizes = Vec::new();
    for (_, p) in &files {
        let text = match std::fs::read_to_string(p) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => panic!("{}: {e}", p.display()),
        };
        if !text.is_empty() && !text.ends_with('\n') {
            return None;
        }
        sizes.push(text.len() as u64);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            seqs.push(v["seq"].as_u64().unwrap());
        }
    }
    Some((seqs, files.len(), sizes))
}

/// A JSON Lines sink `name` writing to `path`, polled every 50 ms.
fn jsonl_sink(
    name: &str,
    path: std::path::PathBuf,
    max_bytes: u64,
) -> impl FnOnce(&mut keyward_runtime::ServerConfig) {
    let name = name.to_owned();
    move |c| {
        c.audit.export_poll_ms = 50;
        c.audit
            .jsonl
            .push(keyward_runtime::config::JsonlSinkSection {
                name,
                path,
                max_bytes,
            });
    }
}

#[tokio::test]
async fn jsonl_export_rotates_at_the_size_limit_and_writes_each_event_once() {
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("audit.jsonl");
    let mut ts = TestServer::start_with(jsonl_sink("file", path.clone(), 2048)).await;
    let key = ts.create_root_key("export").await;
    for _ in 0..20 {
        let (s, _) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(s, StatusCode::OK);
    }
    async fn head(ts: &TestServer) -> u64 {
        ts.db()
            .await
            .int("SELECT MAX(seq) FROM audit_events", &[])
            .await as u64
    }
    let want = head(&ts).await;
    let mut seqs = Vec::new();
    for _ in 0..100 {
        seqs = exported_seqs(out.path(), "audit.jsonl").0;
        if seqs.last() == Some(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A restart continues the same files without repeating anything.
    ts = ts
        .restart_with(jsonl_sink("file", path.clone(), 2048))
        .await;
    let (s, _) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_eq!(s, StatusCode::OK);
    let want = head(&ts).await;
    let (mut seqs2, mut files, mut sizes) = (Vec::new(), 0, Vec::new());
    for _ in 0..100 {
        (seqs2, files, sizes) = exported_seqs(out.path(), "audit.jsonl");
        if seqs2.last() == Some(&want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seqs.len() > 10);
    assert_eq!(
        seqs2,
        (1..=want).collect::<Vec<_>>(),
        "every event exactly once, in order"
    );
    assert!(files >= 3, "rotated into {files} files");
    assert!(sizes.iter().all(|s| *s <= 2048), "{sizes:?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains(DEK_B64));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The threads of this process named `name` (as `/proc` shows it: at most 15 bytes), with their
/// nice values.
fn threads_named(name: &str) -> Vec<i64> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After "pid (comm) ", nice is the 17th field.
        if let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) {
            found.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    found
}

/// A sink's reading, rendering and writing run on a thread of its own at the lowest priority, so
/// it uses the API's idle time; the request path's threads keep the normal priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_export_sink_runs_at_the_lowest_cpu_priority() {
    let out = tempfile::tempdir().unwrap();
    let ts =
        TestServer::start_with(jsonl_sink("nice", out.path().join("audit.jsonl"), 1 << 20)).await;
    let key = ts.create_root_key("nice").await;
    let (s, _) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_eq!(s, StatusCode::OK);
    let mut exporters = Vec::new();
    for _ in 0..50 {
        exporters = threads_named("keyward-audit-e");
        if !exporters.is_empty() && exported_seqs(out.path(), "audit.jsonl").0.len() > 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exporters.is_empty(), "an export thread runs");
    assert!(exporters.iter().all(|n| *n == 19), "{exporters:?}");
    // SQLite's writer thread keeps the normal priority (PostgreSQL's store has none).
    let writers = threads_named("keyward-store-w");
    assert!(
        common::on_postgres() || (!writers.is_empty() && writers.iter().all(|n| *n == 0)),
        "{writers:?}"
    );
    let workers = threads_named("tokio-rt-worker");
    assert!(
        !workers.is_empty() && workers.iter().all(|n| *n == 0),
        "{workers:?}"
    );
}

/// Two servers on one database, each configured with the same sink (to its own file): the sink's
/// lease lets one export at a time, so every event is in exactly one of the files; when the
/// holder stops, the other takes the sink over and goes on from the shared cursor.
#[tokio::test]
async fn two_servers_on_one_database_export_a_sink_once_and_take_it_over() {
    let out = tempfile::tempdir().unwrap();
    let sink = |path| jsonl_sink("shared", path, 64 << 20);
    let (path_a, path_b) = (out.path().join("a.jsonl"), out.path().join("b.jsonl"));
    let mut a = TestServer::start_with(sink(path_a.clone())).await;
    let mut config_b = common::config(a.dir.path());
    sink(path_b.clone())(&mut config_b);
    let b = keyward_server::start(config_b).await.unwrap();
    let key = a.create_root_key("export-lease").await;
    let (http, token, instance) = (a.http.clone(), a.token.clone(), a.instance.clone());
    let wrap_on = |url: String| {
        let (http, token, instance, key) =
            (http.clone(), token.clone(), instance.clone(), key.clone());
        async move {
            let resp = http
                .post(format!("{url}/api/v2/keys/{key}/actions/wrap"))
                .bearer_auth(token)
                .header("bluemix-instance", instance)
                .json(&json!({"plaintext": DEK_B64}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
    };
    // Complete lines only: the holder may be mid-write.
    let lines = |path: &std::path::Path| -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    // Every event up to the head in exactly one of the two files.
    let exported_once = |want: u64| {
        let (in_a, in_b) = (lines(&path_a), lines(&path_b));
        let mut all: Vec<u64> = in_a.iter().chain(&in_b).copied().collect();
        all.sort_unstable();
        (all == (1..=want).collect::<Vec<_>>(), in_a, in_b, all)
    };
    let wait_for = |want: u64| async move {
        for _ in 0..150 {
            if exported_once(want).0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, in_a, in_b, all) = exported_once(want);
        panic!("not exported once up to {want}: a {in_a:?}, b {in_b:?}, all {all:?}");
    };

    for _ in 0..15 {
        wrap_on(a.url.clone()).await;
        wrap_on(b.url.clone()).await;
    }
    let want = audit_head(&a).await;
    wait_for(want).await;
    let (_, in_a, in_b, _) = exported_once(want);
    assert!(
        in_a.is_empty() != in_b.is_empty(),
        "one holder exports: a has {}, b has {}",
        in_a.len(),
        in_b.len()
    );

    // Each server's /metrics says which one holds the sink.
    for (url, holds) in [(&a.url, !in_a.is_empty()), (&b.url, !in_b.is_empty())] {
        let text = http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let held = sample(
            &text,
            "keyward_audit_export_lease_held",
            &[("sink", "jsonl:shared")],
        );
        assert_eq!(held, Some(if holds { 1.0 } else { 0.0 }), "{url}");
    }

    // The holder stops; the other server takes the sink over once the lease lapses and goes on
    // after the last event the holder exported.
    let survivor = if in_a.is_empty() {
        b.shutdown().await.unwrap();
        a.url.clone()
    } else {
        a.stop().await;
        b.url.clone()
    };
    for _ in 0..10 {
        wrap_on(survivor.clone()).await;
    }
    let want2 = audit_head(&a).await;
    assert!(want2 >= want + 10);
    wait_for(want2).await;
    let (_, in_a2, in_b2, _) = exported_once(want2);
    assert!(
        !in_a2.is_empty() && !in_b2.is_empty(),
        "both files hold part of the trail after the takeover"
    );
    if !in_a.is_empty() {
        a.stop().await;
    }
}

/// Accepted batches: the signature header and the body.
type Batches = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver: answers 503 while `down`, records every batch it accepts with its
/// signature header.
#[derive(Clone, Default)]
struct Receiver {
    down: Arc<Mutex<bool>>,
    batches: Batches,
    refused: Arc<Mutex<u32>>,
}

async fn receive(
    axum::extract::State(r): axum::extract::State<Receiver>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    if *r.down.lock().unwrap() {
        *r.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let sig = headers
        .get("x-keyward-signature")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    r.batches.lock().unwrap().push((sig, body.to_vec()));
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn a_webhook_that_is_down_for_a_while_then_receives_every_event() {
    let receiver = Receiver::default();
    *receiver.down.lock().unwrap() = true;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("hook.secret");
    std::fs::write(&secret_file, "hook-secret\n").unwrap();
    let sf = secret_file.clone();
    let ts = TestServer::start_with(move |c| {
        c.audit.export_poll_ms = 50;
        c.audit
            .webhook
            .push(keyward_runtime::config::WebhookSinkSection {
                name: "hook".into(),
                url: format!("http://{hook_addr}/hook"),
                secret_file: Some(sf),
                secret_env: None,
                batch: 4,
                timeout_ms: 2000,
            });
    })
    .await;
    let key = ts.create_root_key("hooked").await;
    for _ in 0..10 {
        let (s, _) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        // The API never waits for the sink.
        assert_eq!(s, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(*receiver.refused.lock().unwrap() >= 2, "the sink retried");
    assert!(receiver.batches.lock().unwrap().is_empty());
    *receiver.down.lock().unwrap() = false;
    for _ in 0..3 {
        ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
    }
    let head = audit_head(&ts).await as i64;
    let mut got = Vec::new();
    for _ in 0..150 {
        got = receiver
            .batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| {
                serde_json::from_slice::<Vec<Value>>(body)
                    .unwrap()
                    .into_iter()
                    .map(|e| e["seq"].as_u64().unwrap())
            })
            .collect();
        if got.last() == Some(&(head as u64)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        got,
        (1..=head as u64).collect::<Vec<_>>(),
        "every event, in order, once"
    );
    // Every batch is signed like every outbound webhook: `t=<unix seconds>,v1=<HMAC-SHA256 of
    // "t.body">` with the shared secret, within a few minutes of now; a changed body fails.
    let secret = base64::engine::general_purpose::STANDARD.encode("hook-secret");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (sig, body) in receiver.batches.lock().unwrap().iter() {
        assert!(sig.starts_with("t="), "{sig}");
        keyward_api::events::verify_signature(&secret, sig, body, now, 300).unwrap();
        let mut changed = body.clone();
        changed.push(b' ');
        assert!(keyward_api::events::verify_signature(&secret, sig, &changed, now, 300).is_err());
        assert!(
            keyward_api::events::verify_signature(&secret, sig, body, now + 3600, 300).is_err()
        );
        assert!(serde_json::from_slice::<Vec<Value>>(body).unwrap().len() <= 4);
    }
}

/// Requests a receiver saw, by path.
type Hits = Arc<Mutex<Vec<String>>>;

/// Starts a receiver on loopback: `/hook` answers 307 to `/target`, which answers 204; every
/// request is recorded by path.
async fn redirecting_receiver() -> (std::net::SocketAddr, Hits) {
    let hits = Hits::default();
    let (h1, h2) = (hits.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(move || async move {
                h1.lock().unwrap().push("/hook".into());
                (StatusCode::TEMPORARY_REDIRECT, [("location", "/target")])
            }),
        )
        .route(
            "/target",
            axum::routing::post(move || async move {
                h2.lock().unwrap().push("/target".into());
                StatusCode::NO_CONTENT
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

/// A server exporting its audit trail to `url`, with private addresses allowed or not.
async fn exporting_to(url: String, allow_private: bool) -> (TestServer, tempfile::TempDir) {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("hook.secret");
    std::fs::write(&secret_file, "hook-secret\n").unwrap();
    let ts = TestServer::start_with(move |c| {
        c.audit.export_poll_ms = 50;
        c.webhooks.allow_private_addresses = allow_private;
        c.audit
            .webhook
            .push(keyward_runtime::config::WebhookSinkSection {
                name: "guarded".into(),
                url,
                secret_file: Some(secret_file),
                secret_env: None,
                batch: 10,
                timeout_ms: 2000,
            });
    })
    .await;
    (ts, secret_dir)
}

/// The sink's failed attempts, from `/metrics`.
async fn export_failures(ts: &TestServer) -> f64 {
    let text = ts
        .http
        .get(format!("{}/metrics", ts.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sample(
        &text,
        "keyward_audit_export_failures_total",
        &[("sink", "webhook:guarded")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn the_audit_webhook_does_not_follow_a_redirect() {
    let (addr, hits) = redirecting_receiver().await;
    let (ts, _secret) = exporting_to(format!("http://{addr}/hook"), true).await;
    ts.create_root_key("redirected").await;
    for _ in 0..100 {
        if export_failures(&ts).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        export_failures(&ts).await >= 2.0,
        "a redirect is a failure, retried"
    );
    let hits = hits.lock().unwrap().clone();
    assert!(hits.iter().any(|p| p == "/hook"), "{hits:?}");
    assert!(!hits.iter().any(|p| p == "/target"), "followed: {hits:?}");
}

#[tokio::test]
async fn the_audit_webhook_reaches_no_private_address_unless_allowed() {
    let (addr, hits) = redirecting_receiver().await;
    let (ts, _secret) = exporting_to(format!("http://{addr}/target"), false).await;
    ts.create_root_key("guarded").await;
    for _ in 0..100 {
        if export_failures(&ts).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(export_failures(&ts).await >= 2.0, "refused, retried");
    assert!(
        hits.lock().unwrap().is_empty(),
        "a loopback receiver was reached"
    );
    // The same sink with private addresses allowed delivers.
    let (ts, _secret) = exporting_to(format!("http://{addr}/target"), true).await;
    ts.create_root_key("allowed").await;
    for _ in 0..100 {
        if !hits.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!hits.lock().unwrap().is_empty(), "delivered once allowed");
}

#[tokio::test]
async fn events_stored_before_the_chain_are_linked_at_open() {
    if common::sqlite_file_only("events_stored_before_the_chain_are_linked_at_open") {
        return;
    }
    let mut ts = TestServer::start().await;
    traffic(&ts).await;
    ts.stop().await;
    {
        // As an older Keyward left them: no hashes, no checkpoints.
        let db = rusqlite::Connection::open(ts.db_path()).unwrap();
        db.execute_batch(
            "UPDATE audit_events SET prev_hash = NULL, hash = NULL; DELETE FROM audit_checkpoints;",
        )
        .unwrap();
    }
    let mut ts = ts.restart().await;
    let key = ts.create_root_key("after-upgrade").await;
    ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
    ts.stop().await;
    let report = verify(&ts).await;
    assert!(report.first_break.is_none(), "{report:?}");
    assert!(report.events >= 10);
}

#[tokio::test]
async fn a_chain_rewritten_with_recomputed_hashes_fails_the_signed_checkpoint() {
    use keyward_core::{Outcome, chain_hash};
    let mut ts = TestServer::start().await;
    traffic(&ts).await;
    ts.stop().await;
    let before = verify(&ts).await;
    assert!(before.first_break.is_none(), "{before:?}");
    let head = before.head.unwrap().0;
    // The forger turns event 3 into a success and recomputes every later hash: each row then
    // matches its hash and links to the one before it.
    let events = ts
        .stores()
        .await
        .trail
        .audit_events_after(0, 5000)
        .await
        .unwrap();
    let db = ts.db().await;
    // A blob literal in the database's dialect.
    let blob = |b: &[u8]| {
        if common::on_postgres() {
            format!("'\\x{}'::bytea", common::hex(b))
        } else {
            format!("x'{}'", common::hex(b))
        }
    };
    let mut prev = keyward_core::GENESIS_HASH;
    for mut e in events {
        if e.seq == 3 {
            e.event.outcome = Outcome::Success;
            e.event.reason_code = 200;
            db.execute(
                "UPDATE audit_events SET outcome = 'success', reason_code = 200 WHERE seq = 3",
                &[],
            )
            .await;
        }
        let hash = chain_hash(e.seq, &prev, &e.event);
        let statement = format!(
            "UPDATE audit_events SET prev_hash = {}, hash = {} WHERE seq = {}",
            blob(&prev),
            blob(&hash),
            e.seq
        );
        db.execute(&statement, &[]).await;
        prev = hash;
    }
    drop(db);
    let after = verify(&ts).await;
    let b = after.first_break.expect("the rewrite is caught");
    assert_eq!(b.kind, keyward_core::BreakKind::Altered, "{b:?}");
    assert!(b.seq <= head, "{b:?}");
    assert!(b.detail.contains("checkpoint"), "{b:?}");
}

/// `GET /api/v2/audit_events/verification`.
async fn verification(ts: &TestServer) -> Value {
    let (s, v) = ts
        .call(Method::GET, "/api/v2/audit_events/verification", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn the_api_verifies_the_newest_checkpoint_and_the_chain_after_it() {
    let ts = TestServer::start_with(|c| {
        c.audit.checkpoint_every_events = 3;
        c.audit.checkpoint_interval_secs = 3600;
    })
    .await;
    traffic(&ts).await;
    let db = ts.db().await;
    for _ in 0..50 {
        if db.int("SELECT COUNT(*) FROM audit_checkpoints", &[]).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let v = verification(&ts).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert!(v.get("firstBreak").is_none(), "{v}");
    let cp = &v["checkpoint"];
    assert_eq!(cp["valid"], true, "{v}");
    let (cp_seq, head) = (cp["seq"].as_u64().unwrap(), v["headSeq"].as_u64().unwrap());
    assert_eq!(v["verifiedFrom"].as_u64(), Some(cp_seq), "{v}");
    assert!(head >= cp_seq, "{v}");
    assert!(v["eventsChecked"].as_u64().unwrap() > head - cp_seq, "{v}");
    assert_eq!(v["headHash"].as_str().unwrap().len(), 64, "{v}");
    // The check is itself in the trail, as a read of it.
    let (s, e) = events(&ts, "?action=kms.auditevents.verify").await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert!(!e["resources"].as_array().unwrap().is_empty(), "{e}");
}

#[tokio::test]
async fn the_api_names_an_event_altered_after_the_newest_checkpoint() {
    let ts = TestServer::start_with(|c| {
        c.audit.checkpoint_every_events = 1_000_000;
        c.audit.checkpoint_interval_secs = 3600;
    })
    .await;
    traffic(&ts).await;
    assert_eq!(verification(&ts).await["ok"], true);
    // A refused unwrap turned into a success after the fact (its hash left as it was).
    let head = audit_head(&ts).await;
    ts.db()
        .await
        .execute(
            &format!("UPDATE audit_events SET reason_code = 299 WHERE seq = {head}"),
            &[],
        )
        .await;
    let v = verification(&ts).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["firstBreak"]["kind"], "altered", "{v}");
    assert_eq!(v["firstBreak"]["seq"].as_u64(), Some(head), "{v}");
}

#[tokio::test]
async fn only_managers_verify_the_audit_chain() {
    let ts = TestServer::start().await;
    let (_, _, token) = ts.identity_with("user", &["Writer"]).await;
    let (s, body) = ts
        .call_as(
            Method::GET,
            "/api/v2/audit_events/verification",
            None,
            Some(&token),
            Some(&ts.instance),
        )
        .await;
    assert_kp_error(s, &body, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
}

/// The sum of the `aggregated.count` of `events`, and how many of them are not aggregated.
fn aggregated_sum(events: &Value) -> (u64, usize) {
    let list = events["resources"].as_array().unwrap();
    let sum = list
        .iter()
        .filter_map(|e| e["aggregated"]["count"].as_u64())
        .sum();
    let single = list
        .iter()
        .filter(|e| e.get("aggregated").is_none())
        .count();
    (sum, single)
}

/// See: issue 20. With `[audit] aggregate_crypto`, successful wraps and unwraps are recorded as
/// aggregated events whose counts sum to the requests made (marked `aggregated` in the API view),
/// within about a second; a refusal is its own event, recorded with its request; counts still
/// held at shutdown are recorded by it; the chain verifies.
#[tokio::test]
async fn aggregated_crypto_events_count_every_success_and_keep_refusals_single() {
    let mut ts = TestServer::start_with(|c| c.audit.aggregate_crypto = true).await;
    let key = ts.create_root_key("aggregated").await;
    let n = 25;
    let mut ct = String::new();
    for _ in 0..n {
        let (s, w) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(s, StatusCode::OK, "{w}");
        ct = w["ciphertext"].as_str().unwrap().to_owned();
    }
    let (s, _) = ts.action(&key, "unwrap", json!({"ciphertext": ct})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = ts
        .action(&key, "unwrap", json!({"ciphertext": ct, "aad": ["wrong"]}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // The refusal is in the trail at once, one by one.
    let (_, failed) = events(&ts, &format!("?outcome=failure&keyId={key}")).await;
    assert_eq!(failed["metadata"]["totalCount"], 1, "{failed}");
    assert!(
        failed["resources"][0].get("aggregated").is_none(),
        "{failed}"
    );
    // The successes, within about a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let wraps = loop {
        let (s, wraps) = events(
            &ts,
            &format!("?action=kms.secrets.wrap&keyId={key}&limit=5000"),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{wraps}");
        if aggregated_sum(&wraps).0 == n {
            break wraps;
        }
        assert!(std::time::Instant::now() < deadline, "{wraps}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(aggregated_sum(&wraps).1, 0, "{wraps}");
    for e in wraps["resources"].as_array().unwrap() {
        assert_eq!(e["outcome"], "success", "{e}");
        assert_eq!(e["aggregated"]["windowSeconds"], 1, "{e}");
        assert!(e["target"]["keyVersion"].is_string(), "{e}");
        // The window's start: a whole second.
        let t = e["eventTime"].as_str().unwrap();
        assert!(!t.contains('.'), "{e}");
    }
    // Three more, then a shutdown, which records them.
    for _ in 0..3 {
        let (s, _) = ts.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(s, StatusCode::OK);
    }
    ts.stop().await;
    let rows = ts
        .db()
        .await
        .rows(
            "SELECT action, outcome, count FROM audit_events WHERE target = ?1",
            &[&key],
        )
        .await;
    let sum = |action: &str, outcome: &str| -> (u64, usize) {
        let of = rows
            .iter()
            .filter(|r| r[0].as_deref() == Some(action) && r[1].as_deref() == Some(outcome));
        (
            of.clone()
                .filter_map(|r| r[2].as_deref().map(|c| c.parse::<u64>().unwrap()))
                .sum(),
            of.filter(|r| r[2].is_none()).count(),
        )
    };
    assert_eq!(sum("kms.secrets.wrap", "success"), (n + 3, 0), "{rows:?}");
    assert_eq!(sum("kms.secrets.unwrap", "success"), (1, 0), "{rows:?}");
    assert_eq!(sum("kms.secrets.unwrap", "failure"), (0, 1), "{rows:?}");
    let report = verify(&ts).await;
    assert!(report.first_break.is_none(), "{report:?}");
    assert_eq!(
        report.last_good_checkpoint,
        report.head.map(|h| h.0),
        "{report:?}"
    );
}
