//! The domain error of every key operation. The server maps each variant to a Key Protect status
//! and reason code in one place; no variant carries key material.

use crate::{Action, CustodyError, KeyState, StoreError};

/// Why a key operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key in the caller's instance (also returned for keys of other instances).
    #[error("key not found")]
    NotFound,
    /// The caller may see the target but holds no role that allows the operation.
    #[error(
        "the caller does not have access to this operation ({}); it needs one of the roles that allow it",
        .0.action()
    )]
    Forbidden(crate::Operation),
    /// The key's state does not permit the action.
    #[error("the key is in state {} and cannot {}", .state.code(), .action.name())]
    InvalidState {
        /// The key's current state.
        state: KeyState,
        /// What was attempted.
        action: Action,
    },
    /// A field of the request is invalid; the message names it and says what is accepted.
    #[error("{0}")]
    InvalidInput(String),
    /// The operation needs a root key but the key is a standard key (or the reverse).
    #[error("{0}")]
    WrongKeyKind(&'static str),
    /// The ciphertext is malformed, altered, of another key, or its AAD does not match.
    #[error("the ciphertext is invalid, altered, or does not belong to this key and AAD")]
    InvalidCiphertext,
    /// Key Protect's rule: a key is rotated by hand at most once per interval.
    #[error(
        "this key was rotated less than {0} seconds ago: only one rotation per interval is permitted"
    )]
    RotationTooSoon(u64),
    /// Key Protect's rule: a disabled key is enabled, and a deleted key restored, only some
    /// time after the disable or delete.
    #[error(
        "the key changed state less than {0} seconds ago: Key Protect enables a disabled key, and restores a deleted one, only {0} seconds after the disable or delete; run the same request again in {0} seconds"
    )]
    ChangeTooSoon(u64),
    /// An imported key is rotated with new material, which the request lacks.
    #[error(
        "this root key was created with user-supplied material: send new material (payload) to rotate it"
    )]
    PayloadRequired,
    /// Another request changed the key at the same time; retry.
    #[error("the key was modified concurrently; retry the request")]
    Conflict,
    /// A stored record failed its integrity check: it was altered outside Keyward. Never used.
    #[error("stored key record failed its integrity check")]
    IntegrityFailure,
    /// A Key Protect rule refused the request; the message says which and why.
    #[error("{1}")]
    Refused(Rule, String),
    /// The custody backend failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A Key Protect rule that refused a request. Each has its own reason code and status, mapped by
/// [`Rule::reason`], the one table the API and the audit trail both read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Restore after the restore window (30 days after delete).
    RestoreWindowPassed,
    /// Restore of an imported key with material other than the key's.
    RestoreMaterialMismatch,
    /// Restore of an imported key without its material.
    RestorePayloadRequired,
    /// The key is past its expiration date (restore of an expired key).
    KeyExpired,
    /// Purge earlier than the purge wait (4 hours after delete).
    PurgeTooEarly,
    /// Delete of a dual-authorization key that no other identity authorized, or that the same
    /// identity authorized.
    DualAuthRequired,
    /// `setKeyForDeletion` on a key without a dual-authorization policy.
    DualAuthNotEnabled,
    /// A dual-authorization policy cannot be removed once set.
    DualAuthPermanent,
    /// The alias is used by another key of the instance.
    AliasExists,
    /// A key has at most five aliases.
    TooManyAliases,
    /// No such alias on the key.
    AliasNotFound,
    /// A key ring with this id exists (or the instance has as many as it may).
    KeyRingExists,
    /// No such key ring.
    KeyRingNotFound,
    /// The key ring holds deleted keys and `force` was not given.
    KeyRingNotEmpty,
    /// The key ring holds keys that are not deleted.
    KeyRingKeysNotDeleted,
    /// The `default` key ring cannot be created or deleted.
    DefaultKeyRing,
    /// The instance's keyCreateImportAccess policy forbids this creation or import.
    CreateImportDenied,
    /// The instance has no import token.
    ImportTokenNotFound,
    /// The import token expired or has no retrievals left.
    ImportTokenExpired,
    /// The encrypted nonce does not open to the token's nonce.
    IncorrectNonce,
    /// The IV of the encrypted nonce is malformed.
    IncorrectNonceIv,
    /// Delete without `force` of a key that protects registered resources.
    ProtectedResource,
    /// Delete of a key with a `preventKeyDeletion` registration, even forced.
    PreventKeyDeletion,
    /// Registrations are written by service identities only.
    ServiceOnly,
    /// A registration of that resource on that key exists.
    RegistrationExists,
    /// A key has as many registrations as it may (Keyward's bound; issue 18, item 7).
    TooManyRegistrations,
    /// No such registration on the key.
    RegistrationNotFound,
    /// The registration belongs to another service identity.
    RegistrationOwner,
    /// Registrations are for root keys only.
    RegistrationRootKeyRequired,
    /// The registration names a key version the key does not have.
    KeyVersionInvalid,
    /// No such event addressed to the caller.
    EventNotFound,
    /// The caller has no webhook subscription in the instance.
    SubscriptionNotFound,
    /// Locking or deleting the API key the request is authenticated with.
    ApiKeyInUse,
    /// Locking or deleting the last unlocked API key of the account's usable administrators.
    LastAdministratorKey,
}

impl Rule {
    /// The status Key Protect answers with and its reason code (its error reference; where it
    /// documents none, a code in its style, listed in ARCHITECTURE.md). The one table from rule
    /// to (status, reason code).
    pub fn reason(self) -> (u16, &'static str) {
        use Rule::*;
        match self {
            RestoreWindowPassed => (400, "KEY_RESTORE_EXPIRED"),
            RestoreMaterialMismatch => (400, "INVALID_FIELD_ERR"),
            RestorePayloadRequired => (400, "KEY_PAYLOAD_REQ_ERR"),
            KeyExpired => (400, "KEY_EXPIRED_ERR"),
            DualAuthPermanent => (400, "INVALID_FIELD_ERR"),
            TooManyAliases => (400, "KEY_ALIAS_QUOTA_ERR"),
            TooManyRegistrations => (400, "REGISTRATION_QUOTA_ERR"),
            DefaultKeyRing => (400, "INVALID_FIELD_ERR"),
            IncorrectNonce => (400, "INCORRECT_NONCE_ERR"),
            IncorrectNonceIv => (400, "INCORRECT_NONCE_IV_ERR"),
            RegistrationRootKeyRequired => (400, "KEY_ROOT_REQ_REG_ERR"),
            ServiceOnly => (403, "SERVICE_ONLY_ERR"),
            RegistrationOwner => (403, "RESOURCE_OWNER_ERR"),
            AliasNotFound => (404, "NOT_FOUND_ERR"),
            KeyRingNotFound => (404, "KEY_RING_NOT_FOUND_ERR"),
            ImportTokenNotFound => (404, "IMPORT_TOKEN_NOT_FOUND_ERR"),
            // Key Protect documents no code for these three; Keyward's choices.
            RegistrationNotFound => (404, "REGISTRATION_NOT_FOUND_ERR"),
            EventNotFound => (404, "EVENT_NOT_FOUND_ERR"),
            SubscriptionNotFound => (404, "NOT_FOUND_ERR"),
            KeyVersionInvalid => (422, "KEY_VERSION_INVALID"),
            PurgeTooEarly => (409, "REQ_TOO_EARLY_ERR"),
            DualAuthRequired => (409, "AUTHORIZATIONS_NOT_MET"),
            DualAuthNotEnabled => (409, "NOT_DUAL_AUTH_ERR"),
            AliasExists => (409, "KEY_ALIAS_NOT_UNIQUE_ERR"),
            KeyRingExists => (409, "KEY_RING_ALREADY_EXISTS_ERR"),
            KeyRingNotEmpty => (409, "KEY_RING_NOT_EMPTY_ERR"),
            KeyRingKeysNotDeleted => (409, "KEY_RING_KEYS_NOT_DELETED_ERR"),
            CreateImportDenied => (409, "KEY_CREATE_IMPORT_ACCESS_ERR"),
            ImportTokenExpired => (409, "IMPORT_TOKEN_EXPIRED_ERR"),
            ProtectedResource => (409, "PROTECTED_RESOURCE_ERR"),
            PreventKeyDeletion => (409, "PREV_KEY_DEL_ERR"),
            RegistrationExists => (409, "REGISTRATION_ALREADY_EXISTS_ERR"),
            // Keyward's own (IBM IAM has no such rule): an administrator could lock itself,
            // or everyone, out (issue 18).
            ApiKeyInUse => (409, "API_KEY_IN_USE_ERR"),
            LastAdministratorKey => (409, "LAST_ADMIN_API_KEY_ERR"),
        }
    }
}
