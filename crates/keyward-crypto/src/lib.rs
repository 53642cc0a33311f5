//! Keyward's cryptographic primitives, all on aws-lc-rs: secret byte strings that zeroize on drop,
//! AES-GCM for data encryption keys, AES key wrap with padding (RFC 5649) for key material at rest,
//! HMAC for record integrity, the one encoder and decoder of the DEK ciphertext format, and the one
//! canonical encoder of the bytes signatures and hashes cover.
//!
//! This crate does no I/O and knows nothing of keys' lifecycle, HTTP or storage. Nothing here is
//! hand-rolled cryptography: every primitive is a call into aws-lc-rs.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod canonical;
mod ciphertext;
mod error;
pub mod objects;
mod primitives;
mod secret;
mod transit;

pub use canonical::{Canonical, Framing};
pub use ciphertext::{DekCiphertext, FORMAT_V1, FORMAT_V2, VERSION_ID_LEN};
pub use error::CryptoError;
pub use primitives::{
    Mac, aead_open, aead_seal, hkdf_sha256, hmac_sha256, hmac_verify, kwp_unwrap, kwp_wrap,
    random_array, random_secret, sha256,
};
pub use secret::Secret;
pub use transit::{Oaep, public_key_pem, transit_decrypt, transit_generate};

/// Hex for the known-answer tests' vectors.
#[cfg(test)]
mod test_hex {
    /// The bytes `s` spells in hex (an odd or non-hex `s` is a test bug: it panics).
    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
