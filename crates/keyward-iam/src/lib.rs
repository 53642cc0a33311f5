//! Keyward's identity layer, compatible with IBM Cloud IAM as the Key Protect SDKs use it:
//! API keys (shown once, stored only as hashes) are exchanged for RS256 access tokens, which the
//! KMS API verifies against keys only this server holds.
//!
//! This crate issues and checks credentials; it does not decide what a caller may do with a key
//! (that is the access layer's job) and it does no I/O: persistence goes through
//! [`keyward_core::Store`] in the server.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod api_key;
mod token;

pub use api_key::{ApiKey, Minter, hash_secret, parse_api_key, verify_secret};
pub use token::{
    AccessToken, Claims, ISSUER, REFRESH_TOKEN_PREFIX, REFRESH_TOKEN_TTL_SECS, TokenError,
    TokenIssuer, TokenVerifier, new_refresh_token, refresh_token_hash, sub_type_of,
};
