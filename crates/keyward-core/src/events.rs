//! Registrations (a service's resource protected by a root key), lifecycle events addressed to the
//! services registered on a key (a transactional outbox), webhook subscriptions, and the
//! `RegistrationStore` seam that stores them.
//!
//! An event is written in the same store transaction as the key change it reports, one per
//! registration owner of the key, so a change is never committed without its events and an event
//! never exists for a change that did not happen.

use time::OffsetDateTime;

use crate::{AuditEvent, InstanceId, KeyId, KeyRecord, KeyVersionId, StoreError, WrappedMaterial};

/// What happened to a key, as an event reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// New key version.
    Rotate,
    /// Suspended.
    Disable,
    /// Active again.
    Enable,
    /// Destroyed (restorable for a while).
    Delete,
    /// Restored after a delete.
    Restore,
    /// Material erased for good.
    Purge,
    /// `actions/sync`: the current state, re-sent.
    Sync,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 7] = [
        EventKind::Rotate,
        EventKind::Disable,
        EventKind::Enable,
        EventKind::Delete,
        EventKind::Restore,
        EventKind::Purge,
        EventKind::Sync,
    ];

    /// The wire and storage name (`rotate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Rotate => "rotate",
            EventKind::Disable => "disable",
            EventKind::Enable => "enable",
            EventKind::Delete => "delete",
            EventKind::Restore => "restore",
            EventKind::Purge => "purge",
            EventKind::Sync => "sync",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The verb of the key change this event reports (its `action` on the wire).
    pub fn op(self) -> &'static crate::Op {
        use crate::op;
        match self {
            EventKind::Rotate => &op::ROTATE,
            EventKind::Disable => &op::DISABLE,
            EventKind::Enable => &op::ENABLE,
            EventKind::Delete => &op::DELETE,
            EventKind::Restore => &op::RESTORE,
            EventKind::Purge => &op::PURGE,
            EventKind::Sync => &op::SYNC,
        }
    }

    /// The event a successful lifecycle action emits (`Rotate` → `Rotate`), if any. Sync
    /// writes its events itself; expiry sends none.
    pub fn for_lifecycle(action: crate::Action) -> Option<EventKind> {
        use crate::Action as A;
        match action {
            A::Rotate => Some(EventKind::Rotate),
            A::Disable => Some(EventKind::Disable),
            A::Enable => Some(EventKind::Enable),
            A::Delete => Some(EventKind::Delete),
            A::Restore => Some(EventKind::Restore),
            A::Purge => Some(EventKind::Purge),
            _ => None,
        }
    }
}

/// What a service reported after acting on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdopterState {
    /// `DEK_ENABLED`.
    Enabled,
    /// `DEK_DISABLED`.
    Disabled,
    /// `DEK_DELETED`.
    Deleted,
    /// `DEK_RESTORED`.
    Restored,
}

impl AdopterState {
    /// Key Protect's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AdopterState::Enabled => "DEK_ENABLED",
            AdopterState::Disabled => "DEK_DISABLED",
            AdopterState::Deleted => "DEK_DELETED",
            AdopterState::Restored => "DEK_RESTORED",
        }
    }

    /// Parses Key Protect's name.
    pub fn parse(s: &str) -> Option<AdopterState> {
        [
            AdopterState::Enabled,
            AdopterState::Disabled,
            AdopterState::Deleted,
            AdopterState::Restored,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// A registration: `resource_crn` (a resource of the owning service) is protected by `key_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    /// The key's instance.
    pub instance: InstanceId,
    /// The root key.
    pub key_id: KeyId,
    /// The protected resource.
    pub resource_crn: String,
    /// The service identity that created it; events go to it.
    pub owner: String,
    /// Shown to the customer.
    pub description: Option<String>,
    /// Visible to the owner only.
    pub metadata: Option<String>,
    /// Blocks the key's deletion, even forced.
    pub prevent_key_deletion: bool,
    /// The key version the resource uses.
    pub key_version_id: KeyVersionId,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last writer.
    pub updated_by: String,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// The state the owner last acknowledged.
    pub adopter_state: Option<AdopterState>,
}

/// Which registrations a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationFilter {
    /// Only this key's.
    pub key_id: Option<KeyId>,
    /// Only those of keys in this key ring.
    pub key_ring: Option<String>,
    /// A CRN pattern: `*` matches any run of characters, everything else literally.
    pub crn_pattern: Option<String>,
    /// Only those with this `preventKeyDeletion`.
    pub prevent_key_deletion: Option<bool>,
    /// Page size.
    pub limit: u32,
    /// Skipped.
    pub offset: u32,
}

/// The change an event reports, given to the store with the key write that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNotice {
    /// What happened.
    pub kind: EventKind,
    /// When.
    pub time: OffsetDateTime,
    /// For a delete: `force=true` was given (registrations without `preventKeyDeletion` do not
    /// block it).
    pub force_delete: bool,
    /// For a delete: an operator (KeyPurge or Administrator) overrode `preventKeyDeletion`
    /// registrations (`preventKeyDeletionOverride=true`, with `force`).
    pub override_prevention: bool,
}

/// How a delete treats the key's registrations: Key Protect's `force`, and Keyward's operator
/// override of `preventKeyDeletion` (issue 18, item 7). Both off for every other change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deletion {
    /// `force=true`: registrations without `preventKeyDeletion` do not block the delete.
    pub force: bool,
    /// `preventKeyDeletionOverride=true` (needs `force`, and KeyPurge or Administrator):
    /// `preventKeyDeletion` registrations do not block it either.
    pub override_prevention: bool,
}

/// One event addressed to one service identity (the owner of registrations on the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Server-wide increasing sequence number.
    pub seq: u64,
    /// Unique id (UUID text).
    pub id: String,
    /// The identity it is for.
    pub recipient: String,
    /// The key's instance.
    pub instance: InstanceId,
    /// The key.
    pub key_id: KeyId,
    /// What happened.
    pub kind: EventKind,
    /// Key Protect state code after the change.
    pub key_state: u8,
    /// The key's current version after the change.
    pub key_version: KeyVersionId,
    /// The recipient's registered CRNs on the key when the event was created.
    pub resource_crns: Vec<String>,
    /// When the change happened.
    pub time: OffsetDateTime,
    /// When the recipient acknowledged it.
    pub acked_at: Option<OffsetDateTime>,
    /// When a webhook delivery succeeded.
    pub delivered_at: Option<OffsetDateTime>,
    /// Failed webhook deliveries so far.
    pub attempts: u32,
}

/// An acknowledgement to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventAckRecord {
    /// The event.
    pub event_id: String,
    /// Who acknowledges (must be the recipient).
    pub recipient: String,
    /// In which instance.
    pub instance: InstanceId,
    /// The reported state.
    pub state: AdopterState,
    /// The version the service rewrapped to, if any.
    pub rewrapped_version: Option<String>,
    /// When.
    pub at: OffsetDateTime,
}

/// A webhook subscription of one identity in one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// The subscribing identity.
    pub recipient: String,
    /// The instance.
    pub instance: InstanceId,
    /// Where events are posted.
    pub url: String,
    /// The HMAC key, wrapped by custody.
    pub secret: WrappedMaterial,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// An event claimed for webhook delivery, with where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryJob {
    /// The event.
    pub event: EventRecord,
    /// The subscription it goes to.
    pub subscription: SubscriptionRecord,
}

/// Outcome of deleting a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationChange {
    /// Done.
    Done,
    /// No such registration.
    NotFound,
    /// It belongs to another identity.
    NotOwner,
}

/// Storage of registrations, events and subscriptions. Part of every [`crate::Store`].
#[async_trait::async_trait]
pub trait RegistrationStore: Send + Sync {
    /// One registration.
    async fn registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError>;
    /// A page of an instance's registrations matching `filter` (ordered by key, then CRN), and
    /// the total matching.
    async fn registrations(
        &self,
        instance: InstanceId,
        filter: &RegistrationFilter,
    ) -> Result<(Vec<RegistrationRecord>, u64), StoreError>;
    /// Creates a registration; [`StoreError::Conflict`] when one exists for the key and CRN;
    /// `false` (nothing written) when the key already has `max_per_key` registrations, counted
    /// in the write's transaction.
    async fn insert_registration(
        &self,
        registration: &RegistrationRecord,
        max_per_key: u32,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
    /// Replaces a registration if it exists and `registration.owner` owns it.
    async fn update_registration(
        &self,
        registration: &RegistrationRecord,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError>;
    /// Deletes a registration if it exists and `owner` owns it.
    async fn delete_registration(
        &self,
        key_id: KeyId,
        resource_crn: &str,
        owner: &str,
        event: &AuditEvent,
    ) -> Result<RegistrationChange, StoreError>;

    /// Creates one event per registration owner of `key` (its registered CRNs listed) and the
    /// audit event, in one transaction; the number of events created.
    async fn notify(
        &self,
        key: &KeyRecord,
        notice: &KeyNotice,
        event: &AuditEvent,
    ) -> Result<u32, StoreError>;
    /// Events for `recipient` in `instance` with a sequence number above `after_seq`, oldest
    /// first, at most `limit`; only unacknowledged ones when `unacked_only`.
    async fn events_for(
        &self,
        recipient: &str,
        instance: InstanceId,
        after_seq: u64,
        unacked_only: bool,
        limit: u32,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// An event by id.
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Unacknowledged events of `recipient` about `key_id`, oldest first.
    async fn pending_events(
        &self,
        recipient: &str,
        key_id: KeyId,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Records an acknowledgement (idempotent) and the state on the recipient's registrations of
    /// the key, with the audit event; `false` when no such event is addressed to the recipient
    /// in the instance.
    async fn ack_event(&self, ack: &EventAckRecord, event: &AuditEvent)
    -> Result<bool, StoreError>;
    /// The highest event sequence number so far (0 when none).
    async fn last_event_seq(&self) -> Result<u64, StoreError>;

    /// The subscription of `recipient` in `instance`.
    async fn subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
    ) -> Result<Option<SubscriptionRecord>, StoreError>;
    /// Creates or replaces a subscription.
    async fn put_subscription(
        &self,
        subscription: &SubscriptionRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes a subscription; `false` when there was none.
    async fn delete_subscription(
        &self,
        recipient: &str,
        instance: InstanceId,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Claims up to `limit` undelivered, unacknowledged events that have a subscription and are
    /// due at `now`, leasing each to `worker` until `lease_until` (compare-and-swap: an event
    /// leased to a live worker is not claimed by another).
    async fn claim_deliveries(
        &self,
        worker: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<DeliveryJob>, StoreError>;
    /// Whether [`RegistrationStore::claim_deliveries`] would find work at `now` (a read, so an
    /// idle worker does not take the write lock).
    async fn deliveries_due(&self, now: OffsetDateTime) -> Result<bool, StoreError>;
    /// Marks a claimed event delivered.
    async fn delivery_succeeded(
        &self,
        event_id: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Records a failed delivery: retry at `retry_at`, lease released.
    async fn delivery_failed(
        &self,
        event_id: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Undelivered, unacknowledged events that have a subscription (the webhook backlog).
    async fn event_backlog(&self) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_actions_name_their_events() {
        let event = |verb: &crate::op::Op| verb.lifecycle.and_then(EventKind::for_lifecycle);
        assert_eq!(event(&crate::op::ROTATE), Some(EventKind::Rotate));
        assert_eq!(event(&crate::op::PURGE), Some(EventKind::Purge));
        assert_eq!(event(&crate::op::PATCH_KEY), None);
        assert_eq!(event(&crate::op::SYNC), None);
        assert_eq!(event(&crate::op::EXPIRE), None);
    }
}
