//! Wrapped material by wrapping key, for master key rotation, on PostgreSQL (twin of `crate::rewrap`).
#![allow(unused_variables)]

use keyward_core::*;

use super::PgStore;

#[async_trait::async_trait]
impl RewrapStore for PgStore {
    async fn stale_wrapped(
        &self,
        current: &str,
        limit: u32,
    ) -> Result<Vec<WrappedItem>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn replace_wrapped(
        &self,
        old: &WrappedItem,
        new: &WrappedItem,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn wrapped_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}
