//! The `keyward` binary: `keyward serve` runs the KMS; the other subcommands are clients of its
//! REST API (through `keyward-client`). Thin by design: the work is in the library crates.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use keyward_runtime::ServerConfig;

mod cli;

use cli::Conn;
use cli::admin::{AliasesCommand, InstanceCommand, RingsCommand};
use cli::iam::{IamCommand, IamConn};
use cli::keys::KeysCommand;
use cli::kmip::KmipCommand;

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
    /// Add and remove key aliases.
    Aliases {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: AliasesCommand,
    },
    /// List, create and delete key rings.
    Rings {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: RingsCommand,
    },
    /// Show and set instance policies.
    Instance {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: InstanceCommand,
    },
    /// Manage KMIP adapters, their client certificates and KMIP objects.
    Kmip {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: KmipCommand,
    },
    /// Prepare and inspect the HSMs of a PKCS#11 custody configuration.
    Hsm {
        #[command(subcommand)]
        command: cli::hsm::HsmCommand,
    },
    /// Move a deployment's records between store backends (SQLite to PostgreSQL), or check a
    /// SQLite database offline.
    Store {
        #[command(subcommand)]
        command: cli::store::StoreCommand,
    },
    /// Seal the software keystore, or make a new unseal key.
    Custody {
        #[command(subcommand)]
        command: cli::custody::CustodyCommand,
    },
    /// Offline recovery with the data directory and its custody (server stopped; audited): an
    /// allowedIP policy that locks everyone out, a lost administrator API key.
    Recover {
        #[command(subcommand)]
        command: cli::custody::RecoverCommand,
    },
    /// Verify the audit chain offline, or list audit events over the API.
    Audit {
        #[command(subcommand)]
        command: cli::audit::AuditCommand,
    },
    /// Manage identities, API keys, access policies, authorizations and instances of the account.
    Iam {
        #[command(flatten)]
        conn: IamConn,
        #[command(subcommand)]
        command: IamCommand,
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
    /// A file holding the secret that unseals the software keystore (a base64 256-bit key or a
    /// passphrase); at a first start, the new keystore is sealed under it. Without one the
    /// keystore is plaintext (development only; a warning is logged).
    #[arg(long, env = "KEYWARD_UNSEAL_KEY_FILE")]
    unseal_key_file: Option<PathBuf>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// mimalloc instead of glibc's malloc: the request path allocates many small, short-lived
/// objects across threads (hyper buffers, JSON, audit events); glibc spent about 14 % of the
/// server's CPU in malloc and free under load (measured with perf, BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            Command::Keys { conn, command } => cli::keys::run(conn, command).await,
            Command::Aliases { conn, command } => cli::admin::aliases(conn, command).await,
            Command::Rings { conn, command } => cli::admin::rings(conn, command).await,
            Command::Instance { conn, command } => cli::admin::instance(conn, command).await,
            Command::Kmip { conn, command } => cli::kmip::run(conn, command).await,
            Command::Iam { conn, command } => cli::iam::run(conn, command).await,
            Command::Hsm { command } => cli::hsm::run(command).await,
            Command::Store { command } => cli::store::run(command).await,
            Command::Custody { command } => cli::custody::run(command),
            Command::Recover { command } => cli::custody::recover(command).await,
            Command::Audit { command } => match cli::audit::run(command).await {
                Ok(true) => Ok(()),
                Ok(false) => return Ok(Some(std::process::ExitCode::from(1))),
                Err(e) => Err(e),
            },
        }
        .map(|()| None)
    });
    match result {
        Ok(Some(code)) => code,
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
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
    if let Some(f) = args.unseal_key_file {
        config.custody.unseal_key_file = Some(f);
    }
    if args.tls_cert.is_some() || args.tls_key.is_some() {
        config.tls_cert = args.tls_cert;
        config.tls_key = args.tls_key;
    }
    // The runtime opens the data directory (custody, store, token key); the server binds, runs
    // the runtime's first start with its URL, starts the background work and serves HTTP.
    let runtime = keyward_runtime::Runtime::open(config).await?;
    let server = keyward_server::serve(runtime).await?;
    tracing::info!(url = %server.url, "keyward is serving");
    if let Some(path) = &server.bootstrap_file {
        println!(
            "keyward: first start. The administrator API key and instance id are in {} (mode 0600).",
            path.display()
        );
    }
    println!("keyward: listening on {}", server.url);
    if let Some(kmip) = server.kmip_addr() {
        println!("keyward: KMIP listening on {kmip}");
    }
    let closer = server.closer();
    tokio::spawn(async move {
        keyward_client::shutdown_signal().await;
        tracing::info!("shutting down");
        closer.close();
    });
    server.wait().await
}
