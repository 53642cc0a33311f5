//! `SqliteStore`: the Store implementation over one SQLite file in the data directory.

use std::path::Path;
use std::sync::Mutex;

use keyward_core::{
    AliasRecord, ApiKeyRecord, AuditEvent, DEFAULT_KEY_RING, DueWork, ImportTokenRecord,
    InstanceId, InstancePolicy, InstanceRecord, KeyFilter, KeyId, KeyNotice, KeyRecord,
    KeyRingRecord, KeyVersion, KeyVersionId, Page, RingDeletion, SigningKeyRecord, Store,
    StoreError, Unverified,
};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use time::OffsetDateTime;

use crate::check::QuickCheck;
use crate::events::{check_delete_allowed, insert_events};
use crate::listing::{Arg, Dialect, counted_total, key_query, page_walk};
use crate::rows::*;
use crate::schema::migrate;
use crate::writer::{Statements, Writer};

/// A key row, handed out unverified: only custody makes it usable.
fn unverified_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<Unverified<KeyRecord>> {
    key_from_row(r).map(Unverified::new)
}

/// A version row, handed out unverified.
fn unverified_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<Unverified<KeyVersion>> {
    version_from_row(r).map(Unverified::new)
}

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "keyward.db";
const MAX_IDLE_READERS: usize = 16;

/// SQLite-backed store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: std::path::PathBuf,
    writer: Writer,
    readers: Mutex<Vec<Connection>>,
    /// Ticks after this process commits lifecycle events, so event streams wake at once
    /// (streams also poll, for events other processes commit).
    events: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/keyward.db`, checks its records (`PRAGMA quick_check`
    /// of every table but the audit trail's), migrates it and starts the writer.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, QuickCheck::Records)
    }

    /// As [`SqliteStore::open`], checking as much of the file as `check` says.
    pub fn open_with(dir: &Path, check: QuickCheck) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        // Created owner-only before SQLite opens it: SQLite creates the `-wal` and `-shm` files
        // with the database file's mode, so they are owner-only from their first byte.
        create_private(&path)?;
        let mut conn = Connection::open(&path).map_err(sql_error)?;
        // WAL with synchronous=FULL while migrating; the writer then syncs the log itself
        // (writer.rs) and reports success only after that.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_error)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql_error)?;
        // Deleted rows are overwritten with zeros, not left in free pages: a purged key's
        // wrapped material must not survive in the file.
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(sql_error)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_error)?;
        stable_plans(&conn)?;
        // Before anything is written: a corrupted file is refused, not served (issue 18,
        // item 20).
        crate::check::quick_check(&conn, &path, check)?;
        // A log restarted after it grew long is cut back to this size.
        conn.pragma_update(None, "journal_size_limit", 32 << 20)
            .map_err(sql_error)?;
        migrate(&mut conn).map_err(sql_error)?;
        crate::audit::chain_legacy(&mut conn).map_err(sql_error)?;
        set_private(&path)?;
        let checkpointer = Connection::open(&path).map_err(sql_error)?;
        checkpointer
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql_error)?;
        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        let writer = Writer::start(conn, checkpointer, wal_path.into())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(SqliteStore {
            path,
            writer,
            readers: Mutex::new(Vec::new()),
            events: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A receiver that changes whenever this process commits lifecycle events.
    pub fn event_notifications(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub(crate) fn events_written(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = match self.readers.lock().map(|mut r| r.pop()) {
            Ok(Some(c)) => c,
            _ => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sql_error)?;
                c.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(sql_error)?;
                stable_plans(&c)?;
                c
            }
        };
        let result = f(&conn).map_err(sql_error);
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < MAX_IDLE_READERS
        {
            pool.push(conn);
        }
        result
    }

    pub(crate) async fn write<T, F>(&self, statements: Statements, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.writer
            .write(statements, move |c| f(c).map_err(sql_error))
            .await
    }
}

/// Checkpoints the whole write-ahead log into the database and truncates it to zero bytes,
/// waiting (bounded) for readers to let go of old snapshots.
fn truncate_wal(path: &Path) -> Result<(), StoreError> {
    let conn = Connection::open(path).map_err(sql_error)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_error)?;
    for _ in 0..50 {
        // Returns (busy, log frames, checkpointed frames); busy = 0 means it completed.
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(sql_error)?;
        if busy == 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Err(StoreError::Unavailable(
        "could not truncate the write-ahead log after a purge".into(),
    ))
}

/// Turns on SQLite's query planner stability guarantee. The bundled SQLite is built with STAT4,
/// under which a statement may be re-prepared (parsed and planned again) whenever its bound values
/// change: on the hot path that was a fifth of the CPU. Our queries are point lookups whose plan
/// never depends on the values.
fn stable_plans(c: &Connection) -> Result<(), StoreError> {
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(|_| ())
    .map_err(sql_error)
}

/// Creates the database file, owner-only (0600), unless it exists.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Unavailable(format!(
            "creating {}: {e}",
            path.display()
        ))),
    }
}

/// The database file and its log (`-wal`, `-shm`) hold wrapped key material and audit events:
/// owner-only (0600), or the store does not open (issue 18, item 12). The log files of a
/// database made before they were created owner-only are fixed here too.
fn set_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let file = std::path::PathBuf::from(file);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if !suffix.is_empty() && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "making {} owner-only (chmod 0600): {e}",
                    file.display()
                )));
            }
        }
    }
    Ok(())
}

fn insert_version(c: &Connection, v: &KeyVersion) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO key_versions (key_id, number, id, created_at, wrapping_key, material, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        v.key_id.to_string(),
        v.number,
        v.id.to_string(),
        nanos(v.created_at),
        v.material.wrapping_key,
        v.material.bytes,
        v.signature,
    ])?;
    Ok(())
}

/// Replaces a key row if its stored revision is the one before `k`'s; returns rows changed.
fn update_key_row(c: &Connection, k: &KeyRecord) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "UPDATE keys SET name = ?2, description = ?3, state = ?4, key_ring = ?5, expiration = ?6,
            bits = ?7, current_version = ?8, revision = ?9, updated_at = ?10, state_changed_at = ?11,
            last_rotated_at = ?12, deleted_at = ?13, deleted_by = ?14, signature = ?15,
            current_version_id = ?17, rotation = ?18, dual_auth = ?19, deletion_set_by = ?20,
            deletion_set_at = ?21, purged_at = ?22, next_rotation_at = ?23
         WHERE id = ?1 AND revision = ?16",
    )?
    .execute(params![
        k.id.to_string(),
        k.name,
        k.description,
        k.state.code(),
        k.key_ring,
        opt_nanos(k.expiration),
        k.bits,
        k.current_version,
        revision(k),
        nanos(k.updated_at),
        nanos(k.state_changed_at),
        opt_nanos(k.last_rotated_at),
        opt_nanos(k.deleted_at),
        k.deleted_by,
        k.signature,
        revision(k) - 1,
        k.current_version_id.to_string(),
        rotation_json(k),
        dual_auth_json(k),
        k.deletion_authorized.as_ref().map(|a| a.by.clone()),
        k.deletion_authorized.as_ref().map(|a| nanos(a.at)),
        opt_nanos(k.purged_at),
        opt_nanos(k.next_rotation_at),
    ])
}

fn insert_alias_row(c: &Connection, a: &AliasRecord) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO key_aliases (instance_id, alias, key_id, created_at, created_by, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.instance.to_string(),
        a.alias,
        a.key_id.to_string(),
        nanos(a.created_at),
        a.created_by,
        a.signature,
    ])?;
    Ok(())
}

/// A constraint failure that aborts the write's savepoint (reported as `Conflict`).
pub(crate) fn abort(why: &'static str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
        Some(why.into()),
    )
}

/// A key may only live in a ring that exists, checked in the writing transaction so a ring
/// deleted concurrently cannot end up holding a key.
fn check_ring_exists(c: &Connection, k: &KeyRecord) -> rusqlite::Result<()> {
    if k.key_ring == DEFAULT_KEY_RING {
        return Ok(());
    }
    let exists: bool = c
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM key_rings WHERE instance_id = ?1 AND id = ?2)",
        )?
        .query_row(params![k.instance.to_string(), k.key_ring], |r| r.get(0))?;
    if exists {
        Ok(())
    } else {
        Err(abort("key ring does not exist"))
    }
}

fn revision(k: &KeyRecord) -> i64 {
    i64::try_from(k.revision).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn key(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<Unverified<KeyRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                key_select!(),
                " FROM keys WHERE id = ?1 AND instance_id = ?2"
            ))?
            .query_row(params![id.to_string(), instance.to_string()], |r| {
                key_from_row(r).map(Unverified::new)
            })
            .optional()
        })
    }

    async fn key_generation(&self) -> Result<Option<u64>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT n FROM key_generation WHERE id = 0")?
                .query_row([], |r| r.get::<_, i64>(0))
        })
        .map(|n| Some(u64::try_from(n).unwrap_or(0)))
    }

    async fn key_with_current_version(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<(Unverified<KeyRecord>, Unverified<KeyVersion>)>, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                key_select_k!(),
                ", ",
                version_columns_v!(),
                " FROM keys k
                 JOIN key_versions v ON v.key_id = k.id AND v.number = k.current_version
                 WHERE k.id = ?1 AND k.instance_id = ?2"
            ))?
            .query_row(params![id.to_string(), instance.to_string()], |r| {
                Ok((
                    Unverified::new(key_from_row(r)?),
                    Unverified::new(version_from_row_at(r, KEY_SELECT_COUNT)?),
                ))
            })
            .optional()
        })
    }

    async fn key_version(
        &self,
        key: KeyId,
        number: u32,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM key_versions WHERE key_id = ?1 AND number = ?2"
            ))?
            .query_row(params![key.to_string(), number], unverified_version)
            .optional()
        })
    }

    async fn key_version_by_id(
        &self,
        key: KeyId,
        id: KeyVersionId,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM key_versions WHERE key_id = ?1 AND id = ?2"
            ))?
            .query_row(params![key.to_string(), id.to_string()], unverified_version)
            .optional()
        })
    }

    async fn key_versions(
        &self,
        key: KeyId,
        page: Page,
    ) -> Result<(Vec<Unverified<KeyVersion>>, u64), StoreError> {
        let key = key.to_string();
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM key_versions WHERE key_id = ?1")?
                .query_row(params![key], |r| r.get(0))?;
            let versions = c
                .prepare_cached(concat!(
                    "SELECT ",
                    version_columns!(),
                    " FROM key_versions WHERE key_id = ?1 ORDER BY number DESC LIMIT ?2 OFFSET ?3"
                ))?
                .query_map(
                    params![key, i64::from(page.limit), i64::from(page.offset)],
                    unverified_version,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((versions, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn keys(
        &self,
        instance: InstanceId,
        filter: &KeyFilter,
    ) -> Result<(Vec<Unverified<KeyRecord>>, u64), StoreError> {
        let mut q = key_query(instance, filter, Dialect::Sqlite);
        let counted = counted_total(instance, filter, Dialect::Sqlite);
        let total_sql = format!("SELECT COUNT(*) FROM keys WHERE {}", q.cond);
        let total_args = q.args.len();
        let limit = q.bind(Arg::Int(0));
        let offset = q.bind(Arg::Int(0));
        let page_sql = |reverse: bool| {
            format!(
                "SELECT {} FROM keys WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
                key_select!(),
                q.cond,
                q.order(reverse)
            )
        };
        let (forward_sql, reverse_sql) = (page_sql(false), page_sql(true));
        let (page_offset, page_limit) = (filter.offset, filter.limit);
        // The total first, then the page, in one read transaction: a page past the middle is
        // read from the end (`page_walk`), which needs the total of the same snapshot.
        self.read(move |c| {
            // Ends (rolls back: nothing was written) when dropped.
            let tx = c.unchecked_transaction()?;
            let c: &Connection = &tx;
            let mut args = q.args;
            let total: i64 = match &counted {
                Some((sql, args)) => c
                    .prepare_cached(sql)?
                    .query_row(params_from_iter(args.iter()), |r| r.get(0))?,
                None => c
                    .prepare_cached(&total_sql)?
                    .query_row(params_from_iter(args.iter().take(total_args)), |r| r.get(0))?,
            };
            let total = u64::try_from(total).unwrap_or(0);
            let walk = page_walk(page_offset, page_limit, total);
            args.truncate(total_args);
            args.push(Arg::Int(i64::try_from(walk.limit).unwrap_or(i64::MAX)));
            args.push(Arg::Int(i64::try_from(walk.offset).unwrap_or(i64::MAX)));
            let sql = if walk.reversed {
                &reverse_sql
            } else {
                &forward_sql
            };
            let mut keys = c
                .prepare_cached(sql)?
                .query_map(params_from_iter(args.iter()), unverified_key)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            if walk.reversed {
                keys.reverse();
            }
            Ok((keys, total))
        })
    }

    async fn insert_key_with_aliases(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        aliases: &[AliasRecord],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let (k, v) = (key.clone(), version.clone());
        let aliases = aliases.to_vec();
        self.write_audited(event, move |c| {
            check_ring_exists(c, &k)?;
            c.prepare_cached(concat!(
                "INSERT INTO keys (",
                key_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"
            ))?
            .execute(params![
                k.id.to_string(),
                k.instance.to_string(),
                kind_code(k.kind),
                k.name,
                k.description,
                k.state.code(),
                k.imported,
                k.key_ring,
                opt_nanos(k.expiration),
                k.bits,
                k.current_version,
                k.current_version_id.to_string(),
                revision(&k),
                nanos(k.created_at),
                k.created_by,
                nanos(k.updated_at),
                nanos(k.state_changed_at),
                opt_nanos(k.last_rotated_at),
                opt_nanos(k.deleted_at),
                k.deleted_by,
                k.signature,
                rotation_json(&k),
                dual_auth_json(&k),
                k.deletion_authorized.as_ref().map(|a| a.by.clone()),
                k.deletion_authorized.as_ref().map(|a| nanos(a.at)),
                opt_nanos(k.purged_at),
                opt_nanos(k.next_rotation_at),
            ])?;
            insert_version(c, &v)?;
            for a in &aliases {
                insert_alias_row(c, a)?;
            }
            Ok(())
        })
        .await
    }

    async fn update_key_notifying(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        let (k, v, n) = (key.clone(), new_version.cloned(), notice.cloned());
        self.write_audited(event, move |c| {
            check_ring_exists(c, &k)?;
            if let Some(n) = &n {
                check_delete_allowed(c, &k, n)?;
            }
            let updated = update_key_row(c, &k)?;
            if updated != 1 {
                // Compare-and-swap lost: abort this write's savepoint.
                return Err(abort("stale revision"));
            }
            if let Some(v) = &v {
                insert_version(c, v)?;
            }
            if let Some(n) = &n {
                insert_events(c, &k, n)?;
            }
            Ok(())
        })
        .await?;
        if notice.is_some() {
            self.events_written();
        }
        Ok(())
    }

    async fn purge_key_notifying(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        let (k, n) = (key.clone(), notice.cloned());
        self.write_audited(event, move |c| {
            if update_key_row(c, &k)? != 1 {
                return Err(abort("stale revision"));
            }
            c.prepare_cached("DELETE FROM key_versions WHERE key_id = ?1")?
                .execute(params![k.id.to_string()])?;
            c.prepare_cached("DELETE FROM key_aliases WHERE key_id = ?1")?
                .execute(params![k.id.to_string()])?;
            if let Some(n) = &n {
                insert_events(c, &k, n)?;
            }
            // Key Protect: purging a key removes its registrations with its material.
            c.prepare_cached("DELETE FROM registrations WHERE key_id = ?1")?
                .execute(params![k.id.to_string()])?;
            Ok(())
        })
        .await?;
        if notice.is_some() {
            self.events_written();
        }
        // The versions' old page images may still be in the write-ahead log: fold it into the
        // (zeroed) database and truncate it.
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || truncate_wal(&path))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
    }

    async fn due_keys(
        &self,
        due: &DueWork,
        limit: u32,
    ) -> Result<Vec<Unverified<KeyRecord>>, StoreError> {
        let (rotate, expire, purge) = (
            nanos(due.rotate_before),
            nanos(due.expire_before),
            nanos(due.purge_deleted_before),
        );
        self.read(move |c| {
            c.prepare_cached(concat!(
                "SELECT ",
                key_select!(),
                " FROM keys WHERE purged_at IS NULL AND (
                    (next_rotation_at IS NOT NULL AND next_rotation_at <= ?1 AND state = 1)
                    OR (expiration IS NOT NULL AND expiration <= ?2 AND state = 1)
                    OR (state = 5 AND deleted_at <= ?3))
                 ORDER BY id LIMIT ?4"
            ))?
            .query_map(params![rotate, expire, purge, limit], unverified_key)?
            .collect()
        })
    }

    async fn alias(
        &self,
        instance: InstanceId,
        alias: &str,
    ) -> Result<Option<Unverified<AliasRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT instance_id, alias, key_id, created_at, created_by, signature
                 FROM key_aliases WHERE instance_id = ?1 AND alias = ?2",
            )?
            .query_row(params![instance.to_string(), alias], |r| {
                alias_from_row(r).map(Unverified::new)
            })
            .optional()
        })
    }

    async fn insert_alias(
        &self,
        alias: &AliasRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let a = alias.clone();
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO key_aliases (instance_id, alias, key_id, created_at, created_by, signature)
                     SELECT ?1, ?2, ?3, ?4, ?5, ?6
                     WHERE (SELECT COUNT(*) FROM key_aliases WHERE key_id = ?3) < ?7",
                )?
                .execute(params![
                    a.instance.to_string(),
                    a.alias,
                    a.key_id.to_string(),
                    nanos(a.created_at),
                    a.created_by,
                    a.signature,
                    max_per_key,
                ])?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_alias(
        &self,
        instance: InstanceId,
        key: KeyId,
        alias: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let alias = alias.to_owned();
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM key_aliases WHERE instance_id = ?1 AND key_id = ?2 AND alias = ?3",
                )?
                .execute(params![instance.to_string(), key.to_string(), alias])?;
            Ok(n == 1)
        })
        .await
    }

    async fn key_rings(
        &self,
        instance: InstanceId,
        page: Page,
    ) -> Result<(Vec<KeyRingRecord>, u64), StoreError> {
        let instance = instance.to_string();
        self.read(move |c| {
            let total: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM key_rings WHERE instance_id = ?1")?
                .query_row(params![instance], |r| r.get(0))?;
            let rings = c
                .prepare_cached(
                    "SELECT instance_id, id, created_at, created_by FROM key_rings
                     WHERE instance_id = ?1 ORDER BY created_at, id LIMIT ?2 OFFSET ?3",
                )?
                .query_map(
                    params![instance, i64::from(page.limit), i64::from(page.offset)],
                    key_ring_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((rings, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn insert_key_ring(
        &self,
        ring: &KeyRingRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let r = ring.clone();
        self.write_audited(event, move |c| {
            c.prepare_cached(
                "INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![r.instance.to_string(), r.id, nanos(r.created_at), r.created_by])?;
            Ok(())
        })
        .await
    }

    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        event: &AuditEvent,
    ) -> Result<RingDeletion, StoreError> {
        let id = id.to_owned();
        self.write_audited(event, move |c| {
            let inst = instance.to_string();
            let (live, deleted): (i64, i64) = c
                .prepare_cached(
                    "SELECT COALESCE(SUM(state != 5), 0), COALESCE(SUM(state = 5), 0)
                     FROM keys WHERE instance_id = ?1 AND key_ring = ?2 AND purged_at IS NULL",
                )?
                .query_row(params![inst, id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if live > 0 {
                return Ok(RingDeletion::HasLiveKeys);
            }
            if deleted > 0 {
                return Ok(RingDeletion::HasDeletedKeys);
            }
            let n = c
                .prepare_cached("DELETE FROM key_rings WHERE instance_id = ?1 AND id = ?2")?
                .execute(params![inst, id])?;
            if n == 0 {
                return Ok(RingDeletion::NotFound);
            }
            Ok(RingDeletion::Deleted)
        })
        .await
    }

    async fn instance_policies(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<Unverified<InstancePolicy>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT instance_id, policy_type, enabled, attributes, created_at, created_by,
                        updated_at, updated_by, signature
                 FROM instance_policies WHERE instance_id = ?1 ORDER BY policy_type",
            )?
            .query_map(params![instance.to_string()], |r| {
                instance_policy_from_row(r).map(Unverified::new)
            })?
            .collect()
        })
    }

    async fn put_instance_policies(
        &self,
        policies: &[InstancePolicy],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let ps = policies.to_vec();
        self.write_audited(event, move |c| {
            for p in &ps {
                c.prepare_cached(
                    "INSERT OR REPLACE INTO instance_policies (instance_id, policy_type, enabled,
                        attributes, created_at, created_by, updated_at, updated_by, signature)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?
                .execute(params![
                    p.instance.to_string(),
                    p.setting.kind().name(),
                    p.enabled,
                    p.attributes_json(),
                    nanos(p.meta.created_at),
                    p.meta.created_by,
                    nanos(p.meta.updated_at),
                    p.meta.updated_by,
                    p.signature,
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn import_token(
        &self,
        instance: InstanceId,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(concat!(
                "SELECT ",
                import_token_columns!(),
                " FROM import_tokens WHERE instance_id = ?1"
            ))?
            .query_row(params![instance.to_string()], import_token_from_row)
            .optional()
        })
    }

    async fn put_import_token(
        &self,
        token: &ImportTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let t = token.clone();
        self.write_audited(event, move |c| {
            // The old token's private key is overwritten (secure_delete), not left behind.
            c.prepare_cached(concat!(
                "INSERT OR REPLACE INTO import_tokens (",
                import_token_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                t.instance.to_string(),
                nanos(t.created_at),
                nanos(t.expires_at),
                t.max_retrievals,
                t.remaining,
                t.nonce,
                t.public_key,
                t.private_key.wrapping_key,
                t.private_key.bytes,
                t.created_by,
            ])?;
            Ok(())
        })
        .await
    }

    async fn retrieve_import_token(
        &self,
        instance: InstanceId,
        now: OffsetDateTime,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        self.write(Statements::One, move |c| {
            c.prepare_cached(concat!(
                "UPDATE import_tokens SET remaining = remaining - 1
                 WHERE instance_id = ?1 AND remaining > 0 AND expires_at > ?2
                 RETURNING ",
                import_token_columns!()
            ))?
            .query_row(
                params![instance.to_string(), nanos(now)],
                import_token_from_row,
            )
            .optional()
        })
        .await
    }

    async fn key_counts_by_state(&self) -> Result<Vec<(u8, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT state, COUNT(*) FROM keys WHERE purged_at IS NULL GROUP BY state",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    u8::try_from(r.get::<_, i64>(0)?).unwrap_or(u8::MAX),
                    u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                ))
            })?;
            rows.collect()
        })
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_event(event).await
    }

    async fn append_audits(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.append_events(events).await
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, account, name, created_at FROM instances ORDER BY created_at",
            )?
            .query_map([], instance_from_row)?
            .collect()
        })
    }

    async fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT id, account, name, created_at FROM instances WHERE id = ?1")?
                .query_row(params![id.to_string()], instance_from_row)
                .optional()
        })
    }

    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let i = instance.clone();
        self.write_audited(event, move |c| {
            c.execute(
                "INSERT INTO instances (id, account, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![i.id.to_string(), i.account, i.name, nanos(i.created_at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT id, secret_hash, subject, account, name, created_at, locked FROM api_keys WHERE id = ?1")?
                .query_row(params![id], api_key_from_row)
                .optional()
        })
    }

    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let k = key.clone();
        self.write_audited(event, move |c| {
            c.execute(
                "INSERT INTO api_keys (id, secret_hash, subject, account, name, created_at, locked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    k.id,
                    k.secret_hash.to_vec(),
                    k.subject,
                    k.account,
                    k.name,
                    nanos(k.created_at),
                    k.locked
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT kid, wrapping_key, private_key, created_at FROM signing_keys ORDER BY created_at DESC")?
                .query_map([], signing_key_from_row)?
                .collect()
        })
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let k = key.clone();
        self.write(Statements::One, move |c| {
            c.execute(
                "INSERT INTO signing_keys (kid, wrapping_key, private_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![k.kid, k.private_key.wrapping_key, k.private_key.bytes, nanos(k.created_at)],
            )?;
            Ok(())
        })
        .await
    }
}
