//! `IamService`: identities, API keys, access policies, service-to-service authorizations and
//! instances of an account; the grants a caller holds, which every key operation checks; and
//! (in `access.rs` and `exchange.rs`) the token exchange and resolving a token to a caller.
//!
//! Managing access needs the Administrator role on the account, except one thing a service may
//! do itself: with a delegating authorization, a service grants one instance of each dependent
//! service the administrator named at most the access it holds, on the same target; those
//! authorizations are deleted with the delegating one. Every change made here drops this process's access
//! cache at once; other processes see it within the cache's TTL.

use std::sync::Arc;

use keyward_core::op::{self, Op};
use keyward_core::{
    AccessPolicyRecord, Actor, ApiKeyRecord, AuthorizationRecord, Clock, Ctx, Custody,
    CustodyError, Grant, Grants, IdentityKind, IdentityRecord, Initiator, InstanceId,
    InstanceRecord, KeyError, Operation, Pipeline, Role, Rule, Scope, Secret, Signed, Store,
    StoreError, Target, Unverified, Verified,
};

use crate::access::{AccessCache, AccessLimits};
use crate::api_key::ApiKey;
use crate::sources::{SourceLimits, Sources};

const NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=100;
const SERVICE_NAME_CHARS: std::ops::RangeInclusive<usize> = 2..=64;

/// An authenticated caller of the management API (or of any API: grants are computed for it).
#[derive(Debug, Clone)]
pub struct Principal {
    /// Its identity.
    pub identity: IdentityRecord,
    /// Its grants in its account.
    pub grants: Arc<Grants>,
    /// The API key its token was issued for.
    pub api_key_id: String,
    /// Request id for audit.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
}

impl Principal {
    /// Whether the principal holds Administrator on its account.
    fn is_admin(&self) -> bool {
        self.grants.grants.iter().any(|g| {
            g.role == Role::Administrator
                && g.scope == Scope::Account(self.identity.account.clone())
        })
    }
}

impl Actor for Principal {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: self.identity.iam_id.clone(),
            address: self.address.clone(),
        }
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn audit_instance(&self) -> Option<String> {
        None
    }

    /// Account administration is the one operation a principal is checked for: Administrator
    /// on its own account.
    fn check(&self, operation: Operation, _: Target<'_>) -> Result<(), KeyError> {
        if operation == Operation::ManageAccess && self.is_admin() {
            Ok(())
        } else {
            Err(KeyError::Forbidden(Operation::ManageAccess))
        }
    }
}

/// An identity to create.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    /// User, service ID or service instance.
    pub kind: IdentityKind,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// For a service instance: the service's name.
    pub service_name: Option<String>,
    /// For a service instance: its instance id.
    pub service_instance: Option<String>,
}

/// A new API key: the record, and the whole key string, shown once.
#[derive(Debug)]
pub struct CreatedApiKey {
    /// What is stored.
    pub record: ApiKeyRecord,
    /// `kw<id>.<secret>`; never stored.
    pub secret: Secret,
}

/// Identity and access management of accounts.
#[derive(Clone)]
pub struct IamService {
    pub(crate) store: Arc<dyn Store>,
    custody: Arc<dyn Custody>,
    pub(crate) clock: Arc<dyn Clock>,
    region: String,
    pub(crate) pipe: Pipeline,
    pub(crate) access: Arc<AccessCache>,
    pub(crate) sources: Arc<Sources>,
    /// When this process last purged expired refresh tokens.
    pub(crate) last_purge: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// A change to one record: done, or there was no such record.
fn found(changed: bool) -> Result<(), KeyError> {
    if changed {
        Ok(())
    } else {
        Err(KeyError::NotFound)
    }
}

fn invalid(msg: impl Into<String>) -> KeyError {
    KeyError::InvalidInput(msg.into())
}

fn check_name(
    field: &str,
    name: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), KeyError> {
    if range.contains(&name.chars().count()) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field}: {} to {} characters, no control characters",
            range.start(),
            range.end()
        )))
    }
}

impl IamService {
    /// Drops every cached API key state and grant (another node changed identities or access).
    pub fn forget_cached_access(&self) {
        self.access.forget_all();
    }

    /// A service over `store` and `custody`; CRNs of service identities name `region`; the
    /// access cache and rate limit follow `limits`.
    pub fn new(
        store: Arc<dyn Store>,
        custody: Arc<dyn Custody>,
        clock: Arc<dyn Clock>,
        region: &str,
        limits: AccessLimits,
    ) -> Self {
        IamService {
            pipe: Pipeline::new(store.clone(), clock.clone()),
            store,
            custody,
            clock,
            region: region.to_owned(),
            access: Arc::new(AccessCache::new(limits)),
            sources: Arc::new(Sources::new(SourceLimits::default())),
            last_purge: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The service with per-source `limits` on unauthenticated requests instead of the
    /// defaults ([`SourceLimits::default`]).
    pub fn with_source_limits(mut self, limits: SourceLimits) -> Self {
        self.sources = Arc::new(Sources::new(limits));
        self
    }

    /// A change to identities or access made here: this process's access cache is dropped, so
    /// it applies at once (other processes see it within the cache's TTL).
    fn changed<T>(&self, result: Result<T, KeyError>) -> Result<T, KeyError> {
        if result.is_ok() {
            self.access.forget_all();
        }
        result
    }

    // ---- grants ----

    /// Every grant `identity` holds in `account`: its access policies and, for a service
    /// instance, the authorizations of its service. Each record's signature is checked; an
    /// altered record is an integrity failure, never a grant.
    pub(crate) async fn grants(
        &self,
        identity: &IdentityRecord,
        account: &str,
    ) -> Result<Grants, KeyError> {
        let mut grants = Vec::new();
        for p in self
            .store
            .access_policies(account, Some(&identity.iam_id))
            .await?
        {
            let p = self.verify(p)?;
            grants.extend(p.roles.iter().map(|r| Grant {
                scope: p.scope.clone(),
                role: *r,
            }));
        }
        if let (IdentityKind::Service, Some(service)) = (identity.kind, &identity.service_name) {
            for a in self.store.authorizations(account, Some(service)).await? {
                let a = self.verify(a)?;
                if a.applies_to(service, identity.service_instance.as_deref()) {
                    grants.extend(a.roles.iter().map(|r| Grant {
                        scope: a.target.clone(),
                        role: *r,
                    }));
                }
            }
        }
        Ok(Grants { grants })
    }

    /// A record verified through custody: an altered one is an integrity failure.
    fn verify<T: Signed>(&self, record: Unverified<T>) -> Result<Verified<T>, KeyError> {
        Verified::check(record, &*self.custody).map_err(|e| match e {
            // An HSM that cannot answer is a 503, not evidence of tampering.
            CustodyError::Unavailable(_) => KeyError::Custody(e),
            _ => KeyError::IntegrityFailure,
        })
    }

    /// Refuses, and records, a caller without the Administrator role before any input is read,
    /// so that a caller without access cannot probe the validation rules.
    pub async fn check_admin(&self, who: &Principal, verb: &'static Op) -> Result<(), KeyError> {
        if who.is_admin() {
            return Ok(());
        }
        self.admin(verb, who, async |_| Ok(())).await
    }

    /// Runs an account administration verb: Administrator on the account first.
    async fn admin<T>(
        &self,
        verb: &'static Op,
        who: &Principal,
        body: impl AsyncFnOnce(&mut Ctx<'_>) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        self.pipe.run_in(verb, who, Target::Instance, body).await
    }

    // ---- instances ----

    /// The account's KMS instances.
    pub async fn instances(&self, who: &Principal) -> Result<Vec<InstanceRecord>, KeyError> {
        self.admin(&op::LIST_INSTANCES, who, async |_| {
            Ok(self
                .store
                .instances()
                .await?
                .into_iter()
                .filter(|i| i.account == who.identity.account)
                .collect())
        })
        .await
    }

    /// Creates a KMS instance in the caller's account.
    pub async fn create_instance(
        &self,
        who: &Principal,
        name: &str,
    ) -> Result<InstanceRecord, KeyError> {
        let verb = &op::CREATE_INSTANCE;
        let result = self
            .admin(verb, who, async |ctx| {
                check_name("name", name, NAME_CHARS)?;
                let rec = InstanceRecord {
                    id: InstanceId::random(),
                    account: who.identity.account.clone(),
                    name: name.to_owned(),
                    created_at: self.clock.now(),
                };
                let event = ctx.record_on(rec.id.to_string())?;
                self.store.insert_instance(&rec, &event).await?;
                Ok(rec)
            })
            .await;
        self.changed(result)
    }

    // ---- identities ----

    /// The IAM id a new identity gets, in IBM's patterns.
    fn new_iam_id(&self, account: &str, spec: &NewIdentity) -> Result<String, KeyError> {
        let id = uuid::Uuid::new_v4();
        Ok(match spec.kind {
            IdentityKind::User => format!("IBMid-{}", id.simple()),
            IdentityKind::ServiceId => format!("iam-ServiceId-{id}"),
            IdentityKind::Service => {
                let (Some(service), Some(instance)) = (&spec.service_name, &spec.service_instance)
                else {
                    return Err(invalid(
                        "service_name and service_instance: required for a service identity",
                    ));
                };
                format!(
                    "crn-crn:v1:keyward:private:{service}:{}:a/{account}:{instance}::",
                    self.region
                )
            }
        })
    }

    /// Creates an identity in the caller's account.
    pub async fn create_identity(
        &self,
        who: &Principal,
        spec: NewIdentity,
    ) -> Result<IdentityRecord, KeyError> {
        let verb = &op::CREATE_IDENTITY;
        let result = self
            .admin(verb, who, async |ctx| {
                check_name("name", &spec.name, NAME_CHARS)?;
                let service_ok = |s: &Option<String>| {
                    s.as_deref().is_none_or(|s| {
                        SERVICE_NAME_CHARS.contains(&s.len())
                            && s.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    })
                };
                if !service_ok(&spec.service_name) || !service_ok(&spec.service_instance) {
                    return Err(invalid(
                        "service_name, service_instance: 2 to 64 letters, digits, '-' or '_'",
                    ));
                }
                if spec.kind != IdentityKind::Service
                    && (spec.service_name.is_some() || spec.service_instance.is_some())
                {
                    return Err(invalid(
                        "service_name, service_instance: only for a service identity",
                    ));
                }
                let rec = IdentityRecord {
                    iam_id: self.new_iam_id(&who.identity.account, &spec)?,
                    account: who.identity.account.clone(),
                    kind: spec.kind,
                    name: spec.name,
                    description: spec.description,
                    service_name: spec.service_name,
                    service_instance: spec.service_instance,
                    locked: false,
                    created_at: self.clock.now(),
                    created_by: who.identity.iam_id.clone(),
                };
                let event = ctx.record_on(rec.iam_id.clone())?;
                match self.store.insert_identity(&rec, &event).await {
                    Err(StoreError::Conflict) => Err(invalid(
                        "an identity for this service instance exists already",
                    )),
                    r => r.map_err(KeyError::from),
                }?;
                Ok(rec)
            })
            .await;
        self.changed(result)
    }

    /// The identities of the caller's account.
    pub async fn identities(&self, who: &Principal) -> Result<Vec<IdentityRecord>, KeyError> {
        self.admin(&op::LIST_IDENTITIES, who, async |_| {
            Ok(self.store.identities(&who.identity.account).await?)
        })
        .await
    }

    /// Locks or unlocks an identity: a locked identity's tokens stop working at once.
    pub async fn lock_identity(
        &self,
        who: &Principal,
        iam_id: &str,
        locked: bool,
    ) -> Result<(), KeyError> {
        let verb = if locked {
            &op::LOCK_IDENTITY
        } else {
            &op::UNLOCK_IDENTITY
        };
        let result = self
            .admin(verb, who, async |ctx| {
                if locked && iam_id == who.identity.iam_id {
                    return Err(invalid("an administrator cannot lock their own identity"));
                }
                let event = ctx.record_on(iam_id.to_owned())?;
                found(
                    self.store
                        .set_identity_locked(&who.identity.account, iam_id, locked, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }

    /// Deletes an identity with its API keys and access policies.
    pub async fn delete_identity(&self, who: &Principal, iam_id: &str) -> Result<(), KeyError> {
        let verb = &op::DELETE_IDENTITY;
        let result = self
            .admin(verb, who, async |ctx| {
                if iam_id == who.identity.iam_id {
                    return Err(invalid("an administrator cannot delete their own identity"));
                }
                let event = ctx.record_on(iam_id.to_owned())?;
                found(
                    self.store
                        .delete_identity(&who.identity.account, iam_id, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }

    // ---- API keys ----

    /// Creates an API key for an identity of the account. The key string is returned once.
    pub async fn create_api_key(
        &self,
        who: &Principal,
        iam_id: &str,
        name: &str,
    ) -> Result<CreatedApiKey, KeyError> {
        let verb = &op::CREATE_API_KEY;
        let result = self
            .admin(verb, who, async |ctx| {
                check_name("name", name, NAME_CHARS)?;
                let identity = self
                    .store
                    .identity(iam_id)
                    .await?
                    .filter(|i| i.account == who.identity.account)
                    .ok_or(KeyError::NotFound)?;
                let key = ApiKey::generate()
                    .map_err(|e| KeyError::Custody(CustodyError::Internal(e.to_string())))?;
                let record = ApiKeyRecord {
                    id: key.id,
                    secret_hash: key.secret_hash,
                    subject: identity.iam_id,
                    account: identity.account,
                    name: name.to_owned(),
                    created_at: self.clock.now(),
                    locked: false,
                };
                let event = ctx.record_on(record.id.clone())?;
                self.store.insert_api_key(&record, &event).await?;
                Ok(CreatedApiKey {
                    record,
                    secret: key.full,
                })
            })
            .await;
        self.changed(result)
    }

    /// The account's API keys (never their secrets).
    pub async fn api_keys(&self, who: &Principal) -> Result<Vec<ApiKeyRecord>, KeyError> {
        self.admin(&op::LIST_API_KEYS, who, async |_| {
            Ok(self.store.api_keys_of(&who.identity.account).await?)
        })
        .await
    }

    /// Locks or unlocks an API key: a locked key's tokens stop working at once.
    pub async fn lock_api_key(
        &self,
        who: &Principal,
        id: &str,
        locked: bool,
    ) -> Result<(), KeyError> {
        let verb = if locked {
            &op::LOCK_API_KEY
        } else {
            &op::UNLOCK_API_KEY
        };
        let result = self
            .admin(verb, who, async |ctx| {
                if locked {
                    self.check_key_removal(who, id).await?;
                }
                let event = ctx.record_on(id.to_owned())?;
                found(
                    self.store
                        .set_api_key_locked(&who.identity.account, id, locked, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }

    /// Deletes an API key: its tokens and refresh tokens stop working at once.
    pub async fn delete_api_key(&self, who: &Principal, id: &str) -> Result<(), KeyError> {
        let verb = &op::DELETE_API_KEY;
        let result = self
            .admin(verb, who, async |ctx| {
                self.check_key_removal(who, id).await?;
                let event = ctx.record_on(id.to_owned())?;
                found(
                    self.store
                        .delete_api_key(&who.identity.account, id, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }

    /// Refuses to lock or delete API key `id` when the request is authenticated with it, or
    /// when it is the last unlocked API key of the account's unlocked administrators: either
    /// would lock the caller, or every administrator, out (issue 18). The second holds by the
    /// first while the caller's own key is usable; it is checked against the store all the
    /// same, for a caller whose key another process locked within the access cache's TTL.
    async fn check_key_removal(&self, who: &Principal, id: &str) -> Result<(), KeyError> {
        if id == who.api_key_id {
            return Err(KeyError::Refused(
                Rule::ApiKeyInUse,
                "this request is authenticated with this API key: lock or delete it with \
                 another one"
                    .into(),
            ));
        }
        let account = &who.identity.account;
        let keys = self.store.api_keys_of(account).await?;
        let Some(target) = keys.iter().find(|k| k.id == id && !k.locked) else {
            // Not found (the store's write answers it) or locked already: nothing usable goes.
            return Ok(());
        };
        // Not verified (as delete_policy's check): the check only refuses a change.
        let admins: std::collections::HashSet<String> = self
            .store
            .access_policies(account, None)
            .await?
            .into_iter()
            .map(Unverified::unverified_inner)
            .filter(|p| {
                p.roles.contains(&Role::Administrator) && p.scope == Scope::Account(account.clone())
            })
            .map(|p| p.subject)
            .collect();
        if !admins.contains(&target.subject) {
            return Ok(());
        }
        let usable: std::collections::HashSet<String> = self
            .store
            .identities(account)
            .await?
            .into_iter()
            .filter(|i| !i.locked && admins.contains(&i.iam_id))
            .map(|i| i.iam_id)
            .collect();
        if keys
            .iter()
            .any(|k| k.id != id && !k.locked && usable.contains(&k.subject))
        {
            return Ok(());
        }
        Err(KeyError::Refused(
            Rule::LastAdministratorKey,
            "this is the last unlocked API key of the account's administrators: create another \
             first"
                .into(),
        ))
    }

    // ---- access policies ----

    async fn check_scope(&self, account: &str, scope: &Scope) -> Result<(), KeyError> {
        let instance = match scope {
            Scope::Account(a) if a == account => return Ok(()),
            Scope::Account(_) => return Err(invalid("resource: another account")),
            Scope::Instance(i) | Scope::KeyRing(i, _) | Scope::Key(i, _) => *i,
        };
        match self.store.instance(instance).await? {
            Some(rec) if rec.account == account => {}
            _ => return Err(invalid("resource: no such instance in this account")),
        }
        // A grant on a key ring that does not exist would silently cover nothing (a typo); the
        // implicit `default` ring always exists. (A ring deleted later keeps its grants.)
        if let Scope::KeyRing(_, ring) = scope
            && ring != "default"
            && !self.ring_exists(instance, ring).await?
        {
            return Err(invalid(format!(
                "resource: the instance has no key ring {ring:?}: create it first (`keyward \
                 rings create {ring}`, or POST /api/v2/key_rings/{ring})"
            )));
        }
        Ok(())
    }

    async fn ring_exists(&self, instance: InstanceId, ring: &str) -> Result<bool, KeyError> {
        let mut offset = 0u32;
        loop {
            let page = keyward_core::Page {
                limit: 1000,
                offset,
            };
            let (rings, total) = self.store.key_rings(instance, page).await?;
            if rings.iter().any(|r| r.id == ring) {
                return Ok(true);
            }
            offset = offset.saturating_add(1000);
            if rings.is_empty() || u64::from(offset) >= total {
                return Ok(false);
            }
        }
    }

    fn check_roles(roles: &[Role]) -> Result<(), KeyError> {
        if roles.is_empty() {
            return Err(invalid("roles: at least one"));
        }
        Ok(())
    }

    /// Gives a subject of the account roles on a scope.
    pub async fn create_policy(
        &self,
        who: &Principal,
        subject: &str,
        roles: Vec<Role>,
        scope: Scope,
    ) -> Result<AccessPolicyRecord, KeyError> {
        let verb = &op::CREATE_POLICY;
        let result = self
            .admin(verb, who, async |ctx| {
                Self::check_roles(&roles)?;
                let account = who.identity.account.clone();
                let subject_ok = self
                    .store
                    .identity(subject)
                    .await?
                    .is_some_and(|i| i.account == account);
                if !subject_ok {
                    return Err(invalid("subject: no such identity in this account"));
                }
                self.check_scope(&account, &scope).await?;
                if roles.contains(&Role::Administrator) && !matches!(scope, Scope::Account(_)) {
                    return Err(invalid(
                        "roles: Administrator is granted on the account only",
                    ));
                }
                let mut p = AccessPolicyRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    account,
                    subject: subject.to_owned(),
                    roles,
                    scope,
                    created_at: self.clock.now(),
                    created_by: who.identity.iam_id.clone(),
                    signature: Vec::new(),
                };
                p.signature = self.custody.sign_record(&p.signed_bytes())?;
                let event = ctx.record_on(p.id.clone())?;
                self.store.insert_access_policy(&p, &event).await?;
                Ok(p)
            })
            .await;
        self.changed(result)
    }

    /// The account's access policies.
    pub async fn policies(&self, who: &Principal) -> Result<Vec<AccessPolicyRecord>, KeyError> {
        self.admin(&op::LIST_POLICIES, who, async |_| {
            // A listing shows the records as stored (not verified: nothing is granted by it).
            Ok(self
                .store
                .access_policies(&who.identity.account, None)
                .await?
                .into_iter()
                .map(Unverified::unverified_inner)
                .collect())
        })
        .await
    }

    /// Removes an access policy; the subject loses its roles within the grant cache's lifetime.
    pub async fn delete_policy(&self, who: &Principal, id: &str) -> Result<(), KeyError> {
        let verb = &op::DELETE_POLICY;
        let result = self
            .admin(verb, who, async |ctx| {
                let all = self
                    .store
                    .access_policies(&who.identity.account, None)
                    .await?;
                // Not verified (as before this was typed): the check only refuses a deletion.
                let all: Vec<AccessPolicyRecord> =
                    all.into_iter().map(Unverified::unverified_inner).collect();
                let is_admin = |p: &AccessPolicyRecord| p.roles.contains(&Role::Administrator);
                if all.iter().any(|p| p.id == id && is_admin(p))
                    && all.iter().filter(|p| is_admin(p)).count() == 1
                {
                    return Err(invalid(
                        "this is the account's last Administrator policy: grant another first",
                    ));
                }
                let event = ctx.record_on(id.to_owned())?;
                found(
                    self.store
                        .delete_access_policy(&who.identity.account, id, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }

    // ---- service-to-service authorizations ----

    /// Authorizes a source service (one instance, or all) on a KMS instance, key ring or key.
    /// An administrator may create any; a service instance holding a delegating authorization
    /// may create one for another service with a subset of its roles on the same target.
    pub async fn create_authorization(
        &self,
        who: &Principal,
        mut spec: AuthorizationRecord,
    ) -> Result<AuthorizationRecord, KeyError> {
        let result = self
            .pipe
            .run(&op::CREATE_AUTHORIZATION, who, None, async |ctx| {
                spec.delegated_from = None;
                if ctx.authorize(Target::Instance).is_err() {
                    spec.delegated_from = Some(self.check_delegation(who, &spec).await?);
                    ctx.delegated();
                }
                let account = who.identity.account.clone();
                Self::check_roles(&spec.roles)?;
                match (spec.delegation, spec.dependents.is_empty()) {
                    (true, true) => {
                        return Err(invalid(
                            "dependents: name the services the source may authorize",
                        ));
                    }
                    (false, false) => {
                        return Err(invalid("dependents: only with delegation"));
                    }
                    _ => {}
                }
                for d in &spec.dependents {
                    check_name("dependents", d, SERVICE_NAME_CHARS)?;
                    if *d == spec.source_service {
                        return Err(invalid("dependents: not the source service itself"));
                    }
                }
                spec.dependents.sort_unstable();
                spec.dependents.dedup();
                if matches!(spec.target, Scope::Account(_)) {
                    return Err(invalid("target: an instance, key ring or key"));
                }
                if spec.roles.contains(&Role::Administrator) {
                    return Err(invalid("roles: Administrator is not a service role"));
                }
                check_name(
                    "source.service_name",
                    &spec.source_service,
                    SERVICE_NAME_CHARS,
                )?;
                self.check_scope(&account, &spec.target).await?;
                spec.id = uuid::Uuid::new_v4().to_string();
                spec.account = account;
                spec.created_at = self.clock.now();
                spec.created_by = who.identity.iam_id.clone();
                spec.signature = self.custody.sign_record(&spec.signed_bytes())?;
                let event = ctx.record_on(&spec.id)?;
                self.store.insert_authorization(&spec, &event).await?;
                Ok(spec)
            })
            .await;
        self.changed(result)
    }

    /// A service creating an authorization for a dependent service must hold a delegating
    /// authorization that covers it; returns that authorization's id. The rule, after IAM's
    /// authorization delegation (a source service authorizes the services it depends on, on
    /// the resource it was authorized on, never more than it holds):
    /// - the caller is a service whose delegating authorization applies to it;
    /// - the new authorization's target is the delegating one's, its roles a subset of its
    ///   roles, and it does not delegate further;
    /// - its source is one named instance (never every instance) of a service the delegating
    ///   authorization lists in `dependents`, which excludes the delegator's own service: a
    ///   service cannot widen its access to its other instances, nor to services the
    ///   administrator did not name (issue 18, item 1);
    /// - it records the delegating authorization (`delegated_from`), and is deleted with it.
    async fn check_delegation(
        &self,
        who: &Principal,
        spec: &AuthorizationRecord,
    ) -> Result<String, KeyError> {
        let denied = || KeyError::Forbidden(Operation::ManageAccess);
        let (IdentityKind::Service, Some(service)) =
            (who.identity.kind, &who.identity.service_name)
        else {
            return Err(denied());
        };
        if spec.delegation || spec.source_instance.is_none() || spec.source_service == *service {
            return Err(denied());
        }
        let held = self
            .store
            .authorizations(&who.identity.account, Some(service))
            .await?;
        for a in held {
            let a = self.verify(a)?;
            if a.delegation
                && a.applies_to(service, who.identity.service_instance.as_deref())
                && a.target == spec.target
                && spec.roles.iter().all(|r| a.roles.contains(r))
                && a.dependents.contains(&spec.source_service)
            {
                return Ok(a.id.clone());
            }
        }
        Err(denied())
    }

    /// The account's authorizations.
    pub async fn authorizations(
        &self,
        who: &Principal,
    ) -> Result<Vec<AuthorizationRecord>, KeyError> {
        self.admin(&op::LIST_AUTHORIZATIONS, who, async |_| {
            // A listing shows the records as stored (not verified: nothing is granted by it).
            Ok(self
                .store
                .authorizations(&who.identity.account, None)
                .await?
                .into_iter()
                .map(Unverified::unverified_inner)
                .collect())
        })
        .await
    }

    /// Removes an authorization: the source service is cut off within the grant cache's lifetime
    /// (at most one second), on every server process.
    pub async fn delete_authorization(&self, who: &Principal, id: &str) -> Result<(), KeyError> {
        let verb = &op::DELETE_AUTHORIZATION;
        let result = self
            .admin(verb, who, async |ctx| {
                let event = ctx.record_on(id.to_owned())?;
                found(
                    self.store
                        .delete_authorization(&who.identity.account, id, &event)
                        .await?,
                )
            })
            .await;
        self.changed(result)
    }
}
