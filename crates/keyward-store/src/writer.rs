//! The group-commit writer: one thread owns the read-write connection; callers send closures and
//! await the outcome, which they get only after the transaction holding their write is durable.

use std::sync::mpsc;

use keyward_core::StoreError;
use rusqlite::Connection;
use tokio::sync::oneshot;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> (bool, Completion) + Send>;

/// Most writes folded into one transaction.
const MAX_BATCH: usize = 512;

/// Handle to the writer thread. Dropping every handle stops the thread after pending writes.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("keyward-store-writer".into())
            .spawn(move || run(conn, rx))?;
        Ok(Writer { jobs: tx })
    }

    /// Runs `f` in the next transaction and returns its result once that transaction committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let done: Completion = Box::new(move |commit| {
                let _ = tx.send(commit.and(result));
            });
            (ok, done)
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("store writer stopped".into()))?
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut done = Vec::with_capacity(batch.len());
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the jobs unrun drops their reply channels: each caller gets Unavailable.
            tracing::error!(error = %e, "store: cannot begin transaction");
            drop(batch);
            continue;
        }
        for job in batch {
            let savepoint = conn.execute_batch("SAVEPOINT w");
            if let Err(e) = savepoint {
                tracing::error!(error = %e, "store: savepoint failed");
            }
            let (ok, completion) = job(&conn);
            let end = if ok {
                "RELEASE w"
            } else {
                "ROLLBACK TO w; RELEASE w"
            };
            if let Err(e) = conn.execute_batch(end) {
                tracing::error!(error = %e, "store: savepoint release failed");
            }
            done.push(completion);
        }
        let commit = conn.execute_batch("COMMIT").map_err(unavailable);
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

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
