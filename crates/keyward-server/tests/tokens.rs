//! Access-token attacks and the refresh-token grant, against a real server: every forged,
//! tampered, expired or revoked token is refused with 401 on a real KMS endpoint, and refresh
//! tokens are single use and die with their API key or identity.
//!
//! Not-yet-valid (`nbf` in the future) tokens cannot be minted here without the server's private
//! key; `keyward_iam`'s unit tests cover `nbf`/`exp` to the second with an issuer they control.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use common::TestServer;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use keyward_iam::TokenIssuer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const API_KEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

// ---- helpers ----

type ClaimEdit<'a> = Box<dyn Fn(&mut Value) + 'a>;

async fn post_token(s: &TestServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(format!("{}/identity/token", s.url))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn api_key_grant(s: &TestServer, api_key: &str) -> (StatusCode, Value) {
    post_token(s, &[("grant_type", API_KEY_GRANT), ("apikey", api_key)]).await
}

async fn refresh_grant(s: &TestServer, refresh: &str) -> (StatusCode, Value) {
    post_token(
        s,
        &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
    )
    .await
}

/// The status of `GET /api/v2/keys` on the server's instance with `token`.
async fn status_with(s: &TestServer, token: &str) -> StatusCode {
    s.call_as(
        Method::GET,
        "/api/v2/keys",
        None,
        Some(token),
        Some(&s.instance),
    )
    .await
    .0
}

async fn assert_refused(s: &TestServer, token: &str, what: &str) {
    assert_eq!(
        status_with(s, token).await,
        StatusCode::UNAUTHORIZED,
        "{what} was accepted"
    );
}

/// Polls until `token` is refused; fails unless that happens within 1 s.
async fn assert_refused_within_1s(s: &TestServer, token: &str, what: &str) {
    let start = Instant::now();
    loop {
        if status_with(s, token).await == StatusCode::UNAUTHORIZED {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: token still accepted after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn segment(token: &str, i: usize) -> &str {
    token.split('.').nth(i).unwrap_or("")
}

fn claims_of(token: &str) -> Value {
    serde_json::from_slice(&B64URL.decode(segment(token, 1)).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(&B64URL.decode(segment(token, 0)).unwrap()).unwrap()
}

fn b64url_json(v: &Value) -> String {
    B64URL.encode(v.to_string())
}

/// An IAM error body: 400, `errorCode`, `errorMessage` and a `context` object.
fn assert_iam_error(status: StatusCode, body: &Value, code: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(body["context"].is_object(), "{body}");
    assert!(body.get("access_token").is_none());
}

/// The server's JWKS key: (kid, n, e).
async fn server_jwk(s: &TestServer) -> (String, Vec<u8>, Vec<u8>) {
    let (st, jwks) = s
        .call_as(Method::GET, "/identity/keys", None, None, None)
        .await;
    assert_eq!(st, StatusCode::OK, "{jwks}");
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["alg"], "RS256");
    (
        k["kid"].as_str().unwrap().to_owned(),
        B64URL.decode(k["n"].as_str().unwrap()).unwrap(),
        B64URL.decode(k["e"].as_str().unwrap()).unwrap(),
    )
}

// Minimal DER, enough to rebuild the public key the way an attacker would.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(be: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    if be.first().is_some_and(|b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(be);
    der(0x02, &v)
}

/// PKCS#1 `RSAPublicKey` DER.
fn pkcs1_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    der(0x30, &[der_uint(n), der_uint(e)].concat())
}

/// X.509 `SubjectPublicKeyInfo` DER.
fn spki_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let rsa_encryption = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let algorithm = der(0x30, &rsa_encryption);
    let bits = der(0x03, &[&[0u8][..], &pkcs1_der(n, e)].concat());
    der(0x30, &[algorithm, bits].concat())
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let body: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        body.join("\n")
    )
}

/// An RSA key the test controls, as a `TokenIssuer` with `kid` (say, the server's own).
fn foreign_issuer(kid: &str) -> (TokenIssuer, keyward_crypto::Secret) {
    let (other, pkcs8) = TokenIssuer::generate(3600).unwrap();
    drop(other);
    (TokenIssuer::from_pkcs8(kid, &pkcs8, 3600).unwrap(), pkcs8)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn api_key_id(api_key: &str) -> String {
    keyward_iam::parse_api_key(api_key).unwrap().0.to_owned()
}

// ---- the token endpoint ----

#[tokio::test]
async fn token_endpoint_answers_like_iam_with_a_refresh_token() {
    let s = TestServer::start().await;
    let (iam_id, api_key, _) = s.identity_with("user", &["Manager"]).await;
    let (st, body) = api_key_grant(&s, &api_key).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "ibm openid");
    assert_eq!(body["expiration"], claims["exp"]);
    assert_eq!(
        body["expires_in"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
    );
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["sub"], iam_id.as_str());
    assert_eq!(claims["iam_id"], iam_id.as_str());
    assert_eq!(claims["sub_type"], "user");
    assert_eq!(header_of(token)["alg"], "RS256");
    let refresh = body["refresh_token"].as_str().unwrap();
    assert!(refresh.starts_with("kwr."), "{refresh}");
    assert_eq!(refresh.len(), 47);
    assert_ne!(refresh, "not_supported");
    assert_eq!(status_with(&s, token).await, StatusCode::OK);

    // The bootstrap administrator is a service ID.
    let (_, admin) = api_key_grant(&s, &s.api_key).await;
    assert_eq!(
        claims_of(admin["access_token"].as_str().unwrap())["sub_type"],
        "ServiceId"
    );
}

#[tokio::test]
async fn token_endpoint_reads_the_form_whatever_the_content_type() {
    let s = TestServer::start().await;
    let body = format!(
        "grant_type={}&apikey={}&response_type=cloud_iam",
        API_KEY_GRANT.replace(':', "%3A"),
        s.api_key
    );
    for content_type in [
        Some("applicaton/x-www-form-urlencoded"), // an old Python SDK's spelling
        Some("application/json"),
        Some("text/plain"),
        None,
    ] {
        let mut req = s
            .http
            .post(format!("{}/identity/token", s.url))
            .body(body.clone());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{content_type:?}");
        let v: Value = resp.json().await.unwrap();
        assert!(v["access_token"].is_string());
    }
}

#[tokio::test]
async fn token_endpoint_refuses_bad_grants_with_iam_errors() {
    let s = TestServer::start().await;
    let (st, b) = api_key_grant(&s, "kwAAAAAAAAAAAAAAAAAAAAAA.nope").await;
    assert_iam_error(st, &b, "BXNIM0415E");
    let (st, b) = post_token(&s, &[("grant_type", "password"), ("apikey", &s.api_key)]).await;
    assert_iam_error(st, &b, "BXNIM0109E");
    let (st, b) = post_token(&s, &[("grant_type", API_KEY_GRANT)]).await;
    assert_iam_error(st, &b, "BXNIM0109E");
    let (st, b) = post_token(&s, &[("grant_type", "refresh_token")]).await;
    assert_iam_error(st, &b, "BXNIM0109E");
}

// ---- forged and tampered access tokens ----

#[tokio::test]
async fn alg_none_tokens_are_refused() {
    let s = TestServer::start().await;
    let (kid, _, _) = server_jwk(&s).await;
    let payload = segment(&s.token, 1).to_owned();
    let sig = segment(&s.token, 2).to_owned();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = b64url_json(&json!({"alg": alg, "typ": "JWT", "kid": kid}));
        for token in [
            format!("{h}.{payload}."),
            format!("{h}.{payload}"),
            format!("{h}.{payload}.{sig}"),
        ] {
            assert_refused(&s, &token, &format!("alg {alg}")).await;
        }
    }
    // A header with no alg at all.
    let h = b64url_json(&json!({"typ": "JWT", "kid": kid}));
    assert_refused(&s, &format!("{h}.{payload}.{sig}"), "no alg").await;
    // The genuine token still works after all that.
    assert_eq!(status_with(&s, &s.token).await, StatusCode::OK);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let s = TestServer::start().await;
    let (kid, n, e) = server_jwk(&s).await;
    let pkcs1 = pkcs1_der(&n, &e);
    let spki = spki_der(&n, &e);
    let spki_pem = pem("PUBLIC KEY", &spki);
    let pkcs1_pem = pem("RSA PUBLIC KEY", &pkcs1);

    // The rebuilt keys really are the server's: they verify its genuine RS256 token.
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&["keyward"]);
    for key in [
        DecodingKey::from_rsa_pem(spki_pem.as_bytes()).unwrap(),
        DecodingKey::from_rsa_pem(pkcs1_pem.as_bytes()).unwrap(),
        DecodingKey::from_rsa_der(&pkcs1),
    ] {
        jsonwebtoken::decode::<Value>(&s.token, &key, &v).expect("rebuilt public key verifies");
    }

    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                     "n": B64URL.encode(&n), "e": B64URL.encode(&e)})
    .to_string();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", spki_pem.clone().into_bytes()),
        (
            "SPKI PEM without newline",
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        ("PKCS#1 PEM", pkcs1_pem.clone().into_bytes()),
        (
            "PKCS#1 PEM without newline",
            pkcs1_pem.trim_end().as_bytes().to_vec(),
        ),
        ("SPKI DER", spki),
        ("PKCS#1 DER", pkcs1),
        ("JWK JSON", jwk.into_bytes()),
        ("modulus", n.clone()),
    ];
    let claims = claims_of(&s.token);
    for (what, secret) in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let mut header = Header::new(alg);
            header.kid = Some(kid.clone());
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert_refused(&s, &forged, &format!("{alg:?} with the {what}")).await;
        }
    }
}

#[tokio::test]
async fn tokens_signed_by_another_key_or_issuer_are_refused() {
    let s = TestServer::start().await;
    let (kid, _, _) = server_jwk(&s).await;
    let genuine = claims_of(&s.token);

    // Another RSA key under the server's kid, with the genuine claims and with fresh ones.
    let (forger, pkcs8) = foreign_issuer(&kid);
    assert_refused(
        &s,
        &forger.sign(&genuine).unwrap(),
        "same claims, other key",
    )
    .await;
    let fresh = forger
        .issue(
            genuine["sub"].as_str().unwrap(),
            keyward_core::IdentityKind::ServiceId,
            genuine["account"]["bss"].as_str().unwrap(),
            genuine["apikey_id"].as_str().unwrap(),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    assert_refused(&s, &fresh.token, "fresh claims, other key").await;

    // Another issuer, properly signed by its own key (its own kid and ours).
    for (issuer_kid, what) in [("someone-else", "own kid"), (kid.as_str(), "our kid")] {
        let (other, _) = foreign_issuer(issuer_kid);
        for iss in ["https://iam.cloud.ibm.com/identity", "evil"] {
            let mut c = genuine.clone();
            c["iss"] = json!(iss);
            assert_refused(&s, &other.sign(&c).unwrap(), &format!("iss {iss}, {what}")).await;
        }
    }

    // The attacker's key carried in the header (jwk / jku / x5u injection).
    let der = pkcs8.expose().to_vec();
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", &der).as_bytes()).unwrap();
    let attacker_jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(forger.jwk()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.clone());
    header.jwk = Some(attacker_jwk);
    header.jku = Some(format!("{}/identity/keys", "https://attacker.example"));
    header.x5u = Some("https://attacker.example/cert.pem".into());
    let injected = jsonwebtoken::encode(&header, &genuine, &encoding).unwrap();
    assert_refused(&s, &injected, "attacker key in the header").await;

    // An unknown kid, and no kid.
    let (unknown, _) = foreign_issuer("not-a-kid");
    assert_refused(&s, &unknown.sign(&genuine).unwrap(), "unknown kid").await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = None;
    let no_kid = jsonwebtoken::encode(&header, &genuine, &encoding).unwrap();
    assert_refused(&s, &no_kid, "no kid").await;

    assert_eq!(status_with(&s, &s.token).await, StatusCode::OK);
}

#[tokio::test]
async fn tampered_truncated_and_garbage_tokens_are_refused() {
    let s = TestServer::start().await;
    let (_, _, user_token) = s.identity_with("user", &["Reader"]).await;
    let admin = claims_of(&s.token);
    let (h, p, sig) = (
        segment(&user_token, 0),
        segment(&user_token, 1),
        segment(&user_token, 2),
    );
    let user = claims_of(&user_token);

    // Claims changed, signature kept.
    let edits: Vec<(&str, ClaimEdit<'_>)> = vec![
        (
            "sub",
            Box::new(|c: &mut Value| c["sub"] = admin["sub"].clone()),
        ),
        (
            "sub+iam_id",
            Box::new(|c: &mut Value| {
                c["sub"] = admin["sub"].clone();
                c["iam_id"] = admin["iam_id"].clone();
            }),
        ),
        (
            "account",
            Box::new(|c: &mut Value| c["account"]["bss"] = json!("another-account")),
        ),
        (
            "apikey_id",
            Box::new(|c: &mut Value| c["apikey_id"] = admin["apikey_id"].clone()),
        ),
        (
            "exp",
            Box::new(|c: &mut Value| c["exp"] = json!(c["exp"].as_i64().unwrap() + 86_400)),
        ),
        ("nbf", Box::new(|c: &mut Value| c["nbf"] = json!(0))),
        (
            "extra claim",
            Box::new(|c: &mut Value| c["admin"] = json!(true)),
        ),
    ];
    for (what, edit) in edits {
        let mut c = user.clone();
        edit(&mut c);
        let tampered = format!("{h}.{}.{sig}", b64url_json(&c));
        assert_refused(&s, &tampered, &format!("tampered {what}")).await;
    }
    // Header changed (kid dropped), payload and signature kept.
    let mut hdr = header_of(&user_token);
    hdr["kid"] = json!("x");
    assert_refused(&s, &format!("{}.{p}.{sig}", b64url_json(&hdr)), "header").await;
    // The admin's payload under the user's signature and vice versa.
    let admin_payload = segment(&s.token, 1);
    assert_refused(&s, &format!("{h}.{admin_payload}.{sig}"), "spliced").await;
    // Same JSON re-encoded with padding / standard alphabet.
    let padded = base64::engine::general_purpose::URL_SAFE.encode(B64URL.decode(p).unwrap());
    if padded != p {
        assert_refused(&s, &format!("{h}.{padded}.{sig}"), "padded payload").await;
    }

    // Truncated or extended.
    let len = user_token.len();
    for (what, bad) in [
        ("last char dropped", user_token[..len - 1].to_owned()),
        ("signature dropped", format!("{h}.{p}.")),
        ("two parts", format!("{h}.{p}")),
        ("half", user_token[..len / 2].to_owned()),
        ("extra part", format!("{user_token}.AAAA")),
        ("extra signature byte", format!("{user_token}A")),
        (
            "flipped signature",
            format!(
                "{h}.{p}.{}",
                B64URL.encode(
                    B64URL
                        .decode(sig)
                        .unwrap()
                        .iter()
                        .map(|b| b ^ 1)
                        .collect::<Vec<u8>>()
                )
            ),
        ),
    ] {
        assert_refused(&s, &bad, what).await;
    }
    // Garbage.
    for bad in [
        "x",
        "a.b.c",
        "....",
        "not a token",
        "eyJhbGciOiJSUzI1NiJ9",
        "eyJhbGciOiJSUzI1NiJ9.e30.",
        "kwr.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &s.api_key,
    ] {
        assert_refused(&s, bad, &format!("garbage {bad:?}")).await;
    }
    // No Authorization header, and a Basic one.
    let (st, _) = s
        .call_as(Method::GET, "/api/v2/keys", None, None, Some(&s.instance))
        .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let st = s
        .http
        .get(format!("{}/api/v2/keys", s.url))
        .header("bluemix-instance", &s.instance)
        .header("authorization", format!("Basic {}", B64.encode("bx:bx")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // The genuine tokens are unaffected (no cache poisoning).
    assert_eq!(status_with(&s, &user_token).await, StatusCode::OK);
    assert_eq!(status_with(&s, &s.token).await, StatusCode::OK);
}

#[tokio::test]
async fn expired_tokens_are_refused_and_refresh_tokens_outlive_them() {
    let s = TestServer::start_with(|c| c.token_ttl_secs = 1).await;
    let (_, body) = api_key_grant(&s, &s.api_key).await;
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_in"], 1);
    let exp = claims_of(&token)["exp"].as_i64().unwrap();
    assert_eq!(body["expiration"].as_i64().unwrap(), exp);
    // Wait until the second of `exp` has begun: from then on, no leeway.
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_refused(&s, &token, "expired token").await;
    let (st, again) = refresh_grant(&s, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{again}");
    let fresh = again["access_token"].as_str().unwrap();
    if now() < claims_of(fresh)["exp"].as_i64().unwrap() {
        let st = status_with(&s, fresh).await;
        // It may expire between the check and the call; it must not be refused otherwise.
        assert!(
            st == StatusCode::OK || st == StatusCode::UNAUTHORIZED,
            "{st}"
        );
    }
}

// ---- revocation ----

#[tokio::test]
async fn a_deleted_api_keys_tokens_stop_working_within_1s() {
    let s = TestServer::start().await;
    let (_, api_key, token) = s.identity_with("service_id", &["Manager"]).await;
    assert_eq!(status_with(&s, &token).await, StatusCode::OK);
    let id = api_key_id(&api_key);
    let (st, b) = s
        .iam(Method::DELETE, &format!("/iam/v1/apikeys/{id}"), None)
        .await;
    assert!(st.is_success(), "{st} {b}");
    assert_refused_within_1s(&s, &token, "deleted API key").await;
    let (st, b) = api_key_grant(&s, &api_key).await;
    assert_iam_error(st, &b, "BXNIM0415E");
}

#[tokio::test]
async fn a_locked_api_keys_tokens_stop_working_within_1s() {
    let s = TestServer::start().await;
    let (_, api_key, token) = s.identity_with("service_id", &["Manager"]).await;
    let (_, body) = api_key_grant(&s, &api_key).await;
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&s, &token).await, StatusCode::OK);
    let id = api_key_id(&api_key);
    let (st, b) = s
        .iam(Method::POST, &format!("/iam/v1/apikeys/{id}/lock"), None)
        .await;
    assert!(st.is_success(), "{st} {b}");
    assert_refused_within_1s(&s, &token, "locked API key").await;
    let (st, b) = api_key_grant(&s, &api_key).await;
    assert_iam_error(st, &b, "BXNIM0415E");
    let (st, b) = refresh_grant(&s, &refresh).await;
    assert_iam_error(st, &b, "BXNIM0407E");

    // Unlocked, the key logs in again (the refresh token above was spent by the attempt).
    let (st, b) = s
        .iam(Method::DELETE, &format!("/iam/v1/apikeys/{id}/lock"), None)
        .await;
    assert!(st.is_success(), "{st} {b}");
    let (st, b) = api_key_grant(&s, &api_key).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = refresh_grant(&s, &refresh).await;
    assert_iam_error(st, &b, "BXNIM0407E");
}

#[tokio::test]
async fn a_locked_identitys_tokens_stop_working_within_1s() {
    let s = TestServer::start().await;
    let (iam_id, api_key, token) = s.identity_with("user", &["Manager"]).await;
    let (_, body) = api_key_grant(&s, &api_key).await;
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(status_with(&s, &token).await, StatusCode::OK);
    let (st, b) = s
        .iam(
            Method::POST,
            &format!("/iam/v1/identities/{iam_id}/lock"),
            None,
        )
        .await;
    assert!(st.is_success(), "{st} {b}");
    assert_refused_within_1s(&s, &token, "locked identity").await;
    // A locked identity gets no new tokens either way.
    let (st, b) = api_key_grant(&s, &api_key).await;
    assert_iam_error(st, &b, "BXNIM0415E");
    let (st, b) = refresh_grant(&s, &refresh).await;
    assert_iam_error(st, &b, "BXNIM0407E");
}

// ---- refresh tokens ----

#[tokio::test]
async fn refresh_tokens_are_single_use_and_rotate() {
    let s = TestServer::start().await;
    let (iam_id, api_key, _) = s.identity_with("service_id", &["Manager"]).await;
    let (_, first) = api_key_grant(&s, &api_key).await;
    let r1 = first["refresh_token"].as_str().unwrap().to_owned();

    let (st, second) = refresh_grant(&s, &r1).await;
    assert_eq!(st, StatusCode::OK, "{second}");
    let access = second["access_token"].as_str().unwrap();
    let r2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(access, first["access_token"].as_str().unwrap());
    assert_ne!(r2, r1);
    assert!(r2.starts_with("kwr."));
    let claims = claims_of(access);
    assert_eq!(second["token_type"], "Bearer");
    assert_eq!(second["scope"], "ibm openid");
    assert_eq!(second["expiration"], claims["exp"]);
    assert_eq!(
        second["expires_in"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
    );
    assert_eq!(claims["sub"], iam_id.as_str());
    assert_eq!(claims["sub_type"], "ServiceId");
    assert_eq!(claims["apikey_id"], api_key_id(&api_key).as_str());
    assert_eq!(status_with(&s, access).await, StatusCode::OK);

    // The rotated one works once.
    let (st, b) = refresh_grant(&s, &r2).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, b) = refresh_grant(&s, &r2).await;
    assert_iam_error(st, &b, "BXNIM0407E");
    // Spent: refused, and stays refused.
    for _ in 0..2 {
        let (st, b) = refresh_grant(&s, &r1).await;
        assert_iam_error(st, &b, "BXNIM0407E");
    }

    assert!(b["refresh_token"].is_null());

    // Raced: of concurrent exchanges of one refresh token, exactly one wins.
    let (_, b) = api_key_grant(&s, &api_key).await;
    let r3 = b["refresh_token"].as_str().unwrap().to_owned();
    let (a, b, c, d) = tokio::join!(
        refresh_grant(&s, &r3),
        refresh_grant(&s, &r3),
        refresh_grant(&s, &r3),
        refresh_grant(&s, &r3),
    );
    let results = [a, b, c, d];
    let wins = results
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    assert_eq!(wins, 1, "{results:?}");
}

#[tokio::test]
async fn refresh_tokens_die_with_their_api_key() {
    let s = TestServer::start().await;
    let (_, api_key, _) = s.identity_with("service_id", &["Manager"]).await;
    let (_, b) = api_key_grant(&s, &api_key).await;
    let refresh = b["refresh_token"].as_str().unwrap().to_owned();
    let id = api_key_id(&api_key);
    let (st, b) = s
        .iam(Method::DELETE, &format!("/iam/v1/apikeys/{id}"), None)
        .await;
    assert!(st.is_success(), "{st} {b}");
    let (st, b) = refresh_grant(&s, &refresh).await;
    assert_iam_error(st, &b, "BXNIM0407E");
}

#[tokio::test]
async fn garbage_refresh_tokens_are_refused() {
    let s = TestServer::start().await;
    let (_, b) = api_key_grant(&s, &s.api_key).await;
    let genuine = b["refresh_token"].as_str().unwrap().to_owned();
    let access = b["access_token"].as_str().unwrap().to_owned();
    let well_formed_unknown = format!("kwr.{}", B64URL.encode([7u8; 32]));
    for bad in [
        "",
        "not_supported",
        "kwr.",
        "kwr.AAAA",
        &well_formed_unknown,
        &genuine[..genuine.len() - 1],
        &format!("{genuine}A"),
        &genuine[4..],
        &access,
        &s.api_key,
        "' OR 1=1 --",
    ] {
        let (st, b) = refresh_grant(&s, bad).await;
        assert_iam_error(st, &b, "BXNIM0407E");
    }
    // None of those attempts spent the genuine token.
    let (st, b) = refresh_grant(&s, &genuine).await;
    assert_eq!(st, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn grants_are_audited_without_tokens() {
    let mut s = TestServer::start().await;
    let (_, b) = api_key_grant(&s, &s.api_key).await;
    let r1 = b["refresh_token"].as_str().unwrap().to_owned();
    let (_, b2) = refresh_grant(&s, &r1).await;
    let r2 = b2["refresh_token"].as_str().unwrap().to_owned();
    let a2 = b2["access_token"].as_str().unwrap().to_owned();
    let (st, _) = refresh_grant(&s, &r1).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await;

    let db = s.db().await;
    let rows: Vec<(String, String, String)> = db
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
            (r[0].clone().unwrap(), r[1].clone().unwrap(), all.concat())
        })
        .collect();
    let actions: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    for want in [
        ("iam-identity.apikey.login", "success"),
        ("iam-identity.refresh-token.login", "success"),
        ("iam-identity.refresh-token.login", "failure"),
    ] {
        assert!(actions.contains(&want), "missing {want:?} in {actions:?}");
    }
    let dump: String = rows.iter().map(|r| r.2.as_str()).collect();
    for secret in [&r1, &r2, &a2, &s.api_key] {
        assert!(
            !dump.contains(secret.as_str()),
            "audit trail holds a secret"
        );
    }
    // Only hashes are stored; spent ones (r1, and r2 revoked by r1's reuse) until they expire.
    let stored = db.blobs("SELECT hash FROM refresh_tokens", &[]).await;
    assert!(stored.iter().all(|h| h.len() == 32));
    let spent = db
        .blobs(
            "SELECT hash FROM refresh_tokens WHERE spent_at IS NOT NULL",
            &[],
        )
        .await;
    for r in [&r1, &r2] {
        assert!(spent.contains(&keyward_crypto::sha256(r.as_bytes()).to_vec()));
    }
}

/// See: issue 18, item 16 (RFC 6819 5.2.2.3). A spent refresh token presented again means it
/// was copied: every token descending from the same login is revoked, so the successor the
/// thief (or the victim) holds stops working; the refusal is recorded as the identity's.
/// Another login's tokens are untouched.
#[tokio::test]
async fn a_reused_refresh_token_revokes_its_successors() {
    let s = TestServer::start().await;
    let (iam_id, api_key, _) = s.identity_with("service_id", &["Manager"]).await;
    let (_, b) = api_key_grant(&s, &api_key).await;
    let r1 = b["refresh_token"].as_str().unwrap().to_owned();
    let (_, other) = api_key_grant(&s, &api_key).await;
    let other = other["refresh_token"].as_str().unwrap().to_owned();
    let (st, b) = refresh_grant(&s, &r1).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r2 = b["refresh_token"].as_str().unwrap().to_owned();
    let (st, b) = refresh_grant(&s, &r2).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let r3 = b["refresh_token"].as_str().unwrap().to_owned();

    // r1 again: refused like any invalid token, and its family is revoked.
    let (st, b) = refresh_grant(&s, &r1).await;
    assert_iam_error(st, &b, "BXNIM0407E");
    assert_eq!(b["errorMessage"], "Provided refresh token is invalid.");
    let (st, b) = refresh_grant(&s, &r3).await;
    assert_iam_error(st, &b, "BXNIM0407E");
    // The other login's token still works.
    let (st, b) = refresh_grant(&s, &other).await;
    assert_eq!(st, StatusCode::OK, "{b}");

    let rows = s
        .db()
        .await
        .rows(
            "SELECT initiator, reason FROM audit_events
             WHERE action = 'iam-identity.refresh-token.login' AND outcome = 'failure'
             ORDER BY seq",
            &[],
        )
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0].as_deref(), Some(iam_id.as_str()), "{rows:?}");
    assert!(
        rows[0][1]
            .as_deref()
            .unwrap()
            .contains("family is revoked (1 live"),
        "{rows:?}"
    );
}

#[tokio::test]
async fn the_oidc_token_path_answers_like_identity_token() {
    let ts = TestServer::start().await;
    let resp = ts
        .http
        .post(format!("{}/oidc/token", ts.url))
        .form(&[
            ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
            ("apikey", ts.api_key.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let (s, _) = ts
        .call_as(
            Method::GET,
            "/api/v2/keys",
            None,
            Some(token),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}
