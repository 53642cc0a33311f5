//! Integrity checks of the SQLite database: the quick one every open runs (issue 18, item 20: a
//! database with garbled index pages was served), and the full one behind `keyward store
//! check` (SQLite's `integrity_check`, foreign keys, and every key record's and version's
//! custody signature), read-only.

use std::path::Path;

use keyward_core::{Custody, InstanceId, KeyVersion, Unverified, Verified};
use rusqlite::{Connection, OpenFlags};

use crate::rows::{key_columns, key_from_row, sql_error, version_columns_v, version_from_row};
use crate::sqlite::DB_FILE;
use keyward_core::StoreError;

/// Problems reported at most, by the quick check and by each part of the full one.
const MAX_PROBLEMS: usize = 20;

/// How much of the file a SQLite open checks before it writes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuickCheck {
    /// No check.
    Off,
    /// `PRAGMA quick_check` of every table and its indexes but the audit trail's: the records
    /// that grow with keys and identities, not with traffic (about 0.2 s, warm, for 100 000
    /// keys in a 76 MB file).
    Records,
    /// `PRAGMA quick_check` of the whole file, audit trail included: its cost grows with every
    /// request ever audited (1.4 s warm, 9 to 18 s cold, for an 800 MB file on this machine).
    Full,
}

/// The table left out of [`QuickCheck::Records`]: it grows by one row per request.
const AUDIT_TABLE: &str = "audit_events";

/// Runs `PRAGMA quick_check` on `conn` as `mode` says: the pages of the checked b-trees are
/// read and their structure checked (not that indexes match their tables: that is
/// `integrity_check`, in `keyward store check`).
pub(crate) fn quick_check(
    conn: &Connection,
    path: &Path,
    mode: QuickCheck,
) -> Result<(), StoreError> {
    let statements = match mode {
        QuickCheck::Off => return Ok(()),
        QuickCheck::Full => vec![format!("PRAGMA quick_check({MAX_PROBLEMS})")],
        QuickCheck::Records => {
            let mut stmt = conn
                .prepare(
                    // Not the FTS5 table itself: checking it compares the whole trigram
                    // index with its content (35 s at start for a million keys); its
                    // shadow tables, where the index is stored, are checked as the others.
                    "SELECT name FROM sqlite_schema WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite_%' AND name != ?1 \
                     AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
                )
                .map_err(corrupt)?;
            let names = stmt
                .query_map([AUDIT_TABLE], |r| r.get::<_, String>(0))
                .map_err(corrupt)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(corrupt)?;
            names
                .into_iter()
                // Our own tables' names; anything else is not ours to quote.
                .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(|n| format!("PRAGMA quick_check('{n}')"))
                .collect()
        }
    };
    let mut problems = Vec::new();
    for sql in statements {
        match pragma_rows(conn, &sql) {
            Ok(found) => problems.extend(found),
            // Pages too damaged for the check to walk are corruption too.
            Err(StoreError::Corrupt(e)) => problems.push(e),
            Err(e) => return Err(e),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(StoreError::Corrupt(format!(
        "{} failed SQLite's quick_check ({}): the database is corrupted and is not served. Stop \
         here, restore {DB_FILE} from a backup (run `keyward store check` on it first), or run \
         `keyward store check` for the full report",
        path.display(),
        problems.join("; ")
    )))
}

/// The rows of an integrity pragma, without the single `ok` it answers when all is well.
fn pragma_rows(conn: &Connection, sql: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(corrupt)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(corrupt)?;
    let mut out = Vec::new();
    for row in rows {
        let row = row.map_err(corrupt)?;
        if row != "ok" {
            out.push(row);
        }
    }
    Ok(out)
}

/// A database too damaged to even run the check is corrupt, not unavailable.
fn corrupt(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Corrupt(e.to_string())
        }
        _ => sql_error(e),
    }
}

/// What `keyward store check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// `PRAGMA integrity_check`'s problems (empty: the file is sound).
    pub integrity: Vec<String>,
    /// Rows that break a foreign key (`PRAGMA foreign_key_check`), as `table rowid`.
    pub foreign_keys: Vec<String>,
    /// Key records whose signature was checked.
    pub keys: u64,
    /// Key versions whose signature was checked.
    pub versions: u64,
    /// Records whose signature does not verify or that cannot be read, by id.
    pub bad_records: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn ok(&self) -> bool {
        self.integrity.is_empty() && self.foreign_keys.is_empty() && self.bad_records.is_empty()
    }
}

/// Checks `dir/keyward.db` read-only: SQLite's full `integrity_check` and `foreign_key_check`,
/// then every key record's and key version's signature with `custody` (an HMAC each with
/// software custody; one HSM call each with PKCS#11). The audit chain is `keyward audit
/// verify`'s.
pub fn check_sqlite(dir: &Path, custody: &dyn Custody) -> Result<CheckReport, StoreError> {
    let path = dir.join(DB_FILE);
    if !path.exists() {
        return Err(StoreError::Unavailable(format!(
            "no database at {}",
            path.display()
        )));
    }
    let c =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(corrupt)?;
    c.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_error)?;
    let mut report = CheckReport {
        integrity: match pragma_rows(&c, &format!("PRAGMA integrity_check({MAX_PROBLEMS})")) {
            Ok(problems) => problems,
            // Pages too damaged for the check to walk.
            Err(StoreError::Corrupt(e)) => vec![e],
            Err(e) => return Err(e),
        },
        ..CheckReport::default()
    };
    let foreign_keys = (|| -> rusqlite::Result<Vec<String>> {
        let mut stmt = c.prepare("PRAGMA foreign_key_check")?;
        let rows = stmt.query_map([], |r| {
            Ok(format!(
                "{} row {}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?.unwrap_or(-1)
            ))
        })?;
        rows.take(MAX_PROBLEMS).collect()
    })();
    report.foreign_keys = foreign_keys.unwrap_or_else(|e| vec![e.to_string()]);
    // A file that fails integrity_check may still have readable records: check what it can.
    c.execute_batch("BEGIN").map_err(sql_error)?;
    report.keys = check_records(
        &c,
        concat!("SELECT ", key_columns!(), ", NULL FROM keys"),
        "keys",
        &mut report.bad_records,
        |row| {
            let id = row.get::<_, String>(0).unwrap_or_default();
            let ok = key_from_row(row)
                .ok()
                .is_some_and(|k| Verified::check(Unverified::new(k), custody).is_ok());
            (!ok).then(|| format!("key {id}"))
        },
    )?;
    report.versions = check_records(
        &c,
        concat!(
            "SELECT ",
            version_columns_v!(),
            ", k.instance_id FROM key_versions v JOIN keys k ON k.id = v.key_id"
        ),
        "key_versions",
        &mut report.bad_records,
        |row| {
            let id = row.get::<_, String>(2).unwrap_or_default();
            let instance = row
                .get::<_, String>(7)
                .ok()
                .and_then(|s| s.parse::<InstanceId>().ok());
            let ok = match (version_from_row(row), instance) {
                (Ok(v), Some(instance)) => {
                    let v: Unverified<KeyVersion> = Unverified::new(v);
                    Verified::check_version_in(v, instance, custody).is_ok()
                }
                _ => false,
            };
            (!ok).then(|| format!("key version {id}"))
        },
    )?;
    Ok(report)
}

/// Runs `sql` and checks each row with `bad` (which names a record that fails), adding what
/// fails to `bad_records` (at most [`MAX_PROBLEMS`]); a row that cannot be read ends the walk
/// as a problem of `table`. The number of rows checked.
fn check_records(
    c: &Connection,
    sql: &str,
    table: &str,
    bad_records: &mut Vec<String>,
    bad: impl Fn(&rusqlite::Row<'_>) -> Option<String>,
) -> Result<u64, StoreError> {
    let mut stmt = c.prepare(sql).map_err(corrupt)?;
    let mut rows = stmt.query([]).map_err(corrupt)?;
    let mut checked = 0;
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(checked),
            Err(e) => {
                bad_records.push(format!("{table}: {e}"));
                return Ok(checked);
            }
        };
        checked += 1;
        if let Some(name) = bad(row)
            && bad_records.len() < MAX_PROBLEMS
        {
            bad_records.push(name);
        }
    }
}
