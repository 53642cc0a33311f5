//! Keyward's KMIP server. A client authenticates with a certificate registered on a KMIP
//! adapter (mutual TLS); every object it creates is sealed under the adapter's root key, so Key
//! Protect's lifecycle crosses into KMIP: disable the root key and nothing opens, purge it and
//! nothing ever will.
//!
//! - `ttlv.rs`: the binary TTLV codec (bounded, strict, fuzzed);
//! - `tag.rs`, `enums.rs`: the specification's numbers;
//! - `message.rs`: request and response messages, versions, failures;
//! - `attrs.rs`: attributes in KMIP 1.x and 2.x form, and how they are stored;
//! - `ops.rs`: the operations, through keyward-core's `KmipSession` (authorize, audit, seal);
//! - `server.rs`: the listener: TLS, client certificates, framing, timeouts and bounds.
//!
//! The adapter, certificate and object records, their store and the session stay in
//! keyward-core: they are shared with the REST management API and sealed with the key
//! service's root keys, whose internals the core keeps private.

pub mod attrs;
pub mod enums;
pub mod message;
mod ops;
mod server;
pub mod tag;
pub mod ttlv;

pub use ops::run_batch;
pub use server::{KmipLimits, KmipServer, client_verifier};
