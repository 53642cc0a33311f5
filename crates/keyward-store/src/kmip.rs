//! `KmipStore` for `SqliteStore`: KMIP adapters, client certificates and KMIP objects
//! (migrations 3 and 11). Uniqueness, quotas and "adapter still exists" are checked inside the
//! write's transaction, so concurrent requests cannot both pass them.

use keyward_core::{
    AdapterDeletion, AdapterInsert, AuditEvent, CertificateInsert, InstanceId, KeyId,
    KmipAdapterRecord, KmipCertificateRecord, KmipObjectFilter, KmipObjectRecord, KmipStore,
    StoreError, Unverified,
};
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use uuid::Uuid;

use crate::columns::{Bad, Columns, Param};
use crate::rows::{nanos, opt_nanos, opt_time_of, time_of};
use crate::sqlite::SqliteStore;

pub(crate) const ADAPTER_COLUMNS: &str = "instance_id, id, name, description, profile, crk_id, created_at, \
     created_by, updated_at, updated_by, signature";
pub(crate) const CERT_COLUMNS: &str = "instance_id, adapter_id, id, name, certificate, fingerprint, \
     created_at, created_by, signature";
pub(crate) const OBJECT_COLUMNS: &str = "instance_id, adapter_id, id, object_type, state, created_at, \
     created_by_cert_id, created_by, updated_at, updated_by_cert_id, updated_by, destroyed_at, \
     destroyed_by_cert_id, destroyed_by, name, algorithm, length, object_group, attributes, \
     material, signature";

/// An adapter from the columns of `ADAPTER_COLUMNS`.
pub(crate) fn adapter_from<R: Columns + ?Sized>(r: &R) -> Result<KmipAdapterRecord, Bad> {
    Ok(KmipAdapterRecord {
        instance: r.parsed(0)?,
        id: r.parsed(1)?,
        name: r.text(2)?,
        description: r.opt_text(3)?,
        profile: r.text(4)?,
        crk_id: r.parsed(5)?,
        created_at: time_of(r.i64(6)?)?,
        created_by: r.text(7)?,
        updated_at: time_of(r.i64(8)?)?,
        updated_by: r.text(9)?,
        signature: r.blob(10)?,
    })
}

fn adapter_from_row(r: &Row<'_>) -> rusqlite::Result<KmipAdapterRecord> {
    Ok(adapter_from(r)?)
}

/// A certificate from the columns of `CERT_COLUMNS`.
pub(crate) fn cert_from<R: Columns + ?Sized>(r: &R) -> Result<KmipCertificateRecord, Bad> {
    Ok(KmipCertificateRecord {
        instance: r.parsed(0)?,
        adapter_id: r.parsed(1)?,
        id: r.parsed(2)?,
        name: r.text(3)?,
        certificate: r.text(4)?,
        fingerprint: r
            .blob(5)?
            .try_into()
            .map_err(|_| Bad::new("bad certificate fingerprint"))?,
        created_at: time_of(r.i64(6)?)?,
        created_by: r.text(7)?,
        signature: r.blob(8)?,
    })
}

fn cert_from_row(r: &Row<'_>) -> rusqlite::Result<KmipCertificateRecord> {
    Ok(cert_from(r)?)
}

fn opt_parsed<R: Columns + ?Sized, T: std::str::FromStr>(
    r: &R,
    i: usize,
) -> Result<Option<T>, Bad> {
    r.opt_text(i)?
        .map(|s| s.parse().map_err(|_| Bad(format!("bad identifier {s:?}"))))
        .transpose()
}

/// An object from the columns of `OBJECT_COLUMNS`.
pub(crate) fn object_from<R: Columns + ?Sized>(r: &R) -> Result<KmipObjectRecord, Bad> {
    Ok(KmipObjectRecord {
        instance: r.parsed(0)?,
        adapter_id: r.parsed(1)?,
        id: r.parsed(2)?,
        object_type: r.int(3)?,
        state: r.int(4)?,
        created_at: time_of(r.i64(5)?)?,
        created_by_cert_id: r.parsed(6)?,
        created_by: r.text(7)?,
        updated_at: opt_time_of(r.opt_i64(8)?)?,
        updated_by_cert_id: opt_parsed(r, 9)?,
        updated_by: r.opt_text(10)?,
        destroyed_at: opt_time_of(r.opt_i64(11)?)?,
        destroyed_by_cert_id: opt_parsed(r, 12)?,
        destroyed_by: r.opt_text(13)?,
        name: r.opt_text(14)?,
        algorithm: r.opt_int(15)?,
        length: r.opt_int(16)?,
        object_group: r.opt_text(17)?,
        attributes: r.text(18)?,
        material: r.opt_blob(19)?,
        signature: r.blob(20)?,
    })
}

/// The SQL of a KMIP Locate (the ids of an adapter's objects matching `filter`, oldest first,
/// paged) and its values; only the filter's set fields are conditions, every value bound: the
/// `n`th as `{mark}n` (`?n` for SQLite, `$n` for PostgreSQL).
pub(crate) fn locate_sql(
    instance: InstanceId,
    adapter: Uuid,
    filter: &KmipObjectFilter,
    mark: char,
) -> (String, Vec<Param>) {
    let mut values = vec![
        Param::Text(instance.to_string()),
        Param::Text(adapter.to_string()),
    ];
    let mut sql =
        format!("SELECT id FROM kmip_objects WHERE instance_id = {mark}1 AND adapter_id = {mark}2");
    let mut bind = |column: &str, v: Param, sql: &mut String| {
        values.push(v);
        sql.push_str(&format!(" AND {column} = {mark}{}", values.len()));
    };
    let f = filter;
    if let Some(t) = f.object_type {
        bind("object_type", Param::Int(i64::from(t)), &mut sql);
    }
    if let Some(s) = f.state {
        bind("state", Param::Int(i64::from(s)), &mut sql);
    }
    if let Some(n) = &f.name {
        bind("name", Param::Text(n.clone()), &mut sql);
    }
    if let Some(a) = f.algorithm {
        bind("algorithm", Param::Int(i64::from(a)), &mut sql);
    }
    if let Some(l) = f.length {
        bind("length", Param::Int(i64::from(l)), &mut sql);
    }
    if let Some(g) = &f.object_group {
        bind("object_group", Param::Text(g.clone()), &mut sql);
    }
    values.push(Param::Int(i64::from(f.limit)));
    values.push(Param::Int(i64::from(f.offset)));
    let (limit, offset) = (values.len() - 1, values.len());
    sql.push_str(&format!(
        " ORDER BY created_at, id LIMIT {mark}{limit} OFFSET {mark}{offset}"
    ));
    (sql, values)
}

/// A Locate's ids, as stored.
pub(crate) fn parse_ids(ids: Vec<String>) -> Result<Vec<Uuid>, Bad> {
    ids.into_iter()
        .map(|s| s.parse().map_err(|_| Bad(format!("bad identifier {s:?}"))))
        .collect()
}

fn object_from_row(r: &Row<'_>) -> rusqlite::Result<KmipObjectRecord> {
    Ok(object_from(r)?)
}

fn exists(c: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<bool> {
    c.prepare_cached(sql)?
        .query_row(p, |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
}

#[async_trait::async_trait]
impl KmipStore for SqliteStore {
    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        crk: Option<KeyId>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipAdapterRecord>>, u64), StoreError> {
        let inst = instance.to_string();
        let crk = crk.map(|k| k.to_string());
        self.read(|c| {
            let list = c
                .prepare_cached(&format!(
                    "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters
                     WHERE instance_id = ?1 AND (?2 IS NULL OR crk_id = ?2)
                     ORDER BY created_at, id LIMIT ?3 OFFSET ?4"
                ))?
                .query_map(params![inst, crk, limit, offset], |r| {
                    adapter_from_row(r).map(Unverified::new)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let total: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM kmip_adapters
                     WHERE instance_id = ?1 AND (?2 IS NULL OR crk_id = ?2)",
                )?
                .query_row(params![inst, crk], |r| r.get(0))?;
            Ok((list, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters WHERE instance_id = ?1 AND id = ?2"
            ))?
            .query_row(params![instance.to_string(), id.to_string()], |r| {
                adapter_from_row(r).map(Unverified::new)
            })
            .optional()
        })
    }

    async fn kmip_adapter_by_name(
        &self,
        instance: InstanceId,
        name: &str,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ADAPTER_COLUMNS} FROM kmip_adapters WHERE instance_id = ?1 AND name = ?2"
            ))?
            .query_row(params![instance.to_string(), name], |r| {
                adapter_from_row(r).map(Unverified::new)
            })
            .optional()
        })
    }

    async fn insert_kmip_adapter(
        &self,
        adapter: &KmipAdapterRecord,
        max_per_instance: u32,
        event: &AuditEvent,
    ) -> Result<AdapterInsert, StoreError> {
        let a = adapter.clone();
        self.write_audited(event, move |c| {
            let inst = a.instance.to_string();
            if exists(
                c,
                "SELECT 1 FROM kmip_adapters WHERE instance_id = ?1 AND name = ?2",
                params![inst, a.name],
            )? {
                return Ok(AdapterInsert::NameExists);
            }
            let count: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM kmip_adapters WHERE instance_id = ?1")?
                .query_row(params![inst], |r| r.get(0))?;
            if count >= i64::from(max_per_instance) {
                return Ok(AdapterInsert::QuotaReached);
            }
            c.prepare_cached(&format!(
                "INSERT INTO kmip_adapters ({ADAPTER_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            ))?
            .execute(params![
                inst,
                a.id.to_string(),
                a.name,
                a.description,
                a.profile,
                a.crk_id.to_string(),
                nanos(a.created_at),
                a.created_by,
                nanos(a.updated_at),
                a.updated_by,
                a.signature,
            ])?;
            Ok(AdapterInsert::Inserted)
        })
        .await
    }

    async fn delete_kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<AdapterDeletion, StoreError> {
        self.write_audited(event, move |c| {
            let (inst, id) = (instance.to_string(), id.to_string());
            if !exists(
                c,
                "SELECT 1 FROM kmip_adapters WHERE instance_id = ?1 AND id = ?2",
                params![inst, id],
            )? {
                return Ok(AdapterDeletion::NotFound);
            }
            if exists(
                c,
                "SELECT 1 FROM kmip_objects WHERE adapter_id = ?1 AND state NOT IN (5, 6)",
                params![id],
            )? {
                return Ok(AdapterDeletion::HasObjects);
            }
            c.prepare_cached("DELETE FROM kmip_objects WHERE adapter_id = ?1")?
                .execute(params![id])?;
            c.prepare_cached("DELETE FROM kmip_certificates WHERE adapter_id = ?1")?
                .execute(params![id])?;
            c.prepare_cached("DELETE FROM kmip_adapters WHERE instance_id = ?1 AND id = ?2")?
                .execute(params![inst, id])?;
            Ok(AdapterDeletion::Deleted)
        })
        .await
    }

    async fn kmip_certificates(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipCertificateRecord>>, u64), StoreError> {
        let (inst, adapter) = (instance.to_string(), adapter.to_string());
        self.read(|c| {
            let list = c
                .prepare_cached(&format!(
                    "SELECT {CERT_COLUMNS} FROM kmip_certificates
                     WHERE instance_id = ?1 AND adapter_id = ?2
                     ORDER BY created_at, id LIMIT ?3 OFFSET ?4"
                ))?
                .query_map(params![inst, adapter, limit, offset], |r| {
                    cert_from_row(r).map(Unverified::new)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let total: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM kmip_certificates WHERE instance_id = ?1 AND adapter_id = ?2",
                )?
                .query_row(params![inst, adapter], |r| r.get(0))?;
            Ok((list, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates
                 WHERE instance_id = ?1 AND adapter_id = ?2 AND id = ?3"
            ))?
            .query_row(
                params![instance.to_string(), adapter.to_string(), id.to_string()],
                |r| cert_from_row(r).map(Unverified::new),
            )
            .optional()
        })
    }

    async fn kmip_certificate_by_name(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        name: &str,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates
                 WHERE instance_id = ?1 AND adapter_id = ?2 AND name = ?3"
            ))?
            .query_row(
                params![instance.to_string(), adapter.to_string(), name],
                |r| cert_from_row(r).map(Unverified::new),
            )
            .optional()
        })
    }

    async fn insert_kmip_certificate(
        &self,
        cert: &KmipCertificateRecord,
        max_per_adapter: u32,
        event: &AuditEvent,
    ) -> Result<CertificateInsert, StoreError> {
        let k = cert.clone();
        self.write_audited(event, move |c| {
            let (inst, adapter) = (k.instance.to_string(), k.adapter_id.to_string());
            if !exists(
                c,
                "SELECT 1 FROM kmip_adapters WHERE instance_id = ?1 AND id = ?2",
                params![inst, adapter],
            )? {
                return Ok(CertificateInsert::AdapterNotFound);
            }
            if exists(
                c,
                "SELECT 1 FROM kmip_certificates WHERE adapter_id = ?1 AND name = ?2",
                params![adapter, k.name],
            )? {
                return Ok(CertificateInsert::NameExists);
            }
            if exists(
                c,
                "SELECT 1 FROM kmip_certificates WHERE instance_id = ?1 AND fingerprint = ?2",
                params![inst, k.fingerprint.as_slice()],
            )? {
                return Ok(CertificateInsert::CertificateExists);
            }
            let count: i64 = c
                .prepare_cached("SELECT COUNT(*) FROM kmip_certificates WHERE adapter_id = ?1")?
                .query_row(params![adapter], |r| r.get(0))?;
            if count >= i64::from(max_per_adapter) {
                return Ok(CertificateInsert::QuotaReached);
            }
            c.prepare_cached(&format!(
                "INSERT INTO kmip_certificates ({CERT_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ))?
            .execute(params![
                inst,
                adapter,
                k.id.to_string(),
                k.name,
                k.certificate,
                k.fingerprint.as_slice(),
                nanos(k.created_at),
                k.created_by,
                k.signature,
            ])?;
            Ok(CertificateInsert::Inserted)
        })
        .await
    }

    async fn delete_kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM kmip_certificates
                     WHERE instance_id = ?1 AND adapter_id = ?2 AND id = ?3",
                )?
                .execute(params![
                    instance.to_string(),
                    adapter.to_string(),
                    id.to_string()
                ])?;
            Ok(n == 1)
        })
        .await
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
        // States are small integers; they are bound, never spliced into the SQL.
        let marks = (0..states.len())
            .map(|i| format!("?{}", i + 5))
            .collect::<Vec<_>>()
            .join(", ");
        let states: Vec<i64> = states.iter().map(|s| i64::from(*s)).collect();
        self.read(|c| {
            let mut values: Vec<rusqlite::types::Value> = vec![
                inst.clone().into(),
                adapter.clone().into(),
                i64::from(limit).into(),
                i64::from(offset).into(),
            ];
            values.extend(states.iter().map(|s| rusqlite::types::Value::from(*s)));
            let list = c
                .prepare(&format!(
                    "SELECT {OBJECT_COLUMNS} FROM kmip_objects
                     WHERE instance_id = ?1 AND adapter_id = ?2 AND state IN ({marks})
                     ORDER BY created_at, id LIMIT ?3 OFFSET ?4"
                ))?
                .query_map(params_from_iter(values.iter()), object_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            // The count has no LIMIT/OFFSET: its state placeholders start at ?3.
            let count_marks = (0..states.len())
                .map(|i| format!("?{}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let mut count_values: Vec<rusqlite::types::Value> =
                vec![inst.clone().into(), adapter.clone().into()];
            count_values.extend(states.iter().map(|s| rusqlite::types::Value::from(*s)));
            let total: i64 = c
                .prepare(&format!(
                    "SELECT COUNT(*) FROM kmip_objects
                     WHERE instance_id = ?1 AND adapter_id = ?2 AND state IN ({count_marks})"
                ))?
                .query_row(params_from_iter(count_values.iter()), |r| r.get(0))?;
            Ok((list, u64::try_from(total).unwrap_or(0)))
        })
    }

    async fn kmip_object(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<KmipObjectRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {OBJECT_COLUMNS} FROM kmip_objects
                 WHERE instance_id = ?1 AND adapter_id = ?2 AND id = ?3"
            ))?
            .query_row(
                params![instance.to_string(), adapter.to_string(), id.to_string()],
                object_from_row,
            )
            .optional()
        })
    }

    async fn insert_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let o = object.clone();
        self.write_audited(event, move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO kmip_objects ({OBJECT_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17, ?18, ?19, ?20, ?21)"
            ))?
            .execute(params![
                o.instance.to_string(),
                o.adapter_id.to_string(),
                o.id.to_string(),
                o.object_type,
                o.state,
                nanos(o.created_at),
                o.created_by_cert_id.to_string(),
                o.created_by,
                opt_nanos(o.updated_at),
                o.updated_by_cert_id.map(|u| u.to_string()),
                o.updated_by,
                opt_nanos(o.destroyed_at),
                o.destroyed_by_cert_id.map(|u| u.to_string()),
                o.destroyed_by,
                o.name,
                o.algorithm,
                o.length,
                o.object_group,
                o.attributes,
                o.material,
                o.signature,
            ])?;
            Ok(())
        })
        .await
    }

    async fn locate_kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        filter: &KmipObjectFilter,
    ) -> Result<Vec<Uuid>, StoreError> {
        let (sql, values) = locate_sql(instance, adapter, filter, '?');
        let ids = self.read(|c| {
            // Not cached: up to 64 shapes of statement, which would push the hot path's
            // statements out of the connection's small cache.
            c.prepare(&sql)?
                .query_map(params_from_iter(values.iter()), |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(parse_ids(ids)?)
    }

    async fn kmip_certificates_by_fingerprint(
        &self,
        fingerprint: &[u8; 32],
    ) -> Result<Vec<Unverified<KmipCertificateRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CERT_COLUMNS} FROM kmip_certificates WHERE fingerprint = ?1
                 ORDER BY created_at, id"
            ))?
            .query_map(params![fingerprint.as_slice()], |r| {
                cert_from_row(r).map(Unverified::new)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
    }

    async fn update_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let o = object.clone();
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE kmip_objects SET state = ?4, updated_at = ?5, updated_by_cert_id = ?6,
                        updated_by = ?7, destroyed_at = ?8, destroyed_by_cert_id = ?9,
                        destroyed_by = ?10, name = ?11, algorithm = ?12, length = ?13,
                        object_group = ?14, attributes = ?15, material = ?16, signature = ?17
                     WHERE instance_id = ?1 AND adapter_id = ?2 AND id = ?3",
                )?
                .execute(params![
                    o.instance.to_string(),
                    o.adapter_id.to_string(),
                    o.id.to_string(),
                    o.state,
                    opt_nanos(o.updated_at),
                    o.updated_by_cert_id.map(|u| u.to_string()),
                    o.updated_by,
                    opt_nanos(o.destroyed_at),
                    o.destroyed_by_cert_id.map(|u| u.to_string()),
                    o.destroyed_by,
                    o.name,
                    o.algorithm,
                    o.length,
                    o.object_group,
                    o.attributes,
                    o.material,
                    o.signature,
                ])?;
            Ok(n == 1)
        })
        .await
    }
}
