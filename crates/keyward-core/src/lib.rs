//! Keyward's domain: root and standard keys, their versions and lifecycle, audit events, and the
//! [`KeyService`] that every transport (REST today, KMIP later) calls.
//!
//! It owns the rules (which state permits which operation, what a key record must contain to be
//! trusted) and the seams to the outside: [`Custody`] holds the master keys, [`Store`] persists
//! records and audit events. This crate does no I/O of its own and knows no HTTP, SQL or TTLV;
//! its types are not `Serialize`, so wire formats live at the edges (the one exception: an instance
//! policy's attributes are stored as canonical JSON, see [`InstancePolicy`]).

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod access;
mod aggregate;
mod audit;
mod cache;
mod caller;
mod custody;
mod error;
mod events;
mod identity;
mod ids;
mod key;
mod kmip;
mod lifecycle;
pub mod op;
mod pipeline;
mod policy;
mod rewrap;
mod service;
mod store;
mod verified;

pub use access::{Denial, Grant, Grants, OPERATIONS, Operation, Role, Scope, Target};
pub use aggregate::{CryptoAggregation, MAX_BUCKETS};
pub use audit::{
    AuditCheckpoint, AuditEvent, AuditPrune, AuditQuery, BreakKind, ChainBreak, ChainReport,
    ChainVerifier, ChainedEvent, GENESIS_HASH, Initiator, Outcome, chain_hash, checkpoint_bytes,
    time_nanos,
};
pub use custody::{
    Custody, CustodyError, InlineKeygen, TransitKeyPair, TransitKeygen, WrappedMaterial,
};
pub use error::{KeyError, Rule};
pub use events::{
    AdopterState, Deletion, DeliveryJob, EventAckRecord, EventKind, EventRecord, KeyNotice,
    RegistrationChange, RegistrationFilter, RegistrationRecord, RegistrationStore,
    SubscriptionRecord,
};
pub use identity::{AccessPolicyRecord, AuthorizationRecord, IdentityKind, IdentityRecord};
pub use ids::{IdOrder, InstanceId, KeyId, KeyVersionId, ParseIdError};
pub use key::{
    ALLOWED_ROOT_KEY_BYTES, DEFAULT_KEY_RING, DeletionAuthorization, DualAuthPolicy, KeyKind,
    KeyRecord, KeyVersion, MAX_STANDARD_KEY_BYTES, PolicyMeta, RotationPolicy,
};
pub use policy::{
    AllowedNetwork, CreateImportAccess, InstancePolicies, InstancePolicy, PolicyKind,
    PolicySetting, ROTATION_MONTHS,
};

pub use caller::{Authenticated, Caller};
pub use kmip::{
    AdapterDeletion, AdapterInsert, CertificateInsert, KMIP_PROFILE_NATIVE, KmipAdapterRecord,
    KmipCertificateRecord, KmipClient, KmipError, KmipObjectFilter, KmipObjectRecord, KmipService,
    KmipSession, KmipStore, MAX_KMIP_ADAPTERS, MAX_KMIP_ATTRIBUTES_BYTES, MAX_KMIP_CERTIFICATES,
    MAX_KMIP_MATERIAL_BYTES, NewKmipAdapter, NewKmipCertificate, NewKmipObject, Page, kmip_subject,
    validate_certificate,
};
pub use lifecycle::{Action, KeyState};
pub use op::Op;
pub use pipeline::{Actor, Ctx, Failure, Pipeline, Sampled};
pub use rewrap::{RewrapError, RewrapPass, RewrapStore, WrappedItem, rewrap_item, rewrap_pass};
pub use service::{
    AUDIT_TAIL_MAX, Clock, Compare, DateFilter, IMPORT_TOKEN_RETRIEVALS, IMPORT_TOKEN_SECONDS,
    ImportTokenRecord, InstancePolicyUpdate, KeyDate, KeyFilter, KeyPolicyUpdate, KeySearch,
    KeyService, LifecycleConfig, MAX_AAD_ITEM_CHARS, MAX_AAD_ITEMS, MAX_ALIASES_PER_KEY,
    MAX_DEK_BYTES, Material, NewKey, PolicyOverrides, RegistrationSpec, RegistrationView,
    RegistrationWrite, RewrapOutput, SchedulerReport, SecureImport, SortKey, SystemClock,
    TailReport, UnwrapOutput, WrapOutput,
};
pub use store::{
    AliasRecord, ApiKeyRecord, AuditStore, DueWork, IamStore, InstanceRecord, KeyRingRecord,
    RefreshUse, RingDeletion, SigningKeyRecord, Store, StoreError, Successor,
};

pub use verified::{Signed, Unverified, Verified};

pub use keyward_crypto::Secret;
