//! Keyward's identity layer, compatible with IBM Cloud IAM as the Key Protect SDKs use it:
//! API keys (shown once, stored only as hashes) are exchanged for RS256 access tokens, which the
//! KMS API verifies against keys only this server holds.
//!
//! This crate owns identity: identities, API keys, access policies and service authorizations
//! ([`IamService`]), the token exchange and refresh, and resolving a verified token to a
//! [`keyward_core::Caller`] (the grants cache and its invalidation, the per-identity rate limit),
//! and the per-source limits and audit sampling of unauthenticated requests.
//! It alone makes an authenticated `Caller`. It does not decide what a caller may do with a key
//! (core's `Grants::check` does) and it does no I/O: persistence goes through
//! [`keyward_core::Store`], and every verb runs through core's pipeline, so it is audited.

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
mod api_key;
mod exchange;
mod service;
mod sources;
mod token;

pub use access::{AccessLimits, AuthError, Request, Resolved};
pub use api_key::{ApiKey, hash_secret, parse_api_key, verify_secret};
pub use exchange::{Login, LoginError, Refused, Tokens};
pub use service::{CreatedApiKey, IamService, NewIdentity, Principal};
pub use sources::{Limit, Source, SourceLimits, Throttled};
pub use token::{
    AccessToken, Claims, ISSUER, REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_TTL_SECS, TokenError,
    TokenIssuer, TokenVerifier, new_refresh_token, refresh_token_hash, sub_type_of,
};
