//! The domain error of every key operation. The server maps each variant to a Key Protect status
//! and reason code in one place; no variant carries key material.

use crate::{Action, CustodyError, KeyState, StoreError};

/// Why a key operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No such key in the caller's instance (also returned for keys of other instances).
    #[error("key not found")]
    NotFound,
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
    /// Key Protect's rule: a disabled key is enabled only some time after the disable.
    #[error(
        "the key was updated recently: a disabled key can be enabled {0} seconds after the disable; retry later"
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
    /// The custody backend failed.
    #[error(transparent)]
    Custody(#[from] CustodyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
