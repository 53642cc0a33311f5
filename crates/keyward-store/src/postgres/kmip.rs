//! KMIP adapters, certificates and objects on PostgreSQL (twin of `crate::kmip`).
//!
//! Limits and uniqueness are checked in the write's transaction under a row lock on the parent
//! (the instance for adapters, the adapter for certificates), so two nodes cannot both pass a
//! quota. The lock is `FOR NO KEY UPDATE`: it serializes these writers without blocking the
//! foreign-key checks (`FOR KEY SHARE`) of unrelated inserts under the same parent.

use keyward_core::{
    AdapterDeletion, AdapterInsert, AuditEvent, CertificateInsert, InstanceId, KeyId,
    KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter, KmipObjectRecord, KmipStore,
    StoreError, Unverified,
};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{Audited, PgStore, pg_error};
use crate::columns::{Columns, pg_params};
use crate::kmip::{
    ADAPTER_COLUMNS, CERT_COLUMNS, OBJECT_COLUMNS, adapter_from, cert_from, locate_sql,
    object_from, parse_ids,
};
use crate::rows::{nanos, opt_nanos};

/// Whether `sql` finds a row.
async fn exists(
    c: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<bool, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    Ok(c.query_opt(&stmt, params)
        .await
        .map_err(pg_error)?
        .is_some())
}

/// A `COUNT(*)`.
async fn count(
    c: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<i64, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_error)?;
    Ok(c.query_one(&stmt, params).await.map_err(pg_error)?.i64(0)?)
}

fn total(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait::async_trait]
impl KmipStore for PgStore {
    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        crk: Option<KeyId>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipAdapterRecord>>, u64), StoreError> {
        let (inst, crk) = (instance.to_string(), crk.map(|k| k.to_string()));
        let c = self.client().await?;
        let list = c
            .prepare_cached(&format!(
                "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters
                 WHERE instance_id = $1 AND ($2::text IS NULL OR crk_id = $2)
                 ORDER BY created_at, id LIMIT $3 OFFSET $4"
            ))
            .await
            .map_err(pg_error)?;
        let counted = c
            .prepare_cached(
                "SELECT COUNT(*) FROM kmip_adapters
                 WHERE instance_id = $1 AND ($2::text IS NULL OR crk_id = $2)",
            )
            .await
            .map_err(pg_error)?;
        let (rows, n) = futures_util::future::try_join(
            c.query(&list, &[&inst, &crk, &i64::from(limit), &i64::from(offset)]),
            c.query_one(&counted, &[&inst, &crk]),
        )
        .await
        .map_err(pg_error)?;
        let list = rows
            .iter()
            .map(|r| adapter_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?;
        Ok((list, total(n.i64(0)?)))
    }

    async fn kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters WHERE instance_id = $1 AND id = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string(), &id.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(adapter_from)
            .transpose()?
            .map(Unverified::new))
    }

    async fn kmip_adapter_by_name(
        &self,
        instance: InstanceId,
        name: &str,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters WHERE instance_id = $1 AND name = $2"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string(), &name])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(adapter_from)
            .transpose()?
            .map(Unverified::new))
    }

    async fn insert_kmip_adapter(
        &self,
        adapter: &KmipAdapterRecord,
        max_per_instance: u32,
        event: &AuditEvent,
    ) -> Result<AdapterInsert, StoreError> {
        let a = adapter;
        let inst = a.instance.to_string();
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // The instance's adapter writers take turns from here to commit. A missing instance is
        // left to the foreign key (a conflict, as on SQLite).
        exists(
            &tx,
            "SELECT 1 FROM instances WHERE id = $1 FOR NO KEY UPDATE",
            &[&inst],
        )
        .await?;
        if exists(
            &tx,
            "SELECT 1 FROM kmip_adapters WHERE instance_id = $1 AND name = $2",
            &[&inst, &a.name],
        )
        .await?
        {
            return tx.commit(AdapterInsert::NameExists).await;
        }
        let n = count(
            &tx,
            "SELECT COUNT(*) FROM kmip_adapters WHERE instance_id = $1",
            &[&inst],
        )
        .await?;
        if n >= i64::from(max_per_instance) {
            return tx.commit(AdapterInsert::QuotaReached).await;
        }
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO kmip_adapters ({ADAPTER_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &inst,
                &a.id.to_string(),
                &a.name,
                &a.description,
                &a.profile,
                &a.crk_id.to_string(),
                &nanos(a.created_at),
                &a.created_by,
                &nanos(a.updated_at),
                &a.updated_by,
                &a.signature,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(AdapterInsert::Inserted).await
    }

    async fn delete_kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<AdapterDeletion, StoreError> {
        let (inst, id) = (instance.to_string(), id.to_string());
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // Locked: a certificate insert under it waits, then finds it gone; an object insert's
        // foreign-key check waits, then fails.
        if !exists(
            &tx,
            "SELECT 1 FROM kmip_adapters WHERE instance_id = $1 AND id = $2 FOR UPDATE",
            &[&inst, &id],
        )
        .await?
        {
            return tx.commit(AdapterDeletion::NotFound).await;
        }
        if exists(
            &tx,
            "SELECT 1 FROM kmip_objects WHERE adapter_id = $1 AND state NOT IN (5, 6) LIMIT 1",
            &[&id],
        )
        .await?
        {
            return tx.commit(AdapterDeletion::HasObjects).await;
        }
        for sql in [
            "DELETE FROM kmip_objects WHERE adapter_id = $1",
            "DELETE FROM kmip_certificates WHERE adapter_id = $1",
        ] {
            tx.execute(sql, &[&id]).await.map_err(pg_error)?;
        }
        tx.execute(
            "DELETE FROM kmip_adapters WHERE instance_id = $1 AND id = $2",
            &[&inst, &id],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(AdapterDeletion::Deleted).await
    }

    async fn kmip_certificates(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipCertificateRecord>>, u64), StoreError> {
        let (inst, adapter) = (instance.to_string(), adapter.to_string());
        let c = self.client().await?;
        let list = c
            .prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates
                 WHERE instance_id = $1 AND adapter_id = $2
                 ORDER BY created_at, id LIMIT $3 OFFSET $4"
            ))
            .await
            .map_err(pg_error)?;
        let counted = c
            .prepare_cached(
                "SELECT COUNT(*) FROM kmip_certificates WHERE instance_id = $1 AND adapter_id = $2",
            )
            .await
            .map_err(pg_error)?;
        let (rows, n) = futures_util::future::try_join(
            c.query(
                &list,
                &[&inst, &adapter, &i64::from(limit), &i64::from(offset)],
            ),
            c.query_one(&counted, &[&inst, &adapter]),
        )
        .await
        .map_err(pg_error)?;
        let list = rows
            .iter()
            .map(|r| cert_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?;
        Ok((list, total(n.i64(0)?)))
    }

    async fn kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates
                 WHERE instance_id = $1 AND adapter_id = $2 AND id = $3"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(
                &stmt,
                &[&instance.to_string(), &adapter.to_string(), &id.to_string()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(cert_from)
            .transpose()?
            .map(Unverified::new))
    }

    async fn kmip_certificate_by_name(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        name: &str,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates
                 WHERE instance_id = $1 AND adapter_id = $2 AND name = $3"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&instance.to_string(), &adapter.to_string(), &name])
            .await
            .map_err(pg_error)?;
        Ok(row
            .as_ref()
            .map(cert_from)
            .transpose()?
            .map(Unverified::new))
    }

    async fn insert_kmip_certificate(
        &self,
        cert: &KmipCertificateRecord,
        max_per_adapter: u32,
        event: &AuditEvent,
    ) -> Result<CertificateInsert, StoreError> {
        let k = cert;
        let (inst, adapter) = (k.instance.to_string(), k.adapter_id.to_string());
        let fingerprint = &k.fingerprint[..];
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        // The adapter's certificate writers take turns from here to commit.
        if !exists(
            &tx,
            "SELECT 1 FROM kmip_adapters WHERE instance_id = $1 AND id = $2 FOR NO KEY UPDATE",
            &[&inst, &adapter],
        )
        .await?
        {
            return tx.commit(CertificateInsert::AdapterNotFound).await;
        }
        let name_taken = "SELECT 1 FROM kmip_certificates WHERE adapter_id = $1 AND name = $2";
        let fingerprint_taken =
            "SELECT 1 FROM kmip_certificates WHERE instance_id = $1 AND fingerprint = $2";
        if exists(&tx, name_taken, &[&adapter, &k.name]).await? {
            return tx.commit(CertificateInsert::NameExists).await;
        }
        if exists(&tx, fingerprint_taken, &[&inst, &fingerprint]).await? {
            return tx.commit(CertificateInsert::CertificateExists).await;
        }
        let n = count(
            &tx,
            "SELECT COUNT(*) FROM kmip_certificates WHERE adapter_id = $1",
            &[&adapter],
        )
        .await?;
        if n >= i64::from(max_per_adapter) {
            return tx.commit(CertificateInsert::QuotaReached).await;
        }
        // The same certificate may be added to another adapter of the instance at this moment
        // (another lock): the unique index decides, after the other commits or rolls back.
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO kmip_certificates ({CERT_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT DO NOTHING"
            ))
            .await
            .map_err(pg_error)?;
        let inserted = tx
            .execute(
                &stmt,
                &[
                    &inst,
                    &adapter,
                    &k.id.to_string(),
                    &k.name,
                    &k.certificate,
                    &fingerprint,
                    &nanos(k.created_at),
                    &k.created_by,
                    &k.signature,
                ],
            )
            .await
            .map_err(pg_error)?;
        if inserted == 1 {
            return tx.commit(CertificateInsert::Inserted).await;
        }
        if exists(&tx, fingerprint_taken, &[&inst, &fingerprint]).await? {
            return tx.commit(CertificateInsert::CertificateExists).await;
        }
        // The id is taken.
        Err(StoreError::Conflict)
    }

    async fn delete_kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let n = tx
            .execute(
                "DELETE FROM kmip_certificates
                 WHERE instance_id = $1 AND adapter_id = $2 AND id = $3",
                &[&instance.to_string(), &adapter.to_string(), &id.to_string()],
            )
            .await
            .map_err(pg_error)?;
        tx.commit(n == 1).await
    }

    async fn kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        states: &[u8],
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<KmipObjectRecord>, u64), StoreError> {
        let (inst, adapter) = (instance.to_string(), adapter.to_string());
        let states: Vec<i64> = states.iter().map(|s| i64::from(*s)).collect();
        let c = self.client().await?;
        let list = c
            .prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM kmip_objects
                 WHERE instance_id = $1 AND adapter_id = $2 AND state = ANY($3)
                 ORDER BY created_at, id LIMIT $4 OFFSET $5"
            ))
            .await
            .map_err(pg_error)?;
        let counted = c
            .prepare_cached(
                "SELECT COUNT(*) FROM kmip_objects
                 WHERE instance_id = $1 AND adapter_id = $2 AND state = ANY($3)",
            )
            .await
            .map_err(pg_error)?;
        let (rows, n) = futures_util::future::try_join(
            c.query(
                &list,
                &[
                    &inst,
                    &adapter,
                    &states,
                    &i64::from(limit),
                    &i64::from(offset),
                ],
            ),
            c.query_one(&counted, &[&inst, &adapter, &states]),
        )
        .await
        .map_err(pg_error)?;
        let list = rows.iter().map(object_from).collect::<Result<_, _>>()?;
        Ok((list, total(n.i64(0)?)))
    }

    async fn kmip_object(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<KmipObjectRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM kmip_objects
                 WHERE instance_id = $1 AND adapter_id = $2 AND id = $3"
            ))
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(
                &stmt,
                &[&instance.to_string(), &adapter.to_string(), &id.to_string()],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(object_from).transpose()?)
    }

    async fn insert_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let o = object;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO kmip_objects ({OBJECT_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17, $18, $19, $20, $21)"
            ))
            .await
            .map_err(pg_error)?;
        tx.execute(
            &stmt,
            &[
                &o.instance.to_string(),
                &o.adapter_id.to_string(),
                &o.id.to_string(),
                &i64::from(o.object_type),
                &i64::from(o.state),
                &nanos(o.created_at),
                &o.created_by_cert_id.to_string(),
                &o.created_by,
                &opt_nanos(o.updated_at),
                &o.updated_by_cert_id.map(|u| u.to_string()),
                &o.updated_by,
                &opt_nanos(o.destroyed_at),
                &o.destroyed_by_cert_id.map(|u| u.to_string()),
                &o.destroyed_by,
                &o.name,
                &o.algorithm.map(i64::from),
                &o.length.map(i64::from),
                &o.object_group,
                &o.attributes,
                &o.material,
                &o.signature,
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn locate_kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        filter: &KmipObjectFilter,
    ) -> Result<Vec<Uuid>, StoreError> {
        let (sql, values) = locate_sql(instance, adapter, filter, '$');
        let c = self.client().await?;
        // At most 64 shapes of statement (one per set of filter fields): cached per connection.
        let stmt = c.prepare_cached(&sql).await.map_err(pg_error)?;
        let rows = c
            .query(&stmt, &pg_params(&values))
            .await
            .map_err(pg_error)?;
        let ids = rows
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(parse_ids(ids)?)
    }

    async fn kmip_certificates_by_fingerprint(
        &self,
        fingerprint: &[u8; 32],
    ) -> Result<Vec<Unverified<KmipCertificateRecord>>, StoreError> {
        let fingerprint: &[u8] = fingerprint;
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates WHERE fingerprint = $1
                 ORDER BY created_at, id"
            ))
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[&fingerprint]).await.map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| cert_from(r).map(Unverified::new))
            .collect::<Result<_, _>>()?)
    }

    async fn update_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let o = object;
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE kmip_objects SET state = $4, updated_at = $5, updated_by_cert_id = $6,
                    updated_by = $7, destroyed_at = $8, destroyed_by_cert_id = $9,
                    destroyed_by = $10, name = $11, algorithm = $12, length = $13,
                    object_group = $14, attributes = $15, material = $16, signature = $17
                 WHERE instance_id = $1 AND adapter_id = $2 AND id = $3",
            )
            .await
            .map_err(pg_error)?;
        let n = tx
            .execute(
                &stmt,
                &[
                    &o.instance.to_string(),
                    &o.adapter_id.to_string(),
                    &o.id.to_string(),
                    &i64::from(o.state),
                    &opt_nanos(o.updated_at),
                    &o.updated_by_cert_id.map(|u| u.to_string()),
                    &o.updated_by,
                    &opt_nanos(o.destroyed_at),
                    &o.destroyed_by_cert_id.map(|u| u.to_string()),
                    &o.destroyed_by,
                    &o.name,
                    &o.algorithm.map(i64::from),
                    &o.length.map(i64::from),
                    &o.object_group,
                    &o.attributes,
                    &o.material,
                    &o.signature,
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit(n == 1).await
    }
}
