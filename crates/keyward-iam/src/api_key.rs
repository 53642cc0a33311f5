//! API keys: `kw<id>.<secret>`, 16 random bytes of id and 32 of secret (base64url). Only the
//! SHA-256 of the secret is stored; a fast hash suits a 256-bit random secret (no dictionary to
//! attack), and the comparison is constant-time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use keyward_crypto::{CryptoError, Secret, random_array, sha256};
use subtle::ConstantTimeEq;

/// A newly created API key. The full string is shown to its owner once and never stored.
pub struct ApiKey {
    /// The public id (stored; names the key in lists and audit events).
    pub id: String,
    /// The whole API key string.
    pub full: Secret,
    /// SHA-256 of the secret part (stored).
    pub secret_hash: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// A new random API key.
    pub fn generate() -> Result<Self, CryptoError> {
        let id = format!("kw{}", B64URL.encode(random_array::<16>()?));
        let secret = Secret::new(B64URL.encode(random_array::<32>()?).into_bytes());
        let secret_hash = hash_secret(secret.expose());
        let mut full = Vec::with_capacity(id.len() + 1 + secret.len());
        full.extend_from_slice(id.as_bytes());
        full.push(b'.');
        full.extend_from_slice(secret.expose());
        Ok(ApiKey {
            id,
            full: Secret::new(full),
            secret_hash,
        })
    }
}

/// SHA-256 of an API key's secret part.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    sha256(secret)
}

/// Splits an API key string into its id and secret; `None` if it is not shaped like one.
pub fn parse_api_key(full: &str) -> Option<(&str, &[u8])> {
    let (id, secret) = full.split_once('.')?;
    let ok = id.len() == 24 && id.starts_with("kw") && secret.len() == 43;
    ok.then_some((id, secret.as_bytes()))
}

/// Whether `secret` matches the stored hash, in constant time.
pub fn verify_secret(secret: &[u8], stored_hash: &[u8; 32]) -> bool {
    hash_secret(secret).ct_eq(stored_hash).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_verify() {
        let key = ApiKey::generate().unwrap_or_else(|e| unreachable!("{e}"));
        let full = String::from_utf8(key.full.expose().to_vec()).unwrap_or_default();
        let (id, secret) = parse_api_key(&full).unwrap_or(("", b""));
        assert_eq!(id, key.id);
        assert!(verify_secret(secret, &key.secret_hash));
        assert!(!verify_secret(
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &key.secret_hash
        ));
        assert!(!format!("{key:?}").contains(&full));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for bad in [
            "",
            "nodot",
            "kw.x",
            "xx0123456789012345678901.0123456789012345678901234567890123456789012",
        ] {
            assert!(parse_api_key(bad).is_none(), "{bad}");
        }
    }
}
