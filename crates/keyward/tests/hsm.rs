//! `keyward serve` with its master keys in HSMs: two SoftHSM2 tokens prepared by `keyward hsm
//! init`, inspected by `keyward hsm check`, then a server whose key material exists at rest only
//! wrapped by the HSMs' MKEK, surviving a kill -9 and a restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{FAST_LIFECYCLE, api, kill9, spawn_env};
use reqwest::Method;
use serde_json::{Value, json};

/// Throwaway SoftHSM2 tokens `keyward-a` and `keyward-b` (user PIN 1234); `None` when SoftHSM2
/// cannot be installed here (the test says so and passes vacuously only then).
fn softhsm(dir: &Path) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/softhsm.sh");
    let out = Command::new(script)
        .arg(dir)
        .args(["keyward-a", "keyward-b"])
        .env("KEYWARD_TEST_HSM_PIN", "1234")
        .output()
        .unwrap();
    if out.status.code() == Some(3) {
        eprintln!("SKIPPED: SoftHSM2 cannot be installed here");
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir.join("softhsm2.conf"))
}

fn keyward(conf: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("SOFTHSM2_CONF", conf)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_server_runs_on_hsm_custody_prepared_by_hsm_init() {
    let hsm_dir = tempfile::tempdir().unwrap();
    let Some(conf) = softhsm(hsm_dir.path()) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let pin = data.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let config = format!(
        "{FAST_LIFECYCLE}[custody]\nbackend = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
         pin_file = \"{}\"\n[[custody.hsm]]\ntoken_label = \"keyward-a\"\n[[custody.hsm]]\ntoken_label = \"keyward-b\"\n",
        pin.display()
    );
    let config_path = data.path().join("keyward.toml");
    std::fs::write(&config_path, &config).unwrap();
    let config_arg = config_path.to_str().unwrap();

    let (ok, out) = keyward(&conf, &["hsm", "check", "--config", config_arg]);
    assert!(!ok, "objects are missing before init: {out}");
    assert!(out.contains("keyward-mkek"), "{out}");
    let (ok, out) = keyward(&conf, &["hsm", "init", "--config", config_arg]);
    assert!(ok, "{out}");
    assert!(out.contains("created"), "{out}");
    let (ok, out) = keyward(&conf, &["hsm", "init", "--config", config_arg]);
    assert!(
        ok && out.contains("nothing to create"),
        "init is idempotent: {out}"
    );
    let (ok, out) = keyward(&conf, &["hsm", "check", "--config", config_arg, "--json"]);
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(report["usable"], true);
    assert_eq!(report["tokens"].as_array().unwrap().len(), 2);

    let envs = [("SOFTHSM2_CONF", conf.to_str().unwrap())];
    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    let resp = admin
        .req(Method::POST, "/api/v2/keys")
        .json(&json!({"resources": [{"name": "hsm-backed"}]}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id = resp.json::<Value>().unwrap()["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrapped: Value = admin
        .req(Method::POST, &format!("/api/v2/keys/{id}/actions/wrap"))
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        !data.path().join("keystore.json").exists(),
        "no software keystore"
    );
    kill9(server);

    // At rest, every key version is wrapped by the HSM MKEK.
    let db = rusqlite::Connection::open(data.path().join("keyward.db")).unwrap();
    let wrappers: Vec<String> = db
        .prepare("SELECT DISTINCT wrapping_key FROM key_versions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(wrappers, ["pkcs11:keyward-mkek:1"]);
    drop(db);

    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    let unwrapped: Value = admin
        .req(Method::POST, &format!("/api/v2/keys/{id}/actions/unwrap"))
        .json(&json!({"ciphertext": wrapped["ciphertext"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(unwrapped["plaintext"], wrapped["plaintext"]);
    kill9(server);
}
