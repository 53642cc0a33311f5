//! Fuzzes the DEK ciphertext decoder and opener with untrusted bytes: neither may panic, and
//! nothing but a ciphertext sealed under the key opens. Run: `cargo +nightly fuzz run dek_ciphertext`.
#![no_main]

use keyward_crypto::{DekCiphertext, Secret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Secret::new(vec![0x42; 32]);
    if let Ok(ct) = DekCiphertext::decode(data) {
        assert_eq!(DekCiphertext::decode(&ct.encode()).as_ref(), Ok(&ct));
        assert!(ct.open(&key, b"fuzz-key", &["aad"]).is_err(), "random bytes opened");
    }
});
