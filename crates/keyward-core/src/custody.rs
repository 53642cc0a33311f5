//! The `Custody` seam: whatever holds the master key encryption key (MKEK) and the record-signing
//! key. Software keystore today, PKCS#11 HSMs later; the rest of Keyward sees only this trait.

use std::sync::Arc;

use keyward_crypto::Secret;

/// Key material wrapped by a custody master key. Safe to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedMaterial {
    /// Which master key (and version) wrapped it, e.g. `software:mkek:1`.
    pub wrapping_key: String,
    /// The wrapped bytes.
    pub bytes: Vec<u8>,
}

/// A custody backend failure, translated at the seam.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// The backend cannot serve now (HSM gone, login lost); retrying later may succeed.
    #[error("custody backend unavailable: {0}")]
    Unavailable(String),
    /// Wrapped material or a record signature did not verify.
    #[error("custody integrity check failed")]
    IntegrityFailure,
    /// The material was wrapped by a master key this backend does not hold.
    #[error("unknown wrapping key {0}")]
    UnknownWrappingKey(String),
    /// The backend does not implement this operation.
    #[error("operation not supported by this custody backend: {0}")]
    Unsupported(&'static str),
    /// Any other backend failure; detail for the log only.
    #[error("custody backend error: {0}")]
    Internal(String),
}

/// Holds the key hierarchy's roots. Implementations keep master keys inside themselves: no
/// method returns the MKEK or the signing key.
pub trait Custody: Send + Sync {
    /// A short name for logs and health output (`software`, `pkcs11`).
    fn name(&self) -> &'static str;

    /// New random key material of `len` bytes, generated where the backend prefers.
    fn generate_material(&self, len: usize) -> Result<Secret, CustodyError> {
        keyward_crypto::random_secret(len).map_err(|e| CustodyError::Internal(e.to_string()))
    }

    /// The name of the MKEK (and version) that [`Custody::wrap_material`] uses now, as it appears
    /// in [`WrappedMaterial::wrapping_key`].
    fn current_wrapping_key(&self) -> Result<String, CustodyError>;

    /// Wraps key material under the current MKEK.
    fn wrap_material(&self, material: &Secret) -> Result<WrappedMaterial, CustodyError>;

    /// Unwraps key material; fails if it was altered or the wrapping key is unknown.
    fn unwrap_material(&self, wrapped: &WrappedMaterial) -> Result<Secret, CustodyError>;

    /// Each token (HSM) the backend spreads over, in failover order, with whether it is usable
    /// now (a failed token is probed again once its backoff has passed); empty for a backend
    /// without tokens. May call into the tokens: run it off the async workers.
    fn tokens(&self) -> Vec<(String, bool)> {
        Vec::new()
    }

    /// Signs a record's canonical bytes with the record-signing key.
    fn sign_record(&self, data: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// Verifies a record signature (in constant time where it is a MAC).
    fn verify_record(&self, data: &[u8], signature: &[u8]) -> Result<(), CustodyError>;

    /// A new RSA-4096 transit key pair for secure import: the public key (SubjectPublicKeyInfo
    /// DER) and the private key, wrapped by the MKEK like any root key material.
    ///
    /// The pair is made by aws-lc-rs on the host and exists at rest only wrapped, so it survives
    /// restarts and fails over with the MKEK. A backend whose HSM can run Key Protect's
    /// `RSAES_OAEP_SHA_256` on token-resident pairs may override both methods; SoftHSM2 2.6.1
    /// cannot (its C_DecryptInit refuses OAEP with SHA-256: CKR_ARGUMENTS_BAD).
    fn generate_transit_key(&self) -> Result<(Vec<u8>, WrappedMaterial), CustodyError> {
        let (pkcs8, public) = keyward_crypto::transit_generate()
            .map_err(|e| CustodyError::Internal(e.to_string()))?;
        Ok((public, self.wrap_material(&pkcs8)?))
    }

    /// Decrypts key material sent to a transit key with RSA-OAEP. The private key is unwrapped
    /// by the MKEK inside the backend and lives only in a zeroizing buffer for this call.
    fn transit_decrypt(
        &self,
        private: &WrappedMaterial,
        oaep: keyward_crypto::Oaep,
        ciphertext: &[u8],
    ) -> Result<Secret, CustodyError> {
        let pkcs8 = self.unwrap_material(private)?;
        keyward_crypto::transit_decrypt(&pkcs8, oaep, ciphertext)
            .map_err(|_| CustodyError::IntegrityFailure)
    }
}

/// A transit key pair: the public key (SubjectPublicKeyInfo DER) and the wrapped private key.
pub type TransitKeyPair = (Vec<u8>, WrappedMaterial);

/// Where [`Custody::generate_transit_key`] runs. An RSA-4096 pair takes about a second of one
/// core: made on the async workers that serve every request, four concurrent import-token
/// requests took wrap from 614 to 1 request per second for every instance (issue 18). The
/// runtime's implementation runs it on a bounded pool of blocking threads; [`InlineKeygen`],
/// the default, runs it in place (for tests and tools that serve nothing else).
#[async_trait::async_trait]
pub trait TransitKeygen: Send + Sync {
    /// A new transit key pair made by `custody`.
    async fn generate(&self, custody: Arc<dyn Custody>) -> Result<TransitKeyPair, CustodyError>;
}

/// Makes transit keys on the calling thread.
pub struct InlineKeygen;

#[async_trait::async_trait]
impl TransitKeygen for InlineKeygen {
    async fn generate(&self, custody: Arc<dyn Custody>) -> Result<TransitKeyPair, CustodyError> {
        custody.generate_transit_key()
    }
}
