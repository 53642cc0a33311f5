//! The KMIP protocol's side of the KMIP service: a client authenticated by the certificate it
//! presented, and the session each KMIP operation runs in. The protocol crate (keyward-kmip)
//! parses messages and decides what an operation does; what it may touch goes through here:
//! - every operation runs in the pipeline as the adapter's client ([`Caller::kmip_client`]),
//!   authorized on the instance and audited (operation, object, certificate fingerprint);
//! - an object is read only within the client's adapter and used only once its signature
//!   verifies;
//! - material is sealed under the adapter's root key (AAD: the object's id) and opened through
//!   it, so the root key's state governs every object: disabled or deleted, nothing opens;
//!   purged, nothing ever will.

use keyward_crypto::Secret;
use uuid::Uuid;

use super::*;
use crate::access::Target;
use crate::op::Op;
use crate::pipeline::{Actor, Ctx};
use crate::service::seal;
use crate::{Action, Caller, Initiator, KeyError, Verified};

/// The AAD every sealed KMIP object carries beside its id.
const OBJECT_AAD: &str = "keyward/kmip-object/v1";
/// Most bytes of material one object holds (a certificate chain, an RSA-4096 private key).
pub const MAX_KMIP_MATERIAL_BYTES: usize = 64 * 1024;
/// Most bytes of an object's encoded attributes.
pub const MAX_KMIP_ATTRIBUTES_BYTES: usize = 64 * 1024;

/// A KMIP client: the adapter its certificate is registered on, and that certificate.
#[derive(Debug, Clone)]
pub struct KmipClient {
    caller: Caller,
    adapter: Verified<KmipAdapterRecord>,
    certificate: Verified<KmipCertificateRecord>,
}

impl KmipClient {
    /// The adapter.
    pub fn adapter(&self) -> &KmipAdapterRecord {
        &self.adapter
    }

    /// The certificate the client presented.
    pub fn certificate(&self) -> &KmipCertificateRecord {
        &self.certificate
    }

    /// The same client for its next request.
    pub fn for_request(&self, request_id: String) -> KmipClient {
        KmipClient {
            caller: self.caller.with_request_id(request_id),
            ..self.clone()
        }
    }
}

/// How a KMIP client is named in audit events: its certificate's SHA-256.
pub fn kmip_subject(fingerprint: &[u8; 32]) -> String {
    let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    format!("kmip-cert-sha256:{hex}")
}

/// An object to create: its metadata; the material is sealed by [`KmipSession::create`].
#[derive(Debug, Clone, Default)]
pub struct NewKmipObject {
    /// Its id, when the caller chose it (a key pair's halves name each other); a new one when
    /// `None`.
    pub id: Option<Uuid>,
    /// KMIP Object Type.
    pub object_type: u32,
    /// KMIP State.
    pub state: u8,
    /// First Name.
    pub name: Option<String>,
    /// Cryptographic Algorithm.
    pub algorithm: Option<u32>,
    /// Cryptographic Length.
    pub length: Option<i32>,
    /// Object Group.
    pub object_group: Option<String>,
    /// The other attributes, encoded by the protocol layer.
    pub attributes: String,
}

/// A refused KMIP client, as its audit event names it: never written into an instance.
struct Refused<'a> {
    subject: String,
    address: Option<&'a str>,
    request_id: &'a str,
}

impl Actor for Refused<'_> {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: self.subject.clone(),
            address: self.address.map(str::to_owned),
        }
    }
    fn request_id(&self) -> &str {
        self.request_id
    }
    fn audit_instance(&self) -> Option<String> {
        None
    }
    fn check(&self, operation: crate::Operation, _: Target<'_>) -> Result<(), KeyError> {
        Err(KeyError::Forbidden(operation))
    }
}

/// Why a client certificate was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct AuthFailure(String);

impl crate::pipeline::Failure for AuthFailure {
    fn reason_code(&self) -> u16 {
        401
    }
}

impl From<KeyError> for AuthFailure {
    fn from(e: KeyError) -> Self {
        AuthFailure(e.to_string())
    }
}

impl KmipService {
    /// The client whose certificate has SHA-256 `fingerprint`: the certificate must be registered
    /// on an adapter (of `instance`, when the client named one), and both records must verify.
    /// `None` when no adapter knows the certificate, or when it is registered in several
    /// instances and the client did not say which.
    pub async fn authenticate(
        &self,
        fingerprint: &[u8; 32],
        instance: Option<InstanceId>,
        address: Option<String>,
        request_id: String,
    ) -> Result<Option<KmipClient>, KmipError> {
        let mut found = self
            .store
            .kmip_certificates_by_fingerprint(fingerprint)
            .await?;
        if let Some(i) = instance {
            found.retain(|c| c.peek_unverified().instance == i);
        }
        let cert = match (found.pop(), found.is_empty()) {
            (Some(cert), true) => cert,
            _ => return Ok(None),
        };
        let (instance, adapter_id) = {
            let c = cert.peek_unverified();
            (c.instance, c.adapter_id)
        };
        let Some(adapter) = self.store.kmip_adapter(instance, adapter_id).await? else {
            return Ok(None);
        };
        let adapter = Verified::check_adapter(adapter, instance, &**self.keys.custody())?;
        let certificate = Verified::check_certificate(cert, &adapter, &**self.keys.custody())?;
        if certificate.fingerprint != *fingerprint {
            return Err(KmipError::IntegrityFailure);
        }
        let caller = Caller::kmip_client(&adapter, kmip_subject(fingerprint), request_id, address);
        Ok(Some(KmipClient {
            caller,
            adapter,
            certificate,
        }))
    }

    /// Records a refused client certificate in the audit trail (outside any instance).
    pub async fn record_refusal(
        &self,
        op: &'static Op,
        fingerprint: &[u8; 32],
        address: Option<&str>,
        request_id: &str,
        reason: String,
    ) -> Result<(), KmipError> {
        let actor = Refused {
            subject: kmip_subject(fingerprint),
            address,
            request_id,
        };
        let refused: Result<(), AuthFailure> = self
            .keys
            .pipe()
            .run(op, &actor, None, async |_| Err(AuthFailure(reason)))
            .await;
        match refused {
            Err(AuthFailure(_)) | Ok(()) => Ok(()),
        }
    }

    /// Runs one KMIP operation `op` for `client`: authorized on the instance, audited, `body`
    /// working through the [`KmipSession`].
    pub async fn run<T>(
        &self,
        client: &KmipClient,
        op: &'static Op,
        body: impl AsyncFnOnce(&mut KmipSession<'_, '_>) -> Result<T, KmipError>,
    ) -> Result<T, KmipError> {
        self.keys
            .pipe()
            .run_in(op, &client.caller, Target::Instance, async |ctx| {
                let mut session = KmipSession {
                    service: self,
                    client,
                    ctx,
                };
                body(&mut session).await
            })
            .await
    }
}

/// What one KMIP operation may do with its adapter's objects.
pub struct KmipSession<'s, 'c> {
    service: &'s KmipService,
    client: &'s KmipClient,
    ctx: &'s mut Ctx<'c>,
}

impl KmipSession<'_, '_> {
    /// Names the object acted on in the audit event.
    pub fn target(&mut self, id: Uuid) {
        self.ctx.target(id);
    }

    /// An object of the client's adapter, its signature verified.
    pub async fn object(&mut self, id: Uuid) -> Result<KmipObjectRecord, KmipError> {
        self.ctx.target(id);
        let adapter = self.client.adapter();
        let object = self
            .service
            .store
            .kmip_object(adapter.instance, adapter.id, id)
            .await?
            .ok_or(KmipError::ObjectNotFound)?;
        let object = Verified::check(Unverified::new(object), &**self.service.keys.custody())?;
        if object.instance != adapter.instance || object.adapter_id != adapter.id {
            return Err(KmipError::IntegrityFailure);
        }
        Ok(object.into_inner())
    }

    /// The ids of the adapter's objects matching `filter`.
    pub async fn locate(&mut self, filter: &KmipObjectFilter) -> Result<Vec<Uuid>, KmipError> {
        let adapter = self.client.adapter();
        Ok(self
            .service
            .store
            .locate_kmip_objects(adapter.instance, adapter.id, filter)
            .await?)
    }

    /// An object's material, opened through the adapter's root key: refused while the root key
    /// is not in a state that allows unwrap (disabled, deleted), impossible once it is purged.
    pub async fn material(&mut self, object: &KmipObjectRecord) -> Result<Secret, KmipError> {
        let sealed = object
            .material
            .as_deref()
            .ok_or(KmipError::ObjectNotFound)?;
        let id = object.id.to_string();
        let op = self.ctx.op();
        let out = self
            .service
            .keys
            .open(
                self.ctx,
                op,
                &self.client.caller,
                self.client.adapter().crk_id,
                sealed,
                &[OBJECT_AAD.to_owned(), id],
            )
            .await?;
        Ok(out.plaintext)
    }

    /// Creates an object holding `material`, sealed under the adapter's root key's current
    /// version and signed; its audit event is committed with it.
    pub async fn create(
        &mut self,
        new: NewKmipObject,
        material: &Secret,
    ) -> Result<KmipObjectRecord, KmipError> {
        let now = self.service.clock.now();
        let client = self.client;
        let mut object = KmipObjectRecord {
            instance: client.adapter().instance,
            adapter_id: client.adapter().id,
            id: new.id.unwrap_or_else(Uuid::new_v4),
            object_type: new.object_type,
            state: new.state,
            created_at: now,
            created_by_cert_id: client.certificate().id,
            created_by: client.caller.subject().to_owned(),
            updated_at: None,
            updated_by_cert_id: None,
            updated_by: None,
            destroyed_at: None,
            destroyed_by_cert_id: None,
            destroyed_by: None,
            name: new.name,
            algorithm: new.algorithm,
            length: new.length,
            object_group: new.object_group,
            attributes: new.attributes,
            material: None,
            signature: Vec::new(),
        };
        check_sizes(&object, material.len())?;
        object.material = Some(self.seal(object.id, material).await?);
        object.signature = self
            .service
            .keys
            .custody()
            .sign_record(&object.signed_bytes())?;
        let event = self.ctx.record_on(object.id)?;
        self.service
            .store
            .insert_kmip_object(&object, &event)
            .await?;
        Ok(object)
    }

    /// Stores a changed object (state, attributes; material `None` to destroy it), signed
    /// again, with its audit event.
    pub async fn update(
        &mut self,
        mut object: KmipObjectRecord,
    ) -> Result<KmipObjectRecord, KmipError> {
        let client = self.client;
        let now = self.service.clock.now();
        object.updated_at = Some(now);
        object.updated_by_cert_id = Some(client.certificate().id);
        object.updated_by = Some(client.caller.subject().to_owned());
        if KMIP_DESTROYED_STATES.contains(&object.state) && object.destroyed_at.is_none() {
            object.destroyed_at = Some(now);
            object.destroyed_by_cert_id = Some(client.certificate().id);
            object.destroyed_by = Some(client.caller.subject().to_owned());
            object.material = None;
        }
        check_sizes(&object, 0)?;
        object.signature = self
            .service
            .keys
            .custody()
            .sign_record(&object.signed_bytes())?;
        let event = self.ctx.record_on(object.id)?;
        if self
            .service
            .store
            .update_kmip_object(&object, &event)
            .await?
        {
            Ok(object)
        } else {
            Err(KmipError::ObjectNotFound)
        }
    }

    async fn seal(&mut self, id: Uuid, material: &Secret) -> Result<Vec<u8>, KmipError> {
        let entry = self
            .service
            .keys
            .root_key(
                self.ctx,
                &self.client.caller,
                self.client.adapter().crk_id,
                Action::Wrap,
            )
            .await?;
        let id = id.to_string();
        Ok(seal(
            &entry.material,
            &entry.current,
            &[OBJECT_AAD, &id],
            material,
        )?)
    }
}

fn check_sizes(object: &KmipObjectRecord, material: usize) -> Result<(), KmipError> {
    if material > MAX_KMIP_MATERIAL_BYTES {
        return Err(KmipError::InvalidField(format!(
            "the object's material is larger than {MAX_KMIP_MATERIAL_BYTES} bytes"
        )));
    }
    if object.attributes.len() > MAX_KMIP_ATTRIBUTES_BYTES {
        return Err(KmipError::InvalidField(format!(
            "the object's attributes are larger than {MAX_KMIP_ATTRIBUTES_BYTES} bytes"
        )));
    }
    Ok(())
}
