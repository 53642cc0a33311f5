//! What a start checks before it creates anything: a data directory that holds part of an
//! install (a keystore, a bootstrap file, a write-ahead log) but not its database is damaged, not
//! new (issue 18, items 18 and 19); a keystore that is missing beside a database that holds
//! records, or that is another install's, is refused; a data directory owned by another user is
//! refused (item 20). Every refusal names the file and the recovery, and comes before anything
//! in the directory is created or changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_core::{Custody, Store};
use keyward_custody::KEYSTORE_FILE;
use keyward_store::DB_FILE;

use crate::ServerConfig;
use crate::bootstrap::BOOTSTRAP_FILE;

/// Why a start was refused. Each message names what is wrong and what to do; nothing in the
/// data directory was changed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Files of an install are present but its database is missing or empty.
    #[error(
        "{dir} holds {present} but its database {db} is {state}: this is a damaged install, not \
         a new one, and starting would create an empty store beside its keys. Restore {db_file} \
         (with its -wal file, if the backup has one) from a backup of this data directory, or \
         move the directory aside to start a new install. Nothing was changed."
    )]
    DatabaseMissing {
        /// The data directory.
        dir: PathBuf,
        /// The database path.
        db: PathBuf,
        /// The database file's name.
        db_file: &'static str,
        /// `missing` or `empty (0 bytes)`.
        state: &'static str,
        /// The install's files that are there.
        present: String,
    },
    /// Software custody with no keystore beside a database that holds records.
    #[error(
        "{keystore} is missing, but the database holds records signed and keys wrapped by the \
         master key it held: a new keystore could open none of them. Restore {keystore_file} \
         from a backup of this data directory (several nodes on one database: every node needs \
         the same master key, so copy it from another node's data directory). Nothing was \
         changed."
    )]
    KeystoreMissing {
        /// The keystore path.
        keystore: PathBuf,
        /// The keystore's file name.
        keystore_file: &'static str,
    },
    /// The custody's master key cannot unwrap what the database holds.
    #[error(
        "the master key of {custody} custody does not match this database: it cannot unwrap the \
         database's token-signing key ({detail}). The keystore (or HSM) belongs to another \
         install, or the database does. Restore this data directory's own keystore.json from a \
         backup (or point [custody] at this database's HSMs). Nothing was changed."
    )]
    CustodyMismatch {
        /// The custody backend's name.
        custody: &'static str,
        /// What failed (never key material).
        detail: String,
    },
    /// The data directory or one of its files belongs to another user.
    #[error(
        "{path} is owned by uid {owner}, but keyward runs as uid {euid}: files this process \
         creates there would belong to another user than the ones it finds, and the owner can \
         replace the keystore or database under it. Run keyward as uid {owner}, or `chown -R \
         {euid} {dir}`."
    )]
    ForeignOwner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        euid: u32,
        /// The data directory.
        dir: PathBuf,
    },
    /// A file could not be inspected.
    #[error("inspecting {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The files of an install in a data directory, besides the database.
const COMPANIONS: [&str; 4] = [
    KEYSTORE_FILE,
    BOOTSTRAP_FILE,
    "keyward.db-wal",
    "keyward.db-shm",
];

fn exists(path: &Path) -> Result<Option<std::fs::Metadata>, StartupError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StartupError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Checks the data directory before anything in it is opened or created: owned by this
/// process's user, and (SQLite store) not an install whose database is missing or empty.
/// A directory that does not exist yet passes (it is a first start).
pub fn check_data_dir(config: &ServerConfig) -> Result<(), StartupError> {
    let dir = &config.data_dir;
    if exists(dir)?.is_none() {
        return Ok(());
    }
    check_owner(dir)?;
    let sqlite = config.store.backend == "sqlite";
    let db = dir.join(DB_FILE);
    let db_meta = exists(&db)?;
    if !sqlite {
        return Ok(());
    }
    let state = match &db_meta {
        None => "missing",
        Some(m) if m.len() == 0 => "empty (0 bytes)",
        Some(_) => return Ok(()),
    };
    let mut present = Vec::new();
    for name in COMPANIONS {
        if exists(&dir.join(name))?.is_some() {
            present.push(name);
        }
    }
    if present.is_empty() {
        // Nothing of an install: a new data directory (or a first start stopped before the
        // database had a page, with nothing else written yet).
        return Ok(());
    }
    Err(StartupError::DatabaseMissing {
        dir: dir.clone(),
        db,
        db_file: DB_FILE,
        state,
        present: present.join(", "),
    })
}

/// The data directory and the install's files in it must belong to the user this process runs
/// as. Refused rather than warned about: a root process serving a directory another user owns
/// creates root-owned files there (a `-wal` the owner's next start cannot open), and the owner
/// can replace `keystore.json` or the database under a process that trusts them.
fn check_owner(dir: &Path) -> Result<(), StartupError> {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    let mut paths = vec![dir.to_owned()];
    paths.extend(
        [DB_FILE]
            .into_iter()
            .chain(COMPANIONS)
            .map(|name| dir.join(name)),
    );
    for path in paths {
        if let Some(meta) = exists(&path)?
            && meta.uid() != euid
        {
            return Err(StartupError::ForeignOwner {
                path,
                owner: meta.uid(),
                euid,
                dir: dir.to_owned(),
            });
        }
    }
    Ok(())
}

/// Whether the store holds anything custody wrapped or signed: a token-signing key or an
/// instance (a first start writes the signing key first; a store with neither was never used).
pub async fn store_holds_records(store: &Arc<dyn Store>) -> anyhow::Result<bool> {
    Ok(!store.signing_keys().await?.is_empty() || !store.instances().await?.is_empty())
}

/// With software custody, refuses a missing keystore beside a store that holds records (a new
/// one would be written, and open nothing).
pub async fn check_keystore_present(
    config: &ServerConfig,
    store: &Arc<dyn Store>,
) -> anyhow::Result<()> {
    if config.custody.backend != "software" {
        return Ok(());
    }
    let keystore = config.data_dir.join(KEYSTORE_FILE);
    if exists(&keystore)?.is_some() || !store_holds_records(store).await? {
        return Ok(());
    }
    Err(StartupError::KeystoreMissing {
        keystore,
        keystore_file: KEYSTORE_FILE,
    }
    .into())
}

/// Custody must unwrap the database's token-signing key (every key of the store is wrapped by
/// the same master key): a keystore or HSM of another install is refused with a message that
/// says so, before anything is written.
pub async fn check_custody_matches(
    store: &Arc<dyn Store>,
    custody: &Arc<dyn Custody>,
) -> anyhow::Result<()> {
    let Some(rec) = store.signing_keys().await?.into_iter().next() else {
        return Ok(());
    };
    match custody.unwrap_material(&rec.private_key) {
        Ok(_) => Ok(()),
        // An HSM that is down is not a mismatch: the start fails on it later with its own error.
        Err(keyward_core::CustodyError::Unavailable(_)) => Ok(()),
        Err(e) => Err(StartupError::CustodyMismatch {
            custody: custody.name(),
            detail: e.to_string(),
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ServerConfig {
        ServerConfig {
            data_dir: dir.to_owned(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn a_new_or_missing_data_dir_passes() {
        let dir = tempfile::tempdir().unwrap();
        check_data_dir(&config(dir.path())).unwrap();
        check_data_dir(&config(&dir.path().join("not-yet"))).unwrap();
    }

    /// See: issue 18, item 18.
    #[test]
    fn a_keystore_or_log_without_its_database_is_refused() {
        for (companion, db) in [
            (KEYSTORE_FILE, None),
            (BOOTSTRAP_FILE, Some(&b""[..])),
            ("keyward.db-wal", None),
            ("keyward.db-wal", Some(&b""[..])),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(companion), b"x").unwrap();
            if let Some(bytes) = db {
                std::fs::write(dir.path().join(DB_FILE), bytes).unwrap();
            }
            let err = check_data_dir(&config(dir.path())).unwrap_err().to_string();
            assert!(err.contains(companion), "{err}");
            assert!(err.contains("keyward.db"), "{err}");
            assert!(err.contains("from a backup"), "{err}");
        }
    }

    #[test]
    fn a_database_with_its_companions_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DB_FILE), b"SQLite format 3\0").unwrap();
        std::fs::write(dir.path().join(KEYSTORE_FILE), b"{}").unwrap();
        check_data_dir(&config(dir.path())).unwrap();
    }

    #[test]
    fn postgres_data_dirs_have_no_database_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEYSTORE_FILE), b"{}").unwrap();
        let mut c = config(dir.path());
        c.store.backend = "postgres".into();
        check_data_dir(&c).unwrap();
    }

    /// See: issue 18, item 20. Only root can make a file another user's.
    #[test]
    fn a_data_dir_owned_by_another_user_is_refused() {
        if rustix::process::geteuid().as_raw() != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(KEYSTORE_FILE);
        std::fs::write(&file, b"{}").unwrap();
        std::os::unix::fs::chown(&file, Some(65534), Some(65534)).unwrap();
        let err = check_data_dir(&config(dir.path())).unwrap_err().to_string();
        assert!(err.contains("uid 65534") && err.contains("chown"), "{err}");
    }
}
