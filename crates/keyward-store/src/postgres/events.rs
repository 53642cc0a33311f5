//! Registrations, lifecycle events (the outbox) and subscriptions on PostgreSQL (twin of `crate::events`).
#![allow(unused_variables)]

use keyward_core::*;
use time::OffsetDateTime;

use super::PgStore;

#[async_trait::async_trait]
impl RegistrationStore for PgStore {
    async fn registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn registrations(
        &self,
        instance: InstanceId,
        filter: &RegistrationFilter,
    ) -> Result<(Vec<RegistrationRecord>, u64), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn update_registration(
        &self,
        registration: &RegistrationRecord,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
        owner: &str,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn notify(
        &self,
        key: &KeyRecord,
        notice: &KeyNotice,
        event: &AuditEvent,
    ) -> Result<u32, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn events_for(
        &self,
        recipient: &str,
        instance: InstanceId,
        after_seq: u64,
        unacked_only: bool,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn pending_events(
        &self,
        recipient: &str,
        key_id: KeyId,
    ) -> Result<Vec<EventRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn ack_event(
        &self,
        ack: &EventAckRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn last_event_seq(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
    ) -> Result<Option<SubscriptionRecord>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn put_subscription(
        &self,
        subscription: &SubscriptionRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delete_subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn claim_deliveries(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn deliveries_due(&self, now: OffsetDateTime) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delivery_succeeded(
        &self,
        event_id: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn delivery_failed(
        &self,
        event_id: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }

    async fn event_backlog(&self) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable(
            "not ported to PostgreSQL yet".into(),
        ))
    }
}

/// In a delete's transaction: no registration may have `preventKeyDeletion`, and without
/// `force` there may be none at all ([`StoreError::Conflict`] otherwise). Twin of
/// `crate::events::check_delete_allowed`.
pub(super) async fn check_delete_allowed(
    tx: &deadpool_postgres::Transaction<'_>,
    k: &KeyRecord,
    n: &KeyNotice,
) -> Result<(), StoreError> {
    Err(StoreError::Unavailable(
        "not ported to PostgreSQL yet".into(),
    ))
}

/// In a key write's transaction: one event per registration owner of the key. Returns how many.
/// Twin of `crate::events::insert_events`.
pub(super) async fn insert_events(
    tx: &deadpool_postgres::Transaction<'_>,
    k: &KeyRecord,
    n: &KeyNotice,
) -> Result<u32, StoreError> {
    Err(StoreError::Unavailable(
        "not ported to PostgreSQL yet".into(),
    ))
}
