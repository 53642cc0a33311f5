//! Keyward's domain: root and standard keys, their versions and lifecycle, audit events, and the
//! [`KeyService`] that every transport (REST today, KMIP later) calls.
//!
//! It owns the rules (which state permits which operation, what a key record must contain to be
//! trusted) and the seams to the outside: [`Custody`] holds the master keys, [`Store`] persists
//! records and audit events. This crate does no I/O of its own and knows no HTTP, SQL or TTLV;
//! its types are not `Serialize`, so wire formats live at the edges.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod audit;
mod cache;
mod custody;
mod error;
mod ids;
mod key;
mod lifecycle;
mod service;
mod store;

pub use audit::{AuditEvent, Initiator, Outcome};
pub use custody::{Custody, CustodyError, WrappedMaterial};
pub use error::KeyError;
pub use ids::{InstanceId, KeyId, KeyVersionId, ParseIdError};
pub use key::{ALLOWED_ROOT_KEY_BYTES, KeyKind, KeyRecord, KeyVersion, MAX_STANDARD_KEY_BYTES};
pub use lifecycle::{Action, KeyState};
pub use service::{
    Caller, Clock, KeyFilter, KeyService, LifecycleConfig, MAX_AAD_ITEM_CHARS, MAX_AAD_ITEMS,
    MAX_DEK_BYTES, NewKey, RewrapOutput, SystemClock, UnwrapOutput, WrapOutput,
};
pub use store::{ApiKeyRecord, InstanceRecord, SigningKeyRecord, Store, StoreError};

pub use keyward_crypto::Secret;
