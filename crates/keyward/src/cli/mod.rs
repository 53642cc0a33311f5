//! The client subcommands: connection flags, output helpers, and one module per command group.

use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use keyward_api::Key;
use keyward_client::Client;

pub mod admin;
pub mod audit;
pub mod custody;
pub mod hsm;
pub mod iam;
pub mod keys;
pub mod kmip;
pub mod store;

/// How to reach the server; shared by every client subcommand.
#[derive(Args)]
pub struct Conn {
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
    /// Key ring to work in (the X-Kms-Key-Ring header): keys outside it are not found, lists
    /// show only its keys, and new keys are created in it.
    #[arg(long, env = "KEYWARD_KEY_RING", global = true)]
    pub key_ring: Option<String>,
    /// Print JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A client from the flags, variables and bootstrap file.
pub fn connect(conn: &Conn) -> anyhow::Result<Client> {
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
    Ok(Client::new(&url, &api_key, &instance, ca.as_deref())?.with_key_ring(conn.key_ring.clone()))
}

/// Base64 material from a file, or stdin for `-`.
pub fn read_payload(source: &str) -> anyhow::Result<String> {
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

/// Prints a key for people.
pub fn print_key(k: &Key) {
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
    if !k.aliases.is_empty() {
        println!("aliases:     {}", k.aliases.join(", "));
    }
    if let Some(d) = &k.expiration_date {
        println!("expires:     {d}");
    }
    if let Some(r) = &k.rotation {
        println!(
            "rotation:    every {} month(s){}",
            r.interval_month,
            if r.enabled { "" } else { " (disabled)" }
        );
    }
    if k.dual_auth_delete.enabled {
        let set = match (
            k.dual_auth_delete.key_set_for_deletion,
            &k.dual_auth_delete.auth_expiration,
        ) {
            (Some(true), Some(until)) => format!(", set for deletion until {until}"),
            (Some(true), None) => ", set for deletion".to_owned(),
            _ => String::new(),
        };
        println!("dual auth:   required to delete{set}");
    }
    if let Some(d) = &k.deletion_date {
        println!(
            "deleted:     {d}{}",
            k.deleted_by
                .as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default()
        );
    }
    if let Some(d) = &k.restore_expiration_date {
        println!("restorable:  until {d}");
    }
    if let Some(d) = &k.purge_allowed_from {
        println!("purgeable:   from {d}");
    }
    if let Some(p) = &k.payload {
        println!("payload:     {}", p.expose());
    }
}

/// The name of a numeric key state.
pub fn state_name(s: u8) -> &'static str {
    match s {
        0 => "pre-active",
        1 => "active",
        2 => "suspended",
        3 => "deactivated",
        5 => "destroyed",
        _ => "unknown",
    }
}

/// `value` as JSON with `--json`, otherwise whatever `text` prints.
pub fn out<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        text();
    }
    Ok(())
}
