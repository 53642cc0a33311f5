//! Several `keyward serve` nodes on one PostgreSQL database, each with its own data directory:
//! real processes, a throwaway PostgreSQL cluster, and the first node's software keystore copied
//! to the others (as README "Running several nodes" says).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FAST_LIFECYCLE, Proc, api, kill9, spawn_with};
use serde_json::{Value, json};

const DEK_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The node config: the test lifecycle and the PostgreSQL store at `url`. Root keys stay cached
/// for a minute: a change made on another node reaches this one by notification, not by expiry.
fn node_config(url: &str) -> String {
    format!(
        "key_cache_ttl_ms = 60000\n{FAST_LIFECYCLE}\n[store]\nbackend = \"postgres\"\n\
         url = \"{url}\"\npool_size = 8\n"
    )
}

/// A second node's data directory: the first node's keystore and nothing else.
fn join_dir(first: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        first.join("keystore.json"),
        dir.path().join("keystore.json"),
    )
    .unwrap();
    dir
}

#[test]
fn a_key_made_on_one_node_unwraps_on_the_other_and_a_disable_reaches_it_within_a_second() {
    let url = keyward_test::postgres::cluster().fresh_database();
    let dir_a = tempfile::tempdir().unwrap();
    let a = spawn_with(dir_a.path(), &node_config(&url));
    assert!(
        !dir_a.path().join("keyward.db").exists(),
        "nothing of the store in the data directory"
    );
    let dir_b = join_dir(dir_a.path());
    let b = spawn_with(dir_b.path(), &node_config(&url));
    assert!(
        !dir_b.path().join("bootstrap.json").exists(),
        "a node joining an initialized database does not bootstrap again"
    );

    let on_a = api(dir_a.path(), &a.url);
    let on_b = api(dir_a.path(), &b.url);
    let id = on_a.create_root_key("shared");
    let (st, w) = on_a.action(&id, "wrap", json!({"plaintext": DEK_B64}));
    assert_eq!(st, 200, "{w}");
    let (st, u) = on_b.action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);

    // Disabled on A: refused on B within a second, though B cached the key for a minute a
    // moment ago (the change is announced to every node at commit).
    let (st, _) = on_a.action(&id, "disable", json!({}));
    assert_eq!(st, 204);
    let disabled_at = Instant::now();
    loop {
        let (st, body) = on_b.action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}));
        if (400..500).contains(&st) && st != 401 {
            break;
        }
        assert_eq!(st, 200, "{body}");
        assert!(
            disabled_at.elapsed() < Duration::from_millis(1200),
            "node B still unwraps with a key disabled on node A"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen_after = disabled_at.elapsed();
    eprintln!("disable on A refused on B after {seen_after:?}");

    // Both nodes list the same keys; the audit trail holds both nodes' events, one chain.
    let (_, key) = on_b.key(&id);
    assert_eq!(key["resources"][0]["state"], 2, "{key}");
    kill9(b);
    kill9(a);
}

#[test]
fn under_load_a_node_killed_with_sigkill_loses_nothing_acknowledged_and_the_other_serves_on() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let url = keyward_test::postgres::cluster().fresh_database();
    let dir_a = tempfile::tempdir().unwrap();
    let a = spawn_with(dir_a.path(), &node_config(&url));
    let dir_b = join_dir(dir_a.path());
    let b = spawn_with(dir_b.path(), &node_config(&url));
    let on_b = Arc::new(api(dir_a.path(), &b.url));
    let root = on_b.create_root_key("served-on");
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));

    // Four writers on A: every key A acknowledges is recorded.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let on_a = api(dir_a.path(), &a.url);
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let r = on_a
                        .req(reqwest::Method::POST, "/api/v2/keys")
                        .json(&json!({"resources": [{"name": format!("w{w}-{i}")}]}))
                        .send();
                    match r {
                        Ok(r) if r.status().as_u16() == 201 => {
                            let id = r.json::<Value>().unwrap()["resources"][0]["id"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            acked.lock().unwrap().push(id);
                        }
                        // The node died under this request: not acknowledged.
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // One client wraps on B the whole time: not one failure.
    let wrapper = {
        let (stop, on_b, root) = (stop.clone(), on_b.clone(), root.clone());
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (st, body) = on_b.action(&root, "wrap", json!({"plaintext": DEK_B64}));
                assert_eq!(st, 200, "node B failed while A died: {body}");
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    kill9(a);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let wraps = wrapper.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "{} keys acknowledged by A before it was killed; {wraps} wraps on B",
        acked.len()
    );
    assert!(acked.len() >= 10, "too little load: {}", acked.len());
    for id in &acked {
        let (st, key) = on_b.key(id);
        assert_eq!(st, 200, "a key A acknowledged is lost: {key}");
    }
    kill9(b);
}

#[test]
fn a_node_whose_keystore_cannot_verify_the_database_refuses_to_start() {
    let url = keyward_test::postgres::cluster().fresh_database();
    let dir_a = tempfile::tempdir().unwrap();
    let a: Proc = spawn_with(dir_a.path(), &node_config(&url));
    // Another data directory with no keystore: a new master key could unwrap nothing the first
    // node stored, so none is made (issue 18, item 19).
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::write(dir_b.path().join("keyward.toml"), node_config(&url)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir_b.path())
        .arg("--config")
        .arg(dir_b.path().join("keyward.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("same master key"), "{err}");
    assert!(err.contains("keystore.json"), "{err}");
    assert!(!dir_b.path().join("keystore.json").exists());
    kill9(a);
}

#[test]
fn an_unreachable_database_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let gone = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5432 user=postgres dbname=keyward connect_timeout=2",
        gone.path().display()
    );
    std::fs::write(dir.path().join("keyward.toml"), node_config(&url)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(dir.path().join("keyward.toml"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to PostgreSQL"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn while_postgresql_is_down_requests_get_503_in_bounded_time_and_the_node_recovers_by_itself() {
    // A cluster of its own: this test stops it.
    let pg = keyward_test::postgres::Cluster::start(&[]);
    let url = pg.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let node = spawn_with(dir.path(), &node_config(&url));
    let on = api(dir.path(), &node.url);
    let id = on.create_root_key("through-a-restart");
    let (st, w) = on.action(&id, "wrap", json!({"plaintext": DEK_B64}));
    assert_eq!(st, 200, "{w}");

    // Clients logged in while the database is up (logging in needs it too).
    let clients: Vec<_> = (0..8).map(|_| api(dir.path(), &node.url)).collect();
    pg.stop_server();
    // Writes need the database: refused with 503 and Key Protect's error body, never a 500,
    // never a hang.
    for _ in 0..3 {
        let started = Instant::now();
        let r = on
            .req(reqwest::Method::POST, "/api/v2/keys")
            .json(&json!({"resources": [{"name": "while-down"}]}))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().unwrap_or(Value::Null);
        assert_eq!(status, 503, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{:?}",
            started.elapsed()
        );
        assert!(
            body["resources"][0]["errorMsg"].is_string()
                || body["resources"][0]["reasons"].is_array(),
            "{body}"
        );
    }

    // Under load: eight clients at once, each answered 503 in bounded time.
    let burst: Vec<_> = clients
        .into_iter()
        .map(|on| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let r = on
                    .req(reqwest::Method::POST, "/api/v2/keys")
                    .json(&json!({"resources": [{"name": "burst"}]}))
                    .timeout(Duration::from_secs(30))
                    .send()
                    .unwrap();
                (r.status().as_u16(), started.elapsed())
            })
        })
        .collect();
    for t in burst {
        let (status, took) = t.join().unwrap();
        assert_eq!(status, 503);
        assert!(took < Duration::from_secs(12), "{took:?}");
    }

    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (st, body) = on.action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}));
        if st == 200 {
            assert_eq!(body["plaintext"], DEK_B64);
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {st} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let made = on.create_root_key("after-the-restart");
    assert_eq!(on.key(&made).0, 200);
    kill9(node);
}

fn keyward(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_sqlite_deployment_moves_to_postgresql_with_its_keys_and_a_verifiable_audit_trail() {
    // A deployment on SQLite, with keys, a rotation, a wrap and audit events.
    let old = tempfile::tempdir().unwrap();
    let p = spawn_with(old.path(), FAST_LIFECYCLE);
    let before = api(old.path(), &p.url);
    let ids: Vec<String> = (0..5)
        .map(|i| before.create_root_key(&format!("moved-{i}")))
        .collect();
    let (st, _) = before.action(&ids[0], "rotate", json!({}));
    assert_eq!(st, 204);
    let (st, w) = before.action(&ids[0], "wrap", json!({"plaintext": DEK_B64}));
    assert_eq!(st, 200, "{w}");
    common::stop(p);

    let url = keyward_test::postgres::cluster().fresh_database();
    let config = old.path().join("node.toml");
    std::fs::write(&config, node_config(&url)).unwrap();
    let dir_arg = old.path().to_str().unwrap();
    let config_arg = config.to_str().unwrap();
    let out = keyward(&[
        "store",
        "migrate",
        "--from-data-dir",
        dir_arg,
        "--to-config",
        config_arg,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("intact"), "{stdout}");

    // A second run is refused: the data directory was migrated already.
    let again = keyward(&[
        "store",
        "migrate",
        "--from-data-dir",
        dir_arg,
        "--to-config",
        config_arg,
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already migrated"));

    // A node on PostgreSQL (the old keystore copied) serves the moved keys: the old ciphertext
    // unwraps, the rotation is there, the old administrator API key still works.
    let node_dir = join_dir(old.path());
    let node = spawn_with(node_dir.path(), &node_config(&url));
    let after = api(old.path(), &node.url);
    let (st, u) = after.action(&ids[0], "unwrap", json!({"ciphertext": w["ciphertext"]}));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);
    for id in &ids {
        assert_eq!(after.key(id).0, 200);
    }
    let versions: Value = after
        .req(
            reqwest::Method::GET,
            &format!("/api/v2/keys/{}/versions?totalCount=true", ids[0]),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(versions["metadata"]["totalCount"], 2);
    // New events extend the moved chain, which `audit verify` walks in PostgreSQL.
    after.create_root_key("made-after-the-move");
    common::stop(node);
    let verify = keyward(&[
        "audit",
        "verify",
        "--config",
        config_arg,
        "--data-dir",
        node_dir.path().to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&verify.stdout).unwrap_or(Value::Null);
    assert!(verify.status.success(), "{report} {verify:?}");
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["events"].as_u64().unwrap() > 10, "{report}");
}

#[test]
fn migrating_into_a_database_that_holds_data_is_refused() {
    let url = keyward_test::postgres::cluster().fresh_database();
    let used = tempfile::tempdir().unwrap();
    let n = spawn_with(used.path(), &node_config(&url));
    kill9(n);
    let old = tempfile::tempdir().unwrap();
    let p = spawn_with(old.path(), FAST_LIFECYCLE);
    common::stop(p);
    let config = old.path().join("node.toml");
    std::fs::write(&config, node_config(&url)).unwrap();
    let out = keyward(&[
        "store",
        "migrate",
        "--from-data-dir",
        old.path().to_str().unwrap(),
        "--to-config",
        config.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
}

#[test]
fn after_a_failover_to_a_synchronous_standby_the_node_follows_and_nothing_acknowledged_is_lost() {
    use keyward_test::postgres::Cluster;
    let primary = Cluster::start(&[]);
    let url = primary.fresh_database();
    let db = url.rsplit("dbname=").next().unwrap().to_owned();
    let standby = primary.standby(&[]);
    primary.psql(
        "postgres",
        "ALTER SYSTEM SET synchronous_standby_names = '*'",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(20);
    while primary
        .psql("postgres", "SELECT sync_state FROM pg_stat_replication")
        .trim()
        != "sync"
    {
        assert!(
            Instant::now() < deadline,
            "the standby never became synchronous"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Both hosts in the URL: whichever accepts writes is the primary.
    let both = format!(
        "host={},{} port=5432,5432 user=postgres dbname={db} target_session_attrs=read-write \
         connect_timeout=2",
        primary.dir.display(),
        standby.dir.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let node = spawn_with(dir.path(), &node_config(&both));
    let on = api(dir.path(), &node.url);
    let made: Vec<String> = (0..10)
        .map(|i| on.create_root_key(&format!("before-failover-{i}")))
        .collect();
    let (st, w) = on.action(&made[0], "wrap", json!({"plaintext": DEK_B64}));
    assert_eq!(st, 200, "{w}");
    let (st, _) = on.action(&made[9], "rotate", json!({}));
    assert_eq!(st, 204);

    // The primary crashes; the standby is promoted; the node finds it by itself.
    let t0 = Instant::now();
    primary.stop_server();
    standby.promote();
    eprintln!("failover: standby promoted after {:?}", t0.elapsed());
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let t = Instant::now();
        let r = on
            .req(reqwest::Method::POST, "/api/v2/keys")
            .json(&json!({"resources": [{"name": "after-failover"}]}))
            .timeout(Duration::from_secs(20))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        eprintln!("failover: create answered {status} in {:?}", t.elapsed());
        if status == 201 {
            break r.json::<Value>().unwrap();
        }
        assert!(status == 503, "during a failover: {status}");
        assert!(
            Instant::now() < deadline,
            "the node never reached the new primary"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(after["resources"][0]["id"].is_string());
    eprintln!(
        "failover: writes accepted again {:?} after the crash",
        t0.elapsed()
    );
    for id in &made {
        assert_eq!(
            on.key(id).0,
            200,
            "acknowledged key {id} lost in the failover"
        );
    }
    let (st, u) = on.action(&made[0], "unwrap", json!({"ciphertext": w["ciphertext"]}));
    assert_eq!(st, 200, "{u}");
    let versions: Value = on
        .req(
            reqwest::Method::GET,
            &format!("/api/v2/keys/{}/versions?totalCount=true", made[9]),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        versions["metadata"]["totalCount"], 2,
        "the acknowledged rotation"
    );
    kill9(node);
}

#[test]
fn two_nodes_rotate_each_due_key_once_per_period() {
    const MONTH_SECS: u64 = 3;
    let url = keyward_test::postgres::cluster().fresh_database();
    let config = format!(
        "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n\
         rotation_month_secs = {MONTH_SECS}\n[scheduler]\ntick_secs = 1\n\
         [store]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\n"
    );
    let dir_a = tempfile::tempdir().unwrap();
    let a = spawn_with(dir_a.path(), &config);
    let dir_b = join_dir(dir_a.path());
    let b = spawn_with(dir_b.path(), &config);
    let on_a = api(dir_a.path(), &a.url);
    let ids: Vec<String> = (0..10)
        .map(|i| {
            let r = on_a
                .req(reqwest::Method::POST, "/api/v2/keys_with_policy_overrides")
                .json(&json!({
                    "metadata": {"collectionType": "application/vnd.ibm.kms.key+json",
                                 "collectionTotal": 1},
                    "resources": [{"name": format!("due-{i}"),
                                   "rotation": {"enabled": true, "interval_month": 1},
                                   "dualAuthDelete": {"enabled": false}}],
                }))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            r.json::<Value>().unwrap()["resources"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // Both schedulers tick every second for a bit more than one period.
    std::thread::sleep(Duration::from_secs(MONTH_SECS + 3));
    kill9(a);
    kill9(b);

    let dir_c = join_dir(dir_a.path());
    let c = spawn_with(dir_c.path(), &node_config(&url));
    let on_c = api(dir_a.path(), &c.url);
    for id in &ids {
        let versions: Value = on_c
            .req(reqwest::Method::GET, &format!("/api/v2/keys/{id}/versions"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let mut created: Vec<time::OffsetDateTime> = versions["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                time::OffsetDateTime::parse(
                    v["creationDate"].as_str().unwrap(),
                    &time::format_description::well_known::Rfc3339,
                )
                .unwrap()
            })
            .collect();
        created.sort();
        assert!(created.len() >= 2, "{id} was never rotated: {versions}");
        // Two nodes rotating the same due key would make two versions moments apart.
        for pair in created.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= time::Duration::milliseconds((MONTH_SECS * 1000 - 500) as i64),
                "{id} rotated twice in one period ({gap}): {versions}"
            );
        }
    }
    kill9(c);
}

#[test]
fn revoking_a_service_on_one_node_cuts_it_off_on_the_other_at_once() {
    let url = keyward_test::postgres::cluster().fresh_database();
    // Grants kept for the longest allowed (a second): the revocation must arrive by
    // notification, well before that.
    let config = format!("access_cache_ttl_ms = 1000\n{}", node_config(&url));
    let dir_a = tempfile::tempdir().unwrap();
    let a = spawn_with(dir_a.path(), &config);
    let dir_b = join_dir(dir_a.path());
    let b = spawn_with(dir_b.path(), &config);
    let boot: Value = serde_json::from_str(
        &std::fs::read_to_string(dir_a.path().join("bootstrap.json")).unwrap(),
    )
    .unwrap();
    let (admin_key, instance) = (
        boot["api_key"].as_str().unwrap().to_owned(),
        boot["instance_id"].as_str().unwrap().to_owned(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = keyward_client::Client::new(&a.url, &admin_key, &instance, None).unwrap();
        let ident = admin
            .create_identity(&keyward_client::NewIdentity {
                kind: "service".into(),
                name: "streams service-1".into(),
                service_name: Some("streams".into()),
                service_instance: Some("service-1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let key = admin
            .create_api_key(&ident.iam_id, "streams")
            .await
            .unwrap();
        let authorize = || async {
            admin
                .create_authorization(&keyward_client::NewAuthorization {
                    source: keyward_client::AuthorizationSource {
                        service_name: "streams".into(),
                        service_instance: None,
                    },
                    target: keyward_client::Resource {
                        instance_id: Some(instance.clone()),
                        ..Default::default()
                    },
                    roles: vec!["Reader".into()],
                    delegation: false,
                    dependents: vec![],
                })
                .await
                .unwrap()
                .id
        };
        let authorization = authorize().await;
        let root = admin
            .create_key(keyward_api::KeyCreate {
                name: "streams-root".into(),
                extractable: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        // The service works through node B.
        let service = keyward_client::Client::new(&b.url, &key.apikey, &instance, None).unwrap();
        service.wrap(&root.id, None, vec![]).await.unwrap();

        // Each revocation made on A: the service is refused on B within a fraction of a second.
        let refused_within = |what: &'static str| {
            let service = &service;
            let root = root.id.clone();
            async move {
                let t = Instant::now();
                while service.wrap(&root, None, vec![]).await.is_ok() {
                    assert!(
                        t.elapsed() < Duration::from_millis(900),
                        "{what} on node A not honoured on node B"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                eprintln!("{what} on A refused on B after {:?}", t.elapsed());
            }
        };
        admin.delete_authorization(&authorization).await.unwrap();
        refused_within("authorization removal").await;
        authorize().await;
        // A grant made on A applies on B within B's access cache lifetime (500 ms): B may
        // still hold the "no grants" it read while refusing the service just above.
        let t = Instant::now();
        while let Err(e) = service.wrap(&root.id, None, vec![]).await {
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "re-authorized, still {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        admin.lock_api_key(&key.info.id, true).await.unwrap();
        refused_within("API key lock").await;
    });
    kill9(b);
    kill9(a);
}
