//! Instances, keys, versions, aliases, rings, policies, import and signing keys on PostgreSQL (twin of `crate::sqlite` and `crate::listing`).
#![allow(unused_variables)]

use keyward_core::*;
use time::OffsetDateTime;

use super::{Audited, PgStore, pg_error};
use crate::rows::{instance_from, nanos};

#[async_trait::async_trait]
impl Store for PgStore {
    async fn key(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<Unverified<KeyRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn key_with_current_version(
        &self,
        instance: InstanceId,
        id: KeyId,
    ) -> Result<Option<(Unverified<KeyRecord>, Unverified<KeyVersion>)>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn key_version(
        &self,
        key: KeyId,
        number: u32,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn key_version_by_id(
        &self,
        key: KeyId,
        id: KeyVersionId,
    ) -> Result<Option<Unverified<KeyVersion>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn key_versions(
        &self,
        key: KeyId,
        page: Page,
    ) -> Result<(Vec<Unverified<KeyVersion>>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn keys(
        &self,
        instance: InstanceId,
        filter: &KeyFilter,
    ) -> Result<(Vec<Unverified<KeyRecord>>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_key_with_aliases(
        &self,
        key: &KeyRecord,
        version: &KeyVersion,
        aliases: &[AliasRecord],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn update_key_notifying(
        &self,
        key: &KeyRecord,
        new_version: Option<&KeyVersion>,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        Audited::begin(&mut c, event).await?.commit(()).await
    }

    async fn key_counts_by_state(&self) -> Result<Vec<(u8, u64)>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached(
                "SELECT id, account, name, created_at FROM instances ORDER BY created_at",
            )
            .await
            .map_err(pg_error)?;
        let rows = c.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(instance_from).collect::<Result<_, _>>()?)
    }

    async fn instance(&self, id: InstanceId) -> Result<Option<InstanceRecord>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT id, account, name, created_at FROM instances WHERE id = $1")
            .await
            .map_err(pg_error)?;
        let row = c
            .query_opt(&stmt, &[&id.to_string()])
            .await
            .map_err(pg_error)?;
        Ok(row.as_ref().map(instance_from).transpose()?)
    }

    async fn insert_instance(
        &self,
        instance: &InstanceRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = Audited::begin(&mut c, event).await?;
        tx.execute(
            "INSERT INTO instances (id, account, name, created_at) VALUES ($1, $2, $3, $4)",
            &[
                &instance.id.to_string(),
                &instance.account,
                &instance.name,
                &nanos(instance.created_at),
            ],
        )
        .await
        .map_err(pg_error)?;
        tx.commit(()).await
    }

    async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_api_key(
        &self,
        key: &ApiKeyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn purge_key_notifying(
        &self,
        key: &KeyRecord,
        event: &AuditEvent,
        notice: Option<&KeyNotice>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn due_keys(
        &self,
        due: &DueWork,
        limit: u32,
    ) -> Result<Vec<Unverified<KeyRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn alias(
        &self,
        instance: InstanceId,
        alias: &str,
    ) -> Result<Option<Unverified<AliasRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_alias(
        &self,
        alias: &AliasRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_alias(
        &self,
        instance: InstanceId,
        key: KeyId,
        alias: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn key_rings(
        &self,
        instance: InstanceId,
        page: Page,
    ) -> Result<(Vec<KeyRingRecord>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_key_ring(
        &self,
        ring: &KeyRingRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_key_ring(
        &self,
        instance: InstanceId,
        id: &str,
        event: &AuditEvent,
    ) -> Result<RingDeletion, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn instance_policies(
        &self,
        instance: InstanceId,
    ) -> Result<Vec<Unverified<InstancePolicy>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn put_instance_policies(
        &self,
        policies: &[InstancePolicy],
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn import_token(
        &self,
        instance: InstanceId,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn put_import_token(
        &self,
        token: &ImportTokenRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn retrieve_import_token(
        &self,
        instance: InstanceId,
        now: OffsetDateTime,
    ) -> Result<Option<ImportTokenRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}
