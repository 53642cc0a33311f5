//! The KMIP listener: TLS 1.2/1.3 with a required client certificate, the certificate matched
//! against those registered on adapters, then request/response messages framed by their TTLV
//! header, each bounded in size and time.
//!
//! A client certificate is accepted at the handshake if it is a well-formed X.509 certificate
//! that is valid now and the client proves it holds its key (rustls checks the handshake
//! signature). Whether it is *registered* is a store lookup, made once the handshake is done: an
//! unknown certificate gets Authentication Not Successful on every batch item of its first
//! request, an audit event (sampled per client address), and the connection is closed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_core::{InstanceId, KmipClient, KmipService, op};
use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::enums::result_reason;
use crate::message::{self, Failure, ResponseItem, Version};
use crate::ttlv::{self, Ttlv};
use crate::{ops, tag};

/// The listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmipLimits {
    /// Largest request message, in bytes (header included).
    pub max_message_bytes: usize,
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once with one client certificate.
    pub max_connections_per_client: usize,
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// A connection that sends no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request, once its first byte arrived, must arrive whole within this.
    pub read_timeout: Duration,
}

impl Default for KmipLimits {
    fn default() -> Self {
        KmipLimits {
            max_message_bytes: 1 << 20,
            max_connections: 1024,
            max_connections_per_client: 64,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts any well-formed client certificate valid now whose key the client proves it holds;
/// whether it is registered is decided after the handshake (see the module doc).
#[derive(Debug)]
struct AnyRegisteredLater {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

/// The client certificate verifier of the KMIP listener's rustls configuration.
pub fn client_verifier() -> Arc<dyn ClientCertVerifier> {
    Arc::new(AnyRegisteredLater {
        provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    })
}

impl ClientCertVerifier for AnyRegisteredLater {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (rest, cert) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if !rest.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        let at =
            x509_parser::time::ASN1Time::from_timestamp(now.as_secs() as i64).map_err(|_| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
            })?;
        if !cert.validity().is_valid_at(at) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Refusals recorded in the audit trail at most once per client address per interval.
struct RefusalSampler {
    last: Mutex<HashMap<IpAddr, Instant>>,
}

const REFUSAL_INTERVAL: Duration = Duration::from_secs(10);

impl RefusalSampler {
    fn should_record(&self, ip: IpAddr) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.len() > 10_000 {
            last.retain(|_, t| now.duration_since(*t) < REFUSAL_INTERVAL);
        }
        match last.get(&ip) {
            Some(t) if now.duration_since(*t) < REFUSAL_INTERVAL => false,
            _ => {
                last.insert(ip, now);
                true
            }
        }
    }
}

/// The running KMIP listener.
pub struct KmipServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    service: KmipService,
    limits: KmipLimits,
    connections: Arc<Semaphore>,
    per_client: Mutex<HashMap<[u8; 32], usize>>,
    refusals: RefusalSampler,
}

impl KmipServer {
    /// Serves KMIP on `listener` with `tls` (whose client verifier must be
    /// [`client_verifier`]) until [`KmipServer::stop`].
    pub fn start(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        service: KmipService,
        limits: KmipLimits,
    ) -> std::io::Result<KmipServer> {
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            service,
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            per_client: Mutex::new(HashMap::new()),
            refusals: RefusalSampler {
                last: Mutex::new(HashMap::new()),
            },
        });
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.changed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "KMIP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Over the cap, a connection is closed at once rather than queued.
                let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
                    tracing::warn!(%peer, "KMIP connection refused: too many connections");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = connection(shared, acceptor, tcp, peer) => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(KmipServer { addr, stop, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

/// Holds one of a client's connection slots.
struct ClientSlot<'a> {
    shared: &'a Shared,
    fingerprint: [u8; 32],
}

impl Drop for ClientSlot<'_> {
    fn drop(&mut self) {
        let mut m = self
            .shared
            .per_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.fingerprint) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.fingerprint);
            }
        }
    }
}

fn take_slot(shared: &Shared, fingerprint: [u8; 32]) -> Option<ClientSlot<'_>> {
    let mut m = shared.per_client.lock().unwrap_or_else(|p| p.into_inner());
    let n = m.entry(fingerprint).or_insert(0);
    if *n >= shared.limits.max_connections_per_client {
        return None;
    }
    *n += 1;
    Some(ClientSlot {
        shared,
        fingerprint,
    })
}

async fn connection(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let limits = shared.limits;
    let mut tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "KMIP TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "KMIP TLS handshake timed out");
            return;
        }
    };
    let (fingerprint, instance) = {
        let (_, session) = tls.get_ref();
        let Some(cert) = session.peer_certificates().and_then(|c| c.first()) else {
            return;
        };
        // A client may name the instance as the first label of the server name, as Key
        // Protect's per-instance KMIP endpoints do; it matters only when its certificate is
        // registered in several instances.
        let instance = session
            .server_name()
            .and_then(|n| n.split('.').next())
            .and_then(|l| l.parse::<InstanceId>().ok());
        (keyward_crypto::sha256(cert), instance)
    };
    let address = peer.ip().to_string();
    let client = match shared
        .service
        .authenticate(
            &fingerprint,
            instance,
            Some(address.clone()),
            uuid::Uuid::new_v4().to_string(),
        )
        .await
    {
        Ok(Some(c)) => c,
        Ok(None) => {
            refuse(
                &shared,
                &mut tls,
                peer,
                &fingerprint,
                "the client certificate is not registered on a KMIP adapter",
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "KMIP client authentication failed");
            refuse(
                &shared,
                &mut tls,
                peer,
                &fingerprint,
                "the client certificate could not be checked",
            )
            .await;
            return;
        }
    };
    let Some(_slot) = take_slot(&shared, fingerprint) else {
        refuse(
            &shared,
            &mut tls,
            peer,
            &fingerprint,
            "too many connections with this client certificate",
        )
        .await;
        return;
    };
    loop {
        let request = match read_message(&mut tls, &limits, true).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(ReadError::Closed) => return,
            Err(ReadError::Invalid(version, f)) => {
                let _ = write(&mut tls, &message::failure_response(version, now(), f)).await;
                return;
            }
        };
        let response = handle(&shared.service, &client, request).await;
        if write(&mut tls, &response).await.is_err() {
            return;
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Answers an unregistered client's first request with Authentication Not Successful on each
/// item, records the refusal (sampled per address), and lets the connection close.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    tls: &mut S,
    peer: SocketAddr,
    fingerprint: &[u8; 32],
    reason: &str,
) {
    if shared.refusals.should_record(peer.ip()) {
        let address = peer.ip().to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        if let Err(e) = shared
            .service
            .record_refusal(
                &op::KMIP_AUTHENTICATE,
                fingerprint,
                Some(&address),
                &request_id,
                reason.to_owned(),
            )
            .await
        {
            tracing::warn!(error = %e, "recording a KMIP refusal failed");
        }
    }
    tracing::info!(%peer, reason, "KMIP client refused");
    let failure = || Failure::new(result_reason::AUTHENTICATION_NOT_SUCCESSFUL, reason);
    let response = match read_message(tls, &shared.limits, false).await {
        Ok(Some(Ok(m))) => {
            let version = message::version_of(&m).unwrap_or(Version::V1_0);
            let items = match message::parse_request(&m) {
                Ok(r) => r
                    .items
                    .into_iter()
                    .map(|i| ResponseItem {
                        operation: Some(i.operation),
                        id: i.id,
                        outcome: Err(failure()),
                    })
                    .collect(),
                Err(_) => vec![ResponseItem {
                    operation: None,
                    id: None,
                    outcome: Err(failure()),
                }],
            };
            message::response(version, now(), items)
        }
        Ok(Some(Err(_))) | Err(ReadError::Invalid(..)) => {
            message::failure_response(Version::V1_0, now(), failure())
        }
        Ok(None) | Err(ReadError::Closed) => return,
    };
    let _ = write(tls, &response).await;
}

enum ReadError {
    Closed,
    Invalid(Version, Failure),
}

/// Reads one message: its 8-byte header (waiting up to the idle timeout when `idle`), then its
/// body within the read timeout. `Ok(None)` when the client closed between messages. The
/// message is returned decoded, or the decoder's failure when its body was read whole (the
/// framing holds, so the connection can answer and go on).
async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    limits: &KmipLimits,
    idle: bool,
) -> Result<Option<Result<Ttlv, Failure>>, ReadError> {
    let mut head = [0u8; 8];
    let wait = if idle {
        limits.idle_timeout
    } else {
        limits.read_timeout
    };
    match tokio::time::timeout(wait, s.read_exact(&mut head[..1])).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Ok(Err(_)) | Err(_) => return Err(ReadError::Closed),
    }
    let rest = async {
        s.read_exact(&mut head[1..]).await?;
        let (t, ty, len) = ttlv::header(&head);
        if t != tag::REQUEST_MESSAGE || ty != 0x01 {
            return Ok(Err(Failure::malformed(
                "a message must be a Request Message structure",
            )));
        }
        let len = len as usize;
        if !len.is_multiple_of(8) || len + 8 > limits.max_message_bytes {
            return Ok(Err(Failure::malformed(format!(
                "a request is at most {} bytes and a multiple of 8",
                limits.max_message_bytes
            ))));
        }
        let mut buf = vec![0u8; 8 + len];
        buf[..8].copy_from_slice(&head);
        s.read_exact(&mut buf[8..]).await?;
        Ok::<_, std::io::Error>(Ok(buf))
    };
    let buf = match tokio::time::timeout(limits.read_timeout, rest).await {
        Ok(Ok(Ok(buf))) => buf,
        Ok(Ok(Err(f))) => return Err(ReadError::Invalid(Version::V1_0, f)),
        Ok(Err(_)) | Err(_) => return Err(ReadError::Closed),
    };
    Ok(Some(ttlv::decode(&buf, ttlv::Limits::default()).map_err(
        |e| Failure::malformed(format!("the message is not valid TTLV: {e}")),
    )))
}

/// Answers one request message (or the decoder's failure) in the request's version.
async fn handle(
    service: &KmipService,
    client: &KmipClient,
    request: Result<Ttlv, Failure>,
) -> Ttlv {
    let m = match request {
        Ok(m) => m,
        Err(f) => return message::failure_response(Version::V1_0, now(), f),
    };
    let fallback = message::version_of(&m).unwrap_or(Version::V1_0);
    let request = match message::parse_request(&m) {
        Ok(r) => r,
        Err(f) => return message::failure_response(fallback, now(), f),
    };
    let version = request.version;
    if !message::SUPPORTED_VERSIONS.contains(&version) {
        // Answered in the newest version of the request's major, or 1.0.
        let answer = message::SUPPORTED_VERSIONS
            .iter()
            .copied()
            .find(|v| v.major == version.major)
            .unwrap_or(Version::V1_0);
        return message::failure_response(
            answer,
            now(),
            Failure::new(
                result_reason::INVALID_MESSAGE,
                format!("KMIP {version} is not supported; use Discover Versions"),
            ),
        );
    }
    if request.asynchronous {
        let items = request
            .items
            .into_iter()
            .map(|i| ResponseItem {
                operation: Some(i.operation),
                id: i.id,
                outcome: Err(Failure::unsupported(
                    "asynchronous operations are not supported",
                )),
            })
            .collect();
        return message::response(version, now(), items);
    }
    let client = client.for_request(uuid::Uuid::new_v4().to_string());
    let max = request.max_response_size;
    let items = ops::run_batch(
        service,
        &client,
        version,
        request.items,
        request.continue_on_error,
    )
    .await;
    let response = message::response(version, now(), items);
    match max {
        Some(max) if response.encode().len() > max => {
            // Too large: every item says so, without its payload.
            let items = response
                .children(tag::BATCH_ITEM)
                .map(|i| ResponseItem {
                    operation: i.child(tag::OPERATION).and_then(Ttlv::as_enum),
                    id: i
                        .child(tag::UNIQUE_BATCH_ITEM_ID)
                        .and_then(Ttlv::as_bytes)
                        .map(<[u8]>::to_vec),
                    outcome: Err(Failure::new(
                        result_reason::RESPONSE_TOO_LARGE,
                        format!(
                            "the response is larger than the Maximum Response Size ({max} bytes)"
                        ),
                    )),
                })
                .collect();
            message::response(version, now(), items)
        }
        _ => response,
    }
}

async fn write<S: AsyncWrite + Unpin>(s: &mut S, message: &Ttlv) -> std::io::Result<()> {
    s.write_all(&message.encode()).await?;
    s.flush().await
}
