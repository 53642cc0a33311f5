//! Domain records in their wire form where the runtime sends them out (audit export, webhook
//! delivery) and the server answers with them: one rendering for both.

use keyward_api::events::{EventType, KeyEvent};
use keyward_api::{AuditAggregate, AuditEventView, AuditInitiator, AuditTarget, hex};
use keyward_core::{ChainedEvent, EventKind, EventRecord};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A date as Key Protect writes it: RFC 3339 in UTC with milliseconds.
pub fn date(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The wire (and export) form of a stored event.
pub fn event_view(e: &ChainedEvent) -> AuditEventView {
    let ev = &e.event;
    AuditEventView {
        seq: e.seq,
        id: ev.id.to_string(),
        event_time: ev
            .time
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default(),
        action: ev.action.clone(),
        outcome: ev.outcome.as_str().to_owned(),
        reason_code: ev.reason_code,
        reason: ev.reason.clone(),
        initiator: AuditInitiator {
            id: ev.initiator.id.clone(),
            address: ev.initiator.address.clone(),
        },
        instance_id: ev.instance.clone(),
        target: AuditTarget {
            id: ev.target.clone(),
            key_state: ev.key_state,
            key_version: ev.key_version.clone(),
        },
        request_id: ev.request_id.clone(),
        aggregated: ev.count.map(|count| AuditAggregate {
            count,
            window_seconds: 1,
        }),
        prev_hash: hex(&e.prev_hash),
        hash: hex(&e.hash),
    }
}

/// The wire event type for a domain one.
pub fn event_type(k: EventKind) -> EventType {
    match k {
        EventKind::Rotate => EventType::Rotate,
        EventKind::Disable => EventType::Disable,
        EventKind::Enable => EventType::Enable,
        EventKind::Delete => EventType::Delete,
        EventKind::Restore => EventType::Restore,
        EventKind::Purge => EventType::Purge,
        EventKind::Sync => EventType::Sync,
    }
}

/// A lifecycle event on the wire; `account` owns its instance (for the key CRN).
pub fn wire_event(region: &str, account: &str, e: &EventRecord) -> KeyEvent {
    let kind = event_type(e.kind);
    KeyEvent {
        event_id: e.id.clone(),
        seq: e.seq,
        event_type: kind,
        action: e.kind.op().action.to_owned(),
        instance_id: e.instance.to_string(),
        key_id: e.key_id.to_string(),
        key_crn: format!(
            "crn:v1:keyward:private:kms:{region}:a/{account}:{}:key:{}",
            e.instance, e.key_id
        ),
        key_state: e.key_state,
        key_version: e.key_version.to_string(),
        resource_crns: e.resource_crns.clone(),
        time: date(e.time),
    }
}
