//! The `keyward` binary: `keyward serve` runs the KMS; the other subcommands are clients of its
//! REST API (through `keyward-client`). Thin by design: the work is in the library crates.

use std::path::PathBuf;

use std::io::IsTerminal;

use clap::{Args, CommandFactory, Parser, Subcommand};
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
    /// A throwaway server for trying Keyward (like `vault server -dev`): prints the URL, API
    /// key, instance and `export` lines; its data directory is removed at exit.
    Dev(cli::dev::DevArgs),
    /// Check a URL, API key and instance against the server and save them as a profile (0600)
    /// that the client commands use (`--profile NAME`; the profile `default` otherwise).
    Login {
        #[command(flatten)]
        conn: Conn,
    },
    /// List key registrations (services' protected resources); create and delete them as a
    /// service identity.
    Registrations {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: cli::services::RegistrationsCommand,
    },
    /// Create or retrieve the instance's import token (secure import: `keys import --secure`).
    ImportToken {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: cli::services::ImportTokenCommand,
    },
    /// Acknowledge lifecycle events (integrated services).
    Events {
        #[command(flatten)]
        conn: Conn,
        #[command(subcommand)]
        command: cli::services::EventsCommand,
    },
    /// Back up a data directory while the server runs (SQLite online copy, keystore, bootstrap).
    Backup(cli::ops::BackupArgs),
    /// Restore a backup into a new data directory (server stopped).
    Restore(cli::ops::RestoreArgs),
    /// Make TLS certificates for a first setup.
    Tls {
        #[command(subcommand)]
        command: cli::ops::TlsCommand,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout: `keyward man > keyward.1; man ./keyward.1`.
    Man,
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved here (`localhost:8200`).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    use std::net::ToSocketAddrs;
    match s.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s} resolves to no address")),
        Err(e) => Err(format!(
            "{s} is not an address to listen on ({e}): write IP:PORT or HOST:PORT, e.g. \
             127.0.0.1:8200, localhost:8200, or 0.0.0.0:8200 with --tls-cert and --tls-key"
        )),
    }
}

/// The connection flags every client command takes. clap's `global` makes them valid after
/// the command group; `hoist_global_flags` also lets them come before it (`keyward --json keys
/// list`).
const GLOBAL_FLAGS: [(&str, bool); 8] = [
    ("--url", true),
    ("--api-key", true),
    ("--instance", true),
    ("--bootstrap", true),
    ("--profile", true),
    ("--ca-cert", true),
    ("--key-ring", true),
    ("--json", false),
];

/// Moves connection flags written before the command group to just after it.
fn hoist_global_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut iter = args.into_iter();
    let mut out: Vec<std::ffi::OsString> = iter.next().into_iter().collect();
    let mut hoisted = Vec::new();
    let rest: Vec<_> = iter.collect();
    let mut i = 0;
    while let Some(arg) = rest.get(i) {
        let text = arg.to_string_lossy();
        let name = text.split('=').next().unwrap_or_default();
        match GLOBAL_FLAGS.iter().find(|(f, _)| *f == name) {
            Some((_, takes_value)) => {
                hoisted.push(arg.clone());
                if *takes_value && !text.contains('=') {
                    if let Some(v) = rest.get(i + 1) {
                        hoisted.push(v.clone());
                    }
                    i += 1;
                }
                i += 1;
            }
            None => break,
        }
    }
    let mut rest = rest.into_iter().skip(i);
    if let Some(group) = rest.next() {
        out.push(group);
        out.extend(hoisted);
    } else {
        out.extend(hoisted);
    }
    out.extend(rest);
    out
}

/// A failure as JSON (`--json`): the API's status and reason code when the server refused.
fn error_json(e: &anyhow::Error) -> serde_json::Value {
    let api = e
        .chain()
        .find_map(|c| c.downcast_ref::<keyward_client::ClientError>())
        .and_then(|c| match c {
            keyward_client::ClientError::Api {
                status,
                code,
                message,
            } => Some((*status, code.clone(), message.clone())),
            _ => None,
        });
    match api {
        Some((status, code, message)) => serde_json::json!({"error": {
            "status": status, "code": code, "message": message, "detail": format!("{e:#}"),
        }}),
        None => serde_json::json!({"error": {"message": format!("{e:#}")}}),
    }
}

/// Whether the token exchange refused the API key itself (IAM's `BXNIM0415E`).
fn refused_credential(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<keyward_client::ClientError>(),
            Some(keyward_client::ClientError::Api { code, .. }) if code == "BXNIM0415E"
        )
    })
}

/// The git work tree `dir` is in, if any: a data directory there is one `git add -A` away
/// from publishing the master key and the administrator's API key.
fn git_work_tree(dir: &std::path::Path) -> Option<PathBuf> {
    let abs = std::path::absolute(dir).ok()?;
    abs.ancestors()
        .find(|a| a.join(".git").exists())
        .map(std::path::Path::to_path_buf)
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory (database, keystore, bootstrap.json).
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8200 or localhost:8200. Plain HTTP is allowed only
    /// on loopback.
    #[arg(long, env = "KEYWARD_LISTEN", value_parser = parse_listen)]
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
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json_errors = argv.iter().any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(first) => {
            Cli::try_parse_from(hoist_global_flags(argv)).unwrap_or_else(|_| first.exit())
        }
    };
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
            Command::Dev(args) => {
                init_logging("text");
                cli::dev::run(args).await
            }
            Command::Login { conn } => cli::profile::login(conn).await,
            Command::Registrations { conn, command } => {
                cli::services::registrations(conn, command).await
            }
            Command::ImportToken { conn, command } => {
                cli::services::import_token(conn, command).await
            }
            Command::Events { conn, command } => cli::services::events(conn, command).await,
            Command::Backup(args) => cli::ops::backup(args),
            Command::Restore(args) => cli::ops::restore(args),
            Command::Tls { command } => cli::ops::tls(command),
            Command::Completions { shell } => cli::ops::completions(shell, &mut Cli::command()),
            Command::Man => cli::ops::man(Cli::command()),
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
            let e = match format!("{e:#}") {
                t if t.contains("invalid peer certificate") && !t.contains("NotValidForName") => e
                    .context(
                        "the server's TLS certificate is not trusted: give its CA, or the \
                         server's self-signed certificate itself, with --ca-cert FILE (or \
                         KEYWARD_CA_CERT)",
                    ),
                _ if refused_credential(&e) => e.context(
                    "the server refused the API key (deleted, locked or mistyped?): an \
                     administrator makes another with `keyward iam apikeys create`; with no \
                     administrator key left, `keyward recover admin-key --data-dir DIR` (server \
                     stopped) prints a new one",
                ),
                _ => e,
            };
            if json_errors {
                eprintln!("{}", error_json(&e));
            } else {
                eprintln!("keyward: {e:#}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
    if let Some(tree) = git_work_tree(&config.data_dir) {
        tracing::warn!(
            data_dir = %config.data_dir.display(),
            work_tree = %tree.display(),
            "the data directory is inside a git work tree: it holds the master key (keystore.json) \
             and the administrator's API key (bootstrap.json); keep it out of the repository \
             (add it to .gitignore) or use a data directory elsewhere, e.g. /var/lib/keyward"
        );
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
    // Before the server says it listens: a SIGTERM from then on is a clean shutdown.
    let signal = keyward_client::shutdown_signal();
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
        signal.await;
        tracing::info!("shutting down");
        closer.close();
    });
    server.wait().await
}
