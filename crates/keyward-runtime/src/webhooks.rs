//! The webhook delivery worker: posts lifecycle events from the outbox to the subscribed
//! services, signed, until each answers 2xx.
//!
//! At-least-once: an event is marked delivered only after a 2xx, so a crash between the POST and
//! the mark sends it again (receivers deduplicate by `X-Keyward-Event-Id`). Several processes on
//! one database do not deliver the same event concurrently: each claims events with a lease
//! ([`LEASE`]) in a write transaction, and a failure releases it with a backoff of 1 s doubling
//! to 5 minutes, retried forever (or until the service acknowledges the event some other way).
//! Deliveries run concurrently, so events may arrive out of order: receivers order by `seq`.

use std::sync::Arc;
use std::time::Duration;

use keyward_core::{DeliveryJob, KeyService};
use time::OffsetDateTime;

use crate::sender::WebhookSender;
use crate::wire::wire_event;

/// How often event consumers (this worker, the server's event streams) look for events that
/// other processes on the same database committed.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long one POST may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claimed event is reserved for the claiming process (longer than a POST can take).
pub const LEASE: Duration = Duration::from_secs(15);
/// Events claimed per round.
const BATCH: u32 = 32;
/// Deliveries in flight at once, per process.
const MAX_IN_FLIGHT: usize = 64;
/// First retry delay; doubles per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The retry delay after `attempts` failed deliveries (1 s, 2 s, 4 s, ... at most 5 min).
pub fn backoff(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.min(20)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// What the worker works with.
struct Worker {
    keys: KeyService,
    /// Region used in key CRNs.
    region: String,
    sender: WebhookSender,
}

/// Starts the worker on the runtime; `wake` ticks when this process commits events.
pub fn spawn(
    keys: KeyService,
    region: String,
    sender: WebhookSender,
    wake: tokio::sync::watch::Receiver<u64>,
) -> tokio::task::JoinHandle<()> {
    let worker = Arc::new(Worker {
        keys,
        region,
        sender,
    });
    tokio::spawn(run(worker, wake))
}

async fn run(worker: Arc<Worker>, mut wake: tokio::sync::watch::Receiver<u64>) {
    let me = uuid::Uuid::new_v4().to_string();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let now = OffsetDateTime::now_utc();
        let store = worker.keys.store();
        let room = u32::try_from(in_flight.available_permits())
            .unwrap_or(BATCH)
            .min(BATCH);
        let jobs = match store.deliveries_due(now).await {
            Ok(true) if room > 0 => store.claim_deliveries(&me, now, now + LEASE, room).await,
            Ok(_) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "webhooks: claiming deliveries failed");
            Vec::new()
        });
        if jobs.is_empty() {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            continue;
        }
        // Each delivery runs on its own, so a slow endpoint (up to REQUEST_TIMEOUT) does not hold
        // up other subscribers; claimed events stay leased meanwhile, so the next claim skips them.
        for job in jobs {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let worker = worker.clone();
            tokio::spawn(async move {
                worker.deliver(job).await;
                drop(permit);
            });
        }
    }
}

impl Worker {
    async fn deliver(&self, job: DeliveryJob) {
        let event = &job.event;
        let outcome = self.post(&job).await;
        let store = self.keys.store();
        let now = OffsetDateTime::now_utc();
        let recorded = match outcome {
            Ok(()) => store.delivery_succeeded(&event.id, now).await,
            Err(why) => {
                let delay = backoff(event.attempts);
                tracing::info!(
                    event_id = %event.id,
                    attempts = event.attempts + 1,
                    retry_in_ms = delay.as_millis() as u64,
                    reason = %why,
                    "webhook delivery failed; will retry"
                );
                store.delivery_failed(&event.id, now + delay).await
            }
        };
        if let Err(e) = recorded {
            // The lease runs out and the event is claimed again: at-least-once holds.
            tracing::warn!(event_id = %event.id, error = %e, "webhooks: recording the outcome failed");
        }
    }

    async fn post(&self, job: &DeliveryJob) -> Result<(), String> {
        // Instances never change owner; the account only names the key in its CRN.
        let account = self
            .keys
            .store()
            .instance(job.event.instance)
            .await
            .map_err(|e| e.to_string())?
            .map(|i| i.account)
            .unwrap_or_default();
        let wire = wire_event(&self.region, &account, &job.event);
        let body = serde_json::to_vec(&wire).map_err(|e| e.to_string())?;
        let secret = self
            .keys
            .webhook_secret(&job.subscription)
            .map_err(|e| e.to_string())?;
        self.sender
            .post(
                &job.subscription.url,
                &secret,
                body,
                &[(keyward_api::events::headers::EVENT_ID, &job.event.id)],
                REQUEST_TIMEOUT,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(8), Duration::from_secs(256));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }
}
