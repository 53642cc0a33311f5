//! Transit key pairs for secure import (Key Protect's import tokens): RSA-4096 key pairs whose
//! public half is handed to clients, who encrypt key material to it with RSA-OAEP.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    PrivateDecryptingKey,
};

use crate::{CryptoError, Secret};

/// The OAEP variants import tokens accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oaep {
    /// `RSAES_OAEP_SHA_256` (Key Protect's default).
    Sha256,
    /// `RSAES_OAEP_SHA_1` (accepted by Hyper Protect Crypto Services).
    Sha1,
}

impl Oaep {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Oaep::Sha256 => &OAEP_SHA256_MGF1SHA256,
            Oaep::Sha1 => &OAEP_SHA1_MGF1SHA1,
        }
    }
}

/// A new RSA-4096 transit key pair: the private key as PKCS#8 (secret) and the public key as
/// SubjectPublicKeyInfo DER.
pub fn transit_generate() -> Result<(Secret, Vec<u8>), CryptoError> {
    let key =
        PrivateDecryptingKey::generate(KeySize::Rsa4096).map_err(|_| CryptoError::Unspecified)?;
    let pkcs8: Pkcs8V1Der<'static> = key.as_der().map_err(|_| CryptoError::Unspecified)?;
    let public = key
        .public_key()
        .as_der()
        .map_err(|_| CryptoError::Unspecified)?;
    Ok((Secret::from_slice(pkcs8.as_ref()), public.as_ref().to_vec()))
}

/// Decrypts an RSA-OAEP ciphertext with a PKCS#8 private key.
pub fn transit_decrypt(
    pkcs8: &Secret,
    oaep: Oaep,
    ciphertext: &[u8],
) -> Result<Secret, CryptoError> {
    let key =
        PrivateDecryptingKey::from_pkcs8(pkcs8.expose()).map_err(|_| CryptoError::Unspecified)?;
    let key = OaepPrivateDecryptingKey::new(key).map_err(|_| CryptoError::Unspecified)?;
    // The plaintext lives in a Secret from the start, so it is zeroed on every path.
    let mut out = Secret::new(vec![0u8; key.min_output_size()]);
    let len = key
        .decrypt(oaep.algorithm(), ciphertext, out.expose_mut(), None)
        .map_err(|_| CryptoError::AuthenticationFailed)?
        .len();
    Ok(Secret::from_slice(
        out.expose().get(..len).ok_or(CryptoError::Unspecified)?,
    ))
}

/// PEM text of a SubjectPublicKeyInfo DER (what Key Protect hands out, base64-encoded again).
/// Written here rather than pulling a PEM crate in for these six lines.
pub fn public_key_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};

    #[test]
    fn oaep_round_trips_with_both_hashes_and_refuses_the_other() {
        let (pkcs8, public) = transit_generate().unwrap();
        let public = PublicEncryptingKey::from_der(&public).unwrap();
        let public = OaepPublicEncryptingKey::new(public).unwrap();
        for (oaep, other) in [(Oaep::Sha256, Oaep::Sha1), (Oaep::Sha1, Oaep::Sha256)] {
            let material = [7u8; 32];
            let mut ct = vec![0u8; public.ciphertext_size()];
            let ct = public
                .encrypt(oaep.algorithm(), &material, &mut ct, None)
                .unwrap()
                .to_vec();
            assert_eq!(
                transit_decrypt(&pkcs8, oaep, &ct).unwrap().expose(),
                &material
            );
            assert!(transit_decrypt(&pkcs8, other, &ct).is_err());
            let mut altered = ct.clone();
            altered[10] ^= 1;
            assert!(transit_decrypt(&pkcs8, oaep, &altered).is_err());
        }
    }

    #[test]
    fn pem_wraps_at_64_columns() {
        let pem = public_key_pem(&[0u8; 100]);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    }
}
