//! The group-commit writer: one thread owns the read-write connection; callers send closures and
//! await the outcome, which they get only after the transaction holding their write is durable.
//!
//! Jobs of several statements run in a savepoint so a failing job leaves no partial write; a
//! single-statement job needs none (SQLite makes each statement atomic).
//!
//! Commits are pipelined: the writer connection runs with `synchronous=NORMAL`, so `COMMIT`
//! appends the transaction's frames to the write-ahead log without waiting for the disk, and a
//! second thread, the syncer, `fdatasync`s the log and only then answers the callers. While one
//! batch's frames go to disk the writer gathers the next, and commits it when that sync ends (or
//! once it is large): one commit per sync, where committing each small batch at once made ~3.4
//! commits per sync, each rewriting the log's last pages (measured: 3 200 commits/s for 900
//! syncs/s at 64 connections; with the wait, 10 % more wraps/s at 12 % less CPU each).
//!
//! A reader may see a committed write a fraction of a millisecond before it is durable, but
//! every API answer waits for its own audit event, which is later in the log than anything the
//! request saw, so no answer depends on a write that a crash could take back. A failed sync stops
//! the store: after one the kernel may have dropped the pages, so nothing written is trusted
//! until a restart reads the log back.
//!
//! WAL checkpoints run on their own thread so the writer never stalls behind one; see
//! [`checkpoint`] for how the log is kept short.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use keyward_core::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Work = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

struct Job {
    work: Work,
    atomic: bool,
}

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 1024;
/// A batch this large is committed even while the syncer is still busy.
const COMMIT_ANYWAY: usize = 256;
/// How often the checkpointer folds the WAL back into the database. Often, so that each pass
/// flushes little: a checkpoint's database sync shares the disk with the log syncs requests wait
/// for, and on this class of disk a 4 MB flush every 200 ms made several of those syncs a second
/// take 5-180 ms where they take 0.3 ms alone; 1 MB every 50 ms, a few of 5-10 ms (BENCHMARKS.md).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);
/// A log longer than this (pages) is restarted from its beginning by the writer.
const RESTART_AFTER_FRAMES: i64 = 1024;
/// The writer connection's page cache, in KiB (`PRAGMA cache_size` with a negative value;
/// SQLite's default is 2 MiB). Filled only as pages are used.
const WRITER_CACHE_KIB: i64 = -16 * 1024;

/// Whether a job has several statements that must stand or fall together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// One statement: atomic by itself.
    One,
    /// Several statements: run in a savepoint.
    Many,
}

/// Handle to the writer thread. Dropping every handle stops the thread after pending writes.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// What the writer, the syncer and the checkpointer share.
struct Shared {
    /// The write-ahead log the syncer makes durable.
    wal_path: PathBuf,
    /// Set by the checkpointer when the log should be restarted; done by the writer.
    restart_wanted: AtomicBool,
    /// Set once a sync failed: the store accepts no more writes.
    failed: AtomicBool,
    /// Set while the syncer waits for the disk.
    syncing: AtomicBool,
    /// The writer thread, unparked when a sync ends.
    writer: std::sync::OnceLock<std::thread::Thread>,
}

/// Commits whose callers wait for the next sync.
struct Committed(Vec<Completion>);

impl Writer {
    /// Starts the writer thread on `conn` (whose database's log is `wal_path`), the syncer, and a
    /// checkpointer on `checkpoint_conn`.
    pub fn start(
        mut conn: Connection,
        checkpoint_conn: Connection,
        wal_path: PathBuf,
    ) -> std::io::Result<Self> {
        // Durability comes from the syncer's fdatasync; checkpoints and log restarts still sync
        // as SQLite does under NORMAL. The checkpointer, not the writer, folds the log back.
        // Savepoint journals in memory (`temp_store`): a job's savepoint (and a statement's,
        // for an insert that fires triggers) copies each page it changes into the sub-journal,
        // which SQLite otherwise spills to a temporary file once one job's copies pass 64 KiB
        // (a key creation's often do: ~16 pages), writes through the kernel until the commit
        // and then deletes: 27 % of the writer's time creating keys (issue 19, BENCHMARKS.md).
        // In memory it holds one job's pages at a time. A larger page cache
        // (`WRITER_CACHE_KIB`): while no other process writes, the writer's cache stays valid
        // from one commit to the next, so the index pages it changes at random places (key and
        // version ids) come from it rather than from the kernel.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| conn.pragma_update(None, "wal_autocheckpoint", 0))
            .and_then(|()| conn.pragma_update(None, "temp_store", "MEMORY"))
            .and_then(|()| conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB))
            .and_then(|()| conn.busy_handler(Some(busy_wait)))
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            wal_path,
            restart_wanted: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            syncing: AtomicBool::new(false),
            writer: std::sync::OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel::<Job>();
        let (synced_tx, synced_rx) = mpsc::channel::<Committed>();
        // The checkpointer stops when the writer thread ends and drops `stop`; the syncer when
        // the writer drops its sender.
        let (stop, stopped) = mpsc::channel::<()>();
        let ckpt = shared.clone();
        std::thread::Builder::new()
            .name("keyward-store-checkpoint".into())
            .spawn(move || checkpoint(checkpoint_conn, &ckpt, stopped))?;
        let sync = shared.clone();
        std::thread::Builder::new()
            .name("keyward-store-sync".into())
            .spawn(move || syncer(&sync, synced_rx))?;
        std::thread::Builder::new()
            .name("keyward-store-writer".into())
            .spawn(move || {
                let _ = shared.writer.set(std::thread::current());
                run(conn, &shared, rx, synced_tx);
                drop(stop);
            })?;
        Ok(Writer { jobs: tx })
    }

    /// Runs `f` in the next transaction and returns its result once that transaction committed.
    pub async fn write<T, F>(&self, statements: Statements, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let work: Work = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, done)
        });
        let job = Job {
            work,
            atomic: statements == Statements::Many,
        };
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }
}

fn drain(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Whether SQLite failed to sync a file (the log, the database or the directory). SQLite syncs
/// by itself in a few places even with `synchronous=NORMAL` (a checkpoint, a log restart, a
/// commit that starts the log again), and any failed sync means what follows, as the syncer's
/// own: the kernel may have dropped dirty pages, so the store stops (see [`Shared::failed`]).
fn is_sync_failure(e: &rusqlite::Error) -> bool {
    use rusqlite::ffi;
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == ffi::SQLITE_IOERR_FSYNC
                || f.extended_code == ffi::SQLITE_IOERR_DIR_FSYNC
    )
}

/// Stops the store after a failed sync anywhere (see [`is_sync_failure`]).
fn sync_failed(shared: &Shared, e: &rusqlite::Error, during: &str) {
    tracing::error!(error = %e, "store: a sync failed during {during}; the store accepts no more writes");
    shared.failed.store(true, Ordering::Release);
}

/// The writer connection's busy handler: another connection (the checkpointer, or another
/// process's writer) holds a lock this one needs. They usually let go within microseconds, so
/// retry quickly at first, then back off; give up after about five seconds.
fn busy_wait(tries: i32) -> bool {
    match tries {
        0..200 => std::thread::sleep(Duration::from_micros(50)),
        200..1200 => std::thread::sleep(Duration::from_millis(5)),
        _ => return false,
    }
    true
}

/// A busy handler that gives up after a few quick retries (about 2 ms): for a log restart that
/// was already put off several times.
fn busy_brief(tries: i32) -> bool {
    if tries < 40 {
        std::thread::sleep(Duration::from_micros(50));
        true
    } else {
        false
    }
}

/// Log restarts tried without waiting before one waits for readers (`busy_brief`): at one try per
/// checkpointer pass, ~100 ms of not waiting, and the log grows by what that time writes.
const IMPATIENT_RESTARTS: u32 = 4;

fn run(
    mut conn: Connection,
    shared: &Shared,
    rx: mpsc::Receiver<Job>,
    synced: mpsc::Sender<Committed>,
) {
    // Writes are never held back on a timer (before commits were pipelined the writer slept
    // 0.8 ms for company; with the pipeline that only added latency: wrap at 64 connections went
    // from 17.9 k to 20.7-23.1 k req/s without it), only while a sync is in flight (below).
    let mut restarts_put_off = 0;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        drain(&rx, &mut batch);
        // While the syncer waits for the disk, a commit could not be answered before the next
        // sync anyway: gather writes until that sync can start (or the batch is large), so each
        // sync follows one commit rather than several small ones, each rewriting the same
        // last pages of the log.
        while shared.syncing.load(Ordering::Acquire) && batch.len() < COMMIT_ANYWAY {
            std::thread::park_timeout(Duration::from_micros(250));
            drain(&rx, &mut batch);
        }
        if shared.failed.load(Ordering::Acquire) {
            // Dropping the jobs unrun drops their reply channels: each caller gets Unavailable.
            continue;
        }
        if shared.restart_wanted.swap(false, Ordering::AcqRel) {
            if restart_log(&mut conn, shared, restarts_put_off >= IMPATIENT_RESTARTS) {
                restarts_put_off = 0;
            } else {
                restarts_put_off += 1;
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "store: cannot begin transaction");
            continue;
        }
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            if !job.atomic {
                done.push((job.work)(&conn).1);
                continue;
            }
            if let Err(e) = exec(&conn, "SAVEPOINT w") {
                tracing::error!(error = %e, "store: savepoint failed");
                continue;
            }
            let (ok, completion) = (job.work)(&conn);
            let end = if ok {
                exec(&conn, "RELEASE w")
            } else {
                exec(&conn, "ROLLBACK TO w").and_then(|()| exec(&conn, "RELEASE w"))
            };
            if let Err(e) = end {
                tracing::error!(error = %e, "store: savepoint release failed");
            }
            done.push(completion);
        }
        match exec(&conn, "COMMIT") {
            // The frames are in the log (not yet on disk): the syncer answers once they are.
            Ok(()) => {
                if let Err(mpsc::SendError(Committed(done))) = synced.send(Committed(done)) {
                    fail_all(done, "store syncer stopped");
                }
            }
            Err(e) => {
                if is_sync_failure(&e) {
                    sync_failed(shared, &e, "a commit");
                }
                let _ = conn.execute_batch("ROLLBACK");
                fail_all(done, &e.to_string());
            }
        }
    }
}

fn fail_all(done: Vec<Completion>, why: &str) {
    for completion in done {
        completion(Err(StoreError::Unavailable(why.to_owned())));
    }
}

/// Makes every commit the writer sent durable with one `fdatasync` of the log per round, then
/// answers their callers.
fn syncer(shared: &Shared, rx: mpsc::Receiver<Committed>) {
    let mut wal: Option<File> = None;
    while let Ok(first) = rx.recv() {
        let mut waiting = first.0;
        while let Ok(more) = rx.try_recv() {
            waiting.extend(more.0);
        }
        let synced = if shared.failed.load(Ordering::Acquire) {
            Err("an earlier sync of the write-ahead log failed".to_owned())
        } else {
            shared.syncing.store(true, Ordering::Release);
            let synced = sync_log(&shared.wal_path, &mut wal);
            shared.syncing.store(false, Ordering::Release);
            if let Some(writer) = shared.writer.get() {
                writer.unpark();
            }
            synced
        };
        if let Err(e) = &synced {
            // Like PostgreSQL after a failed fsync: the kernel may have dropped the pages, so
            // nothing more is written until a restart reads the log back from disk.
            tracing::error!(error = %e, "store: syncing the write-ahead log failed; the store accepts no more writes");
            shared.failed.store(true, Ordering::Release);
        }
        for completion in waiting {
            completion(
                synced
                    .clone()
                    .map_err(|e| StoreError::Unavailable(format!("store: {e}"))),
            );
        }
    }
}

/// `fdatasync` of the write-ahead log, through a handle opened once (and again should the file
/// ever be replaced: a sync through a handle on an unlinked file would prove nothing).
fn sync_log(path: &std::path::Path, wal: &mut Option<File>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let current = std::fs::metadata(path).map_err(|e| format!("write-ahead log: {e}"))?;
    let same = match wal {
        Some(f) => f
            .metadata()
            .is_ok_and(|m| m.ino() == current.ino() && m.dev() == current.dev()),
        None => false,
    };
    if !same {
        *wal = Some(File::open(path).map_err(|e| format!("opening the write-ahead log: {e}"))?);
    }
    match wal {
        Some(f) => f
            .sync_data()
            .map_err(|e| format!("syncing the write-ahead log: {e}")),
        None => Err("no write-ahead log handle".to_owned()),
    }
}

/// Folds the whole log into the database and restarts it from its beginning, in the writer
/// between two batches; returns whether it did. The checkpointer has already copied all but the
/// last moments' frames, so this copies little. Every commit waits while the writer does, so
/// readers still on old frames (the audit export sink reading a page of events, say) are not
/// waited for at first: the restart is tried again after the checkpointer's next pass, and only
/// once it was put off `IMPATIENT_RESTARTS` times does it wait for them, briefly (`busy_brief`).
/// Waiting every time put wrap's p99 at 6-7 ms with an export sink on, where it is 4.5-5.5 ms
/// without the wait (BENCHMARKS.md).
fn restart_log(conn: &mut Connection, shared: &Shared, patient: bool) -> bool {
    let _ = if patient {
        conn.busy_handler(Some(busy_brief))
    } else {
        conn.busy_timeout(Duration::ZERO)
    };
    // (busy, frames in the log, frames copied): busy is 1 when readers or another checkpoint
    // kept the log from being restarted.
    let restarted =
        match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
            Ok(busy) => busy == 0,
            Err(e) => {
                if is_sync_failure(&e) {
                    sync_failed(shared, &e, "a log restart");
                } else {
                    tracing::warn!(error = %e, "store: restarting the write-ahead log failed");
                }
                false
            }
        };
    let _ = conn.busy_handler(Some(busy_wait));
    restarted
}

/// Keeps the log short without stalling the writer. A PASSIVE checkpoint copies log frames into
/// the database and syncs it while the writer goes on; but SQLite starts the log again from its
/// beginning only when a writer finds it entirely copied, which never happens while writes keep
/// coming, and a log that only grows ends in a long checkpoint inside some commit (measured: an
/// 85 ms stall at 80 MB). So once the log is longer than 4 MB, the writer is asked to restart it
/// between two batches (`restart_log`), when only the frames since this pass are left to copy
/// (measured: 1-8 ms).
fn checkpoint(conn: Connection, shared: &Shared, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        // (busy, frames in the log, frames copied)
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        }) {
            Ok((_, log, _)) if log >= RESTART_AFTER_FRAMES => {
                shared.restart_wanted.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) if is_sync_failure(&e) => sync_failed(shared, &e, "a checkpoint"),
            Err(e) => tracing::warn!(error = %e, "store: checkpoint failed"),
        }
    }
}
