//! Mapping between domain records and SQLite rows. Times are stored as Unix nanoseconds so they
//! round-trip exactly (record signatures cover them).

use keyward_core::{
    ApiKeyRecord, AuditEvent, InstanceRecord, KeyKind, KeyRecord, KeyState, KeyVersion,
    SigningKeyRecord, StoreError, WrappedMaterial,
};
use rusqlite::Row;
use time::OffsetDateTime;

pub const KEY_COLUMNS: &str = "id, instance_id, kind, name, description, state, imported, key_ring, \
    expiration, bits, current_version, current_version_id, revision, created_at, created_by, updated_at, \
    state_changed_at, last_rotated_at, deleted_at, deleted_by, signature";

pub const VERSION_COLUMNS: &str =
    "key_id, number, id, created_at, wrapping_key, material, signature";

pub fn nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub fn opt_nanos(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(nanos)
}

fn time(n: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| conv(e.to_string()))
}

fn opt_time(n: Option<i64>) -> rusqlite::Result<Option<OffsetDateTime>> {
    n.map(time).transpose()
}

fn conv(msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, msg.into())
}

fn parse<T: std::str::FromStr>(s: String) -> rusqlite::Result<T> {
    s.parse().map_err(|_| conv(format!("bad identifier {s:?}")))
}

pub fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    let kind = match r.get::<_, i64>(2)? {
        0 => KeyKind::Root,
        1 => KeyKind::Standard,
        k => return Err(conv(format!("bad key kind {k}"))),
    };
    let state: i64 = r.get(5)?;
    Ok(KeyRecord {
        id: parse(r.get(0)?)?,
        instance: parse(r.get(1)?)?,
        kind,
        name: r.get(3)?,
        description: r.get(4)?,
        state: KeyState::from_code(state).ok_or_else(|| conv(format!("bad state {state}")))?,
        imported: r.get(6)?,
        key_ring: r.get(7)?,
        expiration: opt_time(r.get(8)?)?,
        bits: r.get(9)?,
        current_version: r.get(10)?,
        current_version_id: parse(r.get(11)?)?,
        revision: r
            .get::<_, i64>(12)?
            .try_into()
            .map_err(|_| conv("bad revision".into()))?,
        created_at: time(r.get(13)?)?,
        created_by: r.get(14)?,
        updated_at: time(r.get(15)?)?,
        state_changed_at: time(r.get(16)?)?,
        last_rotated_at: opt_time(r.get(17)?)?,
        deleted_at: opt_time(r.get(18)?)?,
        deleted_by: r.get(19)?,
        signature: r.get(20)?,
    })
}

pub fn kind_code(kind: KeyKind) -> i64 {
    match kind {
        KeyKind::Root => 0,
        KeyKind::Standard => 1,
    }
}

pub fn version_from_row(r: &Row<'_>) -> rusqlite::Result<KeyVersion> {
    Ok(KeyVersion {
        key_id: parse(r.get(0)?)?,
        number: r.get(1)?,
        id: parse(r.get(2)?)?,
        created_at: time(r.get(3)?)?,
        material: WrappedMaterial {
            wrapping_key: r.get(4)?,
            bytes: r.get(5)?,
        },
        signature: r.get(6)?,
    })
}

pub fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    Ok(InstanceRecord {
        id: parse(r.get(0)?)?,
        account: r.get(1)?,
        name: r.get(2)?,
        created_at: time(r.get(3)?)?,
    })
}

pub fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let hash: Vec<u8> = r.get(1)?;
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        secret_hash: hash
            .try_into()
            .map_err(|_| conv("bad API key hash".into()))?,
        subject: r.get(2)?,
        account: r.get(3)?,
        name: r.get(4)?,
        created_at: time(r.get(5)?)?,
        locked: r.get(6)?,
    })
}

pub fn signing_key_from_row(r: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.get(0)?,
        private_key: WrappedMaterial {
            wrapping_key: r.get(1)?,
            bytes: r.get(2)?,
        },
        created_at: time(r.get(3)?)?,
    })
}

/// The event as a CADF document (what export and query will return).
pub fn cadf_json(e: &AuditEvent) -> String {
    let time = e
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    serde_json::json!({
        "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
        "eventType": "activity",
        "id": e.id.to_string(),
        "eventTime": time,
        "action": e.action,
        "outcome": e.outcome.as_str(),
        "reason": {"reasonCode": e.reason_code, "reasonType": e.reason},
        "initiator": {
            "id": e.initiator.id,
            "typeURI": "service/security/account/user",
            "host": {"address": e.initiator.address},
        },
        "target": {
            "id": e.target,
            "typeURI": "kms/secrets",
            "instance": e.instance,
        },
        "observer": {"name": "keyward"},
        "requestData": {"requestId": e.request_id},
        "responseData": {"keyState": e.key_state, "keyVersion": e.key_version},
    })
    .to_string()
}

pub fn sql_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict
        }
        rusqlite::Error::FromSqlConversionFailure(..) | rusqlite::Error::InvalidColumnType(..) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}
