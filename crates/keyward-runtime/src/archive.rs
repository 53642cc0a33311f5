//! Audit retention: the archiver, which writes closed ranges of the chain to archive segments
//! (`keyward_store::archive`), and the pruner, which deletes archived rows from the database
//! in small batches. Both run off the request path.
//!
//! The order is what makes pruning safe: a segment is written, fsynced and moved into place
//! (file and directory synced) before the `archive` cursor moves past it, and the pruner never
//! deletes past that cursor, nor past any export sink's cursor (so a sink still reads every
//! event it has not delivered from the database, exactly once as before). A crash between the
//! segment and the cursor leaves a whole segment the next holder finds and adopts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_core::{AuditCheckpoint, AuditPrune, AuditStore, Custody, GENESIS_HASH};
use keyward_store::archive::{
    ARCHIVE_CURSOR, DirSegments, SegmentStore, SegmentWriter, segment_head,
};
use time::OffsetDateTime;

use crate::audit::{LowPriority, wait_or_stop};
use crate::config::{ArchiveTarget, ServerConfig};
use crate::metrics::Metrics;

/// The archive `config` names (`[audit] archive_dir`, `[audit.s3]`, or the default), opened;
/// `None` when the server does not archive.
pub fn open_archive(config: &ServerConfig) -> anyhow::Result<Option<Arc<dyn SegmentStore>>> {
    Ok(match config.audit_archive() {
        None => None,
        Some(ArchiveTarget::Dir(d)) => Some(Arc::new(DirSegments::new(d))),
        Some(ArchiveTarget::S3 { s3, staging }) => {
            Some(Arc::new(crate::archive_s3::S3Segments::open(&s3, staging)?))
        }
    })
}

/// What the archiver does, from `[audit]`.
#[derive(Clone)]
pub struct ArchiveSettings {
    /// Where segments go.
    pub store: Arc<dyn SegmentStore>,
    /// Events per segment at most.
    pub segment_events: u64,
    /// A shorter segment is written once the last one is this old.
    pub segment_max: Duration,
    /// How often to look for work.
    pub poll: Duration,
    /// Behind the head by more than this many events, segments are written at the normal
    /// priority (`[audit] catch_up_events`).
    pub catch_up_events: u64,
}

/// How long the archiver's lease lasts: long enough for a segment's write between renewals.
fn archive_lease(poll: Duration) -> time::Duration {
    time::Duration::try_from((poll * 10).max(Duration::from_secs(60)))
        .unwrap_or(time::Duration::MINUTE)
}

/// Runs the archiver until `stop`: of several processes on one database, the one holding the
/// `archive` lease (the export sinks' lease mechanism) writes the next segment once
/// `segment_events` events (or, after `segment_max`, any) are past the archived position.
pub fn spawn_archiver(
    trail: Arc<dyn AuditStore>,
    custody: Arc<dyn Custody>,
    metrics: Arc<Metrics>,
    settings: ArchiveSettings,
    holder: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let worker = match LowPriority::start(ARCHIVE_CURSOR, settings.catch_up_events) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "audit archive: cannot start the archive thread; archiving (and so pruning) is off");
                return;
            }
        };
        let runtime = tokio::runtime::Handle::current();
        let lease = archive_lease(settings.poll);
        // The archive's last position and hash, as read from its last segment (None: re-read).
        let mut head: Option<(u64, [u8; 32])> = None;
        let mut last_write = Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = OffsetDateTime::now_utc();
            let held = matches!(
                trail
                    .lease_export(ARCHIVE_CURSOR, &holder, now, now + lease)
                    .await,
                Ok(true)
            );
            metrics.export_held(ARCHIVE_CURSOR, held);
            if !held {
                head = None;
                if wait_or_stop(settings.poll, &mut stop).await {
                    return;
                }
                continue;
            }
            match archive_once(
                &trail,
                &custody,
                &metrics,
                &settings,
                &holder,
                &worker,
                &runtime,
                &mut head,
                &mut last_write,
            )
            .await
            {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    head = None;
                    tracing::warn!(error = %e, archive = %settings.store.location(), "audit archive failed; will retry");
                }
            }
            if wait_or_stop(settings.poll, &mut stop).await {
                return;
            }
        }
    })
}

/// One round: adopts a segment left by a crash, then writes the next segment if one is due.
/// `Ok(true)` when more is due at once.
#[allow(clippy::too_many_arguments)]
async fn archive_once(
    trail: &Arc<dyn AuditStore>,
    custody: &Arc<dyn Custody>,
    metrics: &Metrics,
    settings: &ArchiveSettings,
    holder: &str,
    worker: &LowPriority,
    runtime: &tokio::runtime::Handle,
    head: &mut Option<(u64, [u8; 32])>,
    last_write: &mut Instant,
) -> anyhow::Result<bool> {
    let mut cursor = trail.export_cursor(ARCHIVE_CURSOR).await?;
    if head.is_none_or(|h| h.0 != cursor) {
        let store = settings.store.clone();
        let found = worker
            .run(
                move || -> Result<Option<(u64, [u8; 32])>, keyward_core::StoreError> {
                    match store.list()?.last() {
                        None => Ok(None),
                        Some(s) => segment_head(store.as_ref(), s).map(Some),
                    }
                },
            )
            .await
            .map_err(anyhow::Error::msg)??;
        let (last, hash) = found.unwrap_or((0, GENESIS_HASH));
        if last < cursor {
            anyhow::bail!(
                "the archive ({}) holds events up to seq {last}, but the database records seq {cursor} archived: restore the missing segments (nothing more is archived or pruned until then)",
                settings.store.location()
            );
        }
        if last > cursor {
            // Written and synced before a crash, the cursor not yet moved: adopt it.
            trail.set_export_cursor(ARCHIVE_CURSOR, last).await?;
            tracing::info!(
                seq = last,
                "audit archive: adopted a segment written before a restart"
            );
            cursor = last;
        }
        *head = Some((last, hash));
    }
    let Some((db_head, _)) = trail.audit_head().await? else {
        return Ok(false);
    };
    let available = db_head.saturating_sub(cursor);
    metrics.export_lag(ARCHIVE_CURSOR, available);
    worker.note_lag(available);
    if available == 0
        || (available < settings.segment_events && last_write.elapsed() < settings.segment_max)
    {
        return Ok(false);
    }
    let n = available.min(settings.segment_events);
    let (first, last) = (cursor + 1, cursor + n);
    let prev = head.map_or(GENESIS_HASH, |h| h.1);
    let writer = {
        let (trail, runtime, store) = (trail.clone(), runtime.clone(), settings.store.clone());
        worker
            .run(move || -> anyhow::Result<SegmentWriter> {
                let mut w = SegmentWriter::create(store, first, last, prev)?;
                let mut at = cursor;
                while at < last {
                    let want = u32::try_from(last - at)
                        .unwrap_or(u32::MAX)
                        .min(keyward_store::MAX_AUDIT_PAGE);
                    let page = runtime.block_on(trail.audit_events_after(at, want))?;
                    if page.is_empty() {
                        anyhow::bail!("events after seq {at} are gone from the database");
                    }
                    for e in page.iter().take_while(|e| e.seq <= last) {
                        w.push(e)?;
                        at = e.seq;
                    }
                }
                Ok(w)
            })
            .await
            .map_err(anyhow::Error::msg)??
    };
    let hash = writer.head();
    let time = OffsetDateTime::now_utc();
    let signature = {
        let custody = custody.clone();
        let bytes = keyward_core::checkpoint_bytes(last, &hash, time);
        worker
            .run(move || custody.sign_record(&bytes))
            .await
            .map_err(anyhow::Error::msg)??
    };
    let checkpoint = AuditCheckpoint {
        seq: last,
        hash,
        time,
        signature,
    };
    // Still the holder? Another process that took over writes the same range itself.
    let now = OffsetDateTime::now_utc();
    if !trail
        .lease_export(
            ARCHIVE_CURSOR,
            holder,
            now,
            now + archive_lease(settings.poll),
        )
        .await?
    {
        *head = None;
        return Ok(false);
    }
    let placed = worker
        .run(move || writer.finish(&checkpoint))
        .await
        .map_err(anyhow::Error::msg)??;
    trail.set_export_cursor(ARCHIVE_CURSOR, last).await?;
    metrics.exported(ARCHIVE_CURSOR, n);
    tracing::debug!(first, last, segment = %placed, "audit archive: segment written");
    *head = Some((last, hash));
    *last_write = Instant::now();
    Ok(available > n)
}

/// An export sink that no server has held for this long (removed from every config, or on a
/// server that is gone) no longer holds pruning back: its undelivered events stay in the
/// archive.
pub const SINKS_HOLD_PRUNING_FOR: time::Duration = time::Duration::days(1);

/// What the pruner keeps, from `[audit]`.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// The newest events kept (0: no count rule).
    pub retain_events: u64,
    /// Events younger than this are kept (`None`: no age rule).
    pub retain: Option<Duration>,
    /// Events per prune transaction.
    pub batch: u32,
    /// How often to look for work.
    pub poll: Duration,
    /// The export sinks configured here, whose cursors pruning never passes (nor those of the
    /// sinks other servers held within [`SINKS_HOLD_PRUNING_FOR`]).
    pub sinks: Vec<String>,
}

/// Runs the pruner until `stop`: every `poll`, deletes events outside the retention that are
/// archived and delivered to every configured export sink, a batch per transaction (so the
/// writer is held for one small delete at a time), until none is left.
pub fn spawn_pruner(
    trail: Arc<dyn AuditStore>,
    settings: RetentionSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if wait_or_stop(settings.poll, &mut stop).await {
                return;
            }
            match prune(trail.as_ref(), &settings, &mut stop).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(events = n, "audit retention: pruned"),
                Err(e) => tracing::warn!(error = %e, "audit retention: pruning failed"),
            }
        }
    })
}

/// One pass of the pruner: the events deleted.
pub async fn prune(
    trail: &dyn AuditStore,
    settings: &RetentionSettings,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<u64, keyward_core::StoreError> {
    if settings.retain_events == 0 && settings.retain.is_none() {
        return Ok(0);
    }
    let mut safe_through = trail.export_cursor(ARCHIVE_CURSOR).await?;
    for s in &settings.sinks {
        safe_through = safe_through.min(trail.export_cursor(s).await?);
    }
    // Sinks another server of the cluster exports (configured there, not here) hold pruning
    // too, while any server has held them recently.
    let held_since = OffsetDateTime::now_utc() - SINKS_HOLD_PRUNING_FOR;
    if let Some(floor) = trail.export_floor(held_since).await? {
        safe_through = safe_through.min(floor);
    }
    let Some((head, _)) = trail.audit_head().await? else {
        return Ok(0);
    };
    let plan = AuditPrune {
        safe_through,
        count_through: if settings.retain_events == 0 {
            0
        } else {
            head.saturating_sub(settings.retain_events)
        },
        older_than: settings.retain.map(|d| OffsetDateTime::now_utc() - d),
        batch: settings.batch,
    };
    let mut total = 0;
    loop {
        let n = trail.prune_audit(&plan).await?;
        total += n;
        if n < u64::from(settings.batch) || *stop.borrow() {
            return Ok(total);
        }
        // Leave the writer to requests between two batches.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
