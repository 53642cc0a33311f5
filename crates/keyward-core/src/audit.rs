//! Audit events: one per API action, success or failure, shaped after CADF. They never hold key
//! material, tokens or API keys: only ids, names, states and outcomes.

use time::OffsetDateTime;
use uuid::Uuid;

/// Whether the action happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The action completed.
    Success,
    /// The action was refused or failed.
    Failure,
}

impl Outcome {
    /// CADF's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    /// Subject id (IAM id of the user or service).
    pub id: String,
    /// Client address, when known.
    pub address: Option<String>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unique id.
    pub id: Uuid,
    /// When it happened.
    pub time: OffsetDateTime,
    /// Key Protect's action name, e.g. `kms.secrets.wrap`.
    pub action: String,
    /// Success or failure.
    pub outcome: Outcome,
    /// HTTP status given to the caller.
    pub reason_code: u16,
    /// Short reason for a failure (never secret).
    pub reason: Option<String>,
    /// Who.
    pub initiator: Initiator,
    /// The instance acted on.
    pub instance: Option<String>,
    /// The key acted on, if any.
    pub target: Option<String>,
    /// The key's state after the action, if a key was involved.
    pub key_state: Option<u8>,
    /// The key version involved (wrap, unwrap, rotate).
    pub key_version: Option<String>,
    /// The request id, to join with logs.
    pub request_id: String,
}

impl AuditEvent {
    /// An event of `action` by `initiator` at `time`, with a fresh id; the optional fields
    /// (reason, instance, target, key state and version) start empty.
    pub fn new(
        action: &str,
        outcome: Outcome,
        reason_code: u16,
        initiator: Initiator,
        request_id: String,
        time: OffsetDateTime,
    ) -> Self {
        AuditEvent {
            id: Uuid::new_v4(),
            time,
            action: action.to_owned(),
            outcome,
            reason_code,
            reason: None,
            initiator,
            instance: None,
            target: None,
            key_state: None,
            key_version: None,
            request_id,
        }
    }
}
