//! The software custody backend, Keyward's embedded default: the master key encryption key
//! (MKEK) and the record-signing key live in a keystore file in the data directory (mode 0600),
//! loaded into zeroizing memory at start. Key material is wrapped with AES-KWP (RFC 5649) under
//! the MKEK; records are signed with HMAC-SHA256.
//!
//! The keystore is sealed ([`seal_keystore`], [`UnsealSecret`]) when an unseal secret is given: encrypted under a key from a
//! file or the environment, or derived from a passphrase with Argon2id. Unsealed (the version 1
//! file), it is the root of every key to whoever reads the data directory: for development only
//! (the runtime warns). Where the host itself is not trusted, use the PKCS#11 backend.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use keyward_core::{Custody, CustodyError, WrappedMaterial};
use keyward_crypto::{Secret, hmac_sha256, hmac_verify, kwp_unwrap, kwp_wrap, random_secret};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

mod seal;
pub use seal::{MIN_PASSPHRASE_BYTES, UnsealSecret};
use seal::{SEALED_VERSION, SealedFile};

/// The keystore's file name inside the data directory.
pub const KEYSTORE_FILE: &str = "keystore.json";
const FORMAT_VERSION: u32 = 1;

/// Why the keystore could not be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Reading or writing the file failed.
    #[error("keystore {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but is not a valid keystore.
    #[error("keystore {path} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
    /// The file is readable by others.
    #[error("keystore {0} must not be accessible by group or others (chmod 600)")]
    Permissions(PathBuf),
    /// The keystore is sealed and no unseal secret was given.
    #[error(
        "keystore {0} is sealed: give its unseal secret (--unseal-key-file FILE, or the \
         KEYWARD_UNSEAL_KEY_FILE environment variable naming the file)"
    )]
    Sealed(PathBuf),
    /// The unseal secret does not open the keystore.
    #[error(
        "the unseal secret does not open keystore {0} (another key or passphrase, or an altered \
         file)"
    )]
    WrongUnsealSecret(PathBuf),
    /// Sealing could not be done.
    #[error("sealing keystore {path}: {reason}")]
    Seal {
        /// The file.
        path: PathBuf,
        /// What is wrong (never key material).
        reason: String,
    },
}

/// Whether a data directory's keystore is there and sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeystoreState {
    /// No `keystore.json`.
    Missing,
    /// A version 1 keystore: the keys in plaintext (mode 0600 only).
    Plaintext,
    /// A version 2 keystore, sealed.
    Sealed,
}

/// Whether `dir` holds a keystore, and whether it is sealed (from its version; nothing is
/// decrypted).
pub fn keystore_state(dir: &Path) -> Result<KeystoreState, KeystoreError> {
    let path = dir.join(KEYSTORE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(KeystoreState::Missing),
        Err(source) => return Err(KeystoreError::Io { path, source }),
    };
    match file_version(&text) {
        Some(SEALED_VERSION) => Ok(KeystoreState::Sealed),
        Some(FORMAT_VERSION) => Ok(KeystoreState::Plaintext),
        _ => Err(KeystoreError::Invalid {
            path,
            reason: "not a keystore of a known version".into(),
        }),
    }
}

/// The `version` field of a keystore document.
fn file_version(text: &str) -> Option<u32> {
    #[derive(Deserialize)]
    struct Version {
        version: u32,
    }
    serde_json::from_str::<Version>(text)
        .ok()
        .map(|v| v.version)
}

/// Seals the plaintext keystore in `dir` under `secret` (a base64 256-bit key, or a passphrase
/// of at least [`MIN_PASSPHRASE_BYTES`], stretched with Argon2id), replacing the file
/// atomically. The keys do not change: every wrapped key and signature stays valid. The
/// plaintext file's old blocks may survive on the disk (a rename does not erase them).
pub fn seal_keystore(dir: &Path, secret: &UnsealSecret) -> Result<(), KeystoreError> {
    let path = dir.join(KEYSTORE_FILE);
    let fail = |reason: String| KeystoreError::Seal {
        path: path.clone(),
        reason,
    };
    match keystore_state(dir)? {
        KeystoreState::Missing => {
            return Err(fail("there is no keystore to seal".into()));
        }
        KeystoreState::Sealed => return Err(fail("it is sealed already".into())),
        KeystoreState::Plaintext => {}
    }
    // Opened first: only a valid keystore is sealed.
    let custody = SoftwareCustody::open(&path, None)?;
    let text = Zeroizing::new(fs::read(&path).map_err(|source| KeystoreError::Io {
        path: path.clone(),
        source,
    })?);
    let (params, key) = secret.new_seal().map_err(fail)?;
    let sealed = SealedFile::seal(params, &key, &text).map_err(fail)?;
    let out = serde_json::to_vec_pretty(&sealed).map_err(|e| fail(e.to_string()))?;
    let tmp = path.with_extension("json.sealed");
    write_atomic(&tmp, &path, &out)?;
    // Read back: the sealed file opens to the same keys.
    let reopened = SoftwareCustody::open(&path, Some(secret))?;
    if reopened.current != custody.current
        || !reopened.signing_key.ct_eq(&custody.signing_key)
        || reopened.mkeks.len() != custody.mkeks.len()
    {
        return Err(fail(
            "the sealed keystore does not read back the same keys".into(),
        ));
    }
    Ok(())
}

/// Writes `contents` to `tmp` (0600, fsynced), renames it to `path` and fsyncs the directory: a
/// crash leaves the old file or the new one, never a torn one.
fn write_atomic(tmp: &Path, path: &Path, contents: &[u8]) -> Result<(), KeystoreError> {
    let io = |source| KeystoreError::Io {
        path: path.to_owned(),
        source,
    };
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

// On-disk form. Holds base64 key material: zeroized on drop, never Debug.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeystoreFile {
    version: u32,
    current_mkek: String,
    mkeks: Vec<MkekEntry>,
    signing_key: String,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct MkekEntry {
    id: String,
    key: String,
}

/// The software custody backend.
pub struct SoftwareCustody {
    current: String,
    mkeks: Vec<(String, Secret)>,
    signing_key: Secret,
}

impl std::fmt::Debug for SoftwareCustody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareCustody")
            .field("current_mkek", &self.current)
            .finish_non_exhaustive()
    }
}

impl SoftwareCustody {
    /// Opens `dir/keystore.json`, creating it with new random keys if it does not exist.
    /// Returns the custody and whether the keystore was created now. A sealed keystore needs
    /// [`SoftwareCustody::open_or_create_with`].
    pub fn open_or_create(dir: &Path) -> Result<(Self, bool), KeystoreError> {
        Self::open_or_create_with(dir, None)
    }

    /// As [`SoftwareCustody::open_or_create`], with the secret that unseals the keystore (a new
    /// keystore is sealed under it; without one it is written in plaintext).
    pub fn open_or_create_with(
        dir: &Path,
        unseal: Option<&UnsealSecret>,
    ) -> Result<(Self, bool), KeystoreError> {
        let path = dir.join(KEYSTORE_FILE);
        match fs::metadata(&path) {
            Ok(_) => Ok((Self::open(&path, unseal)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Self::create(&path, unseal)?, true))
            }
            Err(source) => Err(KeystoreError::Io { path, source }),
        }
    }

    fn open(path: &Path, unseal: Option<&UnsealSecret>) -> Result<Self, KeystoreError> {
        let io = |source| KeystoreError::Io {
            path: path.to_owned(),
            source,
        };
        let invalid = |reason: &str| KeystoreError::Invalid {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let meta = fs::metadata(path).map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(KeystoreError::Permissions(path.to_owned()));
            }
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        let inner;
        let text: &str = if file_version(&text) == Some(SEALED_VERSION) {
            let sealed: SealedFile = serde_json::from_str(&text)
                .map_err(|_| invalid("not a sealed keystore JSON document"))?;
            let secret = unseal.ok_or_else(|| KeystoreError::Sealed(path.to_owned()))?;
            inner = sealed
                .open(secret)
                .map_err(|reason| invalid(&reason))?
                .ok_or_else(|| KeystoreError::WrongUnsealSecret(path.to_owned()))?;
            std::str::from_utf8(inner.expose())
                .map_err(|_| invalid("sealed content is not text"))?
        } else {
            &text
        };
        let file: KeystoreFile =
            serde_json::from_str(text).map_err(|_| invalid("not a keystore JSON document"))?;
        if file.version != FORMAT_VERSION {
            return Err(invalid("unsupported keystore version"));
        }
        let decode = |b64: &str, what: &str| -> Result<Secret, KeystoreError> {
            let bytes = B64.decode(b64).map_err(|_| invalid(what))?;
            if bytes.len() != 32 {
                return Err(invalid(what));
            }
            Ok(Secret::new(bytes))
        };
        let mut mkeks = Vec::with_capacity(file.mkeks.len());
        for m in &file.mkeks {
            mkeks.push((m.id.clone(), decode(&m.key, "bad MKEK entry")?));
        }
        if !mkeks.iter().any(|(id, _)| *id == file.current_mkek) {
            return Err(invalid("current MKEK is missing"));
        }
        Ok(SoftwareCustody {
            current: file.current_mkek.clone(),
            mkeks,
            signing_key: decode(&file.signing_key, "bad signing key")?,
        })
    }

    fn create(path: &Path, unseal: Option<&UnsealSecret>) -> Result<Self, KeystoreError> {
        let rng = |_| KeystoreError::Invalid {
            path: path.to_owned(),
            reason: "random generator failed".into(),
        };
        let mkek = random_secret(32).map_err(rng)?;
        let signing_key = random_secret(32).map_err(rng)?;
        let id = "software:mkek:1".to_owned();
        let file = KeystoreFile {
            version: FORMAT_VERSION,
            current_mkek: id.clone(),
            mkeks: vec![MkekEntry {
                id: id.clone(),
                key: B64.encode(mkek.expose()),
            }],
            signing_key: B64.encode(signing_key.expose()),
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| {
            KeystoreError::Invalid {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?);
        let contents = match unseal {
            None => Zeroizing::new(text.as_bytes().to_vec()),
            Some(secret) => {
                let fail = |reason: String| KeystoreError::Seal {
                    path: path.to_owned(),
                    reason,
                };
                let (params, key) = secret.new_seal().map_err(fail)?;
                let sealed = SealedFile::seal(params, &key, text.as_bytes()).map_err(fail)?;
                Zeroizing::new(serde_json::to_vec_pretty(&sealed).map_err(|e| fail(e.to_string()))?)
            }
        };
        // A crash leaves either no keystore or a whole one, never a torn one.
        write_atomic(&path.with_extension("json.tmp"), path, &contents)?;
        Ok(SoftwareCustody {
            current: id.clone(),
            mkeks: vec![(id, mkek)],
            signing_key,
        })
    }

    fn mkek(&self, id: &str) -> Result<&Secret, CustodyError> {
        self.mkeks
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, s)| s)
            .ok_or_else(|| CustodyError::UnknownWrappingKey(id.to_owned()))
    }
}

impl Custody for SoftwareCustody {
    fn current_wrapping_key(&self) -> Result<String, CustodyError> {
        Ok(self.current.clone())
    }

    fn name(&self) -> &'static str {
        "software"
    }

    fn wrap_material(&self, material: &Secret) -> Result<WrappedMaterial, CustodyError> {
        let bytes = kwp_wrap(self.mkek(&self.current)?, material)
            .map_err(|e| CustodyError::Internal(e.to_string()))?;
        Ok(WrappedMaterial {
            wrapping_key: self.current.clone(),
            bytes,
        })
    }

    fn unwrap_material(&self, wrapped: &WrappedMaterial) -> Result<Secret, CustodyError> {
        kwp_unwrap(self.mkek(&wrapped.wrapping_key)?, &wrapped.bytes)
            .map_err(|_| CustodyError::IntegrityFailure)
    }

    fn sign_record(&self, data: &[u8]) -> Result<Vec<u8>, CustodyError> {
        Ok(hmac_sha256(&self.signing_key, data).0.to_vec())
    }

    fn verify_record(&self, data: &[u8], signature: &[u8]) -> Result<(), CustodyError> {
        hmac_verify(&self.signing_key, data, signature).map_err(|_| CustodyError::IntegrityFailure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_0600_keystore_and_reopens_it_with_the_same_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let (c1, created) =
            SoftwareCustody::open_or_create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(created);
        let mode = fs::metadata(dir.path().join(KEYSTORE_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
        let material = Secret::from_slice(&[5; 32]);
        let wrapped = c1
            .wrap_material(&material)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_ne!(wrapped.bytes, material.expose());
        let sig = c1.sign_record(b"record").unwrap_or_default();

        let (c2, created) =
            SoftwareCustody::open_or_create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!created);
        assert!(
            c2.unwrap_material(&wrapped)
                .is_ok_and(|m| m.ct_eq(&material))
        );
        assert!(c2.verify_record(b"record", &sig).is_ok());
        assert!(matches!(
            c2.verify_record(b"recorD", &sig),
            Err(CustodyError::IntegrityFailure)
        ));
    }

    #[test]
    fn refuses_altered_material_unknown_wrapping_key_and_open_permissions() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let (c, _) =
            SoftwareCustody::open_or_create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        let mut w = c
            .wrap_material(&Secret::from_slice(&[1; 16]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        if let Some(b) = w.bytes.get_mut(3) {
            *b ^= 1;
        }
        assert!(matches!(
            c.unwrap_material(&w),
            Err(CustodyError::IntegrityFailure)
        ));
        w.wrapping_key = "software:mkek:9".into();
        assert!(matches!(
            c.unwrap_material(&w),
            Err(CustodyError::UnknownWrappingKey(_))
        ));

        let path = dir.path().join(KEYSTORE_FILE);
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
        assert!(matches!(
            SoftwareCustody::open_or_create(dir.path()),
            Err(KeystoreError::Permissions(_))
        ));
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
        let _ = fs::write(&path, "{\"garbage\": true}");
        assert!(matches!(
            SoftwareCustody::open_or_create(dir.path()),
            Err(KeystoreError::Invalid { .. })
        ));
    }

    /// See: issue 18, item 17. The MKEK sat in keystore.json in plaintext.
    #[test]
    fn a_sealed_keystore_holds_no_key_in_clear_and_opens_only_with_its_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let (plain, _) =
            SoftwareCustody::open_or_create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            keystore_state(dir.path()).ok(),
            Some(KeystoreState::Plaintext)
        );
        let before = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&before).unwrap_or_default();
        let mkek = v["mkeks"][0]["key"].as_str().unwrap_or("x").to_owned();
        let wrapped = plain
            .wrap_material(&Secret::from_slice(&[7; 32]))
            .unwrap_or_else(|e| unreachable!("{e}"));
        let sig = plain.sign_record(b"record").unwrap_or_default();

        let pass = UnsealSecret::new(b"a passphrase of some length\n".to_vec());
        seal_keystore(dir.path(), &pass).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(keystore_state(dir.path()).ok(), Some(KeystoreState::Sealed));
        let after = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap_or_default();
        assert!(!after.contains(&mkek));
        let mode = fs::metadata(dir.path().join(KEYSTORE_FILE))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));

        // The same keys: what was wrapped and signed before still opens and verifies.
        let (sealed, created) = SoftwareCustody::open_or_create_with(dir.path(), Some(&pass))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(!created);
        assert!(
            sealed
                .unwrap_material(&wrapped)
                .is_ok_and(|m| m.expose() == [7; 32])
        );
        assert!(sealed.verify_record(b"record", &sig).is_ok());

        assert!(matches!(
            SoftwareCustody::open_or_create(dir.path()),
            Err(KeystoreError::Sealed(_))
        ));
        let wrong = UnsealSecret::new(b"another passphrase, wrong".to_vec());
        assert!(matches!(
            SoftwareCustody::open_or_create_with(dir.path(), Some(&wrong)),
            Err(KeystoreError::WrongUnsealSecret(_))
        ));
        assert!(matches!(
            seal_keystore(dir.path(), &pass),
            Err(KeystoreError::Seal { .. })
        ));
    }

    #[test]
    fn a_new_keystore_is_sealed_under_a_given_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let text = UnsealSecret::generate_key_text().unwrap_or_default();
        let key = UnsealSecret::new(text.as_bytes().to_vec());
        let (c, created) = SoftwareCustody::open_or_create_with(dir.path(), Some(&key))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(created);
        assert_eq!(keystore_state(dir.path()).ok(), Some(KeystoreState::Sealed));
        let sig = c.sign_record(b"r").unwrap_or_default();
        let (again, _) = SoftwareCustody::open_or_create_with(dir.path(), Some(&key))
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(again.verify_record(b"r", &sig).is_ok());
    }

    #[test]
    fn debug_does_not_show_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let (c, _) =
            SoftwareCustody::open_or_create(dir.path()).unwrap_or_else(|e| unreachable!("{e}"));
        let text = fs::read_to_string(dir.path().join(KEYSTORE_FILE)).unwrap_or_default();
        let shown = format!("{c:?}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let sk = v["signing_key"].as_str().unwrap_or("x");
        assert!(!shown.contains(sk));
    }
}
