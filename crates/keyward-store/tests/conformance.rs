//! The shared Store conformance suites, mounted for SQLite and for PostgreSQL (a throwaway
//! cluster per test process, a fresh database per test).

use keyward_store::SqliteStore;

keyward_test::store_suite!(sqlite, {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
});

keyward_test::kmip_store_suite!(sqlite_kmip, {
    let dir = tempfile::tempdir().unwrap();
    (SqliteStore::open(dir.path()).unwrap(), dir)
});

fn postgres() -> (keyward_store::PgStore, ()) {
    let options = keyward_store::PgOptions {
        url: keyward_test::postgres::cluster().fresh_database(),
        pool_size: 4,
    };
    // Connections are made on first use, on the test's own runtime.
    let store = keyward_test::block_on(keyward_store::PgStore::connect(&options)).unwrap();
    (store, ())
}

keyward_test::store_suite!(postgres_store, postgres());

keyward_test::kmip_store_suite!(postgres_kmip, postgres());
