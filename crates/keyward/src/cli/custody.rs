//! `keyward custody`: sealing the software keystore, and `keyward recover`: offline recovery of
//! an instance locked by its allowedIP policy or an account whose administrator key is lost.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use keyward_custody::UnsealSecret;
use keyward_runtime::ServerConfig;
use keyward_runtime::recovery::{self, InstanceId};

/// Custody subcommands.
#[derive(Subcommand)]
pub enum CustodyCommand {
    /// Seal the software keystore (keystore.json) of a data directory under an unseal secret,
    /// in place: a base64 256-bit key (see `new-unseal-key`) or a passphrase of at least 12
    /// bytes (stretched with Argon2id). The keys do not change. Stop the server first, then start
    /// it with --unseal-key-file.
    Seal {
        /// The data directory.
        #[arg(long, env = "KEYWARD_DATA_DIR")]
        data_dir: PathBuf,
        /// The file holding the unseal secret.
        #[arg(long, env = "KEYWARD_UNSEAL_KEY_FILE")]
        unseal_key_file: PathBuf,
    },
    /// Write a new random 256-bit unseal key (base64) to a new file, mode 0600.
    NewUnsealKey {
        /// The file to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a custody subcommand.
pub fn run(command: CustodyCommand) -> anyhow::Result<()> {
    match command {
        CustodyCommand::Seal {
            data_dir,
            unseal_key_file,
        } => {
            let secret = UnsealSecret::from_file(&unseal_key_file)
                .with_context(|| format!("reading {}", unseal_key_file.display()))?;
            keyward_custody::seal_keystore(&data_dir, &secret)?;
            println!(
                "sealed {}: start the server with --unseal-key-file {} (keep that file apart from \
                 the data directory and its backups)",
                data_dir.join(keyward_custody::KEYSTORE_FILE).display(),
                unseal_key_file.display()
            );
            Ok(())
        }
        CustodyCommand::NewUnsealKey { out } => {
            let text = UnsealSecret::generate_key_text()
                .map_err(|e| anyhow::anyhow!("generating a key: {e}"))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            println!("wrote a new unseal key to {} (mode 0600)", out.display());
            Ok(())
        }
    }
}

/// Where a recovery works: a data directory and its custody, with the server stopped.
#[derive(Args)]
pub struct RecoverTarget {
    /// The data directory.
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: PathBuf,
    /// The server's config (its `[store]` and `[custody]`); default: SQLite and the software
    /// keystore in the data directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The file holding the keystore's unseal secret, when it is sealed.
    #[arg(long, env = "KEYWARD_UNSEAL_KEY_FILE")]
    unseal_key_file: Option<PathBuf>,
    /// The instance (default: the one in the data directory's bootstrap.json).
    #[arg(long)]
    instance: Option<String>,
}

/// Recovery subcommands: they need the data directory and its custody, run offline, and are
/// audited as `keyward-recovery`.
#[derive(Subcommand)]
pub enum RecoverCommand {
    /// Turn off an instance's allowedIP policy (when it locks every administrator out).
    AllowedIp(RecoverTarget),
    /// Give the bootstrap administrator a new API key (printed once, as JSON), unlocking (or
    /// making again) its identity and its Administrator policy.
    AdminKey(RecoverTarget),
}

fn instance_of(dir: &Path, given: Option<String>) -> anyhow::Result<InstanceId> {
    let text = match given {
        Some(i) => i,
        None => {
            let path = dir.join(keyward_runtime::bootstrap::BOOTSTRAP_FILE);
            let boot: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| {
                    format!("reading {} (or pass --instance)", path.display())
                })?)?;
            boot["instance_id"]
                .as_str()
                .context("bootstrap.json has no instance_id (pass --instance)")?
                .to_owned()
        }
    };
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not an instance id"))
}

/// Runs a recovery subcommand.
pub async fn recover(command: RecoverCommand) -> anyhow::Result<()> {
    let (RecoverCommand::AllowedIp(target) | RecoverCommand::AdminKey(target)) = &command;
    let mut config = match &target.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    config.data_dir = target.data_dir.clone();
    if let Some(f) = &target.unseal_key_file {
        config.custody.unseal_key_file = Some(f.clone());
    }
    // Nobody serves: no scheduler, nothing bound. The start's checks run as for a server.
    let instance = instance_of(&target.data_dir, target.instance.clone())?;
    let runtime = keyward_runtime::Runtime::open(config).await?;
    let store = runtime.keys.store();
    let custody = runtime.keys.custody();
    match command {
        RecoverCommand::AllowedIp(_) => {
            if recovery::disable_allowed_ip(store, custody, instance).await? {
                println!("instance {instance}: allowedIP policy turned off (audited)");
            } else {
                println!("instance {instance}: no allowedIP policy in force; nothing changed");
            }
        }
        RecoverCommand::AdminKey(_) => {
            let key = recovery::new_admin_api_key(store, custody, instance).await?;
            let api_key =
                std::str::from_utf8(key.full.expose()).context("the new API key is not text")?;
            println!(
                "{}",
                serde_json::json!({"api_key": api_key, "instance_id": instance.to_string()})
            );
            eprintln!(
                "keyward: a new API key for the bootstrap administrator (id {}), shown once; \
                 audited",
                key.id
            );
        }
    }
    Ok(())
}
