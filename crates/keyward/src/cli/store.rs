//! `keyward store`: moving a deployment's records between store backends, and checking a SQLite
//! database offline.

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
    /// Check a SQLite data directory's database offline and read-only: SQLite's full
    /// `integrity_check` and `foreign_key_check`, and every key record's and key version's
    /// custody signature. Exits 1 if anything is wrong. (`keyward audit verify` checks the audit
    /// chain.)
    Check {
        /// The data directory whose keyward.db is checked (its keystore.json is the custody,
        /// unless the config names HSMs).
        #[arg(long, env = "KEYWARD_DATA_DIR")]
        data_dir: PathBuf,
        /// A config naming the custody backend (HSMs); default: the software keystore.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs a store subcommand.
pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Migrate {
            from_data_dir,
            to_config,
        } => migrate(from_data_dir, to_config).await,
        StoreCommand::Check { data_dir, config } => check(data_dir, config),
    }
}

fn check(data_dir: PathBuf, config: Option<PathBuf>) -> anyhow::Result<()> {
    let mut config = match &config {
        Some(path) => ServerConfig::from_file(path)?,
        None => ServerConfig::default(),
    };
    config.data_dir = data_dir.clone();
    let custody = keyward_runtime::open_custody(&config, false)?;
    let started = std::time::Instant::now();
    let report = keyward_store::check_sqlite(&data_dir, custody.as_ref())
        .with_context(|| format!("checking {}", data_dir.display()))?;
    let status = |problems: &[String]| {
        if problems.is_empty() {
            "ok".to_owned()
        } else {
            format!("{} problem(s)", problems.len())
        }
    };
    println!("integrity_check:    {}", status(&report.integrity));
    for p in &report.integrity {
        println!("  {p}");
    }
    println!("foreign_key_check:  {}", status(&report.foreign_keys));
    for p in &report.foreign_keys {
        println!("  {p}");
    }
    println!(
        "signatures:         {} keys, {} versions, {}",
        report.keys,
        report.versions,
        status(&report.bad_records)
    );
    for p in &report.bad_records {
        println!("  does not verify: {p}");
    }
    println!("took {:.1} s", started.elapsed().as_secs_f64());
    anyhow::ensure!(
        report.ok(),
        "{} is damaged: restore it from a backup that passes this check",
        data_dir.join(keyward_store::DB_FILE).display()
    );
    Ok(())
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
    // A trail pruned after archiving verifies with its archive (the source's default place):
    // on PostgreSQL, set `[audit] archive_dir` to where the nodes will find it.
    let archive = Some(from.join("audit-archive"))
        .filter(|a| a.exists())
        .map(keyward_store::archive::DirSegments::new);
    let chain = keyward_store::verify_audit_trail_pg(
        &target,
        archive
            .as_ref()
            .map(|a| a as &dyn keyward_store::archive::SegmentStore),
        keyward_store::ArchiveStart::Genesis,
        custody.as_ref(),
    )
    .await
    .context("verifying the audit chain in the target")?
    .chain;
    if let Some(a) = &archive {
        println!(
            "audit archive: {} (verified with the database); on PostgreSQL, move it where every node mounts it and set [audit] archive_dir",
            a.dir().display()
        );
    }
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
