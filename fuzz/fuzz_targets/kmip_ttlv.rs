//! The KMIP listener's decoder on arbitrary bytes: the TTLV codec (strict and bounded) and the
//! request parser must never panic, never allocate beyond the input, and round-trip what they
//! accept: a decoded item re-encodes to exactly the bytes it came from.
//!
//! The codec's modules are compiled in directly (they need only std and thiserror), so this
//! target does not pull in the server.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/keyward-kmip/src/enums.rs"]
mod enums;
#[allow(dead_code)]
#[path = "../../crates/keyward-kmip/src/message.rs"]
mod message;
#[allow(dead_code)]
#[path = "../../crates/keyward-kmip/src/tag.rs"]
mod tag;
#[allow(dead_code)]
#[path = "../../crates/keyward-kmip/src/ttlv.rs"]
mod ttlv;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = ttlv::decode(data, ttlv::Limits::default()) {
        assert_eq!(item.encode(), data, "a decoded item re-encodes to its bytes");
        let _ = message::parse_request(&item);
        let _ = message::version_of(&item);
    }
});
