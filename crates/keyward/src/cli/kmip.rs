//! `keyward kmip`: KMIP adapters, their client certificates and KMIP objects.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use keyward_api::{KmipAdapter, KmipCertificate, KmipObject};
use keyward_client::KmipPage;
use serde_json::json;

use super::{Conn, connect, out};

#[derive(Subcommand)]
pub enum KmipCommand {
    /// List, create, show and delete KMIP adapters.
    Adapters {
        #[command(subcommand)]
        command: AdaptersCommand,
    },
    /// List, add, show and delete an adapter's client certificates.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// List, show and destroy an adapter's KMIP objects.
    Objects {
        #[command(subcommand)]
        command: ObjectsCommand,
    },
}

/// Paging flags of the list subcommands.
#[derive(clap::Args, Clone, Copy)]
pub struct PageArgs {
    /// At most this many (adapters and certificates: up to 200; objects: up to 5000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Skip this many.
    #[arg(long, default_value_t = 0)]
    offset: u32,
}

impl From<PageArgs> for KmipPage {
    fn from(p: PageArgs) -> Self {
        KmipPage {
            limit: p.limit,
            offset: p.offset,
        }
    }
}

#[derive(Subcommand)]
pub enum AdaptersCommand {
    /// List the instance's KMIP adapters.
    List {
        /// Only the adapters on this root key (id).
        #[arg(long, value_name = "ID")]
        crk: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Create a KMIP adapter (profile native_1.0) on an active root key.
    Create {
        /// The root key: id or alias.
        #[arg(long, value_name = "ID_OR_ALIAS")]
        crk: String,
        /// Name (letters, digits, `-`, `_`; generated when absent).
        #[arg(long)]
        name: Option<String>,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// Accept a root key with an expiration date.
        #[arg(long)]
        allow_expiring_key: bool,
    },
    /// Show an adapter (by id or name).
    Show { adapter: String },
    /// Delete an adapter and its client certificates (refused while it has Active objects).
    Delete { adapter: String },
}

#[derive(Subcommand)]
pub enum CertsCommand {
    /// List an adapter's client certificates (without the PEM).
    List {
        adapter: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Add a client certificate (one PEM certificate) to an adapter.
    Add {
        adapter: String,
        /// The certificate, PEM (`-` for stdin).
        #[arg(long, value_name = "PEM")]
        file: PathBuf,
        /// Name (letters, digits, `-`, `_`; generated when absent).
        #[arg(long)]
        name: Option<String>,
    },
    /// Show a client certificate (by id or name), with its PEM.
    Show { adapter: String, cert: String },
    /// Remove a client certificate.
    Delete { adapter: String, cert: String },
}

#[derive(Subcommand)]
pub enum ObjectsCommand {
    /// List an adapter's KMIP objects (by default in states 1 to 4).
    List {
        adapter: String,
        /// Only these KMIP states (1 pre-active, 2 active, 3 deactivated, 4 compromised,
        /// 5 destroyed, 6 destroyed compromised).
        #[arg(long, value_name = "N,...", value_delimiter = ',',
              value_parser = clap::value_parser!(u8).range(1..=6))]
        state: Vec<u8>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show a KMIP object (by id).
    Show { adapter: String, object: String },
    /// Destroy a KMIP object (--force: also an Active one).
    Delete {
        adapter: String,
        object: String,
        /// Also destroy an Active object.
        #[arg(long)]
        force: bool,
    },
}

/// The name of a KMIP object state.
fn kmip_state_name(s: u8) -> &'static str {
    match s {
        1 => "pre-active",
        2 => "active",
        3 => "deactivated",
        4 => "compromised",
        5 => "destroyed",
        6 => "destroyed compromised",
        _ => "unknown",
    }
}

fn crk(a: &KmipAdapter) -> &str {
    a.profile_data
        .as_ref()
        .and_then(|p| p.crk_id.as_deref())
        .unwrap_or("-")
}

fn print_adapter(a: &KmipAdapter) {
    println!("id:          {}", a.id);
    println!("name:        {}", a.name);
    if let Some(d) = &a.description {
        println!("description: {d}");
    }
    println!("profile:     {}", a.profile);
    println!("root key:    {}", crk(a));
    println!(
        "created:     {} by {}",
        a.created_at.as_deref().unwrap_or("-"),
        a.created_by
    );
    println!(
        "updated:     {} by {}",
        a.updated_at.as_deref().unwrap_or("-"),
        a.updated_by
    );
}

fn print_certificate(c: &KmipCertificate) {
    println!("id:          {}", c.id);
    println!("name:        {}", c.name);
    println!(
        "created:     {} by {}",
        c.created_at.as_deref().unwrap_or("-"),
        c.created_by
    );
    if let Some(pem) = &c.certificate {
        print!("{pem}");
        if !pem.ends_with('\n') {
            println!();
        }
    }
}

fn print_object(o: &KmipObject) {
    println!("id:          {}", o.id);
    println!("type:        {}", o.kmip_object_type);
    if let Some(s) = o.state {
        println!("state:       {s} ({})", kmip_state_name(s));
    }
    println!(
        "created:     {} by {} (certificate {})",
        o.created_at.as_deref().unwrap_or("-"),
        o.created_by.as_deref().unwrap_or("-"),
        o.created_by_kmip_client_cert_id
    );
    if let Some(u) = &o.updated_at {
        println!(
            "updated:     {u} by {}",
            o.updated_by.as_deref().unwrap_or("-")
        );
    }
    if let Some(d) = &o.destroyed_at {
        println!(
            "destroyed:   {d} by {}",
            o.destroyed_by.as_deref().unwrap_or("-")
        );
    }
}

fn total(shown: usize, total: Option<u64>) -> String {
    match total {
        Some(t) => format!("{shown} of {t}"),
        None => shown.to_string(),
    }
}

/// A PEM certificate from a file, or stdin for `-`; checked for its markers before sending.
fn read_pem(path: &PathBuf) -> anyhow::Result<String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    if !text.contains("-----BEGIN CERTIFICATE-----") || !text.contains("-----END CERTIFICATE-----")
    {
        bail!(
            "{}: not a PEM certificate (no BEGIN/END CERTIFICATE lines)",
            path.display()
        );
    }
    Ok(text)
}

/// Runs a `keyward kmip` subcommand.
pub async fn run(conn: Conn, command: KmipCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        KmipCommand::Adapters { command } => match command {
            AdaptersCommand::List { crk: by_crk, page } => {
                let c = client.kmip_adapters(by_crk.as_deref(), page.into()).await?;
                out(conn.json, &c, || {
                    println!("{:<36}  {:<24}  {:<36}  CREATED", "ID", "NAME", "ROOT KEY");
                    for a in &c.resources {
                        println!(
                            "{:<36}  {:<24}  {:<36}  {}",
                            a.id,
                            a.name,
                            crk(a),
                            a.created_at.as_deref().unwrap_or("-")
                        );
                    }
                    println!(
                        "({} adapters)",
                        total(c.resources.len(), c.metadata.total_count)
                    );
                })
            }
            AdaptersCommand::Create {
                crk,
                name,
                description,
                allow_expiring_key,
            } => {
                let a = client
                    .create_kmip_adapter(&crk, name, description, allow_expiring_key)
                    .await?;
                out(conn.json, &a, || print_adapter(&a))
            }
            AdaptersCommand::Show { adapter } => {
                let a = client.kmip_adapter(&adapter).await?;
                out(conn.json, &a, || print_adapter(&a))
            }
            AdaptersCommand::Delete { adapter } => {
                client.delete_kmip_adapter(&adapter).await?;
                out(conn.json, &json!({"id": adapter, "deleted": true}), || {
                    println!("deleted KMIP adapter {adapter}")
                })
            }
        },
        KmipCommand::Certs { command } => match command {
            CertsCommand::List { adapter, page } => {
                let c = client.kmip_certificates(&adapter, page.into()).await?;
                out(conn.json, &c, || {
                    println!(
                        "{:<36}  {:<24}  {:<20}  CREATED BY",
                        "ID", "NAME", "CREATED"
                    );
                    for cert in &c.resources {
                        println!(
                            "{:<36}  {:<24}  {:<20}  {}",
                            cert.id,
                            cert.name,
                            cert.created_at.as_deref().unwrap_or("-"),
                            cert.created_by
                        );
                    }
                    println!(
                        "({} certificates)",
                        total(c.resources.len(), c.metadata.total_count)
                    );
                })
            }
            CertsCommand::Add {
                adapter,
                file,
                name,
            } => {
                let pem = read_pem(&file)?;
                let c = client.add_kmip_certificate(&adapter, &pem, name).await?;
                out(conn.json, &c, || print_certificate(&c))
            }
            CertsCommand::Show { adapter, cert } => {
                let c = client.kmip_certificate(&adapter, &cert).await?;
                out(conn.json, &c, || print_certificate(&c))
            }
            CertsCommand::Delete { adapter, cert } => {
                client.delete_kmip_certificate(&adapter, &cert).await?;
                out(
                    conn.json,
                    &json!({"adapter": adapter, "id": cert, "deleted": true}),
                    || println!("deleted client certificate {cert} of {adapter}"),
                )
            }
        },
        KmipCommand::Objects { command } => match command {
            ObjectsCommand::List {
                adapter,
                state,
                page,
            } => {
                let c = client.kmip_objects(&adapter, &state, page.into()).await?;
                out(conn.json, &c, || {
                    println!("{:<36}  {:<4}  {:<22}  CREATED", "ID", "TYPE", "STATE");
                    for o in &c.resources {
                        let st = o
                            .state
                            .map(|s| format!("{s} ({})", kmip_state_name(s)))
                            .unwrap_or_else(|| "-".into());
                        println!(
                            "{:<36}  {:<4}  {:<22}  {}",
                            o.id,
                            o.kmip_object_type,
                            st,
                            o.created_at.as_deref().unwrap_or("-")
                        );
                    }
                    println!(
                        "({} objects)",
                        total(c.resources.len(), c.metadata.total_count)
                    );
                })
            }
            ObjectsCommand::Show { adapter, object } => {
                let o = client.kmip_object(&adapter, &object).await?;
                out(conn.json, &o, || print_object(&o))
            }
            ObjectsCommand::Delete {
                adapter,
                object,
                force,
            } => {
                client.delete_kmip_object(&adapter, &object, force).await?;
                out(
                    conn.json,
                    &json!({"adapter": adapter, "id": object, "deleted": true}),
                    || println!("destroyed KMIP object {object} of {adapter}"),
                )
            }
        },
    }
}
