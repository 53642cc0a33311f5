//! A start on a damaged data directory is refused, names the missing file and the recovery, exits
//! 1 and changes nothing (issue 18, items 18, 19 and 20): a deleted or emptied database beside
//! its keystore, bootstrap file and log; a missing keystore beside a database; another install's
//! keystore; a corrupted database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::{api, keyward, kill9, spawn, stop};

/// Runs `keyward serve` on `dir` with its `keyward.toml`, which must refuse to start: (exit
/// code, stderr).
fn refused(dir: &Path) -> (i32, String) {
    let config = dir.join("keyward.toml");
    common::refused(dir, &["--config", config.to_str().unwrap()])
}

/// A data directory with a key, stopped with SIGKILL (so its log is not checkpointed away).
fn used_data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    api(dir.path(), &p.url).create_root_key("kept");
    kill9(p);
    dir
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// See: issue 18, item 18. The server printed "first start", served an empty instance and
/// overwrote bootstrap.json.
#[test]
fn a_deleted_database_is_refused_and_nothing_is_overwritten() {
    let dir = used_data_dir();
    let d = dir.path();
    let boot = read(&d.join("bootstrap.json")).unwrap();
    let keystore = read(&d.join("keystore.json")).unwrap();
    std::fs::remove_file(d.join("keyward.db")).unwrap();
    let wal = read(&d.join("keyward.db-wal"));

    let (code, err) = refused(d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("keyward.db") && err.contains("missing"),
        "{err}"
    );
    assert!(
        err.contains("keystore.json") && err.contains("bootstrap.json"),
        "{err}"
    );
    assert!(err.contains("from a backup"), "{err}");
    assert!(!err.contains("first start"), "{err}");
    assert!(!d.join("keyward.db").exists(), "a new database was created");
    assert_eq!(read(&d.join("bootstrap.json")).unwrap(), boot);
    assert_eq!(read(&d.join("keystore.json")).unwrap(), keystore);
    assert_eq!(read(&d.join("keyward.db-wal")), wal);
}

/// See: issue 18, item 18. A database truncated to 0 bytes, its log still there.
#[test]
fn an_empty_database_is_refused_and_its_log_kept() {
    let dir = used_data_dir();
    let d = dir.path();
    let boot = read(&d.join("bootstrap.json")).unwrap();
    std::fs::write(d.join("keyward.db"), b"").unwrap();
    let wal = read(&d.join("keyward.db-wal"));

    let (code, err) = refused(d);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("empty (0 bytes)"), "{err}");
    assert!(err.contains("from a backup"), "{err}");
    assert_eq!(read(&d.join("bootstrap.json")).unwrap(), boot);
    assert_eq!(read(&d.join("keyward.db-wal")), wal);
    assert_eq!(std::fs::metadata(d.join("keyward.db")).unwrap().len(), 0);
}

/// See: issue 18, item 19. A misleading "custody integrity check failed", and a new
/// keystore.json written beside the database.
#[test]
fn a_missing_keystore_is_refused_and_not_recreated() {
    let dir = used_data_dir();
    let d = dir.path();
    let boot = read(&d.join("bootstrap.json")).unwrap();
    std::fs::remove_file(d.join("keystore.json")).unwrap();

    let (code, err) = refused(d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("keystore.json is missing") && err.contains("from a backup"),
        "{err}"
    );
    assert!(
        !d.join("keystore.json").exists(),
        "a new keystore was written"
    );
    assert_eq!(read(&d.join("bootstrap.json")).unwrap(), boot);
}

/// See: issue 18, item 19. Another install's keystore gave the same misleading message.
#[test]
fn another_installs_keystore_is_named_as_such() {
    let dir = used_data_dir();
    let other = tempfile::tempdir().unwrap();
    let p = spawn(other.path());
    api(other.path(), &p.url);
    stop(p);
    let d = dir.path();
    std::fs::copy(other.path().join("keystore.json"), d.join("keystore.json")).unwrap();

    let (code, err) = refused(d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("master key") && err.contains("does not match this database"),
        "{err}"
    );
}

/// A new install still starts, and restarts, on the same directory.
#[test]
fn a_new_data_dir_starts_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn(dir.path());
    api(dir.path(), &p.url);
    stop(p);
    let boot = std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap();
    let p = spawn(dir.path());
    api(dir.path(), &p.url).create_root_key("after-restart");
    stop(p);
    // The same administrator and instance (only the URL is updated).
    let again = std::fs::read_to_string(dir.path().join("bootstrap.json")).unwrap();
    let field =
        |text: &str, f: &str| serde_json::from_str::<serde_json::Value>(text).unwrap()[f].clone();
    assert_eq!(field(&again, "api_key"), field(&boot, "api_key"));
    assert_eq!(field(&again, "instance_id"), field(&boot, "instance_id"));
}

/// See: issue 18, item 20. 8 KB garbled in the database's index pages: the server started and
/// served with `PRAGMA integrity_check` failing.
#[test]
fn a_database_with_garbled_index_pages_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = spawn(d);
    let a = api(d, &p.url);
    for i in 0..20 {
        a.create_root_key(&format!("k{i}"));
    }
    stop(p);
    let d_str = d.to_str().unwrap();
    let (code, out, err) = keyward(&["store", "check", "--data-dir", d_str]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("integrity_check:    ok"), "{out}");
    assert!(out.contains("20 keys, 20 versions, ok"), "{out}");

    // Fold the log into the file, then garble two pages from the root of an index of keys.
    let db = d.join("keyward.db");
    let (page, page_size) = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let page: i64 = c
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name = 'keys' ORDER BY rootpage LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (page as u64, size as u64)
    };
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        f.seek(SeekFrom::Start((page - 1) * page_size)).unwrap();
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 131 + 7) as u8).collect();
        f.write_all(&garbage).unwrap();
        f.sync_all().unwrap();
    }

    let (code, err) = refused(d);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("quick_check") && err.contains("corrupted"),
        "{err}"
    );
    assert!(err.contains("keyward store check"), "{err}");

    let (code, out, err) = keyward(&["store", "check", "--data-dir", d_str]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("integrity_check:    ") && !out.contains("integrity_check:    ok"),
        "{out}"
    );
    assert!(
        err.contains("damaged") && err.contains("from a backup"),
        "{err}"
    );
}

/// `keyward store check` finds a key record whose signature no longer verifies.
#[test]
fn store_check_names_a_record_that_fails_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = spawn(d);
    let id = api(d, &p.url).create_root_key("signed");
    stop(p);
    {
        let c = rusqlite::Connection::open(d.join("keyward.db")).unwrap();
        c.execute("UPDATE keys SET state = 2 WHERE id = ?1", [&id])
            .unwrap();
    }
    let (code, out, _) = keyward(&["store", "check", "--data-dir", d.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("does not verify: key {id}")), "{out}");
    assert!(out.contains("integrity_check:    ok"), "{out}");
}
