//! Audit events on the wire: `GET /api/v2/audit_events` (a Keyward extension), the JSON Lines
//! and webhook export sinks, and `keyward audit list`. Shaped after CADF, with the event's place
//! in the hash chain.

use serde::{Deserialize, Serialize};

/// Media type of an audit event collection.
pub const AUDIT_EVENT_MEDIA: &str = "application/vnd.keyward.audit_event+json";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditInitiator {
    /// IAM id.
    pub id: String,
    /// Client address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditTarget {
    /// The key (or other resource) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The key's state after the action (Key Protect's state numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_state: Option<u8>,
    /// The key version involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,
}

/// What an aggregated event stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditAggregate {
    /// Successful requests counted.
    pub count: u64,
    /// The window they were made in, from the event's time: always 1.
    pub window_seconds: u32,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    /// Position in the hash chain.
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// RFC 3339 time with nanoseconds.
    pub event_time: String,
    /// Key Protect's action name, e.g. `kms.secrets.wrap`.
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// HTTP status given to the caller.
    pub reason_code: u16,
    /// Short reason for a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who.
    pub initiator: AuditInitiator,
    /// The instance acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// What.
    pub target: AuditTarget,
    /// The request id (also in the logs and the `x-request-id` header); an aggregated event's
    /// own id.
    pub request_id: String,
    /// Present on an aggregated event only (`[audit] aggregate_crypto`): it stands for this
    /// many successful requests alike in every other field, made in the second from
    /// `eventTime`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<AuditAggregate>,
    /// Hex SHA-256 of the previous event in the chain.
    pub prev_hash: String,
    /// Hex SHA-256 of this event.
    pub hash: String,
}

/// Media type of `GET /api/v2/audit_events/verification`.
pub const AUDIT_VERIFICATION_MEDIA: &str = "application/vnd.keyward.audit_verification+json";

/// `GET /api/v2/audit_events/verification` (a Keyward extension): the newest signed checkpoint
/// of the audit chain and the events after it, verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditChainVerification {
    /// No break found: the checkpoint is valid (or there is none yet) and every event walked
    /// matches its hash and links to the one before it.
    pub ok: bool,
    /// The chain head's position (`None`: an empty trail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
    /// The chain head's hash (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
    /// The newest signed checkpoint, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<AuditCheckpointView>,
    /// The first position verified (the checkpoint's, or 1 without one).
    pub verified_from: u64,
    /// Events verified.
    pub events_checked: u64,
    /// Whether the walk reached the head (one request walks a bounded number of events).
    pub complete: bool,
    /// The first break, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_break: Option<AuditChainBreak>,
}

/// A signed checkpoint of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditCheckpointView {
    /// The position it signs.
    pub seq: u64,
    /// The hash it signs (hex).
    pub hash: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// Whether its signature verifies and the stored event there still has its hash.
    pub valid: bool,
}

/// Where and how the chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditChainBreak {
    /// `altered`, `removed`, `inserted`, `reordered` or `bad_checkpoint`.
    pub kind: String,
    /// The position named.
    pub seq: u64,
    /// One sentence for the operator.
    pub detail: String,
}
