//! The shared Custody conformance suite, mounted for the PKCS#11 backend on SoftHSM2, plus the
//! behaviour specific to this backend: provisioning, `check`, and the wrapping key's name.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::OnceLock;
use std::time::Instant;

use keyward_core::{Custody, CustodyError, WrappedMaterial};
use keyward_crypto::Secret;
use keyward_custody_pkcs11::{Pkcs11Config, Pkcs11Custody, check, init_objects};

const TOKENS: &[&str] = &["kw-conf", "kw-init", "kw-check"];

/// A custody on token `kw-conf`, provisioned once for the binary. `None`: SoftHSM2 unavailable.
fn make() -> Option<(Pkcs11Custody, ())> {
    common::softhsm(TOKENS)?;
    static PROVISIONED: OnceLock<Pkcs11Config> = OnceLock::new();
    let config = PROVISIONED.get_or_init(|| {
        let c = common::config(&["kw-conf"], 0);
        common::provision(&c);
        c
    });
    Some((Pkcs11Custody::open(config).unwrap(), ()))
}

/// The suite's tests take `(custody, guard)`; without SoftHSM2 the test returns early.
macro_rules! or_skip {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return,
        }
    };
}

mod softhsm {
    use super::*;
    macro_rules! suite {
        ($($test:ident),*) => {$(
            #[test]
            fn $test() {
                let (custody, _guard) = or_skip!(make());
                keyward_test::custody::$test(&custody);
            }
        )*};
    }
    suite!(
        wraps_and_unwraps_material_of_every_size,
        wrapped_material_does_not_contain_the_material,
        refuses_altered_wrapped_material,
        refuses_unknown_wrapping_keys,
        signs_and_verifies_records,
        refuses_altered_records_and_signatures,
        generates_fresh_material
    );
}

#[test]
fn wrapping_key_names_the_backend_and_software_ciphertext_is_refused() {
    let (c, _) = or_skip!(make());
    let w = c.wrap_material(&Secret::new(vec![7; 32])).unwrap();
    assert_eq!(w.wrapping_key, "pkcs11:keyward-mkek:1");
    let software = WrappedMaterial {
        wrapping_key: "software:mkek:1".into(),
        bytes: w.bytes.clone(),
    };
    assert!(matches!(
        c.unwrap_material(&software),
        Err(CustodyError::UnknownWrappingKey(_))
    ));
}

#[test]
fn wrapped_material_is_rfc5649_over_the_padded_material() {
    // The token's output opens with aws-lc-rs's KWP under the same MKEK and gives the material
    // followed by its 0x80 0x00.. padding: a standard format, not a SoftHSM artefact.
    if common::softhsm(TOKENS).is_none() {
        return;
    }
    let c = common::config(&["kw-check"], 0);
    let mkek = keyward_crypto::random_secret(32).unwrap();
    let keys = keyward_custody_pkcs11::MasterKeys::from_secrets(
        Secret::from_slice(mkek.expose()),
        keyward_crypto::random_secret(32).unwrap(),
        keyward_crypto::random_secret(32).unwrap(),
    )
    .unwrap();
    keyward_custody_pkcs11::import_keys(&c, &keys).unwrap();
    let custody = Pkcs11Custody::open(&c).unwrap();
    for len in [0usize, 1, 7, 8, 32, 33, 4095, 4096, 7500] {
        let material: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let w = custody
            .wrap_material(&Secret::from_slice(&material))
            .unwrap();
        let opened = keyward_crypto::kwp_unwrap(&mkek, &w.bytes).unwrap();
        let mut padded = material.clone();
        padded.push(0x80);
        padded.resize(len / 8 * 8 + 8, 0);
        assert_eq!(opened.expose(), padded.as_slice(), "{len} bytes");
        assert!(
            custody
                .unwrap_material(&w)
                .unwrap()
                .ct_eq(&Secret::from_slice(&material))
        );
    }
}

#[test]
fn init_objects_is_idempotent_and_check_reports_what_is_there() {
    let Some(_) = common::softhsm(TOKENS) else {
        return;
    };
    let mut c = common::config(&["kw-init"], 10);
    c.mkek_label = "init-mkek".into();
    c.skey_label = "init-skey".into();
    c.ikey_label = "init-ikey".into();
    let before = check(&c).unwrap();
    assert!(before.tokens[0].login_ok);
    assert_eq!(before.tokens[0].missing.len(), 13);
    assert!(!before.tokens[0].usable());

    let t = Instant::now();
    let first = init_objects(&c).unwrap();
    eprintln!(
        "init_objects: 3 keys and 10 RSA-4096 pairs in {:?}",
        t.elapsed()
    );
    assert_eq!(first.created.len(), 13, "{first:?}");
    let second = init_objects(&c).unwrap();
    assert!(second.created.is_empty(), "{second:?}");

    let after = check(&c).unwrap();
    assert!(after.tokens[0].usable(), "{after:?}");
    assert_eq!(after.tokens[0].present.len(), 13);
    let custody = Pkcs11Custody::open(&c).unwrap();
    let m = Secret::new(vec![3; 32]);
    assert!(
        custody
            .unwrap_material(&custody.wrap_material(&m).unwrap())
            .unwrap()
            .ct_eq(&m)
    );

    let mut wrong = c.clone();
    wrong.tokens = vec!["kw-no-such-token".into()];
    let r = check(&wrong).unwrap();
    assert!(!r.tokens[0].login_ok && r.tokens[0].error.is_some());
    assert!(matches!(
        Pkcs11Custody::open(&wrong),
        Err(keyward_custody_pkcs11::Pkcs11Error::NoUsableToken(_))
    ));
}
