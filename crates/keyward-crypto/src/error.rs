//! The one error type of keyward-crypto. Variants never carry key material.

/// What went wrong in a cryptographic operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authenticated decryption or unwrapping failed: wrong key, wrong AAD or altered bytes.
    #[error("authentication failed: the data was altered, or belongs to another key or AAD")]
    AuthenticationFailed,
    /// A ciphertext could not be parsed.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// A key had a length the algorithm does not accept.
    #[error("invalid key length {0} bytes")]
    InvalidKeyLength(usize),
    /// Bytes that are not a valid key for the operation (an AES key of another length, a
    /// malformed RSA key).
    #[error("not a valid key for this operation")]
    InvalidKey,
    /// The system random number generator failed.
    #[error("random number generator failure")]
    Rng,
    /// aws-lc-rs refused an operation for a reason it does not detail.
    #[error("cryptographic operation failed")]
    Unspecified,
}
