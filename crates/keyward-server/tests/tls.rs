//! TLS: with --tls-cert/--tls-key the server speaks HTTPS with rustls, TLS 1.2 and 1.3, and the
//! whole API works over it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use reqwest::{StatusCode, tls};
use serde_json::json;

#[tokio::test]
async fn serves_https_with_tls_1_2_and_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut c = config(&dir.path().join("data"));
    c.tls_cert = Some(cert);
    c.tls_key = Some(key);
    let server = keyward_server::start(c).await.unwrap();
    assert!(server.url.starts_with("https://"));
    let port = server.addr.port();
    let ca = reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap();

    for version in [tls::Version::TLS_1_2, tls::Version::TLS_1_3] {
        let http = reqwest::Client::builder()
            .add_root_certificate(ca.clone())
            .resolve("localhost", ([127, 0, 0, 1], port).into())
            .min_tls_version(version)
            .max_tls_version(version)
            .build()
            .unwrap();
        let resp = http
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{version:?}");
    }

    // The API end to end over TLS.
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let base = format!("https://localhost:{port}");
    let boot: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/bootstrap.json")).unwrap(),
    )
    .unwrap();
    let token = login(&http, &base, boot["api_key"].as_str().unwrap()).await;
    let resp = http
        .post(format!("{base}/api/v2/keys"))
        .bearer_auth(&token)
        .header("bluemix-instance", boot["instance_id"].as_str().unwrap())
        .json(&json!({"resources": [{"name": "over-tls"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Plain HTTP to the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    server.shutdown().await.unwrap();
}
