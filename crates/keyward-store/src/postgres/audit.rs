//! The audit trail on PostgreSQL: one hash chain for the whole cluster, linked off the request
//! path.
//!
//! A write inserts its event into `audit_pending` in its own transaction ([`pend`]): no shared
//! row, no lock, so nodes never serialize their writes on the chain head. [`link_pending`] moves
//! pending events into `audit_events` in id order, giving each its position and hash, under a
//! transaction-scoped advisory lock: one linker at a time across the cluster, each batch one
//! transaction (a crash in the middle links nothing twice and loses nothing). Every node runs the
//! linker every few hundred milliseconds, and every read of the trail links first, so a read sees
//! every event committed before it. The cost: an event is tamper-evident (chained) a moment after
//! its write commits rather than in the same transaction.

use keyward_core::{AuditEvent, GENESIS_HASH, StoreError, chain_hash};
use time::OffsetDateTime;

use super::pg_error;
use crate::rows::nanos;

/// `pg_advisory_xact_lock` key of the chain linker ("keyward" in ASCII, then 2).
const LINK_LOCK: i64 = 0x6b65_7977_6172_6402;
/// Events linked per transaction at most.
const LINK_BATCH: i64 = 5_000;

/// Inserts `e` into the pending events, in the caller's transaction.
pub(super) async fn pend(
    tx: &deadpool_postgres::Transaction<'_>,
    e: &AuditEvent,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_pending (event_id, time, action, outcome, reason_code, reason,
                                        initiator, address, instance_id, target, key_state,
                                        key_version, request_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await
        .map_err(pg_error)?;
    tx.execute(
        &stmt,
        &[
            &e.id.to_string(),
            &nanos(e.time),
            &e.action,
            &e.outcome.as_str(),
            &i64::from(e.reason_code),
            &e.reason,
            &e.initiator.id,
            &e.initiator.address,
            &e.instance,
            &e.target,
            &e.key_state.map(i64::from),
            &e.key_version,
            &e.request_id,
        ],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

#[async_trait::async_trait]
impl keyward_core::AuditStore for super::PgStore {
    async fn audit_head(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn audit_events(
        &self,
        _query: &keyward_core::AuditQuery,
    ) -> Result<(Vec<keyward_core::ChainedEvent>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn audit_events_after(
        &self,
        _seq: u64,
        _limit: u32,
    ) -> Result<Vec<keyward_core::ChainedEvent>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_audit_checkpoint(
        &self,
        _checkpoint: &keyward_core::AuditCheckpoint,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn latest_audit_checkpoint(
        &self,
    ) -> Result<Option<keyward_core::AuditCheckpoint>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn export_cursor(&self, _sink: &str) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn set_export_cursor(&self, _sink: &str, _seq: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn lease_export(
        &self,
        _sink: &str,
        _holder: &str,
        _now: OffsetDateTime,
        _until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn release_export_leases(&self, _holder: &str) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}
