//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, started on a
//! Unix socket in that directory (no TCP port, so no collisions between test processes), one
//! per test process, and a fresh database per test.
//!
//! The cluster is stopped and its directory removed when the test process exits, however it
//! exits: it runs under a small shell that waits on a pipe whose other end this process holds.
//! When the pipe closes (exit, panic, kill -9), the shell stops PostgreSQL and removes the files.
//!
//! PostgreSQL refuses to run as root: as root the cluster runs as the `postgres` user.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A running throwaway cluster.
pub struct Cluster {
    /// Its directory: the data directory is `dir/data`, the socket is in `dir`.
    pub dir: PathBuf,
    /// The PostgreSQL binaries used.
    pub bin: PathBuf,
    /// The server options it was started with (for a restart).
    options: String,
    // Holding this child's stdin keeps the cluster up.
    _watchdog: Mutex<Child>,
}

/// The directory of PostgreSQL's server binaries (`initdb`, `pg_ctl`), newest version first;
/// `KEYWARD_TEST_PG_BIN` overrides.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("KEYWARD_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A command run as the user PostgreSQL runs as.
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Cluster {
    /// Makes and starts a new cluster with `settings` (`-c name=value` each).
    pub fn start(settings: &[&str]) -> Cluster {
        let bin = bin_dir().expect(
            "PostgreSQL server binaries not found (scripts/test.sh installs the postgresql \
             package; or set KEYWARD_TEST_PG_BIN)",
        );
        let dir = cluster_dir();
        let out = as_pg_user(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch(bin, dir, settings)
    }

    /// A streaming standby of this cluster (`pg_basebackup -R`), started with `settings`.
    /// Make it synchronous with `ALTER SYSTEM SET synchronous_standby_names = '*'` on the
    /// primary.
    pub fn standby(&self, settings: &[&str]) -> Cluster {
        let dir = cluster_dir();
        let out = as_pg_user(&self.bin.join("pg_basebackup"))
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ])
            .output()
            .expect("running pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::launch(self.bin.clone(), dir, settings)
    }

    /// Promotes this standby to a primary (waits until it accepts writes).
    pub fn promote(&self) {
        self.pg_ctl(&["-w", "promote"]);
    }

    /// Starts the server in `dir/data` under a watchdog (see the module doc).
    fn launch(bin: PathBuf, dir: PathBuf, settings: &[&str]) -> Cluster {
        let data = dir.join("data");
        let mut options = format!(
            "-c listen_addresses='' -k {} -c max_connections=300 -c fsync=off \
             -c full_page_writes=off",
            dir.display()
        );
        for s in settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        // Start, say so, then wait for stdin to close; then stop hard and remove everything.
        let script = format!(
            "{pg_ctl} -D {data} -o \"{options}\" -l {dir}/log -w -t 60 start >/dev/null 2>&1 \
               || {{ echo failed; cat {dir}/log; exit 1; }}
             echo ready
             cat >/dev/null
             {pg_ctl} -D {data} -m immediate -w stop >/dev/null 2>&1
             rm -rf {dir}",
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut child = as_pg_user(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting PostgreSQL");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("PostgreSQL start");
        if line.trim() != "ready" {
            let mut log = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut log);
            panic!("PostgreSQL did not start: {log}");
        }
        Cluster {
            dir,
            bin,
            options,
            _watchdog: Mutex::new(child),
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = as_pg_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .expect("running pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once (`immediate`: as a crash would; connections are cut).
    pub fn stop_server(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Starts the server again after [`Cluster::stop_server`].
    pub fn start_server(&self) {
        let log = self.dir.join("log");
        self.pg_ctl(&[
            "-o",
            &self.options,
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
            "start",
        ]);
    }

    /// A connection URL (key=value form) for `database` as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!(
            "host={} port=5432 user=postgres dbname={database}",
            self.dir.display()
        )
    }

    /// Runs SQL as the superuser in `database` with `psql`, returning its output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .expect("running psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates `database` unless it exists; returns its URL.
    pub fn database(&self, database: &str) -> String {
        assert!(
            database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database names here are [a-z0-9_]"
        );
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        );
        if exists.trim() != "1" {
            self.psql("postgres", &format!("CREATE DATABASE {database}"));
        }
        self.url(database)
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("kw_{}", uuid::Uuid::new_v4().simple());
        self.database(&name)
    }
}

/// A new directory for a cluster, owned by the user PostgreSQL runs as.
fn cluster_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("keyward-pg.")
        .tempdir()
        .expect("temporary directory")
        .keep();
    if is_root() {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown of the cluster directory");
    }
    dir
}

/// This test process's cluster, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| Cluster::start(&[]))
}

/// The URL of a database named after `key` (e.g. a test's data directory), created on first
/// use: a server restarted on the same data directory finds the same database.
pub fn database_for(key: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_os_str().as_encoded_bytes());
    let name: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    cluster().database(&format!("kw_{name}"))
}
