//! Starts the KMIP listener of `[kmip]` beside the HTTP one: its TLS configuration (the
//! server's certificate, client certificates required) and keyward-kmip's server over the same
//! `KmipService` the REST management API uses.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::state::AppState;

/// Loads `[kmip]`'s certificate and key and serves KMIP on `listener`.
pub(crate) fn start(
    state: &AppState,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<keyward_kmip::KmipServer> {
    let section = &state.config.kmip;
    let (Some(cert), Some(key)) = (&section.tls_cert, &section.tls_key) else {
        anyhow::bail!("[kmip] needs tls_cert and tls_key");
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .with_context(|| format!("reading the KMIP certificate chain {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "the KMIP certificate file {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the KMIP private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS versions")?
        .with_client_cert_verifier(keyward_kmip::client_verifier())
        .with_single_cert(chain, key)
        .context("the KMIP certificate and key do not form a usable pair")?;
    let limits = keyward_kmip::KmipLimits {
        max_message_bytes: section.max_message_bytes,
        max_connections: section.max_connections,
        max_connections_per_client: section.max_connections_per_client,
        handshake_timeout: Duration::from_secs(section.read_timeout_secs),
        idle_timeout: Duration::from_secs(section.idle_timeout_secs),
        read_timeout: Duration::from_secs(section.read_timeout_secs),
    };
    let server =
        keyward_kmip::KmipServer::start(listener, Arc::new(tls), state.kmip.clone(), limits)
            .context("starting the KMIP listener")?;
    tracing::info!(addr = %server.addr(), "serving KMIP");
    Ok(server)
}
