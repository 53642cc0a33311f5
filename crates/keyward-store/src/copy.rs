//! Moving a deployment from SQLite to PostgreSQL (`keyward store migrate`): every row of every
//! table copied as stored, so record signatures still verify under the same custody and the audit
//! chain continues unbroken (positions and hashes are copied, not recomputed).
//!
//! Generic over tables: both schemas have the same tables and columns, so each table is copied
//! by the column list PostgreSQL reports, each value converted by the PostgreSQL column's type
//! (a column added by a migration, like KMIP objects' in SQLite's 11 and PostgreSQL's 6, is
//! copied without naming it here). The source must be of this build's schema version.
//! Resumable: rows are inserted with `ON CONFLICT DO NOTHING` in batches, each its own
//! transaction, so a run stopped anywhere is finished by running it again. A target that holds
//! data of its own (not from an unfinished migration of the same source) is refused.

use std::path::Path;

use keyward_core::StoreError;
use rusqlite::{OpenFlags, types::Value};
use tokio_postgres::types::ToSql;

use crate::postgres::{PgStore, pg_error};
use crate::rows::nanos;
use crate::sqlite::DB_FILE;

/// Every table of the schema, parents before children.
pub const TABLES: &[&str] = &[
    "instances",
    "key_rings",
    "keys",
    "key_versions",
    "key_aliases",
    "instance_policies",
    "import_tokens",
    "api_keys",
    "signing_keys",
    "identities",
    "access_policies",
    "authorizations",
    "refresh_tokens",
    "kmip_adapters",
    "kmip_certificates",
    "kmip_objects",
    "registrations",
    "key_events",
    "event_subscriptions",
    "audit_events",
    "audit_checkpoints",
    "audit_export_cursors",
];

/// Rows per batch (and per transaction) on the target.
const BATCH: usize = 500;

/// Progress of a copy: the table, rows of it copied so far, rows it has.
#[derive(Debug, Clone, Copy)]
pub struct CopyProgress<'a> {
    /// The table being copied.
    pub table: &'a str,
    /// Rows copied (or found already copied) so far.
    pub done: u64,
    /// Rows in the source table.
    pub total: u64,
}

/// What was copied: rows per table.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// (table, rows in the source, rows in the target after the copy).
    pub tables: Vec<(String, u64, u64)>,
}

fn sqlite(e: rusqlite::Error) -> StoreError {
    crate::rows::sql_error(e)
}

/// A value read from SQLite, as the PostgreSQL column's type wants it.
fn convert(
    v: Value,
    pg_type: &str,
    column: &str,
) -> Result<Box<dyn ToSql + Sync + Send>, StoreError> {
    let bad = |what: &str| StoreError::Corrupt(format!("column {column}: {what} for {pg_type}"));
    Ok(match (pg_type, v) {
        ("bigint", Value::Null) => Box::new(None::<i64>),
        ("bigint", Value::Integer(i)) => Box::new(i),
        ("boolean", Value::Null) => Box::new(None::<bool>),
        ("boolean", Value::Integer(i)) => Box::new(i != 0),
        ("bytea", Value::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", Value::Blob(b)) => Box::new(b),
        ("text", Value::Null) => Box::new(None::<String>),
        ("text", Value::Text(t)) => Box::new(t),
        (_, Value::Real(_)) => return Err(bad("a real number")),
        (_, Value::Blob(_)) => return Err(bad("a blob")),
        (_, Value::Text(_)) => return Err(bad("text")),
        (_, Value::Integer(_)) => return Err(bad("an integer")),
        (_, Value::Null) => return Err(bad("an unknown type")),
    })
}

/// Copies every row of the SQLite store in `data_dir` into `target`, calling `progress` as it
/// goes. The source is opened read-only in one read transaction (one consistent snapshot; stop
/// the server first all the same, or writes made after the snapshot are not copied).
pub async fn copy_sqlite_to_postgres(
    data_dir: &Path,
    target: &PgStore,
    mut progress: impl FnMut(CopyProgress<'_>),
) -> Result<CopyReport, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no SQLite store at {}",
            path.display()
        )));
    }
    let src = rusqlite::Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite)?;
    src.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    src.execute_batch("BEGIN").map_err(sqlite)?;
    source_is_current(&src)?;
    let source = std::fs::canonicalize(&path)
        .unwrap_or(path.clone())
        .display()
        .to_string();

    let mut client = target.client().await?;
    claim_target(&client, &source).await?;

    let mut report = CopyReport::default();
    for table in TABLES {
        let columns: Vec<(String, String)> = client
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[table],
            )
            .await
            .map_err(pg_error)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let total: i64 = src
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sqlite)?;
        let total = u64::try_from(total).unwrap_or(0);
        let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let insert = client
            .prepare(&format!(
                "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({}) ON CONFLICT DO NOTHING",
                names.join(", "),
                placeholders.join(", ")
            ))
            .await
            .map_err(pg_error)?;
        let mut select = src
            .prepare(&format!(
                "SELECT rowid, {} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT {BATCH}",
                names.join(", ")
            ))
            .map_err(sqlite)?;
        let mut after: i64 = 0;
        let mut done: u64 = 0;
        progress(CopyProgress { table, done, total });
        loop {
            let mut batch: Vec<Vec<Box<dyn ToSql + Sync + Send>>> = Vec::with_capacity(BATCH);
            {
                let mut rows = select.query([after]).map_err(sqlite)?;
                while let Some(r) = rows.next().map_err(sqlite)? {
                    after = r.get(0).map_err(sqlite)?;
                    let mut values = Vec::with_capacity(columns.len());
                    for (i, (name, ty)) in columns.iter().enumerate() {
                        let v: Value = r.get(i + 1).map_err(sqlite)?;
                        values.push(convert(v, ty, name)?);
                    }
                    batch.push(values);
                }
            }
            if batch.is_empty() {
                break;
            }
            let tx = client.transaction().await.map_err(pg_error)?;
            for values in &batch {
                let params: Vec<&(dyn ToSql + Sync)> = values
                    .iter()
                    .map(|b| b.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                tx.execute(&insert, &params).await.map_err(pg_error)?;
            }
            tx.commit().await.map_err(pg_error)?;
            done += batch.len() as u64;
            progress(CopyProgress { table, done, total });
        }
        let copied: i64 = client
            .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
            .await
            .map_err(pg_error)?
            .get(0);
        report.tables.push((
            (*table).to_owned(),
            total,
            u64::try_from(copied).unwrap_or(0),
        ));
    }
    // Identity columns continue after the copied rows.
    for (table, column) in [("key_events", "seq"), ("audit_checkpoints", "id")] {
        client
            .execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', '{column}'),
                                   (SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}), false)"
                ),
                &[],
            )
            .await
            .map_err(pg_error)?;
    }
    client
        .execute(
            "UPDATE store_migrations SET finished_at = $2 WHERE source = $1",
            &[&source, &nanos(time::OffsetDateTime::now_utc())],
        )
        .await
        .map_err(pg_error)?;
    Ok(report)
}

/// Refuses a source whose schema is not this build's: the copy takes the columns PostgreSQL has
/// (this build's), and a store of an older build lacks some (e.g. the KMIP object columns of
/// migration 11). Such a store is brought up to date by starting this Keyward on it once.
fn source_is_current(src: &rusqlite::Connection) -> Result<(), StoreError> {
    let version: i64 = src
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    let known = crate::schema::VERSION;
    match usize::try_from(version) {
        Ok(v) if v == known => Ok(()),
        Ok(v) if v < known => Err(StoreError::Unavailable(format!(
            "the SQLite store's schema is version {v}, older than this Keyward's ({known}): \
             start this Keyward on it once (it migrates at start), stop it, then migrate"
        ))),
        _ => Err(StoreError::Unavailable(format!(
            "the SQLite store's schema is version {version}, newer than this Keyward knows \
             ({known}): migrate with the Keyward that wrote it"
        ))),
    }
}

/// Refuses a target holding data of its own; records (or resumes) this source's migration.
async fn claim_target(client: &deadpool_postgres::Object, source: &str) -> Result<(), StoreError> {
    let earlier: Option<Option<i64>> = client
        .query_opt(
            "SELECT finished_at FROM store_migrations WHERE source = $1",
            &[&source],
        )
        .await
        .map_err(pg_error)?
        .map(|r| r.get(0));
    match earlier {
        Some(Some(_)) => {
            return Err(StoreError::Unavailable(
                "this data directory was already migrated into the target database".into(),
            ));
        }
        Some(None) => return Ok(()), // resuming
        None => {}
    }
    let other: i64 = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM instances) + (SELECT COUNT(*) FROM store_migrations)",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if other > 0 {
        return Err(StoreError::Unavailable(
            "the target database is not empty: migrate into a new database".into(),
        ));
    }
    client
        .execute(
            "INSERT INTO store_migrations (source, started_at) VALUES ($1, $2)",
            &[&source, &nanos(time::OffsetDateTime::now_utc())],
        )
        .await
        .map_err(pg_error)?;
    Ok(())
}
