//! `keyward aliases`, `keyward rings` and `keyward instance`.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use keyward_api::{InstancePolicyData, InstancePolicyIn, InstancePolicyView};
use serde_json::{Map, Value, json};

use super::{Conn, connect, out};

#[derive(Subcommand)]
pub enum AliasesCommand {
    /// Give a key an alias (usable wherever a key id is).
    Add { id: String, alias: String },
    /// Remove an alias from a key.
    Remove { id: String, alias: String },
}

#[derive(Subcommand)]
pub enum RingsCommand {
    /// List the instance's key rings.
    List,
    /// Create a key ring.
    Create { ring: String },
    /// Delete an empty key ring (--force: one that holds only deleted keys).
    Delete {
        ring: String,
        /// Also delete a ring that still holds deleted keys (they move to `default`).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum InstanceCommand {
    /// Show or set instance policies.
    Policy {
        #[command(subcommand)]
        command: InstancePolicyCommand,
    },
    /// Show the private endpoint port (while an allowedIP policy is in force).
    AllowedIpPort,
}

#[derive(Subcommand)]
pub enum InstancePolicyCommand {
    /// Show the instance's policies.
    Show {
        /// Only this policy: dual-auth, rotation, allowed-network, allowed-ip, create-import,
        /// metrics (or the Key Protect names).
        #[arg(long, value_name = "TYPE", value_parser = parse_policy_type)]
        policy: Option<&'static str>,
    },
    /// Set one or more instance policies in one request.
    Set(InstancePolicySet),
}

#[derive(Args)]
pub struct InstancePolicySet {
    /// Require two identities to delete keys.
    #[arg(long, value_name = "BOOL")]
    dual_auth: Option<bool>,
    /// Rotate new keys automatically every N months (1 to 12).
    #[arg(long, value_name = "N")]
    rotation_months: Option<i64>,
    /// Accept requests only from these IPv4/IPv6 CIDR ranges (comma-separated).
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',')]
    allowed_ip: Option<Vec<String>>,
    /// Which endpoints may be used.
    #[arg(long, value_name = "NETWORK", value_parser = ["private-only", "public-and-private"])]
    allowed_network: Option<String>,
    /// Who may create and import keys: root=BOOL,standard=BOOL,import-root=BOOL,
    /// import-standard=BOOL,enforce-token=BOOL (unnamed ones: allowed, enforce-token off).
    #[arg(long, value_name = "K=BOOL,...")]
    create_import: Option<String>,
    /// Turn metrics on or off.
    #[arg(long, value_name = "BOOL")]
    metrics: Option<bool>,
    /// Turn these policies off (comma-separated types: rotation, allowed-ip, allowed-network,
    /// create-import, dual-auth, metrics); their settings are kept unless also given.
    #[arg(long, value_name = "TYPE,...", value_delimiter = ',', value_parser = parse_policy_type)]
    disable: Vec<&'static str>,
}

/// An instance policy's `attributes`.
type Attributes = Map<String, Value>;

/// A policy type as the CLI or Key Protect names it, to Key Protect's name.
fn parse_policy_type(s: &str) -> Result<&'static str, String> {
    Ok(match s {
        "dual-auth" | "dualAuthDelete" => "dualAuthDelete",
        "rotation" => "rotation",
        "allowed-network" | "allowedNetwork" => "allowedNetwork",
        "allowed-ip" | "allowedIP" => "allowedIP",
        "create-import" | "keyCreateImportAccess" => "keyCreateImportAccess",
        "metrics" => "metrics",
        _ => {
            return Err(
                "one of dual-auth, rotation, allowed-network, allowed-ip, create-import, metrics"
                    .into(),
            );
        }
    })
}

fn parse_create_import(spec: &str) -> anyhow::Result<Map<String, Value>> {
    let mut attrs = Map::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .with_context(|| format!("--create-import: `{part}` is not NAME=true|false"))?;
        let attr = match name.trim() {
            "root" | "create-root" | "create_root_key" => "create_root_key",
            "standard" | "create-standard" | "create_standard_key" => "create_standard_key",
            "import-root" | "import_root_key" => "import_root_key",
            "import-standard" | "import_standard_key" => "import_standard_key",
            "enforce-token" | "enforce_token" => "enforce_token",
            other => bail!(
                "--create-import: unknown `{other}` (root, standard, import-root, \
                 import-standard, enforce-token)"
            ),
        };
        let value: bool = value
            .trim()
            .parse()
            .with_context(|| format!("--create-import: {name}: true or false"))?;
        attrs.insert(attr.to_owned(), Value::Bool(value));
    }
    Ok(attrs)
}

impl InstancePolicySet {
    /// The policies to send, in Key Protect's order.
    fn policies(self) -> anyhow::Result<Vec<InstancePolicyIn>> {
        let attrs = |v: Value| v.as_object().cloned();
        let create_import = self
            .create_import
            .as_deref()
            .map(parse_create_import)
            .transpose()?;
        // (type, enabled from a boolean flag, attributes from a setting flag)
        let given: [(&str, Option<bool>, Option<Attributes>); 6] = [
            ("dualAuthDelete", self.dual_auth, None),
            (
                "rotation",
                None,
                self.rotation_months
                    .and_then(|m| attrs(json!({ "interval_month": m }))),
            ),
            (
                "allowedNetwork",
                None,
                self.allowed_network
                    .and_then(|n| attrs(json!({ "allowed_network": n }))),
            ),
            (
                "allowedIP",
                None,
                self.allowed_ip
                    .and_then(|ips| attrs(json!({ "allowed_ip": ips }))),
            ),
            ("keyCreateImportAccess", None, create_import),
            ("metrics", self.metrics, None),
        ];
        let mut out = Vec::new();
        for (policy_type, flag, attributes) in given {
            let disabled = self.disable.contains(&policy_type);
            if flag == Some(true) && disabled {
                bail!("{policy_type}: both enabled and in --disable");
            }
            if flag.is_none() && attributes.is_none() && !disabled {
                continue;
            }
            out.push(InstancePolicyIn {
                policy_type: policy_type.to_owned(),
                policy_data: InstancePolicyData {
                    enabled: flag.unwrap_or(!disabled) && !disabled,
                    attributes,
                },
            });
        }
        if out.is_empty() {
            bail!(
                "nothing to set: give --dual-auth, --rotation-months, --allowed-ip, \
                 --allowed-network, --create-import, --metrics or --disable"
            );
        }
        Ok(out)
    }
}

/// Runs a `keyward aliases` subcommand.
pub async fn aliases(conn: Conn, command: AliasesCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        AliasesCommand::Add { id, alias } => {
            let a = client.create_alias(&id, &alias).await?;
            out(conn.json, &a, || {
                println!("{} is now an alias of {}", a.alias, a.key_id)
            })
        }
        AliasesCommand::Remove { id, alias } => {
            client.delete_alias(&id, &alias).await?;
            out(
                conn.json,
                &json!({"keyId": id, "alias": alias, "removed": true}),
                || println!("removed alias {alias} from {id}"),
            )
        }
    }
}

/// Runs a `keyward rings` subcommand.
pub async fn rings(conn: Conn, command: RingsCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        RingsCommand::List => {
            let c = client.key_rings().await?;
            out(conn.json, &c, || {
                println!("{:<32}  {:<20}  CREATED BY", "ID", "CREATED");
                for r in &c.resources {
                    println!(
                        "{:<32}  {:<20}  {}",
                        r.id,
                        r.creation_date.as_deref().unwrap_or("-"),
                        r.created_by.as_deref().unwrap_or("-")
                    );
                }
            })
        }
        RingsCommand::Create { ring } => {
            client.create_key_ring(&ring).await?;
            out(conn.json, &json!({"id": ring, "created": true}), || {
                println!("created key ring {ring}")
            })
        }
        RingsCommand::Delete { ring, force } => {
            client.delete_key_ring(&ring, force).await?;
            out(conn.json, &json!({"id": ring, "deleted": true}), || {
                println!("deleted key ring {ring}")
            })
        }
    }
}

fn print_instance_policies(policies: &[InstancePolicyView]) {
    if policies.is_empty() {
        println!("no instance policies set");
        return;
    }
    println!("{:<22}  {:<8}  SETTINGS", "POLICY", "ENABLED");
    for p in policies {
        let settings = p
            .policy_data
            .attributes
            .as_ref()
            .map(|a| {
                a.iter()
                    .map(|(k, v)| match v {
                        Value::Array(items) => format!(
                            "{k}={}",
                            items
                                .iter()
                                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        println!(
            "{:<22}  {:<8}  {settings}",
            p.policy_type, p.policy_data.enabled
        );
    }
}

/// Runs a `keyward instance` subcommand.
pub async fn instance(conn: Conn, command: InstanceCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        InstanceCommand::Policy { command } => match command {
            InstancePolicyCommand::Show { policy } => {
                let c = client.instance_policies(policy).await?;
                out(conn.json, &c, || print_instance_policies(&c.resources))
            }
            InstancePolicyCommand::Set(set) => {
                let policies = set.policies()?;
                client.set_instance_policies(&policies).await?;
                // The PUT answers 204: show what is now in force.
                let c = client.instance_policies(None).await?;
                out(conn.json, &c, || print_instance_policies(&c.resources))
            }
        },
        InstanceCommand::AllowedIpPort => {
            let c = client.allowed_ip_port().await?;
            out(conn.json, &c, || match c.resources.first() {
                Some(p) => println!("private endpoint port: {}", p.private_endpoint_port),
                None => println!("no allowedIP policy is in force"),
            })
        }
    }
}

/// Refuses a key ring the instance does not have (a `--key-ring` typo would otherwise list
/// "0 of 0 keys" and exit 0). Callers that may not list key rings are not checked here.
pub async fn require_ring(client: &keyward_client::Client, ring: &str) -> anyhow::Result<()> {
    let Ok(c) = client.key_rings().await else {
        return Ok(());
    };
    let complete = c
        .metadata
        .total_count
        .unwrap_or(c.metadata.collection_total)
        <= u64::try_from(c.resources.len()).unwrap_or(u64::MAX);
    if complete && !c.resources.iter().any(|r| r.id == ring) {
        anyhow::bail!(
            "key ring {ring:?} does not exist in this instance: `keyward rings list` shows the \
             key rings, `keyward rings create {ring}` makes it"
        );
    }
    Ok(())
}
