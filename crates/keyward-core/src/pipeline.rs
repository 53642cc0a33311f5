//! The operation pipeline: authorize, act and audit, written once. Every service operation (keys,
//! rings, policies, registrations, import tokens, KMIP records, identity and access) runs as
//! [`Pipeline::run`] over an [`Op`]; transports only parse requests and map errors.
//!
//! What it guarantees:
//! - **Authorized first.** [`Pipeline::run_in`] checks the caller against its target before the
//!   body runs. An operation on one key calls [`Ctx::authorize`] once it has read the key (its
//!   ring is part of the check); a body that succeeds without having been authorized is refused,
//!   and the audit event a write needs ([`Ctx::record`]) exists only after authorization, so
//!   nothing is written for a caller that was not checked.
//! - **Audited, success and failure alike.** A success is recorded with the write that made it
//!   (the body takes the event from [`Ctx::record`] into the store's transaction) or, for a
//!   read, appended after it; a failure is appended with its reason code and reason.

use crate::access::{Denial, Grants, Operation, Target};
use crate::aggregate::CryptoAggregation;
use crate::op::Op;
use crate::service::Clock;
use crate::{
    AuditEvent, Initiator, InstanceId, KeyError, KeyId, KeyRecord, KeyState, KeyVersionId, Outcome,
    Store,
};
use std::sync::Arc;

/// A failure that is recorded in the audit trail: its reason code (the status the API answers
/// with) and its reason (its `Display`, never secret).
pub trait Failure: std::fmt::Display {
    /// The HTTP-style reason code.
    fn reason_code(&self) -> u16;
}

impl Failure for KeyError {
    fn reason_code(&self) -> u16 {
        KeyError::reason_code(self)
    }
}

impl Failure for crate::KmipError {
    fn reason_code(&self) -> u16 {
        crate::KmipError::reason_code(self)
    }
}

/// Who acts: an authenticated caller of an instance, an account's principal, the holder of a
/// credential being exchanged, or Keyward itself. Public so that keyward-iam runs its verbs
/// through the pipeline; an actor of another crate reaches no service of this one, which take a
/// [`Caller`](crate::Caller).
pub trait Actor: Sync {
    /// The initiator of the audit event.
    fn initiator(&self) -> Initiator;
    /// The request id, to join the audit trail with logs.
    fn request_id(&self) -> &str;
    /// The instance acted on, if any, as the audit event names it (a refused request's
    /// `bluemix-instance` header is recorded as sent, even when it is not an instance id).
    fn audit_instance(&self) -> Option<String>;
    /// Whether the actor may do `operation` on `target`: a target it cannot see is not found,
    /// one it sees but may not act on is forbidden.
    fn check(&self, operation: Operation, target: Target<'_>) -> Result<(), KeyError>;
    /// Whether this is Keyward itself (the scheduler), which alone runs Keyward's own verbs.
    fn is_system(&self) -> bool {
        false
    }
    /// Whether the actor holds any role in the instance it acts on (see
    /// `Ctx::authorize_member`).
    fn is_member(&self) -> bool {
        false
    }
    /// Whether the pipeline records a failure of this actor. Every failure is recorded, except
    /// an unauthenticated actor's, which are sampled per source: a flood of bad credentials
    /// wrote one durable row per request, 100 MB in 40 s (issue 18).
    fn sample_failure(&self) -> Sampled {
        Sampled::Record(None)
    }
}

/// Whether a failure is recorded ([`Actor::sample_failure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampled {
    /// Recorded, with a note appended to its reason (how many refusals it stands for).
    Record(Option<String>),
    /// Not recorded: counted, and noted on the source's next recorded event.
    Skip,
}

/// Checks `grants` of `account` on `target` of `instance`.
pub(crate) fn check_grants(
    grants: &Grants,
    account: &str,
    instance: InstanceId,
    operation: Operation,
    target: Target<'_>,
) -> Result<(), KeyError> {
    grants
        .check(operation, account, instance, target)
        .map_err(|d| match d {
            Denial::Invisible => KeyError::NotFound,
            Denial::Forbidden => KeyError::Forbidden(operation),
        })
}

/// The state of one running operation: whether it was authorized, what its audit event says,
/// and whether the event was handed to a write already. [`Ctx::record`] and its variants are the
/// only way to get the success event of a write, and only once the operation is authorized.
pub struct Ctx<'a> {
    op: &'static Op,
    actor: &'a dyn Actor,
    clock: &'a dyn Clock,
    authorized: bool,
    recorded: bool,
    target: Option<String>,
    key_state: Option<KeyState>,
    key_version: Option<KeyVersionId>,
    note: Option<String>,
}

impl Ctx<'_> {
    /// Checks the actor against `target` for this operation's access operation.
    pub fn authorize(&mut self, target: Target<'_>) -> Result<(), KeyError> {
        match self.op.operation {
            Some(operation) => self.actor.check(operation, target)?,
            // Verbs without an access operation are Keyward's own: only Keyward runs them.
            None if self.actor.is_system() => {}
            None => return Err(KeyError::IntegrityFailure),
        }
        self.authorized = true;
        Ok(())
    }

    /// Authorizes a verb that acts only on the caller's own records (its webhook subscription,
    /// its events), which every authenticated caller may do: the body reads and writes only
    /// what is addressed to the caller's subject in the caller's instance. The token exchange
    /// uses it once the body has verified the credential presented (keyward-iam).
    pub fn authorize_own(&mut self) -> Result<(), KeyError> {
        if self.op.operation.is_some() {
            return Err(KeyError::IntegrityFailure);
        }
        self.authorized = true;
        Ok(())
    }

    /// Authorizes a verb on the caller's own records in its instance (its webhook subscription,
    /// its events' acknowledgements): the caller must hold some role in the instance, as a
    /// service registered on one of its keys does.
    pub(crate) fn authorize_member(&mut self) -> Result<(), KeyError> {
        if self.op.operation.is_some() {
            return Err(KeyError::IntegrityFailure);
        }
        if !self.actor.is_member() {
            return Err(KeyError::Forbidden(Operation::ListRegistrations));
        }
        self.authorized = true;
        Ok(())
    }

    /// Adds a note to the success event (what was registered, which event was acknowledged);
    /// never secret.
    pub(crate) fn note(&mut self, note: String) {
        self.note = Some(note);
    }

    /// Marks the operation authorized by a check the body made itself: a service creating an
    /// authorization under a delegating one it holds (keyward-iam's
    /// `IamService::create_authorization`).
    pub fn delegated(&mut self) {
        self.authorized = true;
    }

    /// The verb running.
    pub(crate) fn op(&self) -> &'static Op {
        self.op
    }

    /// Names what the operation acts on, for its audit event.
    pub fn target(&mut self, target: impl ToString) {
        self.target = Some(target.to_string());
    }

    /// Describes the key acted on: its state and the version involved.
    pub(crate) fn key(&mut self, state: KeyState, version: Option<KeyVersionId>) {
        self.key_state = Some(state);
        self.key_version = version;
    }

    /// Forgets the key's state and version: the event names the key only.
    pub(crate) fn clear_key(&mut self) {
        self.key_state = None;
        self.key_version = None;
    }

    /// The key version involved (wrap, unwrap, rewrap).
    pub(crate) fn key_version(&mut self, version: KeyVersionId) {
        self.key_version = Some(version);
    }

    /// The success event of this operation, for the write that makes the change: the store
    /// commits it in the write's transaction, so the pipeline does not append it again.
    /// Refused for an operation that was not authorized.
    pub fn record(&mut self) -> Result<AuditEvent, KeyError> {
        let event = self.authorized_success()?;
        self.recorded = true;
        Ok(event)
    }

    /// The success event of this operation, naming `target` (the record it created or
    /// deleted), for the write that makes the change.
    pub fn record_on(&mut self, target: impl ToString) -> Result<AuditEvent, KeyError> {
        let mut event = self.authorized_success()?;
        event.target = Some(target.to_string());
        self.recorded = true;
        Ok(event)
    }

    /// The success event of a key change made by this operation: the key's state after it and
    /// the version involved.
    pub(crate) fn record_key(
        &mut self,
        key: &KeyRecord,
        version: Option<KeyVersionId>,
    ) -> Result<AuditEvent, KeyError> {
        self.target(key.id);
        self.key(key.state, version);
        self.record()
    }

    /// The success event, for a write: refused before authorization.
    fn authorized_success(&self) -> Result<AuditEvent, KeyError> {
        if !self.authorized {
            return Err(KeyError::IntegrityFailure);
        }
        Ok(self.success())
    }

    fn event(
        &self,
        op: &'static Op,
        outcome: Outcome,
        reason_code: u16,
        reason: Option<String>,
    ) -> AuditEvent {
        AuditEvent {
            reason,
            instance: self.actor.audit_instance(),
            target: self.target.clone(),
            ..AuditEvent::new(
                op.action,
                outcome,
                reason_code,
                self.actor.initiator(),
                self.actor.request_id().to_owned(),
                self.clock.now(),
            )
        }
    }

    fn success(&self) -> AuditEvent {
        let mut e = self.event(self.op, Outcome::Success, self.op.status, self.note.clone());
        e.key_state = self.key_state.map(KeyState::code);
        e.key_version = self.key_version.map(|v| v.to_string());
        e
    }
}

/// Runs operations: authorization, the body, and the audit event of its outcome. Public for
/// keyward-iam, whose identity and access verbs run through it like the key service's.
#[derive(Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Counts successful envelope operations instead of recording each (`None`: off).
    aggregation: Option<Arc<CryptoAggregation>>,
}

impl Pipeline {
    /// A pipeline recording into `store`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Pipeline {
            store,
            clock,
            aggregation: None,
        }
    }

    /// Successful wraps, unwraps and rewraps are counted by `aggregation` and recorded by
    /// [`Pipeline::flush_aggregated`] instead of one by one.
    pub(crate) fn aggregate(&mut self, aggregation: Arc<CryptoAggregation>) {
        self.aggregation = Some(aggregation);
    }

    /// Records the aggregated events of the seconds before `until` (every second counted so
    /// far when `None`), and any a failed flush left, in one transaction. Returns how many
    /// events were recorded. On failure the events are kept for the next flush and requests are
    /// recorded one by one until a flush succeeds.
    pub async fn flush_aggregated(
        &self,
        until: Option<time::OffsetDateTime>,
    ) -> Result<usize, crate::StoreError> {
        let Some(aggregation) = &self.aggregation else {
            return Ok(0);
        };
        let events = aggregation.take(until);
        if events.is_empty() {
            return Ok(0);
        }
        match self.store.append_audits(&events).await {
            Ok(()) => {
                aggregation.written();
                Ok(events.len())
            }
            Err(e) => {
                aggregation.unwritten(events);
                Err(e)
            }
        }
    }

    /// Runs `body` as `op` for `actor`, then records its outcome. `target` names what the
    /// operation acts on (a key id, a record id) for the audit event, when known up front. The
    /// body authorizes with [`Ctx::authorize`] once it knows the target's place (a key's ring).
    pub async fn run<T, E>(
        &self,
        op: &'static Op,
        actor: &dyn Actor,
        target: Option<String>,
        body: impl AsyncFnOnce(&mut Ctx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: Failure + From<KeyError>,
    {
        let mut ctx = Ctx {
            op,
            actor,
            clock: self.clock.as_ref(),
            authorized: false,
            recorded: false,
            target,
            key_state: None,
            key_version: None,
            note: None,
        };
        let result = match body(&mut ctx).await {
            // A body that returns without authorizing is a bug: fail closed, loudly in tests.
            Ok(_) if !ctx.authorized => {
                debug_assert!(false, "{op} succeeded without an authorization");
                Err(E::from(KeyError::IntegrityFailure))
            }
            r => r,
        };
        let event = match &result {
            Ok(_) if ctx.recorded => None,
            Ok(_) => Some(ctx.success())
                .filter(|e| !self.aggregation.as_ref().is_some_and(|a| a.fold(e))),
            Err(e) => match actor.sample_failure() {
                Sampled::Skip => None,
                Sampled::Record(note) => {
                    let reason = match note {
                        Some(n) => format!("{e} ({n})"),
                        None => e.to_string(),
                    };
                    Some(ctx.event(op, Outcome::Failure, e.reason_code(), Some(reason)))
                }
            },
        };
        if let Some(event) = event {
            self.store
                .append_audit(&event)
                .await
                .map_err(|e| E::from(KeyError::from(e)))?;
        }
        result
    }

    /// [`Pipeline::run`] for an operation whose target is known before anything is read (the
    /// instance, a key ring, the account): the actor is checked first, then the body runs.
    pub async fn run_in<T, E>(
        &self,
        op: &'static Op,
        actor: &dyn Actor,
        target: Target<'_>,
        body: impl AsyncFnOnce(&mut Ctx<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: Failure + From<KeyError>,
    {
        self.run(op, actor, None, async |ctx| {
            ctx.authorize(target)?;
            body(ctx).await
        })
        .await
    }
}

/// A key id as an audit target.
pub(crate) fn key_target(id: KeyId) -> Option<String> {
    Some(id.to_string())
}
