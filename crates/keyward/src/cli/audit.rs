//! `keyward audit verify` (offline: walks the hash chain in the data directory and checks the
//! signed checkpoints) and `keyward audit list` (the instance's events over the API).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use keyward_runtime::ServerConfig;
use serde_json::json;

use super::{Conn, connect};

/// `keyward audit ...`.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the whole audit chain offline (read-only); exit status 1 on any break.
    Verify(VerifyArgs),
    /// List the instance's audit events (needs the Manager role on the instance).
    List {
        #[command(flatten)]
        conn: Box<Conn>,
        #[command(flatten)]
        filters: Box<ListFilters>,
    },
}

/// Where the chain and the signing key are.
#[derive(Args)]
pub struct VerifyArgs {
    /// Data directory (database; software keystore unless --config names another backend).
    #[arg(long, env = "KEYWARD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The server's TOML configuration (its `[custody]` section, e.g. PKCS#11 HSMs).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The audit archive's directory (default: the config's archive, `[audit] archive_dir` or
    /// `[audit.s3]`, or the data directory's `audit-archive` when it exists); its segments and
    /// the database's rows are walked as one chain.
    #[arg(long)]
    archive_dir: Option<PathBuf>,
    /// The archive's oldest segments were deleted on purpose (aged out by a retention rule):
    /// start at the oldest segment left, whose events its signed checkpoint vouches for, instead
    /// of reporting seq 1 onwards as missing. The report says where the walk started.
    #[arg(long)]
    aged_out: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Filters and paging of `audit list`.
#[derive(Args)]
pub struct ListFilters {
    /// Events at or after this RFC 3339 time.
    #[arg(long)]
    from: Option<String>,
    /// Events before this RFC 3339 time.
    #[arg(long)]
    to: Option<String>,
    /// Action, e.g. kms.secrets.wrap.
    #[arg(long)]
    action: Option<String>,
    /// Key id.
    #[arg(long)]
    key_id: Option<String>,
    /// Initiator (IAM id).
    #[arg(long)]
    initiator: Option<String>,
    /// success or failure.
    #[arg(long)]
    outcome: Option<String>,
    /// Most events (up to 5000).
    #[arg(long, default_value_t = 200)]
    limit: u32,
    /// Events to skip.
    #[arg(long, default_value_t = 0)]
    offset: u32,
    /// Keep printing new events as they are written (oldest first; Ctrl-C stops); with --json,
    /// one JSON object per line.
    #[arg(long)]
    follow: bool,
}

/// Runs an audit subcommand; `Ok(false)` means the chain is broken.
pub async fn run(command: AuditCommand) -> anyhow::Result<bool> {
    match command {
        AuditCommand::Verify(args) => verify(args).await,
        AuditCommand::List { conn, filters } => list(*conn, *filters).await.map(|()| true),
    }
}

async fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    let mut config = match &args.config {
        Some(p) => ServerConfig::from_file(p)?,
        None => ServerConfig::default(),
    };
    match (args.data_dir, &args.config) {
        (Some(d), _) => config.data_dir = d,
        (None, Some(_)) => {}
        (None, None) => anyhow::bail!("pass --data-dir (or --config naming a data_dir)"),
    }
    let custody = keyward_runtime::open_custody(&config, false)?;
    let archive: Option<std::sync::Arc<dyn keyward_store::archive::SegmentStore>> =
        match (args.archive_dir, config.audit_archive()) {
            (Some(d), _) => Some(std::sync::Arc::new(
                keyward_store::archive::DirSegments::new(d),
            )),
            (None, Some(keyward_runtime::config::ArchiveTarget::Dir(d))) if !d.exists() => None,
            (None, _) => keyward_runtime::archive::open_archive(&config)?,
        };
    let start = if args.aged_out {
        keyward_store::ArchiveStart::OldestSegment
    } else {
        keyward_store::ArchiveStart::Genesis
    };
    let trail = match config.store.postgres()? {
        Some(options) => {
            let store = keyward_store::PgStore::connect(&options)
                .await
                .context("opening the PostgreSQL store")?;
            keyward_store::verify_audit_trail_pg(
                &store,
                archive.as_deref(),
                start,
                custody.as_ref(),
            )
            .await
            .context("reading the audit trail in PostgreSQL")?
        }
        None => keyward_store::verify_audit_trail(
            &config.data_dir,
            archive.as_deref(),
            start,
            custody.as_ref(),
        )
        .with_context(|| format!("reading the audit trail in {}", config.data_dir.display()))?,
    };
    let report = &trail.chain;
    let ok = report.first_break.is_none();
    let archived = trail.archive.as_ref().map(|a| {
        json!({
            "dir": archive.as_ref().map(|d| d.location()),
            "segments": a.segments,
            "events": a.events,
            "head": a.head.map(|(seq, h)| json!({"seq": seq, "hash": keyward_api::hex(&h)})),
            "agedOutBefore": a.aged_out_before,
        })
    });
    if args.json {
        let brk = report.first_break.as_ref().map(|b| {
            json!({
                "kind": b.kind.as_str(),
                "seq": b.seq,
                "id": b.id.map(|i| i.to_string()),
                "detail": b.detail,
            })
        });
        let out = json!({
            "ok": ok,
            "events": report.events,
            "head": report.head.map(|(seq, h)| json!({"seq": seq, "hash": keyward_api::hex(&h)})),
            "checkpoints": report.checkpoints,
            "lastGoodCheckpoint": report.last_good_checkpoint,
            "firstBreak": brk,
            "databaseFirstSeq": report.first.map(|f| f.0),
            "archive": archived,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let (Some(a), Some(d)) = (&trail.archive, &archive) {
            println!(
                "archive {}: {} segments, {} events, up to seq {}",
                d.location(),
                a.segments,
                a.events,
                a.head.map_or(0, |h| h.0)
            );
            if let Some(from) = a.aged_out_before {
                println!(
                    "archive: events before seq {from} were aged out (--aged-out): not verified"
                );
            }
        }
        match &report.first_break {
            None => println!(
                "audit chain intact: {} events, head seq {}, {} checkpoints verified",
                report.events,
                report.head.map_or(0, |h| h.0),
                report.checkpoints
            ),
            Some(b) => println!(
                "audit chain BROKEN: {} at seq {}{}: {}",
                b.kind.as_str(),
                b.seq,
                b.id.map(|i| format!(" (id {i})")).unwrap_or_default(),
                b.detail
            ),
        }
    }
    Ok(ok)
}

async fn list(conn: Conn, f: ListFilters) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    let mut filters = Vec::new();
    for (name, v) in [
        ("from", f.from),
        ("to", f.to),
        ("action", f.action),
        ("keyId", f.key_id),
        ("initiator", f.initiator),
        ("outcome", f.outcome),
    ] {
        if let Some(v) = v {
            filters.push((name, v));
        }
    }
    if f.follow {
        return follow(&client, &filters, f.limit, f.offset, conn.json).await;
    }
    let page = client.audit_events(&filters, f.limit, f.offset).await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&page)?);
        return Ok(());
    }
    print_header();
    for e in &page.resources {
        print_event(e);
    }
    println!(
        "{} of {} events (oldest first; --offset pages on, --follow waits for new ones)",
        page.resources.len(),
        page.metadata.total_count.unwrap_or(0)
    );
    if let Some(seq) = page.metadata.archived_through {
        println!(
            "events up to seq {seq} were archived and pruned from the database: they are not listed here but in the server's audit archive ([audit] archive_dir; `keyward audit verify` walks it)"
        );
    }
    Ok(())
}

fn print_header() {
    println!(
        "{:>8}  {:<24}  {:<28} {:<7} REASON  INITIATOR  TARGET",
        "SEQ", "TIME", "ACTION", "OUTCOME"
    );
}

fn print_event(e: &keyward_api::AuditEventView) {
    // An aggregated event says how many requests it stands for after its target.
    let count = e
        .aggregated
        .as_ref()
        .map(|a| format!("  (x{} in {} s)", a.count, a.window_seconds))
        .unwrap_or_default();
    println!(
        "{:>8}  {:<24}  {:<28} {:<7} {}  {}  {}{count}",
        e.seq,
        e.event_time,
        e.action,
        e.outcome,
        e.reason_code,
        e.initiator.id,
        e.target.id.as_deref().unwrap_or("-")
    );
}

/// `audit list --follow`: every page from `offset` on, then new events as they come.
async fn follow(
    client: &keyward_client::Client,
    filters: &[(&str, String)],
    limit: u32,
    mut offset: u32,
    json: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    if !json {
        print_header();
    }
    loop {
        let page = client.audit_events(filters, limit.max(1), offset).await?;
        for e in &page.resources {
            if json {
                println!("{}", serde_json::to_string(e)?);
            } else {
                print_event(e);
            }
        }
        std::io::stdout().flush()?;
        let got = u32::try_from(page.resources.len()).unwrap_or(u32::MAX);
        offset = offset.saturating_add(got);
        if got < limit.max(1) {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                () = keyward_client::shutdown_signal() => return Ok(()),
            }
        }
    }
}
