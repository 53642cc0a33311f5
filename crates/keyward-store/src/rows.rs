//! Mapping between domain records and SQLite rows. Times are stored as Unix nanoseconds so they
//! round-trip exactly (record signatures cover them).

use keyward_core::{
    ApiKeyRecord, InstanceRecord, KeyKind, KeyRecord, KeyState, KeyVersion, SigningKeyRecord,
    StoreError, WrappedMaterial,
};
use rusqlite::Row;
use time::OffsetDateTime;

// Column lists are macros so SQL statements can be built with `concat!` at compile time: the hot
// path then hands SQLite's statement cache a static string instead of formatting one per call.
macro_rules! key_columns {
    () => {
        "id, instance_id, kind, name, description, state, imported, key_ring, expiration, bits, \
         current_version, current_version_id, revision, created_at, created_by, updated_at, \
         state_changed_at, last_rotated_at, deleted_at, deleted_by, signature"
    };
}
macro_rules! key_columns_k {
    () => {
        "k.id, k.instance_id, k.kind, k.name, k.description, k.state, k.imported, k.key_ring, \
         k.expiration, k.bits, k.current_version, k.current_version_id, k.revision, k.created_at, \
         k.created_by, k.updated_at, k.state_changed_at, k.last_rotated_at, k.deleted_at, \
         k.deleted_by, k.signature"
    };
}
macro_rules! version_columns {
    () => {
        "key_id, number, id, created_at, wrapping_key, material, signature"
    };
}
macro_rules! version_columns_v {
    () => {
        "v.key_id, v.number, v.id, v.created_at, v.wrapping_key, v.material, v.signature"
    };
}
pub(crate) use {key_columns, key_columns_k, version_columns, version_columns_v};

/// Number of columns in `key_columns!()`.
pub const KEY_COLUMN_COUNT: usize = 21;

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
    version_from_row_at(r, 0)
}

/// A version from the columns starting at `at` (after a joined key's columns).
pub fn version_from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<KeyVersion> {
    Ok(KeyVersion {
        key_id: parse(r.get(at)?)?,
        number: r.get(at + 1)?,
        id: parse(r.get(at + 2)?)?,
        created_at: time(r.get(at + 3)?)?,
        material: WrappedMaterial {
            wrapping_key: r.get(at + 4)?,
            bytes: r.get(at + 5)?,
        },
        signature: r.get(at + 6)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split(',').map(|c| c.trim().to_owned()).collect()
    }

    #[test]
    fn qualified_column_lists_match_the_plain_ones() {
        let plain = names(key_columns!());
        assert_eq!(plain.len(), KEY_COLUMN_COUNT);
        let qualified: Vec<String> = plain.iter().map(|c| format!("k.{c}")).collect();
        assert_eq!(names(key_columns_k!()), qualified);
        let v: Vec<String> = names(version_columns!())
            .iter()
            .map(|c| format!("v.{c}"))
            .collect();
        assert_eq!(names(version_columns_v!()), v);
    }
}
