//! The client subcommands beyond the basics, against a real `keyward serve`: key lifecycle
//! (restore, purge, dual authorization, moves), key and instance policies, aliases, key rings, and
//! KMIP adapters, client certificates and KMIP objects.
//! Each is run once on its happy path (with `--json` parsed) and at least once where the server
//! refuses, which must exit non-zero with Key Protect's reason code.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;

type Server = common::Served;

/// `keyward serve` on `dir` without the lifecycle's waits, `lifecycle` added to `[lifecycle]`.
fn spawn(dir: &Path, lifecycle: &str) -> Server {
    let proc = common::spawn_with(dir, &format!("{}{lifecycle}", common::FAST_LIFECYCLE));
    Server::new(proc.child, proc.url, dir)
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Server {
    /// Runs `keyward ARGS` against this server (connection from the environment).
    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_URL", &self.url)
            .env("KEYWARD_API_KEY", &self.api_key)
            .env("KEYWARD_INSTANCE", &self.instance)
            .env_remove("KEYWARD_KEY_RING")
            .output()
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `keyward ARGS --json`, which must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let o = self.run(&all);
        assert!(o.ok, "{args:?} failed: {}", o.stderr);
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout))
    }

    /// Runs `keyward ARGS`, which must fail with `code` in its message.
    fn fails(&self, args: &[&str], code: &str) {
        let o = self.run(args);
        assert!(!o.ok, "{args:?} succeeded: {}", o.stdout);
        assert!(
            o.stderr.contains(code),
            "{args:?}: expected {code}, got: {}",
            o.stderr
        );
    }

    /// Runs `keyward ARGS` (human output), which must succeed; returns stdout.
    fn text(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.ok, "{args:?} failed: {}", o.stderr);
        o.stdout
    }

    fn create(&self, name: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--name", name];
        args.extend_from_slice(extra);
        self.json(&args)["id"].as_str().unwrap().to_owned()
    }
}

const MATERIAL: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[test]
fn key_lifecycle_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");

    // create with policy overrides
    let k = s.json(&[
        "keys",
        "create",
        "--name",
        "with-policies",
        "--rotation-months",
        "3",
        "--dual-auth",
        "--alias",
        "first-alias",
    ]);
    assert_eq!(k["rotation"]["interval_month"], 3, "{k}");
    assert_eq!(k["dualAuthDelete"]["enabled"], true, "{k}");
    assert_eq!(k["aliases"][0], "first-alias", "{k}");
    let dual = k["id"].as_str().unwrap().to_owned();
    s.fails(
        &[
            "keys",
            "create",
            "--name",
            "bad-rot",
            "--rotation-months",
            "13",
        ],
        "INVALID_FIELD_ERR",
    );

    // key policies
    let plain = s.create("plain", &[]);
    let p = s.json(&["keys", "policy", "show", &plain]);
    assert_eq!(p["resources"].as_array().unwrap().len(), 0, "{p}");
    assert!(
        s.text(&["keys", "policy", "show", &plain])
            .contains("no key policies")
    );
    let p = s.json(&["keys", "policy", "set", &plain, "--rotation-months", "2"]);
    assert_eq!(p["resources"][0]["rotation"]["interval_month"], 2, "{p}");
    assert_eq!(p["resources"][0]["rotation"]["enabled"], true, "{p}");
    let p = s.json(&[
        "keys",
        "policy",
        "set",
        &plain,
        "--rotation-enabled",
        "false",
    ]);
    assert_eq!(p["resources"][0]["rotation"]["enabled"], false, "{p}");
    s.fails(
        &["keys", "policy", "set", &plain, "--rotation-months", "13"],
        "INVALID_FIELD_ERR",
    );
    s.fails(&["keys", "policy", "set", &plain], "nothing to set");
    let p = s.json(&["keys", "policy", "show", &dual, "--policy", "dual-auth"]);
    assert_eq!(p["resources"].as_array().unwrap().len(), 1, "{p}");
    assert_eq!(p["resources"][0]["dualAuthDelete"]["enabled"], true, "{p}");
    s.fails(
        &["keys", "policy", "set", &dual, "--dual-auth", "false"],
        "INVALID_FIELD_ERR",
    );
    s.fails(&["keys", "policy", "show", "no-such-key"], "404");

    // dual authorization
    s.fails(&["keys", "set-deletion", &plain], "NOT_DUAL_AUTH_ERR");
    let k = s.json(&["keys", "set-deletion", "first-alias"]);
    assert_eq!(k["dualAuthDelete"]["keySetForDeletion"], true, "{k}");
    assert!(k.get("payload").is_none());
    // The identity that set it cannot also delete it.
    s.fails(&["keys", "delete", &dual], "AUTHORIZATIONS_NOT_MET");
    let k = s.json(&["keys", "unset-deletion", &dual]);
    assert_ne!(k["dualAuthDelete"]["keySetForDeletion"], true, "{k}");
    s.fails(&["keys", "unset-deletion", &plain], "NOT_DUAL_AUTH_ERR");

    // restore and purge
    s.fails(&["keys", "restore", &plain], "409");
    assert_eq!(s.json(&["keys", "delete", &plain])["state"], 5);
    s.fails(&["keys", "purge", &plain], "REQ_TOO_EARLY_ERR");
    let k = s.json(&["keys", "restore", &plain]);
    assert_eq!(k["state"], 1, "{k}");
    let material = dir.path().join("material.b64");
    std::fs::write(&material, format!("{MATERIAL}\n")).unwrap();
    let imported = s.json(&[
        "keys",
        "import",
        "--name",
        "byok",
        "--payload-file",
        material.to_str().unwrap(),
    ])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.json(&["keys", "delete", &imported]);
    s.fails(&["keys", "restore", &imported], "KEY_PAYLOAD_REQ_ERR");
    let k = s.json(&[
        "keys",
        "restore",
        &imported,
        "--payload-file",
        material.to_str().unwrap(),
    ]);
    assert_eq!(k["state"], 1, "{k}");
    assert_eq!(k["imported"], true, "{k}");
    assert!(
        s.text(&["keys", "show", &imported])
            .contains("state:       1")
    );
}

#[test]
fn purge_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "purge_wait_secs = 0\n");
    let id = s.create("to-purge", &[]);
    s.fails(&["keys", "purge", &id], "409");
    s.json(&["keys", "delete", &id]);
    let k = s.json(&["keys", "purge", &id]);
    assert_eq!(k["id"], id.as_str(), "{k}");
    s.fails(&["keys", "restore", &id], "KEY");
    let id = s.create("to-purge-2", &[]);
    s.text(&["keys", "delete", &id]);
    assert!(s.text(&["keys", "purge", &id]).contains("purged"));
}

#[test]
fn aliases_and_key_rings() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");
    let a = s.create("aliased", &[]);
    let b = s.create("other", &[]);

    // aliases
    let alias = s.json(&["aliases", "add", &a, "payments-kek"]);
    assert_eq!(alias["alias"], "payments-kek", "{alias}");
    assert_eq!(alias["keyId"], a.as_str(), "{alias}");
    assert_eq!(s.json(&["keys", "show", "payments-kek"])["id"], a.as_str());
    s.fails(
        &["aliases", "add", &b, "payments-kek"],
        "KEY_ALIAS_NOT_UNIQUE_ERR",
    );
    assert!(
        s.text(&["aliases", "add", &b, "other-kek"])
            .contains("other-kek")
    );
    let removed = s.json(&["aliases", "remove", &a, "payments-kek"]);
    assert_eq!(removed["removed"], true);
    s.fails(&["aliases", "remove", &a, "payments-kek"], "NOT_FOUND_ERR");
    s.fails(&["keys", "show", "payments-kek"], "404");

    // rings
    let rings = s.json(&["rings", "list"]);
    assert_eq!(rings["resources"][0]["id"], "default", "{rings}");
    assert_eq!(s.json(&["rings", "create", "team-a"])["id"], "team-a");
    s.fails(
        &["rings", "create", "team-a"],
        "KEY_RING_ALREADY_EXISTS_ERR",
    );
    assert!(s.text(&["rings", "list"]).contains("team-a"));

    // --key-ring: create in a ring, scope reads to it, move out of it
    let k = s.json(&["keys", "create", "--name", "ringed", "--key-ring", "team-a"]);
    assert_eq!(k["keyRingID"], "team-a", "{k}");
    let ringed = k["id"].as_str().unwrap().to_owned();
    let listed = s.json(&["keys", "list", "--key-ring", "team-a"]);
    assert_eq!(listed["resources"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["resources"][0]["id"], ringed.as_str());
    s.json(&["keys", "show", &ringed, "--key-ring", "team-a"]);
    s.fails(&["keys", "show", &a, "--key-ring", "team-a"], "404");
    s.fails(&["rings", "delete", "team-a"], "KEY_RING");
    s.fails(
        &["keys", "move", &ringed, "--to", "no-such-ring"],
        "KEY_RING_NOT_FOUND_ERR",
    );
    let k = s.json(&[
        "keys",
        "move",
        &ringed,
        "--to",
        "default",
        "--key-ring",
        "team-a",
    ]);
    assert_eq!(k["keyRingID"], "default", "{k}");
    assert_eq!(s.json(&["rings", "delete", "team-a"])["deleted"], true);
    s.fails(&["rings", "delete", "team-a"], "KEY_RING_NOT_FOUND_ERR");

    // --force: a ring holding only deleted keys
    s.text(&["rings", "create", "team-b"]);
    let k = s.json(&["keys", "create", "--name", "gone", "--key-ring", "team-b"]);
    let gone = k["id"].as_str().unwrap().to_owned();
    s.text(&["keys", "delete", &gone]);
    s.fails(&["rings", "delete", "team-b"], "KEY_RING");
    assert!(
        s.text(&["rings", "delete", "team-b", "--force"])
            .contains("deleted")
    );
    let rings = s.json(&["rings", "list"]);
    assert_eq!(rings["resources"].as_array().unwrap().len(), 1, "{rings}");
}

#[test]
fn instance_policy_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");
    let find = |c: &Value, t: &str| -> Value {
        c["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy_type"] == t)
            .cloned()
            .unwrap_or(Value::Null)
    };

    let ports = s.json(&["instance", "allowed-ip-port"]);
    assert_eq!(ports["resources"].as_array().unwrap().len(), 0, "{ports}");
    assert!(
        s.text(&["instance", "allowed-ip-port"])
            .contains("no allowedIP")
    );

    // rotation
    let c = s.json(&["instance", "policy", "set", "--rotation-months", "3"]);
    let r = find(&c, "rotation");
    assert_eq!(r["policy_data"]["enabled"], true, "{c}");
    assert_eq!(r["policy_data"]["attributes"]["interval_month"], 3, "{c}");
    s.fails(
        &["instance", "policy", "set", "--rotation-months", "13"],
        "INVALID_FIELD_ERR",
    );
    let c = s.json(&["instance", "policy", "set", "--disable", "rotation"]);
    let r = find(&c, "rotation");
    assert_eq!(r["policy_data"]["enabled"], false, "{c}");
    assert_eq!(r["policy_data"]["attributes"]["interval_month"], 3, "{c}");

    // dual auth and metrics, in one request
    let c = s.json(&[
        "instance",
        "policy",
        "set",
        "--dual-auth",
        "true",
        "--metrics",
        "true",
    ]);
    assert_eq!(find(&c, "dualAuthDelete")["policy_data"]["enabled"], true);
    assert_eq!(find(&c, "metrics")["policy_data"]["enabled"], true);
    let k = s.json(&["keys", "create", "--name", "inherits-dual"]);
    assert_eq!(k["dualAuthDelete"]["enabled"], true, "{k}");
    let c = s.json(&[
        "instance",
        "policy",
        "set",
        "--dual-auth",
        "false",
        "--disable",
        "metrics",
    ]);
    assert_eq!(find(&c, "dualAuthDelete")["policy_data"]["enabled"], false);
    assert_eq!(find(&c, "metrics")["policy_data"]["enabled"], false);
    s.fails(
        &[
            "instance",
            "policy",
            "set",
            "--dual-auth",
            "true",
            "--disable",
            "dual-auth",
        ],
        "both enabled",
    );

    // allowed IP (loopback, so the test keeps access) and the private port
    let c = s.json(&[
        "instance",
        "policy",
        "set",
        "--allowed-ip",
        "127.0.0.0/8,::1/128",
    ]);
    let ip = find(&c, "allowedIP");
    assert_eq!(ip["policy_data"]["enabled"], true, "{c}");
    assert_eq!(
        ip["policy_data"]["attributes"]["allowed_ip"][0], "127.0.0.0/8",
        "{c}"
    );
    // One resource now. (Its port is the configured listen port, 0 here: not checked.)
    let ports = s.json(&["instance", "allowed-ip-port"]);
    assert!(
        ports["resources"][0]["private_endpoint_port"].is_u64(),
        "{ports}"
    );
    s.fails(
        &["instance", "policy", "set", "--allowed-ip", "not-a-cidr"],
        "INVALID_FIELD_ERR",
    );
    let c = s.json(&["instance", "policy", "set", "--disable", "allowed-ip"]);
    assert_eq!(find(&c, "allowedIP")["policy_data"]["enabled"], false);

    // allowed network
    let c = s.json(&[
        "instance",
        "policy",
        "set",
        "--allowed-network",
        "public-and-private",
    ]);
    let n = find(&c, "allowedNetwork");
    assert_eq!(
        n["policy_data"]["attributes"]["allowed_network"], "public-and-private",
        "{c}"
    );
    let o = s.run(&["instance", "policy", "set", "--allowed-network", "anywhere"]);
    assert!(!o.ok);

    // create/import access
    let c = s.json(&[
        "instance",
        "policy",
        "set",
        "--create-import",
        "root=false,standard=true,import-root=true,import-standard=true",
    ]);
    let a = find(&c, "keyCreateImportAccess");
    assert_eq!(
        a["policy_data"]["attributes"]["create_root_key"], false,
        "{c}"
    );
    s.fails(
        &["keys", "create", "--name", "denied-root"],
        "KEY_CREATE_IMPORT_ACCESS_ERR",
    );
    s.create("allowed-standard", &["--standard"]);
    s.fails(
        &["instance", "policy", "set", "--create-import", "root=maybe"],
        "true or false",
    );
    s.json(&["instance", "policy", "set", "--disable", "create-import"]);
    s.create("root-again", &[]);

    // show
    let c = s.json(&["instance", "policy", "show", "--policy", "rotation"]);
    assert_eq!(c["resources"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["resources"][0]["policy_type"], "rotation");
    let all = s.json(&["instance", "policy", "show"]);
    assert_eq!(all["resources"].as_array().unwrap().len(), 6, "{all}");
    let text = s.text(&["instance", "policy", "show"]);
    assert!(
        text.contains("allowedIP") && text.contains("interval_month=3"),
        "{text}"
    );
    let o = s.run(&["instance", "policy", "show", "--policy", "bogus"]);
    assert!(!o.ok);
    s.fails(&["instance", "policy", "set"], "nothing to set");
    // A wrong instance: the server's refusal, as a non-zero exit.
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["instance", "policy", "show"])
        .env("KEYWARD_URL", &s.url)
        .env("KEYWARD_API_KEY", &s.api_key)
        .env("KEYWARD_INSTANCE", "00000000-0000-0000-0000-000000000000")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHORIZED_ERR"));
}

/// Inserts a KMIP object into the server's database, as the KMIP listener would create it.
fn insert_kmip_object(dir: &Path, instance: &str, adapter: &str, id: &str, state: u8) {
    let db = rusqlite::Connection::open(dir.join("keyward.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    db.execute(
        "INSERT INTO kmip_objects (id, instance_id, adapter_id, object_type, state, created_at,
             created_by_cert_id, created_by)
         VALUES (?1, ?2, ?3, 2, ?4, ?5, '00000000-0000-4000-8000-0000000000c1', 'kmip-client')",
        rusqlite::params![id, instance, adapter, state, now],
    )
    .unwrap();
}

#[test]
fn kmip_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");
    let crk = s.create("kmip-crk", &["--alias", "kmip-root"]);
    let standard = s.create("kmip-std", &["--standard"]);

    // adapters
    let a = s.json(&[
        "kmip",
        "adapters",
        "create",
        "--crk",
        "kmip-root",
        "--name",
        "adapter-one",
        "--description",
        "first adapter",
    ]);
    assert_eq!(a["name"], "adapter-one", "{a}");
    assert_eq!(a["description"], "first adapter", "{a}");
    assert_eq!(a["profile"], "native_1.0", "{a}");
    assert_eq!(a["profile_data"]["crk_id"], crk.as_str(), "{a}");
    let adapter = a["id"].as_str().unwrap().to_owned();
    let b = s.json(&[
        "kmip",
        "adapters",
        "create",
        "--crk",
        &crk,
        "--allow-expiring-key",
    ]);
    assert!(
        b["name"].as_str().unwrap().starts_with("kmip_adapter"),
        "{b}"
    );
    let second = b["id"].as_str().unwrap().to_owned();
    s.fails(
        &[
            "kmip",
            "adapters",
            "create",
            "--crk",
            &crk,
            "--name",
            "adapter-one",
        ],
        "KMIP_ADAPTER_NAME_NOT_UNIQUE_ERR",
    );
    s.fails(
        &["kmip", "adapters", "create", "--crk", &standard],
        "KEY_ROOT_REQ_ERR",
    );
    s.fails(
        &["kmip", "adapters", "create", "--crk", "no-such-key"],
        "404",
    );
    let list = s.json(&["kmip", "adapters", "list"]);
    assert_eq!(list["metadata"]["totalCount"], 2, "{list}");
    assert_eq!(list["resources"].as_array().unwrap().len(), 2, "{list}");
    let list = s.json(&["kmip", "adapters", "list", "--crk", &standard]);
    assert_eq!(list["resources"].as_array().unwrap().len(), 0, "{list}");
    let list = s.json(&["kmip", "adapters", "list", "--limit", "1", "--offset", "1"]);
    assert_eq!(list["resources"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["metadata"]["totalCount"], 2, "{list}");
    assert!(
        s.text(&["kmip", "adapters", "list", "--crk", &crk])
            .contains("adapter-one")
    );
    s.fails(
        &["kmip", "adapters", "list", "--limit", "201"],
        "INVALID_QUERY_PARAM_ERR",
    );
    assert_eq!(
        s.json(&["kmip", "adapters", "show", "adapter-one"])["id"],
        adapter.as_str()
    );
    assert!(
        s.text(&["kmip", "adapters", "show", &adapter])
            .contains("first adapter")
    );
    s.fails(
        &["kmip", "adapters", "show", "no-such-adapter"],
        "KMIP_ADAPTER_NOT_FOUND_ERR",
    );

    // certificates
    let ck = rcgen::generate_simple_self_signed(vec!["kmip-client".into()]).unwrap();
    let pem = ck.cert.pem();
    let pem_file = dir.path().join("client.pem");
    std::fs::write(&pem_file, &pem).unwrap();
    let pem_path = pem_file.to_str().unwrap();
    let c = s.json(&[
        "kmip",
        "certs",
        "add",
        &adapter,
        "--file",
        pem_path,
        "--name",
        "client-one",
    ]);
    assert_eq!(c["name"], "client-one", "{c}");
    assert_eq!(c["certificate"].as_str().unwrap().trim(), pem.trim(), "{c}");
    let cert = c["id"].as_str().unwrap().to_owned();
    s.fails(
        &["kmip", "certs", "add", &adapter, "--file", pem_path],
        "KMIP_CERT_NOT_UNIQUE_ERR",
    );
    let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other.cert.pem()).unwrap();
    s.fails(
        &[
            "kmip",
            "certs",
            "add",
            "adapter-one",
            "--file",
            other_file.to_str().unwrap(),
            "--name",
            "client-one",
        ],
        "KMIP_CERT_NAME_NOT_UNIQUE_ERR",
    );
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello, not a certificate\n").unwrap();
    s.fails(
        &[
            "kmip",
            "certs",
            "add",
            &adapter,
            "--file",
            not_pem.to_str().unwrap(),
        ],
        "not a PEM certificate",
    );
    // PEM markers around garbage: the server refuses it.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    s.fails(
        &[
            "kmip",
            "certs",
            "add",
            &adapter,
            "--file",
            garbage.to_str().unwrap(),
        ],
        "INVALID_FIELD_ERR",
    );
    s.fails(
        &[
            "kmip",
            "certs",
            "add",
            "no-such-adapter",
            "--file",
            other_file.to_str().unwrap(),
        ],
        "KMIP_ADAPTER_NOT_FOUND_ERR",
    );
    let certs = s.json(&["kmip", "certs", "list", &adapter]);
    assert_eq!(certs["metadata"]["totalCount"], 1, "{certs}");
    assert_eq!(certs["resources"][0]["id"], cert.as_str(), "{certs}");
    assert!(
        certs["resources"][0].get("certificate").is_none(),
        "{certs}"
    );
    assert!(
        s.text(&["kmip", "certs", "list", "adapter-one"])
            .contains("client-one")
    );
    s.fails(
        &["kmip", "certs", "list", "no-such-adapter"],
        "KMIP_ADAPTER_NOT_FOUND_ERR",
    );
    let shown = s.json(&["kmip", "certs", "show", &adapter, "client-one"]);
    assert_eq!(shown["id"], cert.as_str(), "{shown}");
    assert!(
        shown["certificate"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        s.text(&["kmip", "certs", "show", &adapter, &cert])
            .contains("-----END CERTIFICATE-----")
    );
    s.fails(
        &["kmip", "certs", "show", &adapter, "no-such-cert"],
        "KMIP_CERT_NOT_FOUND_ERR",
    );

    // objects (created over KMIP, not REST: inserted into the database here)
    let active = "00000000-0000-4000-8000-00000000a002";
    let pre = "00000000-0000-4000-8000-00000000a001";
    insert_kmip_object(dir.path(), &s.instance, &adapter, active, 2);
    insert_kmip_object(dir.path(), &s.instance, &adapter, pre, 1);
    let objs = s.json(&["kmip", "objects", "list", &adapter]);
    assert_eq!(objs["metadata"]["totalCount"], 2, "{objs}");
    let objs = s.json(&["kmip", "objects", "list", "adapter-one", "--state", "2"]);
    assert_eq!(objs["resources"].as_array().unwrap().len(), 1, "{objs}");
    assert_eq!(objs["resources"][0]["id"], active, "{objs}");
    assert_eq!(objs["resources"][0]["kmip_object_type"], 2, "{objs}");
    assert!(
        s.text(&["kmip", "objects", "list", &adapter])
            .contains("2 (active)")
    );
    let bad = s.run(&["kmip", "objects", "list", &adapter, "--state", "7"]);
    assert!(!bad.ok, "state 7 accepted");
    s.fails(
        &["kmip", "objects", "list", "no-such-adapter"],
        "KMIP_ADAPTER_NOT_FOUND_ERR",
    );
    let o = s.json(&["kmip", "objects", "show", &adapter, active]);
    assert_eq!(o["state"], 2, "{o}");
    assert_eq!(o["created_by"], "kmip-client", "{o}");
    assert!(
        s.text(&["kmip", "objects", "show", &adapter, pre])
            .contains("pre-active")
    );
    s.fails(
        &[
            "kmip",
            "objects",
            "show",
            &adapter,
            "00000000-0000-4000-8000-0000000000ff",
        ],
        "KMIP_OBJECT_NOT_FOUND_ERR",
    );
    // An adapter with an Active object cannot be deleted; nor the object, unless forced.
    s.fails(
        &["kmip", "adapters", "delete", &adapter],
        "KMIP_ADAPTER_HAS_OBJECTS_ERR",
    );
    s.fails(
        &["kmip", "objects", "delete", &adapter, active],
        "KMIP_OBJECT_ACTIVE_ERR",
    );
    let d = s.json(&["kmip", "objects", "delete", &adapter, active, "--force"]);
    assert_eq!(d["deleted"], true, "{d}");
    assert!(
        s.text(&["kmip", "objects", "delete", &adapter, pre])
            .contains("destroyed")
    );
    let objs = s.json(&["kmip", "objects", "list", &adapter, "--state", "5,6"]);
    assert_eq!(objs["resources"].as_array().unwrap().len(), 2, "{objs}");
    assert_eq!(
        s.json(&["kmip", "objects", "list", &adapter])["resources"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // deletions
    let d = s.json(&["kmip", "certs", "delete", &adapter, "client-one"]);
    assert_eq!(d["deleted"], true, "{d}");
    s.fails(
        &["kmip", "certs", "delete", &adapter, &cert],
        "KMIP_CERT_NOT_FOUND_ERR",
    );
    let d = s.json(&["kmip", "adapters", "delete", &adapter]);
    assert_eq!(d["deleted"], true, "{d}");
    assert!(
        s.text(&["kmip", "adapters", "delete", &second])
            .contains("deleted KMIP adapter")
    );
    s.fails(
        &["kmip", "adapters", "delete", &adapter],
        "KMIP_ADAPTER_NOT_FOUND_ERR",
    );
    assert_eq!(
        s.json(&["kmip", "adapters", "list"])["metadata"]["totalCount"],
        0
    );
}

impl Server {
    /// Runs `keyward ARGS` with another identity's API key.
    fn run_as(&self, api_key: &str, args: &[&str]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_URL", &self.url)
            .env("KEYWARD_API_KEY", api_key)
            .env("KEYWARD_INSTANCE", &self.instance)
            .env_remove("KEYWARD_KEY_RING")
            .env_remove("KEYWARD_BOOTSTRAP")
            .output()
            .unwrap();
        Out {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `keyward ARGS --json` with another identity's API key; must succeed.
    fn json_as(&self, api_key: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let o = self.run_as(api_key, &all);
        assert!(o.ok, "{args:?} failed: {}", o.stderr);
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout))
    }
}

/// The entries of a `{"count": n, field: [...]}` list, checking the count.
fn listed<'a>(v: &'a Value, field: &str) -> &'a Vec<Value> {
    let items = v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field}: {v}"));
    assert_eq!(v["count"], items.len(), "{v}");
    items
}

fn has(items: &[Value], field: &str, value: &str) -> bool {
    items.iter().any(|i| i[field] == value)
}

#[test]
fn iam_identities_apikeys_and_instances() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");

    // identities
    let l = s.json(&["iam", "identities", "list"]);
    assert!(
        has(
            listed(&l, "identities"),
            "iam_id",
            "iam-ServiceId-keyward-admin"
        ),
        "{l}"
    );
    let u = s.json(&[
        "iam",
        "identities",
        "create",
        "--kind",
        "user",
        "--name",
        "Alice",
        "--description",
        "on call",
    ]);
    assert_eq!(u["kind"], "user", "{u}");
    assert_eq!(u["description"], "on call", "{u}");
    assert_eq!(u["locked"], false, "{u}");
    let alice = u["iam_id"].as_str().unwrap().to_owned();
    assert!(alice.starts_with("IBMid-"), "{u}");
    let svc = s.json(&[
        "iam",
        "identities",
        "create",
        "--kind",
        "service",
        "--name",
        "events",
        "--service-name",
        "messagehub",
        "--service-instance",
        "es-1",
    ]);
    assert_eq!(svc["service_name"], "messagehub", "{svc}");
    assert!(svc["iam_id"].as_str().unwrap().starts_with("crn-"), "{svc}");
    s.fails(
        &[
            "iam",
            "identities",
            "create",
            "--kind",
            "service",
            "--name",
            "x",
        ],
        "--service-name",
    );
    s.fails(
        &[
            "iam",
            "identities",
            "create",
            "--kind",
            "user",
            "--name",
            "x",
            "--service-name",
            "messagehub",
        ],
        "BAD_BODY_ERR",
    );
    let text = s.text(&["iam", "identities", "list"]);
    assert!(text.contains(&alice) && text.contains("Alice"), "{text}");

    // API keys: the secret is shown once, and works
    let k = s.json(&[
        "iam", "apikeys", "create", "--iam-id", &alice, "--name", "laptop",
    ]);
    assert_eq!(k["iam_id"], alice.as_str(), "{k}");
    let alice_key = k["apikey"].as_str().unwrap().to_owned();
    let key_id = k["id"].as_str().unwrap().to_owned();
    let l = s.json(&["iam", "apikeys", "list"]);
    let keys = listed(&l, "apikeys");
    assert!(has(keys, "id", &key_id), "{l}");
    assert!(keys.iter().all(|k| k.get("apikey").is_none()), "{l}");
    let text = s.text(&[
        "iam", "apikeys", "create", "--iam-id", &alice, "--name", "second",
    ]);
    assert!(
        text.contains("apikey: kw") && text.contains("not shown again"),
        "{text}"
    );
    s.fails(
        &[
            "iam",
            "apikeys",
            "create",
            "--iam-id",
            "IBMid-nobody",
            "--name",
            "x",
        ],
        "KEY_NOT_FOUND_ERR",
    );

    // A non-administrator cannot manage access.
    let o = s.run_as(&alice_key, &["iam", "identities", "list"]);
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains("403") && o.stderr.contains("UNAUTHORIZED_ERR"),
        "{}",
        o.stderr
    );

    // lock and unlock an API key, then an identity
    let v = s.json(&["iam", "apikeys", "lock", &key_id]);
    assert_eq!(v["locked"], true, "{v}");
    let l = s.json(&["iam", "apikeys", "list"]);
    let k = listed(&l, "apikeys")
        .iter()
        .find(|k| k["id"] == key_id.as_str())
        .unwrap();
    assert_eq!(k["locked"], true, "{l}");
    let o = s.run_as(&alice_key, &["iam", "identities", "list"]);
    assert!(!o.ok && o.stderr.contains("BXNIM0415E"), "{}", o.stderr);
    s.json(&["iam", "apikeys", "unlock", &key_id]);
    s.json(&["iam", "identities", "lock", &alice]);
    let l = s.json(&["iam", "identities", "list"]);
    let a = listed(&l, "identities")
        .iter()
        .find(|i| i["iam_id"] == alice.as_str())
        .unwrap();
    assert_eq!(a["locked"], true, "{l}");
    let v = s.json(&["iam", "identities", "unlock", &alice]);
    assert_eq!(v["unlocked"], true, "{v}");
    s.fails(
        &["iam", "identities", "lock", "IBMid-nobody"],
        "KEY_NOT_FOUND_ERR",
    );
    s.fails(&["iam", "apikeys", "unlock", "nokey"], "KEY_NOT_FOUND_ERR");

    // delete
    let v = s.json(&["iam", "apikeys", "delete", &key_id]);
    assert_eq!(v["deleted"], true, "{v}");
    s.fails(&["iam", "apikeys", "delete", &key_id], "404");
    let o = s.run_as(&alice_key, &["iam", "instances", "list"]);
    assert!(!o.ok, "a deleted API key still works: {}", o.stdout);
    s.json(&["iam", "identities", "delete", &alice]);
    let l = s.json(&["iam", "identities", "list"]);
    assert!(!has(listed(&l, "identities"), "iam_id", &alice), "{l}");
    s.fails(
        &["iam", "identities", "delete", "iam-ServiceId-keyward-admin"],
        "BAD_BODY_ERR",
    );

    // instances
    let l = s.json(&["iam", "instances", "list"]);
    assert!(has(listed(&l, "instances"), "id", &s.instance), "{l}");
    let i = s.json(&["iam", "instances", "create", "--name", "second"]);
    assert_eq!(i["name"], "second", "{i}");
    let second = i["id"].as_str().unwrap().to_owned();
    let l = s.json(&["iam", "instances", "list"]);
    assert_eq!(listed(&l, "instances").len(), 2, "{l}");
    assert!(has(listed(&l, "instances"), "id", &second), "{l}");
    s.fails(
        &["iam", "instances", "create", "--name", ""],
        "BAD_BODY_ERR",
    );
    // The bootstrap file works as a connection source; --instance is not a connection flag here.
    let o = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["iam", "instances", "list", "--json", "--bootstrap"])
        .arg(dir.path().join("bootstrap.json"))
        .env_remove("KEYWARD_URL")
        .env_remove("KEYWARD_API_KEY")
        .env_remove("KEYWARD_INSTANCE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn iam_policies_and_authorizations() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");
    let root = s.create("root-for-iam", &[]);
    s.text(&["rings", "create", "payments"]);

    let bob = s.json(&[
        "iam",
        "identities",
        "create",
        "--kind",
        "service_id",
        "--name",
        "bob",
    ])["iam_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_key = s.json(&["iam", "apikeys", "create", "--iam-id", &bob, "--name", "k"])["apikey"]
        .as_str()
        .unwrap()
        .to_owned();

    // policies: instance, key ring, key and account scopes
    let p = s.json(&[
        "iam",
        "policies",
        "create",
        "--subject",
        &bob,
        "--roles",
        "Reader,Writer",
        "--instance",
        &s.instance,
    ]);
    assert_eq!(p["roles"], serde_json::json!(["Reader", "Writer"]), "{p}");
    assert_eq!(
        p["resource"],
        serde_json::json!({"instance_id": s.instance}),
        "{p}"
    );
    let instance_policy = p["id"].as_str().unwrap().to_owned();
    let p = s.json(&[
        "iam",
        "policies",
        "create",
        "--subject",
        &bob,
        "--roles",
        "Manager",
        "--instance",
        &s.instance,
        "--key-ring",
        "payments",
    ]);
    assert_eq!(p["resource"]["key_ring"], "payments", "{p}");
    let p = s.json(&[
        "iam",
        "policies",
        "create",
        "--subject",
        &bob,
        "--roles",
        "KeyPurge",
        "--instance",
        &s.instance,
        "--key",
        &root,
    ]);
    assert_eq!(p["resource"]["key_id"], root.as_str(), "{p}");
    let p = s.json(&[
        "iam",
        "policies",
        "create",
        "--subject",
        &bob,
        "--roles",
        "Reader",
    ]);
    assert!(p["resource"]["account_id"].is_string(), "{p}");
    let account_policy = p["id"].as_str().unwrap().to_owned();
    let l = s.json(&["iam", "policies", "list"]);
    let mine: Vec<_> = listed(&l, "policies")
        .iter()
        .filter(|p| p["subject"] == bob.as_str())
        .collect();
    assert_eq!(mine.len(), 4, "{l}");
    assert!(
        s.text(&["iam", "policies", "list"])
            .contains("key ring payments")
    );

    // The policy works: bob reads keys of the instance.
    let keys = s.json_as(&bob_key, &["keys", "list"]);
    assert!(keys.to_string().contains(&root), "{keys}");

    // failures: unknown role, unknown subject, Administrator below the account, a bad scope
    s.fails(
        &[
            "iam",
            "policies",
            "create",
            "--subject",
            &bob,
            "--roles",
            "Superuser",
        ],
        "INVALID_FIELD_ERR",
    );
    s.fails(
        &[
            "iam",
            "policies",
            "create",
            "--subject",
            "IBMid-nobody",
            "--roles",
            "Reader",
        ],
        "BAD_BODY_ERR",
    );
    s.fails(
        &[
            "iam",
            "policies",
            "create",
            "--subject",
            &bob,
            "--roles",
            "Administrator",
            "--instance",
            &s.instance,
        ],
        "BAD_BODY_ERR",
    );
    s.fails(
        &[
            "iam",
            "policies",
            "create",
            "--subject",
            &bob,
            "--roles",
            "Reader",
            "--instance",
            "x",
        ],
        "INVALID_FIELD_ERR",
    );
    s.fails(
        &[
            "iam",
            "policies",
            "create",
            "--subject",
            &bob,
            "--roles",
            "Reader",
            "--key-ring",
            "r",
        ],
        "--instance",
    );
    s.fails(
        &["iam", "policies", "delete", "no-such-policy"],
        "KEY_NOT_FOUND_ERR",
    );

    let v = s.json(&["iam", "policies", "delete", &instance_policy]);
    assert_eq!(v["deleted"], true, "{v}");
    s.json(&["iam", "policies", "delete", &account_policy]);
    let l = s.json(&["iam", "policies", "list"]);
    assert!(!has(listed(&l, "policies"), "id", &instance_policy), "{l}");

    // authorizations, with delegation
    let es = s.json(&[
        "iam",
        "identities",
        "create",
        "--kind",
        "service",
        "--name",
        "es",
        "--service-name",
        "messagehub",
        "--service-instance",
        "es-1",
    ])["iam_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let es_key = s.json(&["iam", "apikeys", "create", "--iam-id", &es, "--name", "k"])["apikey"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = s.json(&[
        "iam",
        "authorizations",
        "create",
        "--source-service",
        "messagehub",
        "--source-instance",
        "es-1",
        "--instance",
        &s.instance,
        "--roles",
        "Reader,Writer",
        "--delegation",
        "--dependents",
        "cloud-object-storage",
    ]);
    assert_eq!(a["source"]["service_name"], "messagehub", "{a}");
    assert_eq!(a["source"]["service_instance"], "es-1", "{a}");
    assert_eq!(
        a["target"],
        serde_json::json!({"instance_id": s.instance}),
        "{a}"
    );
    assert_eq!(a["delegation"], true, "{a}");
    let delegating = a["id"].as_str().unwrap().to_owned();
    // The service uses its authorization ...
    let w = s.json_as(&es_key, &["keys", "wrap", &root]);
    assert!(w["ciphertext"].is_string(), "{w}");
    // ... and delegates a subset of it to a dependent service.
    let d = s.json_as(
        &es_key,
        &[
            "iam",
            "authorizations",
            "create",
            "--source-service",
            "cloud-object-storage",
            "--source-instance",
            "cos-1",
            "--instance",
            &s.instance,
            "--roles",
            "Reader",
        ],
    );
    assert_eq!(d["delegation"], false, "{d}");
    assert_eq!(d["delegated_from"], delegating.as_str(), "{d}");
    assert_eq!(d["created_by"], es.as_str(), "{d}");
    // Not more than it holds, nor elsewhere, nor a delegating one, nor anything else.
    for (args, code) in [
        (vec!["--roles", "Manager", "--instance", &s.instance], "403"),
        (
            vec![
                "--roles",
                "Reader",
                "--instance",
                &s.instance,
                "--key",
                &root,
            ],
            "403",
        ),
        (
            vec![
                "--roles",
                "Reader",
                "--instance",
                &s.instance,
                "--delegation",
            ],
            "403",
        ),
    ] {
        let mut all = vec![
            "iam",
            "authorizations",
            "create",
            "--source-service",
            "x-svc",
        ];
        all.extend(args);
        let o = s.run_as(&es_key, &all);
        assert!(!o.ok && o.stderr.contains(code), "{all:?}: {}", o.stderr);
        assert!(o.stderr.contains("UNAUTHORIZED_ERR"), "{}", o.stderr);
    }
    let o = s.run_as(&es_key, &["iam", "authorizations", "list"]);
    assert!(
        !o.ok && o.stderr.contains("UNAUTHORIZED_ERR"),
        "{}",
        o.stderr
    );

    let a = s.json(&[
        "iam",
        "authorizations",
        "create",
        "--source-service",
        "backup",
        "--instance",
        &s.instance,
        "--key-ring",
        "payments",
        "--roles",
        "Reader",
    ]);
    assert_eq!(a["source"]["service_instance"], Value::Null, "{a}");
    assert_eq!(a["target"]["key_ring"], "payments", "{a}");
    let l = s.json(&["iam", "authorizations", "list"]);
    assert_eq!(listed(&l, "authorizations").len(), 3, "{l}");
    assert!(
        s.text(&["iam", "authorizations", "list"])
            .contains("every instance")
    );

    s.fails(
        &[
            "iam",
            "authorizations",
            "create",
            "--source-service",
            "backup",
            "--roles",
            "Reader",
        ],
        "--instance",
    );
    s.fails(
        &[
            "iam",
            "authorizations",
            "create",
            "--source-service",
            "backup",
            "--instance",
            &s.instance,
            "--roles",
            "Administrator",
        ],
        "BAD_BODY_ERR",
    );
    s.fails(
        &[
            "iam",
            "authorizations",
            "create",
            "--source-service",
            "backup",
            "--instance",
            &s.instance,
            "--roles",
            "Owner",
        ],
        "INVALID_FIELD_ERR",
    );
    s.fails(
        &["iam", "authorizations", "delete", "nope"],
        "KEY_NOT_FOUND_ERR",
    );

    let v = s.json(&["iam", "authorizations", "delete", &delegating]);
    assert_eq!(v["deleted"], true, "{v}");
    // What it delegated went with it.
    let l = s.json(&["iam", "authorizations", "list"]);
    assert_eq!(listed(&l, "authorizations").len(), 1, "{l}");
    // Revocation applies within the access cache TTL (at most 1 s).
    std::thread::sleep(Duration::from_millis(1100));
    let o = s.run_as(&es_key, &["keys", "wrap", &root]);
    assert!(
        !o.ok,
        "the service still wraps after its authorization was deleted"
    );
}

#[test]
fn secure_import_through_import_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = spawn(dir.path(), "");
    let material = dir.path().join("material.b64");
    std::fs::write(&material, MATERIAL).unwrap();
    let material = material.to_str().unwrap();
    let newer = dir.path().join("newer.b64");
    std::fs::write(&newer, "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=").unwrap();
    let newer = newer.to_str().unwrap();
    let short = dir.path().join("short.b64");
    std::fs::write(&short, "AAECAwQFBgcICQoLDA0ODxAREhM=").unwrap(); // 20 bytes
    let short = short.to_str().unwrap();

    // No token yet: --use-existing has nothing to use.
    s.fails(
        &[
            "keys",
            "import",
            "--name",
            "early",
            "--payload-file",
            material,
            "--secure",
            "--use-existing",
        ],
        "IMPORT_TOKEN_NOT_FOUND_ERR",
    );

    // Secure import (a fresh token), then the key wraps and unwraps.
    let k = s.json(&[
        "keys",
        "import",
        "--name",
        "secure",
        "--payload-file",
        material,
        "--secure",
    ]);
    assert_eq!(k["imported"], true, "{k}");
    assert_eq!(k["extractable"], false, "{k}");
    let id = k["id"].as_str().unwrap().to_owned();
    let w = s.json(&["keys", "wrap", &id]);
    let dek = w["plaintext"].as_str().unwrap().to_owned();
    let ct = w["ciphertext"].as_str().unwrap().to_owned();
    let u = s.json(&["keys", "unwrap", &id, "--ciphertext", &ct]);
    assert_eq!(u["plaintext"], dek.as_str(), "{u}");

    // The token's one retrieval is spent: --use-existing is refused; a secure rotate without it
    // makes a token of its own.
    s.fails(
        &[
            "keys",
            "rotate",
            &id,
            "--payload-file",
            newer,
            "--secure",
            "--use-existing",
        ],
        "IMPORT_TOKEN_EXPIRED_ERR",
    );
    let r = s.json(&["keys", "rotate", &id, "--payload-file", newer, "--secure"]);
    assert_eq!(r["imported"], true, "{r}");
    let u = s.json(&["keys", "unwrap", &id, "--ciphertext", &ct]);
    assert_eq!(
        u["plaintext"],
        dek.as_str(),
        "older versions still unwrap: {u}"
    );
    let w2 = s.json(&["keys", "wrap", &id]);
    assert_ne!(w2["keyVersion"]["id"], w["keyVersion"]["id"], "{w2}");
    // The key holds exactly the material sent: restoring it takes that material in the clear.
    s.json(&["keys", "delete", &id]);
    let k = s.json(&["keys", "restore", &id, "--payload-file", newer]);
    assert_eq!(k["state"], 1, "{k}");

    // Refused locally: material of a size no root key has, a standard key, no material.
    s.fails(
        &[
            "keys",
            "import",
            "--name",
            "short",
            "--payload-file",
            short,
            "--secure",
        ],
        "16, 24 or 32 bytes",
    );
    s.fails(
        &[
            "keys",
            "import",
            "--name",
            "std",
            "--standard",
            "--payload-file",
            material,
            "--secure",
        ],
        "root keys only",
    );
    s.fails(&["keys", "rotate", &id, "--secure"], "--payload-file");
    // A secure rotate of a key that was not imported is the server's to refuse.
    let generated = s.create("generated", &[]);
    let o = s.run(&[
        "keys",
        "rotate",
        &generated,
        "--payload-file",
        newer,
        "--secure",
    ]);
    assert!(
        !o.ok,
        "rotating generated material to imported: {}",
        o.stdout
    );
    assert!(o.stderr.contains("400"), "{}", o.stderr);
}
