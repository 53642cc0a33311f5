//! The DEK ciphertext format: what `wrap` returns and `unwrap` accepts. One encoder, one decoder.
//!
//! Format 2, written since issue 19 (a fresh AES-256-GCM key per seal, as XAES-256-GCM does):
//! ```text
//! byte 0        format version (FORMAT_V2 = 0x02)
//! bytes 1..17   id of the root key version that sealed it
//! bytes 17..49  salt (random, 256 bits)
//! bytes 49..61  AES-GCM nonce (random, 96 bits)
//! bytes 61..    AES-256-GCM ciphertext of the DEK under the per-seal key, then the 16-byte tag
//! ```
//! The per-seal key is HKDF-SHA256 of the root key version's material with the salt, for
//! `keyward/dek/v2/key` and the version id. A version key then never seals twice under one GCM
//! key, so NIST SP 800-38D's bound of 2^32 random-nonce seals per key, which a hot root key
//! reaches in about a day, no longer applies to it: a seal's key and nonce repeat only if 352
//! random bits do.
//!
//! Format 1 (the release 0.1.0 layout, still read): no salt, the version's material is the GCM
//! key itself.
//! ```text
//! byte 0        format version (FORMAT_V1 = 0x01)
//! bytes 1..17   id of the root key version that sealed it
//! bytes 17..29  AES-GCM nonce (random, 96 bits)
//! bytes 29..    AES-GCM ciphertext of the DEK, then the 16-byte tag
//! ```
//! In both, the GCM additional data binds the header (format byte and version id), the id of the
//! root key and every AAD string of the request, each length-prefixed, so a ciphertext moved to
//! another key, another version or other AAD fails authentication; a changed format byte changes
//! both the layout and the additional data.

use crate::canonical::Canonical;
use crate::{CryptoError, Secret, aead_open, aead_seal, hkdf_sha256, random_array};

/// The release 0.1.0 format: read, no longer written.
pub const FORMAT_V1: u8 = 1;
/// The format this build writes: a per-seal key derived with a random salt.
pub const FORMAT_V2: u8 = 2;
/// Length of a key version id inside the ciphertext.
pub const VERSION_ID_LEN: usize = 16;
const SALT_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + VERSION_ID_LEN;
const DOMAIN_V1: &[u8] = b"keyward/dek/v1";
const DOMAIN_V2: &[u8] = b"keyward/dek/v2";
/// HKDF info prefix of a format 2 per-seal key (the version id follows).
const KEY_INFO_V2: &[u8] = b"keyward/dek/v2/key";

/// How the DEK inside was sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    /// The version's material is the GCM key.
    V1,
    /// The GCM key is derived from the version's material with this salt.
    V2 { salt: [u8; SALT_LEN] },
}

/// A decoded DEK ciphertext. Holds no secret: the DEK inside is encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DekCiphertext {
    /// The root key version that sealed the DEK.
    pub version_id: [u8; VERSION_ID_LEN],
    format: Format,
    nonce: [u8; NONCE_LEN],
    sealed: Vec<u8>,
}

impl DekCiphertext {
    /// Encrypts `dek` under the root key version `key` (`version_id`) of root key `key_id`,
    /// bound to `aad`, in format 2 (a key of its own derived from `key` with a random salt).
    pub fn seal(
        key: &Secret,
        version_id: [u8; VERSION_ID_LEN],
        key_id: &[u8],
        aad: &[&str],
        dek: &Secret,
    ) -> Result<Self, CryptoError> {
        let format = Format::V2 {
            salt: random_array::<SALT_LEN>()?,
        };
        let nonce = random_array::<NONCE_LEN>()?;
        let ad = additional_data(&format, version_id, key_id, aad);
        let sealed = aead_seal(
            &gcm_key(&format, key, version_id)?,
            nonce,
            &ad,
            dek.expose(),
        )?;
        Ok(DekCiphertext {
            version_id,
            format,
            nonce,
            sealed,
        })
    }

    /// Decrypts the DEK; fails unless `key`, `key_id` and `aad` are exactly those used to seal.
    pub fn open(&self, key: &Secret, key_id: &[u8], aad: &[&str]) -> Result<Secret, CryptoError> {
        let ad = additional_data(&self.format, self.version_id, key_id, aad);
        let key = gcm_key(&self.format, key, self.version_id)?;
        aead_open(&key, self.nonce, &ad, &self.sealed)
    }

    /// The format version byte this ciphertext carries.
    pub fn format(&self) -> u8 {
        match self.format {
            Format::V1 => FORMAT_V1,
            Format::V2 { .. } => FORMAT_V2,
        }
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + SALT_LEN + NONCE_LEN + self.sealed.len());
        out.push(self.format());
        out.extend_from_slice(&self.version_id);
        if let Format::V2 { salt } = &self.format {
            out.extend_from_slice(salt);
        }
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.sealed);
        out
    }

    /// Parses wire bytes. Checks structure only: authenticity is checked by [`Self::open`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CryptoError> {
        let (format, rest) = bytes.split_first().ok_or(CryptoError::Malformed("empty"))?;
        let salt_len = match *format {
            FORMAT_V1 => 0,
            FORMAT_V2 => SALT_LEN,
            _ => return Err(CryptoError::Malformed("unknown ciphertext format version")),
        };
        if bytes.len() < HEADER_LEN + salt_len + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("ciphertext is too short"));
        }
        let (version_id, rest) = rest
            .split_at_checked(VERSION_ID_LEN)
            .ok_or(CryptoError::Malformed("header"))?;
        let (salt, rest) = rest
            .split_at_checked(salt_len)
            .ok_or(CryptoError::Malformed("salt"))?;
        let (nonce, sealed) = rest
            .split_at_checked(NONCE_LEN)
            .ok_or(CryptoError::Malformed("nonce"))?;
        let format = match *format {
            FORMAT_V1 => Format::V1,
            _ => Format::V2 {
                salt: salt
                    .try_into()
                    .map_err(|_| CryptoError::Malformed("salt"))?,
            },
        };
        Ok(DekCiphertext {
            version_id: version_id
                .try_into()
                .map_err(|_| CryptoError::Malformed("header"))?,
            format,
            nonce: nonce
                .try_into()
                .map_err(|_| CryptoError::Malformed("nonce"))?,
            sealed: sealed.to_vec(),
        })
    }
}

/// The GCM key of a seal: the version's material itself (format 1), or the per-seal key
/// derived from it (format 2).
fn gcm_key(
    format: &Format,
    key: &Secret,
    version_id: [u8; VERSION_ID_LEN],
) -> Result<Secret, CryptoError> {
    match format {
        Format::V1 => Ok(Secret::from_slice(key.expose())),
        Format::V2 { salt } => hkdf_sha256(key, salt, &[KEY_INFO_V2, &version_id], 32),
    }
}

fn additional_data(
    format: &Format,
    version_id: [u8; VERSION_ID_LEN],
    key_id: &[u8],
    aad: &[&str],
) -> Vec<u8> {
    let (domain, byte) = match format {
        Format::V1 => (DOMAIN_V1, FORMAT_V1),
        Format::V2 { .. } => (DOMAIN_V2, FORMAT_V2),
    };
    let mut ad = Canonical::new();
    ad.fixed(domain).u8(byte).fixed(&version_id).field(key_id);
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
    use crate::test_hex::hex;
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

    /// The bytes every format 1 ciphertext authenticates (release 0.1.0's layout).
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
        assert_eq!(
            additional_data(&Format::V1, [9; 16], b"key-1", &["ab", ""]),
            want
        );
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
        let v1_min = HEADER_LEN + NONCE_LEN + TAG_LEN;
        assert!(DekCiphertext::decode(&[FORMAT_V1; 1]).is_err());
        assert!(DekCiphertext::decode(&vec![FORMAT_V1; v1_min - 1]).is_err());
        assert!(DekCiphertext::decode(&vec![FORMAT_V1; v1_min]).is_ok());
        assert!(DekCiphertext::decode(&vec![FORMAT_V2; v1_min + SALT_LEN - 1]).is_err());
        for unknown in [0, 3, 0xff] {
            let mut bytes = seal(&[], &[1; 32]).encode();
            if let Some(b) = bytes.first_mut() {
                *b = unknown;
            }
            assert!(DekCiphertext::decode(&bytes).is_err());
        }
    }

    /// Committed vectors made by another implementation (Python `cryptography`: AESGCM and
    /// HKDF): root key 0x42 x 32, version id 0x09 x 16, key id `key-1`, AAD
    /// ["tenant", "db-7"], nonce 00..0b, DEK 00..1f; format 2's salt 10..2f. A ciphertext
    /// written by release 0.1.0 opens for ever; format 2 cannot drift.
    #[test]
    fn committed_vectors_of_both_formats_open() {
        const V1: &str = "0109090909090909090909090909090909000102030405060708090a0b05df93deb5\
                          29f40c950f4e18ddd05534228cdc79b45cf4fe0b803a3c8609a3e0c7f1abff76e710bb\
                          ebe84584b6e7980a";
        const V2: &str = "0209090909090909090909090909090909101112131415161718191a1b1c1d1e1f2021\
                          22232425262728292a2b2c2d2e2f000102030405060708090a0bbf60dd608f640d6498\
                          ca6897653ace383dc156e2d880ecf094df882f017c8ac9d33b7af8555583d67fb03c71\
                          343b9112";
        let dek: Vec<u8> = (0..32).collect();
        for (vector, format, len) in [(V1, FORMAT_V1, 77), (V2, FORMAT_V2, 109)] {
            let bytes = hex(vector);
            assert_eq!(bytes.len(), len);
            let ct = DekCiphertext::decode(&bytes).unwrap();
            assert_eq!(ct.format(), format);
            assert_eq!(ct.encode(), bytes);
            let opened = ct.open(&key(), b"key-1", &["tenant", "db-7"]).unwrap();
            assert_eq!(opened.expose(), dek.as_slice());
            assert!(ct.open(&key(), b"key-1", &["tenant"]).is_err());
        }
    }

    #[test]
    fn seals_in_format_2_with_a_fresh_salt_each_time() {
        let (a, b) = (seal(&[], &[1; 32]), seal(&[], &[1; 32]));
        assert_eq!((a.format(), b.format()), (FORMAT_V2, FORMAT_V2));
        assert_ne!(a.format, b.format, "two seals shared a salt");
        assert_eq!(a.encode().len(), 1 + 16 + 32 + 12 + 32 + 16);
    }

    /// A format 2 ciphertext relabelled as format 1 (its salt read as nonce and ciphertext) or
    /// the other way round does not open.
    #[test]
    fn a_changed_format_byte_does_not_open() {
        let mut bytes = seal(&["x"], &[7; 32]).encode();
        bytes[0] = FORMAT_V1;
        let opened = DekCiphertext::decode(&bytes).and_then(|c| c.open(&key(), b"key-1", &["x"]));
        assert!(opened.is_err());
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(version_id in any::<[u8; 16]>(), nonce in any::<[u8; 12]>(),
                                 salt in proptest::option::of(any::<[u8; 32]>()),
                                 sealed in proptest::collection::vec(any::<u8>(), TAG_LEN..200)) {
            let format = salt.map_or(Format::V1, |salt| Format::V2 { salt });
            let ct = DekCiphertext { version_id, format, nonce, sealed };
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
