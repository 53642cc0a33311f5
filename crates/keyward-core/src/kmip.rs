//! KMIP adapters, their client certificates and the KMIP objects they manage, as Key Protect's
//! REST API exposes them (`/api/v2/kmip_adapters`). The KMIP protocol listener that creates objects
//! is a later step; it will use [`KmipStore::insert_kmip_object`] and the same service.
//!
//! An adapter names the root key (CRK) its objects are protected by, so its record is signed by
//! custody like a key record; a certificate decides which KMIP client may use an adapter, so it is
//! signed too. Both are verified before use; a failure is [`KmipError::IntegrityFailure`].

use std::sync::Arc;

use keyward_crypto::Canonical;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::Target;
use crate::op;
use crate::pipeline::Ctx;
use crate::service::Clock;
use crate::{
    AuditEvent, Caller, CustodyError, InstanceId, KeyError, KeyId, KeyKind, KeyService, KeyState,
    StoreError,
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
    ) -> Result<(Vec<KmipAdapterRecord>, u64), StoreError>;
    /// An adapter by id.
    async fn kmip_adapter(
        &self,
        instance: InstanceId,
        id: Uuid,
    ) -> Result<Option<KmipAdapterRecord>, StoreError>;
    /// An adapter by name.
    async fn kmip_adapter_by_name(
        &self,
        instance: InstanceId,
        name: &str,
    ) -> Result<Option<KmipAdapterRecord>, StoreError>;
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
    ) -> Result<(Vec<KmipCertificateRecord>, u64), StoreError>;
    /// A certificate of an adapter by id.
    async fn kmip_certificate(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        id: Uuid,
    ) -> Result<Option<KmipCertificateRecord>, StoreError>;
    /// A certificate of an adapter by name.
    async fn kmip_certificate_by_name(
        &self,
        instance: InstanceId,
        adapter: Uuid,
        name: &str,
    ) -> Result<Option<KmipCertificateRecord>, StoreError>;
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
    /// Replaces an object's state and updated/destroyed fields; `false` when there was none.
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

/// The KMIP management service: adapters, certificates and objects, with their checks and audit
/// events. Cheap to clone.
#[derive(Clone)]
pub struct KmipService {
    store: Arc<dyn KmipStore>,
    keys: KeyService,
    clock: Arc<dyn Clock>,
}

impl KmipService {
    /// A service over `store`, checking root keys and appending read audit events through `keys`.
    pub fn new(store: Arc<dyn KmipStore>, keys: KeyService, clock: Arc<dyn Clock>) -> Self {
        KmipService { store, keys, clock }
    }

    /// Creates an adapter.
    pub async fn create_adapter(
        &self,
        caller: &Caller,
        spec: NewKmipAdapter,
    ) -> Result<KmipAdapterRecord, KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_CREATE, caller, Target::Instance, async |ctx| {
                self.create_adapter_in(ctx, caller, spec).await
            })
            .await
    }

    async fn create_adapter_in(
        &self,
        ctx: &mut Ctx<'_>,
        caller: &Caller,
        spec: NewKmipAdapter,
    ) -> Result<KmipAdapterRecord, KmipError> {
        let name = match spec.name {
            Some(n) => {
                validate_name(&n)?;
                n
            }
            None => generated_name("kmip_adapter_"),
        };
        if let Some(d) = &spec.description
            && d.chars().count() > MAX_KMIP_DESCRIPTION_CHARS
        {
            return Err(KmipError::InvalidField(format!(
                "description: at most {MAX_KMIP_DESCRIPTION_CHARS} characters"
            )));
        }
        match spec.profile.as_deref() {
            Some(KMIP_PROFILE_NATIVE) => {}
            Some(_) => {
                return Err(KmipError::InvalidField(format!(
                    "profile: only {KMIP_PROFILE_NATIVE} is supported"
                )));
            }
            None => {
                return Err(KmipError::InvalidField(format!(
                    "profile: required ({KMIP_PROFILE_NATIVE})"
                )));
            }
        }
        let crk = spec
            .crk_id
            .filter(|c| !c.is_empty())
            .ok_or_else(|| KmipError::InvalidField("profile_data.crk_id: required".into()))?;
        let crk_id = self
            .check_crk(caller, &crk, spec.allow_expiring_key)
            .await?;
        let now = self.clock.now();
        let mut adapter = KmipAdapterRecord {
            instance: caller.instance(),
            id: Uuid::new_v4(),
            name,
            description: spec.description.filter(|d| !d.is_empty()),
            profile: KMIP_PROFILE_NATIVE.to_owned(),
            crk_id,
            created_at: now,
            created_by: caller.subject().to_owned(),
            updated_at: now,
            updated_by: caller.subject().to_owned(),
            signature: Vec::new(),
        };
        adapter.signature = self.keys.custody().sign_record(&adapter.signed_bytes())?;
        let event = ctx.record_on(adapter.id)?;
        match self
            .store
            .insert_kmip_adapter(&adapter, MAX_KMIP_ADAPTERS, &event)
            .await?
        {
            AdapterInsert::Inserted => Ok(adapter),
            AdapterInsert::NameExists => Err(KmipError::AdapterNameExists),
            AdapterInsert::QuotaReached => Err(KmipError::Quota(format!(
                "an instance has at most {MAX_KMIP_ADAPTERS} KMIP adapters"
            ))),
        }
    }

    /// The root key an adapter may use: an active root key of the caller's instance, without an
    /// expiration date unless `allow_expiring`.
    async fn check_crk(
        &self,
        caller: &Caller,
        reference: &str,
        allow_expiring: bool,
    ) -> Result<KeyId, KmipError> {
        // The caller passed the KMIP gate; reading the key it names is part of that operation
        // (KmipAdapterManager holds no key role of its own).
        let system = caller.as_system();
        let id = self.keys.resolve(&system, reference).await?;
        let key = self.keys.key_metadata(&system, id).await?;
        if key.kind != KeyKind::Root {
            return Err(KmipError::CrkNotRoot);
        }
        let state = match (key.state, key.expiration) {
            (KeyState::Active, Some(exp)) if exp <= self.clock.now() => KeyState::Deactivated,
            (s, _) => s,
        };
        if state != KeyState::Active {
            return Err(KmipError::CrkNotActive(state));
        }
        if key.expiration.is_some() && !allow_expiring {
            return Err(KmipError::InvalidField(
                "profile_data.crk_id: the key has an expiration date; pass allowExpiringKey=true \
                 to use it"
                    .into(),
            ));
        }
        Ok(id)
    }

    /// A page of the instance's adapters, optionally of one root key (id or alias), and the total.
    pub async fn adapters(
        &self,
        caller: &Caller,
        crk: Option<&str>,
        page: Page,
    ) -> Result<(Vec<KmipAdapterRecord>, u64), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_LIST, caller, Target::Instance, async |_| {
                let crk = match crk {
                    None => None,
                    Some(r) => match self.keys.resolve(caller, r).await {
                        Ok(id) => Some(id),
                        // No such key: no adapter uses it.
                        Err(KeyError::NotFound) => return Ok((Vec::new(), 0)),
                        Err(e) => return Err(e.into()),
                    },
                };
                let (list, total) = self
                    .store
                    .kmip_adapters(caller.instance(), crk, page.limit, page.offset)
                    .await?;
                for a in &list {
                    self.verify_adapter(caller, a)?;
                }
                Ok((list, total))
            })
            .await
    }

    /// An adapter by id or name.
    pub async fn adapter(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> Result<KmipAdapterRecord, KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_READ, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, reference).await?;
                ctx.target(adapter.id);
                Ok(adapter)
            })
            .await
    }

    /// Deletes an adapter and its certificates; refused while it has objects not destroyed.
    pub async fn delete_adapter(&self, caller: &Caller, reference: &str) -> Result<(), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_DELETE, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, reference).await?;
                let event = ctx.record_on(adapter.id)?;
                match self
                    .store
                    .delete_kmip_adapter(caller.instance(), adapter.id, &event)
                    .await?
                {
                    AdapterDeletion::Deleted => Ok(()),
                    AdapterDeletion::NotFound => Err(KmipError::AdapterNotFound),
                    AdapterDeletion::HasObjects => Err(KmipError::AdapterHasObjects),
                }
            })
            .await
    }

    /// Registers a client certificate on an adapter.
    pub async fn create_certificate(
        &self,
        caller: &Caller,
        adapter: &str,
        spec: NewKmipCertificate,
    ) -> Result<KmipCertificateRecord, KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_CREATE, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let name = match spec.name {
                    Some(n) => {
                        validate_name(&n)?;
                        n
                    }
                    None => generated_name("kmip_cert_"),
                };
                let pem = spec
                    .certificate
                    .ok_or_else(|| KmipError::InvalidField("certificate: required".into()))?;
                let der = validate_certificate(&pem, self.clock.now())?;
                let mut cert = KmipCertificateRecord {
                    instance: caller.instance(),
                    adapter_id: adapter.id,
                    id: Uuid::new_v4(),
                    name,
                    certificate: pem,
                    fingerprint: keyward_crypto::sha256(&der),
                    created_at: self.clock.now(),
                    created_by: caller.subject().to_owned(),
                    signature: Vec::new(),
                };
                cert.signature = self.keys.custody().sign_record(&cert.signed_bytes())?;
                let event = ctx.record_on(cert.id)?;
                match self
                    .store
                    .insert_kmip_certificate(&cert, MAX_KMIP_CERTIFICATES, &event)
                    .await?
                {
                    CertificateInsert::Inserted => Ok(cert),
                    CertificateInsert::AdapterNotFound => Err(KmipError::AdapterNotFound),
                    CertificateInsert::NameExists => Err(KmipError::CertificateNameExists),
                    CertificateInsert::CertificateExists => Err(KmipError::CertificateExists),
                    CertificateInsert::QuotaReached => Err(KmipError::Quota(format!(
                        "a KMIP adapter has at most {MAX_KMIP_CERTIFICATES} client certificates"
                    ))),
                }
            })
            .await
    }

    /// A page of an adapter's certificates and the total.
    pub async fn certificates(
        &self,
        caller: &Caller,
        adapter: &str,
        page: Page,
    ) -> Result<(Vec<KmipCertificateRecord>, u64), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_LIST, caller, Target::Instance, async |_| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let (list, total) = self
                    .store
                    .kmip_certificates(caller.instance(), adapter.id, page.limit, page.offset)
                    .await?;
                for c in &list {
                    self.verify_certificate(caller, &adapter, c)?;
                }
                Ok((list, total))
            })
            .await
    }

    /// A certificate of an adapter, by id or name.
    pub async fn certificate(
        &self,
        caller: &Caller,
        adapter: &str,
        reference: &str,
    ) -> Result<KmipCertificateRecord, KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_READ, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let found = self.load_certificate(caller, &adapter, reference).await?;
                ctx.target(found.id);
                Ok(found)
            })
            .await
    }

    /// Deletes a certificate of an adapter.
    pub async fn delete_certificate(
        &self,
        caller: &Caller,
        adapter: &str,
        reference: &str,
    ) -> Result<(), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_DELETE, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let cert = self.load_certificate(caller, &adapter, reference).await?;
                let event = ctx.record_on(cert.id)?;
                if self
                    .store
                    .delete_kmip_certificate(caller.instance(), adapter.id, cert.id, &event)
                    .await?
                {
                    Ok(())
                } else {
                    Err(KmipError::CertificateNotFound)
                }
            })
            .await
    }

    /// A page of an adapter's KMIP objects in `states` (1–4 when empty) and the total.
    pub async fn objects(
        &self,
        caller: &Caller,
        adapter: &str,
        states: &[u8],
        page: Page,
    ) -> Result<(Vec<KmipObjectRecord>, u64), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_LIST, caller, Target::Instance, async |_| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let states: &[u8] = if states.is_empty() {
                    &[1, 2, 3, 4]
                } else {
                    states
                };
                Ok(self
                    .store
                    .kmip_objects(
                        caller.instance(),
                        adapter.id,
                        states,
                        page.limit,
                        page.offset,
                    )
                    .await?)
            })
            .await
    }

    /// A KMIP object of an adapter, by id.
    pub async fn object(
        &self,
        caller: &Caller,
        adapter: &str,
        id: &str,
    ) -> Result<KmipObjectRecord, KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_READ, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let found = self.load_object(caller, &adapter, id).await?;
                ctx.target(found.id);
                Ok(found)
            })
            .await
    }

    /// Destroys a KMIP object (state 5); an Active one only with `force`.
    pub async fn delete_object(
        &self,
        caller: &Caller,
        adapter: &str,
        id: &str,
        force: bool,
    ) -> Result<(), KmipError> {
        self.keys
            .pipe()
            .run_in(&op::KMIP_DELETE, caller, Target::Instance, async |ctx| {
                let adapter = self.load_adapter(caller, adapter).await?;
                let mut object = self.load_object(caller, &adapter, id).await?;
                if KMIP_DESTROYED_STATES.contains(&object.state) {
                    return Err(KmipError::ObjectNotFound);
                }
                if object.state == KMIP_STATE_ACTIVE && !force {
                    return Err(KmipError::ObjectActive);
                }
                let now = self.clock.now();
                object.state = 5;
                object.updated_at = Some(now);
                object.updated_by = Some(caller.subject().to_owned());
                object.destroyed_at = Some(now);
                object.destroyed_by = Some(caller.subject().to_owned());
                let event = ctx.record_on(object.id)?;
                if self.store.update_kmip_object(&object, &event).await? {
                    Ok(())
                } else {
                    Err(KmipError::ObjectNotFound)
                }
            })
            .await
    }

    async fn load_adapter(
        &self,
        caller: &Caller,
        reference: &str,
    ) -> Result<KmipAdapterRecord, KmipError> {
        let found = match reference.parse::<Uuid>() {
            Ok(id) => self.store.kmip_adapter(caller.instance(), id).await?,
            Err(_) => {
                self.store
                    .kmip_adapter_by_name(caller.instance(), reference)
                    .await?
            }
        };
        let adapter = found.ok_or(KmipError::AdapterNotFound)?;
        self.verify_adapter(caller, &adapter)?;
        Ok(adapter)
    }

    async fn load_certificate(
        &self,
        caller: &Caller,
        adapter: &KmipAdapterRecord,
        reference: &str,
    ) -> Result<KmipCertificateRecord, KmipError> {
        let found = match reference.parse::<Uuid>() {
            Ok(id) => {
                self.store
                    .kmip_certificate(caller.instance(), adapter.id, id)
                    .await?
            }
            Err(_) => {
                self.store
                    .kmip_certificate_by_name(caller.instance(), adapter.id, reference)
                    .await?
            }
        };
        let cert = found.ok_or(KmipError::CertificateNotFound)?;
        self.verify_certificate(caller, adapter, &cert)?;
        Ok(cert)
    }

    async fn load_object(
        &self,
        caller: &Caller,
        adapter: &KmipAdapterRecord,
        id: &str,
    ) -> Result<KmipObjectRecord, KmipError> {
        let id = id.parse::<Uuid>().map_err(|_| KmipError::ObjectNotFound)?;
        self.store
            .kmip_object(caller.instance(), adapter.id, id)
            .await?
            .ok_or(KmipError::ObjectNotFound)
    }

    fn verify_adapter(&self, caller: &Caller, a: &KmipAdapterRecord) -> Result<(), KmipError> {
        self.keys
            .custody()
            .verify_record(&a.signed_bytes(), &a.signature)?;
        if a.instance != caller.instance() {
            return Err(KmipError::IntegrityFailure);
        }
        Ok(())
    }

    fn verify_certificate(
        &self,
        caller: &Caller,
        adapter: &KmipAdapterRecord,
        c: &KmipCertificateRecord,
    ) -> Result<(), KmipError> {
        self.keys
            .custody()
            .verify_record(&c.signed_bytes(), &c.signature)?;
        if c.instance != caller.instance() || c.adapter_id != adapter.id {
            return Err(KmipError::IntegrityFailure);
        }
        Ok(())
    }
}

fn generated_name(prefix: &str) -> String {
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
fn validate_name(name: &str) -> Result<(), KmipError> {
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
