//! Identities, API keys, access policies, authorizations and refresh tokens on PostgreSQL (twin of `crate::iam`).
#![allow(unused_variables)]

use keyward_core::*;
use time::OffsetDateTime;

use super::PgStore;

#[async_trait::async_trait]
impl IamStore for PgStore {
    async fn identity(&self, iam_id: &str) -> Result<Option<IdentityRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn identities(&self, account: &str) -> Result<Vec<IdentityRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_identity(
        &self,
        identity: &IdentityRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn set_identity_locked(
        &self,
        account: &str,
        iam_id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_identity(
        &self,
        account: &str,
        iam_id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn api_keys_of(&self, account: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn set_api_key_locked(
        &self,
        account: &str,
        id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_api_key(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn access_policies(
        &self,
        account: &str,
        subject: Option<&str>,
    ) -> Result<Vec<Unverified<AccessPolicyRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_access_policy(
        &self,
        policy: &AccessPolicyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_access_policy(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn authorizations(
        &self,
        account: &str,
        source_service: Option<&str>,
    ) -> Result<Vec<Unverified<AuthorizationRecord>>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_authorization(
        &self,
        authorization: &AuthorizationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_authorization(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_refresh_token(
        &self,
        hash: [u8; 32],
        api_key_id: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn take_refresh_token(
        &self,
        hash: [u8; 32],
    ) -> Result<Option<(String, OffsetDateTime)>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}
