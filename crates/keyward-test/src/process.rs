//! Real processes for end-to-end tests of integrated services: a `keyward serve` on a free
//! loopback port with its bootstrap administrator, and any other binary that prints
//! `<name>: listening on <url>` on its first lines of stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The lifecycle settings end-to-end tests want: no waiting between rotations or after a disable.
pub const FAST_LIFECYCLE: &str =
    "[lifecycle]\nmin_rotation_interval_secs = 0\nenable_after_disable_secs = 0\n";

/// A child process that is killed (SIGKILL) when dropped.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// The URL it announced.
    pub url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Kills the process (SIGKILL: no shutdown code runs) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `keyward` binary next to `sibling` (a binary of the calling crate, from
/// `env!("CARGO_BIN_EXE_…")`): `cargo test --workspace` builds it with the `keyward` crate's
/// tests; a test run of one crate builds it here first.
pub fn keyward_bin(sibling: &str) -> PathBuf {
    let dir = Path::new(sibling).parent().unwrap().to_path_buf();
    let bin = dir.join(format!("keyward{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "keyward", "--bin", "keyward"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p keyward failed");
    }
    assert!(bin.exists(), "no keyward binary at {}", bin.display());
    bin
}

/// Starts `program` with `args` and `envs`, stderr appended to `log`, and waits (up to 30 s) for
/// the line `<prefix>listening on <url>` on its stdout.
pub fn spawn(program: &Path, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Proc {
    let mut child = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        assert!(
            Instant::now() < deadline,
            "{} did not start",
            program.display()
        );
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{} exited; see {}", program.display(), log.display()))
            .unwrap();
        if let Some((_, u)) = line.split_once("listening on ") {
            break u.trim().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, url }
}

/// A running `keyward serve` and its bootstrap administrator.
pub struct Keyward {
    /// The server process.
    pub proc: Proc,
    /// The administrator's API key.
    pub admin_api_key: String,
    /// The bootstrap instance.
    pub instance: String,
}

/// Starts `keyward serve` (`bin`) on `dir` with the fast test lifecycle, on a free port.
pub fn keyward(bin: &Path, dir: &Path) -> Keyward {
    keyward_on(bin, dir, "127.0.0.1:0")
}

/// A loopback address with a port free right now (for a server that must come back on the same
/// address after a restart).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Starts `keyward serve` (`bin`) on `dir` with the fast test lifecycle, listening on `listen`.
pub fn keyward_on(bin: &Path, dir: &Path, listen: &str) -> Keyward {
    std::fs::write(dir.join("keyward.toml"), FAST_LIFECYCLE).unwrap();
    let config = dir.join("keyward.toml");
    let proc = spawn(
        bin,
        &[
            "serve",
            "--listen",
            listen,
            "--data-dir",
            dir.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
        &dir.join("server.log"),
    );
    let boot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bootstrap.json")).unwrap())
            .unwrap();
    Keyward {
        proc,
        admin_api_key: boot["api_key"].as_str().unwrap().to_owned(),
        instance: boot["instance_id"].as_str().unwrap().to_owned(),
    }
}

/// A customer's tenant on a running Keyward, seen from an integrated service's end-to-end test:
/// the customer's administrator client, and a service identity authorized (Reader) on the
/// customer's KMS instance, as IBM's service-to-service authorizations do.
pub struct Tenant {
    /// The customer's administrator.
    pub admin: keyward_client::Client,
    /// The customer's KMS instance.
    pub instance: String,
    /// The service identity's API key (what the service runs with).
    pub service_api_key: String,
    /// The service's name in authorizations.
    pub service_name: String,
    /// The current authorization's id.
    pub authorization: String,
}

impl Tenant {
    /// Creates service identity `service_name` (instance `service-1`) with an API key, and
    /// authorizes the service as Reader on the bootstrap instance of `kw`.
    pub async fn new(kw: &Keyward, service_name: &str) -> Tenant {
        let admin =
            keyward_client::Client::new(&kw.proc.url, &kw.admin_api_key, &kw.instance, None)
                .unwrap();
        let ident = admin
            .create_identity(&keyward_client::NewIdentity {
                kind: "service".into(),
                name: format!("{service_name} service-1"),
                service_name: Some(service_name.into()),
                service_instance: Some("service-1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let key = admin
            .create_api_key(&ident.iam_id, service_name)
            .await
            .unwrap();
        let mut t = Tenant {
            admin,
            instance: kw.instance.clone(),
            service_api_key: key.apikey.clone(),
            service_name: service_name.into(),
            authorization: String::new(),
        };
        t.authorize().await;
        t
    }

    /// Points the administrator's client at `kw` (after a restart on another port).
    pub fn reconnect(&mut self, kw: &Keyward) {
        self.admin =
            keyward_client::Client::new(&kw.proc.url, &kw.admin_api_key, &kw.instance, None)
                .unwrap();
    }

    /// Authorizes the service (Reader on the instance); remembers the authorization.
    pub async fn authorize(&mut self) {
        let auth = self
            .admin
            .create_authorization(&keyward_client::NewAuthorization {
                source: keyward_client::AuthorizationSource {
                    service_name: self.service_name.clone(),
                    service_instance: None,
                },
                target: keyward_client::Resource {
                    instance_id: Some(self.instance.clone()),
                    ..Default::default()
                },
                roles: vec!["Reader".into()],
                delegation: false,
                dependents: vec![],
            })
            .await
            .unwrap();
        self.authorization = auth.id;
    }

    /// Removes the service's authorization.
    pub async fn deauthorize(&self) {
        self.admin
            .delete_authorization(&self.authorization)
            .await
            .unwrap();
    }

    /// Creates a root key; returns `(id, crn)`.
    pub async fn root_key(&self, name: &str) -> (String, String) {
        let k = self
            .admin
            .create_key(keyward_api_key_create(name))
            .await
            .unwrap();
        (k.id, k.crn)
    }
}

fn keyward_api_key_create(name: &str) -> keyward_api::KeyCreate {
    keyward_api::KeyCreate {
        name: name.into(),
        extractable: Some(false),
        ..Default::default()
    }
}
