//! SoftHSM2 for the tests: one throwaway token store per test binary, made by
//! `scripts/softhsm.sh` (which installs SoftHSM2 if it is missing).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use keyward_custody_pkcs11::{MasterKeys, PinSource, Pkcs11Config};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";

/// The token store of this test binary.
pub struct SoftHsm {
    pub dir: PathBuf,
    pub conf: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/softhsm.sh")
}

/// Sets up SoftHSM2 once for this test binary with the given tokens, or returns `None` (after
/// saying so) when SoftHSM2 cannot be installed here.
pub fn softhsm(labels: &[&str]) -> Option<&'static SoftHsm> {
    static HSM: OnceLock<Option<SoftHsm>> = OnceLock::new();
    HSM.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("keyward-softhsm")
            .tempdir()
            .unwrap()
            .keep();
        let out = Command::new(script())
            .arg(&dir)
            .args(labels)
            .env("KEYWARD_TEST_HSM_PIN", PIN)
            .output()
            .unwrap();
        if out.status.code() == Some(3) {
            eprintln!(
                "SKIPPED: SoftHSM2 is not installed and cannot be installed here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        assert!(
            out.status.success(),
            "scripts/softhsm.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = dir.join("softhsm2.conf");
        // SAFETY: runs once per test binary, inside this OnceLock, before the PKCS#11 module is
        // loaded (SoftHSM reads SOFTHSM2_CONF in C_Initialize); no other code of these tests
        // reads or writes the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
            std::env::set_var("KEYWARD_TEST_HSM_PIN", PIN);
        }
        Some(SoftHsm { dir, conf })
    })
    .as_ref()
}

impl SoftHsm {
    /// Runs `softhsm2-util` against this store.
    pub fn util(&self, args: &[&str]) {
        let out = Command::new("softhsm2-util")
            .args(args)
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "softhsm2-util {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates (or re-creates) an empty token.
    pub fn init_token(&self, label: &str) {
        self.util(&[
            "--init-token",
            "--free",
            "--label",
            label,
            "--so-pin",
            "5678",
            "--pin",
            PIN,
        ]);
    }

    /// Creates a token from inside this process, in the module's free slot. (SoftHSM reads its
    /// token directory once, at C_Initialize: a token another process creates later stays
    /// invisible here, so a test restores a token the way an operator's tool in-process would.)
    pub fn init_token_in_process(&self, label: &str) {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        let m = Pkcs11::new(MODULE).unwrap();
        let _ = m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        let free = m
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| m.get_token_info(*s).is_ok_and(|i| !i.token_initialized()))
            .expect("SoftHSM always offers one free slot");
        let so = AuthPin::from("5678".to_string());
        m.init_token(free, &so, label).unwrap();
        let slot = m
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                m.get_token_info(*s)
                    .is_ok_and(|i| i.token_initialized() && i.label().trim_end() == label)
            })
            .unwrap();
        let session = m.open_rw_session(slot).unwrap();
        session.login(UserType::So, Some(&so)).unwrap();
        session.init_pin(&AuthPin::from(PIN.to_string())).unwrap();
        session.logout().unwrap();
    }

    /// Deletes a token, files and all.
    pub fn delete_token(&self, label: &str) {
        self.util(&["--delete-token", "--token", label]);
    }
}

/// A config for `tokens` with the default labels, the PIN from the environment and `tkeks`
/// transit key pairs (RSA-4096 generation is slow in SoftHSM).
pub fn config(tokens: &[&str], tkeks: usize) -> Pkcs11Config {
    let mut c = Pkcs11Config::new(
        MODULE,
        PinSource::Env("KEYWARD_TEST_HSM_PIN".into()),
        tokens.iter().map(|t| t.to_string()).collect(),
    );
    c.tkek_count = tkeks;
    c.retry_after = Duration::from_millis(200);
    c
}

/// Imports the same fresh master keys into every token of `config`; returns them for a restore.
pub fn provision(config: &Pkcs11Config) -> MasterKeys {
    let keys = MasterKeys::generate().unwrap();
    keyward_custody_pkcs11::import_keys(config, &keys).unwrap();
    keys
}
