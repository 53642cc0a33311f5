//! A key record or version altered in the database outside Keyward is detected and refused,
//! never used: state flipped back, version pointer moved, wrapped material swapped between keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

async fn sql(s: &TestServer, statement: &str, params: &[&str]) -> u64 {
    s.db().await.execute(statement, params).await
}

fn assert_refused(st: StatusCode, body: &serde_json::Value) {
    assert!(!st.is_success(), "a tampered record was used: {body}");
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body["resources"][0]["reasons"][0]["code"],
        "INCOMPLETE_METADATA_ERR"
    );
    assert!(!body.to_string().contains("plaintext\""), "{body}");
}

#[tokio::test]
async fn a_disabled_key_flipped_to_active_in_the_database_is_refused() {
    let mut s = TestServer::start().await;
    let id = s.create_root_key("suspended").await;
    let (_, w) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    s.action(&id, "disable", json!({})).await;
    s.stop().await;
    assert_eq!(
        sql(&s, "UPDATE keys SET state = 1 WHERE id = ?1", &[&id]).await,
        1
    );
    let s = s.restart().await;
    let (st, b) = s
        .action(&id, "unwrap", json!({"ciphertext": w["ciphertext"]}))
        .await;
    assert_refused(st, &b);
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_refused(st, &b);
    let (st, b) = s
        .call(Method::GET, &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_refused(st, &b);
}

#[tokio::test]
async fn wrapped_material_swapped_between_keys_is_refused() {
    let mut s = TestServer::start().await;
    let victim = s.create_root_key("victim").await;
    let attacker = s.create_root_key("attacker").await;
    let (_, w) = s
        .action(&victim, "wrap", json!({"plaintext": DEK_B64}))
        .await;
    s.stop().await;
    // Copy the victim's wrapped material into the attacker's version row.
    let n = sql(
        &s,
        "UPDATE key_versions SET material = (SELECT material FROM key_versions WHERE key_id = ?1)
         WHERE key_id = ?2",
        &[&victim, &attacker],
    )
    .await;
    assert_eq!(n, 1);
    let s = s.restart().await;
    let (st, b) = s
        .action(&attacker, "wrap", json!({"plaintext": DEK_B64}))
        .await;
    assert_refused(st, &b);
    // The victim itself is untouched and still works.
    let (st, u) = s
        .action(&victim, "unwrap", json!({"ciphertext": w["ciphertext"]}))
        .await;
    assert_eq!(st, StatusCode::OK, "{u}");
    assert_eq!(u["plaintext"], DEK_B64);
}

#[tokio::test]
async fn an_altered_version_pointer_or_wrapped_byte_is_refused() {
    let mut s = TestServer::start().await;
    let id = s.create_root_key("pointer").await;
    s.action(&id, "rotate", json!({})).await;
    let flipped = s.create_root_key("flipped").await;
    s.stop().await;
    assert_eq!(
        sql(
            &s,
            "UPDATE keys SET current_version = 1 WHERE id = ?1",
            &[&id]
        )
        .await,
        1
    );
    assert_eq!(
        sql(
            &s,
            if on_postgres() {
                "UPDATE key_versions SET material = decode(repeat('00', length(material)), 'hex')
                 WHERE key_id = ?1"
            } else {
                "UPDATE key_versions SET material = CAST(zeroblob(length(material)) AS BLOB)
                 WHERE key_id = ?1"
            },
            &[&flipped]
        )
        .await,
        1
    );
    let s = s.restart().await;
    let (st, b) = s.action(&id, "wrap", json!({"plaintext": DEK_B64})).await;
    assert_refused(st, &b);
    let (st, b) = s
        .action(&flipped, "wrap", json!({"plaintext": DEK_B64}))
        .await;
    assert_refused(st, &b);
}
