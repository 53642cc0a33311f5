//! Criterion benches of wrap and unwrap in-process, through the real KeyService, SQLite store and
//! software custody in a temporary data directory, with audit events on and durable (group
//! commit). `sequential` is one request at a time (one fsync each); `concurrent_64` runs 64 at
//! once, which is what group commit is for. The HTTP load test is scripts/bench.sh.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use keyward_core::{KeyKind, NewKey, Secret};
use keyward_iam::{Login, Request};
use keyward_runtime::ServerConfig;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let state = rt
        .block_on(keyward_server::open(config))
        .unwrap_or_else(|e| panic!("{e}"));
    // The bootstrap administrator (Manager of the instance, among its roles), authenticated as
    // a request is: its API key exchanged for a token, the token verified and resolved.
    let caller = rt
        .block_on(async {
            let file =
                keyward_runtime::bootstrap::first_start(state.store(), dir.path(), "http://bench")
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("no bootstrap file"))?;
            keyward_runtime::bootstrap::ensure_admin_access(state.store(), state.keys.custody())
                .await?;
            let boot: keyward_runtime::bootstrap::BootstrapFile =
                serde_json::from_slice(&std::fs::read(file)?)?;
            let login = Login::default();
            let tokens = state
                .iam
                .api_key_login(&state.issuer, &boot.api_key, &login)
                .await?;
            let claims = state
                .verifier
                .verify(&tokens.access.token, time::OffsetDateTime::now_utc())?;
            let resolved = state.iam.resolve(&claims).await?;
            let request = Request {
                request_id: "bench".into(),
                ..Request::default()
            };
            let instance = boot.instance_id.parse()?;
            anyhow::Ok(
                state
                    .iam
                    .caller(&claims, &resolved, instance, request)
                    .await?,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let key = rt
        .block_on(state.keys.create_key(
            &caller,
            NewKey {
                overrides: Default::default(),
                aliases: Vec::new(),
                kind: KeyKind::Root,
                name: "bench".into(),
                description: None,
                payload: None,
                expiration: None,
                key_ring: None,
            },
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let aad = vec!["tenant-a".to_owned()];
    let dek = || Secret::new(vec![5; 32]);
    let ct = rt
        .block_on(state.keys.wrap(&caller, key.id, Some(dek()), &aad))
        .unwrap_or_else(|e| panic!("{e}"))
        .ciphertext;

    let mut g = c.benchmark_group("envelope");
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("wrap_sequential", |b| {
        b.iter(|| {
            rt.block_on(state.keys.wrap(&caller, key.id, Some(dek()), &aad))
                .map(|_| ())
        })
    });
    g.bench_function("unwrap_sequential", |b| {
        b.iter(|| {
            rt.block_on(state.keys.unwrap(&caller, key.id, &ct, &aad))
                .map(|_| ())
        })
    });
    for (name, unwrap) in [
        ("wrap_concurrent_64", false),
        ("unwrap_concurrent_64", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let state = Arc::clone(&state);
                let (caller, aad, ct) = (caller.clone(), aad.clone(), ct.clone());
                rt.block_on(async move {
                    let start = Instant::now();
                    let per_task = iters.div_ceil(64);
                    let mut tasks = Vec::new();
                    for _ in 0..64 {
                        let (state, caller, aad, ct) =
                            (Arc::clone(&state), caller.clone(), aad.clone(), ct.clone());
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..per_task {
                                let r = if unwrap {
                                    state
                                        .keys
                                        .unwrap(&caller, key.id, &ct, &aad)
                                        .await
                                        .map(|_| ())
                                } else {
                                    state
                                        .keys
                                        .wrap(&caller, key.id, Some(Secret::new(vec![5; 32])), &aad)
                                        .await
                                        .map(|_| ())
                                };
                                r.unwrap_or_else(|e| panic!("{e}"));
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap_or_else(|e| panic!("{e}"));
                    }
                    // Scale to exactly `iters` operations (the tasks ran per_task * 64 >= iters).
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_task * 64) as f64)
                })
            })
        });
    }
    g.finish();

    // Issue 19: wrap against a key chosen at random among many, with the key dropped from the
    // cache first, so every wrap takes the miss path (read the key and its current version,
    // verify both signatures, unwrap the material, authorize). BENCH_KEYS keys (10 000 unless
    // set); `hot` is the same loop on one cached key, for the ratio.
    let n: usize = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let ids = rt
        .block_on(async {
            let mut tasks = Vec::new();
            for t in 0..64 {
                let (state, caller) = (Arc::clone(&state), caller.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ids = Vec::new();
                    for i in (t..n).step_by(64) {
                        let key = state
                            .keys
                            .create_key(
                                &caller,
                                NewKey {
                                    overrides: Default::default(),
                                    aliases: Vec::new(),
                                    kind: KeyKind::Root,
                                    name: format!("many-{i}"),
                                    description: None,
                                    payload: None,
                                    expiration: None,
                                    key_ring: None,
                                },
                            )
                            .await?;
                        ids.push(key.id);
                    }
                    Ok::<_, keyward_core::KeyError>(ids)
                }));
            }
            let mut ids = Vec::new();
            for t in tasks {
                ids.extend(t.await??);
            }
            anyhow::Ok(ids)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("many_keys");
    g.measurement_time(Duration::from_secs(8));
    for (name, cold) in [
        ("wrap_cold_concurrent_64", true),
        ("wrap_hot_concurrent_64", false),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let (state, caller, aad, ids) =
                    (Arc::clone(&state), caller.clone(), aad.clone(), ids.clone());
                rt.block_on(async move {
                    let ids = Arc::new(ids);
                    let start = Instant::now();
                    let per_task = iters.div_ceil(64);
                    let mut tasks = Vec::new();
                    for t in 0..64u64 {
                        let (state, caller, aad, ids) = (
                            Arc::clone(&state),
                            caller.clone(),
                            aad.clone(),
                            Arc::clone(&ids),
                        );
                        tasks.push(tokio::spawn(async move {
                            // xorshift64: a different, cheap random sequence per task.
                            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1).wrapping_mul(iters);
                            for _ in 0..per_task {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let id = if cold {
                                    let id = ids[(x % ids.len() as u64) as usize];
                                    state.keys.forget_cached_key(id);
                                    id
                                } else {
                                    key.id
                                };
                                state
                                    .keys
                                    .wrap(&caller, id, Some(Secret::new(vec![5; 32])), &aad)
                                    .await
                                    .unwrap_or_else(|e| panic!("{e}"));
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap_or_else(|e| panic!("{e}"));
                    }
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_task * 64) as f64)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
