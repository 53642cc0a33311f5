//! The shared Store conformance suite, mounted for SQLite.

use keyward_store::SqliteStore;

keyward_test::store_suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
});

keyward_test::kmip_store_suite!(sqlite_kmip, {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
});
