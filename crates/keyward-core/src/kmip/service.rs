//! `KmipService`: KMIP adapters, client certificates and objects managed through the REST API,
//! each verb run in the key service's operation pipeline (authorized on the instance first,
//! audited with its write or after its read).

use std::sync::Arc;

use uuid::Uuid;

use super::*;
use crate::access::Target;
use crate::op;
use crate::pipeline::Ctx;
use crate::service::Clock;
use crate::{Caller, KeyError, KeyId, KeyKind, KeyService, KeyState, Unverified, Verified};

/// The KMIP management service: adapters, certificates and objects, with their checks and audit
/// events. Cheap to clone.
#[derive(Clone)]
pub struct KmipService {
    pub(super) store: Arc<dyn KmipStore>,
    pub(super) keys: KeyService,
    pub(super) clock: Arc<dyn Clock>,
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
                let list = list
                    .into_iter()
                    .map(|a| Ok(self.verify_adapter(caller, a)?.into_inner()))
                    .collect::<Result<Vec<_>, KmipError>>()?;
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
                Ok(adapter.into_inner())
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
                let list = list
                    .into_iter()
                    .map(|c| Ok(self.verify_certificate(&adapter, c)?.into_inner()))
                    .collect::<Result<Vec<_>, KmipError>>()?;
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
                Ok(found.into_inner())
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
                // Destroyed: the sealed material goes with it, and the record is signed again.
                object.material = None;
                object.signature = self.keys.custody().sign_record(&object.signed_bytes())?;
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
    ) -> Result<Verified<KmipAdapterRecord>, KmipError> {
        let found = match reference.parse::<Uuid>() {
            Ok(id) => self.store.kmip_adapter(caller.instance(), id).await?,
            Err(_) => {
                self.store
                    .kmip_adapter_by_name(caller.instance(), reference)
                    .await?
            }
        };
        let adapter = found.ok_or(KmipError::AdapterNotFound)?;
        self.verify_adapter(caller, adapter)
    }

    async fn load_certificate(
        &self,
        caller: &Caller,
        adapter: &Verified<KmipAdapterRecord>,
        reference: &str,
    ) -> Result<Verified<KmipCertificateRecord>, KmipError> {
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
        self.verify_certificate(adapter, cert)
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

    /// An adapter of the caller's instance, verified: an altered record or one of another
    /// instance is an integrity failure; an unavailable custody backend stays a 503.
    fn verify_adapter(
        &self,
        caller: &Caller,
        a: Unverified<KmipAdapterRecord>,
    ) -> Result<Verified<KmipAdapterRecord>, KmipError> {
        Ok(Verified::check_adapter(
            a,
            caller.instance(),
            &**self.keys.custody(),
        )?)
    }

    /// A certificate of `adapter`, verified (see [`KmipService::verify_adapter`]).
    fn verify_certificate(
        &self,
        adapter: &Verified<KmipAdapterRecord>,
        c: Unverified<KmipCertificateRecord>,
    ) -> Result<Verified<KmipCertificateRecord>, KmipError> {
        Ok(Verified::check_certificate(
            c,
            adapter,
            &**self.keys.custody(),
        )?)
    }
}
