//! Registrations, lifecycle events and their acknowledgements, webhook subscriptions, and
//! `actions/sync`.
//!
//! Who may do what: a registration is written (created, replaced, updated, deleted) only by a
//! service identity (a service ID or a service instance, `SERVICE_ONLY_ERR` otherwise) holding at
//! least Reader on the key, the role that lets it wrap and unwrap; only its owner (the identity
//! that created it) may change or delete it afterwards, and only the owner sees its
//! `registrationMetadata`. Events go to registration owners; only an event's recipient may read
//! or acknowledge it.

use keyward_crypto::Secret;
use time::OffsetDateTime;

use super::{Caller, KeyService, integrity, invalid};
use crate::access::Target;
use crate::lifecycle::transition;
use crate::op::{self, Op};
use crate::pipeline::{Ctx, key_target};
use crate::{
    AdopterState, EventAckRecord, EventKind, EventRecord, KeyError, KeyId, KeyKind, KeyNotice,
    KeyRecord, KeyVersionId, RegistrationChange, RegistrationFilter, RegistrationRecord, Rule,
    StoreError, SubscriptionRecord,
};

/// Longest resource CRN accepted.
const MAX_CRN_CHARS: usize = 512;
/// Longest description (Key Protect's key description limit).
const MAX_DESCRIPTION_CHARS: usize = 240;
/// Longest `registrationMetadata`, in bytes (UTF-8): with the description, a registration
/// stores at most about 5 KB a service chooses.
const MAX_METADATA_BYTES: usize = 4_096;
/// Most registrations one key may have (issue 18, item 7: a key's registrations are rows its
/// Reader services write and every delete, listing and event fan-out reads). Key Protect
/// documents no number; a resource registers once per key, and 100 is far above what one key
/// protects in practice.
pub const MAX_REGISTRATIONS_PER_KEY: u32 = 100;
/// Longest webhook URL.
const MAX_URL_CHARS: usize = 2_048;
/// Bytes of a webhook signing secret.
pub const WEBHOOK_SECRET_BYTES: usize = 32;

/// The fields of a create, replace or update request (`None`: absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrationSpec {
    /// Shown to the customer.
    pub description: Option<String>,
    /// Visible to the owner only.
    pub metadata: Option<String>,
    /// Blocks deleting the key.
    pub prevent_key_deletion: Option<bool>,
    /// The key version the resource uses (default: the current one).
    pub key_version_id: Option<String>,
}

/// A registration as a caller may see it.
#[derive(Debug, Clone)]
pub struct RegistrationView {
    /// The record; `metadata` cleared unless the caller owns it.
    pub record: RegistrationRecord,
    /// The key's name.
    pub key_name: String,
    /// When the registration's key version was created.
    pub key_version_created_at: Option<OffsetDateTime>,
    /// Events the owner has not acknowledged, oldest first.
    pub pending: Vec<EventRecord>,
}

/// Whether an IAM id names a service (a service ID or a service instance), not a person.
fn is_service(subject: &str) -> bool {
    subject.starts_with("crn-") || subject.starts_with("iam-ServiceId-")
}

/// A resource CRN: `crn:` and at least the eight segments up to the service instance, printable,
/// no `*`.
fn check_crn(crn: &str) -> Result<(), KeyError> {
    let ok = crn.starts_with("crn:")
        && crn.chars().count() <= MAX_CRN_CHARS
        && crn.split(':').count() >= 8
        && crn.chars().all(|c| c.is_ascii_graphic() && c != '*');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "resource CRN: must be a CRN of at least eight segments \
             (crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>...), printable, \
             without '*', at most {MAX_CRN_CHARS} characters"
        )))
    }
}

fn check_spec(spec: &RegistrationSpec) -> Result<(), KeyError> {
    if spec
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_CHARS)
    {
        return Err(invalid(format!(
            "description: at most {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    if spec
        .metadata
        .as_ref()
        .is_some_and(|m| m.len() > MAX_METADATA_BYTES)
    {
        return Err(invalid(format!(
            "registrationMetadata: at most {MAX_METADATA_BYTES} bytes (UTF-8)"
        )));
    }
    Ok(())
}

/// A webhook URL: `http://` or `https://`, printable, bounded.
fn check_url(url: &str) -> Result<(), KeyError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() > "https://".len()
        && url.len() <= MAX_URL_CHARS
        && url.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "url: an http:// or https:// URL of at most {MAX_URL_CHARS} printable characters"
        )))
    }
}

/// How a registration is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationWrite {
    /// A new registration (refused if the caller already has one of that resource on the key).
    Create,
    /// The caller's registration replaced: absent fields take their defaults.
    Replace,
    /// The caller's registration updated: absent fields stay as they are.
    Update,
}

impl KeyService {
    /// Registrations of one key (`key: Some`) or of the caller's instance, filtered and paged;
    /// with the total matching.
    pub async fn list_registrations(
        &self,
        caller: &Caller,
        key: Option<KeyId>,
        mut filter: RegistrationFilter,
    ) -> Result<(Vec<RegistrationView>, u64), KeyError> {
        let target = key.map(|k| k.to_string());
        self.pipe
            .run(&op::LIST_REGISTRATIONS, caller, target, async |ctx| {
                let key_record = match key {
                    Some(id) => {
                        let k = self.load(ctx, caller, id).await?;
                        // The listing's event names the key, not its state.
                        ctx.clear_key();
                        Some(k.into_inner())
                    }
                    // With `X-Kms-Key-Ring`, the registrations of that ring's keys (a role on the ring
                    // is enough), as for the key listing; without it, the whole instance's.
                    None => {
                        let target = match caller.key_ring() {
                            Some(ring) => Target::KeyRing(ring),
                            None => Target::Instance,
                        };
                        ctx.authorize(target)?;
                        filter.key_ring = caller.key_ring().map(str::to_owned);
                        None
                    }
                };
                filter.key_id = key;
                let (records, total) = self.store.registrations(caller.instance(), &filter).await?;
                let mut views = Vec::with_capacity(records.len());
                for record in records {
                    let k = match &key_record {
                        Some(k) => k.clone(),
                        // Only the key's name is shown (not covered by its signature, as before).
                        None => match self.store.key(caller.instance(), record.key_id).await? {
                            Some(k) => k.unverified_inner(),
                            None => continue,
                        },
                    };
                    views.push(self.view(caller, &k, record).await?);
                }
                Ok((views, total))
            })
            .await
    }

    async fn view(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        mut record: RegistrationRecord,
    ) -> Result<RegistrationView, KeyError> {
        if record.owner != caller.subject() {
            // registrationMetadata is the registering service's own; customers never see it.
            record.metadata = None;
        }
        let pending = self
            .store
            .pending_events(&record.owner, record.key_id)
            .await?;
        let key_version_created_at = self
            .store
            .key_version_by_id(record.key_id, record.key_version_id)
            .await?
            // A display date, not covered by a decision: read as stored.
            .map(|v| v.peek_unverified().created_at);
        Ok(RegistrationView {
            record,
            key_name: key.name.clone(),
            key_version_created_at,
            pending,
        })
    }

    /// Writes the caller's registration of `resource_crn` on a root key, as `how` says.
    pub async fn write_registration(
        &self,
        caller: &Caller,
        id: KeyId,
        resource_crn: &str,
        spec: RegistrationSpec,
        how: RegistrationWrite,
    ) -> Result<RegistrationView, KeyError> {
        let verb = match how {
            RegistrationWrite::Create => &op::CREATE_REGISTRATION,
            RegistrationWrite::Replace => &op::REPLACE_REGISTRATION,
            RegistrationWrite::Update => &op::UPDATE_REGISTRATION,
        };
        self.pipe.run(verb, caller, key_target(id), async |ctx| {
            let key = self.registrable_key(ctx, verb, caller, id).await?;
            check_crn(resource_crn)?;
            check_spec(&spec)?;
            let now = self.clock.now();
            let version = match &spec.key_version_id {
                None => None,
                Some(v) => Some(self.key_version_of(&key, v).await?),
            };
            let existing = match how {
                RegistrationWrite::Create => None,
                RegistrationWrite::Replace | RegistrationWrite::Update => {
                    let r = self
                        .store
                        .registration(id, resource_crn)
                        .await?
                        .ok_or_else(|| not_registered(resource_crn))?;
                    if r.owner != caller.subject() {
                        return Err(not_owner());
                    }
                    Some(r)
                }
            };
            let record = match (how, existing) {
                (RegistrationWrite::Update, Some(old)) => RegistrationRecord {
                    description: spec.description.or(old.description),
                    metadata: spec.metadata.or(old.metadata),
                    prevent_key_deletion: spec
                        .prevent_key_deletion
                        .unwrap_or(old.prevent_key_deletion),
                    key_version_id: version.unwrap_or(old.key_version_id),
                    updated_by: caller.subject().to_owned(),
                    updated_at: now,
                    ..old
                },
                (_, old) => RegistrationRecord {
                    instance: caller.instance(),
                    key_id: id,
                    resource_crn: resource_crn.to_owned(),
                    owner: caller.subject().to_owned(),
                    description: spec.description,
                    metadata: spec.metadata,
                    prevent_key_deletion: spec.prevent_key_deletion.unwrap_or(false),
                    key_version_id: version.unwrap_or(key.current_version_id),
                    created_at: old.as_ref().map_or(now, |o| o.created_at),
                    updated_by: caller.subject().to_owned(),
                    updated_at: now,
                    adopter_state: old.and_then(|o| o.adopter_state),
                },
            };
            ctx.note(format!(
                "resourceCrn={} preventKeyDeletion={}",
                record.resource_crn, record.prevent_key_deletion
            ));
            let event = ctx.record_key(&key, Some(record.key_version_id))?;
            match how {
                RegistrationWrite::Create => {
                    match self
                        .store
                        .insert_registration(&record, MAX_REGISTRATIONS_PER_KEY, &event)
                        .await
                    {
                        Ok(false) => {
                            return Err(KeyError::Refused(
                                Rule::TooManyRegistrations,
                                format!(
                                    "a key has at most {MAX_REGISTRATIONS_PER_KEY} \
                                     registrations: delete one first"
                                ),
                            ));
                        }
                        Err(StoreError::Conflict) => {
                            return Err(KeyError::Refused(
                                Rule::RegistrationExists,
                                format!(
                                    "a registration of {resource_crn} on this key exists: replace \
                                 (PUT) or update (PATCH) it"
                                ),
                            ));
                        }
                        r => {
                            r?;
                        }
                    }
                }
                RegistrationWrite::Replace | RegistrationWrite::Update => {
                    match self.store.update_registration(&record, &event).await? {
                        RegistrationChange::Done => {}
                        RegistrationChange::NotFound => return Err(not_registered(resource_crn)),
                        RegistrationChange::NotOwner => return Err(not_owner()),
                    }
                }
            }
            self.view(caller, &key, record).await
        })
        .await
    }

    /// Deletes the caller's registration of `resource_crn` on the key.
    pub async fn delete_registration(
        &self,
        caller: &Caller,
        id: KeyId,
        resource_crn: &str,
    ) -> Result<(), KeyError> {
        let verb = &op::DELETE_REGISTRATION;
        self.pipe
            .run(verb, caller, key_target(id), async |ctx| {
                let key = self.registrable_key(ctx, verb, caller, id).await?;
                check_crn(resource_crn)?;
                ctx.note(format!("resourceCrn={resource_crn}"));
                let event = ctx.record_key(&key, None)?;
                match self
                    .store
                    .delete_registration(id, resource_crn, caller.subject(), &event)
                    .await?
                {
                    RegistrationChange::Done => Ok(()),
                    RegistrationChange::NotFound => Err(not_registered(resource_crn)),
                    RegistrationChange::NotOwner => Err(not_owner()),
                }
            })
            .await
    }

    /// `actions/sync`: sends the key's current state to every service registered on it. The
    /// number of events created (one per registration owner).
    pub async fn sync(&self, caller: &Caller, id: KeyId) -> Result<u32, KeyError> {
        self.pipe
            .run(&op::SYNC, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                transition(key.state, crate::Action::Sync)?;
                let now = self.clock.now();
                let event = ctx.record_key(&key, Some(key.current_version_id))?;
                let notice = KeyNotice {
                    kind: EventKind::Sync,
                    time: now,
                    force_delete: false,
                    override_prevention: false,
                };
                Ok(self.store.notify(&key, &notice, &event).await?)
            })
            .await
    }

    /// Refuses a delete the key's registrations forbid: any with `preventKeyDeletion` (unless
    /// an operator overrides it), or any at all without `force`. (The store checks again in the
    /// deleting transaction.)
    pub(super) async fn check_registrations_allow_delete(
        &self,
        key: &KeyRecord,
        deletion: crate::Deletion,
    ) -> Result<(), KeyError> {
        let force = deletion.force;
        let filter = RegistrationFilter {
            key_id: Some(key.id),
            limit: 1,
            ..RegistrationFilter::default()
        };
        let (_, total) = self.store.registrations(key.instance, &filter).await?;
        if total == 0 {
            return Ok(());
        }
        let preventing = RegistrationFilter {
            prevent_key_deletion: Some(true),
            ..filter
        };
        let (_, prevented) = self.store.registrations(key.instance, &preventing).await?;
        // Key Protect: a key with preventKeyDeletion registrations cannot be deleted (409),
        // not even with force. Keyward: unless an operator overrides it.
        if prevented > 0 && !deletion.override_prevention {
            return Err(KeyError::Refused(
                Rule::PreventKeyDeletion,
                "the key cannot be deleted because it protects a cloud resource that has a \
                 retention policy (preventKeyDeletion); the service that registered it must \
                 remove that first (or an operator holding KeyPurge or Administrator deletes with \
                 force=true&preventKeyDeletionOverride=true)"
                    .into(),
            ));
        }
        if !force {
            return Err(KeyError::Refused(
                Rule::ProtectedResource,
                format!(
                    "the key is protecting {total} registered cloud resource(s): list them with \
                     GET /api/v2/keys/{}/registrations, or delete with force=true",
                    key.id
                ),
            ));
        }
        Ok(())
    }

    // ---- events ----

    /// The caller's events in its instance after `after_seq`, oldest first; only those not
    /// acknowledged when `unacked_only`.
    pub async fn events_for(
        &self,
        caller: &Caller,
        after_seq: u64,
        unacked_only: bool,
        limit: u32,
    ) -> Result<Vec<EventRecord>, KeyError> {
        caller.require_instance_member()?;
        Ok(self
            .store
            .events_for(
                caller.subject(),
                caller.instance(),
                after_seq,
                unacked_only,
                limit,
            )
            .await?)
    }

    /// The highest event sequence number so far.
    pub async fn last_event_seq(&self) -> Result<u64, KeyError> {
        Ok(self.store.last_event_seq().await?)
    }

    /// Records the caller's acknowledgement of one of its events, audited as
    /// `kms.secrets.ack-<type>`. Acknowledging again is harmless.
    pub async fn ack_event(
        &self,
        caller: &Caller,
        event_id: &str,
        state: AdopterState,
        rewrapped_version: Option<String>,
    ) -> Result<EventRecord, KeyError> {
        let found = self
            .store
            .event(event_id)
            .await?
            .filter(|e| e.recipient == caller.subject() && e.instance == caller.instance());
        let verb = found.as_ref().map_or(&op::ACK, |e| op::ack(e.kind));
        let target = found.as_ref().map(|e| e.key_id.to_string());
        self.pipe
            .run(verb, caller, target, async |ctx| {
                ctx.authorize_member()?;
                let ev = found.clone().ok_or_else(|| {
                    KeyError::Refused(
                        Rule::EventNotFound,
                        "no such event addressed to the caller in this instance".into(),
                    )
                })?;
                if rewrapped_version
                    .as_ref()
                    .is_some_and(|v| v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()))
                {
                    return Err(invalid(
                        "keyStateData.rewrappedKeyVersion: a key version id".into(),
                    ));
                }
                let now = self.clock.now();
                let ack = EventAckRecord {
                    event_id: ev.id.clone(),
                    recipient: caller.subject().to_owned(),
                    instance: caller.instance(),
                    state,
                    rewrapped_version: rewrapped_version.clone(),
                    at: now,
                };
                ctx.note(format!(
                    "eventId={} adopterKeyState={}",
                    ev.id,
                    state.as_str()
                ));
                let mut audit = ctx.record()?;
                audit.key_state = Some(ev.key_state);
                audit.key_version = rewrapped_version.clone();
                if !self.store.ack_event(&ack, &audit).await? {
                    return Err(KeyError::Refused(
                        Rule::EventNotFound,
                        "no such event addressed to the caller in this instance".into(),
                    ));
                }
                Ok(ev)
            })
            .await
    }

    // ---- webhook subscriptions ----

    /// Sets the caller's webhook in its instance; returns the new signing secret (shown once).
    /// `destination` is the server's verdict on where the URL leads (it may only reach public
    /// addresses unless configured otherwise: the check needs DNS, which the domain does not
    /// do); a refusal fails here, so it is audited like any other.
    pub async fn put_subscription(
        &self,
        caller: &Caller,
        url: &str,
        destination: Result<(), String>,
    ) -> Result<(SubscriptionRecord, Secret), KeyError> {
        self.pipe
            .run(&op::PUT_SUBSCRIPTION, caller, None, async |ctx| {
                ctx.authorize_member()?;
                check_url(url)?;
                destination.map_err(invalid)?;
                let secret = keyward_crypto::random_secret(WEBHOOK_SECRET_BYTES)
                    .map_err(|e| KeyError::Custody(crate::CustodyError::Internal(e.to_string())))?;
                let record = SubscriptionRecord {
                    recipient: caller.subject().to_owned(),
                    instance: caller.instance(),
                    url: url.to_owned(),
                    secret: self.custody.wrap_material(&secret)?,
                    created_at: self.clock.now(),
                };
                ctx.note(format!("url={url}"));
                let event = ctx.record()?;
                self.store.put_subscription(&record, &event).await?;
                Ok((record, secret))
            })
            .await
    }

    /// The caller's webhook in its instance.
    pub async fn subscription(&self, caller: &Caller) -> Result<SubscriptionRecord, KeyError> {
        caller.require_instance_member()?;
        self.store
            .subscription(caller.subject(), caller.instance())
            .await?
            .ok_or_else(no_subscription)
    }

    /// Removes the caller's webhook in its instance.
    pub async fn delete_subscription(&self, caller: &Caller) -> Result<(), KeyError> {
        self.pipe
            .run(&op::DELETE_SUBSCRIPTION, caller, None, async |ctx| {
                ctx.authorize_member()?;
                let event = ctx.record()?;
                if self
                    .store
                    .delete_subscription(caller.subject(), caller.instance(), &event)
                    .await?
                {
                    Ok(())
                } else {
                    Err(no_subscription())
                }
            })
            .await
    }

    /// The signing secret of a subscription (for the delivery worker).
    pub fn webhook_secret(&self, subscription: &SubscriptionRecord) -> Result<Secret, KeyError> {
        self.custody
            .unwrap_material(&subscription.secret)
            .map_err(integrity)
    }

    // ---- helpers ----

    /// A root key a service may register on (or deregister from) in its current state.
    async fn registrable_key(
        &self,
        ctx: &mut Ctx<'_>,
        verb: &'static Op,
        caller: &Caller,
        id: KeyId,
    ) -> Result<crate::Verified<KeyRecord>, KeyError> {
        let action = verb.lifecycle.ok_or(KeyError::IntegrityFailure)?;
        let key = self.load(ctx, caller, id).await?;
        if !is_service(caller.subject()) {
            return Err(KeyError::Refused(
                Rule::ServiceOnly,
                "registrations are created and changed by services (a service ID or a service \
                 instance), not by users"
                    .into(),
            ));
        }
        if key.kind != KeyKind::Root {
            return Err(KeyError::Refused(
                Rule::RegistrationRootKeyRequired,
                "registrations are for root keys (extractable: false)".into(),
            ));
        }
        transition(self.effective_state(&key), action)?;
        Ok(key)
    }

    async fn key_version_of(
        &self,
        key: &crate::Verified<KeyRecord>,
        v: &str,
    ) -> Result<KeyVersionId, KeyError> {
        let invalid_version = || {
            KeyError::Refused(
                Rule::KeyVersionInvalid,
                format!("keyVersionId: {v:?} is not a version of this key"),
            )
        };
        let id: KeyVersionId = v.parse().map_err(|_| invalid_version())?;
        let version = self
            .store
            .key_version_by_id(key.id, id)
            .await?
            .ok_or_else(invalid_version)?;
        Ok(self.verify_version(key, version)?.id)
    }
}

fn not_registered(crn: &str) -> KeyError {
    KeyError::Refused(
        Rule::RegistrationNotFound,
        format!("no registration of {crn} on this key"),
    )
}

fn not_owner() -> KeyError {
    KeyError::Refused(
        Rule::RegistrationOwner,
        "the registration belongs to another service: only the identity that created it may \
         change or delete it"
            .into(),
    )
}

fn no_subscription() -> KeyError {
    KeyError::Refused(
        Rule::SubscriptionNotFound,
        "the caller has no event subscription in this instance".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crns_and_urls_are_checked() {
        assert!(check_crn("crn:v1:bluemix:public:messagehub:us-south:a/acct:inst::").is_ok());
        assert!(check_crn("crn:v1:bluemix:public:messagehub:us-south:a/acct:inst:topic:t").is_ok());
        assert!(check_crn("crn:v1:short").is_err());
        assert!(check_crn("crn:v1:b:p:s:l:a/x:*::").is_err());
        assert!(check_crn("crn:v1:b:p:s:l:a/x:i:: spaced").is_err());
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://").is_err());
        assert!(is_service("crn-crn:v1:keyward:private:svc:r:a/acct:inst::"));
        assert!(is_service("iam-ServiceId-1"));
        assert!(!is_service("IBMid-1"));
    }
}
