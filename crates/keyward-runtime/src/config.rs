//! Server configuration: parsed from TOML and flags with no I/O, then resolved at start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `keyward serve` needs. Defaults are the embedded ones: SQLite and software custody
/// in the data directory, plain HTTP on loopback.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where the database, keystore and bootstrap file live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain; with `tls_key`, serves HTTPS (TLS 1.2 and 1.3).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Lifetime of access tokens, in seconds (IBM IAM: 3600).
    pub token_ttl_secs: i64,
    /// Region used in key CRNs.
    pub region: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a verified root key serves wrap and unwrap from memory, in milliseconds (0: off).
    /// Changes made through this server apply at once; through another server on the same
    /// database, within this.
    pub key_cache_ttl_ms: u64,
    /// How new keys and key versions are named: `"time-ordered"` (UUIDv7, the default: creation
    /// is twice as fast with many keys, and the id shows its creation time) or `"random"`
    /// (UUIDv4, as Key Protect's).
    pub key_ids: KeyIds,
    /// Key lifecycle rules.
    pub lifecycle: LifecycleSection,
    /// The background scheduler.
    pub scheduler: SchedulerSection,
    /// How long a caller's API key state and grants are kept in memory, in milliseconds (at
    /// most 1000): a revoked key or removed authorization takes effect within this on every
    /// process.
    pub access_cache_ttl_ms: u64,
    /// Per-identity request rate limits.
    pub rate_limit: RateLimitSection,
    /// Where the master keys live: the software keystore (default) or HSMs over PKCS#11.
    pub custody: CustodySection,
    /// Whether this listener is a private endpoint (for instances whose allowedNetwork policy is
    /// `private-only`). Keyward has one listener per process; mark it private when it is reached
    /// only from your private network.
    pub private_endpoint: bool,
    /// The audit trail: checkpoints and export sinks.
    pub audit: AuditSection,
    /// The Prometheus endpoint.
    pub metrics: MetricsSection,
    /// Where outbound webhooks (event subscriptions, audit webhook sinks) may send.
    pub webhooks: WebhooksSection,
    /// Where records and the audit trail live: SQLite in the data directory (default) or a
    /// PostgreSQL database shared by several nodes.
    pub store: StoreSection,
    /// Bounds on connections and on CPU-heavy work.
    pub limits: LimitsSection,
    /// Per-source limits on the token exchange and on requests whose authentication is
    /// refused, and how their refusals are sampled in the audit trail.
    pub ip_limits: IpLimitsSection,
    /// The KMIP listener (off unless `listen`, `tls_cert` and `tls_key` are set).
    pub kmip: KmipSection,
}

/// `key_ids`: how new keys and key versions are named (see [`keyward_core::IdOrder`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyIds {
    /// UUIDv7.
    #[default]
    TimeOrdered,
    /// UUIDv4.
    Random,
}

/// `[kmip]`: the KMIP listener. Clients authenticate with a certificate registered on a KMIP
/// adapter (`keyward kmip certs add`); TLS 1.2 and 1.3, client certificate required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KmipSection {
    /// Address to listen on (the KMIP port is 5696); none: no KMIP listener.
    pub listen: Option<SocketAddr>,
    /// The server's PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// The server's PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Largest request message, in bytes.
    pub max_message_bytes: usize,
    /// Open KMIP connections at most.
    pub max_connections: usize,
    /// Open KMIP connections per client certificate at most.
    pub max_connections_per_client: usize,
    /// A connection idle this long between requests is closed, in seconds.
    pub idle_timeout_secs: u64,
    /// A request (or a TLS handshake) must arrive whole within this, in seconds.
    pub read_timeout_secs: u64,
}

impl Default for KmipSection {
    fn default() -> Self {
        KmipSection {
            listen: None,
            tls_cert: None,
            tls_key: None,
            max_message_bytes: 1 << 20,
            max_connections: 1024,
            max_connections_per_client: 64,
            idle_timeout_secs: 120,
            read_timeout_secs: 10,
        }
    }
}

/// `[limits]`: what one client can hold of the server. A slow or idle connection holds a socket
/// and a task; without bounds, 1 100 connections that sent half a request line made `/healthz`
/// time out for 45 s (issue 18).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Time a client has to send a request's headers, in milliseconds; on HTTP/1.1 it also
    /// closes a keep-alive connection that starts no new request within it. 0 turns it off.
    pub header_read_timeout_ms: u64,
    /// A connection on which no byte moved either way for this long is closed, in seconds (HTTP/2
    /// connections, stalled bodies and readers). 0 turns it off.
    pub idle_timeout_secs: u64,
    /// Open connections at most; one more is closed at once (and counted in `/metrics`). Also
    /// kept below the process's open-file limit, which is raised to its hard limit at start.
    pub max_connections: usize,
    /// Open connections from one IPv4 address or IPv6 /64 at most; 0 (default) for no such
    /// limit. Leave it off behind a load balancer or proxy, whose connections share its address.
    pub max_connections_per_ip: usize,
    /// RSA-4096 transit keys (`POST /api/v2/import_token`) generated at once, on threads apart
    /// from the ones serving requests; further requests wait for a turn.
    pub import_token_threads: usize,
    /// Event streams (`GET /api/v2/event_stream`) one identity may hold open at once; one more
    /// is answered 429. 0: no limit.
    pub event_streams_per_identity: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            header_read_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            max_connections: 4096,
            max_connections_per_ip: 0,
            import_token_threads: 2,
            event_streams_per_identity: 8,
        }
    }
}

/// `[ip_limits]`: per client address (IPv4, or IPv6 /64), per process, answered 429 beyond. On
/// by default, with bursts no client that logs in and keeps its token reaches; a refused
/// request is audited at most once per source per `audit_interval_secs` (the event says how
/// many it stands for). Authenticated requests are not counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IpLimitsSection {
    /// `POST /identity/token` (any grant, any outcome) per second per source; 0: off.
    pub token_per_second: u32,
    /// Token requests a source may make at once above the sustained rate.
    pub token_burst: u32,
    /// Requests with a missing, invalid, expired or revoked token per second per source; 0: off.
    pub unauthenticated_per_second: u32,
    /// Such requests a source may make at once above the sustained rate.
    pub unauthenticated_burst: u32,
    /// At most one audit event per source per this many seconds for refused unauthenticated
    /// requests (at least 1).
    pub audit_interval_secs: u64,
    /// How long a request over its source's limit waits before its 429 goes out (as nginx's
    /// `limit_req` delays excess requests): a flooding client then waits on its connections
    /// instead of sending, and the flood costs the server one sleeping task per connection
    /// rather than a core. 0: answer at once.
    pub refusal_delay_ms: u64,
    /// Refusals held at once across all sources; beyond it a refusal is answered at once, so
    /// the holding never grows with the flood.
    pub max_delayed_refusals: usize,
}

impl Default for IpLimitsSection {
    fn default() -> Self {
        IpLimitsSection {
            token_per_second: 10,
            token_burst: 100,
            unauthenticated_per_second: 10,
            unauthenticated_burst: 100,
            audit_interval_secs: 10,
            refusal_delay_ms: 1000,
            max_delayed_refusals: 1024,
        }
    }
}

/// `[store]`: the database.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// `sqlite` (`keyward.db` in the data directory) or `postgres`.
    pub backend: String,
    /// PostgreSQL connection URL (libpq URL or key=value form; several hosts allowed, e.g.
    /// `postgres://keyward@db1,db2/keyward?target_session_attrs=read-write`).
    pub url: Option<String>,
    /// The name of an environment variable holding the URL instead (keeps a password out of
    /// this file).
    pub url_env: Option<String>,
    /// Connections this node keeps to PostgreSQL at most.
    pub pool_size: usize,
    /// SQLite: what every start checks with `PRAGMA quick_check` before it writes, refusing a
    /// corrupted database: `records` (default: every table but the audit trail, a cost that
    /// grows with keys and identities, not traffic), `full` (the whole file) or `off`.
    /// `keyward store check` runs the full `integrity_check` offline.
    pub quick_check: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: "sqlite".into(),
            url: None,
            url_env: None,
            pool_size: 16,
            quick_check: "records".into(),
        }
    }
}

impl std::fmt::Debug for StoreSection {
    // The URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSection")
            .field("backend", &self.backend)
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("url_env", &self.url_env)
            .field("pool_size", &self.pool_size)
            .field("quick_check", &self.quick_check)
            .finish()
    }
}

impl StoreSection {
    /// The `quick_check` setting.
    pub fn quick_check(&self) -> Result<keyward_store::QuickCheck, ConfigError> {
        use keyward_store::QuickCheck;
        match self.quick_check.as_str() {
            "records" => Ok(QuickCheck::Records),
            "full" => Ok(QuickCheck::Full),
            "off" => Ok(QuickCheck::Off),
            other => Err(ConfigError::Invalid(format!(
                "store.quick_check: records, full or off, not {other:?}"
            ))),
        }
    }

    /// The PostgreSQL connection options when that backend is chosen (reads `url_env`).
    pub fn postgres(&self) -> Result<Option<keyward_store::PgOptions>, ConfigError> {
        match self.backend.as_str() {
            "sqlite" => {
                if self.url.is_some() || self.url_env.is_some() {
                    return Err(ConfigError::Invalid(
                        "store.url and store.url_env need store.backend = \"postgres\"".into(),
                    ));
                }
                Ok(None)
            }
            "postgres" => {
                let url = match (&self.url, &self.url_env) {
                    (Some(u), None) => u.clone(),
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        ConfigError::Invalid(format!(
                            "store.url_env: environment variable {var} is not set"
                        ))
                    })?,
                    _ => {
                        return Err(ConfigError::Invalid(
                            "store: exactly one of url and url_env for the postgres backend".into(),
                        ));
                    }
                };
                if !(1..=1000).contains(&self.pool_size) {
                    return Err(ConfigError::Invalid(
                        "store.pool_size must be between 1 and 1000".into(),
                    ));
                }
                Ok(Some(keyward_store::PgOptions {
                    url,
                    pool_size: self.pool_size,
                }))
            }
            other => Err(ConfigError::Invalid(format!(
                "store.backend: sqlite or postgres, not {other:?}"
            ))),
        }
    }
}

/// `[audit]`: signed checkpoints of the audit chain's head, and where events are exported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Seconds between checkpoints (when events were added since the last one).
    pub checkpoint_interval_secs: u64,
    /// A checkpoint is also taken once this many events were added since the last one.
    pub checkpoint_every_events: u64,
    /// How often an idle export sink looks for new events, in milliseconds.
    pub export_poll_ms: u64,
    /// JSON Lines file sinks.
    pub jsonl: Vec<JsonlSinkSection>,
    /// Webhook sinks.
    pub webhook: Vec<WebhookSinkSection>,
    /// Whether closed ranges of the chain are written to archive segments (default true; events
    /// never archived are never pruned).
    pub archive: bool,
    /// Where archive segments go: default `<data_dir>/audit-archive` on SQLite; on PostgreSQL
    /// archiving needs this set, to a directory every node shares (one node writes at a time).
    pub archive_dir: Option<PathBuf>,
    /// An S3-compatible object store for archive segments instead of a directory.
    pub s3: Option<S3ArchiveSection>,
    /// Events per archive segment (at most).
    pub segment_events: u64,
    /// A segment with fewer events is written once the last one is this many seconds old.
    pub segment_max_secs: u64,
    /// The database keeps at most about this many of the newest events; older ones are
    /// pruned once archived and exported (0: no count rule).
    pub retain_events: u64,
    /// Events older than this many days are pruned once archived and exported (0: no age rule).
    pub retain_days: u64,
    /// Events deleted per prune transaction.
    pub prune_batch: u32,
    /// How often the archiver and the pruner look for work, in milliseconds.
    pub archive_poll_ms: u64,
    /// The archiver and the export sinks run at nice 19 until they are more than this many
    /// events behind the chain's head, then at the normal priority until caught up (0: always
    /// at the normal priority). Under a load that leaves no idle CPU this bounds their lag, and
    /// so the database.
    pub catch_up_events: u64,
    /// Successful wraps, unwraps and rewraps are counted per caller, key, key version and
    /// second, and recorded as one aggregated event per count at least every second, instead of
    /// one event per request (default false). Refusals, failures and every other action are
    /// recorded one by one all the same. The trade-off: a request answered before the next
    /// flush has no durable audit record yet, and a crash loses up to about a second of counts.
    pub aggregate_crypto: bool,
    /// With `aggregate_crypto`: only these instances (ids) are aggregated; empty: every one.
    pub aggregate_crypto_instances: Vec<String>,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            checkpoint_interval_secs: 60,
            checkpoint_every_events: 10_000,
            export_poll_ms: 500,
            jsonl: Vec::new(),
            webhook: Vec::new(),
            archive: true,
            archive_dir: None,
            s3: None,
            segment_events: 100_000,
            segment_max_secs: 3600,
            retain_events: 2_000_000,
            retain_days: 0,
            prune_batch: 5_000,
            archive_poll_ms: 1_000,
            catch_up_events: 200_000,
            aggregate_crypto: false,
            aggregate_crypto_instances: Vec::new(),
        }
    }
}

/// Where audit archive segments go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveTarget {
    /// A directory.
    Dir(PathBuf),
    /// An S3-compatible bucket; segments are staged in `staging` before their PUT.
    S3 {
        /// The bucket and how to reach it.
        s3: S3ArchiveSection,
        /// `<data_dir>/audit-staging`.
        staging: PathBuf,
    },
}

impl ServerConfig {
    /// Where this process archives the audit trail, if it does: `[audit.s3]`, `[audit]
    /// archive_dir`, or `<data_dir>/audit-archive` on SQLite (a PostgreSQL cluster needs an
    /// archive its nodes share, so it must be named).
    pub fn audit_archive(&self) -> Option<ArchiveTarget> {
        if !self.audit.archive {
            return None;
        }
        match (
            &self.audit.s3,
            &self.audit.archive_dir,
            self.store.backend.as_str(),
        ) {
            (Some(s3), _, _) => Some(ArchiveTarget::S3 {
                s3: s3.clone(),
                staging: self.data_dir.join("audit-staging"),
            }),
            (None, Some(d), _) => Some(ArchiveTarget::Dir(d.clone())),
            (None, None, "sqlite") => Some(ArchiveTarget::Dir(self.data_dir.join("audit-archive"))),
            (None, None, _) => None,
        }
    }
}

/// `[audit.s3]`: archive segments in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, ...).
/// Path-style requests; credentials from this section (never from the process environment,
/// so that what the server uses is what its config file says).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ArchiveSection {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix for the segments (e.g. `"cluster-a/"`; default none).
    #[serde(default)]
    pub prefix: String,
    /// The endpoint, e.g. `"https://minio.internal:9000"` (default: AWS's for `region`).
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// A file holding the secret access key (mode 0600, like the webhook secrets).
    pub secret_access_key_file: Option<PathBuf>,
    /// An environment variable holding the secret access key.
    pub secret_access_key_env: Option<String>,
    /// Whether a plain `http://` endpoint is allowed (default false).
    #[serde(default)]
    pub allow_http: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl std::fmt::Debug for S3ArchiveSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ArchiveSection")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// `[[audit.jsonl]]`: events appended to a file, one JSON object per line, rotated by size.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSinkSection {
    /// The sink's name (its export cursor is kept under it).
    pub name: String,
    /// The file written; rotated files get `.1`, `.2`, ... appended, oldest first.
    pub path: PathBuf,
    /// Size at which the file is rotated, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// `[[audit.webhook]]`: events POSTed in batches (a JSON array), signed like every outbound
/// webhook (`X-Keyward-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`), never
/// redirected, and to a public address unless `[webhooks] allow_private_addresses` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkSection {
    /// The sink's name (its export cursor is kept under it).
    pub name: String,
    /// Where batches are POSTed.
    pub url: String,
    /// A file holding the HMAC secret (never the secret itself in this file).
    pub secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the HMAC secret.
    pub secret_env: Option<String>,
    /// Most events per POST.
    #[serde(default = "default_batch")]
    pub batch: u32,
    /// Request timeout, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_batch() -> u32 {
    500
}

fn default_timeout_ms() -> u64 {
    5000
}

/// `[webhooks]`: where outbound webhooks (event subscriptions and audit webhook sinks) may send.
/// Any identity that may register on a key can subscribe a webhook, so by default a URL must
/// reach a public address: otherwise a tenant could make this server send requests into its own
/// network (loopback, private ranges, link-local such as a cloud metadata service).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksSection {
    /// Also allow loopback, private, link-local, shared (CGNAT), unique-local and other
    /// non-public addresses (for receivers on the same host or network as the server).
    pub allow_private_addresses: bool,
}

/// `[metrics]`: the Prometheus `GET /metrics` endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Whether `/metrics` is served.
    pub enabled: bool,
    /// When set, `/metrics` requires `Authorization: Bearer <the token in this file>`;
    /// otherwise it is open (it shows counts and latencies, never ids, names or material).
    pub bearer_token_file: Option<PathBuf>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            bearer_token_file: None,
        }
    }
}

/// `[lifecycle]`: Key Protect's timing rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSection {
    /// Minimum seconds between two manual rotations of a key (Key Protect: 3600).
    pub min_rotation_interval_secs: u64,
    /// Seconds after a disable before the key may be enabled (Key Protect: 30).
    pub enable_after_disable_secs: u64,
    /// Seconds after a delete during which the key may be restored (Key Protect: 30 days).
    pub restore_window_secs: u64,
    /// Seconds after a delete before the key may be purged by hand (Key Protect: 4 hours).
    pub purge_wait_secs: u64,
    /// Seconds after a delete before the scheduler purges the key (Key Protect: 90 days).
    pub auto_purge_after_secs: u64,
    /// Seconds a `setKeyForDeletion` stays valid (Key Protect: 7 days).
    pub dual_auth_window_secs: u64,
    /// Length of one month of a rotation policy, in seconds (30 days; tests use seconds).
    pub rotation_month_secs: u64,
}

const DAY_SECS: u64 = 24 * 3600;

impl Default for LifecycleSection {
    fn default() -> Self {
        LifecycleSection {
            min_rotation_interval_secs: 3600,
            enable_after_disable_secs: 30,
            restore_window_secs: 30 * DAY_SECS,
            purge_wait_secs: 4 * 3600,
            auto_purge_after_secs: 90 * DAY_SECS,
            dual_auth_window_secs: 7 * DAY_SECS,
            rotation_month_secs: 30 * DAY_SECS,
        }
    }
}

/// `[custody]`: the custody backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustodySection {
    /// `software` (the keystore in the data directory) or `pkcs11`.
    pub backend: String,
    /// PKCS#11 module path.
    pub module: Option<PathBuf>,
    /// A file holding the HSM user PIN (never the PIN itself in this file).
    pub pin_file: Option<PathBuf>,
    /// The name of an environment variable holding the PIN.
    pub pin_env: Option<String>,
    /// Label of the master key encryption key.
    pub mkek_label: String,
    /// Label of the record-signing key.
    pub skey_label: String,
    /// Label of the import key.
    pub ikey_label: String,
    /// Prefix of the transit key pairs' labels.
    pub tkek_label_prefix: String,
    /// How many RSA-4096 transit key pairs `keyward hsm init` creates in each token.
    pub tkek_count: usize,
    /// The HSMs, in failover order.
    pub hsm: Vec<HsmSection>,
    /// Software custody: a file holding the secret that unseals `keystore.json` (a base64
    /// 256-bit key, or a passphrase stretched with Argon2id); `--unseal-key-file` and the
    /// `KEYWARD_UNSEAL_KEY_FILE` environment variable name one too. Given at a first start, the
    /// new keystore is sealed under it.
    pub unseal_key_file: Option<PathBuf>,
    /// Software custody: the name of an environment variable holding the unseal secret itself.
    pub unseal_key_env: Option<String>,
}

/// `[[custody.hsm]]`: one HSM token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// The token's label.
    pub token_label: String,
}

impl Default for CustodySection {
    fn default() -> Self {
        CustodySection {
            backend: "software".into(),
            module: None,
            pin_file: None,
            pin_env: None,
            mkek_label: "keyward-mkek".into(),
            skey_label: "keyward-skey".into(),
            ikey_label: "keyward-ikey".into(),
            tkek_label_prefix: "keyward-tkek-".into(),
            tkek_count: 10,
            hsm: Vec::new(),
            unseal_key_file: None,
            unseal_key_env: None,
        }
    }
}

impl CustodySection {
    /// The PKCS#11 backend's configuration, for commands that only make sense with HSMs
    /// (`keyward hsm ...`): an error when another backend is chosen.
    pub fn require_pkcs11(&self) -> Result<keyward_custody_pkcs11::Pkcs11Config, ConfigError> {
        self.pkcs11()?.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "custody.backend is {:?}; this needs \"pkcs11\" (your HSMs)",
                self.backend
            ))
        })
    }

    /// The secret that unseals the software keystore, from `unseal_key_file`, `unseal_key_env`
    /// or the file the `KEYWARD_UNSEAL_KEY_FILE` environment variable names, in that order;
    /// `None` when none is given.
    pub fn unseal_secret(&self) -> Result<Option<keyward_custody::UnsealSecret>, ConfigError> {
        use keyward_custody::UnsealSecret;
        let from_file = |path: &Path| {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(
                    file = %path.display(),
                    "the unseal key file is readable by group or others (chmod 600 it)"
                );
            }
            UnsealSecret::from_file(path).map(Some).map_err(|e| {
                ConfigError::Invalid(format!(
                    "reading the unseal key file {}: {e}",
                    path.display()
                ))
            })
        };
        if let Some(path) = &self.unseal_key_file {
            return from_file(path);
        }
        if let Some(var) = &self.unseal_key_env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(UnsealSecret::new(v.into_bytes()))),
                Err(_) => Err(ConfigError::Invalid(format!(
                    "custody.unseal_key_env: environment variable {var} is not set"
                ))),
            };
        }
        match std::env::var_os("KEYWARD_UNSEAL_KEY_FILE") {
            Some(path) if !path.is_empty() => from_file(Path::new(&path)),
            _ => Ok(None),
        }
    }

    /// The PKCS#11 backend's configuration, when that backend is chosen.
    pub fn pkcs11(&self) -> Result<Option<keyward_custody_pkcs11::Pkcs11Config>, ConfigError> {
        use keyward_custody_pkcs11::{PinSource, Pkcs11Config};
        match self.backend.as_str() {
            "software" => Ok(None),
            "pkcs11" => {
                let module = self.module.clone().ok_or_else(|| {
                    ConfigError::Invalid("custody.module: required for the pkcs11 backend".into())
                })?;
                let pin = match (&self.pin_file, &self.pin_env) {
                    (Some(f), None) => PinSource::File(f.clone()),
                    (None, Some(e)) => PinSource::Env(e.clone()),
                    _ => {
                        return Err(ConfigError::Invalid(
                            "custody: exactly one of pin_file and pin_env".into(),
                        ));
                    }
                };
                let tokens = self.hsm.iter().map(|h| h.token_label.clone()).collect();
                let mut c = Pkcs11Config::new(module, pin, tokens);
                c.mkek_label = self.mkek_label.clone();
                c.skey_label = self.skey_label.clone();
                c.ikey_label = self.ikey_label.clone();
                c.tkek_label_prefix = self.tkek_label_prefix.clone();
                c.tkek_count = self.tkek_count;
                c.validate()
                    .map_err(|e| ConfigError::Invalid(format!("custody: {e}")))?;
                Ok(Some(c))
            }
            other => Err(ConfigError::Invalid(format!(
                "custody.backend: software or pkcs11, not {other:?}"
            ))),
        }
    }
}

/// `[rate_limit]`: requests per second per identity (answered 429 beyond), per process. Off by
/// default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Sustained requests per second per identity; 0 turns the limit off.
    pub per_second: u32,
    /// Requests an identity may make at once above the sustained rate.
    pub burst: u32,
}

/// `[scheduler]`: the background worker that rotates, expires and purges keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Whether this process runs the scheduler (safe on several processes at once).
    pub enabled: bool,
    /// Seconds between passes (at least 1).
    pub tick_secs: u64,
    /// Most keys handled per pass.
    pub batch: u32,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            enabled: true,
            tick_secs: 60,
            batch: 500,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("keyward-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8200)),
            tls_cert: None,
            tls_key: None,
            token_ttl_secs: 3600,
            region: "local".to_owned(),
            max_body_bytes: 64 * 1024,
            key_cache_ttl_ms: 1000,
            key_ids: KeyIds::default(),
            lifecycle: LifecycleSection::default(),
            scheduler: SchedulerSection::default(),
            private_endpoint: false,
            access_cache_ttl_ms: 500,
            rate_limit: RateLimitSection::default(),
            custody: CustodySection::default(),
            audit: AuditSection::default(),
            metrics: MetricsSection::default(),
            webhooks: WebhooksSection::default(),
            store: StoreSection::default(),
            limits: LimitsSection::default(),
            ip_limits: IpLimitsSection::default(),
            kmip: KmipSection::default(),
        }
    }
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for Keyward.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting is out of range or the combination is unsafe.
    #[error("{0}")]
    Invalid(String),
}

impl ServerConfig {
    /// Parses a TOML document (no I/O).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Checks the combination: plain HTTP is only allowed on a loopback address.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.store.quick_check()?;
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key must be given together".into(),
                ));
            }
            (None, None) if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::Invalid(format!(
                    "refusing to serve plain HTTP on {}: it is not a loopback address. \
                     Pass --tls-cert and --tls-key, or listen on 127.0.0.1",
                    self.listen
                )));
            }
            _ => {}
        }
        if let Some(addr) = self.kmip.listen {
            if self.kmip.tls_cert.is_none() || self.kmip.tls_key.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "[kmip] listen = \"{addr}\" needs tls_cert and tls_key: KMIP is served over \
                     mutual TLS only"
                )));
            }
            if !(1024..=64 << 20).contains(&self.kmip.max_message_bytes)
                || self.kmip.max_connections == 0
                || self.kmip.max_connections_per_client == 0
                || self.kmip.idle_timeout_secs == 0
                || self.kmip.read_timeout_secs == 0
            {
                return Err(ConfigError::Invalid(
                    "[kmip]: max_message_bytes is 1 KiB to 64 MiB; connection limits and \
                     timeouts are at least 1"
                        .into(),
                ));
            }
        }
        if !(1..=86_400).contains(&self.token_ttl_secs) {
            return Err(ConfigError::Invalid(
                "token_ttl_secs must be between 1 and 86400".into(),
            ));
        }
        if self.key_cache_ttl_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "key_cache_ttl_ms must be at most 60000".into(),
            ));
        }
        self.custody.pkcs11()?;
        self.store.postgres()?;
        if self.access_cache_ttl_ms > 1000 {
            return Err(ConfigError::Invalid(
                "access_cache_ttl_ms must be at most 1000 (revocations apply within it)".into(),
            ));
        }
        if self.ip_limits.audit_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "ip_limits.audit_interval_secs must be at least 1".into(),
            ));
        }
        if self.scheduler.tick_secs == 0 || self.scheduler.batch == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.tick_secs and scheduler.batch must be at least 1".into(),
            ));
        }
        if self.lifecycle.rotation_month_secs == 0 {
            return Err(ConfigError::Invalid(
                "lifecycle.rotation_month_secs must be at least 1".into(),
            ));
        }
        if self.audit.checkpoint_interval_secs == 0
            || self.audit.checkpoint_every_events == 0
            || self.audit.export_poll_ms == 0
        {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_interval_secs, audit.checkpoint_every_events and \
                 audit.export_poll_ms must be at least 1"
                    .into(),
            ));
        }
        if let Some(s3) = &self.audit.s3 {
            if self.audit.archive_dir.is_some() {
                return Err(ConfigError::Invalid(
                    "audit.archive_dir and [audit.s3] both set: the archive is one or the other"
                        .into(),
                ));
            }
            if s3.secret_access_key_file.is_some() == s3.secret_access_key_env.is_some() {
                return Err(ConfigError::Invalid(
                    "[audit.s3]: exactly one of secret_access_key_file and secret_access_key_env"
                        .into(),
                ));
            }
            if s3.bucket.is_empty() || s3.access_key_id.is_empty() {
                return Err(ConfigError::Invalid(
                    "[audit.s3]: bucket and access_key_id must be set".into(),
                ));
            }
            if let Some(e) = &s3.endpoint {
                match url::Url::parse(e) {
                    Ok(u) if u.scheme() == "https" || (u.scheme() == "http" && s3.allow_http) => {}
                    Ok(u) if u.scheme() == "http" => {
                        return Err(ConfigError::Invalid(format!(
                            "[audit.s3] endpoint {e:?} is plain http: set allow_http = true to allow it"
                        )));
                    }
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "[audit.s3] endpoint {e:?} is not an http(s) URL"
                        )));
                    }
                }
            }
        }
        if self.audit.segment_events == 0
            || self.audit.segment_max_secs == 0
            || self.audit.prune_batch == 0
            || self.audit.archive_poll_ms == 0
        {
            return Err(ConfigError::Invalid(
                "audit.segment_events, audit.segment_max_secs, audit.prune_batch and \
                 audit.archive_poll_ms must be at least 1"
                    .into(),
            ));
        }
        if self.audit.retain_days > 36_500 {
            return Err(ConfigError::Invalid(
                "audit.retain_days: at most 36500 (0 turns the age rule off)".into(),
            ));
        }
        if let Some(bad) = self
            .audit
            .aggregate_crypto_instances
            .iter()
            .find(|i| i.parse::<keyward_core::InstanceId>().is_err())
        {
            return Err(ConfigError::Invalid(format!(
                "audit.aggregate_crypto_instances: {bad:?} is not an instance id"
            )));
        }
        let mut names = std::collections::HashSet::new();
        for name in self
            .audit
            .jsonl
            .iter()
            .map(|s| &s.name)
            .chain(self.audit.webhook.iter().map(|s| &s.name))
        {
            if name.is_empty() || !names.insert(name) {
                return Err(ConfigError::Invalid(format!(
                    "audit sinks need distinct, non-empty names ({name:?})"
                )));
            }
        }
        if self.audit.jsonl.iter().any(|s| s.max_bytes < 1024) {
            return Err(ConfigError::Invalid(
                "audit.jsonl.max_bytes must be at least 1024".into(),
            ));
        }
        for w in &self.audit.webhook {
            if w.secret_file.is_some() == w.secret_env.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "audit.webhook {:?}: exactly one of secret_file and secret_env",
                    w.name
                )));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) || w.batch == 0 {
                return Err(ConfigError::Invalid(format!(
                    "audit.webhook {:?}: url must be http(s) and batch at least 1",
                    w.name
                )));
            }
        }
        if self.limits.max_connections == 0 || self.limits.import_token_threads == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections and limits.import_token_threads must be at least 1".into(),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least 1024".into(),
            ));
        }
        Ok(())
    }

    /// Whether TLS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The scheduler's settings.
    pub fn scheduler(&self) -> crate::scheduler::SchedulerConfig {
        crate::scheduler::SchedulerConfig {
            tick: Duration::from_secs(self.scheduler.tick_secs),
            batch: self.scheduler.batch,
        }
    }

    /// The core's lifecycle settings.
    pub fn lifecycle(&self) -> keyward_core::LifecycleConfig {
        keyward_core::LifecycleConfig {
            min_rotation_interval: Duration::from_secs(self.lifecycle.min_rotation_interval_secs),
            enable_after_disable: Duration::from_secs(self.lifecycle.enable_after_disable_secs),
            restore_window: Duration::from_secs(self.lifecycle.restore_window_secs),
            purge_wait: Duration::from_secs(self.lifecycle.purge_wait_secs),
            auto_purge_after: Duration::from_secs(self.lifecycle.auto_purge_after_secs),
            dual_auth_window: Duration::from_secs(self.lifecycle.dual_auth_window_secs),
            rotation_month: Duration::from_secs(self.lifecycle.rotation_month_secs),
            key_cache_ttl: Duration::from_millis(self.key_cache_ttl_ms),
            ids: match self.key_ids {
                KeyIds::TimeOrdered => keyward_core::IdOrder::TimeOrdered,
                KeyIds::Random => keyward_core::IdOrder::Random,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        let mut c = ServerConfig::default();
        assert!(c.validate().is_ok());
        c.listen = "0.0.0.0:8200".parse().unwrap_or(c.listen);
        assert!(c.validate().is_err());
        c.tls_cert = Some("c.pem".into());
        assert!(c.validate().is_err(), "cert without key");
        c.tls_key = Some("k.pem".into());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn parses_toml_and_rejects_unknown_fields() {
        let c = ServerConfig::from_toml(
            "listen = \"127.0.0.1:9000\"\n[lifecycle]\nenable_after_disable_secs = 0\n",
            Path::new("x.toml"),
        );
        assert!(
            c.is_ok_and(|c| c.listen.port() == 9000 && c.lifecycle.enable_after_disable_secs == 0)
        );
        assert!(ServerConfig::from_toml("lisen = 1", Path::new("x.toml")).is_err());
    }

    #[test]
    fn key_ids_are_time_ordered_unless_configured_random() {
        let parse = |t: &str| ServerConfig::from_toml(t, Path::new("x.toml"));
        let ids = |t: &str| parse(t).ok().map(|c| c.lifecycle().ids);
        assert_eq!(ids(""), Some(keyward_core::IdOrder::TimeOrdered));
        assert_eq!(
            ids("key_ids = \"time-ordered\""),
            Some(keyward_core::IdOrder::TimeOrdered)
        );
        assert_eq!(
            ids("key_ids = \"random\""),
            Some(keyward_core::IdOrder::Random)
        );
        assert!(parse("key_ids = \"v4\"").is_err());
    }

    #[test]
    fn audit_sinks_need_names_secrets_and_sane_limits() {
        let parse = |t: &str| ServerConfig::from_toml(t, Path::new("x.toml"));
        let ok = parse(
            "[[audit.jsonl]]\nname = \"f\"\npath = \"/tmp/a.jsonl\"\n\
             [[audit.webhook]]\nname = \"w\"\nurl = \"https://siem\"\nsecret_env = \"S\"\n",
        );
        assert!(ok.is_ok_and(|c| c.validate().is_ok()));
        for bad in [
            "[[audit.jsonl]]\nname = \"f\"\npath = \"/a\"\nmax_bytes = 10\n",
            "[[audit.jsonl]]\nname = \"x\"\npath = \"/a\"\n[[audit.jsonl]]\nname = \"x\"\npath = \"/b\"\n",
            "[[audit.webhook]]\nname = \"w\"\nurl = \"https://siem\"\n",
            "[[audit.webhook]]\nname = \"w\"\nurl = \"ftp://siem\"\nsecret_env = \"S\"\n",
            "[audit]\ncheckpoint_interval_secs = 0\n",
            "[audit]\nsegment_events = 0\n",
            "[audit]\nretain_days = 1000000\n",
            "[audit]\naggregate_crypto_instances = [\"not-an-id\"]\n",
        ] {
            assert!(parse(bad).is_ok_and(|c| c.validate().is_err()), "{bad}");
        }
        assert!(parse("[audit]\nsecret = 1\n").is_err());
    }

    /// See: issue 20. SQLite archives into the data directory by default; PostgreSQL only into
    /// an archive named for every node; `archive = false` turns it (and so pruning) off;
    /// `[audit.s3]` archives into a bucket, staged in the data directory.
    #[test]
    fn the_audit_archive_defaults_to_the_data_dir_on_sqlite_only() {
        let parse = |t: &str| ServerConfig::from_toml(t, Path::new("x.toml")).unwrap();
        let dir = |d: &str| Some(ArchiveTarget::Dir(PathBuf::from(d)));
        let c = parse("data_dir = \"/d\"\n");
        assert_eq!(c.audit_archive(), dir("/d/audit-archive"));
        let c = parse("data_dir = \"/d\"\n[audit]\narchive = false\n");
        assert_eq!(c.audit_archive(), None);
        let c = parse("[store]\nbackend = \"postgres\"\nurl = \"postgres://h/k\"\n");
        assert_eq!(c.audit_archive(), None);
        let c = parse(
            "[store]\nbackend = \"postgres\"\nurl = \"postgres://h/k\"\n[audit]\narchive_dir = \"/shared\"\n",
        );
        assert_eq!(c.audit_archive(), dir("/shared"));
        let s3 =
            "[audit.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\nsecret_access_key_env = \"S\"\n";
        let c = parse(&format!("data_dir = \"/d\"\n{s3}"));
        c.validate().unwrap();
        match c.audit_archive() {
            Some(ArchiveTarget::S3 { s3, staging }) => {
                assert_eq!((s3.bucket.as_str(), s3.region.as_str()), ("b", "us-east-1"));
                assert_eq!(staging, PathBuf::from("/d/audit-staging"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// `[audit.s3]` is refused when it cannot work as written: with `archive_dir` too, without
    /// exactly one secret source, with a plain-http endpoint not allowed, or an endpoint that is
    /// not a URL; the secret never shows in its Debug form.
    #[test]
    fn an_s3_archive_is_refused_unless_complete() {
        let parse = |t: &str| ServerConfig::from_toml(t, Path::new("x.toml"));
        let ok = "[audit.s3]\nbucket = \"b\"\naccess_key_id = \"k\"\n";
        for bad in [
            format!("{ok}secret_access_key_env = \"S\"\n[audit]\narchive_dir = \"/a\"\n"),
            ok.to_owned(),
            format!("{ok}secret_access_key_env = \"S\"\nsecret_access_key_file = \"/f\"\n"),
            format!("{ok}secret_access_key_env = \"S\"\nendpoint = \"http://minio:9000\"\n"),
            format!("{ok}secret_access_key_env = \"S\"\nendpoint = \"minio:9000\"\n"),
            "[audit.s3]\nbucket = \"\"\naccess_key_id = \"k\"\nsecret_access_key_env = \"S\"\n"
                .into(),
        ] {
            assert!(parse(&bad).is_ok_and(|c| c.validate().is_err()), "{bad}");
        }
        let c = parse(&format!(
            "{ok}secret_access_key_env = \"S\"\nendpoint = \"http://minio:9000\"\nallow_http = true\n"
        ))
        .unwrap();
        c.validate().unwrap();
        assert!(!format!("{:?}", c.audit.s3).contains("access_key_id"));
    }

    #[test]
    fn limits_have_safe_defaults_and_refuse_zero_caps() {
        let parse = |t: &str| ServerConfig::from_toml(t, Path::new("x.toml"));
        let c = ServerConfig::default();
        assert_eq!(c.limits.header_read_timeout_ms, 10_000);
        assert_eq!(c.limits.idle_timeout_secs, 60);
        assert_eq!(c.limits.max_connections, 4096);
        assert!(
            parse("[limits]\nmax_connections_per_ip = 64\nheader_read_timeout_ms = 0\n")
                .is_ok_and(|c| c.validate().is_ok() && c.limits.max_connections_per_ip == 64)
        );
        for bad in [
            "[limits]\nmax_connections = 0\n",
            "[limits]\nimport_token_threads = 0\n",
        ] {
            assert!(parse(bad).is_ok_and(|c| c.validate().is_err()), "{bad}");
        }
    }
}
