//! Instances, keys, versions, aliases, rings, policies, import and signing keys on PostgreSQL (twin of `crate::sqlite` and `crate::listing`).
//!
//! SQLite runs one write at a time; here READ COMMITTED transactions of several nodes run side
//! by side, so every read-modify-write is made atomic in the database: a compare-and-swap is one
//! conditional `UPDATE`, a check that a later write depends on locks the row it reads (the key
//! ring a key goes into, the key whose aliases are counted), and replacements are upserts.

use deadpool_postgres::Transaction;
use keyward_core::*;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;

use super::events::{check_delete_allowed, insert_events};
use super::{Audited, PgStore, pg_error};
use crate::columns::Columns;
use crate::listing::{Arg, Dialect, counted_total, key_query, page_walk};
use crate::rows::{
    KEY_SELECT_COUNT, alias_from, api_key_from, dual_auth_json, import_token_columns,
    import_token_from, instance_from, instance_policy_from, key_columns, key_columns_k, key_from,
    key_ring_from, kind_code, nanos, opt_nanos, rotation_json, signing_key_from, version_columns,
    version_columns_v, version_from_at,
};

/// `key_select!()` for PostgreSQL: the key's columns and, last, its aliases comma-joined (aliases
/// ordered as SQLite orders them: by creation, then bytewise).
macro_rules! key_select {
    () => {
        concat!(
            key_columns!(),
            ", (SELECT string_agg(alias, ',' ORDER BY created_at, alias COLLATE \"C\") \
             FROM key_aliases a WHERE a.key_id = keys.id)"
        )
    };
}
macro_rules! key_select_k {
    () => {
        concat!(
            key_columns_k!(),
            ", (SELECT string_agg(alias, ',' ORDER BY created_at, alias COLLATE \"C\") \
             FROM key_aliases a WHERE a.key_id = k.id)"
        )
    };
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

fn listing_params(args: &[Arg]) -> Params<'_> {
    args.iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

/// A `COUNT(*)` in column `i`.
fn count_at(row: &tokio_postgres::Row, i: usize) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.i64(i)?).unwrap_or(0))
}

fn count(row: &tokio_postgres::Row) -> Result<u64, StoreError> {
    count_at(row, 0)
}

fn revision(k: &KeyRecord) -> i64 {
    i64::try_from(k.revision).unwrap_or(i64::MAX)
}

/// A key record's column values, typed as the PostgreSQL columns are.
struct KeyRow {
    id: String,
    instance: String,
    kind: i64,
    state: i64,
    expiration: Option<i64>,
    bits: i64,
    current_version: i64,
    current_version_id: String,
    revision: i64,
    previous_revision: i64,
    created_at: i64,
    updated_at: i64,
    state_changed_at: i64,
    last_rotated_at: Option<i64>,
    deleted_at: Option<i64>,
    rotation: Option<String>,
    dual_auth: Option<String>,
    deletion_set_by: Option<String>,
    deletion_set_at: Option<i64>,
    purged_at: Option<i64>,
    next_rotation_at: Option<i64>,
}

impl KeyRow {
    fn of(k: &KeyRecord) -> Self {
        KeyRow {
            id: k.id.to_string(),
            instance: k.instance.to_string(),
            kind: kind_code(k.kind),
            state: i64::from(k.state.code()),
            expiration: opt_nanos(k.expiration),
            bits: i64::from(k.bits),
            current_version: i64::from(k.current_version),
            current_version_id: k.current_version_id.to_string(),
            revision: revision(k),
            previous_revision: revision(k).saturating_sub(1),
            created_at: nanos(k.created_at),
            updated_at: nanos(k.updated_at),
            state_changed_at: nanos(k.state_changed_at),
            last_rotated_at: opt_nanos(k.last_rotated_at),
            deleted_at: opt_nanos(k.deleted_at),
            rotation: rotation_json(k),
            dual_auth: dual_auth_json(k),
            deletion_set_by: k.deletion_authorized.as_ref().map(|a| a.by.clone()),
            deletion_set_at: k.deletion_authorized.as_ref().map(|a| nanos(a.at)),
            purged_at: opt_nanos(k.purged_at),
            next_rotation_at: opt_nanos(k.next_rotation_at),
        }
    }
}

async fn insert_key_row(tx: &Transaction<'_>, k: &KeyRecord) -> Result<(), StoreError> {
    let r = KeyRow::of(k);
    let stmt = tx
        .prepare_cached(concat!(
            "INSERT INTO keys (",
            key_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)"
        ))
        .await
        .map_err(pg_error)?;
    tx.execute(
        &stmt,
        &[
            &r.id,
            &r.instance,
            &r.kind,
            &k.name,
            &k.description,
            &r.state,
            &k.imported,
            &k.key_ring,
            &r.expiration,
            &r.bits,
            &r.current_version,
            &r.current_version_id,
            &r.revision,
            &r.created_at,
            &k.created_by,
            &r.updated_at,
            &r.state_changed_at,
            &r.last_rotated_at,
            &r.deleted_at,
            &k.deleted_by,
            &k.signature,
            &r.rotation,
            &r.dual_auth,
            &r.deletion_set_by,
            &r.deletion_set_at,
            &r.purged_at,
            &r.next_rotation_at,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// Replaces a key row if its stored revision is the one before `k`'s (one conditional statement:
/// the compare-and-swap is atomic); [`StoreError::Conflict`] when it is not.
async fn update_key_row(tx: &Transaction<'_>, k: &KeyRecord) -> Result<(), StoreError> {
    let r = KeyRow::of(k);
    let stmt = tx
        .prepare_cached(
            "UPDATE keys SET name = $2, description = $3, state = $4, key_ring = $5, expiration = $6,
                bits = $7, current_version = $8, revision = $9, updated_at = $10, state_changed_at = $11,
                last_rotated_at = $12, deleted_at = $13, deleted_by = $14, signature = $15,
                current_version_id = $17, rotation = $18, dual_auth = $19, deletion_set_by = $20,
                deletion_set_at = $21, purged_at = $22, next_rotation_at = $23
             WHERE id = $1 AND revision = $16",
        )
        .await
        .map_err(pg_error)?;
    let n = tx
        .execute(
            &stmt,
            &[
                &r.id,
                &k.name,
                &k.description,
                &r.state,
                &k.key_ring,
                &r.expiration,
                &r.bits,
                &r.current_version,
                &r.revision,
                &r.updated_at,
                &r.state_changed_at,
                &r.last_rotated_at,
                &r.deleted_at,
                &k.deleted_by,
                &k.signature,
                &r.previous_revision,
                &r.current_version_id,
                &r.rotation,
                &r.dual_auth,
                &r.deletion_set_by,
                &r.deletion_set_at,
                &r.purged_at,
                &r.next_rotation_at,
            ],
        )
        .await
        .map_err(pg_error)?;
    if n == 1 {
        Ok(())
    } else {
        // Compare-and-swap lost (or no such key).
        Err(StoreError::Conflict)
    }
}

async fn insert_version(tx: &Transaction<'_>, v: &KeyVersion) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO key_versions (key_id, number, id, created_at, wrapping_key, material, signature)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &stmt,
        &[
            &v.key_id.to_string(),
            &i64::from(v.number),
            &v.id.to_string(),
            &nanos(v.created_at),
            &v.material.wrapping_key,
            &v.material.bytes,
            &v.signature,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn insert_alias_row(tx: &Transaction<'_>, a: &AliasRecord) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO key_aliases (instance_id, alias, key_id, created_at, created_by, signature)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &stmt,
        &[
            &a.instance.to_string(),
            &a.alias,
            &a.key_id.to_string(),
            &nanos(a.created_at),
            &a.created_by,
            &a.signature,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// A key may only live in a ring that exists, checked in the writing transaction. The ring's row
/// is share-locked until the write commits, so a concurrent [`Store::delete_key_ring`] (which
/// locks it for update before counting the ring's keys) either waits and then sees the key, or
/// has deleted the ring and this write fails with [`StoreError::Conflict`].
async fn check_ring_exists(tx: &Transaction<'_>, k: &KeyRecord) -> Result<(), StoreError> {
    if k.key_ring == DEFAULT_KEY_RING {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("SELECT 1 FROM key_rings WHERE instance_id = $1 AND id = $2 FOR KEY SHARE")
        .await
        .map_err(pg_error)?;
    let row = tx
        .query_opt(&stmt, &[&k.instance.to_string(), &k.key_ring])
        .await
        .map_err(pg_error)?;
    match row {
        Some(_) => Ok(()),
        // The key ring does not exist.
        None => Err(StoreError::Conflict),
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn key(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<Unverified<KeyRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                key_select!(),
                " FROM keys WHERE id = $1 AND instance_id = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&id.to_string(), &instance.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(key_from).transpose()?.map(Unverified::new))
    }

    async fn key_with_current_version(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<(Unverified<KeyRecord>, Unverified<KeyVersion>)>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                key_select_k!(),
                ", ",
                version_columns_v!(),
                " FROM keys k
                 JOIN key_versions v ON v.key_id = k.id AND v.number = k.current_version
                 WHERE k.id = $1 AND k.instance_id = $2"
            ))
            .await
            .map_err(pg_error)?;
        let Some(row) = c
            .query_opt(&stmt, &[&id.to_string(), &instance.to_string()])
            .await
            .map_err(pg_error)?
        else {
            return Ok(None);
        };
        Ok(Some((
            Unverified::new(key_from(&row)?),
            Unverified::new(version_from_at(&row, KEY_SELECT_COUNT)?),
        )))
    }

    async fn key_version(
        &self,
        key: KeyId,
        number: u32,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM key_versions WHERE key_id = $1 AND number = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&key.to_string(), &i64::from(number)])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(|r| version_from_at(r, 0))
            .transpose()?
            .map(Unverified::new))
    }

    async fn key_version_by_id(
        &self,
        key: KeyId,
        id: KeyVersionId,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM key_versions WHERE key_id = $1 AND id = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&key.to_string(), &id.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(|r| version_from_at(r, 0))
            .transpose()?
            .map(Unverified::new))
    }

    async fn key_versions(
        &self,
        key: KeyId,
        page: Page,
    ) -> Result<(Vec<Unverified<KeyVersion>>, u64), StoreError> {
        let key = key.to_string();
        let c = self.client().await?;
        let total = c
            .prepare_cached("SELECT COUNT(*) FROM key_versions WHERE key_id = $1")
            .await
            .map_err(pg_error)?;
        let total = count(&c.query_one(&total, &[&key]).await.map_err(pg_error)?)?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                version_columns!(),
                " FROM key_versions WHERE key_id = $1 ORDER BY number DESC LIMIT $2 OFFSET $3"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(
                &stmt,
                &[&key, &i64::from(page.limit), &i64::from(page.offset)],
            )
            .await
            .map_err(pg_error)?;
        let versions = rows
            .iter()
            .map(|r| version_from_at(r, 0).map(Unverified::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((versions, total))
    }

    async fn keys(
        &self,
        instance: InstanceId,
        filter: &KeyFilter,
    ) -> Result<(Vec<Unverified<KeyRecord>>, u64), StoreError> {
        let mut q = key_query(instance, filter, Dialect::Postgres);
        let counted = counted_total(instance, filter, Dialect::Postgres);
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
        let mut c = self.client().await?;
        // The total and the page in one snapshot: a page past the middle is read from the end
        // (`page_walk`), which needs the total the page is counted against.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        // The statements vary with the filter: prepared unnamed, not cached (the cache would
        // grow with every combination of filters).
        let total = match &counted {
            Some((sql, args)) => tx.query_one(sql, &listing_params(args)).await,
            None => {
                let params = listing_params(&q.args);
                tx.query_one(&total_sql, params.get(..total_args).unwrap_or_default())
                    .await
            }
        }
        .map_err(pg_error)?;
        let total = count(&total)?;
        let walk = page_walk(filter.offset, filter.limit, total);
        let mut args = q.args.clone();
        args.truncate(total_args);
        args.push(Arg::Int(i64::try_from(walk.limit).unwrap_or(i64::MAX)));
        args.push(Arg::Int(i64::try_from(walk.offset).unwrap_or(i64::MAX)));
        let rows = tx
            .query(&page_sql(walk.reversed), &listing_params(&args))
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let mut keys = rows
            .iter()
            .map(|r| key_from(r).map(Unverified::new))
            .collect::<Result<Vec<_>, _>>()?;
        if walk.reversed {
            keys.reverse();
        }
        Ok((keys, total))
    }

    async fn insert_key_with_aliases(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        aliases: &[AliasRecord],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        check_ring_exists(&tx, key).await?;
        insert_key_row(&tx, key).await?;
        insert_version(&tx, version).await?;
        for a in aliases {
            insert_alias_row(&tx, a).await?;
        }
        tx.commit(()).await
    }

    async fn update_key_notifying(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        check_ring_exists(&tx, key).await?;
        if let Some(n) = notice {
            check_delete_allowed(&tx, key, n).await?;
        }
        update_key_row(&tx, key).await?;
        if let Some(v) = new_version {
            insert_version(&tx, v).await?;
        }
        if let Some(n) = notice {
            insert_events(&tx, key, n).await?;
        }
        tx.commit(()).await?;
        if notice.is_some() {
            self.events_written();
        }
        Ok(())
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        Audited::begin(&mut c, event).await?.commit(()).await
    }

    async fn append_audits(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        for e in events {
            super::audit::pend(&tx, e).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn key_counts_by_state(&self) -> Result<Vec<(u8, u64)>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT state, COUNT(*) FROM keys WHERE purged_at IS NULL GROUP BY state",
            )
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_error)?;
        rows.iter()
            .map(|r| Ok((u8::try_from(r.i64(0)?).unwrap_or(u8::MAX), count_at(r, 1)?)))
            .collect()
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, account, name, created_at FROM instances ORDER BY created_at",
            )
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(instance_from).collect::<Result<_, _>>()?)
    }

    async fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT id, account, name, created_at FROM instances WHERE id = $1")
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(instance_from).transpose()?)
    }

    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        tx.execute(
            "INSERT INTO instances (id, account, name, created_at) VALUES ($1, $2, $3, $4)",
            &[
                &instance.id.to_string(),
                &instance.account,
                &instance.name,
                &nanos(instance.created_at),
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, secret_hash, subject, account, name, created_at, locked
                 FROM api_keys WHERE id = $1",
            )
            .await
            .map_err(pg_error)?;
        let row = c.query_opt(&stmt, &[&id]).await.map_err(pg_error)?;
        Ok(row.as_ref().map(api_key_from).transpose()?)
    }

    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let hash: &[u8] = key.secret_hash.as_slice();
        tx.execute(
            "INSERT INTO api_keys (id, secret_hash, subject, account, name, created_at, locked)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.id,
                &hash,
                &key.subject,
                &key.account,
                &key.name,
                &nanos(key.created_at),
                &key.locked,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    /// Erases a deleted key's material: deletes its versions, aliases and registrations and
    /// stores the tombstone (compare-and-swap on the revision), in one transaction.
    ///
    /// Unlike SQLite (which zeroes freed pages and truncates its write-ahead log before
    /// returning), PostgreSQL cannot overwrite the deleted rows: the purged, custody-wrapped
    /// material stays in dead tuples until vacuum reclaims them, in WAL segments until they are
    /// recycled, and in any WAL archive, standby or backup taken meanwhile. After the commit a
    /// best-effort `VACUUM key_versions, key_aliases` runs (it cannot reclaim rows a still-open
    /// snapshot may see); its failure is logged, not returned. The material stays unusable
    /// without custody's wrapping key either way.
    async fn purge_key_notifying(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        let id = key.id.to_string();
        let mut c = self.client().await?;
        {
            let tx = Audited::begin(&mut c, event).await?;
            update_key_row(&tx, key).await?;
            let versions = tx
                .prepare_cached("DELETE FROM key_versions WHERE key_id = $1")
                .await
                .map_err(pg_error)?;
            tx.execute(&versions, &[&id]).await.map_err(pg_error)?;
            let aliases = tx
                .prepare_cached("DELETE FROM key_aliases WHERE key_id = $1")
                .await
                .map_err(pg_error)?;
            tx.execute(&aliases, &[&id]).await.map_err(pg_error)?;
            if let Some(n) = notice {
                insert_events(&tx, key, n).await?;
            }
            // Key Protect: purging a key removes its registrations with its material.
            let registrations = tx
                .prepare_cached("DELETE FROM registrations WHERE key_id = $1")
                .await
                .map_err(pg_error)?;
            tx.execute(&registrations, &[&id]).await.map_err(pg_error)?;
            tx.commit(()).await?;
        }
        if notice.is_some() {
            self.events_written();
        }
        // Outside any transaction (VACUUM cannot run in one).
        if let Err(e) = c.batch_execute("VACUUM key_versions, key_aliases").await {
            tracing::warn!(error = %e, "vacuum after a key purge failed; the purged rows stay until autovacuum");
        }
        Ok(())
    }

    async fn due_keys(
        &self,
        due: &DueWork,
        limit: u32,
    ) -> Result<Vec<Unverified<KeyRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                key_select!(),
                " FROM keys WHERE purged_at IS NULL AND (
                    (next_rotation_at IS NOT NULL AND next_rotation_at <= $1 AND state = 1)
                    OR (expiration IS NOT NULL AND expiration <= $2 AND state = 1)
                    OR (state = 5 AND deleted_at <= $3))
                 ORDER BY id COLLATE \"C\" LIMIT $4"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(
                &stmt,
                &[
                    &nanos(due.rotate_before),
                    &nanos(due.expire_before),
                    &nanos(due.purge_deleted_before),
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| key_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?)
    }

    async fn alias(
        &self,
        instance: InstanceId,
        alias: &str,
    ) -> Result<Option<Unverified<AliasRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT instance_id, alias, key_id, created_at, created_by, signature
                 FROM key_aliases WHERE instance_id = $1 AND alias = $2",
            )
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string(), &alias])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(alias_from)
            .transpose()?
            .map(Unverified::new))
    }

    async fn insert_alias(
        &self,
        alias: &AliasRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let key_id = alias.key_id.to_string();
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // The key's row is locked first, so concurrent inserts for one key count one after the
        // other and never pass the limit together. (No such key: the insert below fails on the
        // foreign key, a Conflict, as on SQLite.)
        let lock = tx
            .prepare_cached("SELECT 1 FROM keys WHERE id = $1 FOR NO KEY UPDATE")
            .await
            .map_err(pg_error)?;
        tx.query_opt(&lock, &[&key_id]).await.map_err(pg_error)?;
        let counted = tx
            .prepare_cached("SELECT COUNT(*) FROM key_aliases WHERE key_id = $1")
            .await
            .map_err(pg_error)?;
        let n = count(&tx.query_one(&counted, &[&key_id]).await.map_err(pg_error)?)?;
        if n >= u64::from(max_per_key) {
            return tx.commit(false).await;
        }
        insert_alias_row(&tx, alias).await?;
        tx.commit(true).await
    }

    async fn delete_alias(
        &self,
        instance: InstanceId,
        key: KeyId,
        alias: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(
                "DELETE FROM key_aliases WHERE instance_id = $1 AND key_id = $2 AND alias = $3",
            )
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(&stmt, &[&instance.to_string(), &key.to_string(), &alias])
            .await
            .map_err(pg_error)?;
        tx.commit(n == 1).await
    }

    async fn key_rings(
        &self,
        instance: InstanceId,
        page: Page,
    ) -> Result<(Vec<KeyRingRecord>, u64), StoreError> {
        let instance = instance.to_string();
        let c = self.client().await?;
        let total = c
            .prepare_cached("SELECT COUNT(*) FROM key_rings WHERE instance_id = $1")
            .await
            .map_err(pg_error)?;
        let total = count(&c.query_one(&total, &[&instance]).await.map_err(pg_error)?)?;
        let stmt = c
            .prepare_cached(
                "SELECT instance_id, id, created_at, created_by FROM key_rings
                 WHERE instance_id = $1 ORDER BY created_at, id COLLATE \"C\" LIMIT $2 OFFSET $3",
            )
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(
                &stmt,
                &[&instance, &i64::from(page.limit), &i64::from(page.offset)],
            )
            .await
            .map_err(pg_error)?;
        let rings = rows
            .iter()
            .map(key_ring_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rings, total))
    }

    async fn insert_key_ring(
        &self,
        ring: &KeyRingRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        tx.execute(
            "INSERT INTO key_rings (instance_id, id, created_at, created_by) VALUES ($1, $2, $3, $4)",
            &[
                &ring.instance.to_string(),
                &ring.id,
                &nanos(ring.created_at),
                &ring.created_by,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        event: &AuditEvent,
    ) -> Result<RingDeletion, StoreError> {
        let inst = instance.to_string();
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // Lock the ring before counting its keys: a key write into this ring holds a share lock
        // on it (check_ring_exists), so it has either committed (and is counted below, each
        // statement seeing what committed before it) or waits and then finds the ring gone.
        tx.query_opt(
            "SELECT 1 FROM key_rings WHERE instance_id = $1 AND id = $2 FOR UPDATE",
            &[&inst, &id],
        )
        .await
        .map_err(pg_error)?;
        let row = tx
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE state != 5), COUNT(*) FILTER (WHERE state = 5)
                 FROM keys WHERE instance_id = $1 AND key_ring = $2 AND purged_at IS NULL",
                &[&inst, &id],
            )
            .await
            .map_err(pg_error)?;
        let (live, deleted) = (count_at(&row, 0)?, count_at(&row, 1)?);
        let outcome = if live > 0 {
            RingDeletion::HasLiveKeys
        } else if deleted > 0 {
            RingDeletion::HasDeletedKeys
        } else {
            let n = tx
                .execute(
                    "DELETE FROM key_rings WHERE instance_id = $1 AND id = $2",
                    &[&inst, &id],
                )
                .await
                .map_err(pg_error)?;
            if n == 0 {
                RingDeletion::NotFound
            } else {
                RingDeletion::Deleted
            }
        };
        tx.commit(outcome).await
    }

    async fn instance_policies(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<Unverified<InstancePolicy>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT instance_id, policy_type, enabled, attributes, created_at, created_by,
                        updated_at, updated_by, signature
                 FROM instance_policies WHERE instance_id = $1 ORDER BY policy_type COLLATE \"C\"",
            )
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(&stmt, &[&instance.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| instance_policy_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?)
    }

    async fn put_instance_policies(
        &self,
        policies: &[InstancePolicy],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // One upsert per policy: atomic against a concurrent put of the same policy (SQLite's
        // INSERT OR REPLACE: every column is replaced).
        let stmt = tx
            .prepare_cached(
                "INSERT INTO instance_policies (instance_id, policy_type, enabled, attributes,
                    created_at, created_by, updated_at, updated_by, signature)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (instance_id, policy_type) DO UPDATE SET
                    enabled = EXCLUDED.enabled, attributes = EXCLUDED.attributes,
                    created_at = EXCLUDED.created_at, created_by = EXCLUDED.created_by,
                    updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by,
                    signature = EXCLUDED.signature",
            )
            .await
            .map_err(pg_error)?;
        for p in policies {
            tx.execute(
                &stmt,
                &[
                    &p.instance.to_string(),
                    &p.setting.kind().name(),
                    &p.enabled,
                    &p.attributes_json(),
                    &nanos(p.meta.created_at),
                    &p.meta.created_by,
                    &nanos(p.meta.updated_at),
                    &p.meta.updated_by,
                    &p.signature,
                ],
            )
            .await
            .map_err(pg_error)?;
        }
        tx.commit(()).await
    }

    async fn import_token(
        &self,
        instance: InstanceId,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(concat!(
                "SELECT ",
                import_token_columns!(),
                " FROM import_tokens WHERE instance_id = $1"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(import_token_from).transpose()?)
    }

    async fn put_import_token(
        &self,
        token: &ImportTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let t = token;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // Replaces the old token in place (an upsert, atomic against a concurrent put). Its
        // private key row becomes a dead tuple until vacuum (see purge_key_notifying).
        tx.execute(
            concat!(
                "INSERT INTO import_tokens (",
                import_token_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (instance_id) DO UPDATE SET
                    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at,
                    max_retrievals = EXCLUDED.max_retrievals, remaining = EXCLUDED.remaining,
                    nonce = EXCLUDED.nonce, public_key = EXCLUDED.public_key,
                    wrapping_key = EXCLUDED.wrapping_key, private_key = EXCLUDED.private_key,
                    created_by = EXCLUDED.created_by"
            ),
            &[
                &t.instance.to_string(),
                &nanos(t.created_at),
                &nanos(t.expires_at),
                &i64::from(t.max_retrievals),
                &i64::from(t.remaining),
                &t.nonce,
                &t.public_key,
                &t.private_key.wrapping_key,
                &t.private_key.bytes,
                &t.created_by,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn retrieve_import_token(
        &self,
        instance: InstanceId,
        now: OffsetDateTime,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        let c = self.client().await?;
        // One conditional statement: two retrievals never share the last one.
        let stmt = c
            .prepare_cached(concat!(
                "UPDATE import_tokens SET remaining = remaining - 1
                 WHERE instance_id = $1 AND remaining > 0 AND expires_at > $2
                 RETURNING ",
                import_token_columns!()
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string(), &nanos(now)])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(import_token_from).transpose()?)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT kid, wrapping_key, private_key, created_at FROM signing_keys
                 ORDER BY created_at DESC",
            )
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(signing_key_from)
            .collect::<Result<_, _>>()?)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO signing_keys (kid, wrapping_key, private_key, created_at)
             VALUES ($1, $2, $3, $4)",
            &[
                &key.kid,
                &key.private_key.wrapping_key,
                &key.private_key.bytes,
                &nanos(key.created_at),
            ],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keyward_core::{KeySearch, SortKey};

    use super::*;
    use crate::postgres::PgOptions;

    /// The plans PostgreSQL picks at 20 000 keys (analyzed) for substring searches, sorts and
    /// last pages: the `pg_trgm` indexes and the per-column sort indexes. See: issue 19.
    #[tokio::test]
    async fn postgresql_listings_use_the_trigram_and_sort_indexes() {
        let cluster = keyward_test::postgres::cluster();
        let url = cluster.fresh_database();
        let options = PgOptions {
            url: url.clone(),
            pool_size: 1,
        };
        let store = PgStore::connect(&options).await.unwrap();
        let db = url.rsplit('=').next().unwrap();
        let instance = InstanceId::random();
        cluster.psql(
            db,
            &format!(
                "INSERT INTO instances VALUES ('{instance}', 'a', 'n', 0);
                 INSERT INTO keys (id, instance_id, kind, name, state, imported, key_ring, bits,
                     current_version, current_version_id, revision, created_at, created_by,
                     updated_at, state_changed_at, signature, last_rotated_at)
                 SELECT gen_random_uuid()::text, '{instance}', 0, 'key-0-' || g, 1, false,
                     'default', 256, 1, 'v', 1, g, 'u', 20000 - g, g, ''::bytea,
                     CASE WHEN g % 10 = 0 THEN g END
                 FROM generate_series(1, 20000) g;
                 INSERT INTO key_aliases SELECT '{instance}', 'alias-' || g, id, 0, 'u', ''::bytea
                     FROM (SELECT id, row_number() OVER () AS g FROM keys LIMIT 500) k;
                 ANALYZE;"
            ),
        );
        let c = store.client().await.unwrap();
        let explain = |filter: KeyFilter, reverse: bool| {
            let c = &c;
            async move {
                let mut q = key_query(instance, &filter, Dialect::Postgres);
                let limit = q.bind(Arg::Int(200));
                let offset = q.bind(Arg::Int(0));
                let sql = format!(
                    "EXPLAIN SELECT id FROM keys WHERE {} ORDER BY {} LIMIT {limit} OFFSET {offset}",
                    q.cond,
                    q.order(reverse)
                );
                let rows = c.query(&sql, &listing_params(&q.args)).await.unwrap();
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        let search = KeyFilter {
            search: Some(KeySearch {
                query: "Y-0-1234".into(),
                exact: false,
                not: false,
                in_name: true,
                in_alias: true,
            }),
            ..KeyFilter::default()
        };
        let plan = explain(search, false).await;
        assert!(plan.contains("keys_name_trigrams"), "{plan}");
        assert!(!plan.contains("Seq Scan on keys"), "{plan}");
        let last = explain(KeyFilter::default(), true).await;
        // keys_listed or migration 1's keys_by_instance: both are in creation order.
        assert!(last.contains("Index Scan Backward using keys_"), "{last}");
        assert!(!last.contains("Sort"), "{last}");
        for (key, index) in [
            (SortKey::Date(KeyDate::LastUpdate), "keys_sorted_by_update"),
            (
                SortKey::Date(KeyDate::LastRotate),
                "keys_sorted_by_rotation",
            ),
            (SortKey::State, "keys_sorted_by_state"),
        ] {
            let directions = [(false, false), (false, true), (true, false), (true, true)];
            for (desc, reverse) in directions {
                let filter = KeyFilter {
                    sort: vec![(key, desc)],
                    ..KeyFilter::default()
                };
                let plan = explain(filter, reverse).await;
                assert!(plan.contains(index), "{key:?} {desc} {reverse}: {plan}");
                assert!(!plan.contains("Seq Scan"), "{key:?}: {plan}");
                assert!(!plan.contains("Sort"), "{key:?} {desc} {reverse}: {plan}");
            }
        }
    }
}
