//! The scheduler loop: runs [`KeyService::run_due_work`] every tick until told to stop.

use std::future::Future;
use std::time::Duration;

use keyward_core::{KeyError, KeyService, SchedulerReport};

/// How often the scheduler looks for work, and how much it takes per pass.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between passes (60 s by default; seconds in tests).
    pub tick: Duration,
    /// Most keys handled per pass; a full pass is followed at once by another.
    pub batch: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick: Duration::from_secs(60),
            batch: 500,
        }
    }
}

/// Runs due key work in the background.
pub struct Scheduler {
    service: KeyService,
    config: SchedulerConfig,
}

impl Scheduler {
    /// A scheduler over `service`.
    pub fn new(service: KeyService, config: SchedulerConfig) -> Self {
        Scheduler { service, config }
    }

    /// Runs passes until `stop` completes. `on_pass` sees each pass's report (for logs and
    /// metrics); a failed pass is reported as an error and retried on the next tick.
    pub async fn run(
        self,
        stop: impl Future<Output = ()>,
        on_pass: impl Fn(Result<SchedulerReport, KeyError>),
    ) {
        tokio::pin!(stop);
        loop {
            let result = self.service.run_due_work(self.config.batch).await;
            let full = result.as_ref().is_ok_and(|r| {
                r.rotated + r.expired + r.purged + r.lost_races + r.failed >= self.config.batch
                    && r.failed < self.config.batch
            });
            on_pass(result);
            if full {
                continue;
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.config.tick) => {}
            }
        }
    }
}

/// Starts the scheduler on the runtime, counting its passes in `metrics`. The caller aborts
/// the task at shutdown: every change it makes is one compare-and-swap transaction, so stopping
/// between or during them is safe.
pub fn spawn(
    service: KeyService,
    config: SchedulerConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> tokio::task::JoinHandle<()> {
    let scheduler = Scheduler::new(service, config);
    tokio::spawn(async move {
        scheduler
            .run(std::future::pending(), |pass| {
                metrics.scheduler_pass(pass.as_ref().ok());
                log_pass(pass)
            })
            .await;
    })
}

fn log_pass(pass: Result<SchedulerReport, KeyError>) {
    match pass {
        Ok(r) if r == SchedulerReport::default() => {}
        Ok(r) => tracing::info!(
            rotated = r.rotated,
            expired = r.expired,
            purged = r.purged,
            lost_races = r.lost_races,
            failed = r.failed,
            "scheduler pass"
        ),
        Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
    }
}
