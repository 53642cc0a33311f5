//! TEMPORARY until the audit port lands.
use keyward_core::{ChainReport, Custody, StoreError};

impl super::PgStore {
    /// Temporary.
    pub async fn link_pending(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Temporary.
    pub async fn try_link_pending(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// Temporary.
pub async fn verify_audit_chain_pg(
    _store: &super::PgStore,
    _custody: &dyn Custody,
) -> Result<ChainReport, StoreError> {
    Err(StoreError::Unavailable("todo".into()))
}
