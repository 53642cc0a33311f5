//! Access control: roles, the operations they allow (Key Protect's table, in one place), the
//! scopes a grant can cover, and the evaluation of a caller's grants against an operation.
//!
//! A caller's grants come from two sources: access policies naming the caller's identity, and,
//! for a service identity, service-to-service authorizations naming its service (and optionally
//! its instance). Both become [`Grant`]s; evaluation does not care where a grant came from.

use crate::op::{self, Op};
use crate::{InstanceId, KeyId};

/// Key Protect's service roles, plus the platform role that manages identities and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Browse keys and use root keys (wrap, unwrap, rewrap).
    Reader,
    /// Reader, and read standard keys' payloads.
    ReaderPlus,
    /// ReaderPlus, and create, import, rotate, authorize deletions, create rings and aliases.
    Writer,
    /// Everything but purge: disable, enable, delete, restore, policies, rings.
    Manager,
    /// Purge deleted keys; held on top of another role (a Manager cannot purge without it).
    KeyPurge,
    /// KMIP adapter management, and listing keys and rings.
    KmipAdapterManager,
    /// Platform role: manage identities, API keys, access policies, authorizations and
    /// instances of the account. Grants no access to keys by itself.
    Administrator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Reader,
        Role::ReaderPlus,
        Role::Writer,
        Role::Manager,
        Role::KeyPurge,
        Role::KmipAdapterManager,
        Role::Administrator,
    ];

    /// The role's name as IBM Cloud IAM spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::ReaderPlus => "ReaderPlus",
            Role::Writer => "Writer",
            Role::Manager => "Manager",
            Role::KeyPurge => "KeyPurge",
            Role::KmipAdapterManager => "KmipAdapterManager",
            Role::Administrator => "Administrator",
        }
    }

    /// The role for a name (exact, as IAM spells it).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Something a caller asks to do. Each maps to one IAM action name and to the roles that allow
/// it in [`OPERATIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Operation {
    ListKeys,
    KeyTotal,
    ReadMetadata,
    ReadPayload,
    ListVersions,
    CreateKey,
    ImportKey,
    Wrap,
    Unwrap,
    Rewrap,
    Rotate,
    Disable,
    Enable,
    Delete,
    Restore,
    Purge,
    SetKeyForDeletion,
    UnsetKeyForDeletion,
    ReadKeyPolicies,
    WriteKeyPolicies,
    ReadInstancePolicies,
    WriteInstancePolicies,
    ReadAllowedIpPort,
    ListKeyRings,
    CreateKeyRing,
    DeleteKeyRing,
    PatchKey,
    CreateAlias,
    DeleteAlias,
    KmipRead,
    KmipWrite,
    CreateImportToken,
    ReadImportToken,
    ListRegistrations,
    CreateRegistration,
    UpdateRegistration,
    DeleteRegistration,
    SyncKey,
    ManageAccess,
    /// Keyward extension: the instance's audit events (`GET /api/v2/audit_events`).
    ReadAuditEvents,
}

use Role::{
    Administrator as Adm, KeyPurge as Kp, KmipAdapterManager as Kam, Manager as M, Reader as R,
    ReaderPlus as Rp, Writer as W,
};

/// Key Protect's role table (its "manage access" documentation): each operation, the verb that names
/// its IAM action and the roles that allow it. Enforcement and the access-matrix test both read this table.
pub const OPERATIONS: &[(Operation, &Op, &[Role])] = &[
    (Operation::ListKeys, &op::LIST_KEYS, &[R, Rp, W, M, Kam]),
    (Operation::KeyTotal, &op::KEY_TOTAL, &[R, Rp, W, M, Kam]),
    (Operation::ReadMetadata, &op::READ_METADATA, &[R, Rp, W, M]),
    (Operation::ReadPayload, &op::READ_KEY, &[Rp, W, M]),
    (Operation::ListVersions, &op::LIST_VERSIONS, &[R, Rp, W, M]),
    (Operation::CreateKey, &op::CREATE_KEY, &[W, M]),
    (Operation::ImportKey, &op::IMPORT_KEY, &[W, M]),
    (Operation::Wrap, &op::WRAP, &[R, Rp, W, M]),
    (Operation::Unwrap, &op::UNWRAP, &[R, Rp, W, M]),
    (Operation::Rewrap, &op::REWRAP, &[R, Rp, W, M]),
    (Operation::Rotate, &op::ROTATE, &[W, M]),
    (Operation::Disable, &op::DISABLE, &[M]),
    (Operation::Enable, &op::ENABLE, &[M]),
    (Operation::Delete, &op::DELETE, &[M]),
    (Operation::Restore, &op::RESTORE, &[M]),
    (Operation::Purge, &op::PURGE, &[Kp]),
    (
        Operation::SetKeyForDeletion,
        &op::SET_KEY_FOR_DELETION,
        &[W, M],
    ),
    (
        Operation::UnsetKeyForDeletion,
        &op::UNSET_KEY_FOR_DELETION,
        &[W, M],
    ),
    (Operation::ReadKeyPolicies, &op::READ_KEY_POLICIES, &[M]),
    (Operation::WriteKeyPolicies, &op::WRITE_KEY_POLICIES, &[M]),
    (
        Operation::ReadInstancePolicies,
        &op::READ_INSTANCE_POLICIES,
        &[M],
    ),
    (
        Operation::WriteInstancePolicies,
        &op::WRITE_INSTANCE_POLICIES,
        &[M],
    ),
    (
        Operation::ReadAllowedIpPort,
        &op::READ_ALLOWED_IP_PORT,
        &[M],
    ),
    (
        Operation::ListKeyRings,
        &op::LIST_KEY_RINGS,
        &[R, Rp, W, M, Kam],
    ),
    (Operation::CreateKeyRing, &op::CREATE_KEY_RING, &[W, M]),
    (Operation::DeleteKeyRing, &op::DELETE_KEY_RING, &[M]),
    (Operation::PatchKey, &op::PATCH_KEY, &[M]),
    (Operation::CreateAlias, &op::CREATE_ALIAS, &[W, M]),
    (Operation::DeleteAlias, &op::DELETE_ALIAS, &[W, M]),
    (Operation::KmipRead, &op::KMIP_READ, &[M, Kam]),
    (Operation::KmipWrite, &op::KMIP_CREATE, &[M, Kam]),
    (
        Operation::CreateImportToken,
        &op::CREATE_IMPORT_TOKEN,
        &[W, M],
    ),
    (Operation::ReadImportToken, &op::READ_IMPORT_TOKEN, &[W, M]),
    // Registrations are written by the service that protects a resource with the key: the role
    // it needs is the one that lets it wrap and unwrap (Reader), and it must be a service
    // identity (SERVICE_ONLY_ERR otherwise). Customers list them with Reader.
    (
        Operation::ListRegistrations,
        &op::LIST_REGISTRATIONS,
        &[R, Rp, W, M],
    ),
    (
        Operation::CreateRegistration,
        &op::CREATE_REGISTRATION,
        &[R, Rp, W, M],
    ),
    (
        Operation::UpdateRegistration,
        &op::UPDATE_REGISTRATION,
        &[R, Rp, W, M],
    ),
    (
        Operation::DeleteRegistration,
        &op::DELETE_REGISTRATION,
        &[R, Rp, W, M],
    ),
    (Operation::SyncKey, &op::SYNC, &[W, M]),
    (Operation::ManageAccess, &op::MANAGE_ACCESS, &[Adm]),
    // Keyward's audit query: the instance's whole trail (who did what to which key), so only
    // Managers of the instance, like instance policies.
    (Operation::ReadAuditEvents, &op::LIST_AUDIT_EVENTS, &[M]),
];

impl Operation {
    /// The IAM action name (the action of the verb that names it in [`OPERATIONS`]).
    pub fn action(self) -> &'static str {
        OPERATIONS
            .iter()
            .find(|(op, _, _)| *op == self)
            // Every operation has a row (`every_operation_has_one_row`).
            .map_or("", |(_, verb, _)| verb.action)
    }

    /// Whether `role` allows this operation.
    pub fn allowed_by(self, role: Role) -> bool {
        OPERATIONS
            .iter()
            .any(|(op, _, roles)| *op == self && roles.contains(&role))
    }
}

/// What a grant covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every instance of an account.
    Account(String),
    /// One instance.
    Instance(InstanceId),
    /// One key ring of an instance.
    KeyRing(InstanceId, String),
    /// One key.
    Key(InstanceId, KeyId),
}

/// One role on one scope, held by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    /// What it covers.
    pub scope: Scope,
    /// The role it gives.
    pub role: Role,
}

/// Where in an instance an operation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The instance itself (create keys, list, instance policies, rings).
    Instance,
    /// Keys of one ring (listing with `X-Kms-Key-Ring`, creating into a ring).
    KeyRing(&'a str),
    /// One key, in its ring.
    Key(KeyId, &'a str),
}

/// Every grant a caller holds that could apply to one instance of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// The grants.
    pub grants: Vec<Grant>,
}

/// Why an operation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The caller can see nothing of what it named: answer as if it did not exist.
    Invisible,
    /// The caller can see it but holds no role that allows the operation.
    Forbidden,
}

impl Grants {
    fn covers(scope: &Scope, account: &str, instance: InstanceId, target: Target<'_>) -> bool {
        match (scope, target) {
            (Scope::Account(a), _) => a == account,
            (Scope::Instance(i), _) => *i == instance,
            (Scope::KeyRing(i, r), Target::KeyRing(ring) | Target::Key(_, ring)) => {
                *i == instance && r == ring
            }
            (Scope::Key(i, k), Target::Key(key, _)) => *i == instance && *k == key,
            (Scope::KeyRing(..) | Scope::Key(..), Target::Instance)
            | (Scope::Key(..), Target::KeyRing(_)) => false,
        }
    }

    /// Whether the caller holds any grant in the instance (any role, any scope inside it).
    pub fn sees_instance(&self, account: &str, instance: InstanceId) -> bool {
        self.grants.iter().any(|g| match &g.scope {
            Scope::Account(a) => a == account,
            Scope::Instance(i) | Scope::KeyRing(i, _) | Scope::Key(i, _) => *i == instance,
        })
    }

    /// Whether `op` on `target` of `instance` (owned by `account`) is allowed; when not, whether
    /// the caller may even know the target exists.
    pub fn check(
        &self,
        op: Operation,
        account: &str,
        instance: InstanceId,
        target: Target<'_>,
    ) -> Result<(), Denial> {
        let covering = self
            .grants
            .iter()
            .filter(|g| Self::covers(&g.scope, account, instance, target));
        let mut visible = false;
        for g in covering {
            visible = true;
            if op.allowed_by(g.role) {
                return Ok(());
            }
        }
        if visible || (matches!(target, Target::Instance) && self.sees_instance(account, instance))
        {
            Err(Denial::Forbidden)
        } else {
            Err(Denial::Invisible)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_additive_except_key_purge() {
        for (op, _, roles) in OPERATIONS {
            let allows = |r| roles.contains(&r);
            if allows(R) {
                assert!(allows(Rp), "{op:?}");
            }
            if allows(Rp) {
                assert!(allows(W), "{op:?}");
            }
            if allows(W) {
                assert!(allows(M), "{op:?}");
            }
            assert_eq!(allows(Kp), *op == Operation::Purge, "{op:?}");
            assert_eq!(allows(Adm), *op == Operation::ManageAccess, "{op:?}");
        }
        assert!(!Operation::Purge.allowed_by(M), "a Manager cannot purge");
    }

    #[test]
    fn every_operation_has_one_row() {
        let mut seen = std::collections::HashSet::new();
        for (op, action, roles) in OPERATIONS {
            assert!(seen.insert(*op), "{op:?} twice");
            assert!(!roles.is_empty() && action.action.contains('.'));
            assert_eq!(op.action(), action.action);
            assert_eq!(action.operation, Some(*op), "{action} is checked as {op:?}");
        }
    }

    #[test]
    fn scopes_cover_what_they_name() {
        let (i, other) = (InstanceId::random(), InstanceId::random());
        let key = KeyId::random();
        let g = |scope, role| Grants {
            grants: vec![Grant { scope, role }],
        };
        let on_key = Target::Key(key, "ring-a");
        // Account scope covers every instance of the account, and no other account's.
        let acct = g(Scope::Account("a1".into()), R);
        assert_eq!(acct.check(Operation::Wrap, "a1", i, on_key), Ok(()));
        assert_eq!(
            acct.check(Operation::Wrap, "a2", i, on_key),
            Err(Denial::Invisible)
        );
        // A reader sees but cannot delete.
        let inst = g(Scope::Instance(i), R);
        assert_eq!(
            inst.check(Operation::Delete, "a1", i, on_key),
            Err(Denial::Forbidden)
        );
        assert_eq!(
            inst.check(Operation::Wrap, "a1", other, on_key),
            Err(Denial::Invisible)
        );
        // A ring grant covers its keys, and listing that ring, but not the instance.
        let ring = g(Scope::KeyRing(i, "ring-a".into()), W);
        assert_eq!(ring.check(Operation::Rotate, "a1", i, on_key), Ok(()));
        assert_eq!(
            ring.check(Operation::ListKeys, "a1", i, Target::KeyRing("ring-a")),
            Ok(())
        );
        assert_eq!(
            ring.check(Operation::ListKeys, "a1", i, Target::Instance),
            Err(Denial::Forbidden)
        );
        assert_eq!(
            ring.check(Operation::Wrap, "a1", i, Target::Key(key, "default")),
            Err(Denial::Invisible)
        );
        // A key grant covers that key only.
        let one = g(Scope::Key(i, key), M);
        assert_eq!(one.check(Operation::Delete, "a1", i, on_key), Ok(()));
        assert_eq!(
            one.check(
                Operation::Wrap,
                "a1",
                i,
                Target::Key(KeyId::random(), "ring-a")
            ),
            Err(Denial::Invisible)
        );
        assert_eq!(
            Grants::default().check(Operation::ListKeys, "a1", i, Target::Instance),
            Err(Denial::Invisible)
        );
    }
}
