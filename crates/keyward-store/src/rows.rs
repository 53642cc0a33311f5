//! Mapping between domain records and SQLite rows. Times are stored as Unix nanoseconds so they
//! round-trip exactly (record signatures cover them).

use keyward_core::{
    AliasRecord, ApiKeyRecord, DeletionAuthorization, DualAuthPolicy, ImportTokenRecord,
    InstancePolicy, InstanceRecord, KeyKind, KeyRecord, KeyRingRecord, KeyState, KeyVersion,
    PolicyKind, PolicyMeta, RotationPolicy, SigningKeyRecord, StoreError, WrappedMaterial,
};
use rusqlite::Row;

use crate::columns::{Bad, Columns};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

// Column lists are macros so SQL statements can be built with `concat!` at compile time: the hot
// path then hands SQLite's statement cache a static string instead of formatting one per call.
macro_rules! key_columns {
    () => {
        "id, instance_id, kind, name, description, state, imported, key_ring, expiration, bits, \
         current_version, current_version_id, revision, created_at, created_by, updated_at, \
         state_changed_at, last_rotated_at, deleted_at, deleted_by, signature, rotation, \
         dual_auth, deletion_set_by, deletion_set_at, purged_at, next_rotation_at"
    };
}
macro_rules! key_columns_k {
    () => {
        "k.id, k.instance_id, k.kind, k.name, k.description, k.state, k.imported, k.key_ring, \
         k.expiration, k.bits, k.current_version, k.current_version_id, k.revision, k.created_at, \
         k.created_by, k.updated_at, k.state_changed_at, k.last_rotated_at, k.deleted_at, \
         k.deleted_by, k.signature, k.rotation, k.dual_auth, k.deletion_set_by, \
         k.deletion_set_at, k.purged_at, k.next_rotation_at"
    };
}
/// The writable columns and, last, the key's aliases (comma-joined; aliases have no commas).
macro_rules! key_select {
    () => {
        concat!(
            key_columns!(),
            ", (SELECT group_concat(alias, ',' ORDER BY created_at, alias) FROM key_aliases a \
             WHERE a.key_id = keys.id)"
        )
    };
}
macro_rules! key_select_k {
    () => {
        concat!(
            key_columns_k!(),
            ", (SELECT group_concat(alias, ',' ORDER BY created_at, alias) FROM key_aliases a \
             WHERE a.key_id = k.id)"
        )
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
macro_rules! import_token_columns {
    () => {
        "instance_id, created_at, expires_at, max_retrievals, remaining, nonce, public_key, \
         wrapping_key, private_key, created_by"
    };
}
pub(crate) use import_token_columns;

pub fn import_token_from<R: Columns + ?Sized>(r: &R) -> Result<ImportTokenRecord, Bad> {
    Ok(ImportTokenRecord {
        instance: r.parsed(0)?,
        created_at: time_of(r.i64(1)?)?,
        expires_at: time_of(r.i64(2)?)?,
        max_retrievals: r.int(3)?,
        remaining: r.int(4)?,
        nonce: r.blob(5)?,
        public_key: r.blob(6)?,
        private_key: WrappedMaterial {
            wrapping_key: r.text(7)?,
            bytes: r.blob(8)?,
        },
        created_by: r.text(9)?,
    })
}

pub fn import_token_from_row(r: &Row<'_>) -> rusqlite::Result<ImportTokenRecord> {
    Ok(import_token_from(r)?)
}

pub(crate) use {
    key_columns, key_columns_k, key_select, key_select_k, version_columns, version_columns_v,
};

/// Number of columns in `key_columns!()`.
pub const KEY_COLUMN_COUNT: usize = 27;
/// Number of columns in `key_select!()`.
pub const KEY_SELECT_COUNT: usize = KEY_COLUMN_COUNT + 1;

/// Who set a policy and when, as stored (JSON, times in Unix nanoseconds).
#[derive(Serialize, Deserialize)]
struct MetaRow {
    created_at: i64,
    created_by: String,
    updated_at: i64,
    updated_by: String,
}

#[derive(Serialize, Deserialize)]
struct RotationRow {
    enabled: bool,
    interval_month: u8,
    meta: MetaRow,
}

#[derive(Serialize, Deserialize)]
struct DualAuthRow {
    enabled: bool,
    meta: MetaRow,
}

fn meta_row(m: &PolicyMeta) -> MetaRow {
    MetaRow {
        created_at: nanos(m.created_at),
        created_by: m.created_by.clone(),
        updated_at: nanos(m.updated_at),
        updated_by: m.updated_by.clone(),
    }
}

fn meta_from(m: MetaRow) -> Result<PolicyMeta, Bad> {
    Ok(PolicyMeta {
        created_at: time_of(m.created_at)?,
        created_by: m.created_by,
        updated_at: time_of(m.updated_at)?,
        updated_by: m.updated_by,
    })
}

/// The key's rotation policy as stored.
pub fn rotation_json(k: &KeyRecord) -> Option<String> {
    k.rotation.as_ref().and_then(|r| {
        serde_json::to_string(&RotationRow {
            enabled: r.enabled,
            interval_month: r.interval_month,
            meta: meta_row(&r.meta),
        })
        .ok()
    })
}

/// The key's dual-authorization policy as stored.
pub fn dual_auth_json(k: &KeyRecord) -> Option<String> {
    k.dual_auth_delete.as_ref().and_then(|d| {
        serde_json::to_string(&DualAuthRow {
            enabled: d.enabled,
            meta: meta_row(&d.meta),
        })
        .ok()
    })
}

fn json<T: for<'a> Deserialize<'a>>(s: Option<String>) -> Result<Option<T>, Bad> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Bad(e.to_string())))
        .transpose()
}

pub fn nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

pub fn opt_nanos(t: Option<OffsetDateTime>) -> Option<i64> {
    t.map(nanos)
}

/// A time from its stored Unix nanoseconds.
pub fn time_of(n: i64) -> Result<OffsetDateTime, Bad> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).map_err(|e| Bad(e.to_string()))
}

pub fn opt_time_of(n: Option<i64>) -> Result<Option<OffsetDateTime>, Bad> {
    n.map(time_of).transpose()
}

pub fn time(n: i64) -> rusqlite::Result<OffsetDateTime> {
    Ok(time_of(n)?)
}

/// A key from the columns of `key_select!()` (the aliases last).
pub fn key_from<R: Columns + ?Sized>(r: &R) -> Result<KeyRecord, Bad> {
    let kind = match r.i64(2)? {
        0 => KeyKind::Root,
        1 => KeyKind::Standard,
        k => return Err(Bad(format!("bad key kind {k}"))),
    };
    let state = r.i64(5)?;
    Ok(KeyRecord {
        id: r.parsed(0)?,
        instance: r.parsed(1)?,
        kind,
        name: r.text(3)?,
        description: r.opt_text(4)?,
        state: KeyState::from_code(state).ok_or_else(|| Bad(format!("bad state {state}")))?,
        imported: r.bool(6)?,
        key_ring: r.text(7)?,
        expiration: opt_time_of(r.opt_i64(8)?)?,
        bits: r.int(9)?,
        current_version: r.int(10)?,
        current_version_id: r.parsed(11)?,
        revision: r.int(12)?,
        created_at: time_of(r.i64(13)?)?,
        created_by: r.text(14)?,
        updated_at: time_of(r.i64(15)?)?,
        state_changed_at: time_of(r.i64(16)?)?,
        last_rotated_at: opt_time_of(r.opt_i64(17)?)?,
        deleted_at: opt_time_of(r.opt_i64(18)?)?,
        deleted_by: r.opt_text(19)?,
        signature: r.blob(20)?,
        rotation: json::<RotationRow>(r.opt_text(21)?)?
            .map(|r| {
                Ok::<_, Bad>(RotationPolicy {
                    enabled: r.enabled,
                    interval_month: r.interval_month,
                    meta: meta_from(r.meta)?,
                })
            })
            .transpose()?,
        dual_auth_delete: json::<DualAuthRow>(r.opt_text(22)?)?
            .map(|d| {
                Ok::<_, Bad>(DualAuthPolicy {
                    enabled: d.enabled,
                    meta: meta_from(d.meta)?,
                })
            })
            .transpose()?,
        deletion_authorized: match (r.opt_text(23)?, r.opt_i64(24)?) {
            (Some(by), Some(at)) => Some(DeletionAuthorization {
                by,
                at: time_of(at)?,
            }),
            _ => None,
        },
        purged_at: opt_time_of(r.opt_i64(25)?)?,
        next_rotation_at: opt_time_of(r.opt_i64(26)?)?,
        aliases: r
            .opt_text(27)?
            .map(|a| a.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

pub fn key_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(key_from(r)?)
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
pub fn version_from_at<R: Columns + ?Sized>(r: &R, at: usize) -> Result<KeyVersion, Bad> {
    Ok(KeyVersion {
        key_id: r.parsed(at)?,
        number: r.int(at + 1)?,
        id: r.parsed(at + 2)?,
        created_at: time_of(r.i64(at + 3)?)?,
        material: WrappedMaterial {
            wrapping_key: r.text(at + 4)?,
            bytes: r.blob(at + 5)?,
        },
        signature: r.blob(at + 6)?,
    })
}

pub fn version_from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<KeyVersion> {
    Ok(version_from_at(r, at)?)
}

pub fn instance_from<R: Columns + ?Sized>(r: &R) -> Result<InstanceRecord, Bad> {
    Ok(InstanceRecord {
        id: r.parsed(0)?,
        account: r.text(1)?,
        name: r.text(2)?,
        created_at: time_of(r.i64(3)?)?,
    })
}

pub fn instance_from_row(r: &Row<'_>) -> rusqlite::Result<InstanceRecord> {
    Ok(instance_from(r)?)
}

pub fn api_key_from<R: Columns + ?Sized>(r: &R) -> Result<ApiKeyRecord, Bad> {
    Ok(ApiKeyRecord {
        id: r.text(0)?,
        secret_hash: r
            .blob(1)?
            .try_into()
            .map_err(|_| Bad::new("bad API key hash"))?,
        subject: r.text(2)?,
        account: r.text(3)?,
        name: r.text(4)?,
        created_at: time_of(r.i64(5)?)?,
        locked: r.bool(6)?,
    })
}

pub fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(api_key_from(r)?)
}

pub fn signing_key_from<R: Columns + ?Sized>(r: &R) -> Result<SigningKeyRecord, Bad> {
    Ok(SigningKeyRecord {
        kid: r.text(0)?,
        private_key: WrappedMaterial {
            wrapping_key: r.text(1)?,
            bytes: r.blob(2)?,
        },
        created_at: time_of(r.i64(3)?)?,
    })
}

pub fn signing_key_from_row(r: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(signing_key_from(r)?)
}

pub fn alias_from<R: Columns + ?Sized>(r: &R) -> Result<AliasRecord, Bad> {
    Ok(AliasRecord {
        instance: r.parsed(0)?,
        alias: r.text(1)?,
        key_id: r.parsed(2)?,
        created_at: time_of(r.i64(3)?)?,
        created_by: r.text(4)?,
        signature: r.blob(5)?,
    })
}

pub fn alias_from_row(r: &Row<'_>) -> rusqlite::Result<AliasRecord> {
    Ok(alias_from(r)?)
}

pub fn key_ring_from<R: Columns + ?Sized>(r: &R) -> Result<KeyRingRecord, Bad> {
    Ok(KeyRingRecord {
        instance: r.parsed(0)?,
        id: r.text(1)?,
        created_at: time_of(r.i64(2)?)?,
        created_by: r.text(3)?,
    })
}

pub fn key_ring_from_row(r: &Row<'_>) -> rusqlite::Result<KeyRingRecord> {
    Ok(key_ring_from(r)?)
}

/// Columns: instance_id, policy_type, enabled, attributes, created_at, created_by, updated_at,
/// updated_by, signature.
pub fn instance_policy_from<R: Columns + ?Sized>(r: &R) -> Result<InstancePolicy, Bad> {
    let kind = r.text(1)?;
    let kind = PolicyKind::from_name(&kind).ok_or_else(|| Bad(format!("bad policy {kind}")))?;
    let attributes = r.opt_text(3)?;
    Ok(InstancePolicy {
        instance: r.parsed(0)?,
        enabled: r.bool(2)?,
        setting: InstancePolicy::setting_from_json(kind, attributes.as_deref()).map_err(Bad)?,
        meta: PolicyMeta {
            created_at: time_of(r.i64(4)?)?,
            created_by: r.text(5)?,
            updated_at: time_of(r.i64(6)?)?,
            updated_by: r.text(7)?,
        },
        signature: r.blob(8)?,
    })
}

pub fn instance_policy_from_row(r: &Row<'_>) -> rusqlite::Result<InstancePolicy> {
    Ok(instance_policy_from(r)?)
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
        assert!(key_select!().starts_with(key_columns!()));
        let v: Vec<String> = names(version_columns!())
            .iter()
            .map(|c| format!("v.{c}"))
            .collect();
        assert_eq!(names(version_columns_v!()), v);
    }
}
