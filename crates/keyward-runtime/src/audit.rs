//! The audit trail's background work: signed checkpoints of the chain head, and the export
//! sinks (JSON Lines files with size rotation, webhooks through the one signed-POST sender,
//! [`WebhookSender`]). Both run off the request path: a sink reads committed events from the
//! store after its persisted cursor, so a slow or absent sink delays only itself and loses
//! nothing.

use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_api::AuditEventView;
use keyward_core::{AuditCheckpoint, AuditStore, ChainedEvent, Custody, checkpoint_bytes};
use keyward_crypto::Secret;
use time::OffsetDateTime;

use crate::config::{JsonlSinkSection, WebhookSinkSection};
use crate::metrics::Metrics;
use crate::sender::WebhookSender;
use crate::wire::event_view;

/// Signs and stores a checkpoint of the current head, unless the newest checkpoint already
/// covers it. Returns the checkpointed position.
pub async fn checkpoint(
    trail: &dyn AuditStore,
    custody: &dyn Custody,
) -> anyhow::Result<Option<u64>> {
    let Some((seq, hash)) = trail.audit_head().await? else {
        return Ok(None);
    };
    if trail
        .latest_audit_checkpoint()
        .await?
        .is_some_and(|c| c.seq >= seq)
    {
        return Ok(Some(seq));
    }
    let time = OffsetDateTime::now_utc();
    let signature = custody.sign_record(&checkpoint_bytes(seq, &hash, time))?;
    trail
        .insert_audit_checkpoint(&AuditCheckpoint {
            seq,
            hash,
            time,
            signature,
        })
        .await?;
    Ok(Some(seq))
}

/// Checkpoints every `interval`, or sooner once `every_events` events were added.
pub fn spawn_checkpointer(
    trail: Arc<dyn AuditStore>,
    custody: Arc<dyn Custody>,
    interval: Duration,
    every_events: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_seq = 0u64;
        let mut last_at = Instant::now();
        let poll = interval.min(Duration::from_secs(1));
        loop {
            tokio::time::sleep(poll).await;
            let head = match trail.audit_head().await {
                Ok(h) => h.map_or(0, |h| h.0),
                Err(e) => {
                    tracing::warn!(error = %e, "audit checkpoint: cannot read the chain head");
                    continue;
                }
            };
            if head <= last_seq || (last_at.elapsed() < interval && head - last_seq < every_events)
            {
                continue;
            }
            match checkpoint(trail.as_ref(), custody.as_ref()).await {
                Ok(seq) => {
                    last_seq = seq.unwrap_or(0);
                    last_at = Instant::now();
                    tracing::debug!(seq = last_seq, "audit checkpoint");
                }
                Err(e) => tracing::warn!(error = %e, "audit checkpoint failed"),
            }
        }
    })
}

/// Records the aggregated audit events (`[audit] aggregate_crypto`) of each second just after it
/// ends (one event per count and second; the second in progress stays counting), until `stop`
/// turns true (a flush in progress finishes first; the caller then flushes every count). A
/// failed flush is retried the next second, and until one succeeds requests are recorded one by
/// one.
pub fn spawn_aggregation_flusher(
    keys: keyward_core::KeyService,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = OffsetDateTime::now_utc();
            let to_next = Duration::from_nanos(u64::from(1_000_000_000 - now.nanosecond()))
                + Duration::from_millis(5);
            tokio::select! {
                _ = tokio::time::sleep(to_next) => {}
                _ = stop.changed() => break,
            }
            let second = OffsetDateTime::now_utc().replace_nanosecond(0).ok();
            match keys.flush_aggregated(second).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(events = n, "audit: aggregated events recorded"),
                Err(e) => {
                    tracing::error!(error = %e, "audit: the aggregated events could not be recorded; retrying, and recording requests one by one meanwhile")
                }
            }
        }
    })
}

/// Where exported events go.
enum Sink {
    Jsonl(Arc<std::sync::Mutex<JsonlFile>>),
    Webhook(Webhook),
}

/// How long an export lease lasts without renewal: the holder renews it every round (at most a
/// poll apart, or a delivery's time); another process takes the sink over once it lapses.
fn export_lease(poll: Duration) -> Duration {
    (poll * 10).max(Duration::from_secs(2))
}

/// One thread at the lowest CPU priority (nice 19) that runs an export sink's (or the
/// archiver's) work: reading events back from the store, rendering and writing them. The work
/// then takes the time the API leaves idle rather than competing with requests for it: reading
/// 5 000 events at a time on a runtime worker and rendering them on the blocking pool, it held
/// up requests in bursts (measured with the change to log restarts in the store's writer,
/// interleaved A/B: +7 % wraps/s, +5 % unwraps/s, BENCHMARKS.md).
///
/// Nice 19 smooths bursts; it cannot carry a load that leaves no idle CPU. The thread then gets
/// about 1 % of a core, each job waits seconds for it, and the work falls behind for as long as
/// the load lasts (pruning waits for it, so the database grows without bound: 10 600 of 12 000
/// events unarchived in a CI run on PostgreSQL). So jobs run on the runtime's blocking pool at
/// the normal priority, competing fairly with requests, while either
/// - the caller reports a lag of more than `catch_up` events ([`LowPriority::note_lag`]), or
/// - a job on the nice-19 thread waited more than [`STARVED`] for a core (the kernel's run
///   delay for the thread, `/proc/thread-self/schedstat`): the machine has no idle time to
///   give, so for the next [`STARVED_FOR`] the work takes its fair share instead.
///
/// The work's share of the CPU is then what it costs, no more. The thread ends when this is
/// dropped, after the job it is running.
pub(crate) struct LowPriority {
    jobs: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    lane: Arc<Lane>,
}

/// A job on the nice-19 thread that waited this long for a core means the machine is saturated.
pub(crate) const STARVED: Duration = Duration::from_millis(250);
/// How long jobs then run at the normal priority before nice 19 is tried again.
pub(crate) const STARVED_FOR: Duration = Duration::from_secs(30);

/// Which priority a [`LowPriority`]'s next job runs at; shared with its thread.
struct Lane {
    name: String,
    catch_up: u64,
    behind: std::sync::atomic::AtomicBool,
    starved_until: std::sync::Mutex<Option<Instant>>,
}

impl Lane {
    fn hurry(&self) -> bool {
        self.behind.load(std::sync::atomic::Ordering::Relaxed)
            || self
                .starved_until
                .lock()
                .is_ok_and(|u| u.is_some_and(|u| Instant::now() < u))
    }

    /// A nice-19 job waited `waited` for a core in all.
    fn waited(&self, waited: Duration) {
        if waited <= STARVED {
            return;
        }
        if let Ok(mut until) = self.starved_until.lock() {
            *until = Some(Instant::now() + STARVED_FOR);
        }
        tracing::info!(sink = %self.name, waited_ms = waited.as_millis() as u64, "audit export: the lowest priority is starved (no idle CPU); working at the normal priority for a while");
    }
}

/// The time this thread has spent waiting for a core (the second field of
/// `/proc/thread-self/schedstat`), if the kernel reports it.
fn run_delay() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

impl LowPriority {
    pub(crate) fn start(name: &str, catch_up: u64) -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let lane = Arc::new(Lane {
            name: name.to_owned(),
            catch_up,
            behind: std::sync::atomic::AtomicBool::new(false),
            starved_until: std::sync::Mutex::new(None),
        });
        let on_thread = lane.clone();
        std::thread::Builder::new()
            .name("keyward-audit-export".into())
            .spawn(move || {
                // On Linux each thread has its own nice value; raising it needs no privilege.
                let me = rustix::thread::gettid();
                if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
                    tracing::warn!(sink = %on_thread.name, error = %e, "audit export: cannot lower the exporter's priority");
                }
                while let Ok(job) = rx.recv() {
                    job();
                }
            })?;
        Ok(LowPriority { jobs, lane })
    }

    /// The work is `lag` events behind the chain's head: past `catch_up`, the next jobs run at
    /// the normal priority.
    pub(crate) fn note_lag(&self, lag: u64) {
        use std::sync::atomic::Ordering;
        let lane = &self.lane;
        let behind = lag > lane.catch_up;
        if lane.behind.swap(behind, Ordering::Relaxed) != behind {
            if behind {
                tracing::info!(sink = %lane.name, lag, catch_up = lane.catch_up, "audit export: behind by more than catch_up_events; working at the normal priority until caught up");
            } else {
                tracing::info!(sink = %lane.name, lag, "audit export: caught up");
            }
        }
    }

    /// Runs `f` on the thread and returns its result.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.lane.hurry() {
            return tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| format!("the export job failed: {e}"));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let lane = self.lane.clone();
        self.jobs
            .send(Box::new(move || {
                let before = run_delay();
                let result = f();
                if let (Some(b), Some(a)) = (before, run_delay()) {
                    lane.waited(a.saturating_sub(b));
                }
                let _ = tx.send(result);
            }))
            .map_err(|_| "the export thread stopped".to_owned())?;
        rx.await.map_err(|_| "the export thread stopped".to_owned())
    }

    /// Runs `op` on the thread with the sink's file locked.
    async fn on_file<T: Send + 'static, E: std::fmt::Display>(
        &self,
        file: &Arc<std::sync::Mutex<JsonlFile>>,
        op: impl FnOnce(&mut JsonlFile) -> Result<T, E> + Send + 'static,
    ) -> Result<T, String> {
        let file = file.clone();
        self.run(move || match file.lock() {
            Ok(mut f) => op(&mut f).map_err(|e| e.to_string()),
            Err(_) => Err("export file lock poisoned".to_owned()),
        })
        .await
        .and_then(|r| r)
    }
}

/// Runs one sink forever: take (or renew) the sink's lease, read events after the cursor,
/// deliver, move the cursor. Of several processes on one database only the lease holder
/// exports a sink, so each event reaches it once (at least once across a takeover: a holder
/// stalled past its lease may deliver a batch the next holder delivers again).
pub fn spawn_exporter(
    trail: Arc<dyn AuditStore>,
    metrics: Arc<Metrics>,
    sink: ExportSink,
    holder: String,
    poll: Duration,
    catch_up: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let ExportSink {
            name,
            batch,
            mut sink,
        } = sink;
        let cursor_name = name.clone();
        let worker = match LowPriority::start(&name, catch_up) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "audit export: cannot start the export thread; the sink is off");
                return;
            }
        };
        let runtime = tokio::runtime::Handle::current();
        let lease = time::Duration::try_from(export_lease(poll)).unwrap_or(time::Duration::MINUTE);
        // Whether this process's view of the sink (the JSONL file's size and last line) is
        // current: not after another process held the sink, which may have appended to it.
        let mut current = true;
        let mut backoff = Duration::from_millis(200);
        loop {
            // A graceful stop ends the loop here or in a wait, never between a delivery and
            // the cursor moving past it: the next holder goes on exactly after what was written.
            if *stop.borrow() {
                return;
            }
            let now = OffsetDateTime::now_utc();
            let held = trail
                .lease_export(&cursor_name, &holder, now, now + lease)
                .await;
            metrics.export_held(&name, matches!(held, Ok(true)));
            match held {
                Ok(true) => {}
                Ok(false) => {
                    current = false;
                    if wait_or_stop(poll, &mut stop).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "audit export: cannot take the sink's lease");
                    if wait_or_stop(poll, &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
            if !current {
                if let Sink::Jsonl(f) = &sink {
                    let reopened = worker.on_file(f, JsonlFile::reopen).await;
                    if let Err(e) = reopened {
                        tracing::warn!(sink = %name, error = %e, "audit export: cannot reopen the file");
                        if wait_or_stop(poll, &mut stop).await {
                            return;
                        }
                        continue;
                    }
                }
                current = true;
            }
            let cursor = match trail.export_cursor(&cursor_name).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "audit export: cannot read cursor");
                    if wait_or_stop(poll, &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            let cursor = match &mut sink {
                // The file itself may be ahead of the cursor (stopped after writing, before
                // the cursor moved): never write an event twice.
                Sink::Jsonl(f) => cursor.max(f.lock().map_or(0, |f| f.last_seq)),
                Sink::Webhook(_) => cursor,
            };
            if let Ok(Some((head, _))) = trail.audit_head().await {
                metrics.export_lag(&name, head.saturating_sub(cursor));
                worker.note_lag(head.saturating_sub(cursor));
            }
            let read = {
                let (trail, runtime) = (trail.clone(), runtime.clone());
                worker.run(move || runtime.block_on(trail.audit_events_after(cursor, batch)))
            };
            let events = match read.await.and_then(|r| r.map_err(|e| e.to_string())) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "audit export: cannot read events");
                    if wait_or_stop(poll, &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            if let Some(first) = events.first()
                && first.seq > cursor + 1
            {
                // Only a sink configured after pruning began: pruning never passes a
                // configured sink's cursor.
                tracing::warn!(sink = %name, from = cursor + 1, to = first.seq - 1, "audit export: these events were pruned from the database before this sink existed; they are in the audit archive");
            }
            let Some(last) = events.last().map(|e| e.seq) else {
                if wait_or_stop(poll, &mut stop).await {
                    return;
                }
                continue;
            };
            // The read ran on the lowest-priority thread and may have waited seconds for a core:
            // renew the lease right before writing, so that a process that took the sink over
            // meanwhile is never written beside (a JSONL sink's events exported twice, seen on a
            // machine with a load average of 12).
            let now = OffsetDateTime::now_utc();
            if !matches!(
                trail
                    .lease_export(&cursor_name, &holder, now, now + lease)
                    .await,
                Ok(true)
            ) {
                current = false;
                continue;
            }
            let count = events.len() as u64;
            let delivered = match &mut sink {
                Sink::Jsonl(f) => worker.on_file(f, move |f| f.append(&events)).await,
                Sink::Webhook(w) => w.post(&events).await,
            };
            match delivered {
                Ok(()) => {
                    backoff = Duration::from_millis(200);
                    metrics.exported(&name, count);
                    if let Err(e) = trail.set_export_cursor(&cursor_name, last).await {
                        tracing::warn!(sink = %name, error = %e, "audit export: cannot save cursor");
                    }
                    // Caught up: wait for a poll's worth of events rather than chase each
                    // commit. Every delivery costs the sink an fsync (or a POST) and the store
                    // a cursor write; under load, chasing them took a third of the API's
                    // throughput on two cores.
                    if count < u64::from(batch) && wait_or_stop(poll, &mut stop).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "audit export failed; will retry");
                    metrics.export_failed(&name);
                    if wait_or_stop(backoff, &mut stop).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    })
}

/// Sleeps `d`, or less if a stop is asked; whether to stop.
pub(crate) async fn wait_or_stop(
    d: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = stop.changed() => {}
    }
    *stop.borrow()
}

/// A configured sink, opened.
pub struct ExportSink {
    name: String,
    batch: u32,
    sink: Sink,
}

impl ExportSink {
    /// The name its cursor and lease are kept under.
    pub fn cursor_name(&self) -> &str {
        &self.name
    }

    /// Opens a JSON Lines sink: creates the file (0600) if needed and finds the last event in it.
    pub fn jsonl(c: &JsonlSinkSection) -> anyhow::Result<Self> {
        Ok(ExportSink {
            name: format!("jsonl:{}", c.name),
            batch: keyward_store::MAX_AUDIT_PAGE,
            sink: Sink::Jsonl(Arc::new(std::sync::Mutex::new(JsonlFile::open(
                &c.path,
                c.max_bytes,
            )?))),
        })
    }

    /// A webhook sink posting through `sender`; reads its secret from the file or variable
    /// named.
    pub fn webhook(c: &WebhookSinkSection, sender: WebhookSender) -> anyhow::Result<Self> {
        use anyhow::Context;
        let secret = match (&c.secret_file, &c.secret_env) {
            (Some(f), _) => std::fs::read(f)
                .with_context(|| format!("reading webhook secret file {}", f.display()))?,
            (None, Some(v)) => std::env::var(v)
                .with_context(|| format!("webhook secret variable {v} is not set"))?
                .into_bytes(),
            (None, None) => anyhow::bail!("webhook {:?} has no secret", c.name),
        };
        Ok(ExportSink {
            name: format!("webhook:{}", c.name),
            batch: c.batch,
            sink: Sink::Webhook(Webhook {
                url: c.url.clone(),
                secret: Secret::new(trim_newline(secret)),
                timeout: Duration::from_millis(c.timeout_ms),
                sender,
            }),
        })
    }
}

fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    v
}

/// A webhook sink: batches POSTed as a JSON array, signed like every outbound webhook.
struct Webhook {
    url: String,
    secret: Secret,
    timeout: Duration,
    sender: WebhookSender,
}

impl Webhook {
    async fn post(&self, events: &[ChainedEvent]) -> Result<(), String> {
        let views: Vec<AuditEventView> = events.iter().map(event_view).collect();
        let body = serde_json::to_vec(&views).map_err(|e| e.to_string())?;
        self.sender
            .post(&self.url, &self.secret, body, &[], self.timeout)
            .await
    }
}

/// A JSON Lines sink writes and syncs at most this much at a time. The disk is shared with the
/// store's log, whose syncs requests wait for: a page of 5 000 events (~2.5 MB) flushed at once
/// made them queue behind it.
const SYNC_EVERY: usize = 256 << 10;

/// A JSON Lines file rotated by size: `path` is written; when it would pass `max_bytes` it is
/// renamed `path.N` (N one more than the highest present), so the oldest file has the lowest N.
struct JsonlFile {
    path: PathBuf,
    max_bytes: u64,
    file: std::fs::File,
    size: u64,
    /// The last event in the current file (0 if none).
    last_seq: u64,
}

impl JsonlFile {
    fn open(path: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let (file, size, last_seq) = open_append(path)?;
        Ok(JsonlFile {
            path: path.to_owned(),
            max_bytes,
            file,
            size,
            last_seq,
        })
    }

    /// Reads the file's size and last event again (another process may have appended to it).
    fn reopen(&mut self) -> anyhow::Result<()> {
        let (file, size, last_seq) = open_append(&self.path)?;
        (self.file, self.size, self.last_seq) = (file, size, last_seq);
        Ok(())
    }

    /// Appends the events and syncs; rotates first whenever the next line would not fit.
    fn append(&mut self, events: &[ChainedEvent]) -> std::io::Result<()> {
        let mut pending = Vec::new();
        for e in events {
            let mut line = serde_json::to_vec(&event_view(e)).map_err(std::io::Error::other)?;
            line.push(b'\n');
            let line_len = line.len() as u64;
            if self.size + pending.len() as u64 + line_len > self.max_bytes
                && self.size + pending.len() as u64 > 0
            {
                self.file.write_all(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(&line);
            self.last_seq = e.seq;
            if pending.len() >= SYNC_EVERY {
                self.file.write_all(&pending)?;
                self.size += pending.len() as u64;
                pending.clear();
                self.file.sync_data()?;
            }
        }
        self.file.write_all(&pending)?;
        self.size += pending.len() as u64;
        self.file.sync_data()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let mut n = 1;
        while rotated(&self.path, n).exists() {
            n += 1;
        }
        std::fs::rename(&self.path, rotated(&self.path, n))?;
        let (file, size, _) = open_append(&self.path).map_err(std::io::Error::other)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens `path` for appending (0600), drops a torn last line, and returns the size and the seq
/// of the last complete line.
fn open_append(path: &Path) -> anyhow::Result<(std::fs::File, u64, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("opening audit export file {}: {e}", path.display()))?;
    let mut last_seq = 0;
    let mut good = 0u64;
    {
        file.rewind()?;
        let mut reader = std::io::BufReader::new(&file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            good += n as u64;
            if let Ok(v) = serde_json::from_slice::<AuditEventView>(&line) {
                last_seq = v.seq;
            }
        }
    }
    if file.metadata()?.len() != good {
        file.set_len(good)?;
    }
    Ok((file, good, last_seq))
}

/// On PostgreSQL: links the events nodes have committed into the audit chain, every `interval`
/// (see `keyward_store::postgres`'s audit module). When another node is linking, this one skips
/// its turn; reads of the trail link what is left themselves.
pub fn spawn_linker(
    store: Arc<keyward_store::PgStore>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = store.try_link_pending().await {
                tracing::warn!(error = %e, "linking audit events into the chain failed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my_nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(-100)
    }

    /// Background audit work runs at nice 19 while its lag is small, at the normal priority
    /// once it passes `catch_up`, and back at 19 when it has caught up.
    #[tokio::test]
    async fn a_lagging_job_runs_at_the_normal_priority_until_it_catches_up() {
        let lane = LowPriority::start("test", 100).unwrap();
        let base = my_nice();
        lane.note_lag(100);
        assert_eq!(lane.run(my_nice).await, Ok(19));
        lane.note_lag(101);
        assert_eq!(lane.run(my_nice).await, Ok(base));
        lane.note_lag(0);
        assert_eq!(lane.run(my_nice).await, Ok(19));
    }

    /// A nice-19 job that waited for a core longer than `STARVED` in all sends the next jobs to
    /// the normal priority even with no lag reported; one that waited less does not. (How long
    /// a job waits at nice 19 behind busy threads depends on the kernel's scheduler: 0.1 to 1 s
    /// for 5 ms of work here, so the wait is given rather than provoked.)
    #[tokio::test]
    async fn a_starved_job_sends_the_next_ones_to_the_normal_priority() {
        assert!(
            run_delay().is_some(),
            "Linux reports a thread's run delay in /proc/thread-self/schedstat"
        );
        let lane = LowPriority::start("test", u64::MAX).unwrap();
        let base = my_nice();
        lane.lane.waited(STARVED);
        assert_eq!(lane.run(my_nice).await, Ok(19));
        lane.lane.waited(STARVED + Duration::from_millis(1));
        assert_eq!(lane.run(my_nice).await, Ok(base));
        // A lag under catch_up does not end the starved window.
        lane.note_lag(0);
        assert_eq!(lane.run(my_nice).await, Ok(base));
    }
}
