//! Wrapped material by wrapping key, for master key rotation, on PostgreSQL (twin of
//! `crate::rewrap`, whose SQL, row mapping and compare-and-swap it runs: SQLite's `?N` marks are
//! PostgreSQL's `$N`).

use keyward_core::{AuditEvent, RewrapStore, StoreError, WrappedItem};

use super::{Audited, PgStore, pg_error};
use crate::columns::pg_params;
use crate::rewrap::{Holder, WRAPPED_COUNTS, count_from, left, replacement};

/// `sql` with PostgreSQL's parameter marks (the shared SQL has no other `?`).
fn marks(sql: &str) -> String {
    sql.replace('?', "$")
}

#[async_trait::async_trait]
impl RewrapStore for PgStore {
    async fn stale_wrapped(
        &self,
        current: &str,
        limit: u32,
    ) -> Result<Vec<WrappedItem>, StoreError> {
        let c = self.client().await?;
        let mut items = Vec::new();
        for holder in Holder::ALL {
            let left = i64::from(left(limit, &items));
            let stmt = c
                .prepare_cached(&marks(holder.stale_sql()))
                .await
                .map_err(pg_error)?;
            let rows = c.query(&stmt, &[&current, &left]).await.map_err(pg_error)?;
            for r in &rows {
                items.push(holder.item(r)?);
            }
        }
        Ok(items)
    }

    async fn replace_wrapped(
        &self,
        old: &WrappedItem,
        new: &WrappedItem,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let changed = match replacement(old, new) {
            Some((sql, values)) => {
                let stmt = tx.prepare_cached(&marks(sql)).await.map_err(pg_error)?;
                tx.execute(&stmt, &pg_params(&values))
                    .await
                    .map_err(pg_error)?
            }
            None => 0,
        };
        tx.commit(changed == 1).await
    }

    async fn wrapped_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let c = self.client().await?;
        let stmt = c.prepare_cached(WRAPPED_COUNTS).await.map_err(pg_error)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(count_from).collect::<Result<_, _>>()?)
    }
}
