//! `keyward hsm init|check|rotate-master --config FILE`: prepare and inspect the HSMs a PKCS#11
//! custody configuration names, and rotate their master key.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use keyward_runtime::ServerConfig;

/// What to do with the configured HSMs.
#[derive(Subcommand)]
pub enum HsmCommand {
    /// Create the objects that are missing (MKEK, signing key, import key, transit key pairs) in
    /// every configured token, with the same key values in each; safe to run twice.
    Init {
        /// The server's TOML configuration (its `[custody]` section).
        #[arg(long)]
        config: PathBuf,
    },
    /// Report, for each configured token, what is present, what is missing and whether Keyward
    /// can use it. Exits non-zero when any token is unusable.
    Check {
        /// The server's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a new MKEK version to every token, rewrap every stored key (and the token-signing
    /// and transit keys) under it while servers keep running, then destroy the old versions.
    /// Interrupted, it finishes the same rotation when run again.
    RotateMaster {
        /// The server's TOML configuration (data directory and `[custody]`).
        #[arg(long)]
        config: PathBuf,
        /// Items moved per pass.
        #[arg(long, default_value_t = 100)]
        batch: u32,
        /// At most this many items per second, to spare an HSM that serves traffic.
        #[arg(long)]
        max_per_second: Option<u32>,
        /// Print the result as JSON (no progress bar).
        #[arg(long)]
        json: bool,
    },
}

fn pkcs11_config(path: &std::path::Path) -> anyhow::Result<keyward_custody_pkcs11::Pkcs11Config> {
    let config = ServerConfig::from_file(path)?;
    config
        .custody
        .require_pkcs11()
        .with_context(|| path.display().to_string())
}

async fn rotate_master(
    config: PathBuf,
    batch: u32,
    max_per_second: Option<u32>,
    json: bool,
) -> anyhow::Result<()> {
    use keyward_runtime::rotation::{RotateOptions, rotate_master};
    let config = ServerConfig::from_file(&config)?;
    let options = RotateOptions {
        batch,
        max_per_second,
        ..RotateOptions::default()
    };
    // Draws on stderr only when it is a terminal.
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(0)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "rewrapping {bar:40} {pos}/{len} ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = rotate_master(&config, &options, |p| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    })
    .await;
    bar.finish_and_clear();
    let report = report?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": report.version, "resumed": report.resumed, "moved": report.moved,
                "retired": report.retired, "unreachable": report.unreachable,
            })
        );
    } else {
        println!(
            "{} MKEK version {}: {} item(s) rewrapped; retired: {}",
            if report.resumed {
                "finished rotation to"
            } else {
                "rotated to"
            },
            report.version,
            report.moved,
            if report.retired.is_empty() {
                "nothing".to_owned()
            } else {
                report.retired.join(", ")
            },
        );
        for t in &report.unreachable {
            println!(
                "could not retire old versions on {t}: run rotate-master again when it is back"
            );
        }
    }
    Ok(())
}

/// Runs an `hsm` subcommand.
pub async fn run(command: HsmCommand) -> anyhow::Result<()> {
    match command {
        HsmCommand::RotateMaster {
            config,
            batch,
            max_per_second,
            json,
        } => rotate_master(config, batch, max_per_second, json).await,
        HsmCommand::Init { config } => {
            let pkcs11 = pkcs11_config(&config)?;
            // RSA-4096 transit pairs take tens of seconds in a software token: show that it
            // works (on stderr, only when it is a terminal).
            let spinner = indicatif::ProgressBar::new_spinner();
            spinner.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} ({elapsed}; RSA-4096 key pairs take a while)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            spinner.set_message("creating the keys in the tokens");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            let report = keyward_custody_pkcs11::init_objects(&pkcs11);
            spinner.finish_and_clear();
            let report = report?;
            if report.created.is_empty() {
                println!("nothing to create: every configured token holds every object");
            } else {
                for created in report.created {
                    println!("created {created}");
                }
            }
            Ok(())
        }
        HsmCommand::Check { config, json } => {
            let report = keyward_custody_pkcs11::check(&pkcs11_config(&config)?)?;
            let usable = report.tokens.iter().all(|t| t.usable());
            if json {
                let tokens: Vec<_> = report
                    .tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "token_label": t.label, "login_ok": t.login_ok, "usable": t.usable(),
                            "present": t.present, "missing": t.missing, "error": t.error,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "tokens": tokens, "usable": usable })
                );
            } else {
                for t in &report.tokens {
                    println!(
                        "{}: {} (login {}); present: {}; missing: {}{}",
                        t.label,
                        if t.usable() { "usable" } else { "NOT usable" },
                        if t.login_ok { "ok" } else { "failed" },
                        t.present.join(", "),
                        if t.missing.is_empty() {
                            "none".to_owned()
                        } else {
                            t.missing.join(", ")
                        },
                        t.error
                            .as_deref()
                            .map(|e| format!("; error: {e}"))
                            .unwrap_or_default(),
                    );
                }
            }
            if usable {
                Ok(())
            } else {
                anyhow::bail!("at least one HSM token is not usable")
            }
        }
    }
}
