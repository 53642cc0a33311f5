//! A live token's MKEK versions are looked up again every `mkek_rescan` (so a version added by
//! `keyward hsm rotate-master` is used within it); under concurrent wraps, whose transient session
//! objects come and go, that lookup must never take the token down. (Its own test binary: SoftHSM2
//! is set up once per binary, and the failover tests delete their tokens.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use keyward_core::Custody;
use keyward_crypto::Secret;
use keyward_custody_pkcs11::Pkcs11Custody;

#[test]
fn steady_load_across_mkek_rescans_fails_nothing() {
    let Some(_hsm) = common::softhsm(&["kw-rescan"]) else {
        return;
    };
    let mut config = common::config(&["kw-rescan"], 0);
    // Look the versions up on every call, to meet the race often.
    config.mkek_rescan = Duration::ZERO;
    common::provision(&config);
    let custody = Arc::new(Pkcs11Custody::open(&config).unwrap());
    let stop = AtomicBool::new(false);
    let ok = AtomicU64::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    thread::scope(|s| {
        for w in 0..4u8 {
            let (c, stop, ok, failures) = (&custody, &stop, &ok, &failures);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let m = Secret::new(vec![w; 32]);
                    match c.wrap_material(&m).and_then(|x| c.unwrap_material(&x)) {
                        Ok(u) if u.ct_eq(&m) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.lock().unwrap().push(format!("{:?}", other.err())),
                    }
                }
            });
        }
        thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
    });
    let (ok, failures) = (ok.into_inner(), failures.into_inner().unwrap());
    assert!(ok > 1_000, "only {ok} operations");
    assert!(
        failures.is_empty(),
        "failed operations: {:?}",
        &failures[..failures.len().min(3)]
    );
}
