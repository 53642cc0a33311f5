//! The DEK ciphertext format: what `wrap` returns and `unwrap` accepts. One encoder, one decoder.
//!
//! ```text
//! byte 0        format version (FORMAT_V1 = 0x01)
//! bytes 1..17   id of the root key version that sealed it
//! bytes 17..29  AES-GCM nonce (random, 96 bits)
//! bytes 29..    AES-GCM ciphertext of the DEK, then the 16-byte tag
//! ```
//! The GCM additional data binds the header (format byte and version id), the id of the root key
//! and every AAD string of the request, each length-prefixed, so a ciphertext moved to another
//! key, another version or other AAD fails authentication.

use crate::canonical::Canonical;
use crate::{CryptoError, Secret, aead_open, aead_seal, random_array};

/// The only format version this build writes and reads.
pub const FORMAT_V1: u8 = 1;
/// Length of a key version id inside the ciphertext.
pub const VERSION_ID_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + VERSION_ID_LEN;
const MIN_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
const DOMAIN: &[u8] = b"keyward/dek/v1";

/// A decoded DEK ciphertext. Holds no secret: the DEK inside is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DekCiphertext {
    /// The root key version that sealed the DEK.
    pub version_id: [u8; VERSION_ID_LEN],
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

impl DekCiphertext {
    /// Encrypts `dek` under the root key version `key` (`version_id`) of root key `key_id`,
    /// bound to `aad`.
    pub fn seal(
        key: &Secret,
        version_id: [u8; VERSION_ID_LEN],
        key_id: &[u8],
        aad: &[&str],
        dek: &Secret,
    ) -> Result<Self, CryptoError> {
        let nonce = random_array::<NONCE_LEN>()?;
        let ad = additional_data(version_id, key_id, aad);
        let sealed = aead_seal(key, nonce, &ad, dek.expose())?;
        Ok(DekCiphertext {
            version_id,
            nonce,
            sealed,
        })
    }

    /// Decrypts the DEK; fails unless `key`, `key_id` and `aad` are exactly those used to seal.
    pub fn open(&self, key: &Secret, key_id: &[u8], aad: &[&str]) -> Result<Secret, CryptoError> {
        let ad = additional_data(self.version_id, key_id, aad);
        aead_open(key, self.nonce, &ad, &self.sealed)
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + self.sealed.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.version_id);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses wire bytes. Checks structure only: authenticity is checked by [`Self::open`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() < MIN_LEN {
            return Err(CryptoError::Malformed("ciphertext is too short"));
        }
        let (format, rest) = bytes.split_first().ok_or(CryptoError::Malformed("empty"))?;
        if *format != FORMAT_V1 {
            return Err(CryptoError::Malformed("unknown ciphertext format version"));
        }
        let (version_id, rest) = rest
            .split_at_checked(VERSION_ID_LEN)
            .ok_or(CryptoError::Malformed("header"))?;
        let (nonce, sealed) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CryptoError::Malformed("nonce"))?;
        Ok(DekCiphertext {
            version_id: version_id
                .try_into()
                .map_err(|_| CryptoError::Malformed("header"))?,
            nonce: nonce
                .try_into()
                .map_err(|_| CryptoError::Malformed("nonce"))?,
            sealed: sealed.to_vec(),
        })
    }
}

fn additional_data(version_id: [u8; VERSION_ID_LEN], key_id: &[u8], aad: &[&str]) -> Vec<u8> {
    let mut ad = Canonical::new();
    ad.fixed(DOMAIN)
        .u8(FORMAT_V1)
        .fixed(&version_id)
        .field(key_id);
    // The count is bound too, so ["a", ""] and ["a"] are different AAD.
    ad.u32(u32::try_from(aad.len()).unwrap_or(u32::MAX));
    for item in aad {
        ad.field(item.as_bytes());
    }
    ad.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Secret {
        Secret::new(vec![0x42; 32])
    }

    fn seal(aad: &[&str], dek: &[u8]) -> DekCiphertext {
        DekCiphertext::seal(&key(), [9; 16], b"key-1", aad, &Secret::from_slice(dek))
            .unwrap_or_else(|e| unreachable!("seal failed: {e}"))
    }

    #[test]
    fn opens_with_the_same_key_id_and_aad() {
        let ct = seal(&["tenant", "db-7"], &[1; 32]);
        let dek = ct.open(&key(), b"key-1", &["tenant", "db-7"]).ok();
        assert!(dek.is_some_and(|d| d.expose() == [1; 32]));
    }

    #[test]
    fn refuses_other_key_id_aad_or_key() {
        let ct = seal(&["a"], &[1; 32]);
        let fail = Err(CryptoError::AuthenticationFailed);
        assert_eq!(ct.open(&key(), b"key-2", &["a"]).map(|_| ()), fail);
        assert_eq!(ct.open(&key(), b"key-1", &["b"]).map(|_| ()), fail);
        assert_eq!(ct.open(&key(), b"key-1", &[]).map(|_| ()), fail);
        assert_eq!(ct.open(&key(), b"key-1", &["a", ""]).map(|_| ()), fail);
        assert_eq!(
            ct.open(&Secret::new(vec![0x43; 32]), b"key-1", &["a"])
                .map(|_| ()),
            fail
        );
    }

    /// The bytes every DEK ciphertext written so far authenticates (release 0.1.0's layout).
    #[test]
    fn additional_data_known_answer() {
        let want = [
            b"keyward/dek/v1".as_slice(),
            &[FORMAT_V1],
            &[9; 16],
            &[0, 0, 0, 5],
            b"key-1",
            &[0, 0, 0, 2],
            &[0, 0, 0, 2],
            b"ab",
            &[0, 0, 0, 0],
        ]
        .concat();
        assert_eq!(additional_data([9; 16], b"key-1", &["ab", ""]), want);
    }

    #[test]
    fn aad_boundaries_are_unambiguous() {
        let ct = seal(&["ab", "c"], &[1; 16]);
        assert!(ct.open(&key(), b"key-1", &["a", "bc"]).is_err());
        assert!(ct.open(&key(), b"key-1", &["abc"]).is_err());
    }

    #[test]
    fn decode_rejects_short_and_unknown_versions() {
        assert!(DekCiphertext::decode(&[]).is_err());
        assert!(DekCiphertext::decode(&[FORMAT_V1; MIN_LEN - 1]).is_err());
        let mut bytes = seal(&[], &[1; 32]).encode();
        if let Some(b) = bytes.first_mut() {
            *b = 2;
        }
        assert!(DekCiphertext::decode(&bytes).is_err());
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(version_id in any::<[u8; 16]>(), nonce in any::<[u8; 12]>(),
                                 sealed in proptest::collection::vec(any::<u8>(), TAG_LEN..200)) {
            let ct = DekCiphertext { version_id, nonce, sealed };
            prop_assert_eq!(DekCiphertext::decode(&ct.encode()), Ok(ct));
        }

        #[test]
        fn every_single_byte_change_is_rejected(dek in proptest::collection::vec(any::<u8>(), 0..64),
                                                pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let bytes = seal(&["x"], &dek).encode();
            let mut bad = bytes.clone();
            let i = pos.index(bad.len());
            if let Some(b) = bad.get_mut(i) { *b ^= flip; }
            let opened = DekCiphertext::decode(&bad).and_then(|c| c.open(&key(), b"key-1", &["x"]));
            prop_assert!(opened.is_err(), "byte {} changed and still opened", i);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = DekCiphertext::decode(&bytes);
        }

        #[test]
        fn truncation_is_rejected(dek in proptest::collection::vec(any::<u8>(), 1..64), cut in 1usize..200) {
            let bytes = seal(&[], &dek).encode();
            let keep = bytes.len().saturating_sub(cut);
            let opened = DekCiphertext::decode(bytes.get(..keep).unwrap_or(&[]))
                .and_then(|c| c.open(&key(), b"key-1", &[]));
            prop_assert!(opened.is_err());
        }
    }
}
