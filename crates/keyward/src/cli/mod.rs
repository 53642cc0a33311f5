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
pub mod dev;
pub mod hsm;
pub mod iam;
pub mod keys;
pub mod kmip;
pub mod ops;
pub mod profile;
pub mod services;
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
    /// A profile saved by `keyward login` (default: the profile `default`, if saved); flags,
    /// variables and --bootstrap win.
    #[arg(long, env = "KEYWARD_PROFILE", global = true)]
    profile: Option<String>,
    /// The only trusted certificates (PEM): a CA, or the server's own self-signed certificate.
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

/// Where a client's settings come from, in order: flags and variables, then the bootstrap
/// file, then the saved profile.
pub struct Sources<'a> {
    /// `--url`.
    pub url: &'a Option<String>,
    /// `--api-key`.
    pub api_key: &'a Option<String>,
    /// `--instance` (None for the account-wide `iam` commands).
    pub instance: Option<&'a Option<String>>,
    /// `--bootstrap`.
    pub bootstrap: &'a Option<PathBuf>,
    /// `--profile`.
    pub profile: &'a Option<String>,
    /// `--ca-cert`.
    pub ca_cert: &'a Option<PathBuf>,
}

/// The settings a client is made from.
pub struct Settings {
    /// Server URL.
    pub url: String,
    /// API key.
    pub api_key: String,
    /// Instance id (when asked for).
    pub instance: Option<String>,
    /// Trusted certificates (PEM file).
    pub ca_cert: Option<PathBuf>,
}

impl Sources<'_> {
    /// Resolves the settings, naming what is missing and how to give it.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let boot: Option<serde_json::Value> = match self.bootstrap {
            Some(p) => Some(
                serde_json::from_str(&std::fs::read_to_string(p).with_context(|| {
                    format!(
                        "reading {} (given by --bootstrap or KEYWARD_BOOTSTRAP; if it is lost, \
                         `keyward recover admin-key --data-dir DIR`, server stopped, makes a new \
                         administrator API key)",
                        p.display()
                    )
                })?)
                .with_context(|| format!("{} is not a bootstrap.json", p.display()))?,
            ),
            None => None,
        };
        let given = |flag: &Option<String>, boot_key: &str| {
            flag.clone().or_else(|| {
                boot.as_ref()
                    .and_then(|b| b[boot_key].as_str().map(str::to_owned))
            })
        };
        // A profile is read when named, or when flags, variables and bootstrap file leave a
        // setting open (then `default`, if saved): a complete command line needs no HOME.
        let complete = given(self.url, "url").is_some()
            && given(self.api_key, "api_key").is_some()
            && self
                .instance
                .is_none_or(|i| given(i, "instance_id").is_some());
        let saved = if self.profile.is_some() || !complete {
            profile::load(self.profile.as_deref())?
        } else {
            None
        };
        let pick = |flag: &Option<String>, boot_key: &str, saved_value: Option<&String>| {
            given(flag, boot_key).or_else(|| saved_value.cloned())
        };
        let url = pick(self.url, "url", saved.as_ref().map(|p| &p.url)).context(
            "no server URL: pass --url (or set KEYWARD_URL), --bootstrap FILE, or save a \
             profile with `keyward login`",
        )?;
        let api_key = pick(self.api_key, "api_key", saved.as_ref().map(|p| &p.api_key)).context(
            "no API key: set KEYWARD_API_KEY, pass --bootstrap FILE, or save a profile with \
             `keyward login`",
        )?;
        let instance = match self.instance {
            Some(flag) => Some(
                pick(flag, "instance_id", saved.as_ref().map(|p| &p.instance))
                    .context("no instance: pass --instance (or set KEYWARD_INSTANCE), --bootstrap FILE, or save a profile with `keyward login`")?,
            ),
            None => None,
        };
        let ca_cert = self
            .ca_cert
            .clone()
            .or_else(|| saved.as_ref().and_then(|p| p.ca_cert.clone()));
        Ok(Settings {
            url,
            api_key,
            instance,
            ca_cert,
        })
    }
}

impl Settings {
    /// The trusted certificates' PEM, if any.
    pub fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        match &self.ca_cert {
            Some(p) => Ok(Some(std::fs::read(p).with_context(|| {
                format!("reading the CA certificate {}", p.display())
            })?)),
            None => Ok(None),
        }
    }
}

impl Conn {
    /// Where this command's settings come from.
    pub fn sources(&self) -> Sources<'_> {
        Sources {
            url: &self.url,
            api_key: &self.api_key,
            instance: Some(&self.instance),
            bootstrap: &self.bootstrap,
            profile: &self.profile,
            ca_cert: &self.ca_cert,
        }
    }
}

/// A client from the flags, variables, bootstrap file and saved profile.
pub fn connect(conn: &Conn) -> anyhow::Result<Client> {
    let s = conn.sources().resolve()?;
    let instance = s.instance.clone().unwrap_or_default();
    Ok(
        Client::new(&s.url, &s.api_key, &instance, s.ca_pem()?.as_deref())?
            .with_key_ring(conn.key_ring.clone()),
    )
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
