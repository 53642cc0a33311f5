//! The SQLite store's files are owner-only: the database and its write-ahead log and shared
//! memory files hold wrapped key material and audit events. See: issue 18, item 12.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use keyward_core::{AuditEvent, Initiator, Outcome, Store};
use keyward_store::SqliteStore;
use time::OffsetDateTime;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn write_one(store: &SqliteStore) {
    let event = AuditEvent::new(
        "kms.secrets.wrap",
        Outcome::Success,
        200,
        Initiator {
            id: "IBMid-files-test".into(),
            address: None,
        },
        "request-1".into(),
        OffsetDateTime::now_utc(),
    );
    store.append_audit(&event).await.unwrap();
}

#[tokio::test]
async fn the_database_and_its_log_files_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    // Whatever the process umask allows, the files are 0600.
    let store = SqliteStore::open(dir.path()).unwrap();
    write_one(&store).await;
    for file in ["keyward.db", "keyward.db-wal", "keyward.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
}

#[tokio::test]
async fn log_files_left_readable_by_an_earlier_release_are_made_owner_only_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        write_one(&store).await;
    }
    // As 0.1.0 left them; the log files are present while another process has the database
    // open, so they are made here and opened over.
    for file in ["keyward.db", "keyward.db-wal", "keyward.db-shm"] {
        let path = dir.path().join(file);
        if !path.exists() {
            std::fs::write(&path, b"").unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = SqliteStore::open(dir.path()).unwrap();
    write_one(&store).await;
    for file in ["keyward.db", "keyward.db-wal", "keyward.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
}
