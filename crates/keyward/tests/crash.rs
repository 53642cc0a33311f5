//! Durability: a 2xx means the change is on disk. The server is killed with SIGKILL right after a
//! create or rotate is acknowledged, restarted, and the change is there. Also: the binary's
//! first-start behaviour and its client subcommands.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::{api, kill9, spawn};

use serde_json::{Value, json};

#[test]
fn acknowledged_creates_and_rotations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn(dir.path());
    let boot_mode = std::fs::metadata(dir.path().join("bootstrap.json")).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(boot_mode.unwrap(), 0o600);
    for round in 0..5 {
        let a = api(dir.path(), &p.url);
        let body = json!({"resources": [{"name": format!("crash-{round}")}]});
        let r = a
            .req(reqwest::Method::POST, "/api/v2/keys")
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let id = r.json::<Value>().unwrap()["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let before = a.key(&id).1["resources"][0]["keyVersion"]["id"].clone();
        let r = a
            .req(
                reqwest::Method::POST,
                &format!("/api/v2/keys/{id}/actions/rotate"),
            )
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
        kill9(p);

        p = spawn(dir.path());
        let a = api(dir.path(), &p.url);
        let (status, key) = a.key(&id);
        assert_eq!(status, 200, "round {round}: acknowledged key lost: {key}");
        let after = &key["resources"][0]["keyVersion"]["id"];
        assert_ne!(after, &before, "round {round}: acknowledged rotation lost");
        let versions: Value = a
            .req(
                reqwest::Method::GET,
                &format!("/api/v2/keys/{id}/versions?totalCount=true"),
            )
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(versions["metadata"]["totalCount"], 2);
    }
    kill9(p);
}

#[test]
fn cli_drives_the_server_with_flags_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    let boot: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap())
            .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .arg("keys")
            .args(args)
            .env("KEYWARD_URL", &p.url)
            .env("KEYWARD_API_KEY", boot["api_key"].as_str().unwrap())
            .env("KEYWARD_INSTANCE", boot["instance_id"].as_str().unwrap())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["create", "--name", "cli-key", "--json"]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, _) = cli(&[
        "wrap",
        &id,
        "--plaintext",
        "AAECAwQFBgcICQoLDA0ODw==",
        "--aad",
        "a",
        "--json",
    ]);
    assert!(ok);
    let ct = serde_json::from_str::<Value>(&out).unwrap()["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, _) = cli(&["unwrap", &id, "--ciphertext", &ct, "--aad", "a"]);
    assert!(ok && out.contains("AAECAwQFBgcICQoLDA0ODw=="), "{out}");
    let (ok, _, err) = cli(&["unwrap", &id, "--ciphertext", &ct, "--aad", "b"]);
    assert!(!ok && err.contains("422"), "{err}");
    let (ok, out, err) = cli(&["rotate", &id, "--json"]);
    assert!(ok, "{err}");
    let v2 = serde_json::from_str::<Value>(&out).unwrap()["keyVersion"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out, _) = cli(&["rewrap", &id, "--ciphertext", &ct, "--aad", "a", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["rewrappedKeyVersion"]["id"],
        v2.as_str()
    );
    let (ok, out, _) = cli(&["show", &id]);
    assert!(ok && out.contains(&v2) && out.contains("root key"), "{out}");
    let material = dir.path().join("material.b64");
    std::fs::write(&material, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let (ok, out, err) = cli(&[
        "import",
        "--name",
        "byok",
        "--payload-file",
        material.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let imported = serde_json::from_str::<Value>(&out).unwrap();
    assert_eq!(imported["imported"], true);
    assert_eq!(imported["algorithmBitSize"], 256);
    std::fs::write(&material, "not base64!").unwrap();
    let (ok, _, err) = cli(&[
        "import",
        "--name",
        "bad",
        "--payload-file",
        material.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("base64"), "{err}");
    let (ok, out, _) = cli(&["list"]);
    assert!(ok && out.contains("cli-key"), "{out}");
    let (ok, _, _) = cli(&["disable", &id]);
    assert!(ok);
    let (ok, _, err) = cli(&["wrap", &id]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, _) = cli(&["enable", &id]);
    assert!(ok);
    let (ok, out, _) = cli(&["delete", &id, "--json"]);
    assert!(ok && serde_json::from_str::<Value>(&out).unwrap()["state"] == 5);
    kill9(p);
    // Neither the API key nor the DEK appears in the server's log.
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap();
    assert!(log.contains("keyward is serving"), "{log}");
    assert!(!log.contains(boot["api_key"].as_str().unwrap()));
    assert!(!log.contains("AAECAwQFBgcICQoLDA0ODw=="));
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}
