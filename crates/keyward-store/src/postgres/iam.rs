//! Identities, API keys, access policies, authorizations and refresh tokens on PostgreSQL (twin
//! of `crate::iam`, with its row mapping and scope and role encodings).
//!
//! Every read-modify-write is one conditional statement (an `UPDATE`/`DELETE ... WHERE` that
//! reports what it changed), so concurrent nodes need no further locks: a refresh token is taken
//! by `DELETE ... RETURNING`, so exactly one taker gets it.

use keyward_core::{
    AccessPolicyRecord, ApiKeyRecord, AuditEvent, AuthorizationRecord, IamStore, IdentityRecord,
    RefreshUse, StoreError, Successor, Unverified,
};
use time::OffsetDateTime;

use super::{Audited, PgStore, pg_error};
use crate::iam::{
    API_KEY_COLUMNS, AUTHORIZATION_COLUMNS, IDENTITY_COLUMNS, POLICY_COLUMNS, authorization_from,
    dependents_text, identity_from, policy_from, roles_text, scope_text,
};
use crate::rows::{api_key_from, nanos, time_of};

impl PgStore {
    /// Runs one audited statement; whether it changed a row.
    async fn audited_change(
        &self,
        event: &AuditEvent,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx.prepare_cached(sql).await.map_err(pg_error)?;
        let n = tx.execute(&stmt, params).await.map_err(pg_error)?;
        tx.commit(n > 0).await
    }
}

#[async_trait::async_trait]
impl IamStore for PgStore {
    async fn identity(&self, iam_id: &str) -> Result<Option<IdentityRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities WHERE iam_id = $1"
            ))
            .await
            .map_err(pg_error)?;
        let row = c.query_opt(&stmt, &[&iam_id]).await.map_err(pg_error)?;
        Ok(row.as_ref().map(identity_from).transpose()?)
    }

    async fn identities(&self, account: &str) -> Result<Vec<IdentityRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities WHERE account = $1
                 ORDER BY created_at, iam_id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[&account]).await.map_err(pg_error)?;
        Ok(rows.iter().map(identity_from).collect::<Result<_, _>>()?)
    }

    async fn insert_identity(
        &self,
        identity: &IdentityRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let i = identity;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO identities ({IDENTITY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &i.iam_id,
                &i.account,
                &i.kind.name(),
                &i.name,
                &i.description,
                &i.service_name,
                &i.service_instance,
                &i.locked,
                &nanos(i.created_at),
                &i.created_by,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn set_identity_locked(
        &self,
        account: &str,
        iam_id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.audited_change(
            event,
            "UPDATE identities SET locked = $3 WHERE account = $1 AND iam_id = $2",
            &[&account, &iam_id, &locked],
        )
        .await
    }

    async fn delete_identity(
        &self,
        account: &str,
        iam_id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // The identity first: a concurrent delete of it waits on its row, then finds none.
        let stmt = tx
            .prepare_cached("DELETE FROM identities WHERE account = $1 AND iam_id = $2")
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(&stmt, &[&account, &iam_id])
            .await
            .map_err(pg_error)?;
        let stmt = tx
            .prepare_cached(
                "WITH gone AS (
                     DELETE FROM api_keys WHERE account = $1 AND subject = $2 RETURNING id
                 )
                 DELETE FROM refresh_tokens WHERE api_key_id IN (SELECT id FROM gone)",
            )
            .await
            .map_err(pg_error)?;
        tx.execute(&stmt, &[&account, &iam_id])
            .await
            .map_err(pg_error)?;
        let stmt = tx
            .prepare_cached("DELETE FROM access_policies WHERE account = $1 AND subject = $2")
            .await
            .map_err(pg_error)?;
        tx.execute(&stmt, &[&account, &iam_id])
            .await
            .map_err(pg_error)?;
        // Its registrations go with it (SQLite's twin).
        if n > 0 {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM registrations WHERE owner = $2
                       AND instance_id IN (SELECT id FROM instances WHERE account = $1)",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(&stmt, &[&account, &iam_id])
                .await
                .map_err(pg_error)?;
        }
        tx.commit(n > 0).await
    }

    async fn api_keys_of(&self, account: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account = $1 ORDER BY created_at, id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[&account]).await.map_err(pg_error)?;
        Ok(rows.iter().map(api_key_from).collect::<Result<_, _>>()?)
    }

    async fn set_api_key_locked(
        &self,
        account: &str,
        id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.audited_change(
            event,
            "UPDATE api_keys SET locked = $3 WHERE account = $1 AND id = $2",
            &[&account, &id, &locked],
        )
        .await
    }

    async fn delete_api_key(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM api_keys WHERE account = $1 AND id = $2")
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(&stmt, &[&account, &id])
            .await
            .map_err(pg_error)?;
        // Another account's key of that id keeps its tokens.
        if n > 0 {
            let stmt = tx
                .prepare_cached("DELETE FROM refresh_tokens WHERE api_key_id = $1")
                .await
                .map_err(pg_error)?;
            tx.execute(&stmt, &[&id]).await.map_err(pg_error)?;
        }
        tx.commit(n > 0).await
    }

    async fn access_policies(
        &self,
        account: &str,
        subject: Option<&str>,
    ) -> Result<Vec<Unverified<AccessPolicyRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS}
                 FROM access_policies WHERE account = $1 AND ($2::text IS NULL OR subject = $2)
                 ORDER BY created_at, id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(&stmt, &[&account, &subject])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| policy_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?)
    }

    async fn insert_access_policy(
        &self,
        policy: &AccessPolicyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let p = policy;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO access_policies ({POLICY_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &p.id,
                &p.account,
                &p.subject,
                &roles_text(&p.roles),
                &scope_text(&p.scope),
                &nanos(p.created_at),
                &p.created_by,
                &p.signature,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn delete_access_policy(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.audited_change(
            event,
            "DELETE FROM access_policies WHERE account = $1 AND id = $2",
            &[&account, &id],
        )
        .await
    }

    async fn authorizations(
        &self,
        account: &str,
        source_service: Option<&str>,
    ) -> Result<Vec<Unverified<AuthorizationRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {AUTHORIZATION_COLUMNS}
                 FROM authorizations
                 WHERE account = $1 AND ($2::text IS NULL OR source_service = $2)
                 ORDER BY created_at, id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c
            .query(&stmt, &[&account, &source_service])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| authorization_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?)
    }

    async fn insert_authorization(
        &self,
        authorization: &AuthorizationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let a = authorization;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        if let Some(parent) = &a.delegated_from {
            // Locked until the commit: a concurrent deletion of the parent waits for this insert
            // and then deletes the new authorization with it, or went first and is seen here.
            let stmt = tx
                .prepare_cached(
                    "SELECT 1 FROM authorizations WHERE account = $1 AND id = $2 FOR KEY SHARE",
                )
                .await
                .map_err(pg_error)?;
            if tx
                .query_opt(&stmt, &[&a.account, parent])
                .await
                .map_err(pg_error)?
                .is_none()
            {
                return Err(StoreError::Conflict);
            }
        }
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO authorizations ({AUTHORIZATION_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &a.id,
                &a.account,
                &a.source_service,
                &a.source_instance,
                &scope_text(&a.target),
                &roles_text(&a.roles),
                &a.delegation,
                &nanos(a.created_at),
                &a.created_by,
                &a.signature,
                &dependents_text(&a.dependents),
                &a.delegated_from,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn delete_authorization(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM authorizations WHERE account = $1 AND id = $2")
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(&stmt, &[&account, &id])
            .await
            .map_err(pg_error)?;
        // What was delegated under it goes with it, in the same transaction (SQLite's twin).
        if n > 0 {
            let stmt = tx
                .prepare_cached(
                    "DELETE FROM authorizations WHERE account = $1 AND delegated_from = $2",
                )
                .await
                .map_err(pg_error)?;
            tx.execute(&stmt, &[&account, &id])
                .await
                .map_err(pg_error)?;
        }
        tx.commit(n > 0).await
    }

    async fn insert_refresh_token(
        &self,
        hash: [u8; 32],
        api_key_id: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "INSERT INTO refresh_tokens (hash, api_key_id, expires_at, family)
                 VALUES ($1, $2, $3, $1)",
            )
            .await
            .map_err(pg_error)?;
        c.execute(&stmt, &[&hash.as_slice(), &api_key_id, &nanos(expires_at)])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn spend_refresh_token(
        &self,
        hash: [u8; 32],
        successor: Successor,
        now: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg_error)?;
        // One conditional statement: of concurrent spenders on any nodes, exactly one finds it
        // unspent; the others wait on its row, then find it spent, with its successor
        // committed, and revoke the family, successor included.
        let stmt = tx
            .prepare_cached(
                "UPDATE refresh_tokens SET spent_at = $2 WHERE hash = $1 AND spent_at IS NULL
                 RETURNING api_key_id, expires_at, family",
            )
            .await
            .map_err(pg_error)?;
        let spent = tx
            .query_opt(&stmt, &[&hash.as_slice(), &nanos(now)])
            .await
            .map_err(pg_error)?;
        let used = if let Some(row) = spent {
            let api_key_id: String = row.try_get(0).map_err(pg_error)?;
            let expires_at: i64 = row.try_get(1).map_err(pg_error)?;
            let family: Option<Vec<u8>> = row.try_get(2).map_err(pg_error)?;
            let family = family.unwrap_or_else(|| hash.to_vec());
            if expires_at > nanos(now) {
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO refresh_tokens (hash, api_key_id, expires_at, family)
                         VALUES ($1, $2, $3, $4)",
                    )
                    .await
                    .map_err(pg_error)?;
                tx.execute(
                    &stmt,
                    &[
                        &successor.hash.as_slice(),
                        &api_key_id,
                        &nanos(successor.expires_at),
                        &family,
                    ],
                )
                .await
                .map_err(pg_error)?;
            }
            RefreshUse::Spent {
                api_key_id,
                expires_at: time_of(expires_at)?,
            }
        } else {
            let stmt = tx
                .prepare_cached("SELECT api_key_id, family FROM refresh_tokens WHERE hash = $1")
                .await
                .map_err(pg_error)?;
            match tx
                .query_opt(&stmt, &[&hash.as_slice()])
                .await
                .map_err(pg_error)?
            {
                None => RefreshUse::Unknown,
                Some(row) => {
                    let api_key_id: String = row.try_get(0).map_err(pg_error)?;
                    let family: Option<Vec<u8>> = row.try_get(1).map_err(pg_error)?;
                    let family = family.unwrap_or_else(|| hash.to_vec());
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE refresh_tokens SET spent_at = $2
                             WHERE family = $1 AND spent_at IS NULL",
                        )
                        .await
                        .map_err(pg_error)?;
                    let revoked = tx
                        .execute(&stmt, &[&family, &nanos(now)])
                        .await
                        .map_err(pg_error)?;
                    RefreshUse::Reused {
                        api_key_id,
                        revoked,
                    }
                }
            }
        };
        tx.commit().await.map_err(pg_error)?;
        Ok(used)
    }

    async fn purge_refresh_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at <= $1")
            .await
            .map_err(pg_error)?;
        c.execute(&stmt, &[&nanos(now)]).await.map_err(pg_error)
    }
}
