//! `keyward dev`: a throwaway server for trying Keyward, in the spirit of `vault server -dev`.
//! A new data directory under the system's temporary directory, plain HTTP on loopback, the
//! URL, API key and instance printed with the `export` lines for the CLI, and everything removed
//! at exit (Ctrl-C or SIGTERM). Never for real keys: the keystore is unsealed and the API key is
//! printed.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use keyward_runtime::ServerConfig;

/// `keyward dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Address to listen on (loopback only: plain HTTP); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8200", value_parser = super::super::parse_listen)]
    listen: SocketAddr,
    /// Keep the data directory at exit (it is printed).
    #[arg(long)]
    keep: bool,
}

/// Removes the throwaway data directory when dropped (at exit, on error too).
struct Throwaway {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        if self.keep {
            println!("keyward dev: kept {}", self.dir.display());
        } else if std::fs::remove_dir_all(&self.dir).is_ok() {
            println!("keyward dev: removed {}", self.dir.display());
        }
    }
}

fn throwaway_dir() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("keyward-dev-{}-{nanos:08x}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `keyward dev` until a signal.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = throwaway_dir()?;
    let guard = Throwaway {
        dir: dir.clone(),
        keep: args.keep,
    };
    let config = ServerConfig {
        data_dir: dir.clone(),
        listen: args.listen,
        ..ServerConfig::default()
    };
    let runtime = keyward_runtime::Runtime::open(config).await?;
    let server = keyward_server::serve(runtime).await?;
    // Before the server says it listens: a SIGTERM from then on is a clean shutdown.
    let signal = keyward_client::shutdown_signal();
    let boot_path = server
        .bootstrap_file
        .clone()
        .unwrap_or_else(|| dir.join("bootstrap.json"));
    let boot: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&boot_path)
            .with_context(|| format!("reading {}", boot_path.display()))?,
    )?;
    let field = |k: &str| boot[k].as_str().unwrap_or_default().to_owned();
    let (url, api_key, instance) = (server.url.clone(), field("api_key"), field("instance_id"));
    println!(
        "keyward dev: a throwaway server. Its data is removed at exit (Ctrl-C); never put real keys in it."
    );
    println!();
    println!("    URL:       {url}");
    println!("    API key:   {api_key}");
    println!("    Instance:  {instance}");
    println!("    Data dir:  {}", dir.display());
    println!();
    println!("In another shell:");
    println!();
    println!("export KEYWARD_URL={url}");
    println!("export KEYWARD_API_KEY={api_key}");
    println!("export KEYWARD_INSTANCE={instance}");
    println!();
    println!("keyward: listening on {url}");
    let closer = server.closer();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down");
        closer.close();
    });
    let result = server.wait().await;
    drop(guard);
    result
}
