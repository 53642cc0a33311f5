//! Backend configuration (parsed by the caller, no I/O here) and its resolution: loading the
//! module and reading the PIN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::Pkcs11Error;

/// Where the user PIN (crypto officer password) comes from. Never the PIN itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; one trailing newline is ignored.
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

/// How to reach the HSMs and which objects to use in them.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Where to read the user PIN.
    pub pin: PinSource,
    /// Label of the AES-256 master key encryption key.
    pub mkek_label: String,
    /// Label of the HMAC-SHA256 record-signing key.
    pub skey_label: String,
    /// Label of the AES-256 import key.
    pub ikey_label: String,
    /// Prefix of the RSA transit key pairs' labels (`<prefix>1` .. `<prefix>N`).
    pub tkek_label_prefix: String,
    /// How many transit key pairs `init_objects` creates.
    pub tkek_count: usize,
    /// Token labels, in failover order; every token must hold the same MKEK and SKEY.
    pub tokens: Vec<String>,
    /// How long an unhealthy token is left alone before the next call probes it again.
    pub retry_after: Duration,
    /// How often a live token's MKEK versions are looked up again, so a version another process
    /// added (`keyward hsm rotate-master`) is used for new wraps within this time.
    pub mkek_rescan: Duration,
}

impl Pkcs11Config {
    /// A configuration with the default object labels (`keyward-mkek`, `keyward-skey`,
    /// `keyward-ikey`, `keyward-tkek-`), 10 transit key pairs, a 1 s re-probe backoff and a 2 s MKEK rescan.
    pub fn new(module: impl Into<PathBuf>, pin: PinSource, tokens: Vec<String>) -> Self {
        Pkcs11Config {
            module: module.into(),
            pin,
            mkek_label: "keyward-mkek".into(),
            skey_label: "keyward-skey".into(),
            ikey_label: "keyward-ikey".into(),
            tkek_label_prefix: "keyward-tkek-".into(),
            tkek_count: 10,
            tokens,
            retry_after: Duration::from_secs(1),
            mkek_rescan: crate::MKEK_RESCAN,
        }
    }

    /// Checks what can be checked without I/O.
    pub fn validate(&self) -> Result<(), Pkcs11Error> {
        let bad = |m: &str| Err(Pkcs11Error::Config(m.to_owned()));
        if self.tokens.is_empty() {
            return bad("at least one HSM token label is required");
        }
        let labels = [&self.mkek_label, &self.skey_label, &self.ikey_label];
        if labels.iter().any(|l| l.is_empty()) || self.tkek_label_prefix.is_empty() {
            return bad("object labels must not be empty");
        }
        if labels
            .iter()
            .any(|l| l.contains(':') || l.starts_with(&self.tkek_label_prefix))
        {
            return bad("object labels must not contain ':' or start with the TKEK prefix");
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if self.tokens.iter().skip(i + 1).any(|u| u == t) {
                return bad("token labels must be distinct");
            }
        }
        Ok(())
    }

    /// The label of transit key pair `n` (1-based).
    pub fn tkek_label(&self, n: usize) -> String {
        format!("{}{n}", self.tkek_label_prefix)
    }
}

/// Reads the PIN from its source into a `SecretString`.
pub(crate) fn read_pin(source: &PinSource) -> Result<AuthPin, Pkcs11Error> {
    let text = match source {
        PinSource::File(path) => Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            Pkcs11Error::Pin(format!("cannot read PIN file {}: {e}", path.display()))
        })?),
        PinSource::Env(name) => Zeroizing::new(std::env::var(name).map_err(|_| {
            Pkcs11Error::Pin(format!(
                "environment variable {name} is not set or not UTF-8"
            ))
        })?),
    };
    let pin = text.strip_suffix('\n').unwrap_or(&text);
    let pin = pin.strip_suffix('\r').unwrap_or(pin);
    if pin.is_empty() {
        return Err(Pkcs11Error::Pin("the PIN is empty".into()));
    }
    Ok(AuthPin::from(pin.to_owned()))
}

/// One initialized context per module path for the whole process: C_Initialize and C_Finalize
/// are process-wide, so two custodies (or a custody and `check`) must share it.
pub(crate) fn module(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = MODULES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = map.get(path) {
        return Ok(m.clone());
    }
    let err = |e: CkError| Pkcs11Error::Module {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let m = Pkcs11::new(path).map_err(err)?;
    match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(err(e)),
    }
    map.insert(path.to_owned(), m.clone());
    Ok(m)
}
