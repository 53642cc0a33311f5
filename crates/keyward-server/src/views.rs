//! Domain records to Key Protect wire types, and wire values (base64, dates) to domain values.

use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use keyward_api::{
    AlgorithmMetadata, DualAuthDelete, Key, KeyVersionRef, RotationPolicyView, media,
};
use keyward_core::{KeyKind, KeyRecord, KeyState, KeyVersion, LifecycleConfig, Secret};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// Standard base64 that accepts input with or without padding.
const B64_IN: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as standard base64 (what Key Protect returns).
pub fn b64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

/// Decodes a base64 field into a secret; the error names the field, never its value.
pub fn secret_from_b64(field: &str, value: &str) -> Result<Secret, ApiError> {
    B64_IN
        .decode(value.trim())
        .map(Secret::new)
        .map_err(|_| ApiError::bad_request("BAD_BODY_ERR", format!("{field}: not valid base64")))
}

/// Decodes a base64 field that is not secret (ciphertexts).
pub fn bytes_from_b64(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    B64_IN
        .decode(value.trim())
        .map_err(|_| ApiError::bad_request("BAD_BODY_ERR", format!("{field}: not valid base64")))
}

pub use keyward_runtime::wire::date;

/// Parses an RFC 3339 date field.
pub fn parse_date(field: &str, value: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        ApiError::bad_request("BAD_BODY_ERR", format!("{field}: not an RFC 3339 date"))
    })
}

/// The key's CRN, IBM-shaped.
pub fn crn(region: &str, account: &str, key: &KeyRecord) -> String {
    format!(
        "crn:v1:keyward:private:kms:{region}:a/{account}:{}:key:{}",
        key.instance, key.id
    )
}

/// What a key view needs besides the key: where it lives and the lifecycle windows.
#[derive(Debug, Clone, Copy)]
pub struct ViewCtx<'a> {
    /// Region for CRNs.
    pub region: &'a str,
    /// Account for CRNs.
    pub account: &'a str,
    /// Restore and purge windows.
    pub lifecycle: &'a LifecycleConfig,
}

/// A key as Key Protect returns it, with `payload` for a standard key's GET.
pub fn key_view(ctx: ViewCtx<'_>, key: &KeyRecord, payload: Option<&Secret>) -> Key {
    let version_date = key.last_rotated_at.unwrap_or(key.created_at);
    let now = OffsetDateTime::now_utc();
    let life = ctx.lifecycle;
    let deleted = key.deleted_at.filter(|_| key.state == KeyState::Destroyed);
    let dual = key.dual_auth_delete.as_ref().is_some_and(|d| d.enabled);
    let authorized = key
        .deletion_authorized
        .as_ref()
        .filter(|a| dual && now < a.at + life.dual_auth_window);
    Key {
        type_: media::KEY.to_owned(),
        id: key.id.to_string(),
        name: key.name.clone(),
        description: key.description.clone(),
        state: key.state.code(),
        expiration_date: key.expiration.map(date),
        extractable: key.kind == KeyKind::Standard,
        crn: crn(ctx.region, ctx.account, key),
        imported: key.imported,
        key_ring_id: key.key_ring.clone(),
        creation_date: date(key.created_at),
        created_by: key.created_by.clone(),
        algorithm_type: "AES".to_owned(),
        algorithm_metadata: AlgorithmMetadata {
            bit_length: key.bits.to_string(),
            mode: "GCM".to_owned(),
        },
        algorithm_bit_size: u32::from(key.bits),
        algorithm_mode: "GCM".to_owned(),
        last_update_date: date(key.updated_at),
        last_rotate_date: key.last_rotated_at.map(date),
        key_version: KeyVersionRef {
            id: key.current_version_id.to_string(),
            creation_date: Some(date(version_date)),
        },
        dual_auth_delete: DualAuthDelete {
            enabled: dual,
            key_set_for_deletion: dual.then_some(authorized.is_some()),
            auth_expiration: authorized.map(|a| date(a.at + life.dual_auth_window)),
        },
        deleted: deleted.is_some(),
        deletion_date: key.deleted_at.map(date),
        deleted_by: key.deleted_by.clone(),
        aliases: key.aliases.clone(),
        rotation: key.rotation.as_ref().map(|r| RotationPolicyView {
            enabled: r.enabled,
            interval_month: r.interval_month,
        }),
        restore_expiration_date: deleted.map(|d| date(d + life.restore_window)),
        restore_allowed: deleted.map(|d| now < d + life.restore_window),
        purge_allowed: deleted.map(|d| now >= d + life.purge_wait),
        purge_allowed_from: deleted.map(|d| date(d + life.purge_wait)),
        purge_scheduled_on: deleted.map(|d| date(d + life.auto_purge_after)),
        payload: payload.map(|p| keyward_api::SecretText::new(b64(p.expose()))),
    }
}

/// A version reference for the versions list.
pub fn version_view(v: &KeyVersion) -> KeyVersionRef {
    KeyVersionRef {
        id: v.id.to_string(),
        creation_date: Some(date(v.created_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_milliseconds_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        assert_eq!(date(t), "2023-11-14T22:13:20.123Z");
        assert!(parse_date("expirationDate", "2030-01-01T00:00:00Z").is_ok());
        assert!(parse_date("expirationDate", "tomorrow").is_err());
    }

    #[test]
    fn base64_errors_name_the_field_not_the_value() {
        let err = secret_from_b64("plaintext", "not*base64!").err();
        let shown = format!("{err:?}");
        assert!(
            shown.contains("plaintext") && !shown.contains("not*base64!"),
            "{shown}"
        );
        assert!(secret_from_b64("plaintext", "AAAA").is_ok_and(|s| s.len() == 3));
        assert!(
            secret_from_b64("plaintext", "AAA").is_ok_and(|s| s.len() == 2),
            "unpadded accepted"
        );
    }
}
