//! Key Protect API v2 wire types: the JSON bodies, media types and headers of IBM Key Protect, as
//! the `keyprotect` SDK models them. Shared by the Keyward server and `keyward-client`, so the two
//! cannot drift. Serialization lives here and nowhere deeper: domain types are not `Serialize`.
//!
//! Field names follow the wire exactly (camelCase, `keyRingID`, `interval_month`), hence the
//! renames.

use serde::{Deserialize, Serialize};

/// Media types Key Protect uses.
pub mod media {
    /// A key resource (create, get, metadata, list).
    pub const KEY: &str = "application/vnd.ibm.kms.key+json";
    /// A key action body (wrap, unwrap, rewrap, rotate).
    pub const KEY_ACTION: &str = "application/vnd.ibm.kms.key_action+json";
    /// An error collection.
    pub const ERROR: &str = "application/vnd.ibm.kms.error+json";
    /// A key version collection.
    pub const KEY_VERSION: &str = "application/vnd.ibm.kms.key_version+json";
    /// Key and instance policies.
    pub const POLICY: &str = "application/vnd.ibm.kms.policy+json";
    /// Key rings.
    pub const KEY_RING: &str = "application/vnd.ibm.kms.key_ring+json";
    /// The allowed IP port answer.
    pub const ALLOWED_IP_METADATA: &str = "application/vnd.ibm.kms.allowed_ip_metadata+json";
    /// KMIP adapters.
    pub const KMIP_ADAPTER: &str = "application/vnd.ibm.kms.kmip_adapter+json";
    /// KMIP client certificates.
    pub const KMIP_CLIENT_CERTIFICATE: &str =
        "application/vnd.ibm.kms.kmip_client_certificate+json";
    /// KMIP objects.
    pub const KMIP_OBJECT: &str = "application/vnd.ibm.kms.kmip_object+json";
}

mod actions;
mod audit;
pub mod events;
pub mod iam;
mod kmip;
mod policies;
pub mod registrations;
mod secret;
pub use actions::{ActionError, KeyAction};
pub use audit::*;
pub use kmip::*;
pub use policies::*;
pub use secret::SecretText;

/// Lower-case hex (audit hashes, webhook signatures), a digit at a time: `format!("{b:02x}")`
/// per byte was about 2 % of the server's CPU with an audit export sink on.
pub fn hex(bytes: &[u8]) -> String {
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0x0f));
    }
    s
}

/// Header names.
pub mod headers {
    /// The instance the request is for.
    pub const INSTANCE: &str = "bluemix-instance";
    /// `return=representation` or `return=minimal`.
    pub const PREFER: &str = "prefer";
    /// Key ring of the request.
    pub const KEY_RING: &str = "x-kms-key-ring";
    /// Total number of keys (HEAD /api/v2/keys).
    pub const KEY_TOTAL: &str = "x-kms-key-total";
    /// The same total under the name the SDKs' documentation uses.
    pub const KEY_TOTAL_DOCUMENTED: &str = "key-total";
    /// Correlation id echoed back.
    pub const CORRELATION_ID: &str = "correlation-id";
    /// Request id.
    pub const REQUEST_ID: &str = "x-request-id";
}

/// Collection metadata on every collection body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionMetadata {
    /// Media type of the resources.
    pub collection_type: String,
    /// Number of resources in this body.
    pub collection_total: u64,
    /// Total matching (lists with `totalCount=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_count: Option<u64>,
    /// The search a key listing ran (`search=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_query: Option<SearchQuery>,
    /// Audit events up to this position were pruned from the database after archiving: they
    /// are not in this listing, but in the operator's audit archive (`keyward audit verify`
    /// walks it; `archive_dir` in the server's `[audit]` section says where).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_through: Option<u64>,
}

/// How a key listing's `search` was understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// What was searched for.
    pub query: String,
    /// `name`, `alias`.
    pub scopes: Vec<String>,
    /// Inverted.
    pub not: bool,
    /// Whole-string match.
    pub exact: bool,
}

/// A collection body: `{"metadata": ..., "resources": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection<T> {
    /// Collection metadata.
    pub metadata: CollectionMetadata,
    /// The resources.
    pub resources: Vec<T>,
}

impl<T> Collection<T> {
    /// A collection of `resources` of media type `collection_type`.
    pub fn new(collection_type: &str, resources: Vec<T>) -> Self {
        Collection {
            metadata: CollectionMetadata {
                collection_type: collection_type.to_owned(),
                collection_total: resources.len() as u64,
                total_count: None,
                search_query: None,
                archived_through: None,
            },
            resources,
        }
    }
}

/// The create-key request resource.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreate {
    /// Optional; `application/vnd.ibm.kms.key+json`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Key name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `true` for a standard key, `false` (default) for a root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extractable: Option<bool>,
    /// Base64 key material to import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SecretText>,
    /// RFC 3339 expiration date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    /// Key ring.
    #[serde(rename = "keyRingID", default, skip_serializing_if = "Option::is_none")]
    pub key_ring_id: Option<String>,
    /// Rotation policy (`keys_with_policy_overrides`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicyIn>,
    /// Dual-authorization delete policy (`keys_with_policy_overrides`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_auth_delete: Option<DualAuthPolicyIn>,
    /// Aliases to give the key at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliases: Option<Vec<String>>,
    /// Secure import: the import token's nonce, AES-GCM-sealed under the material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_nonce: Option<String>,
    /// Secure import: the GCM IV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    /// Secure import: `RSAES_OAEP_SHA_256` (default) or `RSAES_OAEP_SHA_1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

/// Algorithm metadata of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlgorithmMetadata {
    /// Bits, as a string ("256").
    pub bit_length: String,
    /// Mode ("CBC_PAD" on Key Protect; informational).
    pub mode: String,
}

/// A key version reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionRef {
    /// Version id.
    pub id: String,
    /// When the version was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
}

/// Dual authorization status of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DualAuthDelete {
    /// Whether dual authorization is required to delete.
    pub enabled: bool,
    /// Whether a first identity has set the key for deletion (only when enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_set_for_deletion: Option<bool>,
    /// When that authorization lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_expiration: Option<String>,
}

/// A key as Key Protect returns it (not `Clone`: a standard key's `payload` is its material).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// `application/vnd.ibm.kms.key+json`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Key id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Numeric state.
    pub state: u8,
    /// Expiration date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    /// Standard (`true`) or root key.
    pub extractable: bool,
    /// The key's CRN.
    pub crn: String,
    /// Whether the material was imported.
    pub imported: bool,
    /// Key ring.
    #[serde(rename = "keyRingID")]
    pub key_ring_id: String,
    /// Creation date.
    pub creation_date: String,
    /// Creator.
    pub created_by: String,
    /// `AES`.
    pub algorithm_type: String,
    /// Algorithm metadata.
    pub algorithm_metadata: AlgorithmMetadata,
    /// Bits.
    pub algorithm_bit_size: u32,
    /// Mode.
    pub algorithm_mode: String,
    /// Last update.
    pub last_update_date: String,
    /// Last rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotate_date: Option<String>,
    /// Current version.
    pub key_version: KeyVersionRef,
    /// Dual authorization.
    pub dual_auth_delete: DualAuthDelete,
    /// Whether it is deleted.
    pub deleted: bool,
    /// Deletion date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    /// Who deleted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
    /// Aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Rotation policy, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicyView>,
    /// Until when a deleted key can be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_expiration_date: Option<String>,
    /// Whether a deleted key can be restored now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_allowed: Option<bool>,
    /// Whether a deleted key can be purged now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_allowed: Option<bool>,
    /// From when a deleted key can be purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_allowed_from: Option<String>,
    /// When a deleted key is purged automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_scheduled_on: Option<String>,
    /// Base64 material: standard keys only, on GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SecretText>,
}

/// Body of wrap.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapRequest {
    /// Base64 DEK; absent to have one generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretText>,
    /// Additional authenticated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<Vec<String>>,
}

/// Body of unwrap and rewrap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwrapRequest {
    /// Base64 ciphertext from wrap.
    pub ciphertext: String,
    /// Additional authenticated data (as given to wrap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aad: Option<Vec<String>>,
}

/// Body of rotate.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateRequest {
    /// New base64 material, for imported keys (encrypted to the import token when
    /// `encryptedNonce` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<SecretText>,
    /// Secure import: the import token's nonce, AES-GCM-sealed under the material.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted_nonce: Option<String>,
    /// Secure import: the GCM IV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<String>,
    /// Secure import: `RSAES_OAEP_SHA_256` (default) or `RSAES_OAEP_SHA_1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_algorithm: Option<String>,
}

/// An import token, as `POST` and `GET /api/v2/import_token` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportTokenView {
    /// Lifetime in seconds.
    pub expiration: u32,
    /// Retrievals allowed.
    pub max_allowed_retrievals: u32,
    /// Creation date.
    pub creation_date: String,
    /// Expiry date.
    pub expiration_date: String,
    /// Retrievals left.
    pub remaining_retrievals: u32,
    /// `GET` only: the transit public key, base64 of its PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// `GET` only: the nonce to seal, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Body of `POST /api/v2/import_token`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportTokenRequest {
    /// Lifetime in seconds (300 to 86400; default 600). Signed so bad values are named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<f64>,
    /// Retrievals allowed (1 to 500; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed_retrievals: Option<f64>,
}

/// Response of wrap.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WrapResponse {
    /// The generated DEK (only when none was sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<SecretText>,
    /// Base64 ciphertext.
    pub ciphertext: String,
    /// The version that wrapped it.
    pub key_version: KeyVersionRef,
}

/// Response of unwrap.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnwrapResponse {
    /// Base64 DEK.
    pub plaintext: SecretText,
    /// The version that had wrapped it.
    pub key_version: KeyVersionRef,
    /// When that version is not the latest: the DEK wrapped by the latest version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    /// The latest version, when `ciphertext` is present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrapped_key_version: Option<KeyVersionRef>,
}

/// Response of rewrap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RewrapResponse {
    /// Base64 ciphertext under the latest version.
    pub ciphertext: String,
    /// The version of the ciphertext that was sent.
    pub key_version: KeyVersionRef,
    /// The latest version, which sealed `ciphertext`.
    pub rewrapped_key_version: KeyVersionRef,
}

/// One error reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReason {
    /// Machine-readable code, e.g. `KEY_NOT_FOUND_ERR`.
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
    /// HTTP status.
    pub status: u16,
    /// Where to read more.
    pub more_info: String,
}

/// One error resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResource {
    /// Summary: status text and message.
    pub error_msg: String,
    /// Reasons (absent from Key Protect's allowedIP refusal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<ErrorReason>,
}

/// The IAM token response. Its `Debug` output hides both tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// An opaque, single-use refresh token (`kwr.…`, valid 30 days) for `grant_type=refresh_token`.
    /// A credential: never log it.
    pub refresh_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds to expiry: the JWT's `exp - iat`.
    pub expires_in: i64,
    /// Expiry, Unix seconds: the JWT's `exp`.
    pub expiration: i64,
    /// `ibm openid`.
    pub scope: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
    }

    #[test]
    fn token_response_debug_hides_the_tokens() {
        let t = TokenResponse {
            access_token: "eyJsecret".into(),
            refresh_token: "kwr.secret".into(),
            token_type: "Bearer".into(),
            expires_in: 3600,
            expiration: 1,
            scope: "ibm openid".into(),
        };
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn key_create_reads_key_protects_field_names() {
        let body = r#"{"type":"application/vnd.ibm.kms.key+json","name":"k","extractable":false,
                       "keyRingID":"default","expirationDate":"2030-01-01T00:00:00Z","payload":"AAAA"}"#;
        let k: KeyCreate = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(k.key_ring_id.as_deref(), Some("default"));
        assert_eq!(k.expiration_date.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert_eq!(k.extractable, Some(false));
    }

    /// See: issue 18, item 13. DEKs and imported material were `String`s with derived `Debug`
    /// (and `Clone`): a `{:?}` of a body printed them.
    #[test]
    fn bodies_carrying_key_material_never_show_it_in_debug() {
        const DEK: &str = "c2VjcmV0LWRlay1tYXRlcmlhbA==";
        let wrap: WrapRequest =
            serde_json::from_str(&format!(r#"{{"plaintext":"{DEK}"}}"#)).unwrap_or_default();
        assert_eq!(wrap.plaintext.as_ref().map(SecretText::expose), Some(DEK));
        let unwrapped = UnwrapResponse {
            plaintext: DEK.into(),
            key_version: KeyVersionRef {
                id: "v".into(),
                creation_date: None,
            },
            ciphertext: None,
            rewrapped_key_version: None,
        };
        let generated = WrapResponse {
            plaintext: Some(DEK.into()),
            ciphertext: "ct".into(),
            key_version: KeyVersionRef {
                id: "v".into(),
                creation_date: None,
            },
        };
        let create = KeyCreate {
            payload: Some(DEK.into()),
            ..KeyCreate::default()
        };
        let rotate = RotateRequest {
            payload: Some(DEK.into()),
            ..RotateRequest::default()
        };
        for shown in [
            format!("{wrap:?}"),
            format!("{unwrapped:?}"),
            format!("{generated:?}"),
            format!("{create:?}"),
            format!("{rotate:?}"),
        ] {
            assert!(!shown.contains(DEK), "{shown}");
            assert!(shown.contains("SecretText(..)"), "{shown}");
        }
        // On the wire they are plain strings still.
        assert!(
            serde_json::to_string(&unwrapped)
                .unwrap_or_default()
                .contains(DEK)
        );
    }

    #[test]
    fn unwrap_response_omits_rewrap_fields_when_absent() {
        let r = UnwrapResponse {
            plaintext: "p".into(),
            key_version: KeyVersionRef {
                id: "v".into(),
                creation_date: None,
            },
            ciphertext: None,
            rewrapped_key_version: None,
        };
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(text, r#"{"plaintext":"p","keyVersion":{"id":"v"}}"#);
    }
}
