//! Keyward's runtime: everything a Keyward process does besides HTTP. It reads the configuration
//! (parsed with no I/O, then validated), opens custody and the store in the data directory, runs
//! the first start (instance, administrator API key, `bootstrap.json`) and loads the
//! token-signing key, and runs the background work: the scheduler, audit checkpoints and export
//! sinks, webhook delivery, and offline master-key rotation. Every outbound request goes through
//! one signed-POST sender ([`sender::WebhookSender`]) behind the egress guard ([`egress`]).
//!
//! It must not know HTTP routes, request extraction or error bodies (that is keyward-server), and
//! holds no key rule (that is keyward-core): it wires the core's services to their backends and
//! drives them off the request path. Only [`open_store`] names the concrete store.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod archive;
pub mod archive_s3;
pub mod audit;
pub mod bootstrap;
pub mod config;
pub mod egress;
pub mod keygen;
pub mod metrics;
pub mod recovery;
pub mod rotation;
pub mod scheduler;
pub mod sender;
pub mod startup;
pub mod webhooks;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keyward_core::{
    AuditStore, Custody, KeyService, KmipStore, RewrapStore, Secret, Store, SystemClock,
};
use keyward_custody::SoftwareCustody;
use keyward_iam::TokenIssuer;
use keyward_store::{PgStore, SqliteStore};

pub use config::ServerConfig;
use metrics::Metrics;
use sender::WebhookSender;

/// How often a node links pending audit events into the chain on PostgreSQL (one node at a
/// time; the others skip).
const LINK_INTERVAL: Duration = Duration::from_millis(200);

/// The store's faces, each behind its trait.
pub struct Stores {
    /// Keys, instances, identities, registrations and events.
    pub store: Arc<dyn Store>,
    /// The audit trail: queries, checkpoints, export cursors.
    pub trail: Arc<dyn AuditStore>,
    /// KMIP adapters, certificates and objects.
    pub kmip: Arc<dyn KmipStore>,
    /// Wrapped material by wrapping key (master key rotation).
    pub rewrap: Arc<dyn RewrapStore>,
    /// Changes whenever this process commits lifecycle events.
    pub event_notifications: tokio::sync::watch::Receiver<u64>,
    /// The PostgreSQL store, when that is the backend: its own background work (linking the
    /// audit chain, cache invalidation across nodes) starts with the rest.
    pub postgres: Option<Arc<PgStore>>,
}

impl Stores {
    /// On PostgreSQL, the cluster-wide lock of a node's first start (see
    /// [`PgStore::first_start_lock`]); SQLite has one process per data directory.
    pub async fn first_start_lock(&self) -> anyhow::Result<Option<keyward_store::ClusterLock>> {
        Ok(match &self.postgres {
            Some(pg) => Some(pg.first_start_lock().await?),
            None => None,
        })
    }
}

/// Opens the store `config` names: SQLite in the data directory (created if needed), or the
/// PostgreSQL database (migrated if needed; nothing of the store is written to the data
/// directory then).
pub async fn open_store(config: &ServerConfig) -> anyhow::Result<Stores> {
    if let Some(options) = config.store.postgres()? {
        let pg = Arc::new(
            PgStore::connect(&options)
                .await
                .context("opening the PostgreSQL store")?,
        );
        return Ok(Stores {
            event_notifications: pg.event_notifications(),
            store: pg.clone(),
            trail: pg.clone(),
            kmip: pg.clone(),
            rewrap: pg.clone(),
            postgres: Some(pg),
        });
    }
    let data_dir = &config.data_dir;
    let sqlite = Arc::new(
        SqliteStore::open_with(data_dir, config.store.quick_check()?)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    Ok(Stores {
        event_notifications: sqlite.event_notifications(),
        store: sqlite.clone(),
        trail: sqlite.clone(),
        kmip: sqlite.clone(),
        rewrap: sqlite,
        postgres: None,
    })
}

/// The custody backend `config` names. `create` makes a software keystore when there is none
/// (the server's first start); `keyward audit verify` opens an existing one only.
pub fn open_custody(config: &ServerConfig, create: bool) -> anyhow::Result<Arc<dyn Custody>> {
    Ok(match config.custody.pkcs11()? {
        None => {
            let unseal = config.custody.unseal_secret()?;
            if !create {
                let path = config.data_dir.join(keyward_custody::KEYSTORE_FILE);
                anyhow::ensure!(
                    path.exists(),
                    "no software keystore at {} (use --config for an HSM custody backend)",
                    path.display()
                );
            }
            Arc::new(SoftwareCustody::open_or_create_with(&config.data_dir, unseal.as_ref())?.0)
        }
        Some(hsm) => Arc::new(
            keyward_custody_pkcs11::Pkcs11Custody::open(&hsm)
                .context("opening the PKCS#11 custody backend")?,
        ),
    })
}

/// A data directory opened: config, custody, store, the key service over them, the
/// token-signing key and the metrics registry. Serving it is keyward-server's job.
pub struct Runtime {
    /// The validated configuration.
    pub config: ServerConfig,
    /// The key service (with the store and custody it runs on).
    pub keys: KeyService,
    /// The store's faces.
    pub stores: Stores,
    /// Issues access tokens (its key is stored wrapped by custody).
    pub issuer: TokenIssuer,
    /// Prometheus metrics: the background work reports here, the server renders them.
    pub metrics: Arc<Metrics>,
    /// The bearer token `/metrics` requires, if configured.
    pub metrics_token: Option<Secret>,
    /// Every outbound webhook POST goes through this.
    pub sender: WebhookSender,
}

/// Creates the data directory if needed and makes it owner-only (0700). A directory whose mode
/// cannot be set is an error, not a warning (issue 18, item 12): it holds the keystore and the
/// database, and serving from a directory others may read is what the mode is there to prevent.
fn private_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "making data directory {} owner-only (chmod 0700); fix its ownership or choose \
             another data_dir",
            dir.display()
        )
    })
}

impl Runtime {
    /// Validates `config`, creates the data directory (0700), opens custody and the store, and
    /// loads (or creates) the token-signing key. Nothing runs yet.
    pub async fn open(config: ServerConfig) -> anyhow::Result<Self> {
        config.validate()?;
        // Before anything is created: an install missing its database, or owned by another
        // user, is refused (issue 18, items 18 and 20).
        startup::check_data_dir(&config)?;
        private_data_dir(&config.data_dir)?;
        // The store first: whether it holds records decides whether a missing keystore may be
        // created (a new install) or must be restored (issue 18, item 19).
        let stores = open_store(&config).await?;
        startup::check_keystore_present(&config, &stores.store).await?;
        let custody = open_custody(&config, true)?;
        startup::check_custody_matches(&stores.store, &custody).await?;
        if config.custody.backend == "software"
            && keyward_custody::keystore_state(&config.data_dir)?
                == keyward_custody::KeystoreState::Plaintext
        {
            // Plaintext custody stays for development (issue 18, item 17).
            tracing::warn!(
                keystore = %config.data_dir.join(keyward_custody::KEYSTORE_FILE).display(),
                "the software keystore is not sealed: whoever reads the data directory holds \
                 every key. For anything but development, seal it (`keyward custody seal`) and \
                 start with --unseal-key-file, or use the PKCS#11 backend"
            );
        }
        let metrics_token = match &config.metrics.bearer_token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("reading metrics.bearer_token_file {}", path.display())
                })?;
                let token = text.trim();
                anyhow::ensure!(!token.is_empty(), "metrics.bearer_token_file is empty");
                Some(Secret::new(token.as_bytes().to_vec()))
            }
        };
        let issuer = {
            let _first_start = stores.first_start_lock().await?;
            bootstrap::token_issuer(&stores.store, &custody, config.token_ttl_secs).await?
        };
        let mut keys = KeyService::new(
            stores.store.clone(),
            custody,
            Arc::new(SystemClock),
            config.lifecycle(),
        )
        .with_transit_keygen(Arc::new(keygen::PooledKeygen::new(
            config.limits.import_token_threads,
        )));
        if config.audit.aggregate_crypto {
            // Instance ids as events name them (validated as ids above).
            let only = config
                .audit
                .aggregate_crypto_instances
                .iter()
                .filter_map(|i| i.parse::<keyward_core::InstanceId>().ok())
                .map(|i| i.to_string());
            keys =
                keys.with_crypto_aggregation(Arc::new(keyward_core::CryptoAggregation::new(only)));
            tracing::info!(
                "audit: successful wraps, unwraps and rewraps are aggregated per caller, key and \
                 second ([audit] aggregate_crypto); a crash loses up to about a second of them"
            );
        }
        let sender = WebhookSender::new(config.webhooks.allow_private_addresses)
            .context("building the webhook HTTP client")?;
        Ok(Runtime {
            config,
            keys,
            stores,
            issuer,
            metrics: Arc::new(Metrics::new()?),
            metrics_token,
            sender,
        })
    }

    /// The first start, once the server knows its `url`: creates the first instance and its
    /// administrator (writing `bootstrap.json`) on an empty store, and gives the administrator
    /// its access. Returns the bootstrap file's path when it was (re)written.
    pub async fn bootstrap(&self, url: &str) -> anyhow::Result<Option<PathBuf>> {
        let _first_start = self.stores.first_start_lock().await?;
        let file = bootstrap::first_start(self.keys.store(), &self.config.data_dir, url).await?;
        bootstrap::ensure_admin_access(self.keys.store(), self.keys.custody()).await?;
        Ok(file)
    }

    /// Starts the background work: the scheduler (when enabled), the audit checkpointer, one
    /// exporter per audit sink, the audit archiver and pruner, and webhook delivery.
    pub fn start_background(&self) -> anyhow::Result<Background> {
        let config = &self.config;
        let trail = &self.stores.trail;
        let mut tasks = Vec::new();
        if config.scheduler.enabled {
            tasks.push(scheduler::spawn(
                self.keys.clone(),
                config.scheduler(),
                self.metrics.clone(),
            ));
        }
        tasks.push(audit::spawn_checkpointer(
            trail.clone(),
            self.keys.custody().clone(),
            Duration::from_secs(config.audit.checkpoint_interval_secs),
            config.audit.checkpoint_every_events,
        ));
        let poll = Duration::from_millis(config.audit.export_poll_ms);
        let mut sinks = Vec::new();
        for c in &config.audit.jsonl {
            sinks.push(audit::ExportSink::jsonl(c)?);
        }
        for c in &config.audit.webhook {
            sinks.push(audit::ExportSink::webhook(c, self.sender.clone())?);
        }
        let export_holder = uuid::Uuid::new_v4().to_string();
        let (stop_exports, stopped) = tokio::sync::watch::channel(false);
        let (stop_flusher, flusher_stopped) = tokio::sync::watch::channel(false);
        let flusher = config
            .audit
            .aggregate_crypto
            .then(|| audit::spawn_aggregation_flusher(self.keys.clone(), flusher_stopped));
        let mut exporters = Vec::new();
        if let Some(store) = archive::open_archive(config)? {
            let poll = Duration::from_millis(config.audit.archive_poll_ms);
            exporters.push(archive::spawn_archiver(
                trail.clone(),
                self.keys.custody().clone(),
                self.metrics.clone(),
                archive::ArchiveSettings {
                    store,
                    segment_events: config.audit.segment_events,
                    segment_max: Duration::from_secs(config.audit.segment_max_secs),
                    poll,
                    catch_up_events: config.audit.catch_up_events,
                },
                export_holder.clone(),
                stopped.clone(),
            ));
            exporters.push(archive::spawn_pruner(
                trail.clone(),
                archive::RetentionSettings {
                    retain_events: config.audit.retain_events,
                    retain: (config.audit.retain_days > 0).then(|| {
                        Duration::from_secs(config.audit.retain_days.saturating_mul(86_400))
                    }),
                    batch: config.audit.prune_batch,
                    poll,
                    sinks: sinks.iter().map(|s| s.cursor_name().to_owned()).collect(),
                },
                stopped.clone(),
            ));
        }
        for sink in sinks {
            exporters.push(audit::spawn_exporter(
                trail.clone(),
                self.metrics.clone(),
                sink,
                export_holder.clone(),
                poll,
                config.audit.catch_up_events,
                stopped.clone(),
            ));
        }
        if let Some(pg) = &self.stores.postgres {
            tasks.push(audit::spawn_linker(pg.clone(), LINK_INTERVAL));
        }
        tasks.push(webhooks::spawn(
            self.keys.clone(),
            config.region.clone(),
            self.sender.clone(),
            self.stores.event_notifications.clone(),
        ));
        Ok(Background {
            tasks,
            flusher: flusher.map(|f| (f, stop_flusher, self.keys.clone())),
            exporters,
            stop_exports,
            export_holder,
            trail: trail.clone(),
            custody: self.keys.custody().clone(),
        })
    }
}

/// The background work of a [`Runtime`], running until [`Background::stop`].
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The flusher of aggregated audit events (`[audit] aggregate_crypto`), stopped first and
    /// gracefully (a flush in progress finishes), then flushed once more.
    flusher: Option<(
        tokio::task::JoinHandle<()>,
        tokio::sync::watch::Sender<bool>,
        KeyService,
    )>,
    /// The export sinks, stopped gracefully: each finishes the delivery it is in and moves its
    /// cursor past it before this process gives up its leases.
    exporters: Vec<tokio::task::JoinHandle<()>>,
    stop_exports: tokio::sync::watch::Sender<bool>,
    /// Who this process is when it holds export leases (released at stop).
    export_holder: String,
    trail: Arc<dyn AuditStore>,
    custody: Arc<dyn Custody>,
}

impl Background {
    /// Records the aggregated audit events still counted, stops every task, gives up this
    /// process's export leases (so another process takes the sinks over at once) and signs a
    /// last audit checkpoint.
    pub async fn stop(self) {
        if let Some((flusher, stop, keys)) = self.flusher {
            stop.send_replace(true);
            let _ = flusher.await;
            if let Err(e) = keys.flush_aggregated(None).await {
                tracing::error!(error = %e, "audit: the aggregated events could not be recorded at shutdown");
            }
        }
        for task in &self.tasks {
            task.abort();
        }
        // Up to 5 s for a sink to finish the delivery it is in (a webhook's POST has its own
        // timeout); one still stuck is aborted, and the next holder may deliver its batch again.
        self.stop_exports.send_replace(true);
        for exporter in self.exporters {
            let abort = exporter.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), exporter)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Err(e) = self.trail.release_export_leases(&self.export_holder).await {
            tracing::warn!(error = %e, "releasing export leases at shutdown failed");
        }
        if let Err(e) = audit::checkpoint(self.trail.as_ref(), self.custody.as_ref()).await {
            tracing::warn!(error = %e, "audit checkpoint at shutdown failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("keyward-data-dir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_data_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(mode & 0o777, 0o700);
    }

    /// See: issue 18, item 12. `/proc/sys` exists and refuses a chmod, even to root.
    #[test]
    fn a_data_dir_whose_mode_cannot_be_set_is_an_error() {
        let err = private_data_dir(std::path::Path::new("/proc/sys")).unwrap_err();
        assert!(format!("{err:#}").contains("owner-only"), "{err:#}");
    }
}
