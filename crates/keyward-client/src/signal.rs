//! Graceful shutdown for services built on this crate (and for `keyward serve` itself).

use std::future::Future;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
///
/// The handlers are installed when this is *called*, not when the future is first polled: a
/// server calls it before it announces that it listens, so a SIGTERM sent the moment after the
/// announcement is a clean shutdown and not the default action (death by signal). Call it inside
/// a Tokio runtime. A signal that cannot be watched is ignored; the other still counts.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let term = signal(SignalKind::terminate()).ok();
    let int = signal(SignalKind::interrupt()).ok();
    async move {
        tokio::select! {
            () = received(term) => {}
            () = received(int) => {}
        }
    }
}

async fn received(s: Option<Signal>) {
    match s {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
