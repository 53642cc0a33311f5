//! KMIP adapters, certificates and objects on PostgreSQL (twin of `crate::kmip`).
#![allow(unused_variables)]

use keyward_core::*;
use time::OffsetDateTime;
use uuid::Uuid;

use super::PgStore;

#[async_trait::async_trait]
impl KmipStore for PgStore {
    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        crk: Option<KeyId>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipAdapterRecord>>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_adapter_by_name(
        &self,
        instance: InstanceId,
        name: &str,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_kmip_adapter(
        &self,
        adapter: &KmipAdapterRecord,
        max_per_instance: u32,
        event: &AuditEvent,
    ) -> Result<AdapterInsert, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<AdapterDeletion, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_certificates(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipCertificateRecord>>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_certificate_by_name(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        name: &str,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_kmip_certificate(
        &self,
        cert: &KmipCertificateRecord,
        max_per_adapter: u32,
        event: &AuditEvent,
    ) -> Result<CertificateInsert, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        states: &[u8],
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<KmipObjectRecord>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn kmip_object(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<KmipObjectRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn update_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}
