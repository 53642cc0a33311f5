//! Secure import (Key Protect's import tokens): an instance asks for a token, receives the public
//! half of an RSA-4096 transit key and a nonce, and sends key material encrypted to it with
//! RSA-OAEP, with the nonce sealed by AES-GCM under the material itself. The material is
//! decrypted inside the custody backend and accepted only if it opens the nonce.

use std::ops::RangeInclusive;

use keyward_crypto::{Oaep, Secret};
use time::{Duration, OffsetDateTime};

use super::{Caller, KeyService, check_material_size};
use crate::access::Target;
use crate::op;
use crate::{KeyError, KeyKind, Rule, WrappedMaterial};

/// Lifetimes an import token may be given, in seconds (Key Protect: 300 to 86,400; default 600).
pub const IMPORT_TOKEN_SECONDS: RangeInclusive<u32> = 300..=86_400;
/// Retrievals an import token may allow (Key Protect: 1 to 500; default 1).
pub const IMPORT_TOKEN_RETRIEVALS: RangeInclusive<u32> = 1..=500;
const DEFAULT_SECONDS: u32 = 600;
const NONCE_BYTES: usize = 16;

/// An instance's import token. One live token per instance: a new one replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportTokenRecord {
    /// The instance.
    pub instance: crate::InstanceId,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When it stops being usable.
    pub expires_at: OffsetDateTime,
    /// Retrievals it allowed.
    pub max_retrievals: u32,
    /// Retrievals left.
    pub remaining: u32,
    /// The nonce the client seals with the material.
    pub nonce: Vec<u8>,
    /// The transit public key (SubjectPublicKeyInfo DER).
    pub public_key: Vec<u8>,
    /// The transit private key, usable only by the custody backend.
    pub private_key: WrappedMaterial,
    /// Who created it.
    pub created_by: String,
}

/// Key material a request carries.
#[derive(Debug)]
pub enum Material {
    /// In the clear (over TLS).
    Plain(Secret),
    /// Encrypted to the instance's import token.
    Secure(SecureImport),
}

/// Material encrypted to an import token, as Key Protect's clients send it.
#[derive(Debug, Clone)]
pub struct SecureImport {
    /// RSA-OAEP ciphertext of the material.
    pub encrypted_material: Vec<u8>,
    /// The token's nonce sealed with AES-GCM under the material.
    pub encrypted_nonce: Vec<u8>,
    /// The 12-byte GCM IV.
    pub iv: Vec<u8>,
    /// The OAEP variant.
    pub oaep: Oaep,
}

impl KeyService {
    /// Creates the instance's import token, replacing any other.
    pub async fn create_import_token(
        &self,
        caller: &Caller,
        expiration_secs: Option<u32>,
        max_retrievals: Option<u32>,
    ) -> Result<ImportTokenRecord, KeyError> {
        self.pipe
            .run_in(
                &op::CREATE_IMPORT_TOKEN,
                caller,
                Target::Instance,
                async |ctx| {
                    let secs = expiration_secs.unwrap_or(DEFAULT_SECONDS);
                    if !IMPORT_TOKEN_SECONDS.contains(&secs) {
                        return Err(KeyError::InvalidInput(
                            "expiration: 300 to 86400 seconds".into(),
                        ));
                    }
                    let max = max_retrievals.unwrap_or(1);
                    if !IMPORT_TOKEN_RETRIEVALS.contains(&max) {
                        return Err(KeyError::InvalidInput(
                            "maxAllowedRetrievals: 1 to 500".into(),
                        ));
                    }
                    // Off the async workers: see `TransitKeygen`.
                    let (public_key, private_key) =
                        self.keygen.generate(self.custody.clone()).await?;
                    let now = self.clock.now();
                    let token = ImportTokenRecord {
                        instance: caller.instance(),
                        created_at: now,
                        expires_at: now + Duration::seconds(i64::from(secs)),
                        max_retrievals: max,
                        remaining: max,
                        nonce: self
                            .custody
                            .generate_material(NONCE_BYTES)?
                            .expose()
                            .to_vec(),
                        public_key,
                        private_key,
                        created_by: caller.subject().to_owned(),
                    };
                    let event = ctx.record()?;
                    self.store.put_import_token(&token, &event).await?;
                    Ok(token)
                },
            )
            .await
    }

    /// Retrieves the instance's import token (its public key and nonce), counting a retrieval.
    pub async fn get_import_token(&self, caller: &Caller) -> Result<ImportTokenRecord, KeyError> {
        self.pipe
            .run_in(
                &op::READ_IMPORT_TOKEN,
                caller,
                Target::Instance,
                async |_| {
                    let now = self.clock.now();
                    match self
                        .store
                        .retrieve_import_token(caller.instance(), now)
                        .await?
                    {
                        Some(token) => Ok(token),
                        None => Err(self.token_refusal(caller, now).await?),
                    }
                },
            )
            .await
    }

    /// Why there is no usable token: none at all, or expired or used up.
    async fn token_refusal(
        &self,
        caller: &Caller,
        now: OffsetDateTime,
    ) -> Result<KeyError, KeyError> {
        Ok(match self.store.import_token(caller.instance()).await? {
            None => KeyError::Refused(
                Rule::ImportTokenNotFound,
                "the instance has no import token: create one with POST /api/v2/import_token"
                    .into(),
            ),
            Some(t) if t.expires_at <= now => KeyError::Refused(
                Rule::ImportTokenExpired,
                "the import token has expired: create a new one".into(),
            ),
            Some(_) => KeyError::Refused(
                Rule::ImportTokenExpired,
                "the import token has no retrievals left: create a new one".into(),
            ),
        })
    }

    /// The material a request carries, checked for its kind; secure material is decrypted
    /// inside custody and must open the token's nonce.
    pub(super) async fn material_in(
        &self,
        caller: &Caller,
        kind: KeyKind,
        material: Material,
        now: OffsetDateTime,
    ) -> Result<Secret, KeyError> {
        let secret = match material {
            Material::Plain(p) => p,
            Material::Secure(s) => {
                if kind != KeyKind::Root {
                    return Err(KeyError::InvalidInput(
                        "encryptedNonce: standard keys are not imported with an import token"
                            .into(),
                    ));
                }
                let token = match self.store.import_token(caller.instance()).await? {
                    Some(t) if t.expires_at > now => t,
                    _ => return Err(self.token_refusal(caller, now).await?),
                };
                let iv: [u8; 12] = s.iv.as_slice().try_into().map_err(|_| {
                    KeyError::Refused(Rule::IncorrectNonceIv, "iv: 12 bytes (base64)".into())
                })?;
                let material = self
                    .custody
                    .transit_decrypt(&token.private_key, s.oaep, &s.encrypted_material)
                    .map_err(|_| {
                        KeyError::InvalidInput(
                            "payload: not encrypted to this instance's import token with the \
                             given encryptionAlgorithm"
                                .into(),
                        )
                    })?;
                check_material_size(kind, material.len())?;
                let nonce = keyward_crypto::aead_open(&material, iv, &[], &s.encrypted_nonce)
                    .map_err(|_| {
                        KeyError::Refused(
                            Rule::IncorrectNonce,
                            "encryptedNonce: does not open to the import token's nonce with \
                             this material and iv"
                                .into(),
                        )
                    })?;
                if !nonce.ct_eq(&Secret::from_slice(&token.nonce)) {
                    return Err(KeyError::Refused(
                        Rule::IncorrectNonce,
                        "encryptedNonce: is not the import token's nonce".into(),
                    ));
                }
                material
            }
        };
        check_material_size(kind, secret.len())?;
        Ok(secret)
    }
}
