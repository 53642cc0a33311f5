//! The operator's first hour (issue 22), against real `keyward` processes: `keyward dev`,
//! saved profiles, online backup and restore, TLS with `keyward tls self-signed` and with a
//! self-signed CA-flagged certificate given to `--ca-cert`, completions and the man page, the
//! CLI commands added for the rest of the API, errors as JSON under `--json`, connection flags
//! before the command group, and the server's warnings and address handling.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

mod common;

type Server = common::Served;

/// `keyward serve` on `dir` with `extra` flags, without the lifecycle's waits; waits for
/// "listening on".
fn serve(dir: &Path, extra: &[&str]) -> Server {
    serve_with(
        dir,
        "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n",
        extra,
    )
}

/// `keyward serve` on `dir` with configuration `toml` and `extra` flags.
fn serve_with(dir: &Path, toml: &str, extra: &[&str]) -> Server {
    let config = dir.with_extension("toml");
    std::fs::write(&config, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"])
        .arg(dir)
        .arg("--config")
        .arg(&config)
        .args(extra);
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let url = common::wait_for(&mut child, "keyward: listening on ");
    Server::new(child, url, dir)
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `keyward ARGS` with exactly the environment `env` (no KEYWARD_* from the test's own).
fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Server {
    fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("KEYWARD_URL", self.url.as_str()),
            ("KEYWARD_API_KEY", self.api_key.as_str()),
            ("KEYWARD_INSTANCE", self.instance.as_str()),
        ]
    }

    fn run(&self, args: &[&str]) -> Out {
        run(args, &self.env())
    }

    /// `keyward ARGS` (with `--json` somewhere in ARGS), which must succeed and print JSON.
    fn json(&self, args: &[&str]) -> Value {
        let o = self.run(args);
        assert!(o.ok, "{args:?} failed: {}", o.stderr);
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout))
    }

    /// `keyward ARGS --json`, which must fail with a JSON error carrying `status` and `code`.
    fn json_error(&self, args: &[&str], status: u64, code: &str) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let o = self.run(&all);
        assert!(!o.ok, "{args:?} succeeded: {}", o.stdout);
        let e: Value = serde_json::from_str(o.stderr.trim())
            .unwrap_or_else(|e| panic!("{args:?}: stderr is not JSON ({e}): {}", o.stderr));
        assert_eq!(e["error"]["status"], status, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
        e
    }
}

const MATERIAL: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// See: issue 22 ("Missing against `ibmcloud kp`").
#[test]
fn cli_covers_versions_filters_sync_force_delete_import_tokens_registrations_and_acks() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), &[]);

    let id = s.json(&["keys", "create", "--name", "orders-root", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.json(&["keys", "rotate", &id, "--json"]);
    let v = s.json(&["keys", "versions", &id, "--json"]);
    assert_eq!(v["resources"].as_array().unwrap().len(), 2, "{v}");
    assert!(
        s.run(&["keys", "versions", &id])
            .stdout
            .contains("2 of 2 versions")
    );

    // list filters: by state (number or name) and Key Protect's search
    let other = s.json(&["keys", "create", "--name", "other", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.json(&["keys", "disable", &other, "--json"]);
    let active = s.json(&["keys", "list", "--state", "active", "--json"]);
    let ids: Vec<&str> = active["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{active}");
    let found = s.json(&["keys", "list", "--search", "exact:name:other", "--json"]);
    assert_eq!(found["resources"][0]["id"], other.as_str(), "{found}");
    assert!(!s.run(&["keys", "list", "--state", "sleepy"]).ok);

    // the connection flags before the command group, and a key ring that does not exist
    let before = s.json(&["--json", "keys", "list", "--limit", "1"]);
    assert_eq!(before["resources"].as_array().unwrap().len(), 1, "{before}");
    let typo = s.run(&["--key-ring", "typo", "keys", "list"]);
    assert!(!typo.ok, "{}", typo.stdout);
    assert!(
        typo.stderr.contains("keyward rings create typo"),
        "{}",
        typo.stderr
    );

    // import tokens, and secure import sealed here with one of its retrievals
    let t = s.json(&["import-token", "create", "--max-retrievals", "2", "--json"]);
    assert_eq!(t["maxAllowedRetrievals"], 2, "{t}");
    let shown = s.json(&["import-token", "show", "--json"]);
    assert!(
        shown["payload"].as_str().is_some_and(|p| !p.is_empty()),
        "{shown}"
    );
    let payload = dir.path().join("material.b64");
    std::fs::write(&payload, MATERIAL).unwrap();
    let imported = s.json(&[
        "keys",
        "import",
        "--name",
        "byok",
        "--secure",
        "--use-existing",
        "--payload-file",
        payload.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(imported["imported"], true, "{imported}");

    // registrations (the bootstrap administrator is a service ID, so it may register): listed,
    // removed; a registered key is deleted only with --force; sync; acks
    let crn = "crn:v1:x:public:svc:local:a/1:i::";
    let r = s.json(&["registrations", "list", "--key", &id, "--json"]);
    assert_eq!(r["resources"].as_array().unwrap().len(), 0, "{r}");
    s.json(&["registrations", "create", &id, crn, "--json"]);
    let r = s.json(&["registrations", "list", "--json"]);
    assert_eq!(r["resources"][0]["resourceCrn"], crn, "{r}");
    s.json(&["registrations", "delete", &id, crn, "--json"]);
    let r = s.json(&["registrations", "list", "--key", &id, "--json"]);
    assert_eq!(r["resources"].as_array().unwrap().len(), 0, "{r}");
    s.json(&["keys", "enable", &other, "--json"]);
    s.json(&["registrations", "create", &other, crn, "--json"]);
    s.json_error(&["keys", "delete", &other], 409, "PROTECTED_RESOURCE_ERR");
    s.json(&["keys", "sync", &id, "--json"]);
    s.json_error(
        &["events", "ack", "no-such-event", "--state", "DEK_ENABLED"],
        404,
        "EVENT_NOT_FOUND_ERR",
    );

    // errors as JSON with the API's reason codes; the same refusal readable without --json
    let e = s.json_error(&["keys", "show", "no-such-key"], 404, "KEY_NOT_FOUND_ERR");
    assert!(e["error"]["message"].as_str().is_some(), "{e}");
    let plain = s.run(&["keys", "show", "no-such-key"]);
    assert!(plain.stderr.starts_with("keyward: "), "{}", plain.stderr);

    // an access policy on a key ring that does not exist is refused, naming the fix
    let bob = s.json(&[
        "iam",
        "identities",
        "create",
        "--kind",
        "user",
        "--name",
        "bob",
        "--json",
    ])["iam_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let policy = [
        "iam",
        "policies",
        "create",
        "--subject",
        &bob,
        "--roles",
        "Reader",
    ];
    let mut on_typo = policy.to_vec();
    on_typo.extend(["--instance", &s.instance, "--key-ring", "paymnets"]);
    let o = s.run(&on_typo);
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains("keyward rings create paymnets"),
        "{}",
        o.stderr
    );
    s.json(&["rings", "create", "paymnets", "--json"]);
    assert!(s.run(&on_typo).ok);

    // delete --force
    let gone = s.json(&["keys", "delete", &other, "--force", "--json"]);
    assert_eq!(gone["state"], 5, "{gone}");

    // a URL without a scheme says how to write it
    let bare = run(
        &["keys", "list"],
        &[
            ("KEYWARD_URL", s.url.trim_start_matches("http://")),
            ("KEYWARD_API_KEY", &s.api_key),
            ("KEYWARD_INSTANCE", &s.instance),
        ],
    );
    assert!(!bare.ok);
    assert!(bare.stderr.contains("has no scheme"), "{}", bare.stderr);
    assert!(bare.stderr.contains(&s.url), "{}", bare.stderr);
}

/// See: issue 22 ("saved profiles").
#[test]
fn login_saves_a_private_profile_that_later_commands_use() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), &[]);
    let config = dir.path().join("config");
    let config_s = config.to_str().unwrap();
    let mut env = s.env();
    env.push(("KEYWARD_CONFIG_DIR", config_s));
    let o = run(&["login", "--profile", "lab"], &env);
    assert!(o.ok, "{}", o.stderr);
    let file = config.join("profiles").join("lab.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // with only the profile: before and after the command group
    let only = [("KEYWARD_CONFIG_DIR", config_s)];
    let o = run(&["--profile", "lab", "keys", "list"], &only);
    assert!(o.ok, "{}", o.stderr);
    let o = run(&["keys", "list", "--profile", "lab"], &only);
    assert!(o.ok, "{}", o.stderr);
    // no default profile saved: the error names the ways to connect
    let o = run(&["keys", "list"], &only);
    assert!(!o.ok);
    assert!(o.stderr.contains("keyward login"), "{}", o.stderr);
    // a complete command line reads no profile: no HOME needed (services, containers)
    let out = Command::new(BIN)
        .args(["keys", "list"])
        .env_clear()
        .envs(s.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a wrong API key is refused before anything is saved
    let o = run(
        &["login", "--profile", "bad"],
        &[
            ("KEYWARD_CONFIG_DIR", config_s),
            ("KEYWARD_URL", &s.url),
            ("KEYWARD_API_KEY", "kw-not-a-key.nope"),
            ("KEYWARD_INSTANCE", &s.instance),
        ],
    );
    assert!(!o.ok);
    assert!(!config.join("profiles").join("bad.json").exists());
    // ... and the error names the way back when the administrator's key is lost
    assert!(
        o.stderr.contains("keyward recover admin-key"),
        "{}",
        o.stderr
    );
}

/// See: issue 22 ("backup and restore of a data dir ... online or not").
#[test]
fn backup_while_serving_then_restore_serves_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = serve(&data, &[]);
    let id = s.json(&["keys", "create", "--name", "kept", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ct = s.json(&["keys", "wrap", &id, "--plaintext", MATERIAL, "--json"])["ciphertext"]
        .as_str()
        .unwrap()
        .to_owned();

    let backup = dir.path().join("backup");
    let o = run(
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    let report: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["keystore"], true, "{report}");
    for f in ["keyward.db", "keystore.json", "bootstrap.json"] {
        let mode = std::fs::metadata(backup.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    // a backup is never written over anything
    let again = run(
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!again.ok);
    // the server went on serving during the backup
    s.json(&["keys", "create", "--name", "after", "--json"]);
    drop(s);

    let restored = dir.path().join("restored");
    let o = run(
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.ok, "{}", o.stderr);
    // restoring over an existing data directory is refused
    let o = run(
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!o.ok);
    assert!(o.stderr.contains("not empty"), "{}", o.stderr);

    let r = serve(&restored, &[]);
    let un = r.json(&["keys", "unwrap", &id, "--ciphertext", &ct, "--json"]);
    assert_eq!(un["plaintext"], MATERIAL, "{un}");
    let names: Vec<String> = r.json(&["keys", "list", "--json"])["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["kept"], "the backup is the state at its time");
}

/// See: issue 22 ("a `keyward dev` mode in the spirit of `vault server -dev`").
#[test]
fn dev_prints_the_exports_and_removes_its_data_dir_at_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut exports = Vec::new();
    let mut data_dir = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(kv) = line.strip_prefix("export ") {
            let (k, v) = kv.split_once('=').unwrap();
            exports.push((k.to_owned(), v.to_owned()));
        }
        if let Some(d) = line.trim().strip_prefix("Data dir:") {
            data_dir = Some(std::path::PathBuf::from(d.trim()));
        }
        if line.starts_with("keyward: listening on ") {
            break;
        }
    }
    let keys: Vec<&str> = exports.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["KEYWARD_URL", "KEYWARD_API_KEY", "KEYWARD_INSTANCE"]);
    let data_dir = data_dir.expect("the data directory is printed");
    assert!(data_dir.starts_with(tmp.path()), "{}", data_dir.display());
    assert!(data_dir.join("bootstrap.json").is_file());

    let env: Vec<(&str, &str)> = exports
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let o = run(&["keys", "create", "--name", "try-me"], &env);
    assert!(o.ok, "{}", o.stderr);

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success());
    assert!(!data_dir.exists(), "{} is left behind", data_dir.display());
    assert!(rest.iter().any(|l| l.contains("removed")), "{rest:?}");
}

/// See: issue 22 ("shell completions, a man page").
#[test]
fn completions_and_the_man_page_come_from_the_command_line_definition() {
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell], &[]);
        assert!(o.ok, "{shell}: {}", o.stderr);
        assert!(o.stdout.contains("keyward"), "{shell}");
        assert!(
            o.stdout.contains("import-token"),
            "{shell}: subcommands are completed"
        );
    }
    let o = run(&["man"], &[]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(".ie") || o.stdout.contains(".TH keyward 1"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains(".TH keyward 1"));
    assert!(o.stdout.contains("backup"));
}

/// See: issue 22 ("TLS with the common `openssl req -x509` certificate ... fails in the CLI
/// with `CaUsedAsEndEntity` even with `--ca-cert`"; "bootstrap.json holds https://0.0.0.0").
#[test]
fn tls_self_signed_and_a_ca_flagged_self_signed_certificate_both_work_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let o = run(&["tls", "self-signed", "--out", tls.to_str().unwrap()], &[]);
    assert!(o.ok, "{}", o.stderr);
    let key_mode = std::fs::metadata(tls.join("server.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);

    // keyward tls self-signed: CA and leaf; listening on every address, bootstrap.json names a
    // URL a client on this host can use
    let data = dir.path().join("a");
    let s = serve(
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            tls.join("server.pem").to_str().unwrap(),
            "--tls-key",
            tls.join("server.key").to_str().unwrap(),
        ],
    );
    let boot: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("bootstrap.json")).unwrap())
            .unwrap();
    let boot_url = boot["url"].as_str().unwrap();
    assert!(boot_url.starts_with("https://localhost:"), "{boot_url}");
    let ca = tls.join("ca.pem");
    let o = run(
        &["keys", "list", "--ca-cert", ca.to_str().unwrap()],
        &[(
            "KEYWARD_BOOTSTRAP",
            data.join("bootstrap.json").to_str().unwrap(),
        )],
    );
    assert!(o.ok, "{}", o.stderr);
    // without --ca-cert, the error says what to do
    let o = run(
        &["keys", "list"],
        &[(
            "KEYWARD_BOOTSTRAP",
            data.join("bootstrap.json").to_str().unwrap(),
        )],
    );
    assert!(!o.ok);
    assert!(o.stderr.contains("--ca-cert"), "{}", o.stderr);
    drop(s);

    // what `openssl req -x509` makes: one self-signed certificate with CA:TRUE, as the server's
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (pem, key_file) = (dir.path().join("ss.pem"), dir.path().join("ss.key"));
    std::fs::write(&pem, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let s = serve(
        &dir.path().join("b"),
        &[
            "--tls-cert",
            pem.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    let mut env = s.env();
    env.push(("KEYWARD_CA_CERT", pem.to_str().unwrap()));
    let o = run(&["keys", "create", "--name", "over-tls"], &env);
    assert!(o.ok, "{}", o.stderr);
    // pinned by equality, not trusted as a CA for other certificates: another self-signed
    // certificate for the same name is still refused
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other_pem = dir.path().join("other.pem");
    std::fs::write(&other_pem, other.cert.pem()).unwrap();
    let mut env = s.env();
    env.push(("KEYWARD_CA_CERT", other_pem.to_str().unwrap()));
    assert!(!run(&["keys", "list"], &env).ok);
}

/// See: issue 22 ("`--listen localhost:8200` is refused"; "`./keyward-data/` ... created
/// inside the repository").
#[test]
fn serve_accepts_a_host_name_and_warns_about_a_data_dir_in_a_git_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    let data = repo.join("keyward-data");
    let s = serve(&data, &["--listen", "localhost:0"]);
    assert!(s.url.starts_with("http://127.0.0.1:") || s.url.starts_with("http://[::1]:"));
    assert!(s.run(&["keys", "list"]).ok);
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("inside a git work tree"), "{log}");
    assert!(!log.contains("\u{1b}["), "no colours in a log file: {log}");

    let bad = run(&["serve", "--listen", "no-such-host.invalid:1"], &[]);
    assert!(!bad.ok);
    assert!(bad.stderr.contains("HOST:PORT"), "{}", bad.stderr);
}

/// See: issue 22 ("`audit list` oldest first without headers or `--follow`").
#[test]
fn audit_list_has_headers_and_follow_prints_new_events_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(&dir.path().join("data"), &[]);
    let listed = s.run(&["audit", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert!(
        listed.stdout.starts_with(&format!("{:>8}", "SEQ")),
        "{}",
        listed.stdout
    );

    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["audit", "list", "--follow", "--json"])
        .envs(s.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let name = "written-while-following";
    let id = s.json(&["keys", "create", "--name", name, "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        assert!(Instant::now() < deadline, "the create never showed up");
        let e: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if e["target"]["id"] == id.as_str() {
            break e;
        }
    };
    assert!(
        seen["action"].as_str().unwrap().contains("create"),
        "{seen}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// See: issue 22 ("A restore refused by the 30 s rule says 'a disabled key can be enabled 30
/// seconds after the disable'").
#[test]
fn the_30_second_rule_names_enable_and_restore_and_when_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with(&dir.path().join("data"), "", &[]);
    let id = s.json(&["keys", "create", "--name", "soon", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.json(&["keys", "disable", &id, "--json"]);
    let e = s.json_error(&["keys", "enable", &id], 409, "REQ_TOO_EARLY_ERR");
    let message = e["error"]["message"].as_str().unwrap();
    for part in [
        "enables a disabled key",
        "restores a deleted one",
        "again in 30 seconds",
    ] {
        assert!(message.contains(part), "{message}");
    }
}
