//! The audit trail end to end, with real `keyward serve` processes and the real CLI:
//! `keyward audit verify` on a clean chain written by two servers sharing one data directory,
//! and on copies of it tampered in SQLite (an edited, deleted, inserted and swapped event, a
//! tail cut after a checkpoint), each caught and named; the same over archive segments and the
//! database's remaining rows with retention on (a segment deleted, swapped or altered); `keyward audit list`; and a scan of every
//! log line, exported line and audit row of a broad scenario for the secrets it used.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{FAST_LIFECYCLE, api, keyward, spawn, spawn_args, stop};
use reqwest::Method;
use serde_json::{Value, json};

const DEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn verify(dir: &Path) -> (i32, Value) {
    let (code, out, err) = keyward(&[
        "audit",
        "verify",
        "--json",
        "--data-dir",
        dir.to_str().unwrap(),
    ]);
    let v = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}\n{err}"));
    (code, v)
}

/// Creates a root key (`extractable: false`) named `name`: its id.
fn root_key(a: &common::Api, name: &str) -> String {
    let r = a
        .req(Method::POST, "/api/v2/keys")
        .json(&json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                      "resources": [{"name": name, "extractable": false}]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().unwrap()["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn wrap(a: &common::Api, key: &str) {
    let r = a
        .req(Method::POST, &format!("/api/v2/keys/{key}/actions/wrap"))
        .json(&json!({"plaintext": DEK}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A data directory whose audit trail was written by two servers at once, then shut down
/// cleanly (so the last checkpoint covers the head).
fn two_server_trail() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let first = spawn(dir.path());
    let a1 = api(dir.path(), &first.url);
    let second = spawn(dir.path());
    let a2 = api(dir.path(), &second.url);
    let key = root_key(&a1, "shared");
    std::thread::scope(|s| {
        for a in [&a1, &a2, &a1, &a2] {
            let key = &key;
            s.spawn(move || {
                for _ in 0..10 {
                    wrap(a, key);
                }
            });
        }
    });
    // `keyward audit list` over the API, with filters and JSON.
    let boot = dir.path().join("bootstrap.json");
    let (code, out, err) = keyward(&[
        "audit",
        "list",
        "--bootstrap",
        boot.to_str().unwrap(),
        "--url",
        &second.url,
        "--action",
        "kms.secrets.wrap",
        "--key-id",
        &key,
        "--limit",
        "5",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(page["metadata"]["totalCount"], 40, "{page}");
    assert_eq!(page["resources"].as_array().unwrap().len(), 5);
    let (code, out, _) = keyward(&[
        "audit",
        "list",
        "--bootstrap",
        boot.to_str().unwrap(),
        "--outcome",
        "maybe",
    ]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    stop(first);
    stop(second);
    dir
}

/// A copy of the data directory with `sql` applied to its database.
fn tampered(src: &Path, sql: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["keyward.db", "keyward.db-wal", "keystore.json"] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
    }
    let db = rusqlite::Connection::open(dir.path().join("keyward.db")).unwrap();
    db.execute_batch(sql).unwrap();
    drop(db);
    dir
}

fn id_at(dir: &Path, seq: i64) -> String {
    let db = rusqlite::Connection::open(dir.join("keyward.db")).unwrap();
    db.query_row("SELECT id FROM audit_events WHERE seq = ?1", [seq], |r| {
        r.get(0)
    })
    .unwrap()
}

fn assert_break(dir: &Path, kind: &str, seq: i64, id: Option<&str>) {
    let (code, report) = verify(dir);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["ok"], false);
    let b = &report["firstBreak"];
    assert_eq!(b["kind"], kind, "{report}");
    assert_eq!(b["seq"], seq, "{report}");
    if let Some(id) = id {
        assert_eq!(b["id"], id, "{report}");
    }
    // The text form names it too.
    let (code, out, _) = keyward(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("{kind} at seq {seq}")), "{out}");
}

#[test]
fn audit_verify_passes_a_clean_chain_and_names_every_kind_of_tampering() {
    let trail = two_server_trail();
    let src = trail.path();
    let (code, report) = verify(src);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    let head = report["head"]["seq"].as_i64().unwrap();
    assert!(head >= 41, "{report}");
    assert_eq!(report["lastGoodCheckpoint"], head, "{report}");
    // With --config naming the data directory (and its custody section).
    let cfg = src.join("verify.toml");
    std::fs::write(&cfg, format!("data_dir = {:?}\n", src.to_str().unwrap())).unwrap();
    let (code, _, err) = keyward(&["audit", "verify", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");

    let k = 7;
    // Edit a field.
    let d = tampered(
        src,
        &format!("UPDATE audit_events SET outcome = 'failure', reason_code = 403 WHERE seq = {k}"),
    );
    assert_break(d.path(), "altered", k, Some(&id_at(src, k)));

    // Delete a row.
    let d = tampered(src, &format!("DELETE FROM audit_events WHERE seq = {k}"));
    assert_break(d.path(), "removed", k, None);

    // Insert a forged row (later rows moved up to make room), linked to its predecessor.
    let forged = "00000000-0000-4000-8000-00000000f0f0";
    let d = tampered(
        src,
        &format!(
            "UPDATE audit_events SET seq = seq + 1000000 WHERE seq >= {k};
             UPDATE audit_events SET seq = seq - 999999 WHERE seq >= 1000000;
             INSERT INTO audit_events (seq, id, time, action, outcome, reason_code, initiator,
                                       request_id, prev_hash, hash)
             SELECT {k}, '{forged}', time, 'kms.secrets.delete', 'success', 200, initiator,
                    request_id, hash, randomblob(32)
             FROM audit_events WHERE seq = {k} - 1;"
        ),
    );
    assert_break(d.path(), "inserted", k, Some(forged));

    // Swap two rows.
    let d = tampered(
        src,
        &format!(
            "UPDATE audit_events SET seq = -1 WHERE seq = {k};
             UPDATE audit_events SET seq = {k} WHERE seq = {k} + 1;
             UPDATE audit_events SET seq = {k} + 1 WHERE seq = -1;"
        ),
    );
    assert_break(d.path(), "reordered", k, Some(&id_at(src, k + 1)));

    // Cut the tail that a signed checkpoint covers.
    let d = tampered(
        src,
        &format!("DELETE FROM audit_events WHERE seq > {}", head - 3),
    );
    assert_break(d.path(), "removed", head - 2, None);

    // A checkpoint whose signature is not custody's (a rewrite with recomputed hashes is in
    // keyward-server's tests/audit.rs).
    let d = tampered(
        src,
        "UPDATE audit_checkpoints SET signature = randomblob(32)",
    );
    let (code, report) = verify(d.path());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["firstBreak"]["kind"], "bad_checkpoint", "{report}");

    // No database at all: a clear error, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = keyward(&[
        "audit",
        "verify",
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("keystore") || err.contains("database"),
        "{err}"
    );
}

/// A copy of the data directory with its audit archive, with `f` applied to the archive.
fn with_archive(src: &Path, f: impl FnOnce(&Path, &[std::path::PathBuf])) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["keyward.db", "keyward.db-wal", "keystore.json"] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
        }
    }
    let archive = dir.path().join("audit-archive");
    std::fs::create_dir(&archive).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(src.join("audit-archive")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, archive.join(p.file_name().unwrap())).unwrap();
        names.push(archive.join(p.file_name().unwrap()));
    }
    names.sort();
    f(&archive, &names);
    dir
}

/// See: issue 20. With `retain_events` set, `keyward audit verify` finds the archive in the
/// data directory and walks its segments and the database's remaining rows as one chain; a
/// segment deleted, swapped with another or altered is named.
#[test]
fn audit_verify_walks_the_archive_and_the_database_and_names_a_missing_swapped_or_altered_segment()
{
    let dir = tempfile::tempdir().unwrap();
    let server = common::spawn_with(
        dir.path(),
        &format!(
            "{FAST_LIFECYCLE}[audit]\nsegment_events = 20\nretain_events = 10\nprune_batch = 10\narchive_poll_ms = 50\n"
        ),
    );
    let a = api(dir.path(), &server.url);
    let key = root_key(&a, "archived");
    for _ in 0..120 {
        wrap(&a, &key);
    }
    let archive = dir.path().join("audit-archive");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&archive).map_or(0, |d| d.count()) < 5 {
        assert!(std::time::Instant::now() < deadline, "no archive segments");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop(server);
    let (code, report) = verify(dir.path());
    assert_eq!(code, 0, "{report}");
    assert!(
        report["archive"]["segments"].as_u64().unwrap() >= 5,
        "{report}"
    );
    assert!(report["databaseFirstSeq"].as_u64().unwrap() > 1, "{report}");
    let (code, out, _) = keyward(&[
        "audit",
        "verify",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("segments"), "{out}");

    // The second segment deleted.
    let d = with_archive(dir.path(), |_, s| std::fs::remove_file(&s[1]).unwrap());
    assert_break(d.path(), "removed", 21, None);
    // The first two aged out on purpose: missing from seq 1, unless `--aged-out` says so.
    let d = with_archive(dir.path(), |_, s| {
        std::fs::remove_file(&s[0]).unwrap();
        std::fs::remove_file(&s[1]).unwrap();
    });
    assert_break(d.path(), "removed", 1, None);
    let (code, out, _) = keyward(&[
        "audit",
        "verify",
        "--aged-out",
        "--json",
        "--data-dir",
        d.path().to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["archive"]["agedOutBefore"], 41, "{report}");
    // The second and third swapped.
    let d = with_archive(dir.path(), |a, s| {
        std::fs::rename(&s[1], a.join("x")).unwrap();
        std::fs::rename(&s[2], &s[1]).unwrap();
        std::fs::rename(a.join("x"), &s[2]).unwrap();
    });
    assert_break(d.path(), "reordered", 21, None);
    // The third's bytes changed.
    let d = with_archive(dir.path(), |_, s| {
        let mut b = std::fs::read(&s[2]).unwrap();
        let n = b.len() / 2;
        b[n] ^= 1;
        std::fs::write(&s[2], b).unwrap();
    });
    // Named at the segment, or at the event the flipped bit changed inside it.
    let (code, report) = verify(d.path());
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["firstBreak"]["kind"], "altered", "{report}");
    let seq = report["firstBreak"]["seq"].as_u64().unwrap();
    assert!((41..=60).contains(&seq), "{report}");
}

/// Every form a secret could leak in.
fn forms(name: &str, raw: &[u8]) -> Vec<(String, String)> {
    let mut out = vec![
        (format!("{name} base64"), B64.encode(raw)),
        (
            format!("{name} base64 (no padding)"),
            B64.encode(raw).trim_end_matches('=').to_owned(),
        ),
        (
            format!("{name} hex"),
            raw.iter().map(|b| format!("{b:02x}")).collect(),
        ),
        (
            format!("{name} HEX"),
            raw.iter().map(|b| format!("{b:02X}")).collect(),
        ),
    ];
    if let Ok(s) = std::str::from_utf8(raw)
        && s.len() >= 8
    {
        out.push((format!("{name} raw"), s.to_owned()));
    }
    out
}

#[test]
fn no_key_dek_api_key_or_token_appears_in_logs_exports_or_audit_rows() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    let config = format!(
        "{FAST_LIFECYCLE}[audit]\nexport_poll_ms = 50\n[[audit.jsonl]]\nname = \"grep\"\npath = {:?}\nmax_bytes = 4096\n",
        export.to_str().unwrap()
    );
    let server = spawn_args(
        dir.path(),
        &config,
        &[("RUST_LOG", "trace")],
        &["--log-format", "json"],
    );
    let a = api(dir.path(), &server.url);
    let boot: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap())
            .unwrap();
    let admin_key = boot["api_key"].as_str().unwrap().to_owned();
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("admin API key".into(), admin_key.clone().into_bytes()),
        ("admin token".into(), a.token.clone().into_bytes()),
    ];
    let kp = |r: reqwest::blocking::RequestBuilder, want: u16| -> Value {
        let r = r.send().unwrap();
        let status = r.status().as_u16();
        let v = r.json::<Value>().unwrap_or(Value::Null);
        assert_eq!(status, want, "{v}");
        v
    };
    let create = |resource: Value| -> String {
        let v = kp(
            a.req(Method::POST, "/api/v2/keys").json(&json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                "resources": [resource]})),
            201,
        );
        v["resources"][0]["id"].as_str().unwrap().to_owned()
    };

    // Imported root key and standard key with known material; a generated root key.
    let root_material = [0x5au8; 32];
    let std_material = b"a standard secret, 32 bytes long";
    secrets.push(("imported root material".into(), root_material.to_vec()));
    secrets.push(("standard key payload".into(), std_material.to_vec()));
    let imported = create(
        json!({"name": "imported-root", "payload": B64.encode(root_material), "extractable": false}),
    );
    let standard = create(
        json!({"name": "standard", "payload": B64.encode(std_material), "extractable": true}),
    );
    let generated = create(json!({"name": "generated", "extractable": false}));

    // Wrap, unwrap, rewrap with AAD; a wrong AAD; a generated DEK.
    let dek: Vec<u8> = (0u8..32)
        .map(|b| b.wrapping_mul(7).wrapping_add(3))
        .collect();
    secrets.push(("DEK".into(), dek.clone()));
    let action = |key: &str, act: &str, body: Value, want: u16| -> Value {
        kp(
            a.req(Method::POST, &format!("/api/v2/keys/{key}/actions/{act}"))
                .json(&body),
            want,
        )
    };
    let aad = json!(["tenant-1", "context-a"]);
    for key in [&imported, &generated] {
        let w = action(
            key,
            "wrap",
            json!({"plaintext": B64.encode(&dek), "aad": aad}),
            200,
        );
        let ct = w["ciphertext"].as_str().unwrap().to_owned();
        let u = action(key, "unwrap", json!({"ciphertext": ct, "aad": aad}), 200);
        assert_eq!(u["plaintext"], B64.encode(&dek));
        action(
            key,
            "unwrap",
            json!({"ciphertext": ct, "aad": ["wrong"]}),
            422,
        );
        let r = action(key, "rewrap", json!({"ciphertext": ct, "aad": aad}), 200);
        assert!(r["ciphertext"].is_string());
        let g = action(key, "wrap", json!({"aad": aad}), 200);
        let generated_dek = B64.decode(g["plaintext"].as_str().unwrap()).unwrap();
        secrets.push(("generated DEK".into(), generated_dek));
    }
    // Reading a standard key's payload.
    let got = kp(a.req(Method::GET, &format!("/api/v2/keys/{standard}")), 200);
    assert_eq!(got["resources"][0]["payload"], B64.encode(std_material));
    // A rotation of the imported key with new material.
    let rotated = [0xa5u8; 32];
    secrets.push(("rotation material".into(), rotated.to_vec()));
    action(
        &imported,
        "rotate",
        json!({"payload": B64.encode(rotated)}),
        204,
    );

    // Secure import through the CLI (import token, RSA-OAEP, AES-GCM).
    let secure_material = [0x3cu8; 32];
    secrets.push(("secure import material".into(), secure_material.to_vec()));
    let mf = dir.path().join("secure.b64");
    std::fs::write(&mf, B64.encode(secure_material)).unwrap();
    let boot_path = dir.path().join("bootstrap.json");
    let (code, _, err) = keyward(&[
        "keys",
        "import",
        "--bootstrap",
        boot_path.to_str().unwrap(),
        "--name",
        "secure",
        "--payload-file",
        mf.to_str().unwrap(),
        "--secure",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(&mf).unwrap();

    // An API key created through /iam/v1, its token, a refresh token exchange.
    let ident = kp(
        a.req(Method::POST, "/iam/v1/identities")
            .json(&json!({"kind": "user", "name": "grep user"})),
        201,
    );
    let iam_id = ident["iam_id"].as_str().unwrap();
    let key = kp(
        a.req(Method::POST, "/iam/v1/apikeys")
            .json(&json!({"iam_id": iam_id, "name": "grep key"})),
        201,
    );
    let user_key = key["apikey"].as_str().unwrap().to_owned();
    secrets.push(("user API key".into(), user_key.clone().into_bytes()));
    let tok: Value = a
        .http
        .post(format!("{}/identity/token", server.url))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", user_key.as_str()),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let access = tok["access_token"].as_str().unwrap().to_owned();
    let refresh = tok["refresh_token"].as_str().unwrap().to_owned();
    secrets.push(("user access token".into(), access.clone().into_bytes()));
    secrets.push(("refresh token".into(), refresh.clone().into_bytes()));
    let again: Value = a
        .http
        .post(format!("{}/identity/token", server.url))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let refreshed = again["access_token"].as_str().unwrap().to_owned();
    secrets.push(("refreshed access token".into(), refreshed.into_bytes()));

    // Failures: a wrong API key, a forged and a garbage bearer token.
    let wrong_key = format!("{}x", &user_key[..user_key.len() - 1]);
    secrets.push(("wrong API key".into(), wrong_key.clone().into_bytes()));
    let r = a
        .http
        .post(format!("{}/identity/token", server.url))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", wrong_key.as_str()),
        ])
        .send()
        .unwrap();
    assert!(r.status().is_client_error());
    let forged = format!("{}AAAA", &access[..access.len() - 4]);
    secrets.push(("forged token".into(), forged.clone().into_bytes()));
    for bad in [forged.as_str(), "not-a-token-at-all-but-long"] {
        let r = a
            .http
            .get(format!("{}/api/v2/keys", server.url))
            .bearer_auth(bad)
            .header("bluemix-instance", &a.instance)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Wait for the export to catch up with the audit head, then stop cleanly.
    let db_path = dir.path().join("keyward.db");
    let head: i64 = {
        let db = rusqlite::Connection::open(&db_path).unwrap();
        db.query_row("SELECT MAX(seq) FROM audit_events", [], |r| r.get(0))
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let exported = |dir: &Path| -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("export.jsonl")
            {
                all.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
        all
    };
    while !exported(dir.path()).contains(&format!("\"seq\":{head},")) {
        assert!(
            std::time::Instant::now() < deadline,
            "export did not catch up"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop(server);

    let logs = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    let mut log_lines = 0;
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
        log_lines += 1;
    }
    // At least one debug line per request made above.
    assert!(
        log_lines > 20,
        "verbose logs expected, got {log_lines} lines"
    );
    assert!(
        logs.contains("request_id"),
        "log lines carry the request id"
    );
    let exports = exported(dir.path());
    assert!(exports.lines().count() as i64 >= head);
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let mut rows = String::new();
    {
        let mut stmt = db.prepare("SELECT * FROM audit_events").unwrap();
        let n = stmt.column_count();
        let mut q = stmt.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            for i in 0..n {
                match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => {
                        rows.push_str(&String::from_utf8_lossy(t));
                    }
                    rusqlite::types::ValueRef::Blob(b) => {
                        rows.push_str(&B64.encode(b));
                    }
                    rusqlite::types::ValueRef::Integer(i) => rows.push_str(&i.to_string()),
                    _ => {}
                }
                rows.push('\n');
            }
        }
    }
    let mut checked = 0;
    for (name, raw) in &secrets {
        for (form, needle) in forms(name, raw) {
            for (where_, hay) in [("log", &logs), ("export", &exports), ("audit row", &rows)] {
                assert!(!hay.contains(&needle), "{form} found in the {where_}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

/// The `aggregated.count` of every line of a JSON Lines export of `action` by outcome: (sum of
/// the aggregated successes, single successes, single failures).
fn exported(path: &Path, action: &str) -> (u64, usize, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = (0, 0, 0);
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["action"] != action {
            continue;
        }
        match (e["outcome"].as_str(), e["aggregated"]["count"].as_u64()) {
            (Some("success"), Some(n)) => out.0 += n,
            (Some("success"), None) => out.1 += 1,
            _ => out.2 += 1,
        }
    }
    out
}

/// See: issue 20. With `[audit] aggregate_crypto` on a real server with archive segments and a
/// JSON Lines sink: N successful wraps are exported as aggregated events whose counts sum to N,
/// a refused unwrap is exported on its own, and `keyward audit verify` passes over the archive
/// and the database, aggregated events included.
#[test]
fn aggregated_wraps_are_exported_archived_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.jsonl");
    let server = common::spawn_with(
        dir.path(),
        &format!(
            "{FAST_LIFECYCLE}[audit]\naggregate_crypto = true\nsegment_events = 3\nsegment_max_secs = 1\n\
             archive_poll_ms = 50\nexport_poll_ms = 50\n\
             [[audit.jsonl]]\nname = \"siem\"\npath = {:?}\n",
            export.to_str().unwrap()
        ),
    );
    let a = api(dir.path(), &server.url);
    let key = root_key(&a, "aggregated");
    let n = 40;
    for i in 0..n {
        wrap(&a, &key);
        if i == n / 2 {
            let r = a
                .req(Method::POST, &format!("/api/v2/keys/{key}/actions/unwrap"))
                .json(&json!({"ciphertext": B64.encode([0u8; 64])}))
                .send()
                .unwrap();
            assert_eq!(r.status(), 422);
        }
        if i % 10 == 0 {
            // Spread over a few seconds: several aggregated events.
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while exported(&export, "kms.secrets.wrap").0 < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            exported(&export, "kms.secrets.wrap")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(exported(&export, "kms.secrets.wrap"), (n, 0, 0));
    assert_eq!(exported(&export, "kms.secrets.unwrap"), (0, 0, 1));
    // Segments hold aggregated events too (their closing checkpoint waits for the interval).
    let archive = dir.path().join("audit-archive");
    while std::fs::read_dir(&archive).map_or(0, |d| d.count()) < 2 {
        assert!(std::time::Instant::now() < deadline, "no archive segments");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stop(server);
    let (code, report) = verify(dir.path());
    assert_eq!(code, 0, "{report}");
    assert!(
        report["archive"]["segments"].as_u64().unwrap() >= 2,
        "{report}"
    );
    // At least one aggregated event is inside an archived (and so verified) segment.
    let db = rusqlite::Connection::open(dir.path().join("keyward.db")).unwrap();
    let (aggregated, first, archived): (i64, i64, i64) = db
        .query_row(
            "SELECT COUNT(*), MIN(seq),
                    (SELECT seq FROM audit_export_cursors WHERE sink = 'archive')
             FROM audit_events WHERE count IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(aggregated >= 2, "{aggregated}");
    assert!(first <= archived, "{first} {archived}");
}
