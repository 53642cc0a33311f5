//! What one client can hold of the server (`[limits]`): at most `max_connections` open
//! connections (and `max_connections_per_ip` from one address), each closed once no byte has
//! moved either way for `idle_timeout_secs`. A connection over a cap is closed as soon as it is
//! accepted, before TLS or HTTP, and counted in `/metrics`. The header-read timeout is hyper's
//! (set in [`crate::serve`]). Without these, 1 100 connections that sent half a request line and
//! stalled made `/healthz` time out for 45 s, and idle connections were never closed (issue 18).

use std::collections::HashMap;
use std::future::{Future, Ready};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use keyward_runtime::config::LimitsSection;
use keyward_runtime::metrics::{ConnectionRefusal, Metrics};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Open files kept for everything but client connections (the database, the WAL, the
/// keystore, PostgreSQL connections, logs).
const RESERVED_FILES: u64 = 256;

/// The connection bounds one server enforces, with its counts.
pub struct ConnectionLimits {
    max: usize,
    per_ip: usize,
    idle: Option<Duration>,
    open: AtomicUsize,
    by_source: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

impl ConnectionLimits {
    /// The bounds of `limits`, with `max_connections` kept below the open-file limit (raised to
    /// its hard limit first).
    pub fn new(limits: &LimitsSection, metrics: Arc<Metrics>) -> Self {
        let files = raise_open_file_limit();
        let max = limits.max_connections.min(files.map_or(usize::MAX, |n| {
            usize::try_from(n.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(usize::MAX)
        }));
        if max < limits.max_connections {
            tracing::warn!(
                max_connections = limits.max_connections,
                open_file_limit = files,
                "limits.max_connections lowered to {max} to stay below the open-file limit \
                 (raise it with ulimit -n or LimitNOFILE=)"
            );
        }
        ConnectionLimits {
            max,
            per_ip: limits.max_connections_per_ip,
            idle: (limits.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(limits.idle_timeout_secs)),
            open: AtomicUsize::new(0),
            by_source: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// A slot for a connection from `peer`, or the cap it is over.
    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Slot, ConnectionRefusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ConnectionRefusal::MaxConnections);
        }
        let source = match (self.per_ip, peer) {
            (0, _) | (_, None) => None,
            (per_ip, Some(ip)) => {
                let source = source_of(ip);
                let mut by_source = self
                    .by_source
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let n = by_source.entry(source).or_insert(0);
                if *n >= per_ip {
                    drop(by_source);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(ConnectionRefusal::MaxConnectionsPerIp);
                }
                *n += 1;
                Some(source)
            }
        };
        self.metrics.connection_open(true);
        Ok(Slot {
            limits: self.clone(),
            source,
        })
    }
}

/// The address a per-address cap counts: an IPv4 address (also when IPv4-mapped), or an IPv6
/// address's /64, which one host usually holds whole.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force (`None`:
/// unlimited).
fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limit = raised;
        }
    }
    limit.current
}

/// A connection's place under the caps, given back when the connection ends.
struct Slot {
    limits: Arc<ConnectionLimits>,
    source: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(source) = self.source {
            let mut by_source = self
                .limits
                .by_source
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = by_source.get_mut(&source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_source.remove(&source);
                }
            }
        }
        self.limits.open.fetch_sub(1, Ordering::AcqRel);
        self.limits.metrics.connection_open(false);
    }
}

/// The acceptor: admits a connection under the caps (closing it at once otherwise), sets
/// `TCP_NODELAY` (a response must not wait for the client's delayed ACK of the previous one on a
/// keep-alive connection), and watches it for idling. TLS, when configured, runs over it.
#[derive(Clone)]
pub struct LimitAcceptor {
    limits: Arc<ConnectionLimits>,
}

impl LimitAcceptor {
    /// An acceptor enforcing `limits`.
    pub fn new(limits: Arc<ConnectionLimits>) -> Self {
        LimitAcceptor { limits }
    }
}

impl<S> Accept<TcpStream, S> for LimitAcceptor {
    type Stream = Bounded;
    type Service = S;
    type Future = Ready<io::Result<(Bounded, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer = stream.peer_addr().ok().map(|a| a.ip());
        let slot = match self.limits.admit(peer) {
            Ok(slot) => slot,
            Err(why) => {
                self.limits.metrics.connection_refused(why);
                // Dropping the stream closes it.
                return std::future::ready(Err(io::Error::other("connection limit reached")));
            }
        };
        let stream = stream.set_nodelay(true).map(|()| Bounded {
            inner: stream,
            idle: self.limits.idle.map(|after| Idle {
                after,
                last: Instant::now(),
                timer: Box::pin(tokio::time::sleep(after)),
                metrics: self.limits.metrics.clone(),
            }),
            _slot: slot,
        });
        std::future::ready(stream.map(|s| (s, service)))
    }
}

/// An admitted connection: holds its slot and fails its reads and writes once idle too long.
pub struct Bounded {
    inner: TcpStream,
    idle: Option<Idle>,
    _slot: Slot,
}

/// The idle timer: `timer` fires at or before `last + after`; when it fires early (bytes moved
/// since it was set), it is set again, so moving bytes costs only reading the clock.
struct Idle {
    after: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    metrics: Arc<Metrics>,
}

impl Idle {
    /// Whether the connection has idled too long (registering a wake-up for when it would).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last + self.after;
            if due <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
    }
}

impl Bounded {
    /// Notes progress, or turns a wait past the idle timeout into an error that ends the
    /// connection.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<T>>,
        moved: bool,
    ) -> Poll<io::Result<T>> {
        let Some(idle) = self.idle.as_mut() else {
            return poll;
        };
        match poll {
            Poll::Ready(r) => {
                if moved {
                    idle.last = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending if idle.expired(cx) => {
                idle.metrics.connection_idle_closed();
                // Counted once: the connection ends with this error.
                self.idle = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle past limits.idle_timeout_secs",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        let moved = buf.filled().len() > before;
        this.watch(cx, poll, moved)
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        this.watch(cx, poll, moved)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let moved = matches!(poll, Poll::Ready(Ok(n)) if n > 0);
        this.watch(cx, poll, moved)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_address_cap_counts_ipv6_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_of(a), source_of(b));
        assert_ne!(source_of(a), source_of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(source_of(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
