//! `Caller`: who is calling, on which instance, with which grants. Its fields are private: a
//! caller is made by keyward-iam's authentication (from a verified token's claims and the grants
//! resolved for them, through the hidden `Caller::authenticated`) or, inside this crate only, as
//! Keyward itself ([`Caller::system`], for the scheduler), so no transport can make an unchecked
//! caller. Rust cannot limit a public function to one downstream crate: keyward-iam's
//! `tests/caller_construction.rs` fails if any crate but keyward-iam and this one names it.

use std::sync::Arc;

use crate::access::{Grants, Operation, Target};
use crate::pipeline::{Actor, check_grants};
use crate::{Initiator, InstanceId, KeyError, KeyId};

/// Who is calling, on which instance: established by authentication from a verified token.
#[derive(Debug, Clone)]
pub struct Caller {
    subject: String,
    instance: InstanceId,
    request_id: String,
    address: Option<String>,
    key_ring: Option<String>,
    access: Access,
}

/// What a caller may do: everything (Keyward's own scheduler), or what its grants allow.
#[derive(Debug, Clone)]
enum Access {
    /// Keyward itself (the scheduler): no access check.
    System,
    /// A KMIP client authenticated by a certificate registered on `adapter`: it may manage the
    /// adapter's KMIP objects and use the adapter's root key `crk` to protect them, nothing else.
    Kmip {
        /// The adapter's root key.
        crk: KeyId,
    },
    /// A caller with grants on the instance's account.
    Grants {
        /// The account that owns the instance.
        account: String,
        /// The caller's grants that could apply.
        grants: Arc<Grants>,
    },
}

/// What authentication established about a request: its verified subject and account, the
/// grants resolved for them, and where the request came from. keyward-iam's alone: see
/// [`Caller::authenticated`].
#[doc(hidden)]
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// IAM id of the token's subject.
    pub subject: String,
    /// The account of the token, which owns the instance.
    pub account: String,
    /// The subject's grants in that account.
    pub grants: Arc<Grants>,
    /// The instance the request is for (its ownership by `account` checked).
    pub instance: InstanceId,
    /// Request id for audit and logs.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
    /// The key ring the caller names (`X-Kms-Key-Ring`): a key outside it is not found.
    pub key_ring: Option<String>,
}

impl Caller {
    /// The caller authentication established. keyward-iam's alone (its `IamService::caller`,
    /// after the token, API key, identity, grants and instance ownership checked out); no other
    /// crate may call it, which a test of keyward-iam enforces.
    #[doc(hidden)]
    pub fn authenticated(a: Authenticated) -> Caller {
        Caller {
            subject: a.subject,
            instance: a.instance,
            request_id: a.request_id,
            address: a.address,
            key_ring: a.key_ring,
            access: Access::Grants {
                account: a.account,
                grants: a.grants,
            },
        }
    }

    /// Keyward itself acting on `instance` (the scheduler): no access check.
    pub(crate) fn system(instance: InstanceId, subject: &str, request_id: String) -> Caller {
        Caller {
            subject: subject.to_owned(),
            instance,
            request_id,
            address: None,
            key_ring: None,
            access: Access::System,
        }
    }

    /// A KMIP client of `adapter` (whose record, and the certificate it presented, verified),
    /// named `subject` in audit events.
    pub(crate) fn kmip_client(
        adapter: &crate::KmipAdapterRecord,
        subject: String,
        request_id: String,
        address: Option<String>,
    ) -> Caller {
        Caller {
            subject,
            instance: adapter.instance,
            request_id,
            address,
            key_ring: None,
            access: Access::Kmip {
                crk: adapter.crk_id,
            },
        }
    }

    /// The same caller for another request (a KMIP connection's next message).
    pub(crate) fn with_request_id(&self, request_id: String) -> Caller {
        Caller {
            request_id,
            ..self.clone()
        }
    }

    /// This caller as Keyward itself, for a read that is part of an operation the caller was
    /// authorized for (an adapter's root key, read for a KMIP manager who holds no key role).
    pub(crate) fn as_system(&self) -> Caller {
        Caller {
            access: Access::System,
            ..self.clone()
        }
    }

    /// Whether the caller holds any role in its instance (on the instance, a ring or a key):
    /// what a caller needs to use its own records there (webhook subscription, events).
    pub fn is_instance_member(&self) -> bool {
        match &self.access {
            Access::System => true,
            Access::Kmip { .. } => false,
            Access::Grants { account, grants } => grants.sees_instance(account, self.instance),
        }
    }

    /// Refuses a caller that holds no role in its instance (issue 18 item 8: an identity with
    /// no policy subscribed to, and streamed, events on every instance of its account).
    pub fn require_instance_member(&self) -> Result<(), KeyError> {
        if self.is_instance_member() {
            Ok(())
        } else {
            Err(KeyError::Forbidden(Operation::ListRegistrations))
        }
    }

    /// IAM id of the subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The instance the request is for.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The key ring the caller names, if any.
    pub fn key_ring(&self) -> Option<&str> {
        self.key_ring.as_deref()
    }
}

impl Actor for Caller {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: self.subject.clone(),
            address: self.address.clone(),
        }
    }

    fn request_id(&self) -> &str {
        &self.request_id
    }

    fn audit_instance(&self) -> Option<String> {
        Some(self.instance.to_string())
    }

    fn is_system(&self) -> bool {
        matches!(self.access, Access::System)
    }

    fn is_member(&self) -> bool {
        self.is_instance_member()
    }

    fn check(&self, operation: Operation, target: Target<'_>) -> Result<(), KeyError> {
        match &self.access {
            Access::System => Ok(()),
            Access::Kmip { crk, .. } => kmip_client_check(*crk, operation, target),
            Access::Grants { account, grants } => {
                check_grants(grants, account, self.instance, operation, target)
            }
        }
    }
}

/// What a KMIP client may do: manage its adapter's objects (the store scopes every object read
/// and write to the adapter) and use the adapter's root key to seal and open them. Any other key
/// is not found; any other operation is forbidden.
fn kmip_client_check(crk: KeyId, operation: Operation, target: Target<'_>) -> Result<(), KeyError> {
    let kmip = matches!(operation, Operation::KmipRead | Operation::KmipWrite);
    match target {
        Target::Key(id, _) if id != crk => Err(KeyError::NotFound),
        Target::Key(..) | Target::Instance if kmip => Ok(()),
        _ => Err(KeyError::Forbidden(operation)),
    }
}
