//! Operations without a server connection: `keyward backup` / `keyward restore` of a data
//! directory (online: SQLite's `VACUUM INTO` is a consistent snapshot taken while the server
//! writes), `keyward tls self-signed` (a CA and a server certificate for a first TLS setup),
//! `keyward completions` and `keyward man`.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::out;

/// The database file of a SQLite data directory.
const DB: &str = "keyward.db";
/// The files of a data directory besides the database, copied when present: the software
/// keystore (the master key: without it the database cannot be read) and the bootstrap file.
const BESIDE: [&str; 2] = ["keystore.json", "bootstrap.json"];

/// `keyward backup`.
#[derive(Args)]
pub struct BackupArgs {
    /// The data directory to back up (the server may be running).
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: PathBuf,
    /// A new directory to write the backup to (keyward.db, keystore.json, bootstrap.json; 0600).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

/// `keyward restore`.
#[derive(Args)]
pub struct RestoreArgs {
    /// A directory written by `keyward backup`.
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// The data directory to restore into: new or empty (move a damaged one aside first).
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: PathBuf,
    /// Print a JSON report.
    #[arg(long)]
    json: bool,
}

fn new_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = dir.is_dir() && std::fs::read_dir(dir)?.next().is_none();
        if !empty {
            bail!(
                "{} exists and is not empty: name a new directory (nothing is overwritten)",
                dir.display()
            );
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn copy_private(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .with_context(|| format!("writing {}", to.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    Ok(bytes.len() as u64)
}

/// `PRAGMA integrity_check` of a database file (opened read-only).
fn integrity(db: &Path) -> anyhow::Result<()> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    let result: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if result != "ok" {
        bail!("{} fails SQLite's integrity_check: {result}", db.display());
    }
    Ok(())
}

/// Runs `keyward backup`.
pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let db = args.data_dir.join(DB);
    if !db.is_file() {
        bail!(
            "no {DB} in {}: is it a Keyward data directory? (With [store] backend = \"postgres\", \
             back up the database with pg_dump and keystore.json by copying it.)",
            args.data_dir.display()
        );
    }
    new_private_dir(&args.out)?;
    let target = args.out.join(DB);
    let target_str = target
        .to_str()
        .context("the backup directory's path is not UTF-8")?;
    // A second connection beside the server's: VACUUM INTO reads one consistent snapshot (a
    // read transaction on the WAL) and writes it compacted to the new file, while the server
    // goes on writing.
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute("VACUUM INTO ?1", [target_str])
        .with_context(|| format!("copying {} to {}", db.display(), target.display()))?;
    drop(conn);
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
    integrity(&target)?;
    let mut files =
        vec![serde_json::json!({"file": DB, "bytes": std::fs::metadata(&target)?.len()})];
    for name in BESIDE {
        let from = args.data_dir.join(name);
        if from.is_file() {
            let bytes = copy_private(&from, &args.out.join(name))?;
            files.push(serde_json::json!({"file": name, "bytes": bytes}));
        }
    }
    let has_keystore = args.data_dir.join("keystore.json").is_file();
    let report = serde_json::json!({"backup": args.out, "files": files, "keystore": has_keystore});
    out(args.json, &report, || {
        println!(
            "backed up {} to {}:",
            args.data_dir.display(),
            args.out.display()
        );
        for f in &files {
            println!(
                "  {:<16} {} bytes",
                f["file"].as_str().unwrap_or(""),
                f["bytes"]
            );
        }
        if has_keystore {
            println!(
                "keystore.json is the master key: keep this backup as secret as the data \
                 directory (its unseal secret, if sealed, stays apart from both)"
            );
        } else {
            println!(
                "no keystore.json (PKCS#11 custody?): the keys stay in your HSMs, which this \
                 backup needs"
            );
        }
        println!(
            "restore with: keyward restore --from {} --data-dir NEW_DIR",
            args.out.display()
        );
    })
}

/// Runs `keyward restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let db = args.from.join(DB);
    if !db.is_file() {
        bail!(
            "no {DB} in {}: name a directory written by `keyward backup`",
            args.from.display()
        );
    }
    integrity(&db)?;
    new_private_dir(&args.data_dir)?;
    let mut files = Vec::new();
    for name in std::iter::once(DB).chain(BESIDE) {
        let from = args.from.join(name);
        if from.is_file() {
            copy_private(&from, &args.data_dir.join(name))?;
            files.push(name);
        }
    }
    let report = serde_json::json!({"restored": args.data_dir, "files": files});
    out(args.json, &report, || {
        println!(
            "restored {} into {} ({})",
            args.from.display(),
            args.data_dir.display(),
            files.join(", ")
        );
        println!(
            "start it with: keyward serve --data-dir {} (then `keyward store check` and \
             `keyward audit verify` check it offline)",
            args.data_dir.display()
        );
    })
}

/// `keyward tls ...`.
#[derive(Subcommand)]
pub enum TlsCommand {
    /// Write a new CA (ca.pem) and a server certificate signed by it (server.pem, server.key)
    /// for `keyward serve --tls-cert --tls-key`; clients trust ca.pem (`--ca-cert`, curl
    /// `--cacert`). The CA's private key is not kept.
    SelfSigned {
        /// Directory to write into (created 0700; existing files are not overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A DNS name or IP address of the server (repeatable); localhost, 127.0.0.1 and ::1
        /// are always included.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Validity of the server certificate, in days.
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
}

/// Runs `keyward tls`.
pub fn tls(command: TlsCommand) -> anyhow::Result<()> {
    let TlsCommand::SelfSigned { out, names, days } = command;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let mut all: Vec<String> = names;
    for n in ["localhost", "127.0.0.1", "::1"] {
        if !all.iter().any(|a| a == n) {
            all.push(n.to_owned());
        }
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Keyward local CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now - time::Duration::hours(1);
    ca_params.not_after = now + time::Duration::days(i64::from(days) + 1);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut leaf = CertificateParams::new(all.clone())?;
    leaf.distinguished_name
        .push(DnType::CommonName, all.first().cloned().unwrap_or_default());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(i64::from(days));
    let leaf_key = KeyPair::generate()?;
    let cert = leaf.signed_by(&leaf_key, &ca)?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&out)
        .with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: &str, mode: u32| -> anyhow::Result<PathBuf> {
        let path = out.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .with_context(|| format!("writing {} (it must not exist yet)", path.display()))?;
        f.write_all(text.as_bytes())?;
        Ok(path)
    };
    let ca_path = write("ca.pem", &ca.pem(), 0o644)?;
    let cert_path = write("server.pem", &cert.pem(), 0o644)?;
    let key_path = write("server.key", &leaf_key.serialize_pem(), 0o600)?;
    println!("wrote {} (the CA clients trust)", ca_path.display());
    println!(
        "wrote {} and {} (for {})",
        cert_path.display(),
        key_path.display(),
        all.join(", ")
    );
    println!(
        "serve:   keyward serve --tls-cert {} --tls-key {} ...",
        cert_path.display(),
        key_path.display()
    );
    println!(
        "clients: --ca-cert {} (or KEYWARD_CA_CERT); curl --cacert {}",
        ca_path.display(),
        ca_path.display()
    );
    Ok(())
}

/// Writes shell completions for `cmd` to stdout.
pub fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, cmd, "keyward", &mut buf);
    write_stdout(&buf)
}

/// Writes the man page (roff) for `cmd` to stdout.
pub fn man(cmd: clap::Command) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    write_stdout(&buf)
}

/// Writes to stdout; a reader that closed early (`| head`) is not an error.
fn write_stdout(buf: &[u8]) -> anyhow::Result<()> {
    match std::io::stdout().write_all(buf) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
