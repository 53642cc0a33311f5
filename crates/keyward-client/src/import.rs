//! Import tokens and secure import, with the client side done as Key Protect's clients do it:
//! the material RSA-OAEP-encrypted (SHA-256, MGF1-SHA-256) to the token's public key, and the
//! token's nonce AES-GCM-sealed under the material.

use aws_lc_rs::aead::{AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_api::{ImportTokenRequest, ImportTokenView, KeyCreate, RotateRequest};
use reqwest::Method;

use crate::{Client, ClientError};

/// The `encryptionAlgorithm` name of what [`seal_for_import`] does.
pub const IMPORT_ALGORITHM: &str = "RSAES_OAEP_SHA_256";

/// Material sealed for an import token: the fields of a secure create or rotate, all base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedMaterial {
    /// The material, RSA-OAEP-encrypted to the token's public key.
    pub payload: String,
    /// The token's nonce, AES-GCM-sealed under the material (tag appended).
    pub encrypted_nonce: String,
    /// The 12-byte GCM IV.
    pub iv: String,
    /// `RSAES_OAEP_SHA_256`.
    pub encryption_algorithm: String,
}

impl SealedMaterial {
    /// Puts the sealed fields into a key-create body.
    pub fn apply_to(self, spec: &mut KeyCreate) {
        spec.payload = Some(self.payload.into());
        spec.encrypted_nonce = Some(self.encrypted_nonce);
        spec.iv = Some(self.iv);
        spec.encryption_algorithm = Some(self.encryption_algorithm);
    }

    /// The sealed fields as a rotate body.
    pub fn into_rotate(self) -> RotateRequest {
        RotateRequest {
            payload: Some(self.payload.into()),
            encrypted_nonce: Some(self.encrypted_nonce),
            iv: Some(self.iv),
            encryption_algorithm: Some(self.encryption_algorithm),
        }
    }
}

fn bad(what: &str) -> ClientError {
    ClientError::Decode(format!("import token: {what}"))
}

/// Seals `material` (16, 24 or 32 bytes) for the token `GET /api/v2/import_token` returned
/// (the one carrying `payload` and `nonce`), with a fresh random IV.
pub fn seal_for_import(
    token: &ImportTokenView,
    material: &[u8],
) -> Result<SealedMaterial, ClientError> {
    let aes = match material.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        n => {
            return Err(ClientError::Config(format!(
                "key material must be 16, 24 or 32 bytes, not {n}"
            )));
        }
    };
    let pem_b64 = token
        .payload
        .as_deref()
        .ok_or_else(|| bad("no public key"))?;
    let pem = B64
        .decode(pem_b64)
        .map_err(|_| bad("public key is not base64"))?;
    let pem = String::from_utf8(pem).map_err(|_| bad("public key is not PEM"))?;
    if !pem.contains("-----BEGIN PUBLIC KEY-----") {
        return Err(bad("public key is not a PEM PUBLIC KEY"));
    }
    let der_b64: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    let der = B64
        .decode(der_b64)
        .map_err(|_| bad("public key PEM body is not base64"))?;
    let public = PublicEncryptingKey::from_der(&der)
        .map_err(|e| bad(&format!("public key rejected: {e}")))?;
    let public = OaepPublicEncryptingKey::new(public)
        .map_err(|_| bad("public key unusable for RSA-OAEP"))?;
    let nonce = B64
        .decode(token.nonce.as_deref().ok_or_else(|| bad("no nonce"))?)
        .map_err(|_| bad("nonce is not base64"))?;

    let mut ct = vec![0u8; public.ciphertext_size()];
    let ct = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, material, &mut ct, None)
        .map_err(|_| ClientError::Config("RSA-OAEP encryption failed".into()))?;

    let mut iv = [0u8; 12];
    aws_lc_rs::rand::fill(&mut iv).map_err(|_| ClientError::Config("no randomness".into()))?;
    let key = LessSafeKey::new(
        UnboundKey::new(aes, material).map_err(|_| ClientError::Config("AES key".into()))?,
    );
    let mut sealed = nonce;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(iv), Aad::empty(), &mut sealed)
        .map_err(|_| ClientError::Config("AES-GCM sealing failed".into()))?;

    Ok(SealedMaterial {
        payload: B64.encode(ct),
        encrypted_nonce: B64.encode(sealed),
        iv: B64.encode(iv),
        encryption_algorithm: IMPORT_ALGORITHM.to_owned(),
    })
}

impl Client {
    /// Creates the instance's import token (`POST /api/v2/import_token`), replacing any other:
    /// `expiration` in seconds (300 to 86400; server default 600), `max_allowed_retrievals`
    /// 1 to 500 (server default 1).
    pub async fn create_import_token(
        &self,
        expiration: Option<u32>,
        max_allowed_retrievals: Option<u32>,
    ) -> Result<ImportTokenView, ClientError> {
        let req = self
            .request(Method::POST, "/api/v2/import_token")
            .await?
            .json(&ImportTokenRequest {
                expiration: expiration.map(f64::from),
                max_allowed_retrievals: max_allowed_retrievals.map(f64::from),
            });
        self.json(req).await
    }

    /// The import token with its public key and nonce (`GET /api/v2/import_token`); each call
    /// uses up one of its retrievals.
    pub async fn get_import_token(&self) -> Result<ImportTokenView, ClientError> {
        let req = self.request(Method::GET, "/api/v2/import_token").await?;
        self.json(req).await
    }

    /// Retrieves the import token and seals `material` for it.
    pub async fn seal_with_import_token(
        &self,
        material: &[u8],
    ) -> Result<SealedMaterial, ClientError> {
        let token = self.get_import_token().await?;
        seal_for_import(&token, material)
    }

    /// Rotates an imported key to new material sealed for the import token.
    pub async fn rotate_sealed(&self, id: &str, sealed: SealedMaterial) -> Result<(), ClientError> {
        self.action_no_content(id, keyward_api::KeyAction::Rotate, &sealed.into_rotate())
            .await
    }
}
