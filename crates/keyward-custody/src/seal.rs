//! Sealing the keystore (issue 18, item 17): `keystore.json` version 2 holds the version 1
//! document (MKEKs and the record-signing key) AES-256-GCM-encrypted under an unseal key, as
//! Vault seals its barrier. The unseal key is either a 256-bit key given at start (base64, from
//! a file or the environment) or derived from a passphrase with Argon2id; the file says which,
//! with the KDF's parameters, and those are bound to the ciphertext as AAD. Whoever reads the
//! data directory without the unseal secret gets no key.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_crypto::{Secret, aead_open, aead_seal, random_array};
use serde::{Deserialize, Serialize};

/// The sealed keystore's format version.
pub(crate) const SEALED_VERSION: u32 = 2;
/// Bound to every sealed keystore as AAD, with the seal's parameters.
const AAD_PREFIX: &[u8] = b"keyward keystore v2\0";
/// Shortest passphrase accepted when sealing.
pub const MIN_PASSPHRASE_BYTES: usize = 12;

/// Argon2id parameters for new seals: 64 MiB, 3 passes, 1 lane (RFC 9106's second
/// recommendation, with one lane: about 0.4 s on one core of this machine).
const ARGON2_M_KIB: u32 = 64 * 1024;
const ARGON2_T: u32 = 3;
const ARGON2_P: u32 = 1;

/// The secret that unseals a sealed keystore, as given at start: the bytes of a file or an
/// environment variable, a trailing newline removed. Its meaning depends on the keystore: a
/// base64 256-bit key for a keystore sealed with a key, a passphrase for one sealed with
/// Argon2id. Zeroized on drop; `Debug` shows nothing.
pub struct UnsealSecret(Secret);

impl std::fmt::Debug for UnsealSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnsealSecret(..)")
    }
}

impl UnsealSecret {
    /// The secret from `bytes` (trailing `\n`, `\r\n` and spaces removed).
    pub fn new(mut bytes: Vec<u8>) -> Self {
        let keep = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        // Zeroize the trimmed tail before it is cut off.
        for b in bytes.iter_mut().skip(keep) {
            *b = 0;
        }
        bytes.truncate(keep);
        UnsealSecret(Secret::new(bytes))
    }

    /// The secret in the file at `path`.
    pub fn from_file(path: &std::path::Path) -> std::io::Result<Self> {
        std::fs::read(path).map(Self::new)
    }

    /// A new random unseal key, as the base64 text to store in a file.
    pub fn generate_key_text() -> Result<zeroize::Zeroizing<String>, keyward_crypto::CryptoError> {
        let key = keyward_crypto::random_secret(32)?;
        Ok(zeroize::Zeroizing::new(B64.encode(key.expose())))
    }

    /// The 256-bit key this secret spells in base64, if it does.
    fn as_key(&self) -> Option<Secret> {
        let text = std::str::from_utf8(self.0.expose()).ok()?;
        let bytes = zeroize::Zeroizing::new(B64.decode(text).ok()?);
        (bytes.len() == 32).then(|| Secret::from_slice(&bytes))
    }

    /// How a new seal uses this secret: as a key if it is base64 of 32 bytes, else as a
    /// passphrase (then at least [`MIN_PASSPHRASE_BYTES`] long).
    pub(crate) fn new_seal(&self) -> Result<(SealParams, Secret), String> {
        if let Some(key) = self.as_key() {
            return Ok((SealParams::Key, key));
        }
        if self.0.len() < MIN_PASSPHRASE_BYTES {
            return Err(format!(
                "the unseal secret is neither base64 of a 256-bit key nor a passphrase of at least \
                 {MIN_PASSPHRASE_BYTES} bytes"
            ));
        }
        let salt = random_array::<16>().map_err(|e| e.to_string())?;
        let params = SealParams::Argon2id {
            salt: B64.encode(salt),
            m_kib: ARGON2_M_KIB,
            t: ARGON2_T,
            p: ARGON2_P,
        };
        let key = self.derive(&params)?;
        Ok((params, key))
    }

    /// The unseal key for `params`.
    pub(crate) fn derive(&self, params: &SealParams) -> Result<Secret, String> {
        match params {
            SealParams::Key => self.as_key().ok_or_else(|| {
                "this keystore is sealed with a key: the unseal secret must be base64 of 32 bytes"
                    .to_owned()
            }),
            SealParams::Argon2id { salt, m_kib, t, p } => {
                let salt = B64
                    .decode(salt)
                    .map_err(|_| "the keystore's Argon2id salt is not base64".to_owned())?;
                let params = Params::new(*m_kib, *t, *p, Some(32))
                    .map_err(|e| format!("the keystore's Argon2id parameters: {e}"))?;
                let mut out = zeroize::Zeroizing::new([0u8; 32]);
                Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password_into(self.0.expose(), &salt, &mut *out)
                    .map_err(|e| format!("Argon2id: {e}"))?;
                Ok(Secret::from_slice(&*out))
            }
        }
    }
}

/// How a keystore is sealed (stored in the file, bound to its ciphertext).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kdf", rename_all = "lowercase")]
pub(crate) enum SealParams {
    /// A 256-bit key given at start.
    Key,
    /// A passphrase stretched with Argon2id (version 0x13).
    Argon2id {
        /// 16 random bytes, base64.
        salt: String,
        /// Memory in KiB.
        m_kib: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
}

/// `keystore.json` version 2.
#[derive(Serialize, Deserialize)]
pub(crate) struct SealedFile {
    pub(crate) version: u32,
    pub(crate) seal: SealParams,
    nonce: String,
    sealed: String,
}

fn aad(params: &SealParams) -> Result<Vec<u8>, String> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend(serde_json::to_vec(params).map_err(|e| e.to_string())?);
    Ok(aad)
}

impl SealedFile {
    /// Seals `plaintext` (the version 1 document) under `key`.
    pub(crate) fn seal(params: SealParams, key: &Secret, plaintext: &[u8]) -> Result<Self, String> {
        let nonce = random_array::<12>().map_err(|e| e.to_string())?;
        let sealed = aead_seal(key, nonce, &aad(&params)?, plaintext).map_err(|e| e.to_string())?;
        Ok(SealedFile {
            version: SEALED_VERSION,
            seal: params,
            nonce: B64.encode(nonce),
            sealed: B64.encode(sealed),
        })
    }

    /// The version 1 document inside, with `secret`; `None` if the secret does not open it.
    pub(crate) fn open(&self, secret: &UnsealSecret) -> Result<Option<Secret>, String> {
        let key = secret.derive(&self.seal)?;
        let nonce: [u8; 12] = B64
            .decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| "the sealed keystore's nonce is not 12 bytes of base64".to_owned())?;
        let sealed = B64
            .decode(&self.sealed)
            .map_err(|_| "the sealed keystore's ciphertext is not base64".to_owned())?;
        Ok(aead_open(&key, nonce, &aad(&self.seal)?, &sealed).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_a_passphrase_seal_and_open_and_nothing_else_opens() {
        let key_text = UnsealSecret::generate_key_text().unwrap_or_default();
        let key = UnsealSecret::new(format!("{}\n", &*key_text).into_bytes());
        let (params, k) = key.new_seal().unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(params, SealParams::Key);
        let file = SealedFile::seal(params, &k, b"inner").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(
            file.open(&key)
                .ok()
                .flatten()
                .is_some_and(|p| p.expose() == b"inner")
        );
        let other = UnsealSecret::new(
            UnsealSecret::generate_key_text()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        );
        assert!(matches!(file.open(&other), Ok(None)));

        let pass = UnsealSecret::new(b"correct horse battery staple".to_vec());
        let (params, k) = pass.new_seal().unwrap_or_else(|e| unreachable!("{e}"));
        assert!(matches!(params, SealParams::Argon2id { .. }));
        let mut file =
            SealedFile::seal(params, &k, b"inner").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(file.open(&pass).ok().flatten().is_some());
        let wrong = UnsealSecret::new(b"correct horse battery stapler".to_vec());
        assert!(matches!(file.open(&wrong), Ok(None)));
        // The parameters are bound: a weakened file does not open.
        if let SealParams::Argon2id { t, .. } = &mut file.seal {
            *t = 1;
        }
        assert!(matches!(file.open(&pass), Ok(None)));
        assert!(UnsealSecret::new(b"short".to_vec()).new_seal().is_err());
        assert_eq!(format!("{pass:?}"), "UnsealSecret(..)");
    }
}
