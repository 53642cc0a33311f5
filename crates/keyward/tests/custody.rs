//! Software custody sealed under an unseal secret, and offline recovery (issue 18, item 17),
//! against real `keyward serve` processes: a sealed first start, a plaintext keystore sealed in
//! place, a start without or with the wrong secret refused, an allowedIP lockout and a lost
//! administrator key recovered with the data directory and its custody, audited.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{FAST_LIFECYCLE, api, keyward_env, login, refused, spawn, spawn_args, stop};
use serde_json::{Value, json};

fn keystore(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("keystore.json")).unwrap()).unwrap()
}

const DEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// See: issue 18, item 17. keystore.json held the MKEK in plaintext.
#[test]
fn a_sealed_first_start_needs_its_unseal_key_at_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("unseal.key");
    let key_arg = key_file.to_str().unwrap();
    let (code, _, err) = keyward_env(&["custody", "new-unseal-key", "--out", key_arg], &[]);
    assert_eq!(code, 0, "{err}");

    let p = spawn_args(
        dir.path(),
        FAST_LIFECYCLE,
        &[],
        &["--unseal-key-file", key_arg],
    );
    let a = api(dir.path(), &p.url);
    let id = a.create_root_key("sealed");
    let (status, wrapped) = a.action(&id, "wrap", json!({"plaintext": DEK}));
    assert_eq!(status, 200, "{wrapped}");
    stop(p);
    let ks = keystore(dir.path());
    assert_eq!(ks["version"], 2, "{ks}");
    assert_eq!(ks["seal"]["kdf"], "key", "{ks}");
    assert!(ks.get("mkeks").is_none() && ks.get("signing_key").is_none());
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(!log.contains("not sealed"), "{log}");

    let (code, err) = refused(dir.path(), &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is sealed") && err.contains("--unseal-key-file"),
        "{err}"
    );
    let wrong = keys.path().join("wrong.key");
    keyward_env(
        &[
            "custody",
            "new-unseal-key",
            "--out",
            wrong.to_str().unwrap(),
        ],
        &[],
    );
    let (code, err) = refused(dir.path(), &["--unseal-key-file", wrong.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not open"), "{err}");

    // The environment variable works as the flag does.
    let p = spawn_args(
        dir.path(),
        FAST_LIFECYCLE,
        &[("KEYWARD_UNSEAL_KEY_FILE", key_arg)],
        &[],
    );
    let a = api(dir.path(), &p.url);
    let (status, out) = a.action(&id, "unwrap", json!({"ciphertext": wrapped["ciphertext"]}));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["plaintext"], DEK);
    stop(p);
}

/// A plaintext keystore (with its warning) sealed in place under a passphrase: every key it
/// wrapped still unwraps.
#[test]
fn a_plaintext_keystore_is_sealed_in_place_and_keeps_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    let a = api(dir.path(), &p.url);
    let id = a.create_root_key("before-seal");
    let (_, wrapped) = a.action(&id, "wrap", json!({"plaintext": DEK}));
    stop(p);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(
        log.contains("not sealed"),
        "no warning for a plaintext keystore: {log}"
    );
    let mkek = keystore(dir.path())["mkeks"][0]["key"]
        .as_str()
        .unwrap()
        .to_owned();

    let keys = tempfile::tempdir().unwrap();
    let short = keys.path().join("short");
    std::fs::write(&short, "too short\n").unwrap();
    let d = dir.path().to_str().unwrap();
    let (code, _, err) = keyward_env(
        &[
            "custody",
            "seal",
            "--data-dir",
            d,
            "--unseal-key-file",
            short.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("at least 12 bytes"), "{err}");
    let pass = keys.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let pass_arg = pass.to_str().unwrap();
    let (code, out, err) = keyward_env(
        &[
            "custody",
            "seal",
            "--data-dir",
            d,
            "--unseal-key-file",
            pass_arg,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let ks = keystore(dir.path());
    assert_eq!(ks["seal"]["kdf"], "argon2id", "{ks}");
    assert!(
        !std::fs::read_to_string(dir.path().join("keystore.json"))
            .unwrap()
            .contains(&mkek)
    );

    let p = spawn_args(
        dir.path(),
        FAST_LIFECYCLE,
        &[],
        &["--unseal-key-file", pass_arg],
    );
    let a = api(dir.path(), &p.url);
    let (status, out) = a.action(&id, "unwrap", json!({"ciphertext": wrapped["ciphertext"]}));
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["plaintext"], DEK);
    stop(p);
}

fn from(ip: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

fn list_keys(client: &reqwest::blocking::Client, url: &str, token: &str, instance: &str) -> u16 {
    client
        .get(format!("{url}/api/v2/keys"))
        .bearer_auth(token)
        .header("bluemix-instance", instance)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// See: issue 18, item 17. An allowedIP policy could lock every administrator out, and a lost
/// administrator key had no way back.
#[test]
fn an_allowed_ip_lockout_and_a_lost_admin_key_are_recovered_offline_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let p = spawn(dir.path());
    let a = api(dir.path(), &p.url);
    let r = a
        .req(
            reqwest::Method::PUT,
            "/api/v2/instance/policies?policy=allowedIP",
        )
        .json(&json!({
            "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
            "resources": [{"policy_type": "allowedIP",
                           "policy_data": {"enabled": true, "attributes": {"allowed_ip": ["127.0.0.1/32"]}}}]
        }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    // The administrators now work from 127.0.0.2 only... and are locked out.
    let far = from("127.0.0.2");
    assert_eq!(list_keys(&far, &p.url, &a.token, &a.instance), 401);
    stop(p);

    let (code, out, err) = keyward_env(&["recover", "allowed-ip", "--data-dir", d], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("allowedIP policy turned off"), "{out}");
    let (code, out, _) = keyward_env(&["recover", "allowed-ip", "--data-dir", d], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing changed"), "{out}");

    // The administrator key is lost with bootstrap.json.
    let boot: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap())
            .unwrap();
    let instance = boot["instance_id"].as_str().unwrap().to_owned();
    std::fs::remove_file(dir.path().join("bootstrap.json")).unwrap();
    let (code, out, err) = keyward_env(
        &[
            "recover",
            "admin-key",
            "--data-dir",
            d,
            "--instance",
            &instance,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let new: Value = serde_json::from_str(out.trim()).unwrap();
    let new_key = new["api_key"].as_str().unwrap();
    assert_ne!(new_key, boot["api_key"].as_str().unwrap());
    assert!(!err.contains(new_key), "the key went to stderr");

    let p = spawn(dir.path());
    let token = login(&far, &p.url, new_key);
    assert_eq!(list_keys(&far, &p.url, &token, &instance), 200);
    stop(p);

    let c = rusqlite::Connection::open(dir.path().join("keyward.db")).unwrap();
    let actions: Vec<String> = c
        .prepare(
            "SELECT action FROM audit_events WHERE initiator = 'keyward-recovery' ORDER BY seq",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        actions,
        ["kms.instancepolicies.write", "iam-identity.apikey.create"],
        "{actions:?}"
    );
    let (code, out, err) = keyward_env(&["audit", "verify", "--data-dir", d], &[]);
    assert_eq!(code, 0, "{out}{err}");
}
