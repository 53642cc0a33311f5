//! `keyward store`: moving a deployment's records between store backends.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use keyward_runtime::ServerConfig;

/// Store subcommands.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy every record and audit event of a SQLite data directory into the PostgreSQL
    /// database of a node config (a new, empty database). Stop the server first. Resumable: run
    /// it again after an interruption. The audit chain is verified in the target at the end.
    Migrate {
        /// The data directory whose keyward.db is copied (its keystore.json is the custody
        /// used to verify, unless the config names HSMs).
        #[arg(long)]
        from_data_dir: PathBuf,
        /// A node config whose `[store]` section names the PostgreSQL database.
        #[arg(long)]
        to_config: PathBuf,
    },
}

/// Runs a store subcommand.
pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate {
            from_data_dir,
            to_config,
        } => migrate(from_data_dir, to_config).await,
    }
}

async fn migrate(from: PathBuf, to_config: PathBuf) -> anyhow::Result<()> {
    let mut config = ServerConfig::from_file(&to_config)?;
    let options = config.store.postgres()?.with_context(|| {
        format!(
            "{} has no [store] backend = \"postgres\" to migrate into",
            to_config.display()
        )
    })?;
    // The software keystore is the source's (copy it to every node afterwards).
    config.data_dir = from.clone();
    let custody = keyward_runtime::open_custody(&config, false)?;
    let target = keyward_store::PgStore::connect(&options)
        .await
        .context("opening the PostgreSQL store")?;

    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg:24} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let report = keyward_store::copy_sqlite_to_postgres(&from, &target, |p| {
        if bar.message() != p.table {
            bar.set_message(p.table.to_owned());
            bar.set_length(p.total);
        }
        bar.set_position(p.done);
    })
    .await
    .with_context(|| format!("migrating {}", from.display()))?;
    bar.finish_and_clear();

    let mut short = Vec::new();
    for (table, source, target) in &report.tables {
        println!("{table:24} {source:>10} rows, {target:>10} in the target");
        if target < source {
            short.push(table.as_str());
        }
    }
    anyhow::ensure!(short.is_empty(), "rows missing in the target: {short:?}");
    let chain = keyward_store::verify_audit_chain_pg(&target, custody.as_ref())
        .await
        .context("verifying the audit chain in the target")?;
    anyhow::ensure!(
        chain.first_break.is_none(),
        "the audit chain does not verify in the target: {:?}",
        chain.first_break
    );
    println!(
        "audit chain: {} events, intact; {} checkpoints",
        chain.events, chain.checkpoints
    );
    println!(
        "done: point every node's [store] at the database and copy keystore.json from {} to \
         each node's data directory (software custody)",
        from.display()
    );
    Ok(())
}
