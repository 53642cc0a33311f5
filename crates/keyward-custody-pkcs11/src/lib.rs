//! The PKCS#11 custody backend: the master key encryption key (MKEK) and the record-signing key
//! (SKEY) live in one or more HSM tokens as sensitive, non-extractable objects, and every
//! operation with them runs inside the token. Tokens are tried in the configured order; one that
//! fails is skipped until a backoff has passed, then probed again on the next call.
//!
//! It must not hold a master key outside the HSM, cache unwrapped material, or panic on anything
//! the module returns: every PKCS#11 error becomes a `CustodyError` in one function, `classify`.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod admin;
mod config;
mod token;

use std::path::PathBuf;
use std::sync::Arc;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use keyward_core::{Custody, CustodyError, WrappedMaterial};
use keyward_crypto::Secret;
use zeroize::Zeroize;

pub use admin::{
    CheckReport, InitReport, MasterKeys, TokenReport, add_mkek_version, check, import_keys,
    init_objects, mkek_versions, retire_mkek_versions,
};
pub use config::{PinSource, Pkcs11Config};
/// How soon a running backend uses an MKEK version another process added to its tokens, unless
/// configured otherwise ([`Pkcs11Config::mkek_rescan`]).
pub const MKEK_RESCAN: std::time::Duration = std::time::Duration::from_secs(2);
use token::{Keys, Live, Token};

/// Why the backend could not be opened or administered.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The configuration is inconsistent.
    #[error("PKCS#11 configuration: {0}")]
    Config(String),
    /// The module could not be loaded or initialized.
    #[error("PKCS#11 module {path}: {reason}")]
    Module {
        /// The module path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The PIN could not be read.
    #[error("HSM PIN: {0}")]
    Pin(String),
    /// No configured token can be used; one reason per token.
    #[error("no usable HSM token: {0}")]
    NoUsableToken(String),
    /// A token refused an administrative operation.
    #[error("HSM token {label}: {reason}")]
    Token {
        /// The token label.
        label: String,
        /// What failed.
        reason: String,
    },
}

/// The PKCS#11 custody backend.
pub struct Pkcs11Custody {
    keys: Keys,
    tokens: Vec<Arc<Token>>,
}

impl std::fmt::Debug for Pkcs11Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Custody")
            .field("mkek_label", &self.keys.mkek_label)
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.label).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// What went wrong with one attempt on one token.
enum Fault {
    /// The request itself is bad (altered ciphertext, wrong signature): no other token will
    /// answer differently, so it is returned as is.
    Request(CustodyError),
    /// The token failed: mark it down and try the next one.
    Token(String),
    /// The token does not know this MKEK version (yet): look its versions up again, retry once.
    UnknownVersion,
}

/// The seam's one translation of PKCS#11 errors (Parsec's `to_response_status`).
fn classify(e: CkError) -> Fault {
    match e {
        CkError::Pkcs11(rv, _) => match rv {
            RvError::SignatureInvalid
            | RvError::SignatureLenRange
            | RvError::WrappedKeyInvalid
            | RvError::WrappedKeyLenRange
            | RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange => Fault::Request(CustodyError::IntegrityFailure),
            // The same request fails on every token: failing over would take them all down.
            RvError::ArgumentsBad
            | RvError::AttributeValueInvalid
            | RvError::TemplateIncomplete
            | RvError::TemplateInconsistent
            | RvError::KeySizeRange
            | RvError::DataLenRange
            | RvError::DataInvalid => Fault::Request(CustodyError::Internal(e.to_string())),
            _ => Fault::Token(e.to_string()),
        },
        // Conversions (lengths that do not fit a CK_ULONG) are the request's fault.
        CkError::TryFromInt(_) | CkError::TryFromSlice(_) | CkError::InvalidValue => {
            Fault::Request(CustodyError::Internal(e.to_string()))
        }
        _ => Fault::Token(e.to_string()),
    }
}

impl Pkcs11Custody {
    /// Loads the module, reads the PIN and probes every token; fails if none is usable.
    pub fn open(config: &Pkcs11Config) -> Result<Self, Pkcs11Error> {
        config.validate()?;
        let keys = Keys {
            module: config::module(&config.module)?,
            pin: config::read_pin(&config.pin)?,
            mkek_label: config.mkek_label.clone(),
            skey_label: config.skey_label.clone(),
            retry_after: config.retry_after,
            mkek_rescan: config.mkek_rescan,
        };
        let tokens: Vec<_> = config.tokens.iter().cloned().map(Token::new).collect();
        let mut reasons = Vec::new();
        for t in &tokens {
            if let Err(r) = t.ready(&keys) {
                tracing::warn!(token = %t.label, reason = %r, "HSM token not usable at start");
                reasons.push(format!("{}: {r}", t.label));
            }
        }
        if reasons.len() == tokens.len() {
            return Err(Pkcs11Error::NoUsableToken(reasons.join("; ")));
        }
        Ok(Pkcs11Custody { keys, tokens })
    }

    /// `pkcs11:<mkek label>:<version>`: names the backend as well as the key, so material
    /// wrapped by the software backend (`software:mkek:1`) is never handed to the HSM.
    fn wrapping_key(&self, version: u32) -> String {
        format!("pkcs11:{}:{version}", self.keys.mkek_label)
    }

    /// The MKEK version a wrapping key name refers to, if it is one of ours.
    fn version_of(&self, wrapping_key: &str) -> Option<u32> {
        let rest = wrapping_key
            .strip_prefix("pkcs11:")?
            .strip_prefix(self.keys.mkek_label.as_str())?
            .strip_prefix(':')?;
        rest.parse::<u32>()
            .ok()
            .filter(|v| *v >= 1 && rest == v.to_string())
    }

    /// Labels of the tokens believed usable, in failover order: a token is found failed when an
    /// operation uses it; one marked failed is probed again here once its backoff has passed.
    pub fn healthy_tokens(&self) -> Vec<String> {
        self.tokens
            .iter()
            .filter(|t| t.ready(&self.keys).is_ok())
            .map(|t| t.label.clone())
            .collect()
    }

    /// Runs `op` on the first healthy token, failing over to the next on a token fault.
    fn run<T>(&self, op: impl Fn(&Session, &Live) -> Result<T, Fault>) -> Result<T, CustodyError> {
        let mut reasons = Vec::new();
        for token in &self.tokens {
            let live = match token.ready(&self.keys) {
                Ok(live) => live,
                Err(r) => {
                    reasons.push(format!("{}: {r}", token.label));
                    continue;
                }
            };
            let session = match token.take_session(&self.keys, &live) {
                Ok(s) => s,
                Err(e) => {
                    let r = format!("cannot open a session: {e}");
                    token.fail(live.generation, r.clone());
                    reasons.push(format!("{}: {r}", token.label));
                    continue;
                }
            };
            let mut result = op(&session, &live);
            if matches!(result, Err(Fault::UnknownVersion)) {
                // Added by another process since this token was last looked at?
                result = match token.rescan(&self.keys, &live) {
                    Ok(fresh) => op(&session, &fresh),
                    Err(r) => Err(Fault::Token(r)),
                };
            }
            match result {
                Ok(v) => {
                    token.put_session(&live, session);
                    return Ok(v);
                }
                Err(Fault::Request(e)) => {
                    token.put_session(&live, session);
                    return Err(e);
                }
                Err(Fault::Token(r)) => {
                    token.fail(live.generation, r.clone());
                    reasons.push(format!("{}: {r}", token.label));
                }
                // Still unknown after a fresh look: another token may hold it (a rotation that
                // reached only some tokens), but never fail a healthy token over it.
                Err(Fault::UnknownVersion) => {
                    token.put_session(&live, session);
                    reasons.push(format!("{}: MKEK version not present", token.label));
                }
            }
        }
        Err(CustodyError::Unavailable(format!(
            "no healthy HSM token ({})",
            reasons.join("; ")
        )))
    }
}

/// Template for the transient session object holding material to wrap or just unwrapped.
/// Wrapping needs it extractable; reading it back after an unwrap needs it non-sensitive too.
fn material_template(sensitive: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(sensitive),
        Attribute::Extractable(true),
    ]
}

fn zeroize_values(attrs: &mut [Attribute]) {
    for a in attrs {
        if let Attribute::Value(v) = a {
            v.zeroize();
        }
    }
}

/// Destroys a transient object; if that fails the session's close destroys it anyway.
fn destroy(session: &Session, obj: ObjectHandle) {
    if let Err(e) = session.destroy_object(obj) {
        tracing::debug!(error = %e, "destroying a transient session object failed");
    }
}

// Why key wrap (CKM_AES_KEY_WRAP_PAD, C_WrapKey/C_UnwrapKey) rather than AES-GCM
// (C_Encrypt/C_Decrypt) with the MKEK: both keep the MKEK sensitive and non-extractable, but
// - the MKEK then carries only CKA_WRAP/CKA_UNWRAP, never CKA_ENCRYPT/CKA_DECRYPT, so it cannot
//   be used as a general-purpose cipher over arbitrary data by anything sharing the login;
// - key wrap is deterministic and needs no nonce: no IV to generate, store or ever repeat;
// - a GCM tag failure comes back from SoftHSM as CKR_GENERAL_ERROR, indistinguishable from a
//   device failure, which would make an altered ciphertext take a healthy token out of service.
// The cost: the material passes through a transient session object (sensitive on the way in;
// non-sensitive and extractable on the way out, because the host needs the plaintext anyway),
// destroyed at once, and an unwrap is three calls instead of one.
//
// The material is padded (ISO/IEC 7816-4: 0x80, then zeros to a multiple of 8 bytes) before it
// becomes a key object. Measured with SoftHSM 2.6.1: for material whose length is not a multiple
// of 8 its KWP output is not RFC 5649 (it differs from aws-lc-rs) and C_UnwrapKey returns the
// material zero-padded to a multiple of 8, so the length is lost. With our own padding the token
// only ever wraps whole 8-byte blocks, the result is standard RFC 5649 over the padded bytes
// (aws-lc-rs opens it), and the length survives on any HSM.

/// `material || 0x80 || 0x00*`, a multiple of 8 bytes long.
fn pad(material: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(material.len() + 8);
    v.extend_from_slice(material);
    v.push(0x80);
    while !v.len().is_multiple_of(8) {
        v.push(0);
    }
    v
}

/// The inverse of [`pad`]; `None` if the padding is malformed.
fn unpad(padded: &[u8]) -> Option<&[u8]> {
    let end = padded.iter().rposition(|&b| b != 0)?;
    if !padded.len().is_multiple_of(8) || padded.len() - end > 8 || padded.get(end) != Some(&0x80) {
        return None;
    }
    padded.get(..end)
}

impl Custody for Pkcs11Custody {
    fn name(&self) -> &'static str {
        "pkcs11"
    }

    fn tokens(&self) -> Vec<(String, bool)> {
        self.tokens
            .iter()
            .map(|t| (t.label.clone(), t.ready(&self.keys).is_ok()))
            .collect()
    }

    fn generate_material(&self, len: usize) -> Result<Secret, CustodyError> {
        let n = u32::try_from(len)
            .map_err(|_| CustodyError::Internal("material length out of range".into()))?;
        self.run(|s, _| s.generate_random_vec(n).map(Secret::new).map_err(classify))
    }

    fn current_wrapping_key(&self) -> Result<String, CustodyError> {
        let version = self.run(|_, live| {
            live.current()
                .map(|(v, _)| v)
                .ok_or_else(|| Fault::Token("no MKEK".into()))
        })?;
        Ok(self.wrapping_key(version))
    }

    fn wrap_material(&self, material: &Secret) -> Result<WrappedMaterial, CustodyError> {
        let (version, bytes) = self.run(|s, live| {
            let (version, mkek) = live
                .current()
                .ok_or_else(|| Fault::Token("no MKEK".into()))?;
            let mut template = material_template(true);
            template.push(Attribute::Value(pad(material.expose())));
            let created = s.create_object(&template);
            zeroize_values(&mut template);
            let obj = created.map_err(classify)?;
            let wrapped = s.wrap_key(&Mechanism::AesKeyWrapPad, mkek, obj);
            destroy(s, obj);
            wrapped.map(|w| (version, w)).map_err(classify)
        })?;
        Ok(WrappedMaterial {
            wrapping_key: self.wrapping_key(version),
            bytes,
        })
    }

    fn unwrap_material(&self, wrapped: &WrappedMaterial) -> Result<Secret, CustodyError> {
        let Some(version) = self.version_of(&wrapped.wrapping_key) else {
            return Err(CustodyError::UnknownWrappingKey(
                wrapped.wrapping_key.clone(),
            ));
        };
        let unknown = || CustodyError::UnknownWrappingKey(wrapped.wrapping_key.clone());
        let result = self.run(|s, live| {
            let mkek = live.mkek(version).ok_or(Fault::UnknownVersion)?;
            let obj = match s.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                mkek,
                &wrapped.bytes,
                &material_template(false),
            ) {
                Ok(obj) => obj,
                // SoftHSM reports a failed integrity check as CKR_GENERAL_ERROR. Ask the same
                // session something harmless: if the token answers, the ciphertext was bad.
                Err(CkError::Pkcs11(RvError::GeneralError, _))
                    if s.get_attributes(mkek, &[AttributeType::Class]).is_ok() =>
                {
                    return Err(Fault::Request(CustodyError::IntegrityFailure));
                }
                Err(e) => return Err(classify(e)),
            };
            let attrs = s.get_attributes(obj, &[AttributeType::Value]);
            destroy(s, obj);
            let mut attrs = attrs.map_err(classify)?;
            let secret = attrs.iter().find_map(|a| match a {
                Attribute::Value(v) => Some(unpad(v).map(Secret::from_slice)),
                _ => None,
            });
            zeroize_values(&mut attrs);
            match secret {
                Some(Some(s)) => Ok(s),
                // Only an MKEK holder can produce a well-wrapped value: treat as tampering.
                Some(None) => Err(Fault::Request(CustodyError::IntegrityFailure)),
                None => Err(Fault::Request(CustodyError::Internal(
                    "the unwrapped object has no value".into(),
                ))),
            }
        });
        match result {
            // Every healthy token was asked and none holds that version.
            Err(CustodyError::Unavailable(r))
                if r.matches("MKEK version not present").count() == self.tokens.len() =>
            {
                Err(unknown())
            }
            other => other,
        }
    }

    fn sign_record(&self, data: &[u8]) -> Result<Vec<u8>, CustodyError> {
        self.run(|s, live| {
            s.sign(&Mechanism::Sha256Hmac, live.skey, data)
                .map_err(classify)
        })
    }

    fn verify_record(&self, data: &[u8], signature: &[u8]) -> Result<(), CustodyError> {
        // An HMAC-SHA256 tag is 32 bytes; anything else is refused before the token sees it.
        if signature.len() != 32 {
            return Err(CustodyError::IntegrityFailure);
        }
        self.run(|s, live| {
            s.verify(&Mechanism::Sha256Hmac, live.skey, data, signature)
                .map_err(classify)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_round_trips_every_length_and_refuses_malformed_padding() {
        for len in 0..40 {
            let m: Vec<u8> = (0..len).map(|i| (i as u8) | 0x80).collect();
            let p = pad(&m);
            assert_eq!(p.len() % 8, 0);
            assert!(p.len() > m.len() && p.len() <= m.len() + 8);
            assert_eq!(unpad(&p), Some(m.as_slice()));
        }
        assert_eq!(unpad(&[0; 8]), None);
        assert_eq!(unpad(&[1, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(unpad(&[0x80, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            unpad(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(unpad(&[]), None);
    }
}
