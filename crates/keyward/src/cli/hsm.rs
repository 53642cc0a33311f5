//! `keyward hsm init|check --config FILE`: prepare and inspect the HSMs a PKCS#11 custody
//! configuration names.

use std::path::PathBuf;

use clap::Subcommand;
use keyward_server::ServerConfig;

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
}

fn pkcs11_config(path: &std::path::Path) -> anyhow::Result<keyward_custody_pkcs11::Pkcs11Config> {
    let config = ServerConfig::from_file(path)?;
    config
        .custody
        .pkcs11()?
        .ok_or_else(|| anyhow::anyhow!("{}: custody.backend is not pkcs11", path.display()))
}

/// Runs an `hsm` subcommand.
pub fn run(command: HsmCommand) -> anyhow::Result<()> {
    match command {
        HsmCommand::Init { config } => {
            let report = keyward_custody_pkcs11::init_objects(&pkcs11_config(&config)?)?;
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
