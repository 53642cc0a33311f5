//! Criterion benches of the DEK ciphertext format alone: seal and open of a 32-byte DEK under a
//! 256-bit root key, with and without AAD. No I/O: the floor under the server's wrap and unwrap.

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_crypto::{DekCiphertext, Secret};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let key = Secret::new(vec![7; 32]);
    let dek = Secret::new(vec![9; 32]);
    let aad = ["tenant-a", "db-7"];
    c.bench_function("dek_seal_32B", |b| {
        b.iter(|| DekCiphertext::seal(&key, [1; 16], b"key-id", black_box(&aad), &dek))
    });
    let sealed = DekCiphertext::seal(&key, [1; 16], b"key-id", &aad, &dek)
        .map(|c| c.encode())
        .unwrap_or_default();
    c.bench_function("dek_decode_open_32B", |b| {
        b.iter(|| {
            DekCiphertext::decode(black_box(&sealed)).and_then(|c| c.open(&key, b"key-id", &aad))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
