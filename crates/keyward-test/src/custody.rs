//! The `Custody` conformance suite.

use keyward_core::{Custody, CustodyError, WrappedMaterial};
use keyward_crypto::Secret;

/// Material of 16, 24, 32 and 7 500 bytes comes back as it went in.
pub fn wraps_and_unwraps_material_of_every_size(c: &dyn Custody) {
    for len in [16usize, 24, 32, 64, 7_500] {
        let material = Secret::new((0..len).map(|i| i as u8).collect());
        let wrapped = c.wrap_material(&material).unwrap();
        assert!(
            c.unwrap_material(&wrapped).unwrap().ct_eq(&material),
            "{len} bytes"
        );
    }
}

/// Wrapping hides the material.
pub fn wrapped_material_does_not_contain_the_material(c: &dyn Custody) {
    let material = Secret::new(vec![0xAB; 32]);
    let wrapped = c.wrap_material(&material).unwrap();
    assert!(!wrapped.bytes.windows(8).any(|w| w == [0xAB; 8]));
}

/// Any change to wrapped bytes is refused as an integrity failure.
pub fn refuses_altered_wrapped_material(c: &dyn Custody) {
    let wrapped = c.wrap_material(&Secret::new(vec![1; 32])).unwrap();
    for i in 0..wrapped.bytes.len() {
        let mut bad = wrapped.clone();
        bad.bytes[i] ^= 0x80;
        assert!(c.unwrap_material(&bad).is_err(), "byte {i}");
    }
    let mut short = wrapped.clone();
    short.bytes.truncate(short.bytes.len() - 8);
    assert!(c.unwrap_material(&short).is_err());
}

/// Material wrapped by a master key the backend does not hold is refused.
pub fn refuses_unknown_wrapping_keys(c: &dyn Custody) {
    let mut wrapped = c.wrap_material(&Secret::new(vec![2; 32])).unwrap();
    wrapped.wrapping_key = "no-such-master-key".into();
    assert!(matches!(
        c.unwrap_material(&wrapped),
        Err(CustodyError::UnknownWrappingKey(_))
    ));
    let garbage = WrappedMaterial {
        wrapping_key: wrapped.wrapping_key,
        bytes: vec![0; 40],
    };
    assert!(c.unwrap_material(&garbage).is_err());
}

/// Signatures verify for the signed bytes.
pub fn signs_and_verifies_records(c: &dyn Custody) {
    let sig = c.sign_record(b"record bytes").unwrap();
    c.verify_record(b"record bytes", &sig).unwrap();
    assert_eq!(
        c.sign_record(b"record bytes").unwrap(),
        sig,
        "deterministic for a MAC"
    );
}

/// Signatures fail for other bytes, altered signatures and empty signatures.
pub fn refuses_altered_records_and_signatures(c: &dyn Custody) {
    let sig = c.sign_record(b"state=2").unwrap();
    assert!(matches!(
        c.verify_record(b"state=1", &sig),
        Err(CustodyError::IntegrityFailure)
    ));
    let mut bad = sig.clone();
    bad[0] ^= 1;
    assert!(c.verify_record(b"state=2", &bad).is_err());
    assert!(c.verify_record(b"state=2", &[]).is_err());
}

/// Generated material has the asked length and differs between calls.
pub fn generates_fresh_material(c: &dyn Custody) {
    let a = c.generate_material(32).unwrap();
    let b = c.generate_material(32).unwrap();
    assert_eq!(a.len(), 32);
    assert!(!a.ct_eq(&b));
}
