//! Token administration: creating the objects Keyward needs (`init_objects`, `import_keys`) and
//! reporting what each token holds (`check`). Run by an operator, not on the request path.

use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::types::AuthPin;
use keyward_crypto::{Secret, random_secret};

use crate::token::{find_key, find_mkeks, find_slot, login, mkek_version_label};
use crate::{Pkcs11Config, Pkcs11Error, config, zeroize_values};

/// The secret keys every token must share (MKEK, SKEY, IKEY), generated outside the HSMs so the
/// same bytes can be imported into each. Zeroized on drop; `Debug` shows nothing.
pub struct MasterKeys {
    mkek: Secret,
    skey: Secret,
    ikey: Secret,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKeys(..)")
    }
}

impl MasterKeys {
    /// Three new random 256-bit keys (aws-lc-rs).
    pub fn generate() -> Result<Self, Pkcs11Error> {
        let r = || random_secret(32).map_err(|e| Pkcs11Error::Config(e.to_string()));
        Ok(MasterKeys {
            mkek: r()?,
            skey: r()?,
            ikey: r()?,
        })
    }

    /// Keys from a key ceremony or backup; each must be 32 bytes.
    pub fn from_secrets(mkek: Secret, skey: Secret, ikey: Secret) -> Result<Self, Pkcs11Error> {
        if [&mkek, &skey, &ikey].iter().any(|k| k.len() != 32) {
            return Err(Pkcs11Error::Config("master keys must be 32 bytes".into()));
        }
        Ok(MasterKeys { mkek, skey, ikey })
    }
}

/// What `init_objects` or `import_keys` created, as `token: label`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Objects created, `token: label`.
    pub created: Vec<String>,
}

/// What one token holds and whether Keyward can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReport {
    /// The token label.
    pub label: String,
    /// The token was found and the PIN accepted.
    pub login_ok: bool,
    /// Object labels found.
    pub present: Vec<String>,
    /// Object labels missing.
    pub missing: Vec<String>,
    /// Why the token could not be inspected, if it could not.
    pub error: Option<String>,
}

impl TokenReport {
    /// Keyward can serve from this token: logged in, every object present.
    pub fn usable(&self) -> bool {
        self.login_ok && self.error.is_none() && self.missing.is_empty()
    }
}

/// One report per configured token, in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Per token.
    pub tokens: Vec<TokenReport>,
}

enum Kind {
    Aes,
    Hmac,
}

struct SecretSpec<'a> {
    label: &'a str,
    kind: Kind,
    key: &'a Secret,
}

fn all_labels(config: &Pkcs11Config) -> Vec<String> {
    let mut v = vec![
        config.mkek_label.clone(),
        config.skey_label.clone(),
        config.ikey_label.clone(),
    ];
    v.extend((1..=config.tkek_count).map(|n| config.tkek_label(n)));
    v
}

fn has_label(session: &Session, label: &str) -> Result<bool, String> {
    session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map(|v| !v.is_empty())
        .map_err(|e| format!("cannot search objects: {e}"))
}

/// Reports, per token, whether it is found, the PIN works, and which objects exist.
pub fn check(config: &Pkcs11Config) -> Result<CheckReport, Pkcs11Error> {
    config.validate()?;
    let module = config::module(&config.module)?;
    let pin = config::read_pin(&config.pin)?;
    let labels = all_labels(config);
    let tokens = config
        .tokens
        .iter()
        .map(|label| {
            let mut r = TokenReport {
                label: label.clone(),
                login_ok: false,
                present: Vec::new(),
                missing: Vec::new(),
                error: None,
            };
            let session = match open_rw(&module, label, &pin) {
                Ok(s) => s,
                Err(e) => {
                    r.error = Some(e);
                    return r;
                }
            };
            r.login_ok = true;
            match finals(&session, &config.mkek_label) {
                Ok(v) if v.is_empty() => r.missing.push(config.mkek_label.clone()),
                Ok(v) => r.present.extend(
                    v.iter()
                        .map(|(n, _)| mkek_version_label(&config.mkek_label, *n)),
                ),
                Err(e) => r.error = Some(e),
            }
            for l in labels.iter().filter(|l| **l != config.mkek_label) {
                match has_label(&session, l) {
                    Ok(true) => r.present.push(l.clone()),
                    Ok(false) => r.missing.push(l.clone()),
                    Err(e) => r.error = Some(e),
                }
            }
            r
        })
        .collect();
    Ok(CheckReport { tokens })
}

fn open_rw(module: &Pkcs11, label: &str, pin: &AuthPin) -> Result<Session, String> {
    let slot = find_slot(module, label)?;
    let s = module
        .open_rw_session(slot)
        .map_err(|e| format!("cannot open a session: {e}"))?;
    login(&s, pin).map_err(|e| format!("login failed: {e}"))?;
    Ok(s)
}

/// Opens a logged-in read-write session on every configured token; all must be reachable, so
/// they end up holding the same keys.
fn sessions(config: &Pkcs11Config) -> Result<Vec<(String, Session)>, Pkcs11Error> {
    config.validate()?;
    let module = config::module(&config.module)?;
    let pin = config::read_pin(&config.pin)?;
    config
        .tokens
        .iter()
        .map(|label| {
            open_rw(&module, label, &pin)
                .map(|s| (label.clone(), s))
                .map_err(|reason| Pkcs11Error::Token {
                    label: label.clone(),
                    reason,
                })
        })
        .collect()
}

/// Creates, on every token, the objects that are missing: MKEK (AES-256), SKEY (HMAC-SHA256,
/// 256-bit generic secret), IKEY (AES-256) and `tkek_count` RSA-4096 transit key pairs. Running it
/// twice creates nothing. MKEK, SKEY and IKEY are generated once outside the tokens and imported
/// into each, so every token holds the same keys; if some token already holds one of them and
/// another lacks it, this refuses (a non-extractable key cannot be copied): restore the missing
/// token with [`import_keys`] and the keys' backup instead.
pub fn init_objects(config: &Pkcs11Config) -> Result<InitReport, Pkcs11Error> {
    let sessions = sessions(config)?;
    let secret_labels = [&config.mkek_label, &config.skey_label, &config.ikey_label];
    let mut any_present = false;
    for label in secret_labels {
        let mut holders = Vec::new();
        for (token, s) in &sessions {
            let err = |reason| Pkcs11Error::Token {
                label: token.clone(),
                reason,
            };
            // The MKEK counts as present in any version (version 1 is retired by a rotation).
            let present = if label == &config.mkek_label {
                !finals(s, label).map_err(err)?.is_empty()
            } else {
                has_label(s, label).map_err(err)?
            };
            if present {
                holders.push(token.clone());
            }
        }
        if !holders.is_empty() && holders.len() != sessions.len() {
            return Err(Pkcs11Error::Config(format!(
                "{label:?} exists on {} but not on every token; a non-extractable key cannot \
                 be copied: import the same key material into the others (import_keys, see the \
                 crate README)",
                holders.join(", ")
            )));
        }
        any_present |= !holders.is_empty();
    }
    let mut report = InitReport::default();
    if !any_present {
        let keys = MasterKeys::generate()?;
        import_into(config, &sessions, &keys, &mut report)?;
    }
    create_tkeks(config, &sessions, &mut report)?;
    Ok(report)
}

/// Imports the given MKEK, SKEY and IKEY into every token that lacks them (restoring a
/// replaced token, or setting up tokens from a key ceremony), as sensitive, non-extractable
/// token objects; then creates any missing transit key pairs.
pub fn import_keys(config: &Pkcs11Config, keys: &MasterKeys) -> Result<InitReport, Pkcs11Error> {
    let sessions = sessions(config)?;
    let mut report = InitReport::default();
    import_into(config, &sessions, keys, &mut report)?;
    create_tkeks(config, &sessions, &mut report)?;
    Ok(report)
}

fn import_into(
    config: &Pkcs11Config,
    sessions: &[(String, Session)],
    keys: &MasterKeys,
    report: &mut InitReport,
) -> Result<(), Pkcs11Error> {
    let specs = [
        SecretSpec {
            label: &config.mkek_label,
            kind: Kind::Aes,
            key: &keys.mkek,
        },
        SecretSpec {
            label: &config.skey_label,
            kind: Kind::Hmac,
            key: &keys.skey,
        },
        SecretSpec {
            label: &config.ikey_label,
            kind: Kind::Aes,
            key: &keys.ikey,
        },
    ];
    for (token, s) in sessions {
        let err = |reason: String| Pkcs11Error::Token {
            label: token.clone(),
            reason,
        };
        for spec in &specs {
            let present = if *spec.label == config.mkek_label {
                !finals(s, spec.label).map_err(err)?.is_empty()
            } else {
                has_label(s, spec.label).map_err(err)?
            };
            if present {
                continue;
            }
            let (key_type, usage) = match spec.kind {
                // The MKEK wraps and unwraps key objects only (see lib.rs for why); the IKEY
                // also decrypts data (import payloads).
                Kind::Aes if spec.label == config.mkek_label => (
                    KeyType::AES,
                    vec![Attribute::Wrap(true), Attribute::Unwrap(true)],
                ),
                Kind::Aes => (
                    KeyType::AES,
                    vec![
                        Attribute::Wrap(true),
                        Attribute::Unwrap(true),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                    ],
                ),
                Kind::Hmac => (
                    KeyType::GENERIC_SECRET,
                    vec![Attribute::Sign(true), Attribute::Verify(true)],
                ),
            };
            let mut template = vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(key_type),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Modifiable(false),
                Attribute::Label(spec.label.as_bytes().to_vec()),
            ];
            template.extend(usage);
            template.push(Attribute::Value(spec.key.expose().to_vec()));
            let created = s.create_object(&template);
            zeroize_values(&mut template);
            created.map_err(|e| err(format!("cannot create {:?}: {e}", spec.label)))?;
            report.created.push(format!("{token}: {}", spec.label));
        }
    }
    Ok(())
}

/// Transit key pairs are generated inside each token, so they differ between tokens (a
/// transit public key names the pair; see the README for what that means for failover).
fn create_tkeks(
    config: &Pkcs11Config,
    sessions: &[(String, Session)],
    report: &mut InitReport,
) -> Result<(), Pkcs11Error> {
    for (token, s) in sessions {
        let err = |reason: String| Pkcs11Error::Token {
            label: token.clone(),
            reason,
        };
        for n in 1..=config.tkek_count {
            let label = config.tkek_label(n);
            if find_key(s, &label, ObjectClass::PRIVATE_KEY).is_ok() {
                continue;
            }
            // A public key without its private key is left over from an interrupted run.
            let orphans = s
                .find_objects(&[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Label(label.as_bytes().to_vec()),
                ])
                .map_err(|e| err(format!("cannot search objects: {e}")))?;
            for o in orphans {
                s.destroy_object(o)
                    .map_err(|e| err(format!("cannot remove a stale {label:?}: {e}")))?;
            }
            let id = label.as_bytes().to_vec();
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::ModulusBits(4096.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
                Attribute::Encrypt(true),
                Attribute::Wrap(true),
                Attribute::Verify(false),
                Attribute::Label(id.clone()),
                Attribute::Id(id.clone()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Decrypt(true),
                Attribute::Unwrap(true),
                Attribute::Sign(false),
                Attribute::Label(id.clone()),
                Attribute::Id(id),
            ];
            s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                .map_err(|e| err(format!("cannot generate {label:?}: {e}")))?;
            report.created.push(format!("{token}: {label}"));
        }
    }
    Ok(())
}

/// The MKEK versions each token holds, ascending, in failover order.
pub fn mkek_versions(config: &Pkcs11Config) -> Result<Vec<(String, Vec<u32>)>, Pkcs11Error> {
    sessions(config)?
        .into_iter()
        .map(|(token, s)| {
            let versions = finals(&s, &config.mkek_label).map_err(|reason| Pkcs11Error::Token {
                label: token.clone(),
                reason,
            })?;
            Ok((token, versions.into_iter().map(|(v, _)| v).collect()))
        })
        .collect()
}

/// MKEK versions present (none is not an error here, unlike on the request path).
fn finals(s: &Session, label: &str) -> Result<Vec<(u32, ObjectHandle)>, String> {
    match find_mkeks(s, label) {
        Ok(v) => Ok(v),
        Err(_) if !has_label(s, label)? => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn pending_label(label: &str, version: u32) -> String {
    format!("{}-pending", mkek_version_label(label, version))
}

fn find_labelled(s: &Session, label: &str) -> Result<Vec<ObjectHandle>, String> {
    s.find_objects(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .map_err(|e| format!("cannot search objects: {e}"))
}

/// Adds the next MKEK version to every configured token and returns it. The new key is generated
/// outside the tokens (aws-lc-rs) and imported into each, so all hold the same bytes; it is
/// imported under a `-pending` label first and renamed (copied, then the pending object
/// destroyed) only once every token holds it, so no server wraps with a version some token
/// lacks. A run interrupted after every token got the pending object is completed by the next
/// one; pending objects on only some tokens are discarded (nothing can depend on them). Every
/// token must be reachable.
pub fn add_mkek_version(config: &Pkcs11Config) -> Result<u32, Pkcs11Error> {
    let sessions = sessions(config)?;
    let label = &config.mkek_label;
    let mut newest = Vec::new();
    for (token, s) in &sessions {
        let err = |reason| Pkcs11Error::Token {
            label: token.clone(),
            reason,
        };
        newest.push(finals(s, label).map_err(err)?.last().map_or(0, |(v, _)| *v));
    }
    let top = newest.iter().copied().max().unwrap_or(0);
    if top == 0 {
        return Err(Pkcs11Error::Config(format!(
            "no token holds {label:?}: run `keyward hsm init` first"
        )));
    }
    let lagging: Vec<_> = sessions
        .iter()
        .zip(&newest)
        .filter(|(_, n)| **n < top)
        .map(|((t, s), _)| (t, s))
        .collect();
    if lagging.is_empty() {
        // Maybe a previous run imported version top+1 as pending everywhere, then stopped.
        let next = top + 1;
        let pend = pending_label(label, next);
        let mut everywhere = true;
        for (token, s) in &sessions {
            everywhere &= !find_labelled(s, &pend)
                .map_err(|reason| Pkcs11Error::Token {
                    label: token.clone(),
                    reason,
                })?
                .is_empty();
        }
        if !everywhere {
            discard_pending(&sessions, &pend)?;
            let key = random_secret(32).map_err(|e| Pkcs11Error::Config(e.to_string()))?;
            for (token, s) in &sessions {
                let mut template = mkek_template(&pend, true);
                template.push(Attribute::Value(key.expose().to_vec()));
                let created = s.create_object(&template);
                zeroize_values(&mut template);
                created.map_err(|e| Pkcs11Error::Token {
                    label: token.clone(),
                    reason: format!("cannot create {pend:?}: {e}"),
                })?;
            }
        }
        for (token, s) in &sessions {
            promote(token, s, label, next)?;
        }
        return Ok(next);
    }
    // A previous run promoted `top` on some tokens only: finish it from their pending objects.
    for (token, s) in lagging {
        promote(token, s, label, top)?;
    }
    Ok(top)
}

/// Makes the pending object of `version` the MKEK version proper: a non-modifiable copy under
/// the final label, then the pending object destroyed.
fn promote(token: &str, s: &Session, label: &str, version: u32) -> Result<(), Pkcs11Error> {
    let err = |reason: String| Pkcs11Error::Token {
        label: token.to_owned(),
        reason,
    };
    let fin = mkek_version_label(label, version);
    let pend = pending_label(label, version);
    let pending = find_labelled(s, &pend).map_err(err)?;
    if find_labelled(s, &fin).map_err(err)?.is_empty() {
        let Some(source) = pending.first() else {
            return Err(err(format!(
                "{fin:?} is on other tokens but neither it nor {pend:?} is here; import it \
                 from the key backup (see the crate README)"
            )));
        };
        s.copy_object(
            *source,
            &[
                Attribute::Label(fin.as_bytes().to_vec()),
                Attribute::Modifiable(false),
            ],
        )
        .map_err(|e| err(format!("cannot create {fin:?}: {e}")))?;
    }
    for p in pending {
        s.destroy_object(p)
            .map_err(|e| err(format!("cannot remove {pend:?}: {e}")))?;
    }
    Ok(())
}

fn discard_pending(sessions: &[(String, Session)], pend: &str) -> Result<(), Pkcs11Error> {
    for (token, s) in sessions {
        let err = |reason: String| Pkcs11Error::Token {
            label: token.clone(),
            reason,
        };
        for p in find_labelled(s, pend).map_err(err)? {
            s.destroy_object(p)
                .map_err(|e| err(format!("cannot remove a stale {pend:?}: {e}")))?;
        }
    }
    Ok(())
}

/// Destroys every MKEK version older than `keep` on every reachable token (call it only when
/// nothing stored is wrapped by them). Returns `token: label` of what it destroyed and the
/// tokens it could not reach, so a later run can finish.
pub fn retire_mkek_versions(
    config: &Pkcs11Config,
    keep: u32,
) -> Result<(Vec<String>, Vec<String>), Pkcs11Error> {
    config.validate()?;
    let module = config::module(&config.module)?;
    let pin = config::read_pin(&config.pin)?;
    let (mut destroyed, mut unreachable) = (Vec::new(), Vec::new());
    for token in &config.tokens {
        let s = match open_rw(&module, token, &pin) {
            Ok(s) => s,
            Err(reason) => {
                unreachable.push(format!("{token}: {reason}"));
                continue;
            }
        };
        let err = |reason: String| Pkcs11Error::Token {
            label: token.clone(),
            reason,
        };
        let versions = finals(&s, &config.mkek_label).map_err(err)?;
        if !versions.iter().any(|(v, _)| *v >= keep) {
            return Err(err(format!(
                "MKEK version {keep} is missing here: refusing to remove older versions"
            )));
        }
        for (v, h) in versions.into_iter().filter(|(v, _)| *v < keep) {
            s.destroy_object(h)
                .map_err(|e| err(format!("cannot remove MKEK version {v}: {e}")))?;
            destroyed.push(format!(
                "{token}: {}",
                mkek_version_label(&config.mkek_label, v)
            ));
        }
    }
    Ok((destroyed, unreachable))
}

/// The template of an MKEK version: AES, wrap and unwrap only, sensitive, never extractable.
fn mkek_template(label: &str, modifiable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Modifiable(modifiable),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
    ]
}
