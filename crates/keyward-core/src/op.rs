//! The verbs of Keyward: one [`Op`] per thing a caller (or Keyward itself) can do, naming its
//! audit action, the access [`Operation`] it is checked against and its lifecycle [`Action`].
//! This table is the only place an audit action is spelled; services, transports and stores name
//! an `Op`, never a string.

use crate::{Action, EventKind, Operation};

/// One verb: what it is called in the audit trail (and in IAM), what it is checked against, what
/// it does to a key's state, and the status a success answers with.
#[derive(Debug, PartialEq, Eq)]
pub struct Op {
    /// The audit event's action (Key Protect's IAM action name where it has one).
    pub action: &'static str,
    /// The access check: an operation of the role table, or `None` for verbs gated otherwise
    /// (account administration, token exchange, Keyward's own background work).
    pub operation: Option<Operation>,
    /// The key lifecycle action, for verbs that change or use a key's state.
    pub lifecycle: Option<Action>,
    /// The status of a success (the audit event's `reasonCode`).
    pub status: u16,
}

const fn op(action: &'static str, operation: Operation, status: u16) -> Op {
    Op {
        action,
        operation: Some(operation),
        lifecycle: None,
        status,
    }
}

const fn key_op(action: &'static str, operation: Operation, lifecycle: Action, status: u16) -> Op {
    Op {
        action,
        operation: Some(operation),
        lifecycle: Some(lifecycle),
        status,
    }
}

const fn other(action: &'static str, status: u16) -> Op {
    Op {
        action,
        operation: None,
        lifecycle: None,
        status,
    }
}

use Operation as O;

// ---- keys ----
/// `kms.secrets.create`: generate a key.
pub const CREATE_KEY: Op = op("kms.secrets.create", O::CreateKey, 201);
/// `kms.secrets.create` with material: import a key.
pub const IMPORT_KEY: Op = op("kms.secrets.create", O::ImportKey, 201);
/// A key's metadata and payload.
pub const READ_KEY: Op = key_op("kms.secrets.read", O::ReadPayload, Action::ReadPayload, 200);
/// A key's metadata.
pub const READ_METADATA: Op = op("kms.secrets.readmetadata", O::ReadMetadata, 200);
/// List keys.
pub const LIST_KEYS: Op = op("kms.secrets.list", O::ListKeys, 200);
/// Count keys (`HEAD /keys`).
pub const KEY_TOTAL: Op = op("kms.secrets.head", O::KeyTotal, 200);
/// List a key's versions.
pub const LIST_VERSIONS: Op = op("kms.secrets.listkeyversions", O::ListVersions, 200);
/// Wrap a DEK.
pub const WRAP: Op = key_op("kms.secrets.wrap", O::Wrap, Action::Wrap, 200);
/// Unwrap a DEK.
pub const UNWRAP: Op = key_op("kms.secrets.unwrap", O::Unwrap, Action::Unwrap, 200);
/// Rewrap a DEK under the latest version.
pub const REWRAP: Op = key_op("kms.secrets.rewrap", O::Rewrap, Action::Rewrap, 200);
/// Rotate a key.
pub const ROTATE: Op = key_op("kms.secrets.rotate", O::Rotate, Action::Rotate, 204);
/// Disable (suspend) a key.
pub const DISABLE: Op = key_op("kms.secrets.disable", O::Disable, Action::Disable, 204);
/// Enable a suspended key.
pub const ENABLE: Op = key_op("kms.secrets.enable", O::Enable, Action::Enable, 204);
/// Delete (destroy) a key.
pub const DELETE: Op = key_op("kms.secrets.delete", O::Delete, Action::Delete, 200);
/// Restore a deleted key.
pub const RESTORE: Op = key_op("kms.secrets.restore", O::Restore, Action::Restore, 204);
/// Purge a deleted key.
pub const PURGE: Op = key_op("kms.secrets.purge", O::Purge, Action::Purge, 200);
/// Authorize a dual-authorization delete.
pub const SET_KEY_FOR_DELETION: Op = key_op(
    "kms.secrets.setkeyfordeletion",
    O::SetKeyForDeletion,
    Action::AuthorizeDeletion,
    204,
);
/// Withdraw a dual-authorization delete.
pub const UNSET_KEY_FOR_DELETION: Op = key_op(
    "kms.secrets.unsetkeyfordeletion",
    O::UnsetKeyForDeletion,
    Action::AuthorizeDeletion,
    204,
);
/// Move an active key past its expiration date to Deactivated (the scheduler).
pub const EXPIRE: Op = Op {
    action: "kms.secrets.expire",
    operation: None,
    lifecycle: Some(Action::Expire),
    status: 204,
};
/// Master key rotation: one stored piece of wrapped material moved under the new MKEK.
pub const CUSTODY_REWRAP: Op = Op {
    action: "keyward.custody.rewrap",
    operation: None,
    lifecycle: None,
    status: 200,
};
/// Move a key to another ring (`PATCH keyRingID`).
pub const PATCH_KEY: Op = key_op("kms.secrets.patch", O::PatchKey, Action::Modify, 204);
/// Add an alias.
pub const CREATE_ALIAS: Op = op("kms.secrets.createalias", O::CreateAlias, 201);
/// Remove an alias.
pub const DELETE_ALIAS: Op = op("kms.secrets.deletealias", O::DeleteAlias, 204);
/// Tell registered services about a key again (`actions/sync`).
pub const SYNC: Op = key_op("kms.secrets.sync", O::SyncKey, Action::Sync, 204);

// ---- policies ----
/// A key's policies.
pub const READ_KEY_POLICIES: Op = op("kms.policies.read", O::ReadKeyPolicies, 200);
/// Set a key's policies.
pub const WRITE_KEY_POLICIES: Op = key_op(
    "kms.policies.write",
    O::WriteKeyPolicies,
    Action::Modify,
    204,
);
/// The instance's policies.
pub const READ_INSTANCE_POLICIES: Op =
    op("kms.instancepolicies.read", O::ReadInstancePolicies, 200);
/// The private endpoint port of an allowedIP policy.
pub const READ_ALLOWED_IP_PORT: Op =
    op("kms.instance.readallowedipport", O::ReadAllowedIpPort, 200);
/// Set the instance's policies.
pub const WRITE_INSTANCE_POLICIES: Op =
    op("kms.instancepolicies.write", O::WriteInstancePolicies, 204);

// ---- key rings ----
/// List key rings.
pub const LIST_KEY_RINGS: Op = op("kms.keyrings.list", O::ListKeyRings, 200);
/// Create a key ring.
pub const CREATE_KEY_RING: Op = op("kms.keyrings.create", O::CreateKeyRing, 201);
/// Delete a key ring.
pub const DELETE_KEY_RING: Op = op("kms.keyrings.delete", O::DeleteKeyRing, 204);

// ---- import tokens ----
/// Create the instance's import token.
pub const CREATE_IMPORT_TOKEN: Op = op("kms.importtoken.create", O::CreateImportToken, 200);
/// Retrieve the import token.
pub const READ_IMPORT_TOKEN: Op = op("kms.importtoken.read", O::ReadImportToken, 200);

// ---- registrations and events ----
/// List registrations.
pub const LIST_REGISTRATIONS: Op = op("kms.registrations.list", O::ListRegistrations, 200);
/// Create a registration.
pub const CREATE_REGISTRATION: Op = key_op(
    "kms.registrations.create",
    O::CreateRegistration,
    Action::Register,
    200,
);
/// Replace a registration (`PUT`).
pub const REPLACE_REGISTRATION: Op = key_op(
    "kms.registrations.replace",
    O::UpdateRegistration,
    Action::Register,
    200,
);
/// Update a registration (`PATCH`).
pub const UPDATE_REGISTRATION: Op = key_op(
    "kms.registrations.update",
    O::UpdateRegistration,
    Action::Register,
    200,
);
/// Delete a registration.
pub const DELETE_REGISTRATION: Op = key_op(
    "kms.registrations.delete",
    O::DeleteRegistration,
    Action::Deregister,
    204,
);

/// Set the caller's webhook subscription (its own record: no role needed).
pub const PUT_SUBSCRIPTION: Op = other("kms.eventsubscription.put", 200);
/// Remove the caller's webhook subscription.
pub const DELETE_SUBSCRIPTION: Op = other("kms.eventsubscription.delete", 204);
/// Acknowledge an event that is not the caller's (refused).
pub const ACK: Op = other("kms.secrets.ack", 204);
/// Acknowledge a rotate event.
pub const ACK_ROTATE: Op = other("kms.secrets.ack-rotate", 204);
/// Acknowledge a disable event.
pub const ACK_DISABLE: Op = other("kms.secrets.ack-disable", 204);
/// Acknowledge an enable event.
pub const ACK_ENABLE: Op = other("kms.secrets.ack-enable", 204);
/// Acknowledge a delete event.
pub const ACK_DELETE: Op = other("kms.secrets.ack-delete", 204);
/// Acknowledge a restore event.
pub const ACK_RESTORE: Op = other("kms.secrets.ack-restore", 204);
/// Acknowledge a purge event.
pub const ACK_PURGE: Op = other("kms.secrets.ack-purge", 204);
/// Acknowledge a sync event.
pub const ACK_SYNC: Op = other("kms.secrets.ack-sync", 204);

/// The verb acknowledging an event of `kind`.
pub fn ack(kind: EventKind) -> &'static Op {
    match kind {
        EventKind::Rotate => &ACK_ROTATE,
        EventKind::Disable => &ACK_DISABLE,
        EventKind::Enable => &ACK_ENABLE,
        EventKind::Delete => &ACK_DELETE,
        EventKind::Restore => &ACK_RESTORE,
        EventKind::Purge => &ACK_PURGE,
        EventKind::Sync => &ACK_SYNC,
    }
}

// ---- audit ----
/// Read the instance's audit events.
pub const LIST_AUDIT_EVENTS: Op = op("kms.auditevents.list", O::ReadAuditEvents, 200);
/// Verify the audit chain from its newest signed checkpoint to its head (the same role: the
/// trail's integrity is part of reading it).
pub const VERIFY_AUDIT_CHAIN: Op = op("kms.auditevents.verify", O::ReadAuditEvents, 200);

// ---- KMIP management ----
/// Create a KMIP adapter or certificate.
pub const KMIP_CREATE: Op = op("kms.kmip-management.create", O::KmipWrite, 201);
/// List KMIP adapters, certificates or objects.
pub const KMIP_LIST: Op = op("kms.kmip-management.list", O::KmipRead, 200);
/// Read a KMIP adapter, certificate or object.
pub const KMIP_READ: Op = op("kms.kmip-management.read", O::KmipRead, 200);
/// Delete a KMIP adapter, certificate or object.
pub const KMIP_DELETE: Op = op("kms.kmip-management.delete", O::KmipWrite, 204);

// ---- KMIP protocol: a client of an adapter, over the KMIP listener ----
/// Create a symmetric key.
pub const KMIP_OBJECT_CREATE: Op = op("kms.kmip.create", O::KmipWrite, 201);
/// Create an RSA key pair.
pub const KMIP_OBJECT_CREATE_KEY_PAIR: Op = op("kms.kmip.create-key-pair", O::KmipWrite, 201);
/// Register an object the client brings.
pub const KMIP_OBJECT_REGISTER: Op = op("kms.kmip.register", O::KmipWrite, 201);
/// Get an object (its material).
pub const KMIP_OBJECT_GET: Op = op("kms.kmip.get", O::KmipRead, 200);
/// Get an object's attributes.
pub const KMIP_OBJECT_GET_ATTRIBUTES: Op = op("kms.kmip.get-attributes", O::KmipRead, 200);
/// List an object's attribute names.
pub const KMIP_OBJECT_GET_ATTRIBUTE_LIST: Op = op("kms.kmip.get-attribute-list", O::KmipRead, 200);
/// Add, modify or delete an attribute.
pub const KMIP_OBJECT_SET_ATTRIBUTE: Op = op("kms.kmip.set-attribute", O::KmipWrite, 200);
/// Locate objects.
pub const KMIP_OBJECT_LOCATE: Op = op("kms.kmip.locate", O::KmipRead, 200);
/// Activate an object.
pub const KMIP_OBJECT_ACTIVATE: Op = op("kms.kmip.activate", O::KmipWrite, 200);
/// Revoke an object.
pub const KMIP_OBJECT_REVOKE: Op = op("kms.kmip.revoke", O::KmipWrite, 200);
/// Destroy an object.
pub const KMIP_OBJECT_DESTROY: Op = op("kms.kmip.destroy", O::KmipWrite, 200);
/// Encrypt, decrypt, sign, verify or MAC with an object.
pub const KMIP_OBJECT_CRYPTO: Op = op("kms.kmip.crypto", O::KmipRead, 200);
/// Check an object, or get a usage allocation.
pub const KMIP_OBJECT_CHECK: Op = op("kms.kmip.check", O::KmipRead, 200);
/// Query the server, or discover its versions.
pub const KMIP_QUERY: Op = op("kms.kmip.query", O::KmipRead, 200);
/// A client certificate the listener refused.
pub const KMIP_AUTHENTICATE: Op = other("kms.kmip.authenticate", 200);

// ---- identity and access (account administration) ----
/// Manage identities and access: what every verb below is checked against.
pub const MANAGE_ACCESS: Op = op("iam.policy.manage", O::ManageAccess, 200);
/// List the account's instances.
pub const LIST_INSTANCES: Op = op("kms.instance.list", O::ManageAccess, 200);
/// Create an instance.
pub const CREATE_INSTANCE: Op = op("kms.instance.create", O::ManageAccess, 201);
/// Create an identity.
pub const CREATE_IDENTITY: Op = op("iam-identity.identity.create", O::ManageAccess, 201);
/// List identities.
pub const LIST_IDENTITIES: Op = op("iam-identity.identity.list", O::ManageAccess, 200);
/// Lock an identity.
pub const LOCK_IDENTITY: Op = op("iam-identity.identity.lock", O::ManageAccess, 204);
/// Unlock an identity.
pub const UNLOCK_IDENTITY: Op = op("iam-identity.identity.unlock", O::ManageAccess, 204);
/// Delete an identity.
pub const DELETE_IDENTITY: Op = op("iam-identity.identity.delete", O::ManageAccess, 204);
/// Create an API key.
pub const CREATE_API_KEY: Op = op("iam-identity.apikey.create", O::ManageAccess, 201);
/// List API keys.
pub const LIST_API_KEYS: Op = op("iam-identity.apikey.list", O::ManageAccess, 200);
/// Lock an API key.
pub const LOCK_API_KEY: Op = op("iam-identity.apikey.lock", O::ManageAccess, 204);
/// Unlock an API key.
pub const UNLOCK_API_KEY: Op = op("iam-identity.apikey.unlock", O::ManageAccess, 204);
/// Delete an API key.
pub const DELETE_API_KEY: Op = op("iam-identity.apikey.delete", O::ManageAccess, 204);
/// Create an access policy.
pub const CREATE_POLICY: Op = op("iam.policy.create", O::ManageAccess, 201);
/// List access policies.
pub const LIST_POLICIES: Op = op("iam.policy.list", O::ManageAccess, 200);
/// Delete an access policy.
pub const DELETE_POLICY: Op = op("iam.policy.delete", O::ManageAccess, 204);
/// Create a service authorization.
pub const CREATE_AUTHORIZATION: Op = op("iam.authorization.create", O::ManageAccess, 201);
/// List service authorizations.
pub const LIST_AUTHORIZATIONS: Op = op("iam.authorization.list", O::ManageAccess, 200);
/// Delete a service authorization.
pub const DELETE_AUTHORIZATION: Op = op("iam.authorization.delete", O::ManageAccess, 204);

// ---- authentication ----
/// Exchange an API key for tokens (`grant_type=urn:ibm:params:oauth:grant-type:apikey`).
pub const API_KEY_LOGIN: Op = other("iam-identity.apikey.login", 200);
/// Exchange a refresh token for new tokens (`grant_type=refresh_token`).
pub const REFRESH_TOKEN_LOGIN: Op = other("iam-identity.refresh-token.login", 200);
/// A request to the KMS API whose authentication was refused: only ever recorded as a failure.
pub const AUTHENTICATE: Op = other("kms.secrets.authenticate", 401);

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.action)
    }
}
