//! Import tokens' RSA-4096 transit keys, made on a bounded pool of blocking threads so that the
//! async workers keep serving wrap and every other request (issue 18: four concurrent
//! import-token requests on the workers took wrap from 614 to 1 request per second).

use std::sync::Arc;

use keyward_core::{Custody, CustodyError, TransitKeyPair, TransitKeygen};
use tokio::sync::Semaphore;

/// Runs at most `threads` key generations at once, each on tokio's blocking pool; further
/// requests wait for a turn.
pub struct PooledKeygen {
    permits: Arc<Semaphore>,
}

impl PooledKeygen {
    /// A pool running at most `threads` generations at once (at least 1).
    pub fn new(threads: usize) -> Self {
        PooledKeygen {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }
}

#[async_trait::async_trait]
impl TransitKeygen for PooledKeygen {
    async fn generate(&self, custody: Arc<dyn Custody>) -> Result<TransitKeyPair, CustodyError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CustodyError::Unavailable("transit key generation stopped".into()))?;
        // The permit moves into the job: a caller that goes away does not free its turn while
        // its generation still runs.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            custody.generate_transit_key()
        })
        .await
        .map_err(|e| CustodyError::Internal(format!("transit key generation: {e}")))?
    }
}
