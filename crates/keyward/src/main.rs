//! The `keyward` binary: `keyward serve` runs the KMS; the other subcommands are clients of its
//! REST API (through `keyward-client`). Thin by design: the work is in the library crates.

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Parser, Subcommand};
use keyward_api::{Key, KeyCreate};
use keyward_client::Client;
use keyward_server::ServerConfig;

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Keyward: a self-hosted, Key Protect-compatible key management service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (SQLite and software custody in the data directory by default).
    Serve(ServeArgs),
    /// Manage and use keys through the REST API.
    Keys {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory (database, keystore, bootstrap.json).
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8200. Plain HTTP is allowed only on loopback.
    #[arg(long, env = "KEYWARD_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// PEM certificate chain (enables HTTPS).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Args)]
struct Conn {
    /// Server URL.
    #[arg(long, env = "KEYWARD_URL", global = true)]
    url: Option<String>,
    /// API key (prefer the environment variable: flags show up in `ps`).
    #[arg(long, env = "KEYWARD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Instance id (the bluemix-instance header).
    #[arg(long, env = "KEYWARD_INSTANCE", global = true)]
    instance: Option<String>,
    /// Read URL, API key and instance from a bootstrap.json (flags and variables win).
    #[arg(long, env = "KEYWARD_BOOTSTRAP", global = true)]
    bootstrap: Option<PathBuf>,
    /// Extra trusted CA certificate (PEM), for a self-signed server.
    #[arg(long, env = "KEYWARD_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key with generated (256-bit) material.
    Create(CreateArgs),
    /// Create a key from your own material (base64 on stdin or in a file).
    Import {
        #[command(flatten)]
        create: CreateArgs,
        /// File holding the base64 material; `-` (default) reads stdin.
        #[arg(long, default_value = "-")]
        payload_file: String,
    },
    /// List keys.
    List {
        /// Page size.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show a key (and a standard key's payload).
    Show { id: String },
    /// Wrap a DEK (base64), or generate one when --plaintext is absent.
    Wrap {
        id: String,
        /// Base64 DEK to wrap.
        #[arg(long)]
        plaintext: Option<String>,
        /// Additional authenticated data (repeatable).
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Unwrap a ciphertext.
    Unwrap {
        id: String,
        /// Ciphertext from wrap.
        #[arg(long)]
        ciphertext: String,
        /// Additional authenticated data, as given to wrap.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rewrap a ciphertext under the key's latest version.
    Rewrap {
        id: String,
        /// Ciphertext from wrap.
        #[arg(long)]
        ciphertext: String,
        /// Additional authenticated data.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rotate a key (imported keys: new base64 material with --payload-file).
    Rotate {
        id: String,
        /// File with new base64 material, for imported keys.
        #[arg(long)]
        payload_file: Option<String>,
    },
    /// Disable (suspend) a key.
    Disable { id: String },
    /// Enable a disabled key.
    Enable { id: String },
    /// Delete (destroy) a key.
    Delete { id: String },
}

#[derive(Args)]
struct CreateArgs {
    /// Key name.
    #[arg(long)]
    name: String,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Create a standard (extractable) key instead of a root key.
    #[arg(long)]
    standard: bool,
    /// Expiration date (RFC 3339).
    #[arg(long)]
    expiration: Option<String>,
    /// Key ring.
    #[arg(long)]
    key_ring: Option<String>,
}

impl CreateArgs {
    fn into_spec(self, payload: Option<String>) -> KeyCreate {
        KeyCreate {
            type_: Some(keyward_api::media::KEY.to_owned()),
            name: self.name,
            description: self.description,
            extractable: Some(self.standard),
            payload,
            expiration_date: self.expiration,
            key_ring_id: self.key_ring,
            ..KeyCreate::default()
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Keys { conn, command } => keys(conn, command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let mut config = match &args.config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    let server = keyward_server::start(config).await?;
    tracing::info!(url = %server.url, "keyward is serving");
    if let Some(path) = &server.bootstrap_file {
        println!(
            "keyward: first start. The administrator API key and instance id are in {} (mode 0600).",
            path.display()
        );
    }
    println!("keyward: listening on {}", server.url);
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        handle.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    server.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

fn connect(conn: &Conn) -> anyhow::Result<Client> {
    let boot: Option<serde_json::Value> = match &conn.bootstrap {
        Some(p) => Some(serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let from_boot = |k: &str| boot.as_ref().and_then(|b| b[k].as_str().map(str::to_owned));
    let url = conn
        .url
        .clone()
        .or_else(|| from_boot("url"))
        .context("no server URL: pass --url or set KEYWARD_URL")?;
    let api_key = conn
        .api_key
        .clone()
        .or_else(|| from_boot("api_key"))
        .context("no API key: set KEYWARD_API_KEY")?;
    let instance = conn
        .instance
        .clone()
        .or_else(|| from_boot("instance_id"))
        .context("no instance: pass --instance or set KEYWARD_INSTANCE")?;
    let ca = match &conn.ca_cert {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    Ok(Client::new(&url, &api_key, &instance, ca.as_deref())?)
}

fn read_payload(source: &str) -> anyhow::Result<String> {
    let text = if source == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(source).with_context(|| format!("reading {source}"))?
    };
    let text = text.trim().to_owned();
    if B64.decode(&text).is_err() {
        bail!("the payload must be base64");
    }
    Ok(text)
}

fn print_key(k: &Key) {
    let kind = if k.extractable { "standard" } else { "root" };
    println!("id:          {}", k.id);
    println!("name:        {}", k.name);
    println!(
        "type:        {kind} key, {} bits{}",
        k.algorithm_bit_size,
        if k.imported { ", imported" } else { "" }
    );
    println!("state:       {} ({})", k.state, state_name(k.state));
    println!("version:     {}", k.key_version.id);
    println!("key ring:    {}", k.key_ring_id);
    println!("crn:         {}", k.crn);
    println!("created:     {} by {}", k.creation_date, k.created_by);
    if let Some(d) = &k.expiration_date {
        println!("expires:     {d}");
    }
    if let Some(p) = &k.payload {
        println!("payload:     {p}");
    }
}

fn state_name(s: u8) -> &'static str {
    match s {
        0 => "pre-active",
        1 => "active",
        2 => "suspended",
        3 => "deactivated",
        5 => "destroyed",
        _ => "unknown",
    }
}

fn out<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        text();
    }
    Ok(())
}

async fn keys(conn: Conn, command: KeysCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    let json = conn.json;
    match command {
        KeysCommand::Create(args) => {
            let k = client.create_key(args.into_spec(None)).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::Import {
            create,
            payload_file,
        } => {
            let payload = read_payload(&payload_file)?;
            let k = client.create_key(create.into_spec(Some(payload))).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::List { limit, offset } => {
            let c = client.list_keys(limit, offset).await?;
            out(json, &c, || {
                println!(
                    "{:<36}  {:<5}  {:<8}  {:<11}  NAME",
                    "ID", "STATE", "TYPE", "STATUS"
                );
                for k in &c.resources {
                    let kind = if k.extractable { "standard" } else { "root" };
                    println!(
                        "{:<36}  {:<5}  {:<8}  {:<11}  {}",
                        k.id,
                        k.state,
                        kind,
                        state_name(k.state),
                        k.name
                    );
                }
                println!(
                    "{} of {} keys",
                    c.resources.len(),
                    c.metadata
                        .total_count
                        .unwrap_or(c.metadata.collection_total)
                );
            })
        }
        KeysCommand::Show { id } => {
            let k = client.get_key(&id).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::Wrap { id, plaintext, aad } => {
            let r = client.wrap(&id, plaintext, aad).await?;
            out(json, &r, || {
                if let Some(p) = &r.plaintext {
                    println!("plaintext:   {p}");
                }
                println!("ciphertext:  {}", r.ciphertext);
                println!("key version: {}", r.key_version.id);
            })
        }
        KeysCommand::Unwrap {
            id,
            ciphertext,
            aad,
        } => {
            let r = client.unwrap(&id, ciphertext, aad).await?;
            out(json, &r, || {
                println!("plaintext:   {}", r.plaintext);
                println!("key version: {}", r.key_version.id);
                if let (Some(c), Some(v)) = (&r.ciphertext, &r.rewrapped_key_version) {
                    println!("rewrapped:   {c} (version {})", v.id);
                }
            })
        }
        KeysCommand::Rewrap {
            id,
            ciphertext,
            aad,
        } => {
            let r = client.rewrap(&id, ciphertext, aad).await?;
            out(json, &r, || {
                println!("ciphertext:  {}", r.ciphertext);
                println!(
                    "key version: {} (was {})",
                    r.rewrapped_key_version.id, r.key_version.id
                );
            })
        }
        KeysCommand::Rotate { id, payload_file } => {
            let payload = payload_file.as_deref().map(read_payload).transpose()?;
            client.rotate(&id, payload).await?;
            let k = client.get_key(&id).await?;
            out(json, &k, || {
                println!("rotated {id}: new version {}", k.key_version.id)
            })
        }
        KeysCommand::Disable { id } => {
            client.disable(&id).await?;
            out(json, &serde_json::json!({"id": id, "state": 2}), || {
                println!("disabled {id}")
            })
        }
        KeysCommand::Enable { id } => {
            client.enable(&id).await?;
            out(json, &serde_json::json!({"id": id, "state": 1}), || {
                println!("enabled {id}")
            })
        }
        KeysCommand::Delete { id } => {
            let k = client.delete(&id).await?;
            out(json, &k, || println!("deleted {id} (state {})", k.state))
        }
    }
}
