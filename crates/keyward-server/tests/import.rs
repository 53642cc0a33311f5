//! Secure import through import tokens, with the client side done as Key Protect's clients do it:
//! RSA-OAEP to the token's public key for the material, AES-GCM under the material for the nonce.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use aws_lc_rs::rsa::{
    OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPublicEncryptingKey,
    PublicEncryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestServer, assert_kp_error};
use keyward_crypto::{Secret, aead_seal};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What `GET /api/v2/import_token` hands out.
struct Token {
    public: OaepPublicEncryptingKey,
    nonce: Vec<u8>,
}

async fn new_token(ts: &TestServer, retrievals: u32) -> Token {
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/import_token",
            Some(json!({"expiration": 900, "maxAllowedRetrievals": retrievals})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["expiration"], 900);
    assert_eq!(b["remainingRetrievals"], retrievals);
    assert!(b.get("payload").is_none(), "POST does not hand out the key");
    fetch(ts).await
}

async fn fetch(ts: &TestServer) -> Token {
    let (s, b) = ts.call(Method::GET, "/api/v2/import_token", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let pem = String::from_utf8(B64.decode(b["payload"].as_str().unwrap()).unwrap()).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let public = PublicEncryptingKey::from_der(&B64.decode(der_b64).unwrap()).unwrap();
    assert_eq!(public.key_size_bits(), 4096);
    Token {
        public: OaepPublicEncryptingKey::new(public).unwrap(),
        nonce: B64.decode(b["nonce"].as_str().unwrap()).unwrap(),
    }
}

/// The fields a client sends: payload, encryptedNonce, iv, encryptionAlgorithm.
fn seal(token: &Token, material: &[u8], oaep: &'static OaepAlgorithm, name: &str) -> Value {
    let mut ct = vec![0u8; token.public.ciphertext_size()];
    let ct = token.public.encrypt(oaep, material, &mut ct, None).unwrap();
    let iv = [9u8; 12];
    let nonce = aead_seal(&Secret::from_slice(material), iv, &[], &token.nonce).unwrap();
    json!({
        "payload": B64.encode(ct),
        "encryptedNonce": B64.encode(nonce),
        "iv": B64.encode(iv),
        "encryptionAlgorithm": name,
    })
}

fn key_body(mut fields: Value, name: &str) -> Value {
    fields["name"] = json!(name);
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
           "resources": [fields]})
}

#[tokio::test]
async fn secure_import_creates_and_rotates_keys_with_the_material_sent() {
    let ts = TestServer::start().await;
    let token = new_token(&ts, 2).await;
    let material = [0x42u8; 32];
    for (oaep, name) in [
        (&OAEP_SHA256_MGF1SHA256, "RSAES_OAEP_SHA_256"),
        (&OAEP_SHA1_MGF1SHA1, "RSAES_OAEP_SHA_1"),
    ] {
        let (s, b) = ts
            .call(
                Method::POST,
                "/api/v2/keys",
                Some(key_body(seal(&token, &material, oaep, name), "secure")),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let k = &b["resources"][0];
        assert_eq!(k["imported"], true);
        let id = k["id"].as_str().unwrap();
        // The key holds exactly the material sent: restoring it needs that material in the clear.
        ts.call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
            .await;
        let (s, b) = ts
            .call(
                Method::POST,
                &format!("/api/v2/keys/{id}/restore"),
                Some(json!({"resources": [{"payload": B64.encode(material)}]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    // Rotation of an imported key, securely, with new material.
    let (_, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(
                seal(
                    &token,
                    &material,
                    &OAEP_SHA256_MGF1SHA256,
                    "RSAES_OAEP_SHA_256",
                ),
                "rotated",
            )),
        )
        .await;
    let id = b["resources"][0]["id"].as_str().unwrap().to_owned();
    let (_, wrapped) = ts.action(&id, "wrap", json!({})).await;
    let (s, b) = ts
        .action(
            &id,
            "rotate",
            seal(
                &token,
                &[0x43u8; 32],
                &OAEP_SHA256_MGF1SHA256,
                "RSAES_OAEP_SHA_256",
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, u) = ts
        .action(&id, "unwrap", json!({"ciphertext": wrapped["ciphertext"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(u["plaintext"], wrapped["plaintext"]);

    // Two retrievals were allowed: the first was used above, one is left, then none.
    fetch(&ts).await;
    let (s, b) = ts.call(Method::GET, "/api/v2/import_token", None).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "IMPORT_TOKEN_EXPIRED_ERR");
}

#[tokio::test]
async fn secure_import_refuses_what_does_not_match_the_token() {
    let ts = TestServer::start().await;
    let create = |fields: Value| {
        let ts = &ts;
        async move {
            ts.call(
                Method::POST,
                "/api/v2/keys",
                Some(key_body(fields, "refused")),
            )
            .await
        }
    };
    // No token yet.
    let (s, b) = create(json!({"payload": B64.encode([1u8; 512]), "encryptedNonce": "AAAA", "iv": B64.encode([0u8; 12])})).await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "IMPORT_TOKEN_NOT_FOUND_ERR");
    let (s, b) = ts.call(Method::GET, "/api/v2/import_token", None).await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "IMPORT_TOKEN_NOT_FOUND_ERR");
    for bad in [
        json!({"expiration": 299}),
        json!({"expiration": 86401}),
        json!({"expiration": 600.5}),
        json!({"maxAllowedRetrievals": 0}),
        json!({"maxAllowedRetrievals": 501}),
    ] {
        let (s, b) = ts
            .call(Method::POST, "/api/v2/import_token", Some(bad.clone()))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }
    let token = new_token(&ts, 1).await;
    let material = [5u8; 32];
    let good = seal(
        &token,
        &material,
        &OAEP_SHA256_MGF1SHA256,
        "RSAES_OAEP_SHA_256",
    );

    // The nonce sealed under other material, or another nonce.
    let mut other_nonce = good.clone();
    other_nonce["encryptedNonce"] = json!(
        B64.encode(
            aead_seal(
                &Secret::from_slice(&[6u8; 32]),
                [9u8; 12],
                &[],
                &token.nonce
            )
            .unwrap()
        )
    );
    let (s, b) = create(other_nonce).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INCORRECT_NONCE_ERR");
    let mut wrong_nonce = good.clone();
    wrong_nonce["encryptedNonce"] = json!(
        B64.encode(
            aead_seal(
                &Secret::from_slice(&material),
                [9u8; 12],
                &[],
                b"not the nonce!!!"
            )
            .unwrap()
        )
    );
    let (s, b) = create(wrong_nonce).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INCORRECT_NONCE_ERR");
    let mut bad_iv = good.clone();
    bad_iv["iv"] = json!(B64.encode([9u8; 8]));
    let (s, b) = create(bad_iv).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INCORRECT_NONCE_IV_ERR");
    // The declared algorithm must be the one used.
    let mut wrong_alg = good.clone();
    wrong_alg["encryptionAlgorithm"] = json!("RSAES_OAEP_SHA_1");
    let (s, b) = create(wrong_alg).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let mut unknown_alg = good.clone();
    unknown_alg["encryptionAlgorithm"] = json!("RSA_PKCS1");
    let (s, b) = create(unknown_alg).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    // A tampered RSA ciphertext.
    let mut tampered = good.clone();
    let mut ct = B64.decode(good["payload"].as_str().unwrap()).unwrap();
    ct[100] ^= 1;
    tampered["payload"] = json!(B64.encode(ct));
    let (s, b) = create(tampered).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    // Material of a size a root key cannot have.
    let mut odd = good.clone();
    let mut ct = vec![0u8; token.public.ciphertext_size()];
    let ct = token
        .public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[1u8; 20], &mut ct, None)
        .unwrap();
    odd["payload"] = json!(B64.encode(ct));
    let (s, b) = create(odd).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    // Standard keys are not imported through tokens.
    let mut standard = good.clone();
    standard["extractable"] = json!(true);
    let (s, b) = create(standard).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    // The good one still works after all that.
    let (s, b) = create(good).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A new token replaces the old: material sealed for the old one no longer imports.
    let old = seal(
        &token,
        &material,
        &OAEP_SHA256_MGF1SHA256,
        "RSAES_OAEP_SHA_256",
    );
    new_token(&ts, 1).await;
    let (s, b) = create(old).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
}

#[tokio::test]
async fn enforce_token_admits_only_secure_imports() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .call(
            Method::PUT,
            "/api/v2/instance/policies?policy=keyCreateImportAccess",
            Some(
                json!({"resources": [{"policy_type": "keyCreateImportAccess",
                "policy_data": {"enabled": true, "attributes": {"enforce_token": true}}}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let material = [8u8; 32];
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(json!({"payload": B64.encode(material)}), "plain")),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_CREATE_IMPORT_ACCESS_ERR");
    let token = new_token(&ts, 1).await;
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(
                seal(
                    &token,
                    &material,
                    &OAEP_SHA256_MGF1SHA256,
                    "RSAES_OAEP_SHA_256",
                ),
                "secure",
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// Every form a scan looks for: raw bytes, base64 (standard and URL-safe) and hex.
fn forms(material: &[u8]) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let hex: String = material.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        material.to_vec(),
        B64.encode(material).into_bytes(),
        URL_SAFE_NO_PAD.encode(material).into_bytes(),
        hex.clone().into_bytes(),
        hex.to_uppercase().into_bytes(),
    ]
}

/// Every file under `dir`, recursively, with its bytes.
fn files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

/// Root key material imported in the clear and through an import token is stored only wrapped:
/// no file of the data directory (database, write-ahead log, keystore, bootstrap file) holds it
/// in any encoding, while the same scan does find the wrapped form (so it can see what is there).
#[tokio::test]
async fn the_data_directory_holds_no_imported_root_key_material() {
    if common::sqlite_file_only("the_data_directory_holds_no_imported_root_key_material") {
        return;
    }
    let ts = TestServer::start().await;
    // Distinctive, non-repeating material, so a hit cannot be chance.
    let plain: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let secure: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(53).wrapping_add(5))
        .collect();
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(
                json!({"payload": B64.encode(&plain), "extractable": false}),
                "imported-plain",
            )),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let plain_id = b["resources"][0]["id"].as_str().unwrap().to_owned();
    let token = new_token(&ts, 1).await;
    let mut fields = seal(
        &token,
        &secure,
        &OAEP_SHA256_MGF1SHA256,
        "RSAES_OAEP_SHA_256",
    );
    fields["extractable"] = json!(false);
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(fields, "imported-secure")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let secure_id = b["resources"][0]["id"].as_str().unwrap().to_owned();
    for id in [&plain_id, &secure_id] {
        let (s, w) = ts.action(id, "wrap", json!({})).await;
        assert_eq!(s, StatusCode::OK, "{w}");
        let (s, u) = ts
            .action(id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
            .await;
        assert_eq!((s, &u["plaintext"]), (StatusCode::OK, &w["plaintext"]));
    }
    // Both as they sit in the write-ahead log and after a checkpoint into the main file.
    let wrapped: Vec<Vec<u8>> = rusqlite::Connection::open(ts.db_path())
        .unwrap()
        .prepare("SELECT material FROM key_versions WHERE key_id IN (?1, ?2)")
        .unwrap()
        .query_map([&plain_id, &secure_id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(wrapped.len(), 2);
    for pass in ["before checkpoint", "after checkpoint"] {
        let all = files(ts.dir.path());
        assert!(
            all.len() >= 2,
            "{pass}: {:?}",
            all.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        for w in &wrapped {
            assert!(
                all.iter().any(|(_, b)| b.windows(w.len()).any(|x| x == w)),
                "{pass}: the scan finds the wrapped form (else it proves nothing)"
            );
        }
        for (name, material) in [("plain", &plain), ("secure", &secure)] {
            for form in forms(material) {
                for (path, bytes) in &all {
                    assert!(
                        !bytes.windows(form.len()).any(|x| x == form.as_slice()),
                        "{pass}: {name} import found in {}",
                        path.display()
                    );
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    }
}

/// A token past its expiration (moved into the past in the database: the shortest legal one
/// lasts 300 s) neither hands out its key nor imports, and says so.
#[tokio::test]
async fn an_expired_import_token_is_refused() {
    let ts = TestServer::start().await;
    let token = new_token(&ts, 5).await;
    let sealed = seal(
        &token,
        &[7u8; 32],
        &OAEP_SHA256_MGF1SHA256,
        "RSAES_OAEP_SHA_256",
    );
    let past =
        (time::OffsetDateTime::now_utc() - time::Duration::seconds(1)).unix_timestamp_nanos();
    let conn = ts.db().await;
    let unit = conn
        .int("SELECT expires_at - created_at FROM import_tokens", &[])
        .await;
    // Stored in nanoseconds (900 s token), so the value written is in the same unit.
    assert_eq!(unit, 900_000_000_000);
    let n = conn
        .execute(
            "UPDATE import_tokens SET expires_at = ?1",
            &[&i64::try_from(past).unwrap().to_string()],
        )
        .await;
    assert_eq!(n, 1);
    let (s, b) = ts.call(Method::GET, "/api/v2/import_token", None).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "IMPORT_TOKEN_EXPIRED_ERR");
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(key_body(sealed, "too-late")),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "IMPORT_TOKEN_EXPIRED_ERR");
}

/// See issue 18: import tokens' RSA-4096 keys were generated on the async workers, and four
/// concurrent `POST /api/v2/import_token` took wrap from 614 to 1 request per second (p50 1.1 s)
/// for every instance. One async worker here, so that a generation on it cannot hide behind
/// another worker: twelve generations, four at a time, must leave wrap answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn wrap_keeps_answering_while_import_tokens_are_generated() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("busy").await;
    let wrap_body = json!({"plaintext": B64.encode([5u8; 32])}).to_string();
    let wrap_url = format!("{}/api/v2/keys/{key}/actions/wrap", ts.url);
    // Another client, with connections of its own.
    let other = reqwest::Client::new();
    let wrap = async || {
        let started = std::time::Instant::now();
        let resp = other
            .post(&wrap_url)
            .bearer_auth(&ts.token)
            .header("bluemix-instance", &ts.instance)
            .header("content-type", "application/json")
            .body(wrap_body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        started.elapsed()
    };
    wrap().await;
    let generating = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(4));
    let mut callers = Vec::new();
    for _ in 0..4 {
        let (http, url, token, instance) = (
            reqwest::Client::new(),
            ts.url.clone(),
            ts.token.clone(),
            ts.instance.clone(),
        );
        let generating = generating.clone();
        callers.push(tokio::spawn(async move {
            for _ in 0..3 {
                let resp = http
                    .post(format!("{url}/api/v2/import_token"))
                    .bearer_auth(&token)
                    .header("bluemix-instance", &instance)
                    .json(&json!({"expiration": 900}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
            generating.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // Let the generations start.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut worst = std::time::Duration::ZERO;
    let mut wraps = 0;
    while generating.load(std::sync::atomic::Ordering::SeqCst) > 0 || wraps < 10 {
        worst = worst.max(wrap().await);
        wraps += 1;
    }
    for c in callers {
        c.await.unwrap();
    }
    eprintln!("{wraps} wraps during 12 import-token generations, slowest {worst:?}");
    assert!(
        worst < std::time::Duration::from_secs(1),
        "a wrap took {worst:?} while import tokens were generated"
    );
}
