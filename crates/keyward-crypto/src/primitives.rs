//! Thin, misuse-resistant wrappers over aws-lc-rs: AES-GCM, AES-KWP, HMAC-SHA256, HKDF-SHA256,
//! SHA-256, random.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::key_wrap::{AES_128, AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::{digest, hkdf, hmac, rand};

use crate::{CryptoError, Secret};

/// An HMAC-SHA256 tag. Not secret, but compare it only through [`hmac_verify`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 32]);

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mac(..)")
    }
}

/// `len` bytes from the system CSPRNG, as a secret.
pub fn random_secret(len: usize) -> Result<Secret, CryptoError> {
    let mut buf = vec![0u8; len];
    rand::fill(&mut buf).map_err(|_| CryptoError::Rng)?;
    Ok(Secret::new(buf))
}

/// `N` bytes from the system CSPRNG (nonces, identifiers).
pub fn random_array<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut buf = [0u8; N];
    rand::fill(&mut buf).map_err(|_| CryptoError::Rng)?;
    Ok(buf)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn gcm_key(key: &Secret) -> Result<LessSafeKey, CryptoError> {
    let alg = match key.len() {
        16 => &aead::AES_128_GCM,
        24 => &aead::AES_192_GCM,
        32 => &aead::AES_256_GCM,
        n => return Err(CryptoError::InvalidKeyLength(n)),
    };
    let unbound = UnboundKey::new(alg, key.expose()).map_err(|_| CryptoError::Unspecified)?;
    Ok(LessSafeKey::new(unbound))
}

/// HKDF-SHA256 (RFC 5869): `len` bytes derived from `ikm` with `salt` and `info`, as a secret.
pub fn hkdf_sha256(
    ikm: &Secret,
    salt: &[u8],
    info: &[&[u8]],
    len: usize,
) -> Result<Secret, CryptoError> {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm.expose());
    let okm = prk
        .expand(info, Len(len))
        .map_err(|_| CryptoError::Unspecified)?;
    let mut out = Secret::new(vec![0; len]);
    okm.fill(out.expose_mut())
        .map_err(|_| CryptoError::Unspecified)?;
    Ok(out)
}

/// AES-GCM encryption (key of 16, 24 or 32 bytes); returns ciphertext followed by the 16-byte tag.
/// The caller supplies a fresh random nonce per call.
pub fn aead_seal(
    key: &Secret,
    nonce: [u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key = gcm_key(key)?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| CryptoError::Unspecified)?;
    Ok(buf)
}

/// AES-GCM decryption of `ciphertext || tag`; fails on any alteration, wrong key or wrong AAD.
pub fn aead_open(
    key: &Secret,
    nonce: [u8; 12],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Secret, CryptoError> {
    let key = gcm_key(key)?;
    // The buffer holds plaintext after open_in_place: it lives in a Secret from the start so it is
    // zeroed on every path, including the error path.
    let mut buf = Secret::from_slice(sealed);
    let len = {
        let bytes = secret_bytes_mut(&mut buf);
        key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), bytes)
            .map_err(|_| CryptoError::AuthenticationFailed)?
            .len()
    };
    Ok(Secret::from_slice(
        buf.expose().get(..len).ok_or(CryptoError::Unspecified)?,
    ))
}

fn secret_bytes_mut(s: &mut Secret) -> &mut [u8] {
    s.expose_mut()
}

pub(crate) fn kek(key: &Secret) -> Result<AesKek, CryptoError> {
    let cipher = match key.len() {
        16 => &AES_128,
        32 => &AES_256,
        n => return Err(CryptoError::InvalidKeyLength(n)),
    };
    AesKek::new(cipher, key.expose()).map_err(|_| CryptoError::Unspecified)
}

/// AES key wrap with padding (RFC 5649 / NIST SP 800-38F KWP) of `material` under `kek`.
pub fn kwp_wrap(kek_bytes: &Secret, material: &Secret) -> Result<Vec<u8>, CryptoError> {
    let mut out = vec![0u8; material.len() + 16];
    let len = kek(kek_bytes)?
        .wrap_with_padding(material.expose(), &mut out)
        .map_err(|_| CryptoError::Unspecified)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// Reverses [`kwp_wrap`]; fails if the wrapped bytes were altered or the KEK is wrong.
pub fn kwp_unwrap(kek_bytes: &Secret, wrapped: &[u8]) -> Result<Secret, CryptoError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(CryptoError::Malformed("wrapped key length"));
    }
    let mut out = Secret::new(vec![0u8; wrapped.len()]);
    let len = kek(kek_bytes)?
        .unwrap_with_padding(wrapped, out.expose_mut())
        .map_err(|_| CryptoError::AuthenticationFailed)?
        .len();
    Ok(Secret::from_slice(
        out.expose().get(..len).ok_or(CryptoError::Unspecified)?,
    ))
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &Secret, data: &[u8]) -> Mac {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let tag = hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    Mac(out)
}

/// Verifies an HMAC-SHA256 tag in constant time.
pub fn hmac_verify(key: &Secret, data: &[u8], tag: &[u8]) -> Result<(), CryptoError> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    hmac::verify(&k, data, tag).map_err(|_| CryptoError::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_hex::hex;

    /// RFC 5869 appendix A.1 and A.3 (HKDF-SHA256; A.3 has no salt and no info).
    #[test]
    fn hkdf_matches_rfc_5869_vectors() {
        let ikm = Secret::new(vec![0x0b; 22]);
        let okm = hkdf_sha256(
            &ikm,
            &hex("000102030405060708090a0b0c"),
            &[&hex("f0f1f2f3f4"), &hex("f5f6f7f8f9")],
            42,
        );
        assert_eq!(
            okm.map(|k| k.expose().to_vec()).ok(),
            Some(hex(
                "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
            ))
        );
        let okm = hkdf_sha256(&ikm, &[], &[], 42);
        assert_eq!(
            okm.map(|k| k.expose().to_vec()).ok(),
            Some(hex(
                "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
            ))
        );
    }

    // Wycheproof kwp_test.json (AES-128 KEK group): tcId 1-3 are valid, tcId 27-30 have a
    // modified IV and must be rejected.
    #[test]
    fn kwp_matches_wycheproof_vectors() {
        let valid = [
            (
                "6f67486d1e914419cb43c28509c7c1ea",
                "8dc0632d92ee0be4f740028410b08270",
                "8cd63fa6788aa5edfa753fc87d645a672b14107c3b4519e7",
            ),
            (
                "a0b17172bb296db7f5c869e9a36b5ce3",
                "615dd022d607c910f20178cbdf42060f",
                "e8bac475d1429034b32f9bdeec09a37f9b3704028f1e0270",
            ),
            (
                "0e49d571c19b5250effd41d94bde39d6",
                "f25e4de8caca363fd5f29442eb147b55",
                "4c8bcd601b508ef399f71b841294497a4493c4a0014c0103",
            ),
        ];
        for (k, m, c) in valid {
            let kek = Secret::new(hex(k));
            let pt = Secret::new(hex(m));
            let wrapped = kwp_wrap(&kek, &pt).unwrap_or_default();
            assert_eq!(wrapped, hex(c));
            let back = kwp_unwrap(&kek, &wrapped).ok();
            assert!(back.is_some_and(|b| b.ct_eq(&pt)));
        }
        let kek = Secret::new(hex("4f710eb6b5e28703becfc3dc52fa8bc1"));
        for c in [
            "82af032f5389caa503147d2825336eab84816fb6f8ae6df4",
            "4e00a9eeef87eb6d7be4ec46204d94006c216d5177d2a83c",
            "d3dc6c3b4707a08039d621879caf419b9895482fff7bdcd0",
            "09d3bfc3c9c5af2b2951b06406f7ea4d84e9c37402637e2c",
        ] {
            assert!(kwp_unwrap(&kek, &hex(c)).is_err(), "{c}");
        }
    }

    #[test]
    fn kwp_unwrap_rejects_altered_bytes_and_wrong_kek() {
        let kek = random_secret(32).unwrap_or_else(|_| Secret::new(vec![1; 32]));
        let other = random_secret(32).unwrap_or_else(|_| Secret::new(vec![2; 32]));
        let material = Secret::from_slice(&[7u8; 24]);
        let wrapped = kwp_wrap(&kek, &material).unwrap_or_default();
        assert_eq!(
            kwp_unwrap(&other, &wrapped).err(),
            Some(CryptoError::AuthenticationFailed)
        );
        for i in 0..wrapped.len() {
            let mut bad = wrapped.clone();
            if let Some(b) = bad.get_mut(i) {
                *b ^= 0x01;
            }
            assert!(kwp_unwrap(&kek, &bad).is_err(), "byte {i}");
        }
        assert!(kwp_unwrap(&kek, &wrapped[..wrapped.len() - 8]).is_err());
    }

    // Wycheproof aes_gcm_test.json, 128-bit key group: tcId 2 and 3 are valid (with AAD);
    // tcId 23 and 24 flip tag bits and must be rejected.
    #[test]
    fn gcm_matches_wycheproof_vectors() {
        let valid = [
            (
                "5b9604fe14eadba931b0ccf34843dab9",
                "921d2507fa8007b7bd067d34",
                "00112233445566778899aabbccddeeff",
                "001d0c231287c1182784554ca3a21908",
                "49d8b9783e911913d87094d1f63cc7651e348ba07cca2cf04c618cb4d43a5b92",
            ),
            (
                "aa023d0478dcb2b2312498293d9a9129",
                "0432bc49ac34412081288127",
                "aac39231129872a2",
                "2035af313d1346ab00154fea78322105",
                "eea945f3d0f98cc0fbab472a0cf24e874bb9b4812519dadf9e1232016d068133",
            ),
        ];
        for (k, iv, aad, msg, ct_tag) in valid {
            let key = Secret::new(hex(k));
            let iv: [u8; 12] = hex(iv).try_into().unwrap_or([0; 12]);
            let sealed = aead_seal(&key, iv, &hex(aad), &hex(msg)).unwrap_or_default();
            assert_eq!(sealed, hex(ct_tag));
            let opened = aead_open(&key, iv, &hex(aad), &sealed).ok();
            assert!(opened.is_some_and(|p| p.expose() == hex(msg).as_slice()));
            assert_eq!(
                aead_open(&key, iv, b"other aad", &sealed).err(),
                Some(CryptoError::AuthenticationFailed)
            );
        }
        let key = Secret::new(hex("000102030405060708090a0b0c0d0e0f"));
        let iv: [u8; 12] = hex("505152535455565758595a5b")
            .try_into()
            .unwrap_or([0; 12]);
        for tag in [
            "d9847dbc326a06e988c77ad3863e6083",
            "da847dbc326a06e988c77ad3863e6083",
        ] {
            let sealed = hex(&format!("eb156d081ed6b6b55f4612f021d87b39{tag}"));
            assert_eq!(
                aead_open(&key, iv, b"", &sealed).err(),
                Some(CryptoError::AuthenticationFailed)
            );
        }
    }

    #[test]
    fn gcm_accepts_128_192_256_bit_keys_only() {
        for len in [16, 24, 32] {
            let k = Secret::new(vec![3; len]);
            assert!(aead_seal(&k, [0; 12], b"", b"x").is_ok(), "{len}");
        }
        for len in [0, 15, 31, 33, 64] {
            let k = Secret::new(vec![3; len]);
            assert_eq!(
                aead_seal(&k, [0; 12], b"", b"x").err(),
                Some(CryptoError::InvalidKeyLength(len))
            );
        }
    }

    // RFC 4231 test case 2.
    #[test]
    fn hmac_matches_rfc4231() {
        let key = Secret::from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(
            mac.0.to_vec(),
            hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        );
        assert!(hmac_verify(&key, b"what do ya want for nothing?", &mac.0).is_ok());
        assert!(hmac_verify(&key, b"what do ya want for nothing!", &mac.0).is_err());
    }
}
