//! Shared by the binary's tests: a real `keyward serve` process and a blocking API client.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The lifecycle settings most tests want: no waiting between rotations or after a disable.
pub const FAST_LIFECYCLE: &str =
    "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n";

/// Lets event subscriptions reach receivers on this host (off by default: webhooks may only
/// reach public addresses).
pub const LOCAL_WEBHOOKS: &str = "[webhooks]\nallow_private_addresses = true\n";

pub struct Proc {
    pub child: Child,
    pub url: String,
}

/// Starts `keyward serve` on `dir` with the default test lifecycle.
pub fn spawn(dir: &Path) -> Proc {
    spawn_with(dir, FAST_LIFECYCLE)
}

/// Starts `keyward serve` on `dir` with `config` as its TOML config, and waits until it listens.
pub fn spawn_with(dir: &Path, config: &str) -> Proc {
    spawn_env(dir, config, &[])
}

/// As [`spawn_with`], with extra environment variables for the server process.
pub fn spawn_env(dir: &Path, config: &str, envs: &[(&str, &str)]) -> Proc {
    spawn_args(dir, config, envs, &[])
}

/// As [`spawn_env`], with extra `keyward serve` arguments.
pub fn spawn_args(dir: &Path, config: &str, envs: &[(&str, &str)], args: &[&str]) -> Proc {
    std::fs::write(dir.join("keyward.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .envs(envs.iter().copied())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .arg("--config")
        .arg(dir.join("keyward.toml"))
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let url = wait_for(&mut child, "keyward: listening on ");
    Proc { child, url }
}

/// Reads the child's stdout until a line starting with `prefix`; returns the rest of it. The
/// rest of stdout is drained, so the child never blocks on a full pipe.
pub fn wait_for(child: &mut Child, prefix: &str) -> String {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "no line {prefix:?}");
        let line = lines.next().expect("the process exited").unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return rest.trim().to_owned();
        }
    }
}

/// A `keyward serve` that is killed when dropped, with its bootstrap administrator's
/// credentials: what the CLI tests run commands against.
pub struct Served {
    pub child: Child,
    pub url: String,
    pub api_key: String,
    pub instance: String,
}

impl Served {
    /// `child`, listening on `url`, bootstrapped in `dir`.
    pub fn new(child: Child, url: String, dir: &Path) -> Served {
        let boot: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("bootstrap.json")).unwrap())
                .unwrap();
        Served {
            child,
            url,
            api_key: boot["api_key"].as_str().unwrap().to_owned(),
            instance: boot["instance_id"].as_str().unwrap().to_owned(),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL: no shutdown code runs.
pub fn kill9(mut p: Proc) {
    p.child.kill().unwrap(); // SIGKILL on Unix: no shutdown code runs.
    p.child.wait().unwrap();
}

/// SIGTERM, then wait: the server shuts down cleanly (and signs a last audit checkpoint).
pub fn stop(mut p: Proc) {
    let status = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            assert!(s.success(), "server exit status {s}");
            return;
        }
        assert!(Instant::now() < deadline, "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The bootstrap administrator's client.
pub struct Api {
    pub http: reqwest::blocking::Client,
    pub url: String,
    pub token: String,
    pub instance: String,
}

/// Logs in as the bootstrap administrator of `dir` through `url`.
pub fn api(dir: &Path, url: &str) -> Api {
    let boot: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bootstrap.json")).unwrap())
            .unwrap();
    let http = reqwest::blocking::Client::new();
    let resp: Value = http
        .post(format!("{url}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", boot["api_key"].as_str().unwrap()),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    Api {
        http,
        url: url.to_owned(),
        token: resp["access_token"].as_str().unwrap().to_owned(),
        instance: boot["instance_id"].as_str().unwrap().to_owned(),
    }
}

impl Api {
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("bluemix-instance", &self.instance)
    }

    /// Creates a root key named `name`; its id.
    pub fn create_root_key(&self, name: &str) -> String {
        let resp = self
            .req(reqwest::Method::POST, "/api/v2/keys")
            .json(&serde_json::json!({"resources": [{"name": name}]}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        resp.json::<Value>().unwrap()["resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// POSTs `body` to the key's `action`: (status, body).
    pub fn action(&self, id: &str, action: &str, body: Value) -> (u16, Value) {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/api/v2/keys/{id}/actions/{action}"),
            )
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    pub fn key(&self, id: &str) -> (u16, Value) {
        let r = self
            .req(reqwest::Method::GET, &format!("/api/v2/keys/{id}"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }
}

/// Exchanges an API key for an access token at `url`.
pub fn login(http: &reqwest::blocking::Client, url: &str, api_key: &str) -> String {
    let resp: Value = http
        .post(format!("{url}/identity/token"))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", api_key),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    resp["access_token"].as_str().unwrap().to_owned()
}

/// Runs the `keyward` binary with `args`: (exit code, stdout, stderr).
pub fn keyward(args: &[&str]) -> (i32, String, String) {
    keyward_env(args, &[])
}

/// As [`keyward`], with extra environment variables.
pub fn keyward_env(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `keyward serve` on `dir` with `args`, which must refuse to start (within 30 s): (exit
/// code, stderr).
pub fn refused(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyward serve started where it had to refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    (status.code().unwrap_or(-1), stderr)
}
