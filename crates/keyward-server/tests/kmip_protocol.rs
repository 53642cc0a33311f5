//! The KMIP listener against a real `keyward serve` (in process), over mutual TLS: a client
//! whose certificate is registered on an adapter, one whose certificate is not, the root key's
//! lifecycle governing every KMIP object, and bad input of every kind answered without a panic.
//! (Interop with a client of another project, PyKMIP, is in tests/interop/test_kmip_protocol.py.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use keyward_kmip::enums::{
    algorithm, block_cipher_mode, object_type, operation as opn, result_reason,
};
use keyward_kmip::tag;
use keyward_kmip::ttlv::{self, Ttlv, Value};
use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

struct Kmip {
    s: TestServer,
    addr: SocketAddr,
    server_cert: CertificateDer<'static>,
    crk: String,
    adapter: String,
}

/// A client certificate and its key.
struct ClientCert {
    pem: String,
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

fn client_cert() -> ClientCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["kmip-client".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    ClientCert {
        pem: cert.pem(),
        der: cert.der().clone(),
        key: key.serialize_der(),
    }
}

async fn start_with(tweak: impl FnOnce(&mut keyward_runtime::ServerConfig)) -> Kmip {
    let tls = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (tls.path().join("kmip.pem"), tls.path().join("kmip.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = TestServer::start_with(|c| {
        c.kmip.listen = Some("127.0.0.1:0".parse().unwrap());
        c.kmip.tls_cert = Some(cert.clone());
        c.kmip.tls_key = Some(key.clone());
        tweak(c);
    })
    .await;
    let addr = s
        .server
        .as_ref()
        .unwrap()
        .kmip_addr()
        .expect("KMIP listener");
    let crk = s.create_root_key("kmip-crk").await;
    let (st, b) = s
        .call(
            Method::POST,
            "/api/v2/kmip_adapters",
            Some(json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.kmip_adapter+json", "collectionTotal": 1},
                "resources": [{"name": "adapter-1", "profile": "native_1.0", "profile_data": {"crk_id": crk}}],
            })),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let adapter = b["resources"][0]["id"].as_str().unwrap().to_owned();
    std::mem::forget(tls);
    Kmip {
        s,
        addr,
        server_cert: ck.cert.der().clone(),
        crk,
        adapter,
    }
}

impl Kmip {
    async fn register(&self, cert: &ClientCert) {
        let (st, b) = self
            .s
            .call(
                Method::POST,
                &format!("/api/v2/kmip_adapters/{}/certificates", self.adapter),
                Some(json!({
                    "metadata": {"collectionType": "application/vnd.ibm.kms.kmip_client_certificate+json", "collectionTotal": 1},
                    "resources": [{"certificate": cert.pem}],
                })),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
    }

    async fn connect(&self, cert: &ClientCert) -> TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![cert.der.clone()],
            PrivateKeyDer::Pkcs8(cert.key.clone().into()),
        )
        .unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }
}

fn int(t: u32, v: i32) -> Ttlv {
    Ttlv::new(t, Value::Integer(v))
}
fn en(t: u32, v: u32) -> Ttlv {
    Ttlv::new(t, Value::Enumeration(v))
}
fn text(t: u32, v: &str) -> Ttlv {
    Ttlv::new(t, Value::TextString(v.into()))
}
fn bytes(t: u32, v: &[u8]) -> Ttlv {
    Ttlv::new(t, Value::ByteString(v.to_vec()))
}
fn st(t: u32, items: Vec<Ttlv>) -> Ttlv {
    Ttlv::structure(t, items)
}

fn attribute(name: &str, value: Value) -> Ttlv {
    st(
        tag::ATTRIBUTE,
        vec![
            text(tag::ATTRIBUTE_NAME, name),
            Ttlv::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

/// A request message in KMIP `major.minor` with `header` extras.
fn request(version: (i32, i32), header: Vec<Ttlv>, items: Vec<(u32, Vec<Ttlv>)>) -> Ttlv {
    let mut h = vec![st(
        tag::PROTOCOL_VERSION,
        vec![
            int(tag::PROTOCOL_VERSION_MAJOR, version.0),
            int(tag::PROTOCOL_VERSION_MINOR, version.1),
        ],
    )];
    h.extend(header);
    h.push(int(tag::BATCH_COUNT, items.len() as i32));
    let mut m = vec![st(tag::REQUEST_HEADER, h)];
    for (op, payload) in items {
        m.push(st(
            tag::BATCH_ITEM,
            vec![en(tag::OPERATION, op), st(tag::REQUEST_PAYLOAD, payload)],
        ));
    }
    st(tag::REQUEST_MESSAGE, m)
}

async fn read_response(c: &mut TlsStream<tokio::net::TcpStream>) -> Option<Ttlv> {
    let mut head = [0u8; 8];
    c.read_exact(&mut head).await.ok()?;
    let (_, _, len) = ttlv::header(&head);
    let mut buf = head.to_vec();
    buf.resize(8 + len as usize, 0);
    c.read_exact(&mut buf[8..]).await.ok()?;
    Some(ttlv::decode(&buf, ttlv::Limits::default()).unwrap())
}

async fn send_raw(c: &mut TlsStream<tokio::net::TcpStream>, b: &[u8]) -> Option<Ttlv> {
    c.write_all(b).await.ok()?;
    c.flush().await.ok()?;
    read_response(c).await
}

/// Each batch item's outcome: its payload, or its result reason and message.
fn outcomes(response: &Ttlv) -> Vec<Result<Ttlv, (u32, String)>> {
    assert_eq!(response.tag, tag::RESPONSE_MESSAGE);
    response
        .children(tag::BATCH_ITEM)
        .map(|i| {
            if i.child(tag::RESULT_STATUS).unwrap().as_enum() == Some(0) {
                Ok(i.child(tag::RESPONSE_PAYLOAD).unwrap().clone())
            } else {
                Err((
                    i.child(tag::RESULT_REASON).unwrap().as_enum().unwrap(),
                    i.child(tag::RESULT_MESSAGE)
                        .and_then(Ttlv::as_text)
                        .unwrap_or_default()
                        .to_owned(),
                ))
            }
        })
        .collect()
}

async fn one(
    c: &mut TlsStream<tokio::net::TcpStream>,
    op: u32,
    payload: Vec<Ttlv>,
) -> Result<Ttlv, (u32, String)> {
    let r = send_raw(c, &request((1, 2), vec![], vec![(op, payload)]).encode())
        .await
        .expect("a response");
    outcomes(&r).remove(0)
}

fn uid_of(p: &Ttlv) -> String {
    p.child(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .unwrap()
        .to_owned()
}

fn create_aes(bits: i32) -> Vec<Ttlv> {
    vec![
        en(tag::OBJECT_TYPE, object_type::SYMMETRIC_KEY),
        st(
            tag::TEMPLATE_ATTRIBUTE,
            vec![
                attribute(
                    "Cryptographic Algorithm",
                    Value::Enumeration(algorithm::AES),
                ),
                attribute("Cryptographic Length", Value::Integer(bits)),
                attribute("Cryptographic Usage Mask", Value::Integer(4 | 8)),
                attribute(
                    "Name",
                    Value::Structure(vec![
                        text(tag::NAME_VALUE, "disk-key"),
                        en(tag::NAME_TYPE, 1),
                    ]),
                ),
            ],
        ),
    ]
}

fn key_bytes(get: &Ttlv) -> Vec<u8> {
    get.child(tag::SYMMETRIC_KEY)
        .and_then(|k| k.child(tag::KEY_BLOCK))
        .and_then(|b| b.child(tag::KEY_VALUE))
        .and_then(|v| v.child(tag::KEY_MATERIAL))
        .and_then(Ttlv::as_bytes)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn a_registered_client_manages_keys_and_the_root_key_governs_them() {
    let k = start_with(|_| {}).await;
    let cert = client_cert();
    k.register(&cert).await;
    let mut c = k.connect(&cert).await;

    // Create, activate (by the ID Placeholder, in the same batch), get.
    let r = send_raw(
        &mut c,
        &request(
            (1, 4),
            vec![],
            vec![(opn::CREATE, create_aes(256)), (opn::ACTIVATE, vec![])],
        )
        .encode(),
    )
    .await
    .unwrap();
    let out = outcomes(&r);
    let id = uid_of(out[0].as_ref().unwrap());
    assert_eq!(uid_of(out[1].as_ref().unwrap()), id);
    let key = key_bytes(
        &one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
            .await
            .unwrap(),
    );
    assert_eq!(key.len(), 32);

    // The material is stored sealed, never as the key.
    let stored =
        k.s.db()
            .await
            .blobs("SELECT material FROM kmip_objects WHERE id = ?1", &[&id])
            .await;
    assert!(!stored[0].windows(32).any(|w| w == key.as_slice()));

    // Encrypt and decrypt (AES-GCM, the server's nonce).
    let params = |mode| {
        st(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            vec![en(tag::BLOCK_CIPHER_MODE, mode)],
        )
    };
    let enc = one(
        &mut c,
        opn::ENCRYPT,
        vec![
            text(tag::UNIQUE_IDENTIFIER, &id),
            params(block_cipher_mode::GCM),
            bytes(tag::DATA, b"secret data"),
        ],
    )
    .await
    .unwrap();
    let ct = enc
        .child(tag::DATA)
        .and_then(Ttlv::as_bytes)
        .unwrap()
        .to_vec();
    let nonce = enc
        .child(tag::IV_COUNTER_NONCE)
        .and_then(Ttlv::as_bytes)
        .unwrap()
        .to_vec();
    let tag_ = enc
        .child(tag::AUTHENTICATED_ENCRYPTION_TAG)
        .and_then(Ttlv::as_bytes)
        .unwrap()
        .to_vec();
    let decrypt = |tag_: Vec<u8>| {
        vec![
            text(tag::UNIQUE_IDENTIFIER, &id),
            params(block_cipher_mode::GCM),
            bytes(tag::DATA, &ct),
            bytes(tag::IV_COUNTER_NONCE, &nonce),
            bytes(tag::AUTHENTICATED_ENCRYPTION_TAG, &tag_),
        ]
    };
    let dec = one(&mut c, opn::DECRYPT, decrypt(tag_.clone()))
        .await
        .unwrap();
    assert_eq!(
        dec.child(tag::DATA).and_then(Ttlv::as_bytes).unwrap(),
        b"secret data"
    );
    let mut bad = tag_.clone();
    bad[0] ^= 1;
    let (reason, _) = one(&mut c, opn::DECRYPT, decrypt(bad)).await.unwrap_err();
    assert_eq!(reason, result_reason::CRYPTOGRAPHIC_FAILURE);

    // A key created with an Activation Date that has come is Active at once.
    let mut active_now = create_aes(128);
    if let Value::Structure(t) = &mut active_now[1].value {
        t.push(attribute("Activation Date", Value::DateTime(1)));
    }
    let now_id = uid_of(&one(&mut c, opn::CREATE, active_now).await.unwrap());
    assert!(
        one(
            &mut c,
            opn::ENCRYPT,
            vec![
                text(tag::UNIQUE_IDENTIFIER, &now_id),
                params(block_cipher_mode::GCM),
                bytes(tag::DATA, b"x"),
            ],
        )
        .await
        .is_ok()
    );

    // Locate by name finds it; by another name, nothing.
    let name_attr = |n: &str| {
        attribute(
            "Name",
            Value::Structure(vec![text(tag::NAME_VALUE, n), en(tag::NAME_TYPE, 1)]),
        )
    };
    let found = one(&mut c, opn::LOCATE, vec![name_attr("disk-key")])
        .await
        .unwrap();
    assert_eq!(uid_of(&found), id);
    let none = one(&mut c, opn::LOCATE, vec![name_attr("other")])
        .await
        .unwrap();
    assert!(none.child(tag::UNIQUE_IDENTIFIER).is_none());

    // Disable the root key: Get and Encrypt fail, naming the root key; enable: they work.
    let (status, b) = k.s.action(&k.crk, "disable", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{b}");
    let (reason, message) = one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
        .await
        .unwrap_err();
    assert_eq!(reason, result_reason::PERMISSION_DENIED);
    assert!(message.contains("root key"), "{message}");
    let (reason, _) = one(
        &mut c,
        opn::ENCRYPT,
        vec![
            text(tag::UNIQUE_IDENTIFIER, &id),
            params(block_cipher_mode::GCM),
            bytes(tag::DATA, b"x"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(reason, result_reason::PERMISSION_DENIED);
    // Creating under a disabled root key is refused too.
    assert!(one(&mut c, opn::CREATE, create_aes(128)).await.is_err());
    let (status, b) = k.s.action(&k.crk, "enable", json!({})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{b}");
    let again = key_bytes(
        &one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
            .await
            .unwrap(),
    );
    assert_eq!(again, key);

    // A tampered stored object is refused, never used.
    k.s.db()
        .await
        .execute("UPDATE kmip_objects SET state = 1 WHERE id = ?1", &[&id])
        .await;
    let (reason, _) = one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
        .await
        .unwrap_err();
    assert_eq!(reason, result_reason::GENERAL_FAILURE);
    k.s.db()
        .await
        .execute("UPDATE kmip_objects SET state = 2 WHERE id = ?1", &[&id])
        .await;
    assert!(
        one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
            .await
            .is_ok()
    );

    // Delete the root key: nothing opens.
    let (status, b) =
        k.s.call(Method::DELETE, &format!("/api/v2/keys/{}", k.crk), None)
            .await;
    assert!(status.is_success(), "{status} {b}");
    let (reason, message) = one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, &id)])
        .await
        .unwrap_err();
    assert_eq!(reason, result_reason::PERMISSION_DENIED, "{message}");

    // Every operation was audited with the client's certificate fingerprint.
    let fp = keyward_crypto::sha256(&cert.der);
    let subject = keyward_core::kmip_subject(&fp);
    let n = k
        .s
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE initiator = ?1 AND action LIKE 'kms.kmip.%'",
            &[&subject],
        )
        .await;
    assert!(n >= 10, "{n} KMIP audit events");
}

#[tokio::test]
async fn an_unregistered_certificate_is_refused_and_audited() {
    let k = start_with(|_| {}).await;
    let stranger = client_cert();
    let mut c = k.connect(&stranger).await;
    let r = send_raw(
        &mut c,
        &request((1, 2), vec![], vec![(opn::CREATE, create_aes(256))]).encode(),
    )
    .await
    .unwrap();
    let (reason, message) = outcomes(&r).remove(0).unwrap_err();
    assert_eq!(reason, result_reason::AUTHENTICATION_NOT_SUCCESSFUL);
    assert!(message.contains("not registered"), "{message}");
    // The connection is closed afterwards.
    assert!(
        send_raw(
            &mut c,
            &request((1, 2), vec![], vec![(opn::QUERY, vec![])]).encode()
        )
        .await
        .is_none()
    );
    let subject = keyward_core::kmip_subject(&keyward_crypto::sha256(&stranger.der));
    let n = k
        .s
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE initiator = ?1 AND action = 'kms.kmip.authenticate' AND outcome = 'failure'",
            &[&subject],
        )
        .await;
    assert_eq!(n, 1);
    assert_eq!(
        k.s.db()
            .await
            .int("SELECT COUNT(*) FROM kmip_objects", &[])
            .await,
        0
    );
}

#[tokio::test]
async fn bad_messages_get_kmip_errors_and_the_connection_goes_on() {
    let k = start_with(|_| {}).await;
    let cert = client_cert();
    k.register(&cert).await;
    let mut c = k.connect(&cert).await;

    // An unsupported operation: Operation Not Supported, and the connection stays.
    let (reason, _) = one(&mut c, 0x2D, vec![]).await.unwrap_err();
    assert_eq!(reason, result_reason::OPERATION_NOT_SUPPORTED);
    // Missing and wrong fields.
    let (reason, _) = one(&mut c, opn::GET, vec![]).await.unwrap_err();
    assert_eq!(reason, result_reason::MISSING_DATA);
    let (reason, _) = one(&mut c, opn::GET, vec![text(tag::UNIQUE_IDENTIFIER, "nope")])
        .await
        .unwrap_err();
    assert_eq!(reason, result_reason::ITEM_NOT_FOUND);
    let (reason, _) = one(&mut c, opn::CREATE, create_aes(100)).await.unwrap_err();
    assert_eq!(reason, result_reason::INVALID_FIELD);
    let mut with_state = create_aes(128);
    with_state[1] = st(
        tag::TEMPLATE_ATTRIBUTE,
        vec![attribute("State", Value::Enumeration(2))],
    );
    assert!(one(&mut c, opn::CREATE, with_state).await.is_err());

    // Asynchronous operations are refused cleanly.
    let r = send_raw(
        &mut c,
        &request(
            (1, 2),
            vec![Ttlv::new(tag::ASYNCHRONOUS_INDICATOR, Value::Boolean(true))],
            vec![(opn::QUERY, vec![])],
        )
        .encode(),
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::FEATURE_NOT_SUPPORTED
    );

    // Maximum Response Size honoured.
    let r = send_raw(
        &mut c,
        &request(
            (1, 2),
            vec![int(tag::MAXIMUM_RESPONSE_SIZE, 64)],
            vec![(opn::QUERY, vec![en(tag::QUERY_FUNCTION, 1)])],
        )
        .encode(),
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::RESPONSE_TOO_LARGE
    );

    // A body whose TTLV is malformed (a structure length cutting an item, an unknown type,
    // a nesting bomb): Invalid Message, and the connection goes on, its framing intact.
    let mut cut = request((1, 2), vec![], vec![(opn::QUERY, vec![])]).encode();
    cut[7] = cut[7].wrapping_sub(8);
    cut.truncate(cut.len() - 8);
    let r = send_raw(&mut c, &cut).await.unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
    let mut bomb = Ttlv::structure(tag::REQUEST_PAYLOAD, vec![]);
    for _ in 0..200 {
        bomb = Ttlv::structure(tag::REQUEST_PAYLOAD, vec![bomb]);
    }
    let r = send_raw(
        &mut c,
        &request((1, 2), vec![], vec![(opn::QUERY, vec![bomb])]).encode(),
    )
    .await
    .unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
    let mut unknown_type = request(
        (1, 2),
        vec![],
        vec![(opn::QUERY, vec![int(tag::QUERY_FUNCTION, 1)])],
    )
    .encode();
    let at = unknown_type.len() - 16 + 3;
    unknown_type[at] = 0x0F;
    let r = send_raw(&mut c, &unknown_type).await.unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
    // A tag outside KMIP's ranges: Invalid Message. An unknown KMIP tag in a payload is
    // ignored, as the specification allows for fields a server does not use.
    let mut foreign = request(
        (1, 2),
        vec![],
        vec![(opn::QUERY, vec![int(tag::QUERY_FUNCTION, 1)])],
    )
    .encode();
    let at = foreign.len() - 16;
    foreign[at] = 0x43;
    let r = send_raw(&mut c, &foreign).await.unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
    assert!(
        one(&mut c, opn::QUERY, vec![int(0x42FFF0, 1)])
            .await
            .is_ok()
    );
    // A wrong Batch Count.
    let mut m = request((1, 2), vec![], vec![(opn::QUERY, vec![])]);
    if let Value::Structure(items) = &mut m.value
        && let Value::Structure(h) = &mut items[0].value
    {
        h[1] = int(tag::BATCH_COUNT, 5);
    }
    let r = send_raw(&mut c, &m.encode()).await.unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );

    // Still serving: Discover Versions answers in the request's version.
    let r = send_raw(
        &mut c,
        &request((2, 0), vec![], vec![(opn::DISCOVER_VERSIONS, vec![])]).encode(),
    )
    .await
    .unwrap();
    let header = r.child(tag::RESPONSE_HEADER).unwrap();
    let v = header.child(tag::PROTOCOL_VERSION).unwrap();
    assert_eq!(
        v.child(tag::PROTOCOL_VERSION_MAJOR).unwrap().as_int(),
        Some(2)
    );
    let versions = outcomes(&r).remove(0).unwrap();
    assert_eq!(versions.children(tag::PROTOCOL_VERSION).count(), 7);

    // A 100 MB length field: an error, then the connection is closed (nothing allocated).
    let mut huge = vec![0x42, 0x00, 0x78, 0x01];
    huge.extend_from_slice(&(100u32 << 20).to_be_bytes());
    let r = send_raw(&mut c, &huge).await.unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
    assert!(read_response(&mut c).await.is_none());

    // Not a request message at all.
    let mut c = k.connect(&cert).await;
    let r = send_raw(&mut c, &int(tag::BATCH_COUNT, 1).encode())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&r).remove(0).unwrap_err().0,
        result_reason::INVALID_MESSAGE
    );
}

#[tokio::test]
async fn slow_and_idle_connections_time_out_and_each_client_is_bounded() {
    let k = start_with(|c| {
        c.kmip.idle_timeout_secs = 1;
        c.kmip.read_timeout_secs = 1;
        c.kmip.max_connections_per_client = 2;
    })
    .await;
    let cert = client_cert();
    k.register(&cert).await;

    // Idle: closed after the idle timeout.
    let mut idle = k.connect(&cert).await;
    let mut b = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut b)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Slow: half a message, then nothing: closed after the read timeout.
    let mut slow = k.connect(&cert).await;
    let m = request((1, 2), vec![], vec![(opn::QUERY, vec![])]).encode();
    slow.write_all(&m[..12]).await.unwrap();
    slow.flush().await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut b)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Two connections per client certificate; the third is refused.
    let mut a = k.connect(&cert).await;
    let mut b2 = k.connect(&cert).await;
    assert!(one(&mut a, opn::QUERY, vec![]).await.is_ok());
    assert!(one(&mut b2, opn::QUERY, vec![]).await.is_ok());
    let mut third = k.connect(&cert).await;
    let r = send_raw(
        &mut third,
        &request((1, 2), vec![], vec![(opn::QUERY, vec![])]).encode(),
    )
    .await
    .unwrap();
    let (reason, message) = outcomes(&r).remove(0).unwrap_err();
    assert_eq!(reason, result_reason::AUTHENTICATION_NOT_SUCCESSFUL);
    assert!(message.contains("too many connections"), "{message}");
    drop(a);
}
