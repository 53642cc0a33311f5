//! Key lifecycle events on the wire (a Keyward extension: Key Protect delivers them to IBM's
//! services internally) and Key Protect's `event_ack` body.
//!
//! An event goes to the owner of every registration on the key when the key is rotated,
//! disabled, enabled, deleted, restored or purged, and on `actions/sync`. A service pulls them
//! from `GET /api/v2/event_stream` (server-sent events) or has them pushed to a webhook set with
//! `PUT /api/v2/event_subscription`; it acknowledges each with `POST /api/v2/event_ack`.
//!
//! Webhook bodies are signed: `X-Keyward-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "<t>.<body>")>`, where the secret is the base64 string `PUT /api/v2/event_subscription`
//! returned. [`verify_signature`] checks one.

use serde::{Deserialize, Serialize};

use crate::Collection;

/// Media type of the `event_ack` body.
pub const EVENT_ACKNOWLEDGE: &str = "application/vnd.ibm.kms.event_acknowledge+json";
/// Media type of the event stream.
pub const EVENT_STREAM: &str = "text/event-stream";

/// Webhook header names.
pub mod headers {
    /// The event's id.
    pub const EVENT_ID: &str = "x-keyward-event-id";
    /// `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
    pub const SIGNATURE: &str = "x-keyward-signature";
    /// The SSE resume header.
    pub const LAST_EVENT_ID: &str = "last-event-id";
}

/// What happened to the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A new key version; rewrap DEKs and ack `DEK_ENABLED` with `rewrappedKeyVersion`.
    Rotate,
    /// The key was disabled (suspended): drop DEKs, refuse service, ack `DEK_DISABLED`.
    Disable,
    /// The key was enabled again: resume, ack `DEK_ENABLED`.
    Enable,
    /// The key was deleted: drop DEKs, ack `DEK_DELETED`.
    Delete,
    /// A deleted key was restored: resume, ack `DEK_RESTORED`.
    Restore,
    /// The key's material is gone for good: ack `DEK_DELETED`.
    Purge,
    /// `actions/sync`: the key's current state, re-sent.
    Sync,
}

impl EventType {
    /// Every type, in declaration order.
    pub const ALL: [EventType; 7] = [
        EventType::Rotate,
        EventType::Disable,
        EventType::Enable,
        EventType::Delete,
        EventType::Restore,
        EventType::Purge,
        EventType::Sync,
    ];

    /// The wire name (`rotate`, ...), also the SSE `event:` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Rotate => "rotate",
            EventType::Disable => "disable",
            EventType::Enable => "enable",
            EventType::Delete => "delete",
            EventType::Restore => "restore",
            EventType::Purge => "purge",
            EventType::Sync => "sync",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event, as the stream's `data:` line and the webhook body carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyEvent {
    /// Unique id (UUID); what `event_ack` names.
    pub event_id: String,
    /// Increasing across the server; the SSE `id:` and what `Last-Event-ID` resumes after.
    pub seq: u64,
    /// What happened.
    pub event_type: EventType,
    /// The audit action of the change (`kms.secrets.rotate`, ...).
    pub action: String,
    /// The Key Protect instance of the key.
    pub instance_id: String,
    /// The key's id.
    pub key_id: String,
    /// The key's CRN.
    pub key_crn: String,
    /// Key Protect state number after the change (1 active, 2 suspended, 3 deactivated,
    /// 5 destroyed).
    pub key_state: u8,
    /// The key's current version id.
    pub key_version: String,
    /// The recipient's registered resource CRNs on this key.
    pub resource_crns: Vec<String>,
    /// When the change happened (RFC 3339).
    pub time: String,
}

/// The state a service reports after acting on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AdopterKeyState {
    /// DEKs usable (after enable or rotate; with `rewrappedKeyVersion` after rotate).
    DekEnabled,
    /// DEKs dropped, service refused (after disable).
    DekDisabled,
    /// DEKs gone (after delete or purge).
    DekDeleted,
    /// Back in service after a restore.
    DekRestored,
}

impl AdopterKeyState {
    /// The wire name (`DEK_ENABLED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AdopterKeyState::DekEnabled => "DEK_ENABLED",
            AdopterKeyState::DekDisabled => "DEK_DISABLED",
            AdopterKeyState::DekDeleted => "DEK_DELETED",
            AdopterKeyState::DekRestored => "DEK_RESTORED",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<AdopterKeyState> {
        [
            AdopterKeyState::DekEnabled,
            AdopterKeyState::DekDisabled,
            AdopterKeyState::DekDeleted,
            AdopterKeyState::DekRestored,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// `keyStateData` of an acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyStateData {
    /// After a rotation: the key version the service rewrapped its DEKs under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrapped_key_version: Option<String>,
    /// The key version the service uses (an alternative name Key Protect documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<String>,
}

/// One resource of `POST /api/v2/event_ack`, as Key Protect shapes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventAck {
    /// The event acknowledged.
    pub event_id: String,
    /// The service's state after acting on it.
    pub adopter_key_state: AdopterKeyState,
    /// When the service processed it (RFC 3339).
    pub timestamp: String,
    /// Version data (`rewrappedKeyVersion` after a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_state_data: Option<KeyStateData>,
}

impl EventAck {
    /// An acknowledgement of `event_id`; `rewrapped_key_version` after a rotation.
    pub fn new(
        event_id: impl Into<String>,
        adopter_key_state: AdopterKeyState,
        rewrapped_key_version: Option<String>,
        timestamp: impl Into<String>,
    ) -> Self {
        EventAck {
            event_id: event_id.into(),
            adopter_key_state,
            timestamp: timestamp.into(),
            key_state_data: rewrapped_key_version.map(|v| KeyStateData {
                rewrapped_key_version: Some(v),
                key_version: None,
            }),
        }
    }

    /// The rewrapped version, under either name.
    pub fn rewrapped_key_version(&self) -> Option<&str> {
        let d = self.key_state_data.as_ref()?;
        d.rewrapped_key_version
            .as_deref()
            .or(d.key_version.as_deref())
    }

    /// The request body Key Protect expects: a one-resource collection.
    pub fn into_body(self) -> Collection<EventAck> {
        Collection::new(EVENT_ACKNOWLEDGE, vec![self])
    }
}

/// Body of `PUT /api/v2/event_subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubscriptionRequest {
    /// Where to `POST` events (`http://` or `https://`).
    pub url: String,
}

/// A webhook subscription. `secret` only in the answer to `PUT`; keep it, it is not shown again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSubscription {
    /// Where events are posted.
    pub url: String,
    /// Base64 of the 32-byte HMAC key that signs webhook bodies (`PUT` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl std::fmt::Debug for EventSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubscription")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a webhook signature was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The header is not `t=<digits>,v1=<64 hex digits>`, or the secret is not base64.
    Malformed,
    /// The timestamp is further from now than the tolerance (a replay, or a skewed clock).
    Stale,
    /// The MAC does not match.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SignatureError::Malformed => "malformed signature header or secret",
            SignatureError::Stale => "signature timestamp outside the tolerance",
            SignatureError::Mismatch => "signature does not match the body",
        })
    }
}

impl std::error::Error for SignatureError {}

/// The bytes the signature covers: `"<t>.<body>"`.
fn signed_payload(t: i64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("{t}.").into_bytes();
    m.extend_from_slice(body);
    m
}

/// Decodes the base64 secret `PUT /api/v2/event_subscription` returned.
pub fn decode_secret(secret_b64: &str) -> Option<keyward_crypto::Secret> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(secret_b64.trim())
        .ok()
        .map(keyward_crypto::Secret::new)
}

/// The `X-Keyward-Signature` value for `body` sent at Unix time `t`.
pub fn sign(secret: &keyward_crypto::Secret, t: i64, body: &[u8]) -> String {
    let mac = keyward_crypto::hmac_sha256(secret, &signed_payload(t, body));
    format!("t={t},v1={}", crate::hex(&mac.0))
}

/// Verifies an `X-Keyward-Signature` header over `body` with the base64 `secret_b64`, accepting
/// a timestamp at most `tolerance_secs` from `now_unix`. The MAC is compared in constant time.
pub fn verify_signature(
    secret_b64: &str,
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let secret = decode_secret(secret_b64).ok_or(SignatureError::Malformed)?;
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (t, v1) = t.zip(v1).ok_or(SignatureError::Malformed)?;
    let tag = decode_hex(v1).ok_or(SignatureError::Malformed)?;
    // Checked: `now - t` overflows for a timestamp near i64::MIN or MAX (issue 18 item 15);
    // a timestamp that far away is stale, not a panic.
    if now_unix
        .checked_sub(t)
        .and_then(i64::checked_abs)
        .is_none_or(|skew| skew > tolerance_secs)
    {
        return Err(SignatureError::Stale);
    }
    keyward_crypto::hmac_verify(&secret, &signed_payload(t, body), &tag)
        .map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn a_signature_verifies_and_a_changed_body_does_not() {
        let secret = decode_secret(SECRET).unwrap_or_else(|| panic!("secret"));
        let header = sign(&secret, 1_700_000_000, b"{\"a\":1}");
        assert_eq!(
            verify_signature(SECRET, &header, b"{\"a\":1}", 1_700_000_010, 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(SECRET, &header, b"{\"a\":2}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(SECRET, &header, b"{\"a\":1}", 1_700_001_000, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(SECRET, "t=1,v1=zz", b"", 1, 300),
            Err(SignatureError::Malformed)
        );
    }

    /// Issue 18 item 15: the skew `now - t` overflowed (a panic in debug builds, a wrapped
    /// value in release) for a timestamp at the ends of i64, before the MAC was checked.
    #[test]
    fn a_timestamp_at_the_ends_of_i64_is_stale_not_a_panic() {
        for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let header = format!("t={t},v1={}", "00".repeat(32));
            for now in [0, 1_700_000_000, i64::MAX, i64::MIN] {
                let verdict = verify_signature(SECRET, &header, b"{}", now, 300);
                // Within the tolerance the (wrong) MAC decides; beyond it, staleness.
                let fresh = (i128::from(now) - i128::from(t)).abs() <= 300;
                let expected = if fresh {
                    SignatureError::Mismatch
                } else {
                    SignatureError::Stale
                };
                assert_eq!(verdict, Err(expected), "t={t} now={now}");
            }
        }
    }

    #[test]
    fn event_ack_reads_key_protects_body() {
        let body = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.event_acknowledge+json",
            "collectionTotal":1},"resources":[{"eventId":"e","adopterKeyState":"DEK_ENABLED",
            "timestamp":"2026-01-01T00:00:00Z","keyStateData":{"rewrappedKeyVersion":"v2"}}]}"#;
        let c: Collection<EventAck> = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}"));
        let a = c.resources.first().unwrap_or_else(|| panic!("one"));
        assert_eq!(a.adopter_key_state, AdopterKeyState::DekEnabled);
        assert_eq!(a.rewrapped_key_version(), Some("v2"));
    }

    #[test]
    fn event_type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
    }
}
