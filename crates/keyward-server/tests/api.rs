//! Black-box tests of the Key Protect v2 keys API against a real server on a loopback port:
//! the happy paths, the state machine, and every kind of bad input answered in Key Protect's
//! error format (never a 5xx).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use keyward_core::{AuditEvent, Initiator, InstanceId, InstanceRecord, Outcome};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn wrap_unwrap_round_trip_with_aad_and_generated_dek() {
    let s = TestServer::start().await;
    let id = s.create_root_key("root-1").await;
    let (st, w) = s
        .action(
            &id,
            "wrap",
            json!({"plaintext": DEK_B64, "aad": ["tenant", "db"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{w}");
    assert!(
        w.get("plaintext").is_none(),
        "a supplied DEK is not echoed: {w}"
    );
    let (st, u) = s
        .action(
            &id,
            "unwrap",
            json!({"ciphertext": w["ciphertext"], "aad": ["tenant", "db"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);
    assert_eq!(u["keyVersion"]["id"], w["keyVersion"]["id"]);
    assert!(
        u.get("ciphertext").is_none(),
        "no rewrap for the latest version: {u}"
    );

    let (st, g) = s.action(&id, "wrap", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{g}");
    let dek = B64.decode(g["plaintext"].as_str().unwrap()).unwrap();
    assert_eq!(dek.len(), 32);
    let (_, u) = s
        .action(&id, "unwrap", json!({"ciphertext": g["ciphertext"]}))
        .await;
    assert_eq!(u["plaintext"], g["plaintext"]);
}

#[tokio::test]
async fn rotation_keeps_old_ciphertexts_and_rewraps_to_the_latest_version() {
    let s = TestServer::start().await;
    let id = s.create_root_key("rotating").await;
    let (_, w1) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    let (st, _) = s.action(&id, "rotate", json!({})).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (_, key) = s
        .call(Method::GET, &format!("/api/v2/keys/{id}"), None)
        .await;
    let v2 = key["resources"][0]["keyVersion"]["id"].clone();
    assert_ne!(v2, w1["keyVersion"]["id"]);

    let (st, u) = s
        .action(&id, "unwrap", json!({"ciphertext": w1["ciphertext"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);
    assert_eq!(u["keyVersion"]["id"], w1["keyVersion"]["id"]);
    assert_eq!(u["rewrappedKeyVersion"]["id"], v2, "{u}");
    let (_, u2) = s
        .action(&id, "unwrap", json!({"ciphertext": u["ciphertext"]}))
        .await;
    assert_eq!(u2["plaintext"], DEK_B64);
    assert_eq!(u2["keyVersion"]["id"], v2);

    let (st, r) = s
        .action(&id, "rewrap", json!({"ciphertext": w1["ciphertext"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(
        r["keyVersion"]["id"], w1["keyVersion"]["id"],
        "the version sent in"
    );
    assert_eq!(
        r["rewrappedKeyVersion"]["id"], v2,
        "the version it moved to"
    );
    // Rewrapping a ciphertext already under the latest version reseals it under that version.
    let (st, again) = s
        .action(&id, "rewrap", json!({"ciphertext": r["ciphertext"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{again}");
    assert_eq!(again["keyVersion"]["id"], v2);
    assert_eq!(again["rewrappedKeyVersion"]["id"], v2);
    assert_ne!(again["ciphertext"], r["ciphertext"], "a fresh nonce");
    let (_, u4) = s
        .action(&id, "unwrap", json!({"ciphertext": again["ciphertext"]}))
        .await;
    assert_eq!(u4["plaintext"], DEK_B64);
    let (_, u3) = s
        .action(&id, "unwrap", json!({"ciphertext": r["ciphertext"]}))
        .await;
    assert_eq!(u3["plaintext"], DEK_B64);

    let (_, versions) = s
        .call(
            Method::GET,
            &format!("/api/v2/keys/{id}/versions?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(versions["metadata"]["totalCount"], 2);
    assert_eq!(versions["resources"][0]["id"], v2, "newest first");
}

#[tokio::test]
async fn disabled_and_deleted_keys_refuse_use() {
    let s = TestServer::start().await;
    let id = s.create_root_key("lifecycle").await;
    let (_, w) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_eq!(
        // The Key Protect Go client sends the literal body `null` for state changes.
        s.action(&id, "disable", serde_json::Value::Null).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    let (st, b) = s
        .action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
        .await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    let (st, b) = s.action(&id, "disable", json!({})).await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    let (_, k) = s
        .call(Method::GET, &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_eq!(k["resources"][0]["state"], 2);

    assert_eq!(
        s.action(&id, "enable", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.action(&id, "rotate", serde_json::Value::Null).await.0,
        StatusCode::NO_CONTENT,
        "a rotate body of null (the Go client) is no body"
    );
    assert_eq!(
        s.action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
            .await
            .0,
        StatusCode::OK
    );

    let (st, d) = s
        .http
        .delete(format!("{}/api/v2/keys/{id}", s.url))
        .bearer_auth(&s.token)
        .header("bluemix-instance", &s.instance)
        .header("prefer", "return=representation")
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(st, StatusCode::OK);
    let d: Value = d.json().await.unwrap();
    assert_eq!(d["resources"][0]["state"], 5);
    assert_eq!(d["resources"][0]["deleted"], true);
    let (st, b) = s
        .action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
        .await;
    assert_kp_error(st, &b, StatusCode::GONE, "KEY_DELETED_ERR");
    let (st, b) = s.action(&id, "rotate", json!({})).await;
    assert_kp_error(st, &b, StatusCode::GONE, "KEY_DELETED_ERR");
    let (st, b) = s
        .call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_kp_error(st, &b, StatusCode::GONE, "KEY_DELETED_ERR");
}

#[tokio::test]
async fn key_protect_timing_rules_apply_with_default_settings() {
    let s = TestServer::start_with(|c| {
        c.lifecycle.enable_after_disable_secs = 30;
        c.lifecycle.min_rotation_interval_secs = 3600;
    })
    .await;
    let id = s.create_root_key("timed").await;
    assert_eq!(
        s.action(&id, "rotate", json!({})).await.0,
        StatusCode::NO_CONTENT,
        "first rotation is allowed"
    );
    let (st, b) = s.action(&id, "rotate", json!({})).await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ROTATION_NOT_PERMITTED");
    assert_eq!(
        s.action(&id, "disable", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, b) = s.action(&id, "enable", json!({})).await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "REQ_TOO_EARLY_ERR");
}

#[tokio::test]
async fn standard_keys_return_their_payload_and_root_keys_never_do() {
    let s = TestServer::start().await;
    let secret = B64.encode(b"a standard secret value");
    let std_id = s
        .create_key(json!({"name": "std", "extractable": true, "payload": secret}))
        .await;
    let (_, k) = s
        .call(Method::GET, &format!("/api/v2/keys/{std_id}"), None)
        .await;
    assert_eq!(k["resources"][0]["payload"], secret);
    assert_eq!(k["resources"][0]["extractable"], true);
    assert_eq!(k["resources"][0]["imported"], true);
    let (_, m) = s
        .call(
            Method::GET,
            &format!("/api/v2/keys/{std_id}/metadata"),
            None,
        )
        .await;
    assert!(m["resources"][0].get("payload").is_none());
    let (st, b) = s
        .action(&std_id, "wrap", json!({"plaintext": DEK_B64}))
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "KEY_ROOT_REQ_ERR");

    let root = s
        .create_key(json!({"name": "imported-root", "payload": B64.encode([7u8; 16])}))
        .await;
    let (_, k) = s
        .call(Method::GET, &format!("/api/v2/keys/{root}"), None)
        .await;
    assert!(k["resources"][0].get("payload").is_none(), "{k}");
    assert_eq!(k["resources"][0]["algorithmBitSize"], 128);
    // An imported key rotates only with new material.
    let (st, b) = s.action(&root, "rotate", json!({})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "KEY_PAYLOAD_REQ_ERR");
    let (st, _) = s
        .action(&root, "rotate", json!({"payload": B64.encode([8u8; 24])}))
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn listing_filters_counts_and_head() {
    let s = TestServer::start().await;
    let a = s.create_root_key("key-a").await;
    s.create_root_key("key-b").await;
    s.create_key(json!({"name": "key-c", "extractable": true}))
        .await;
    s.action(&a, "disable", json!({})).await;
    let (_, all) = s
        .call(Method::GET, "/api/v2/keys?totalCount=true", None)
        .await;
    assert_eq!(all["metadata"]["totalCount"], 3);
    assert_eq!(all["metadata"]["collectionTotal"], 3);
    let (_, page) = s
        .call(
            Method::GET,
            "/api/v2/keys?limit=1&offset=1&totalCount=true",
            None,
        )
        .await;
    assert_eq!(page["resources"].as_array().unwrap().len(), 1);
    assert_eq!(page["metadata"]["totalCount"], 3);
    let (_, std) = s
        .call(Method::GET, "/api/v2/keys?extractable=true", None)
        .await;
    assert_eq!(std["resources"].as_array().unwrap().len(), 1);
    let (_, suspended) = s.call(Method::GET, "/api/v2/keys?state=2", None).await;
    assert_eq!(suspended["resources"][0]["id"], a);
    let resp = s
        .http
        .head(format!("{}/api/v2/keys", s.url))
        .bearer_auth(&s.token)
        .header("bluemix-instance", &s.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-kms-key-total"], "3");
    assert_eq!(resp.headers()["key-total"], "3");
    for bad in [
        "limit=abc",
        "limit=5001",
        "state=4",
        "state=x",
        "extractable=maybe",
        "offset=-1",
    ] {
        let (st, b) = s
            .call(Method::GET, &format!("/api/v2/keys?{bad}"), None)
            .await;
        assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");
    }
}

#[tokio::test]
async fn bad_requests_get_clear_4xx_in_key_protects_format() {
    let s = TestServer::start().await;
    let id = s.create_root_key("target").await;
    let other = s.create_root_key("other").await;
    let (_, w) = s
        .action(&id, "wrap", json!({"plaintext": DEK_B64, "aad": ["x"]}))
        .await;
    let ct = B64.decode(w["ciphertext"].as_str().unwrap()).unwrap();
    let (_, w_other) = s
        .action(&other, "wrap", json!({"plaintext": DEK_B64}))
        .await;

    // Malformed JSON, wrong types, bad base64.
    let (st, b) = s
        .raw(
            Method::POST,
            &format!("/api/v2/keys/{id}/actions/wrap"),
            b"{not json".to_vec(),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": 12345})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    assert!(
        !b.to_string().contains("12345"),
        "the error must not echo body values: {b}"
    );
    let (st, b) = s
        .action(&id, "wrap", json!({"plaintext": "%%%not-base64%%%"}))
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s.action(&id, "unwrap", json!({"ciphertext": "***"})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s.action(&id, "unwrap", json!({})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    assert!(
        b.to_string().contains("ciphertext"),
        "the error names the missing field: {b}"
    );
    let (st, b) = s.action(&id, "unwrap", json!({"ciphertext": ""})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");

    // Sizes: empty and oversized DEKs, oversized AAD, names, bodies; wrong root key sizes.
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": ""})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .action(
            &id,
            "wrap",
            json!({"plaintext": B64.encode(vec![1u8; 4097])}),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .action(
            &id,
            "wrap",
            json!({"plaintext": DEK_B64, "aad": ["a".repeat(256)]}),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .action(
            &id,
            "wrap",
            json!({"plaintext": DEK_B64, "aad": vec!["a"; 33]}),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .action(
            &id,
            "wrap",
            json!({"plaintext": B64.encode(vec![1u8; 60_000])}),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::PAYLOAD_TOO_LARGE, "BODY_TOO_LARGE_ERR");
    for len in [0usize, 1, 15, 17, 31, 33, 64] {
        let (st, b) = s
            .call(Method::POST, "/api/v2/keys", Some(json!({"resources": [{"name": "sized", "payload": B64.encode(vec![1u8; len])}]})))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{len}-byte root key: {b}");
    }
    for name in ["", "x", &"n".repeat(91), " padded ", "tab\there"] {
        let (st, b) = s
            .call(
                Method::POST,
                "/api/v2/keys",
                Some(json!({"resources": [{"name": name}]})),
            )
            .await;
        assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    }
    let (st, b) = s
        .call(Method::POST, "/api/v2/keys", Some(json!({"resources": []})))
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(
                json!({"resources": [{"name": "past", "expirationDate": "2001-01-01T00:00:00Z"}]}),
            ),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");

    // Ciphertexts: tampered (every region), truncated, wrong AAD, missing AAD, another key's.
    for i in [0usize, 1, 10, 17, 20, 29, ct.len() - 1] {
        let mut bad = ct.clone();
        bad[i] ^= 0x40;
        let (st, b) = s
            .action(
                &id,
                "unwrap",
                json!({"ciphertext": B64.encode(&bad), "aad": ["x"]}),
            )
            .await;
        assert_kp_error(
            st,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        );
    }
    for keep in [0usize, 1, 28, 44, ct.len() - 1] {
        let (st, b) = s
            .action(
                &id,
                "unwrap",
                json!({"ciphertext": B64.encode(&ct[..keep]), "aad": ["x"]}),
            )
            .await;
        let want = if keep == 0 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(st, want, "truncated to {keep}: {b}");
    }
    // Wrong AAD, missing AAD, another key's ciphertext.
    for body in [
        json!({"ciphertext": w["ciphertext"], "aad": ["y"]}),
        json!({"ciphertext": w["ciphertext"]}),
        json!({"ciphertext": w_other["ciphertext"]}),
    ] {
        let (st, b) = s.action(&id, "unwrap", body).await;
        assert_kp_error(
            st,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
        );
    }

    // Unknown and malformed key ids, unknown actions and routes.
    let (st, b) = s
        .action("00000000-0000-4000-8000-000000000000", "wrap", json!({}))
        .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (st, b) = s.action("not-a-key", "wrap", json!({})).await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (st, b) = s.action(&id, "explode", json!({})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");
    let (st, b) = s.call(Method::GET, "/api/v2/nothing", None).await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "NOT_FOUND_ERR");
    let (st, b) = s.call(Method::PUT, "/api/v2/keys", None).await;
    assert_kp_error(
        st,
        &b,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED_ERR",
    );
}

#[tokio::test]
async fn credentials_and_instances_are_checked() {
    let s = TestServer::start().await;
    let id = s.create_root_key("guarded").await;
    let path = format!("/api/v2/keys/{id}");
    let other_instance = "11111111-2222-4333-8444-555555555555";

    let (st, b) = s
        .call_as(Method::GET, &path, None, None, Some(&s.instance))
        .await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
    let (st, b) = s
        .call_as(Method::GET, &path, None, Some("garbage"), Some(&s.instance))
        .await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
    let (st, b) = s
        .call_as(
            Method::GET,
            &path,
            None,
            Some(&s.token),
            Some(other_instance),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
    let (st, b) = s
        .call_as(Method::GET, &path, None, Some(&s.token), None)
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "MISSING_HEADER_ERR");
    let (st, b) = s
        .call_as(Method::GET, &path, None, Some(&s.token), Some("not-a-uuid"))
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_HEADER_ERR");

    // alg: none with the real claims.
    let mut parts = s.token.split('.');
    let (_, claims) = (parts.next().unwrap(), parts.next().unwrap());
    let none =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let (st, b) = s
        .call_as(
            Method::GET,
            &path,
            None,
            Some(&format!("{none}.{claims}.")),
            Some(&s.instance),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
    // A token signed by another Keyward server.
    let other = TestServer::start().await;
    let (st, b) = s
        .call_as(
            Method::GET,
            &path,
            None,
            Some(&other.token),
            Some(&s.instance),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");

    // Token endpoint: wrong and malformed API keys, wrong grant.
    for (grant, key) in [
        (
            "urn:ibm:params:oauth:grant-type:apikey",
            "kwAAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ),
        ("urn:ibm:params:oauth:grant-type:apikey", "nonsense"),
        ("password", s.api_key.as_str()),
    ] {
        let resp = s
            .http
            .post(format!("{}/identity/token", s.url))
            .form(&[("grant_type", grant), ("apikey", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: Value = resp.json().await.unwrap();
        assert!(
            v["errorCode"]
                .as_str()
                .is_some_and(|c| c.starts_with("BXNIM")),
            "{v}"
        );
    }
    let (st, _) = s.call(Method::GET, &path, None).await;
    assert_eq!(st, StatusCode::OK, "the genuine token still works");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    // Expiry has one-second granularity (iat is truncated), so a 3 s token is valid for at
    // least 2 s: long enough for the first call even on a loaded machine.
    let s = TestServer::start_with(|c| c.token_ttl_secs = 3).await;
    let (st, _) = s.call(Method::GET, "/api/v2/keys", None).await;
    assert_eq!(st, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(4100)).await;
    let (st, b) = s.call(Method::GET, "/api/v2/keys", None).await;
    assert_kp_error(st, &b, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
    assert!(b.to_string().contains("expired"), "{b}");
}

#[tokio::test]
async fn tokens_survive_a_restart_and_the_jwks_is_served() {
    let s = TestServer::start().await;
    let id = s.create_root_key("persistent").await;
    let (_, jwks) = s
        .call_as(Method::GET, "/identity/keys", None, None, None)
        .await;
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(jwks["keys"][0]["alg"], "RS256");
    let s = s.restart().await;
    let (st, b) = s
        .call(Method::GET, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (_, jwks2) = s
        .call_as(Method::GET, "/identity/keys", None, None, None)
        .await;
    assert_eq!(jwks, jwks2);
}

#[tokio::test]
async fn audit_events_record_actions_without_key_material() {
    let mut s = TestServer::start().await;
    let id = s.create_root_key("audited").await;
    let (_, w) = s
        .action(&id, "wrap", json!({"plaintext": DEK_B64, "aad": ["x"]}))
        .await;
    s.action(
        &id,
        "unwrap",
        json!({"ciphertext": w["ciphertext"], "aad": ["x"]}),
    )
    .await;
    s.action(
        &id,
        "unwrap",
        json!({"ciphertext": w["ciphertext"], "aad": ["wrong"]}),
    )
    .await;
    let (_, g) = s.action(&id, "wrap", json!({})).await;
    s.call_as(
        Method::GET,
        "/api/v2/keys",
        None,
        Some("bogus"),
        Some(&s.instance),
    )
    .await;
    let token = s.token.clone();
    let api_key = s.api_key.clone();
    s.stop().await;

    // Every column of every event, as stored.
    let rows: Vec<(String, String, i64, Option<String>, String)> = s
        .db()
        .await
        .rows(
            "SELECT action, outcome, reason_code, target, id, time, reason, initiator, address,
                    instance_id, key_state, key_version, request_id
             FROM audit_events ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| {
            let all: Vec<String> = r.iter().flatten().cloned().collect();
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].as_deref().unwrap().parse().unwrap(),
                r[3].clone(),
                all.concat(),
            )
        })
        .collect();
    let actions: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    for want in [
        ("kms.secrets.create", "success"),
        ("kms.secrets.wrap", "success"),
        ("kms.secrets.unwrap", "success"),
        ("kms.secrets.unwrap", "failure"),
        ("kms.secrets.authenticate", "failure"),
        ("iam-identity.apikey.login", "success"),
    ] {
        assert!(actions.contains(&want), "missing {want:?} in {actions:?}");
    }
    let dump: String = rows
        .iter()
        .map(|r| r.4.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let generated = g["plaintext"].as_str().unwrap();
    for secret in [
        DEK_B64,
        generated,
        w["ciphertext"].as_str().unwrap(),
        token.as_str(),
        api_key.as_str(),
    ] {
        assert!(!dump.contains(secret), "audit trail holds a secret");
    }
    let unwrap_fail = rows
        .iter()
        .find(|r| r.0 == "kms.secrets.unwrap" && r.1 == "failure")
        .unwrap();
    assert_eq!(unwrap_fail.2, 422);
    assert_eq!(unwrap_fail.3.as_deref(), Some(id.as_str()));
}

#[tokio::test]
async fn key_changes_apply_at_once_here_and_within_the_cache_ttl_on_another_server() {
    let a = TestServer::start_with(|c| c.key_cache_ttl_ms = 300).await;
    let id = a.create_root_key("shared").await;
    // A second server process on the same data directory (same database and keystore).
    let mut cb = common::config(a.dir.path());
    cb.key_cache_ttl_ms = 300;
    let b = keyward_server::start(cb).await.unwrap();
    let on_b = |action: &'static str| {
        a.http
            .post(format!("{}/api/v2/keys/{id}/actions/{action}", b.url))
            .bearer_auth(&a.token)
            .header("bluemix-instance", &a.instance)
            .json(&json!({}))
            .send()
    };
    assert_eq!(
        a.action(&id, "wrap", json!({})).await.0,
        StatusCode::OK,
        "fills A's cache"
    );

    // Disabled through B: A refuses within its cache TTL.
    assert_eq!(
        on_b("disable").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (st, b_err) = a.action(&id, "wrap", json!({})).await;
    assert_kp_error(
        st,
        &b_err,
        StatusCode::CONFLICT,
        "KEY_ACTION_INVALID_STATE_ERR",
    );

    // Enabled through A and used; disabled through A: refused at once, no waiting.
    assert_eq!(
        a.action(&id, "enable", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(a.action(&id, "wrap", json!({})).await.0, StatusCode::OK);
    assert_eq!(
        a.action(&id, "disable", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, body) = a.action(&id, "wrap", json!({})).await;
    assert_kp_error(
        st,
        &body,
        StatusCode::CONFLICT,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    b.shutdown().await.unwrap();
}

/// A record kept past its TTL (the verified-record cache, reused while the store's key
/// generation stands still) still honours another server's disable and rotation within the
/// TTL. See: issue 19.
#[tokio::test]
async fn a_record_reused_past_the_ttl_still_sees_another_servers_changes_within_it() {
    let a = TestServer::start_with(|c| c.key_cache_ttl_ms = 300).await;
    let id = a.create_root_key("long-lived").await;
    let mut cb = common::config(a.dir.path());
    cb.key_cache_ttl_ms = 300;
    let b = keyward_server::start(cb).await.unwrap();
    let on_b = |action: &'static str| {
        a.http
            .post(format!("{}/api/v2/keys/{id}/actions/{action}", b.url))
            .bearer_auth(&a.token)
            .header("bluemix-instance", &a.instance)
            .json(&json!({}))
            .send()
    };
    let wait = || tokio::time::sleep(std::time::Duration::from_millis(400));
    // A reads the key, then serves it past the TTL from its verified record.
    assert_eq!(a.action(&id, "wrap", json!({})).await.0, StatusCode::OK);
    wait().await;
    assert_eq!(a.action(&id, "wrap", json!({})).await.0, StatusCode::OK);

    // Rotated through B: A wraps under the new version within the TTL.
    assert_eq!(
        on_b("rotate").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    wait().await;
    let (st, on_a) = a.action(&id, "wrap", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    let on_b_wrap: serde_json::Value = on_b("wrap").await.unwrap().json().await.unwrap();
    assert_eq!(on_a["keyVersion"]["id"], on_b_wrap["keyVersion"]["id"]);

    // Disabled through B: A refuses within its TTL.
    assert_eq!(
        on_b("disable").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    wait().await;
    let (st, err) = a.action(&id, "wrap", json!({})).await;
    assert_kp_error(
        st,
        &err,
        StatusCode::CONFLICT,
        "KEY_ACTION_INVALID_STATE_ERR",
    );
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_of_another_instance_is_not_found_even_by_id() {
    let s = TestServer::start().await;
    let id = s.create_root_key("instance-a-key").await;
    let (_, w) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;

    // A second instance of the same account, written through a second store on the database.
    let store = s.stores().await.store;
    let account = store.instances().await.unwrap()[0].account.clone();
    let other = InstanceRecord {
        id: InstanceId::random(),
        account,
        name: "b".into(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    let initiator = Initiator {
        id: "test".into(),
        address: None,
    };
    let event = AuditEvent::new(
        "kms.instance.create",
        Outcome::Success,
        201,
        initiator,
        "test".into(),
        other.created_at,
    );
    store.insert_instance(&other, &event).await.unwrap();
    let b = other.id.to_string();

    // The key was just used, so it is in the key cache too: still not visible from instance B.
    for (method, path, body) in [
        (Method::GET, format!("/api/v2/keys/{id}"), None),
        (Method::GET, format!("/api/v2/keys/{id}/metadata"), None),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/wrap"),
            Some(json!({"plaintext": DEK_B64})),
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/unwrap"),
            Some(json!({"ciphertext": w["ciphertext"]})),
        ),
        (
            Method::POST,
            format!("/api/v2/keys/{id}/actions/disable"),
            Some(json!({})),
        ),
        (Method::DELETE, format!("/api/v2/keys/{id}"), None),
    ] {
        let (st, err) = s
            .call_as(method, &path, body, Some(&s.token), Some(&b))
            .await;
        assert_kp_error(st, &err, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    }
    let (_, list) = s
        .call_as(Method::GET, "/api/v2/keys", None, Some(&s.token), Some(&b))
        .await;
    assert_eq!(list["resources"].as_array().unwrap().len(), 0);
    // Still there, untouched, for its own instance.
    let (st, k) = s
        .call(Method::GET, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(k["resources"][0]["state"], 1);
}

#[tokio::test]
async fn an_expired_key_refuses_wrap_but_still_unwraps() {
    let s = TestServer::start().await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let exp = expires
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = s
        .create_key(json!({"name": "short-lived", "expirationDate": exp}))
        .await;
    let (_, w) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "KEY_EXPIRED_ERR");
    let (st, u) = s
        .action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);
}

/// Key versions and key rings are paged by the store: `limit`, `offset`, `totalCount` and
/// `collectionTotal` answer as they did when the handlers sliced full lists.
#[tokio::test]
async fn versions_and_key_rings_page_with_limit_offset_and_total() {
    let s = TestServer::start().await;
    let id = s.create_root_key("paged").await;
    for _ in 0..3 {
        assert_eq!(
            s.action(&id, "rotate", json!({})).await.0,
            StatusCode::NO_CONTENT
        );
    }
    let get = |path: String| {
        let s = &s;
        async move { s.call(Method::GET, &path, None).await }
    };
    let ids = |b: &Value| -> Vec<String> {
        b["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (st, all) = get(format!("/api/v2/keys/{id}/versions")).await;
    assert_eq!(st, StatusCode::OK, "{all}");
    let all = ids(&all);
    assert_eq!(all.len(), 4);
    let (_, current) = get(format!("/api/v2/keys/{id}/metadata")).await;
    assert_eq!(
        all[0], current["resources"][0]["keyVersion"]["id"],
        "newest first"
    );
    let (_, b) = get(format!(
        "/api/v2/keys/{id}/versions?limit=2&offset=1&totalCount=true"
    ))
    .await;
    assert_eq!(ids(&b), all[1..3]);
    assert_eq!(b["metadata"]["collectionTotal"], 2);
    assert_eq!(b["metadata"]["totalCount"], 4);
    let (_, b) = get(format!(
        "/api/v2/keys/{id}/versions?offset=4&totalCount=true"
    ))
    .await;
    assert!(ids(&b).is_empty());
    assert_eq!(b["metadata"]["collectionTotal"], 0);
    assert_eq!(b["metadata"]["totalCount"], 4);
    let (_, b) = get(format!("/api/v2/keys/{id}/versions?limit=1")).await;
    assert_eq!(ids(&b), all[..1]);
    assert!(b["metadata"].get("totalCount").is_none());
    let (st, b) = get(format!("/api/v2/keys/{id}/versions?limit=5001")).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");

    for ring in ["ring-a", "ring-b"] {
        let (st, _) = s
            .call(Method::POST, &format!("/api/v2/key_rings/{ring}"), None)
            .await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let rings = |query: &str| get(format!("/api/v2/key_rings?totalCount=true&{query}"));
    let (_, b) = rings("").await;
    assert_eq!(ids(&b), ["default", "ring-a", "ring-b"]);
    assert_eq!(b["metadata"]["totalCount"], 3);
    let (_, b) = rings("limit=1").await;
    assert_eq!(ids(&b), ["default"]);
    assert_eq!(b["metadata"]["collectionTotal"], 1);
    assert_eq!(b["metadata"]["totalCount"], 3);
    let (_, b) = rings("limit=2&offset=1").await;
    assert_eq!(ids(&b), ["ring-a", "ring-b"]);
    let (_, b) = rings("offset=2").await;
    assert_eq!(ids(&b), ["ring-b"]);
    let (_, b) = rings("offset=3").await;
    assert!(ids(&b).is_empty());
    assert_eq!(b["metadata"]["totalCount"], 3);
    let (_, b) = rings("limit=0").await;
    assert!(ids(&b).is_empty());
    assert_eq!(b["metadata"]["totalCount"], 3);
    let (st, b) = rings("limit=5001").await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");
}
