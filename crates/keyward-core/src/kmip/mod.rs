//! KMIP adapters, their client certificates and the KMIP objects they manage, as Key Protect's
//! REST API exposes them (`/api/v2/kmip_adapters`). The KMIP protocol listener that creates objects
//! is a later step; it will use [`KmipStore::insert_kmip_object`] and the same service.
//!
//! An adapter names the root key (CRK) its objects are protected by, so its record is signed by
//! custody like a key record; a certificate decides which KMIP client may use an adapter, so it is
//! signed too. Both are verified before use; a failure is [`KmipError::IntegrityFailure`].
//!
//! This module holds the records, the [`KmipStore`] seam, the errors and the input rules;
//! `service.rs` the [`KmipService`] that runs each management verb in the operation pipeline.

mod client;
mod service;

pub use client::{
    KmipClient, KmipSession, MAX_KMIP_ATTRIBUTES_BYTES, MAX_KMIP_MATERIAL_BYTES, NewKmipObject,
    kmip_subject,
};
pub use service::KmipService;

use keyward_crypto::Canonical;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    AuditEvent, CustodyError, InstanceId, KeyError, KeyId, KeyState, StoreError, Unverified,
};

/// The only adapter profile Key Protect has.
pub const KMIP_PROFILE_NATIVE: &str = "native_1.0";
/// Most adapters per instance.
pub const MAX_KMIP_ADAPTERS: u32 = 200;
/// Most client certificates per adapter.
pub const MAX_KMIP_CERTIFICATES: u32 = 200;
const KMIP_NAME_CHARS: std::ops::RangeInclusive<usize> = 2..=40;
const MAX_KMIP_DESCRIPTION_CHARS: usize = 240;
/// KMIP object states that count as gone: Destroyed (5) and Destroyed Compromised (6).
pub const KMIP_DESTROYED_STATES: [u8; 2] = [5, 6];
/// KMIP object state Active (2).
pub const KMIP_STATE_ACTIVE: u8 = 2;

/// A KMIP adapter of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipAdapterRecord {
    /// The instance.
    pub instance: InstanceId,
    /// Its id.
    pub id: Uuid,
    /// Its name, unique in the instance and never a UUID.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// The profile (`native_1.0`).
    pub profile: String,
    /// The root key protecting the adapter's objects.
    pub crk_id: KeyId,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Who changed it last.
    pub updated_by: String,
    /// Custody signature over [`KmipAdapterRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl KmipAdapterRecord {
    /// The bytes the signature covers: instance, id, name, profile and root key.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/kmip_adapter/v1")
            .field(self.instance.as_bytes())
            .field(self.id.as_bytes())
            .field(self.name.as_bytes())
            .field(self.profile.as_bytes())
            .field(self.crk_id.as_bytes());
        c.finish()
    }
}

/// A KMIP client certificate registered on an adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipCertificateRecord {
    /// The instance.
    pub instance: InstanceId,
    /// The adapter.
    pub adapter_id: Uuid,
    /// Its id.
    pub id: Uuid,
    /// Its name, unique in the adapter.
    pub name: String,
    /// The certificate, PEM, as uploaded.
    pub certificate: String,
    /// SHA-256 of the certificate's DER: a certificate is registered at most once per instance.
    pub fingerprint: [u8; 32],
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Custody signature over [`KmipCertificateRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

impl KmipCertificateRecord {
    /// The bytes the signature covers: instance, adapter, id, fingerprint and certificate.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/kmip_certificate/v1")
            .field(self.instance.as_bytes())
            .field(self.adapter_id.as_bytes())
            .field(self.id.as_bytes())
            .field(&self.fingerprint)
            .field(self.certificate.as_bytes());
        c.finish()
    }
}

/// A KMIP managed object of an adapter. Created only over the KMIP protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmipObjectRecord {
    /// The instance.
    pub instance: InstanceId,
    /// The adapter.
    pub adapter_id: Uuid,
    /// Its id.
    pub id: Uuid,
    /// KMIP object type (2: Symmetric Key).
    pub object_type: u32,
    /// KMIP state: 1 Pre-Active, 2 Active, 3 Deactivated, 4 Compromised, 5 Destroyed,
    /// 6 Destroyed Compromised.
    pub state: u8,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// The client certificate that created it.
    pub created_by_cert_id: Uuid,
    /// The subject that created it.
    pub created_by: String,
    /// Last change.
    pub updated_at: Option<OffsetDateTime>,
    /// The client certificate that changed it last.
    pub updated_by_cert_id: Option<Uuid>,
    /// The subject that changed it last.
    pub updated_by: Option<String>,
    /// When it was destroyed.
    pub destroyed_at: Option<OffsetDateTime>,
    /// The client certificate that destroyed it.
    pub destroyed_by_cert_id: Option<Uuid>,
    /// The subject that destroyed it.
    pub destroyed_by: Option<String>,
    /// Its first Name attribute, for Locate by name.
    pub name: Option<String>,
    /// Its Cryptographic Algorithm (KMIP enumeration), for Locate.
    pub algorithm: Option<u32>,
    /// Its Cryptographic Length in bits, for Locate.
    pub length: Option<i32>,
    /// Its Object Group, for Locate.
    pub object_group: Option<String>,
    /// Its other attributes, as the KMIP listener encodes them (JSON); `{}` when it has none.
    pub attributes: String,
    /// Its material (key bytes, DER, secret data) sealed under the adapter's root key, with the
    /// object's id as AAD; `None` once destroyed (or for an object created before the listener).
    pub material: Option<Vec<u8>>,
    /// Custody signature over [`KmipObjectRecord::signed_bytes`]; empty for an object created
    /// before the listener (such an object has no material and is never used over KMIP).
    pub signature: Vec<u8>,
}

impl KmipObjectRecord {
    /// The bytes the signature covers: everything that decides who may use the object and how
    /// (its place, type, state, attributes and sealed material), not the audit fields.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/kmip_object/v1")
            .field(self.instance.as_bytes())
            .field(self.adapter_id.as_bytes())
            .field(self.id.as_bytes())
            .field(&self.object_type.to_be_bytes())
            .field(&[self.state])
            .field(self.name.as_deref().unwrap_or_default().as_bytes())
            .field(&self.algorithm.unwrap_or_default().to_be_bytes())
            .field(&self.length.unwrap_or_default().to_be_bytes())
            .field(self.object_group.as_deref().unwrap_or_default().as_bytes())
            .field(self.attributes.as_bytes())
            .field(self.material.as_deref().unwrap_or_default());
        c.finish()
    }
}

/// What a KMIP Locate asks for: every field set must match; oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmipObjectFilter {
    /// Object Type.
    pub object_type: Option<u32>,
    /// State.
    pub state: Option<u8>,
    /// Name (exact, case-sensitive: the first Name attribute).
    pub name: Option<String>,
    /// Cryptographic Algorithm.
    pub algorithm: Option<u32>,
    /// Cryptographic Length.
    pub length: Option<i32>,
    /// Object Group.
    pub object_group: Option<String>,
    /// Most ids returned.
    pub limit: u32,
    /// Matching objects skipped first.
    pub offset: u32,
}

/// Outcome of inserting an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterInsert {
    /// Inserted.
    Inserted,
    /// Another adapter of the instance has the name.
    NameExists,
    /// The instance has as many adapters as it may.
    QuotaReached,
}

/// Outcome of inserting a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateInsert {
    /// Inserted.
    Inserted,
    /// The adapter is gone.
    AdapterNotFound,
    /// Another certificate of the adapter has the name.
    NameExists,
    /// The same certificate is registered in the instance.
    CertificateExists,
    /// The adapter has as many certificates as it may.
    QuotaReached,
}

/// Outcome of deleting an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterDeletion {
    /// Deleted, with its certificates (and destroyed objects).
    Deleted,
    /// No such adapter.
    NotFound,
    /// It has KMIP objects that are not destroyed.
    HasObjects,
}

/// Durable storage of KMIP records, separate from [`crate::Store`]. Writes commit their audit
/// event in the same transaction.
#[async_trait::async_trait]
pub trait KmipStore: Send + Sync {
    /// A page of an instance's adapters (oldest first), optionally only those of one root key,
    /// and the total matching.
    async fn kmip_adapters(
        &self,
        instance: InstanceId,
        crk: Option<KeyId>,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipAdapterRecord>>, u64), StoreError>;
    /// An adapter by id.
    async fn kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError>;
    /// An adapter by name.
    async fn kmip_adapter_by_name(
        &self,
        instance: InstanceId,
        name: &str,
    ) -> Result<Option<Unverified<KmipAdapterRecord>>, StoreError>;
    /// Inserts an adapter unless its name is taken or the instance has `max_per_instance`.
    async fn insert_kmip_adapter(
        &self,
        adapter: &KmipAdapterRecord,
        max_per_instance: u32,
        event: &AuditEvent,
    ) -> Result<AdapterInsert, StoreError>;
    /// Deletes an adapter with its certificates, unless it has objects not destroyed (checked in
    /// the same transaction).
    async fn delete_kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<AdapterDeletion, StoreError>;

    /// A page of an adapter's certificates (oldest first) and the total.
    async fn kmip_certificates(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<Unverified<KmipCertificateRecord>>, u64), StoreError>;
    /// A certificate of an adapter by id.
    async fn kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError>;
    /// A certificate of an adapter by name.
    async fn kmip_certificate_by_name(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        name: &str,
    ) -> Result<Option<Unverified<KmipCertificateRecord>>, StoreError>;
    /// Inserts a certificate, checking in the same transaction that the adapter exists, the name
    /// and the certificate are unique and the adapter has fewer than `max_per_adapter`.
    async fn insert_kmip_certificate(
        &self,
        cert: &KmipCertificateRecord,
        max_per_adapter: u32,
        event: &AuditEvent,
    ) -> Result<CertificateInsert, StoreError>;
    /// Deletes a certificate; `false` when there was none.
    async fn delete_kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;

    /// A page of an adapter's objects in `states` (oldest first) and the total matching.
    async fn kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        states: &[u8],
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<KmipObjectRecord>, u64), StoreError>;
    /// An object of an adapter.
    async fn kmip_object(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<KmipObjectRecord>, StoreError>;
    /// Inserts an object (the KMIP listener's Create and Register).
    async fn insert_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// The ids of an adapter's objects matching `filter`, oldest first, after `filter.offset`,
    /// at most `filter.limit` (KMIP Locate). Served by indexes on (adapter, name) and (adapter,
    /// state, created_at).
    async fn locate_kmip_objects(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        filter: &KmipObjectFilter,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// The certificates registered with this SHA-256 fingerprint, in every instance (the KMIP
    /// listener's client authentication; at most one per instance).
    async fn kmip_certificates_by_fingerprint(
        &self,
        fingerprint: &[u8; 32],
    ) -> Result<Vec<Unverified<KmipCertificateRecord>>, StoreError>;
    /// Replaces every mutable field of an object (state, updated/destroyed fields, name,
    /// algorithm, length, group, attributes, material, signature); `false` when there was none.
    async fn update_kmip_object(
        &self,
        object: &KmipObjectRecord,
        event: &AuditEvent,
    ) -> Result<bool, StoreError>;
}

/// Why a KMIP management operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KmipError {
    /// No such adapter in the caller's instance.
    #[error("KMIP adapter not found")]
    AdapterNotFound,
    /// No such certificate on the adapter.
    #[error("KMIP client certificate not found")]
    CertificateNotFound,
    /// No such KMIP object on the adapter.
    #[error("KMIP object not found")]
    ObjectNotFound,
    /// Another adapter of the instance has this name.
    #[error("a KMIP adapter with this name exists in the instance")]
    AdapterNameExists,
    /// Another certificate of the adapter has this name.
    #[error("a client certificate with this name exists on the adapter")]
    CertificateNameExists,
    /// The certificate is already registered in the instance.
    #[error("this certificate is already registered in the instance")]
    CertificateExists,
    /// The adapter holds KMIP objects that are not destroyed.
    #[error("the KMIP adapter has KMIP objects that are not destroyed: destroy them first")]
    AdapterHasObjects,
    /// An Active KMIP object is deleted only with `force=true`.
    #[error("the KMIP object is active: deactivate it first, or delete with force=true")]
    ObjectActive,
    /// A field of the request is invalid; the message names it and says what is accepted.
    #[error("{0}")]
    InvalidField(String),
    /// A KMIP operation the protocol layer refused: its KMIP Result Reason and message.
    #[error("{1}")]
    Protocol(u32, String),
    /// A quota (adapters per instance, certificates per adapter) is reached.
    #[error("{0}")]
    Quota(String),
    /// `crk_id` names a standard key.
    #[error("crk_id: the key must be a root key (extractable: false)")]
    CrkNotRoot,
    /// `crk_id` names a key that is not active.
    #[error("crk_id: the key is in state {} and must be active", .0.code())]
    CrkNotActive(KeyState),
    /// A key service failure (the root key is not found, or its record fails its check).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored KMIP record failed its integrity check.
    #[error("stored KMIP record failed its integrity check")]
    IntegrityFailure,
    /// The custody backend failed.
    #[error(transparent)]
    Custody(CustodyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CustodyError> for KmipError {
    fn from(e: CustodyError) -> Self {
        match e {
            CustodyError::IntegrityFailure | CustodyError::UnknownWrappingKey(_) => {
                KmipError::IntegrityFailure
            }
            e => KmipError::Custody(e),
        }
    }
}

impl KmipError {
    /// The status the API answers with (also the audit event's `reasonCode`) and Key Protect's
    /// reason code for KMIP management refusals: one table for both.
    pub fn reason(&self) -> (u16, &'static str) {
        use KmipError::*;
        match self {
            AdapterNotFound => (404, "KMIP_ADAPTER_NOT_FOUND_ERR"),
            CertificateNotFound => (404, "KMIP_CERT_NOT_FOUND_ERR"),
            ObjectNotFound => (404, "KMIP_OBJECT_NOT_FOUND_ERR"),
            AdapterNameExists => (409, "KMIP_ADAPTER_NAME_NOT_UNIQUE_ERR"),
            CertificateNameExists => (409, "KMIP_CERT_NAME_NOT_UNIQUE_ERR"),
            CertificateExists => (409, "KMIP_CERT_NOT_UNIQUE_ERR"),
            AdapterHasObjects => (409, "KMIP_ADAPTER_HAS_OBJECTS_ERR"),
            ObjectActive => (409, "KMIP_OBJECT_ACTIVE_ERR"),
            CrkNotActive(_) => (409, "KEY_ACTION_INVALID_STATE_ERR"),
            InvalidField(_) => (400, "INVALID_FIELD_ERR"),
            Protocol(..) => (400, "KMIP_OPERATION_ERR"),
            Quota(_) => (400, "KMIP_ADAPTER_QUOTA_ERR"),
            CrkNotRoot => (400, "KEY_ROOT_REQ_ERR"),
            Key(e) => (e.reason_code(), "INTERNAL_SERVER_ERR"),
            IntegrityFailure => (500, "INTERNAL_SERVER_ERR"),
            Custody(CustodyError::Unavailable(_)) => (503, "INTERNAL_SERVER_ERR"),
            Custody(_) => (500, "INTERNAL_SERVER_ERR"),
            Store(StoreError::Conflict) => (409, "INTERNAL_SERVER_ERR"),
            Store(StoreError::Unavailable(_)) => (503, "INTERNAL_SERVER_ERR"),
            Store(_) => (500, "INTERNAL_SERVER_ERR"),
        }
    }

    /// The HTTP-style status of this error (the status of [`KmipError::reason`]).
    pub fn reason_code(&self) -> u16 {
        self.reason().0
    }
}

/// An adapter to create.
#[derive(Debug, Clone, Default)]
pub struct NewKmipAdapter {
    /// Name; `kmip_adapter_<random>` when absent.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Profile; only `native_1.0`.
    pub profile: Option<String>,
    /// The root key: id, CRN or alias.
    pub crk_id: Option<String>,
    /// Accept a root key with an expiration date (`allowExpiringKey=true`).
    pub allow_expiring_key: bool,
}

/// A client certificate to register.
#[derive(Debug, Clone, Default)]
pub struct NewKmipCertificate {
    /// Name; `kmip_cert_<random>` when absent.
    pub name: Option<String>,
    /// The certificate, PEM.
    pub certificate: Option<String>,
}

/// A page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Page size.
    pub limit: u32,
    /// Rows to skip.
    pub offset: u32,
}

pub(crate) fn generated_name(prefix: &str) -> String {
    let random: String = Uuid::new_v4()
        .simple()
        .to_string()
        .chars()
        .take(12)
        .collect();
    format!("{prefix}{random}")
}

/// Key Protect's adapter and certificate names: 2–40 letters, digits, `-` and `_`, never a UUID
/// (so a path segment names one adapter unambiguously).
pub(crate) fn validate_name(name: &str) -> Result<(), KmipError> {
    let ok = KMIP_NAME_CHARS.contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && Uuid::try_parse(name).is_err();
    if ok {
        Ok(())
    } else {
        Err(KmipError::InvalidField(
            "name: 2 to 40 letters, digits, '-' or '_', and not a UUID".into(),
        ))
    }
}

/// Checks an uploaded client certificate: exactly one PEM `CERTIFICATE` block (Key Protect's
/// pattern), an X.509 certificate inside with nothing after it, valid at `now`. Returns the DER.
pub fn validate_certificate(pem: &str, now: OffsetDateTime) -> Result<Vec<u8>, KmipError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let bad = |what: &str| KmipError::InvalidField(format!("certificate: {what}"));
    // Key Protect: ^\s*-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*$
    let body = pem
        .trim()
        .strip_prefix(BEGIN)
        .and_then(|r| r.strip_suffix(END))
        .ok_or_else(|| bad("must be one PEM block from -----BEGIN CERTIFICATE----- to -----END CERTIFICATE-----"))?;
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\r\n".contains(&b))
    {
        return Err(bad("must be one PEM block of base64 text"));
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|_| bad("the PEM block is not valid base64"))?;
    if block.label != "CERTIFICATE" {
        return Err(bad("must be a PEM CERTIFICATE block"));
    }
    let (rest, cert) = x509_parser::parse_x509_certificate(&block.contents)
        .map_err(|_| bad("is not an X.509 certificate"))?;
    if !rest.is_empty() {
        return Err(bad("has data after the X.509 certificate"));
    }
    let at = x509_parser::time::ASN1Time::from_timestamp(now.unix_timestamp())
        .map_err(|_| bad("cannot check the validity period"))?;
    if !cert.validity().is_valid_at(at) {
        return Err(bad("is expired or not yet valid"));
    }
    Ok(block.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_key_protect_rules() {
        assert!(validate_name("ab").is_ok());
        assert!(validate_name("kmip-adapter_1").is_ok());
        assert!(validate_name("a").is_err());
        assert!(validate_name(&"a".repeat(41)).is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("12345678-1234-4234-8234-123456789abc").is_err());
        let g = generated_name("kmip_adapter_");
        assert!(validate_name(&g).is_ok(), "{g}");
    }

    #[test]
    fn refuses_what_is_not_one_certificate() {
        let now = OffsetDateTime::now_utc();
        for pem in [
            "",
            "not pem",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAA!A\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(
                    validate_certificate(pem, now),
                    Err(KmipError::InvalidField(_))
                ),
                "{pem:?}"
            );
        }
    }
}
