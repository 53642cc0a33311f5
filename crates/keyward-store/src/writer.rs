//! The group-commit writer: one thread owns the read-write connection; callers send closures and
//! await the outcome, which they get only after the transaction holding their write is durable.
//!
//! Jobs of several statements run in a savepoint so a failing job leaves no partial write; a
//! single-statement job needs none (SQLite makes each statement atomic). WAL checkpoints run on
//! their own thread so the writer never stalls behind one.

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
/// A batch smaller than this waits `LINGER` once for company.
const LINGER_BELOW: usize = 64;
/// A previous batch at least this large means concurrent writers: worth lingering for.
const CONCURRENT: usize = 4;
/// How long a small batch waits.
const LINGER: Duration = Duration::from_micros(800);
/// How often the checkpointer folds the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

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

impl Writer {
    /// Starts the writer thread on `conn`, and a checkpointer on `checkpoint_conn`.
    pub fn start(conn: Connection, checkpoint_conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        // The checkpointer stops when the writer thread ends and drops `stop`.
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("keyward-store-checkpoint".into())
            .spawn(move || checkpoint(checkpoint_conn, stopped))?;
        std::thread::Builder::new()
            .name("keyward-store-writer".into())
            .spawn(move || {
                run(conn, rx);
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

fn run(conn: Connection, rx: mpsc::Receiver<Job>) {
    let mut last_batch = 0;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        drain(&rx, &mut batch);
        if batch.len() < LINGER_BELOW && last_batch >= CONCURRENT {
            // Under concurrent load, waiting a moment for more writes makes each commit (WAL
            // frames and an fsync) serve more requests. A lone client never waits: its previous
            // batch was small.
            std::thread::sleep(LINGER);
            drain(&rx, &mut batch);
        }
        last_batch = batch.len();
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: each caller gets Unavailable.
            tracing::error!(error = %e, "store: cannot begin transaction");
            drop(batch);
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
        let commit = exec(&conn, "COMMIT");
        if commit.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for completion in done {
            completion(match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            });
        }
    }
}

fn checkpoint(conn: Connection, stop: mpsc::Receiver<()>) {
    // PASSIVE never blocks the writer or readers; it copies what it can and tries again later.
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "store: checkpoint failed");
        }
    }
}
