//! The primitives KMIP's cryptographic operations need on managed objects: AES-GCM with a
//! detached tag and AES-CBC under a client's key, RSA key pairs, RSA signatures (PSS and
//! PKCS #1 v1.5), all calls into aws-lc-rs.

use aws_lc_rs::aead::{AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, Algorithm, DecryptingKey, DecryptionContext, EncryptingKey,
    EncryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::iv::FixedLength;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding, RsaParameters};

use crate::{CryptoError, Secret};

/// AES-GCM's nonce and tag lengths (the only ones offered: shorter tags weaken it).
pub const GCM_NONCE_LEN: usize = 12;
/// AES-GCM's tag length.
pub const GCM_TAG_LEN: usize = 16;
/// AES's block (and CBC IV) length.
pub const AES_BLOCK_LEN: usize = 16;

fn gcm_key(key: &Secret) -> Result<LessSafeKey, CryptoError> {
    let alg = match key.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        _ => return Err(CryptoError::InvalidKey),
    };
    let k = UnboundKey::new(alg, key.expose()).map_err(|_| CryptoError::InvalidKey)?;
    Ok(LessSafeKey::new(k))
}

fn cbc_alg(key: &Secret) -> Result<&'static Algorithm, CryptoError> {
    match key.len() {
        16 => Ok(&AES_128),
        24 => Ok(&AES_192),
        32 => Ok(&AES_256),
        _ => Err(CryptoError::InvalidKey),
    }
}

/// AES-GCM encryption with a detached 16-byte tag; the caller supplies a unique nonce.
pub fn gcm_encrypt(
    key: &Secret,
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    data: &[u8],
) -> Result<(Vec<u8>, [u8; GCM_TAG_LEN]), CryptoError> {
    let key = gcm_key(key)?;
    let mut out = data.to_vec();
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut out,
        )
        .map_err(|_| CryptoError::Unspecified)?;
    let mut t = [0u8; GCM_TAG_LEN];
    t.copy_from_slice(tag.as_ref());
    Ok((out, t))
}

/// AES-GCM decryption with a detached tag; any mismatch is [`CryptoError::AuthenticationFailed`].
pub fn gcm_decrypt(
    key: &Secret,
    nonce: &[u8; GCM_NONCE_LEN],
    aad: &[u8],
    data: &[u8],
    tag: &[u8],
) -> Result<Secret, CryptoError> {
    if tag.len() != GCM_TAG_LEN {
        return Err(CryptoError::AuthenticationFailed);
    }
    let key = gcm_key(key)?;
    let mut buf = Secret::new([data, tag].concat());
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            buf.expose_mut(),
        )
        .map_err(|_| CryptoError::AuthenticationFailed)?
        .len();
    let plain = buf.expose().get(..n).ok_or(CryptoError::Unspecified)?;
    Ok(Secret::from_slice(plain))
}

/// AES-CBC encryption, with PKCS #7 padding or none (then `data` must be whole blocks).
pub fn cbc_encrypt(
    key: &Secret,
    iv: &[u8; AES_BLOCK_LEN],
    data: &[u8],
    pad: bool,
) -> Result<Vec<u8>, CryptoError> {
    let unbound =
        || UnboundCipherKey::new(cbc_alg(key)?, key.expose()).map_err(|_| CryptoError::InvalidKey);
    let ctx = EncryptionContext::Iv128(FixedLength::from(*iv));
    let mut out = data.to_vec();
    if pad {
        PaddedBlockEncryptingKey::cbc_pkcs7(unbound()?)
            .and_then(|k| k.less_safe_encrypt(&mut out, ctx))
            .map_err(|_| CryptoError::Unspecified)?;
    } else {
        if !data.len().is_multiple_of(AES_BLOCK_LEN) {
            return Err(CryptoError::Malformed("not a supported length"));
        }
        EncryptingKey::cbc(unbound()?)
            .and_then(|k| k.less_safe_encrypt(&mut out, ctx))
            .map_err(|_| CryptoError::Unspecified)?;
    }
    Ok(out)
}

/// AES-CBC decryption, removing PKCS #7 padding when `pad`; bad padding is
/// [`CryptoError::AuthenticationFailed`].
pub fn cbc_decrypt(
    key: &Secret,
    iv: &[u8; AES_BLOCK_LEN],
    data: &[u8],
    pad: bool,
) -> Result<Secret, CryptoError> {
    if data.is_empty() || !data.len().is_multiple_of(AES_BLOCK_LEN) {
        return Err(CryptoError::Malformed("not a supported length"));
    }
    let unbound =
        UnboundCipherKey::new(cbc_alg(key)?, key.expose()).map_err(|_| CryptoError::InvalidKey)?;
    let ctx = DecryptionContext::Iv128(FixedLength::from(*iv));
    let mut buf = Secret::from_slice(data);
    let n = if pad {
        PaddedBlockDecryptingKey::cbc_pkcs7(unbound)
            .map_err(|_| CryptoError::Unspecified)?
            .decrypt(buf.expose_mut(), ctx)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len()
    } else {
        DecryptingKey::cbc(unbound)
            .map_err(|_| CryptoError::Unspecified)?
            .decrypt(buf.expose_mut(), ctx)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len()
    };
    let plain = buf.expose().get(..n).ok_or(CryptoError::Unspecified)?;
    Ok(Secret::from_slice(plain))
}

/// A new RSA key pair of `bits` (2048, 3072 or 4096): the private key as PKCS #8 and the public
/// key as SubjectPublicKeyInfo DER.
pub fn rsa_generate(bits: u32) -> Result<(Secret, Vec<u8>), CryptoError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        _ => {
            return Err(CryptoError::Malformed(
                "RSA keys are 2048, 3072 or 4096 bits",
            ));
        }
    };
    let pair = KeyPair::generate(size).map_err(|_| CryptoError::Unspecified)?;
    let pkcs8: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| CryptoError::Unspecified)?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| CryptoError::Unspecified)?;
    Ok((Secret::from_slice(pkcs8.as_ref()), public.as_ref().to_vec()))
}

fn rsa_private(der: &Secret) -> Result<KeyPair, CryptoError> {
    KeyPair::from_pkcs8(der.expose())
        .or_else(|_| KeyPair::from_der(der.expose()))
        .map_err(|_| CryptoError::InvalidKey)
}

/// An RSA private key (PKCS #8 or PKCS #1 DER): its size in bits and its public key as
/// SubjectPublicKeyInfo DER. Refuses what is not a valid RSA private key.
pub fn rsa_private_info(der: &Secret) -> Result<(u32, Vec<u8>), CryptoError> {
    let pair = rsa_private(der)?;
    let public = pair
        .public_key()
        .as_der()
        .map_err(|_| CryptoError::Unspecified)?;
    Ok((
        pair.public_modulus_len() as u32 * 8,
        public.as_ref().to_vec(),
    ))
}

/// An RSA private key as PKCS #8 DER, whichever of PKCS #8 or PKCS #1 it came in.
pub fn rsa_private_pkcs8(der: &Secret) -> Result<Secret, CryptoError> {
    let pkcs8: Pkcs8V1Der<'static> = rsa_private(der)?
        .as_der()
        .map_err(|_| CryptoError::Unspecified)?;
    Ok(Secret::from_slice(pkcs8.as_ref()))
}

/// An RSA public key (PKCS #1 or SubjectPublicKeyInfo DER): its size in bits, its modulus and
/// its public exponent (big-endian).
pub fn rsa_public_info(der: &[u8]) -> Result<(u32, Vec<u8>, Vec<u8>), CryptoError> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| CryptoError::InvalidKey)?;
    let c: PublicKeyComponents<Vec<u8>> = (&key).into();
    let bits = key.modulus_len() as u32 * 8;
    Ok((bits, c.n, c.e))
}

/// An RSA public key (PKCS #1 or SubjectPublicKeyInfo DER) as SubjectPublicKeyInfo DER.
pub fn rsa_public_spki(der: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let key = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| CryptoError::InvalidKey)?;
    Ok(key
        .as_der()
        .map_err(|_| CryptoError::Unspecified)?
        .as_ref()
        .to_vec())
}

/// HMAC hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HmacHash {
    /// HMAC-SHA-256.
    Sha256,
    /// HMAC-SHA-384.
    Sha384,
    /// HMAC-SHA-512.
    Sha512,
}

/// HMAC of `data` under `key`.
pub fn hmac(hash: HmacHash, key: &Secret, data: &[u8]) -> Vec<u8> {
    let alg = match hash {
        HmacHash::Sha256 => aws_lc_rs::hmac::HMAC_SHA256,
        HmacHash::Sha384 => aws_lc_rs::hmac::HMAC_SHA384,
        HmacHash::Sha512 => aws_lc_rs::hmac::HMAC_SHA512,
    };
    let key = aws_lc_rs::hmac::Key::new(alg, key.expose());
    aws_lc_rs::hmac::sign(&key, data).as_ref().to_vec()
}

/// AES key wrap without padding (RFC 3394 / NIST SP 800-38F KW) of `material` (whole 8-byte
/// blocks, at least 16 bytes) under an AES-128 or AES-256 `kek`.
pub fn kw_wrap(kek: &Secret, material: &Secret) -> Result<Vec<u8>, CryptoError> {
    use aws_lc_rs::key_wrap::KeyWrap as _;
    if material.len() < 16 || !material.len().is_multiple_of(8) {
        return Err(CryptoError::Malformed(
            "key wrap takes whole 8-byte blocks, 16 bytes or more",
        ));
    }
    let mut out = vec![0u8; material.len() + 8];
    let len = crate::primitives::kek(kek)?
        .wrap(material.expose(), &mut out)
        .map_err(|_| CryptoError::Unspecified)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// RSA signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaScheme {
    /// RSASSA-PSS (MGF1 with the same hash, salt as long as the hash).
    Pss,
    /// RSASSA-PKCS1-v1_5.
    Pkcs1v15,
}

/// Hashes an RSA signature is made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaHash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

fn rsa_algorithms(
    scheme: RsaScheme,
    hash: RsaHash,
) -> (&'static dyn RsaEncoding, &'static RsaParameters) {
    use RsaHash::*;
    use RsaScheme::*;
    match (scheme, hash) {
        (Pss, Sha256) => (
            &signature::RSA_PSS_SHA256,
            &signature::RSA_PSS_2048_8192_SHA256,
        ),
        (Pss, Sha384) => (
            &signature::RSA_PSS_SHA384,
            &signature::RSA_PSS_2048_8192_SHA384,
        ),
        (Pss, Sha512) => (
            &signature::RSA_PSS_SHA512,
            &signature::RSA_PSS_2048_8192_SHA512,
        ),
        (Pkcs1v15, Sha256) => (
            &signature::RSA_PKCS1_SHA256,
            &signature::RSA_PKCS1_2048_8192_SHA256,
        ),
        (Pkcs1v15, Sha384) => (
            &signature::RSA_PKCS1_SHA384,
            &signature::RSA_PKCS1_2048_8192_SHA384,
        ),
        (Pkcs1v15, Sha512) => (
            &signature::RSA_PKCS1_SHA512,
            &signature::RSA_PKCS1_2048_8192_SHA512,
        ),
    }
}

/// Signs `message` with an RSA private key (PKCS #8 or PKCS #1 DER).
pub fn rsa_sign(
    private: &Secret,
    scheme: RsaScheme,
    hash: RsaHash,
    message: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let pair = rsa_private(private)?;
    let (encoding, _) = rsa_algorithms(scheme, hash);
    let mut sig = vec![0; pair.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    pair.sign(encoding, &rng, message, &mut sig)
        .map_err(|_| CryptoError::Unspecified)?;
    Ok(sig)
}

/// Whether `sig` is a valid signature of `message` under an RSA public key (PKCS #1 or
/// SubjectPublicKeyInfo DER).
pub fn rsa_verify(
    public: &[u8],
    scheme: RsaScheme,
    hash: RsaHash,
    message: &[u8],
    sig: &[u8],
) -> bool {
    let (_, params) = rsa_algorithms(scheme, hash);
    signature::UnparsedPublicKey::new(params, public)
        .verify(message, sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_hex::hex;

    /// NIST SP 800-38A F.2.1 (CBC-AES128.Encrypt), first two blocks.
    #[test]
    fn cbc_matches_sp800_38a() {
        let key = Secret::new(hex("2b7e151628aed2a6abf7158809cf4f3c"));
        let iv: [u8; 16] = hex("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let pt = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let ct = cbc_encrypt(&key, &iv, &pt, false).unwrap();
        assert_eq!(
            ct,
            hex("7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2")
        );
        assert_eq!(cbc_decrypt(&key, &iv, &ct, false).unwrap().expose(), pt);
        // Padded: one more block, and bad padding is refused.
        let padded = cbc_encrypt(&key, &iv, &pt, true).unwrap();
        assert_eq!(padded.len(), 48);
        assert_eq!(cbc_decrypt(&key, &iv, &padded, true).unwrap().expose(), pt);
        assert!(cbc_decrypt(&key, &iv, &ct, true).is_err());
        assert!(cbc_encrypt(&key, &iv, &pt[..17], false).is_err());
        assert!(cbc_encrypt(&Secret::new(vec![0; 20]), &iv, &pt, true).is_err());
    }

    /// The GCM test case 4 of McGrew and Viega's GCM specification (AES-128, 60-byte plaintext,
    /// 20-byte AAD), as in NIST's CAVS vectors.
    #[test]
    fn gcm_matches_the_gcm_specification() {
        let key = Secret::new(hex("feffe9928665731c6d6a8f9467308308"));
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        );
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let (ct, tag) = gcm_encrypt(&key, &nonce, &aad, &pt).unwrap();
        assert_eq!(
            ct,
            hex(
                "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
            )
        );
        assert_eq!(tag.to_vec(), hex("5bc94fbc3221a5db94fae95ae7121a47"));
        assert_eq!(
            gcm_decrypt(&key, &nonce, &aad, &ct, &tag).unwrap().expose(),
            pt
        );
        let mut bad = tag;
        bad[0] ^= 1;
        assert!(gcm_decrypt(&key, &nonce, &aad, &ct, &bad).is_err());
        assert!(gcm_decrypt(&key, &nonce, b"other", &ct, &tag).is_err());
    }

    #[test]
    fn rsa_signs_and_verifies_with_both_schemes() {
        let (private, public) = rsa_generate(2048).unwrap();
        let (bits, public2) = rsa_private_info(&private).unwrap();
        assert_eq!((bits, &public2), (2048, &public));
        for scheme in [RsaScheme::Pss, RsaScheme::Pkcs1v15] {
            for hash in [RsaHash::Sha256, RsaHash::Sha384, RsaHash::Sha512] {
                let sig = rsa_sign(&private, scheme, hash, b"message").unwrap();
                assert!(rsa_verify(&public, scheme, hash, b"message", &sig));
                assert!(!rsa_verify(&public, scheme, hash, b"other", &sig));
            }
        }
        assert!(rsa_generate(1024).is_err());
        assert!(rsa_private_info(&Secret::new(vec![0x30, 0])).is_err());
        // RFC 3394 §4.1: 128-bit key data with a 128-bit KEK.
        let kek = Secret::new(hex("000102030405060708090a0b0c0d0e0f"));
        let data = Secret::new(hex("00112233445566778899aabbccddeeff"));
        assert_eq!(
            kw_wrap(&kek, &data).unwrap(),
            hex("1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5")
        );
        assert!(kw_wrap(&kek, &Secret::new(vec![0; 12])).is_err());
        // RFC 4231 test case 2.
        assert_eq!(
            hmac(
                HmacHash::Sha256,
                &Secret::from_slice(b"Jefe"),
                b"what do ya want for nothing?"
            ),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        let (bits, n, e) = rsa_public_info(&public).unwrap();
        assert_eq!((bits, n.len(), e), (2048, 256, vec![1, 0, 1]));
    }
}
