//! The audit trail on PostgreSQL: one hash chain for the whole cluster, linked off the request
//! path.
//!
//! A write inserts its event into `audit_pending` in its own transaction ([`pend`]): no shared
//! row, no lock, so nodes never serialize their writes on the chain head. [`link_pending`] moves
//! pending events into `audit_events` in id order, giving each its position and hash, under a
//! transaction-scoped advisory lock: one linker at a time across the cluster, each batch one
//! transaction (a crash in the middle links nothing twice and loses nothing). Each node is meant
//! to run [`try_link_pending`] every few hundred milliseconds (it returns at once while another
//! node links), and every read of the trail links first, so a read sees every event committed
//! before it.
//!
//! The cost: an event is tamper-evident (chained) a moment after its write commits rather than
//! in the same transaction, and its position is the order it was linked in (pending id order:
//! the order writes inserted their events, not the order they committed). A write pays one more
//! insert. A read of the trail pays one more round trip when nothing is pending, else a linking
//! transaction (and waits for a linker already running); hashing is serial across the cluster
//! (one linker), tens of thousands of events a second. A pending row that cannot be decoded stops
//! linking with [`StoreError::Corrupt`] until it is repaired: the chain never skips an event.
//!
//! [`link_pending`]: PgStore::link_pending
//! [`try_link_pending`]: PgStore::try_link_pending

use std::collections::HashMap;

use deadpool_postgres::Object;
use futures_util::TryStreamExt;
use keyward_core::{
    AuditCheckpoint, AuditEvent, AuditPrune, AuditQuery, AuditStore, ChainReport, ChainVerifier,
    ChainedEvent, Custody, GENESIS_HASH, StoreError, chain_hash,
};
use time::OffsetDateTime;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::{PgStore, pg_error};
use crate::archive::{ARCHIVE_CURSOR, TrailReport, join, verify_archive};
use crate::audit::{
    ChainWalk, EVENT_COLUMNS, MAX_PAGE, audit_event_from, checkpoint_from, count_sql, event_from,
    hash32, head_from, page_sql, prune_through, prune_window, query_where, to_i64, walk_row,
};
use crate::columns::{Bad, Columns, pg_params};
use crate::rows::nanos;

/// `pg_advisory_xact_lock` key of the chain linker ("keyward" in ASCII, then 2).
const LINK_LOCK: i64 = 0x6b65_7977_6172_6402;
/// Events linked per transaction at most.
const LINK_BATCH: i64 = 5_000;

/// Inserts `e` into the pending events, in the caller's transaction.
pub(super) async fn pend(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_pending (event_id, time, action, outcome, reason_code, reason,
                                        initiator, address, instance_id, target, key_state,
                                        key_version, request_id, count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &stmt,
        &[
            &e.id.to_string(),
            &nanos(e.time),
            &e.action,
            &e.outcome.as_str(),
            &i64::from(e.reason_code),
            &e.reason,
            &e.initiator.id,
            &e.initiator.address,
            &e.instance,
            &e.target,
            &e.key_state.map(i64::from),
            &e.key_version,
            &e.request_id,
            &e.count.map(to_i64),
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// The chain head: the last row.
const HEAD: &str = "SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1";

/// Takes the oldest pending events (by id), returning the id and then the event's columns in the
/// order `audit_event_from` reads them.
const TAKE_PENDING: &str = "DELETE FROM audit_pending
     WHERE id IN (SELECT id FROM audit_pending ORDER BY id LIMIT $1)
     RETURNING id, event_id, time, action, outcome, reason_code, reason, initiator, address,
               instance_id, target, key_state, key_version, request_id, count";

/// Appends a batch of linked events: one statement, one array per column.
const LINK: &str = "INSERT INTO audit_events (seq, id, time, action, outcome, reason_code, reason,
                                   initiator, address, instance_id, target, key_state,
                                   key_version, request_id, count, prev_hash, hash)
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                          $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[],
                          $11::text[], $12::bigint[], $13::text[], $14::text[], $15::bigint[],
                          $16::bytea[], $17::bytea[])";

/// A pending event: its id (the linking order) and the event.
fn pending_from<R: Columns + ?Sized>(r: &R) -> Result<(i64, AuditEvent), Bad> {
    Ok((r.i64(0)?, audit_event_from(r, 1)?))
}

/// One batch of events to insert, column by column.
#[derive(Default)]
struct Batch<'a> {
    seq: Vec<i64>,
    id: Vec<String>,
    time: Vec<i64>,
    action: Vec<&'a str>,
    outcome: Vec<&'static str>,
    reason_code: Vec<i64>,
    reason: Vec<Option<&'a str>>,
    initiator: Vec<&'a str>,
    address: Vec<Option<&'a str>>,
    instance: Vec<Option<&'a str>>,
    target: Vec<Option<&'a str>>,
    key_state: Vec<Option<i64>>,
    key_version: Vec<Option<&'a str>>,
    request_id: Vec<&'a str>,
    count: Vec<Option<i64>>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

impl<'a> Batch<'a> {
    fn push(&mut self, seq: u64, e: &'a AuditEvent, prev: [u8; 32], hash: [u8; 32]) {
        self.seq.push(to_i64(seq));
        self.id.push(e.id.to_string());
        self.time.push(nanos(e.time));
        self.action.push(&e.action);
        self.outcome.push(e.outcome.as_str());
        self.reason_code.push(i64::from(e.reason_code));
        self.reason.push(e.reason.as_deref());
        self.initiator.push(&e.initiator.id);
        self.address.push(e.initiator.address.as_deref());
        self.instance.push(e.instance.as_deref());
        self.target.push(e.target.as_deref());
        self.key_state.push(e.key_state.map(i64::from));
        self.key_version.push(e.key_version.as_deref());
        self.request_id.push(&e.request_id);
        self.count.push(e.count.map(to_i64));
        self.prev_hash.push(prev.to_vec());
        self.hash.push(hash.to_vec());
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 17] {
        [
            &self.seq,
            &self.id,
            &self.time,
            &self.action,
            &self.outcome,
            &self.reason_code,
            &self.reason,
            &self.initiator,
            &self.address,
            &self.instance,
            &self.target,
            &self.key_state,
            &self.key_version,
            &self.request_id,
            &self.count,
            &self.prev_hash,
            &self.hash,
        ]
    }
}

/// Links one batch in one transaction: `Some(n)` events linked, or `None` when `wait` is false
/// and another linker holds the lock.
async fn link_batch(c: &mut Object, wait: bool) -> Result<Option<usize>, StoreError> {
    let tx = c.transaction().await.map_err(pg_error)?;
    if wait {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LINK_LOCK])
            .await
            .map_err(pg_error)?;
    } else {
        let got = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&LINK_LOCK])
            .await
            .map_err(pg_error)?;
        if !got.bool(0)? {
            // Dropped: rolled back.
            return Ok(None);
        }
    }
    let head = tx.prepare_cached(HEAD).await.map_err(pg_error)?;
    let head = tx.query_opt(&head, &[]).await.map_err(pg_error)?;
    let (mut seq, mut prev) = match head {
        Some(r) => head_from(&r)?,
        None => (0, GENESIS_HASH),
    };
    let take = tx.prepare_cached(TAKE_PENDING).await.map_err(pg_error)?;
    let rows = tx.query(&take, &[&LINK_BATCH]).await.map_err(pg_error)?;
    if rows.is_empty() {
        tx.commit().await.map_err(pg_error)?;
        return Ok(Some(0));
    }
    let mut pending = rows
        .iter()
        .map(pending_from)
        .collect::<Result<Vec<_>, _>>()?;
    // Ids are handed out at insert, not at commit: within a batch the older write goes first.
    pending.sort_unstable_by_key(|(id, _)| *id);
    let mut batch = Batch::default();
    for (_, e) in &pending {
        seq += 1;
        let hash = chain_hash(seq, &prev, e);
        batch.push(seq, e, prev, hash);
        prev = hash;
    }
    let link = tx.prepare_cached(LINK).await.map_err(pg_error)?;
    tx.execute(&link, &batch.params()).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(Some(pending.len()))
}

impl PgStore {
    /// Links every pending event committed before this call into the chain, waiting for another
    /// node's linker if one runs. Returns how many this call linked.
    ///
    /// Each batch is one transaction; the loop ends at a short batch (at that statement's
    /// snapshot nothing older was pending), so a steady stream of writes cannot keep it going.
    pub async fn link_pending(&self) -> Result<u64, StoreError> {
        self.link(true).await
    }

    /// As [`link_pending`](Self::link_pending), but returns 0 at once when another node is
    /// linking (for the background linker every node runs).
    pub async fn try_link_pending(&self) -> Result<u64, StoreError> {
        self.link(false).await
    }

    async fn link(&self, wait: bool) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        // Nothing pending, nothing to lock: events a linker is moving stay visible here until
        // it commits, and then they are in the chain (one snapshot sees both tables).
        let any = c
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM audit_pending)")
            .await
            .map_err(pg_error)?;
        if !c.query_one(&any, &[]).await.map_err(pg_error)?.bool(0)? {
            return Ok(0);
        }
        let mut total = 0u64;
        while let Some(n) = link_batch(&mut c, wait).await? {
            total += u64::try_from(n).unwrap_or(u64::MAX);
            if i64::try_from(n).unwrap_or(i64::MAX) < LINK_BATCH {
                break;
            }
        }
        Ok(total)
    }
}

#[async_trait::async_trait]
impl AuditStore for PgStore {
    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        self.link_pending().await?;
        let c = self.client().await?;
        let stmt = c.prepare_cached(HEAD).await.map_err(pg_error)?;
        let row = c.query_opt(&stmt, &[]).await.map_err(pg_error)?;
        Ok(row.as_ref().map(head_from).transpose()?)
    }

    async fn audit_events(&self, q: &AuditQuery) -> Result<(Vec<ChainedEvent>, u64), StoreError> {
        self.link_pending().await?;
        let (filter, values) = query_where(q, '$');
        let params = pg_params(&values);
        let mut c = self.client().await?;
        // One snapshot for the total and the page (read from the end past the middle).
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_error)?;
        let total = tx
            .query_one(&count_sql(&filter), &params)
            .await
            .map_err(pg_error)?;
        let total = u64::try_from(total.i64(0)?).unwrap_or(0);
        let (page, reversed) = page_sql(q, &filter, total);
        let rows = tx.query(&page, &params).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let mut events = rows.iter().map(event_from).collect::<Result<Vec<_>, _>>()?;
        if reversed {
            events.reverse();
        }
        Ok((events, total))
    }

    async fn audit_events_after(
        &self,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<ChainedEvent>, StoreError> {
        self.link_pending().await?;
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(&stmt, &[&to_i64(seq), &i64::from(limit.min(MAX_PAGE))])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(event_from).collect::<Result<_, _>>()?)
    }

    async fn insert_audit_checkpoint(&self, cp: &AuditCheckpoint) -> Result<(), StoreError> {
        self.link_pending().await?;
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit_checkpoints (seq, hash, time, signature) VALUES ($1, $2, $3, $4)",
            &[
                &to_i64(cp.seq),
                &&cp.hash[..],
                &nanos(cp.time),
                &cp.signature,
            ],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn latest_audit_checkpoint(&self) -> Result<Option<AuditCheckpoint>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq, hash, time, signature FROM audit_checkpoints
                 ORDER BY seq DESC, id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(checkpoint_from).transpose()?)
    }

    async fn export_cursor(&self, sink: &str) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT seq FROM audit_export_cursors WHERE sink = $1",
                &[&sink],
            )
            .await
            .map_err(pg_error)?;
        Ok(match row {
            Some(r) => u64::try_from(r.i64(0)?).unwrap_or(0),
            None => 0,
        })
    }

    async fn set_export_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO audit_export_cursors (sink, seq, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (sink) DO UPDATE
                 SET seq = GREATEST(audit_export_cursors.seq, excluded.seq),
                     updated_at = excluded.updated_at",
            &[&sink, &to_i64(seq), &nanos(OffsetDateTime::now_utc())],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn lease_export(
        &self,
        sink: &str,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let c = self.client().await?;
        // One statement: of two nodes racing for a free lease, the second waits for the first's
        // row and then finds it taken.
        let row = c
            .query_opt(
                "INSERT INTO audit_export_cursors (sink, seq, updated_at, holder, lease_until)
                 VALUES ($1, 0, $3, $2, $4)
                 ON CONFLICT (sink) DO UPDATE SET holder = excluded.holder,
                                                  lease_until = excluded.lease_until
                 WHERE audit_export_cursors.holder IS NULL
                    OR audit_export_cursors.holder = excluded.holder
                    OR audit_export_cursors.lease_until IS NULL
                    OR audit_export_cursors.lease_until <= $3
                 RETURNING holder",
                &[&sink, &holder, &nanos(now), &nanos(until)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.is_some())
    }

    async fn release_export_leases(&self, holder: &str) -> Result<(), StoreError> {
        let c = self.client().await?;
        // The lease ends now (free to take at once) and says when the sink was last held.
        let now = nanos(OffsetDateTime::now_utc());
        c.execute(
            "UPDATE audit_export_cursors SET holder = NULL, lease_until = $2 WHERE holder = $1",
            &[&holder, &now],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn export_floor(&self, held_since: OffsetDateTime) -> Result<Option<u64>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(
                "SELECT min(seq) FROM audit_export_cursors
                 WHERE sink <> $1 AND greatest(coalesce(lease_until, 0), updated_at) >= $2",
                &[&ARCHIVE_CURSOR, &nanos(held_since)],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.opt_i64(0)?.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    async fn audit_first_seq(&self) -> Result<Option<u64>, StoreError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT min(seq) FROM audit_events", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.opt_i64(0)?.and_then(|s| u64::try_from(s).ok()))
    }

    async fn prune_audit(&self, prune: &AuditPrune) -> Result<u64, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        let row = tx
            .query_one("SELECT min(seq), max(seq) FROM audit_events", &[])
            .await
            .map_err(pg_error)?;
        let (Some(first), Some(last)) = (row.opt_i64(0)?, row.opt_i64(1)?) else {
            return Ok(0);
        };
        let (first, last) = (
            u64::try_from(first).unwrap_or(0),
            u64::try_from(last).unwrap_or(0),
        );
        let Some(hi) = prune_window(first, last, prune) else {
            return Ok(0);
        };
        let first_new = match prune.older_than {
            None => None,
            Some(t) => tx
                .query_one(
                    "SELECT min(seq) FROM audit_events WHERE seq BETWEEN $1 AND $2 AND time >= $3",
                    &[&to_i64(first), &to_i64(hi), &nanos(t)],
                )
                .await
                .map_err(pg_error)?
                .opt_i64(0)?
                .and_then(|s| u64::try_from(s).ok()),
        };
        let through = prune_through(hi, prune, first_new);
        if through < first {
            return Ok(0);
        }
        let n = tx
            .execute(
                "DELETE FROM audit_events WHERE seq <= $1",
                &[&to_i64(through)],
            )
            .await
            .map_err(pg_error)?;
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE seq <= $1",
            &[&to_i64(through)],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(n)
    }
}

/// One pass of the walk over the chain, streamed (one row in memory at a time). `known` answers
/// the verifier's question of where a hash is stored; an unanswered question is returned.
async fn walk(
    tx: &deadpool_postgres::Transaction<'_>,
    known: Option<([u8; 32], Option<u64>)>,
) -> Result<(ChainVerifier, Option<[u8; 32]>), StoreError> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events ORDER BY seq");
    let rows = tx
        .query_raw(&sql, std::iter::empty::<i64>())
        .await
        .map_err(pg_error)?;
    let mut rows = std::pin::pin!(rows);
    let mut asked = None;
    let mut seq_of = |h: &[u8; 32]| match known {
        Some((k, seq)) if k == *h => seq,
        _ => {
            asked = Some(*h);
            None
        }
    };
    let mut chain = ChainWalk::resuming();
    while let Some(r) = rows.try_next().await.map_err(pg_error)? {
        chain.row(walk_row(&r), &mut seq_of);
    }
    let verifier = chain.end(&mut seq_of);
    Ok((verifier, asked))
}

/// Twin of [`verify_audit_chain`](crate::verify_audit_chain) on PostgreSQL: links what is
/// pending, then walks the whole chain in one snapshot, in constant memory, and checks every
/// checkpoint's signature with `custody`.
///
/// The verifier asks where a hash is stored at most once, at the first break, and cannot wait
/// for the database there: the first pass answers "nowhere" and notes the question; if one was
/// asked, it is answered in SQL and the walk runs again on the same snapshot with the answer.
/// An intact chain is read once, a broken one twice.
pub async fn verify_audit_chain_pg(
    store: &PgStore,
    custody: &dyn Custody,
) -> Result<ChainReport, StoreError> {
    verify_audit_trail_pg(store, None, crate::archive::ArchiveStart::Genesis, custody)
        .await
        .map(|t| t.chain)
}

/// [`verify_audit_chain_pg`] over the archive in `archive` and the rows in the database as one
/// chain, as [`verify_audit_trail`](crate::verify_audit_trail) does on SQLite.
pub async fn verify_audit_trail_pg(
    store: &PgStore,
    archive: Option<&dyn crate::archive::SegmentStore>,
    start: crate::archive::ArchiveStart,
    custody: &dyn Custody,
) -> Result<TrailReport, StoreError> {
    store.link_pending().await?;
    let mut c = store.client().await?;
    let tx = c
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)?;
    // The walk is one long statement.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(pg_error)?;
    let mut known = None;
    let verifier = loop {
        let (verifier, asked) = walk(&tx, known).await?;
        match asked {
            Some(h) if known.is_none() => {
                // No index on `hash`: a scan, run at most once.
                let row = tx
                    .query_opt(
                        "SELECT seq FROM audit_events WHERE hash = $1 ORDER BY seq DESC LIMIT 1",
                        &[&&h[..]],
                    )
                    .await
                    .map_err(pg_error)?;
                let seq = match row {
                    Some(r) => u64::try_from(r.i64(0)?).ok(),
                    None => None,
                };
                known = Some((h, seq));
            }
            _ => break verifier,
        }
    };
    let rows = tx
        .query(
            "SELECT c.seq, c.hash, c.time, c.signature, e.hash
             FROM audit_checkpoints c LEFT JOIN audit_events e ON e.seq = c.seq
             ORDER BY c.seq, c.id",
            &[],
        )
        .await
        .map_err(pg_error)?;
    let mut checkpoints = Vec::with_capacity(rows.len());
    let mut stored = HashMap::new();
    for r in &rows {
        let cp = checkpoint_from(r)?;
        if let Some(h) = r.opt_blob(4)? {
            stored.insert(cp.seq, hash32(Some(h)));
        }
        checkpoints.push(cp);
    }
    let archived = tx
        .query_opt(
            "SELECT seq FROM audit_export_cursors WHERE sink = $1",
            &[&ARCHIVE_CURSOR],
        )
        .await
        .map_err(pg_error)?
        .map_or(Ok(0), |r| r.i64(0))?;
    let chain = verifier.finish(&checkpoints, |seq| stored.get(&seq).copied(), custody);
    let Some(dir) = archive else {
        tx.commit().await.map_err(pg_error)?;
        return Ok(join(
            chain,
            None,
            u64::try_from(archived).unwrap_or(0),
            |_| None,
        ));
    };
    // Offline: the archive's segments are read on this thread.
    let probe = chain.first.and_then(|f| f.0.checked_sub(1));
    let report = verify_archive(dir, custody, probe, start)?;
    let db_hash = match report.head {
        None => None,
        Some((h, _)) => tx
            .query_opt(
                "SELECT hash FROM audit_events WHERE seq = $1",
                &[&to_i64(h)],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.opt_blob(0).map(hash32))
            .transpose()?,
    };
    tx.commit().await.map_err(pg_error)?;
    Ok(join(
        chain,
        Some((dir.location(), report)),
        u64::try_from(archived).unwrap_or(0),
        |_| db_hash,
    ))
}
