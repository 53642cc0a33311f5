//! `PgStore`: the Store implementation over PostgreSQL, for several stateless Keyward nodes on
//! one database. Same traits, same records, same row mapping (`crate::columns`) as
//! [`SqliteStore`](crate::SqliteStore); the SQL of each concern lives in the file named like its
//! SQLite twin.
//!
//! Driver: tokio-postgres with a deadpool pool. It is async (a read is a network round trip and
//! must not block a worker), supports multi-host URLs with `target_session_attrs=read-write`
//! (failover to a promoted standby) and LISTEN/NOTIFY; sqlx would link a second SQLite library
//! beside rusqlite.
//!
//! Durability: a write is one transaction committed with the server's `synchronous_commit`
//! (on by default; with a synchronous standby the commit waits for it), so a 2xx answer means the
//! change is on disk (and on the standby). The audit event of a write is inserted in the same
//! transaction into `audit_pending` and linked into the hash chain later by one node at a time
//! (audit.rs): writes on different nodes never wait on a shared chain head.

mod audit;
mod events;
mod iam;
mod keys;
mod kmip;
mod rewrap;
mod schema;

pub use audit::{verify_audit_chain_pg, verify_audit_trail_pg};

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use keyward_core::{AuditEvent, StoreError};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::audit::Changed;

/// How long a request waits for a pooled connection, or for a new one to be made, before it
/// fails with 503 (the database is gone or overloaded): a bounded wait, never a hang.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Statements that run longer than this are cancelled by the server.
const STATEMENT_TIMEOUT_MS: u64 = 15_000;

/// Where and how to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// A libpq connection URL or key=value string; may name several hosts.
    pub url: String,
    /// Connections this node keeps at most.
    pub pool_size: usize,
}

impl std::fmt::Debug for PgOptions {
    // The URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

/// PostgreSQL-backed store. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// Ticks after this process commits lifecycle events, so event streams wake at once
    /// (streams also poll, for events other nodes commit).
    events: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("hosts", &self.config.get_hosts().len())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

/// Parses a connection URL. The error never repeats the URL (it may hold a password).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        StoreError::Unavailable(format!("the database URL is not valid: {e}"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(POOL_WAIT);
    }
    if config.get_application_name().is_none() {
        config.application_name("keyward");
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let options = format!(
        "{} -c statement_timeout={STATEMENT_TIMEOUT_MS}",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim());
    Ok(config)
}

impl PgStore {
    /// Connects, migrates the schema (under an advisory lock) and builds the pool. Pooled
    /// connections are made on first use, on the runtime that uses them.
    pub async fn connect(options: &PgOptions) -> Result<Self, StoreError> {
        let config = parse_url(&options.url)?;
        {
            let mut client = connect_one(&config).await?;
            schema::migrate(&mut client).await?;
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Unavailable(format!("building the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            config,
            events: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A receiver that changes whenever this process commits lifecycle events.
    pub fn event_notifications(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub(crate) fn events_written(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("the database cannot be reached: {e}")))
    }

    /// The connection settings (for a dedicated connection, e.g. LISTEN).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Waits for and takes the cluster-wide lock of a node's first start (bootstrap, the
    /// token-signing key): of several nodes starting on an empty database, one makes the first
    /// instance and the signing key and the others then find them. Held until the guard drops.
    pub async fn first_start_lock(&self) -> Result<ClusterLock, StoreError> {
        let client = connect_one(&self.config).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&FIRST_START_LOCK])
            .await
            .map_err(pg_error)?;
        Ok(ClusterLock { _client: client })
    }
}

/// A change another node committed to something this node caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key's row changed (its state, versions, policies, ring) or was removed.
    Key(keyward_core::KeyId),
    /// Identities, API keys, access policies or authorizations changed.
    Access,
    /// The listening connection was lost and made again: changes in between may have been
    /// missed, so drop everything cached.
    Missed,
}

impl PgStore {
    /// Listens for committed changes (every node's, this one's too) and calls `on_change` for
    /// each, until the task is aborted. A lost connection is made again (after a second), with
    /// [`Change::Missed`] first. The cache TTLs remain the bound when notifications are late.
    pub fn listen_changes(
        &self,
        on_change: impl Fn(Change) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let config = self.config.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    on_change(Change::Missed);
                }
                first = false;
                if let Err(e) = listen_once(&config, &on_change).await {
                    tracing::warn!(error = %e, "listening for changes of other nodes failed");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }
}

/// One LISTEN connection, until it fails.
async fn listen_once(
    config: &tokio_postgres::Config,
    on_change: &(impl Fn(Change) + Send + Sync),
) -> Result<(), StoreError> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(NoTls).await.map_err(connect_error)?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection is driven by polling `messages`: issue LISTEN while polling it.
    let listen = client.batch_execute("LISTEN keyward_keys; LISTEN keyward_access");
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => {
                done.map_err(pg_error)?;
                listening = true;
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    match n.channel() {
                        "keyward_keys" => {
                            if let Ok(id) = n.payload().parse() {
                                on_change(Change::Key(id));
                            }
                        }
                        _ => on_change(Change::Access),
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(pg_error(e)),
                None => return Err(StoreError::Unavailable("listening connection closed".into())),
            }
        }
    }
}

/// `pg_advisory_lock` key of a node's first start ("keyward" in ASCII, then 4).
const FIRST_START_LOCK: i64 = 0x6b65_7977_6172_6404;

/// A session-level advisory lock, held on its own connection: dropping it closes the
/// connection, which releases the lock (also when the process dies).
pub struct ClusterLock {
    _client: tokio_postgres::Client,
}

/// One connection outside the pool, its driver spawned on the current runtime.
pub(crate) async fn connect_one(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(connect_error)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// A connection failure, said plainly (no URL: it may hold a password).
fn connect_error(e: tokio_postgres::Error) -> StoreError {
    let why = match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD => {
            "password authentication failed (check the user and password)".to_owned()
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            format!("the database refused the user: {e}")
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => {
            "the database does not exist (create it first: createdb)".to_owned()
        }
        _ => e.to_string(),
    };
    StoreError::Unavailable(format!("cannot connect to PostgreSQL: {why}"))
}

/// Maps a database error: a constraint or a lost serialization race is a [`StoreError::Conflict`]
/// (as SQLite's constraint errors are); a broken connection or an overloaded server is
/// [`StoreError::Unavailable`].
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if c.code().starts_with("23") => StoreError::Conflict,
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE => StoreError::Conflict,
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => StoreError::Conflict,
        Some(c) if c.code().starts_with("22") => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// A transaction that carries the audit event of the write it makes. The one way an audited
/// write reaches PostgreSQL: [`Audited::commit`] appends the event (when the write changed
/// something) in the same transaction, so the change and its event commit together or not at
/// all. Dropped without commit, it rolls back.
pub(crate) struct Audited<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    event: &'a AuditEvent,
}

impl<'a> Audited<'a> {
    /// Begins a transaction on `client` for a write that `event` describes.
    pub(crate) async fn begin(
        client: &'a mut Object,
        event: &'a AuditEvent,
    ) -> Result<Self, StoreError> {
        let tx = client.transaction().await.map_err(pg_error)?;
        Ok(Audited { tx, event })
    }

    /// Commits `out`'s write, with the event when `out` changed something.
    pub(crate) async fn commit<T: Changed>(self, out: T) -> Result<T, StoreError> {
        if out.changed() {
            audit::pend(&self.tx, self.event).await?;
        }
        self.tx.commit().await.map_err(pg_error)?;
        Ok(out)
    }
}

impl<'a> std::ops::Deref for Audited<'a> {
    type Target = deadpool_postgres::Transaction<'a>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}
