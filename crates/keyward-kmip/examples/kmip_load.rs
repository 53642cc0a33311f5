//! A KMIP load generator for `scripts/bench-kmip.sh`: N TLS connections, each sending one
//! operation per request (Get, or AES-GCM Encrypt) back to back for a duration; prints
//! `ops_per_second p50_ms p99_ms errors`.
//!
//! Usage: kmip_load ADDR CA CERT KEY UID get|encrypt CONNECTIONS SECONDS
//!        kmip_load ADDR CA CERT KEY - create 1 0   (creates and activates an AES-256 key,
//!                                                   prints its id)

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward_kmip::enums::{block_cipher_mode, operation};
use keyward_kmip::tag;
use keyward_kmip::ttlv::{self, Ttlv, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn attribute(name: &str, value: Value) -> Ttlv {
    Ttlv::structure(
        tag::ATTRIBUTE,
        vec![
            Ttlv::new(tag::ATTRIBUTE_NAME, Value::TextString(name.into())),
            Ttlv::new(tag::ATTRIBUTE_VALUE, value),
        ],
    )
}

fn message(items: Vec<(u32, Vec<Ttlv>)>) -> Vec<u8> {
    let version = Ttlv::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Ttlv::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(1)),
            Ttlv::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(2)),
        ],
    );
    let mut m = vec![Ttlv::structure(
        tag::REQUEST_HEADER,
        vec![
            version,
            Ttlv::new(tag::BATCH_COUNT, Value::Integer(items.len() as i32)),
        ],
    )];
    for (op, payload) in items {
        m.push(Ttlv::structure(
            tag::BATCH_ITEM,
            vec![
                Ttlv::new(tag::OPERATION, Value::Enumeration(op)),
                Ttlv::structure(tag::REQUEST_PAYLOAD, payload),
            ],
        ));
    }
    Ttlv::structure(tag::REQUEST_MESSAGE, m).encode()
}

/// Create an AES-256 key and activate it (by the ID Placeholder), in one batch.
fn create_request() -> Vec<u8> {
    let template = Ttlv::structure(
        tag::TEMPLATE_ATTRIBUTE,
        vec![
            attribute("Cryptographic Algorithm", Value::Enumeration(3)),
            attribute("Cryptographic Length", Value::Integer(256)),
        ],
    );
    message(vec![
        (
            operation::CREATE,
            vec![Ttlv::new(tag::OBJECT_TYPE, Value::Enumeration(2)), template],
        ),
        (operation::ACTIVATE, vec![]),
    ])
}

fn request(op: u32, uid: &str) -> Vec<u8> {
    let mut payload = vec![Ttlv::new(
        tag::UNIQUE_IDENTIFIER,
        Value::TextString(uid.into()),
    )];
    if op == operation::ENCRYPT {
        payload.push(Ttlv::structure(
            tag::CRYPTOGRAPHIC_PARAMETERS,
            vec![Ttlv::new(
                tag::BLOCK_CIPHER_MODE,
                Value::Enumeration(block_cipher_mode::GCM),
            )],
        ));
        payload.push(Ttlv::new(tag::DATA, Value::ByteString(vec![7; 32])));
    }
    message(vec![(op, payload)])
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 9 {
        eprintln!("usage: kmip_load ADDR CA CERT KEY UID get|encrypt CONNECTIONS SECONDS");
        std::process::exit(2);
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&args[2]).expect("CA file") {
        roots
            .add(c.expect("CA certificate"))
            .expect("CA certificate");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&args[3])
        .expect("certificate file")
        .map(|c| c.expect("certificate"))
        .collect();
    let key = PrivateKeyDer::from_pem_file(&args[4]).expect("key file");
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate"),
    );
    let (op, create) = match args[6].as_str() {
        "encrypt" => (operation::ENCRYPT, false),
        "create" => (operation::CREATE, true),
        _ => (operation::GET, false),
    };
    let message = Arc::new(if create {
        create_request()
    } else {
        request(op, &args[5])
    });
    if create {
        let tcp = tokio::net::TcpStream::connect(&args[1])
            .await
            .expect("connect");
        let mut c = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS");
        c.write_all(&message).await.expect("write");
        let mut head = [0u8; 8];
        c.read_exact(&mut head).await.expect("read");
        let (_, _, len) = ttlv::header(&head);
        let mut buf = head.to_vec();
        buf.resize(8 + len as usize, 0);
        c.read_exact(&mut buf[8..]).await.expect("read");
        let r = ttlv::decode(&buf, ttlv::Limits::default()).expect("TTLV");
        let uid = r
            .child(tag::BATCH_ITEM)
            .and_then(|i| i.child(tag::RESPONSE_PAYLOAD))
            .and_then(|p| p.child(tag::UNIQUE_IDENTIFIER))
            .and_then(Ttlv::as_text)
            .unwrap_or_else(|| panic!("Create failed: {r:?}"));
        println!("{uid}");
        return;
    }
    let connections: usize = args[7].parse().expect("CONNECTIONS");
    let duration = Duration::from_secs(args[8].parse().expect("SECONDS"));
    let addr = args[1].clone();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (config, message, addr) = (config.clone(), message.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            tcp.set_nodelay(true).expect("nodelay");
            let mut c = tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::try_from("localhost").expect("name"), tcp)
                .await
                .expect("TLS");
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            let mut buf = Vec::new();
            while start.elapsed() < duration {
                let t = Instant::now();
                c.write_all(&message).await.expect("write");
                let mut head = [0u8; 8];
                c.read_exact(&mut head).await.expect("read");
                let (_, _, len) = ttlv::header(&head);
                buf.clear();
                buf.extend_from_slice(&head);
                buf.resize(8 + len as usize, 0);
                c.read_exact(&mut buf[8..]).await.expect("read");
                latencies.push(t.elapsed());
                let r = ttlv::decode(&buf, ttlv::Limits::default()).expect("TTLV");
                let ok = r
                    .child(tag::BATCH_ITEM)
                    .and_then(|i| i.child(tag::RESULT_STATUS))
                    .and_then(Ttlv::as_enum)
                    == Some(0);
                if !ok {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("task");
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{:.0} {:.2} {:.2} {}",
        all.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        errors
    );
}
