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

use common::{FAST_LIFECYCLE, LOCAL_WEBHOOKS, api, kill9, spawn_env};
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

/// `keyward ARGS` with stdout and stderr on a pseudo-terminal (script(1)); None without it.
fn on_a_terminal(conf: &Path, args: &[&str]) -> Option<(bool, String)> {
    let line = std::iter::once(env!("CARGO_BIN_EXE_keyward"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("SOFTHSM2_CONF", conf)
        .output()
        .ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
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
    // On a terminal (a pty from script(1), where installed), init shows it is working.
    // See: issue 22 ("`hsm init` runs 40 s silently").
    let (ok, out) = match on_a_terminal(&conf, &["hsm", "init", "--config", config_arg]) {
        Some((ok, out)) => {
            assert!(out.contains("creating the keys in the tokens"), "{out}");
            (ok, out)
        }
        None => keyward(&conf, &["hsm", "init", "--config", config_arg]),
    };
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
    let id = admin.create_root_key("hsm-backed");
    let wrapped = admin.action(&id, "wrap", json!({})).1;
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

/// Two SoftHSM2 tokens prepared by `keyward hsm init` (one transit key pair each, to be quick),
/// a data directory holding the PIN file, and the `[custody]` section naming them.
struct Hsm {
    dir: tempfile::TempDir,
    conf: PathBuf,
    data: tempfile::TempDir,
    custody: String,
}

impl Hsm {
    fn prepared() -> Option<Hsm> {
        let dir = tempfile::tempdir().unwrap();
        let conf = softhsm(dir.path())?;
        let data = tempfile::tempdir().unwrap();
        let pin = data.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        let custody = format!(
            "[custody]\nbackend = \"pkcs11\"\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\n\
             pin_file = \"{}\"\ntkek_count = 1\n[[custody.hsm]]\ntoken_label = \"keyward-a\"\n\
             [[custody.hsm]]\ntoken_label = \"keyward-b\"\n",
            pin.display()
        );
        let init = data.path().join("init.toml");
        std::fs::write(&init, &custody).unwrap();
        let (ok, out) = keyward(&conf, &["hsm", "init", "--config", init.to_str().unwrap()]);
        assert!(ok, "{out}");
        Some(Hsm {
            dir,
            conf,
            data,
            custody,
        })
    }
}

fn count_by_wrapper(db: &Path, wrapper: &str) -> i64 {
    let db = rusqlite::Connection::open(db).unwrap();
    db.query_row(
        "SELECT (SELECT COUNT(*) FROM key_versions WHERE wrapping_key = ?1)
              + (SELECT COUNT(*) FROM signing_keys WHERE wrapping_key = ?1)
              + (SELECT COUNT(*) FROM import_tokens WHERE wrapping_key = ?1)
              + (SELECT COUNT(*) FROM event_subscriptions WHERE wrapping_key = ?1)",
        [wrapper],
        |r| r.get(0),
    )
    .unwrap()
}

/// `keyward hsm rotate-master` against a running server: killed with kill -9 half-way, run
/// again, it finishes; the old MKEK is destroyed in both tokens only then; every key still
/// unwraps its old ciphertexts, through the server that ran all along and after a restart.
#[test]
fn a_master_key_rotation_killed_half_way_completes_when_run_again() {
    let Some(Hsm {
        dir: _hsm_dir,
        conf,
        data,
        custody,
    }) = Hsm::prepared()
    else {
        return;
    };
    let config = format!("{FAST_LIFECYCLE}{LOCAL_WEBHOOKS}{custody}");
    // The CLI reads the data directory from its config; the server gets it as a flag.
    let cli_config = data.path().join("cli.toml");
    std::fs::write(
        &cli_config,
        format!("data_dir = \"{}\"\n{custody}", data.path().display()),
    )
    .unwrap();
    let cli_arg = cli_config.to_str().unwrap();

    let envs = [("SOFTHSM2_CONF", conf.to_str().unwrap())];
    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    let mut wrapped = Vec::new();
    for n in 0..40 {
        let id = admin.create_root_key(&format!("rotating-{n}"));
        let w = admin.action(&id, "wrap", json!({})).1;
        wrapped.push((id, w));
    }
    let resp = admin
        .req(Method::POST, "/api/v2/import_token")
        .json(&json!({"expiration": 3600, "maxAllowedRetrievals": 5}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    // A webhook subscription: its signing secret is stored wrapped too.
    let resp = admin
        .req(Method::PUT, "/api/v2/event_subscription")
        .json(&json!({"url": "http://127.0.0.1:9/events"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    let db = data.path().join("keyward.db");
    let (v1, v2) = ("pkcs11:keyward-mkek:1", "pkcs11:keyward-mkek:2");
    let items = count_by_wrapper(&db, v1);
    assert_eq!(
        items,
        40 + 1 + 1 + 1,
        "40 key versions, the token-signing key, a transit key, a webhook secret"
    );

    let unwraps_all = |admin: &common::Api| {
        for (id, w) in &wrapped {
            let resp = admin
                .req(Method::POST, &format!("/api/v2/keys/{id}/actions/unwrap"))
                .json(&json!({"ciphertext": w["ciphertext"]}))
                .send()
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200, "{id}");
            assert_eq!(resp.json::<Value>().unwrap()["plaintext"], w["plaintext"]);
        }
    };

    // Slowed to 10 items a second so it can be killed half-way.
    let mut slow = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .env("SOFTHSM2_CONF", &conf)
        .args(["hsm", "rotate-master", "--config", cli_arg, "--json"])
        .args(["--batch", "2", "--max-per-second", "10"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count_by_wrapper(&db, v2) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotation did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    slow.kill().unwrap(); // SIGKILL
    slow.wait().unwrap();
    let (moved, left) = (count_by_wrapper(&db, v2), count_by_wrapper(&db, v1));
    assert!(
        moved > 0 && left > 0,
        "killed half-way: {moved} moved, {left} left"
    );
    assert_eq!(moved + left, items, "no item lost or duplicated");
    // Half-rotated, the server that ran all along unwraps under both versions.
    unwraps_all(&admin);

    let (ok, out) = keyward(
        &conf,
        &["hsm", "rotate-master", "--config", cli_arg, "--json"],
    );
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(report["version"], 2, "{report}");
    assert_eq!(report["resumed"], true, "{report}");
    assert_eq!(
        report["retired"],
        json!(["keyward-a: keyward-mkek", "keyward-b: keyward-mkek"])
    );
    assert_eq!(count_by_wrapper(&db, v1), 0);
    assert_eq!(count_by_wrapper(&db, v2), items);
    let (ok, out) = keyward(&conf, &["hsm", "check", "--config", cli_arg, "--json"]);
    assert!(ok, "{out}");
    let check: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    for t in check["tokens"].as_array().unwrap() {
        let present: Vec<&str> = t["present"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(present.contains(&"keyward-mkek-v2"), "{t}");
        assert!(!present.contains(&"keyward-mkek"), "{t}");
    }
    // Each move is audited, in the same transaction as the move.
    let audited: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'keyward.custody.rewrap'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(audited >= items, "{audited} audit events for {items} items");

    // MKEK version 1 is gone from both tokens, and nothing needs it.
    unwraps_all(&admin);
    let fresh = admin.action(&wrapped[0].0, "wrap", json!({})).1;
    kill9(server);
    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    unwraps_all(&admin);
    let (status, _) = admin.action(
        &wrapped[0].0,
        "unwrap",
        json!({"ciphertext": fresh["ciphertext"]}),
    );
    assert_eq!(status, 200);

    // Nothing left to finish: the next run is a new rotation.
    let (ok, out) = keyward(
        &conf,
        &["hsm", "rotate-master", "--config", cli_arg, "--json"],
    );
    assert!(ok, "{out}");
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (report["version"].as_u64(), report["resumed"].as_bool()),
        (Some(3), Some(false))
    );
    unwraps_all(&admin);
    kill9(server);
}

/// The SoftHSM2 token directory holding the token labelled `label` (its label is stored in the
/// clear in `token.object`).
fn token_dir(hsm_dir: &Path, label: &str) -> PathBuf {
    let padded = format!("{label:<32}");
    std::fs::read_dir(hsm_dir.join("tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            std::fs::read(p.join("token.object"))
                .map(|b| b.windows(32).any(|w| w == padded.as_bytes()))
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no token directory for {label}"))
}

/// Makes a token unusable for every process using it, and gives it back intact: its key objects
/// are moved out of its directory and back. (SoftHSM2 re-reads a token's objects from disk, so
/// other processes see them go and come back; a whole token directory that vanished or appeared
/// is only noticed at C_Initialize, so a token itself cannot be unplugged and replugged.)
struct Unplugged {
    token: PathBuf,
    held: PathBuf,
}

fn unplug(hsm_dir: &Path, label: &str) -> Unplugged {
    let token = token_dir(hsm_dir, label);
    let held = hsm_dir.join(format!("unplugged-{label}"));
    std::fs::create_dir_all(&held).unwrap();
    for e in std::fs::read_dir(&token).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_owned();
        if name != "token.object" && name != "token.lock" {
            std::fs::rename(&p, held.join(name)).unwrap();
        }
    }
    Unplugged { token, held }
}

impl Unplugged {
    /// The objects come back under new file names: SoftHSM2 takes a file name it saw vanish
    /// for a deleted object, but picks up new files (as objects another process created).
    fn plug_back(self) {
        for (n, e) in std::fs::read_dir(&self.held).unwrap().enumerate() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "object") {
                let unique = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                let name = format!("{:032x}-{n}.object", unique);
                std::fs::rename(&p, self.token.join(name)).unwrap();
            }
        }
    }
}

struct WrapLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl WrapLoad {
    /// `n` threads, each wrapping a new DEK with its own key over HTTP and unwrapping it again.
    fn start(dir: &Path, url: &str, keys: &[String]) -> WrapLoad {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let workers = keys
            .iter()
            .map(|id| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let admin = api(dir, url);
                let id = id.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let w = admin
                            .req(Method::POST, &format!("/api/v2/keys/{id}/actions/wrap"))
                            .json(&json!({}))
                            .send()
                            .unwrap();
                        let status = w.status().as_u16();
                        let w: Value = w.json().unwrap();
                        if status != 200 {
                            failures.lock().unwrap().push(format!("wrap {status}: {w}"));
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            continue;
                        }
                        let u = admin
                            .req(Method::POST, &format!("/api/v2/keys/{id}/actions/unwrap"))
                            .json(&json!({"ciphertext": w["ciphertext"]}))
                            .send()
                            .unwrap();
                        let status = u.status().as_u16();
                        let u: Value = u.json().unwrap();
                        if status == 200 && u["plaintext"] == w["plaintext"] {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("unwrap {status}: {u}"));
                        }
                    }
                })
            })
            .collect();
        WrapLoad {
            stop,
            ok,
            failures,
            workers,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `more` further round trips succeeded.
    fn run_for(&self, more: u64, what: &str) {
        let target = self.ok() + more;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.ok() < target {
            if std::time::Instant::now() > deadline {
                let f = self.failures.lock().unwrap();
                panic!(
                    "{what}: stalled at {} of {target}; {} failures, the first: {:?}",
                    self.ok(),
                    f.len(),
                    f.iter().take(3).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let done = self.ok();
        for w in self.workers {
            w.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (done, failures)
    }
}

fn wrap_status(admin: &common::Api, id: &str) -> (u16, Value, Option<String>) {
    let resp = admin
        .req(Method::POST, &format!("/api/v2/keys/{id}/actions/wrap"))
        .json(&json!({}))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, resp.json().unwrap(), retry)
}

/// A server on two SoftHSM2 tokens under a steady HTTP wrap/unwrap load: the first token taken
/// away fails no request; it rejoins when given back (then the second can go, again with no
/// failure); with neither, requests get 503 with a reason (never plaintext from a root key cached
/// longer than `key_cache_ttl_ms`), and service resumes by itself when a token returns.
#[test]
fn the_server_fails_over_between_hsm_tokens_under_load() {
    let Some(Hsm {
        dir: hsm_dir,
        conf,
        data,
        custody,
    }) = Hsm::prepared()
    else {
        return;
    };
    // No root key cache: every wrap and unwrap reaches an HSM.
    let config = format!("key_cache_ttl_ms = 0\n{FAST_LIFECYCLE}{custody}");
    let envs = [("SOFTHSM2_CONF", conf.to_str().unwrap())];
    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    let keys: Vec<String> = (0..4)
        .map(|n| admin.create_root_key(&format!("failover-{n}")))
        .collect();

    let load = WrapLoad::start(data.path(), &server.url, &keys);
    load.run_for(200, "warm-up");
    let a = unplug(hsm_dir.path(), "keyward-a");
    load.run_for(500, "after keyward-a was taken away");
    a.plug_back();
    // keyward-a is re-probed within a second; then keyward-b can go without a failure, which
    // proves keyward-a serves again.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    load.run_for(200, "after keyward-a came back");
    let b = unplug(hsm_dir.path(), "keyward-b");
    load.run_for(500, "after keyward-b was taken away");
    let (done, failures) = load.stop();
    eprintln!(
        "{done} wrap+unwrap round trips over HTTP, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed of {done}, the first: {:?}",
        failures.len(),
        failures.iter().take(3).collect::<Vec<_>>()
    );

    // Neither token: 503 with a reason and Retry-After, for every request.
    let a = unplug(hsm_dir.path(), "keyward-a");
    let (status, body, retry) = wrap_status(&admin, &keys[0]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"],
        "SERVICE_UNAVAILABLE_ERR"
    );
    assert!(
        body["resources"][0]["errorMsg"]
            .as_str()
            .unwrap()
            .contains("HSM"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    // Back by itself once a token returns.
    b.plug_back();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while wrap_status(&admin, &keys[0]).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "did not recover");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    a.plug_back();
    kill9(server);

    // With a root-key cache, a cached key serves while its entry is younger than the TTL,
    // and not a moment longer.
    let config = format!("key_cache_ttl_ms = 3000\n{FAST_LIFECYCLE}{custody}");
    let server = spawn_env(data.path(), &config, &envs);
    let admin = api(data.path(), &server.url);
    assert_eq!(wrap_status(&admin, &keys[1]).0, 200); // cached now
    let loaded = std::time::Instant::now();
    let (a, b) = (
        unplug(hsm_dir.path(), "keyward-a"),
        unplug(hsm_dir.path(), "keyward-b"),
    );
    let (status, body, _) = wrap_status(&admin, &keys[1]);
    if loaded.elapsed() < std::time::Duration::from_millis(2500) {
        assert_eq!(status, 200, "served from the cache within its TTL: {body}");
    }
    std::thread::sleep(std::time::Duration::from_millis(3100).saturating_sub(loaded.elapsed()));
    let (status, body, _) = wrap_status(&admin, &keys[1]);
    assert_eq!(status, 503, "the cache entry expired: {body}");
    a.plug_back();
    b.plug_back();
    kill9(server);
}
