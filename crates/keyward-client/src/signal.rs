//! Graceful shutdown for services built on this crate (and for `keyward serve` itself).

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, whichever comes first; on SIGINT alone where SIGTERM
/// cannot be watched.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
