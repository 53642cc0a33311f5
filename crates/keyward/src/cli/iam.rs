//! `keyward iam`: identities, API keys, access policies, service-to-service authorizations and
//! KMS instances of the caller's account (the `/iam/v1` management API).
//!
//! These commands act on the account of the API key, not on an instance, so their connection
//! flags have no `--instance` or `--key-ring` (which name a policy's or authorization's scope
//! here instead).

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};
use keyward_client::{AuthorizationSource, Client, NewAuthorization, NewIdentity, Resource};
use serde_json::json;

use super::out;

/// How to reach the server for `keyward iam`.
#[derive(Args)]
pub struct IamConn {
    /// Server URL.
    #[arg(long, env = "KEYWARD_URL", global = true)]
    url: Option<String>,
    /// API key of an administrator (prefer the environment variable: flags show up in `ps`).
    #[arg(long, env = "KEYWARD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Read URL and API key from a bootstrap.json (flags and variables win).
    #[arg(long, env = "KEYWARD_BOOTSTRAP", global = true)]
    bootstrap: Option<PathBuf>,
    /// A profile saved by `keyward login` (default: the profile `default`, if saved).
    #[arg(long, env = "KEYWARD_PROFILE", global = true)]
    profile: Option<String>,
    /// The only trusted certificates (PEM): a CA, or the server's own self-signed certificate.
    #[arg(long, env = "KEYWARD_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print the server's JSON instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum IamCommand {
    /// Users, service IDs and service instances.
    Identities {
        #[command(subcommand)]
        command: IdentitiesCommand,
    },
    /// API keys of identities.
    Apikeys {
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Access policies: an identity's roles on the account, an instance, a key ring or a key.
    Policies {
        #[command(subcommand)]
        command: PoliciesCommand,
    },
    /// Service-to-service authorizations.
    Authorizations {
        #[command(subcommand)]
        command: AuthorizationsCommand,
    },
    /// KMS instances of the account.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
}

#[derive(Subcommand)]
pub enum IdentitiesCommand {
    /// List the account's identities.
    List,
    /// Create an identity.
    Create {
        /// user, service_id, or service (an instance of an integrated service).
        #[arg(long, value_parser = ["user", "service_id", "service"])]
        kind: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Description.
        #[arg(long)]
        description: Option<String>,
        /// For --kind service: the service's name (e.g. messagehub).
        #[arg(long)]
        service_name: Option<String>,
        /// For --kind service: the service instance's id.
        #[arg(long)]
        service_instance: Option<String>,
    },
    /// Delete an identity with its API keys and access policies.
    Delete { iam_id: String },
    /// Lock an identity: its tokens stop working.
    Lock { iam_id: String },
    /// Unlock an identity.
    Unlock { iam_id: String },
}

#[derive(Subcommand)]
pub enum ApiKeysCommand {
    /// List the account's API keys (never their secrets).
    List,
    /// Create an API key; the key is printed this once.
    Create {
        /// The identity it authenticates as.
        #[arg(long)]
        iam_id: String,
        /// Name.
        #[arg(long)]
        name: String,
    },
    /// Delete an API key: its tokens stop working.
    Delete { id: String },
    /// Lock an API key: its tokens stop working.
    Lock { id: String },
    /// Unlock an API key.
    Unlock { id: String },
}

/// Where a policy or authorization applies.
#[derive(Args)]
pub struct ScopeArgs {
    /// An instance of the account.
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
    /// A key ring of that instance.
    #[arg(
        long,
        value_name = "RING",
        requires = "instance",
        conflicts_with = "key"
    )]
    key_ring: Option<String>,
    /// A key of that instance (its id).
    #[arg(long, value_name = "KEY_ID", requires = "instance")]
    key: Option<String>,
}

impl ScopeArgs {
    fn resource(self) -> Resource {
        Resource {
            account_id: None,
            instance_id: self.instance,
            key_ring: self.key_ring,
            key_id: self.key,
        }
    }
}

#[derive(Subcommand)]
pub enum PoliciesCommand {
    /// List the account's access policies.
    List,
    /// Give an identity roles on the account (no --instance), an instance, a key ring or a key.
    Create {
        /// IAM id of the identity.
        #[arg(long, value_name = "IAM_ID")]
        subject: String,
        /// Roles, comma-separated: Reader, ReaderPlus, Writer, Manager, KeyPurge,
        /// KmipAdapterManager, Administrator (account only).
        #[arg(long, value_name = "ROLE,...", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Delete an access policy.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum AuthorizationsCommand {
    /// List the account's service-to-service authorizations.
    List,
    /// Authorize a service (all its instances, or one) on an instance, key ring or key.
    Create {
        /// The source service's name (e.g. messagehub).
        #[arg(long, value_name = "SERVICE")]
        source_service: String,
        /// Only this instance of the source service.
        #[arg(long, value_name = "INSTANCE")]
        source_instance: Option<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Roles, comma-separated (Key Protect integrations use Reader).
        #[arg(long, value_name = "ROLE,...", value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Let the source service authorize its dependent services (--dependents) with a subset
        /// of these roles, one instance at a time.
        #[arg(long)]
        delegation: bool,
        /// With --delegation: the services the source may authorize, comma-separated.
        #[arg(long, value_name = "SERVICE,...", value_delimiter = ',')]
        dependents: Vec<String>,
    },
    /// Delete an authorization: the source service is cut off.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum InstancesCommand {
    /// List the account's KMS instances.
    List,
    /// Create a KMS instance.
    Create {
        /// Name.
        #[arg(long)]
        name: String,
    },
}

/// A client for the caller's account, from the flags, variables and bootstrap file.
fn connect(conn: &IamConn) -> anyhow::Result<Client> {
    let s = super::Sources {
        url: &conn.url,
        api_key: &conn.api_key,
        instance: None,
        bootstrap: &conn.bootstrap,
        profile: &conn.profile,
        ca_cert: &conn.ca_cert,
    }
    .resolve()?;
    Ok(Client::for_account(
        &s.url,
        &s.api_key,
        s.ca_pem()?.as_deref(),
    )?)
}

fn or_dash(s: Option<&str>) -> &str {
    s.filter(|s| !s.is_empty()).unwrap_or("-")
}

fn scope_text(r: &Resource) -> String {
    match (&r.instance_id, &r.key_ring, &r.key_id) {
        (Some(i), Some(ring), _) => format!("instance {i} key ring {ring}"),
        (Some(i), None, Some(k)) => format!("instance {i} key {k}"),
        (Some(i), None, None) => format!("instance {i}"),
        (None, ..) => format!("account {}", or_dash(r.account_id.as_deref())),
    }
}

/// Prints what a delete, lock or unlock did (`{"id": .., what: true}` with --json).
fn done(json: bool, field: &str, id: &str, what: &str, text: String) -> anyhow::Result<()> {
    out(json, &json!({ field: id, what: true }), || {
        println!("{text}")
    })
}

/// Runs a `keyward iam` subcommand.
pub async fn run(conn: IamConn, command: IamCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    let json = conn.json;
    match command {
        IamCommand::Identities { command } => identities(&client, json, command).await,
        IamCommand::Apikeys { command } => api_keys(&client, json, command).await,
        IamCommand::Policies { command } => policies(&client, json, command).await,
        IamCommand::Authorizations { command } => authorizations(&client, json, command).await,
        IamCommand::Instances { command } => instances(&client, json, command).await,
    }
}

async fn identities(client: &Client, json: bool, command: IdentitiesCommand) -> anyhow::Result<()> {
    match command {
        IdentitiesCommand::List => {
            let all = client.identities().await?;
            out(
                json,
                &json!({"count": all.len(), "identities": all}),
                || {
                    println!("{:<48}  {:<10}  {:<6}  NAME", "IAM ID", "KIND", "LOCKED");
                    for i in &all {
                        println!(
                            "{:<48}  {:<10}  {:<6}  {}",
                            i.iam_id, i.kind, i.locked, i.name
                        );
                    }
                },
            )
        }
        IdentitiesCommand::Create {
            kind,
            name,
            description,
            service_name,
            service_instance,
        } => {
            if kind == "service" && (service_name.is_none() || service_instance.is_none()) {
                bail!("--kind service needs --service-name and --service-instance");
            }
            let i = client
                .create_identity(&NewIdentity {
                    kind,
                    name,
                    description,
                    service_name,
                    service_instance,
                })
                .await?;
            out(json, &i, || {
                println!("created {} {}", i.kind, i.iam_id);
                println!("name:        {}", i.name);
                if let Some(d) = &i.description {
                    println!("description: {d}");
                }
                if let (Some(s), Some(inst)) = (&i.service_name, &i.service_instance) {
                    println!("service:     {s} instance {inst}");
                }
                println!("account:     {}", i.account_id);
            })
        }
        IdentitiesCommand::Delete { iam_id } => {
            client.delete_identity(&iam_id).await?;
            let text = format!("deleted identity {iam_id} with its API keys and policies");
            done(json, "iam_id", &iam_id, "deleted", text)
        }
        IdentitiesCommand::Lock { iam_id } => {
            client.lock_identity(&iam_id, true).await?;
            done(
                json,
                "iam_id",
                &iam_id,
                "locked",
                format!("locked {iam_id}"),
            )
        }
        IdentitiesCommand::Unlock { iam_id } => {
            client.lock_identity(&iam_id, false).await?;
            done(
                json,
                "iam_id",
                &iam_id,
                "unlocked",
                format!("unlocked {iam_id}"),
            )
        }
    }
}

async fn api_keys(client: &Client, json: bool, command: ApiKeysCommand) -> anyhow::Result<()> {
    match command {
        ApiKeysCommand::List => {
            let all = client.api_keys().await?;
            out(json, &json!({"count": all.len(), "apikeys": all}), || {
                println!("{:<34}  {:<6}  {:<48}  NAME", "ID", "LOCKED", "IAM ID");
                for k in &all {
                    println!(
                        "{:<34}  {:<6}  {:<48}  {}",
                        k.id, k.locked, k.iam_id, k.name
                    );
                }
            })
        }
        ApiKeysCommand::Create { iam_id, name } => {
            let k = client.create_api_key(&iam_id, &name).await?;
            out(json, &k, || {
                println!("created API key {} for {}", k.info.id, k.info.iam_id);
                println!("apikey: {}", k.apikey);
                println!("Store it now: it is not shown again.");
            })
        }
        ApiKeysCommand::Delete { id } => {
            client.delete_api_key(&id).await?;
            done(json, "id", &id, "deleted", format!("deleted API key {id}"))
        }
        ApiKeysCommand::Lock { id } => {
            client.lock_api_key(&id, true).await?;
            done(json, "id", &id, "locked", format!("locked API key {id}"))
        }
        ApiKeysCommand::Unlock { id } => {
            client.lock_api_key(&id, false).await?;
            done(
                json,
                "id",
                &id,
                "unlocked",
                format!("unlocked API key {id}"),
            )
        }
    }
}

async fn policies(client: &Client, json: bool, command: PoliciesCommand) -> anyhow::Result<()> {
    match command {
        PoliciesCommand::List => {
            let all = client.access_policies().await?;
            out(json, &json!({"count": all.len(), "policies": all}), || {
                println!("{:<36}  {:<48}  {:<24}  SCOPE", "ID", "SUBJECT", "ROLES");
                for p in &all {
                    println!(
                        "{:<36}  {:<48}  {:<24}  {}",
                        p.id,
                        p.subject,
                        p.roles.join(","),
                        scope_text(&p.resource)
                    );
                }
            })
        }
        PoliciesCommand::Create {
            subject,
            roles,
            scope,
        } => {
            let p = client
                .create_access_policy(&subject, &roles, &scope.resource())
                .await?;
            out(json, &p, || {
                println!("created policy {}", p.id);
                println!(
                    "{} holds {} on {}",
                    p.subject,
                    p.roles.join(", "),
                    scope_text(&p.resource)
                );
            })
        }
        PoliciesCommand::Delete { id } => {
            client.delete_access_policy(&id).await?;
            done(json, "id", &id, "deleted", format!("deleted policy {id}"))
        }
    }
}

async fn authorizations(
    client: &Client,
    json: bool,
    command: AuthorizationsCommand,
) -> anyhow::Result<()> {
    let source_text = |s: &AuthorizationSource| match &s.service_instance {
        Some(i) => format!("{} instance {i}", s.service_name),
        None => format!("{} (every instance)", s.service_name),
    };
    match command {
        AuthorizationsCommand::List => {
            let all = client.authorizations().await?;
            out(
                json,
                &json!({"count": all.len(), "authorizations": all}),
                || {
                    println!(
                        "{:<36}  {:<32}  {:<16}  {:<10}  TARGET",
                        "ID", "SOURCE", "ROLES", "DELEGATION"
                    );
                    for a in &all {
                        println!(
                            "{:<36}  {:<32}  {:<16}  {:<10}  {}",
                            a.id,
                            source_text(&a.source),
                            a.roles.join(","),
                            a.delegation,
                            scope_text(&a.target)
                        );
                    }
                },
            )
        }
        AuthorizationsCommand::Create {
            source_service,
            source_instance,
            scope,
            roles,
            delegation,
            dependents,
        } => {
            if scope.instance.is_none() {
                bail!(
                    "--instance is required: an authorization covers an instance, key ring or key"
                );
            }
            let a = client
                .create_authorization(&NewAuthorization {
                    source: AuthorizationSource {
                        service_name: source_service,
                        service_instance: source_instance,
                    },
                    target: scope.resource(),
                    roles,
                    delegation,
                    dependents,
                })
                .await?;
            out(json, &a, || {
                println!("created authorization {}", a.id);
                println!(
                    "{} holds {} on {}{}",
                    source_text(&a.source),
                    a.roles.join(", "),
                    scope_text(&a.target),
                    if a.delegation {
                        format!(", and may delegate it to {}", a.dependents.join(", "))
                    } else {
                        String::new()
                    }
                );
            })
        }
        AuthorizationsCommand::Delete { id } => {
            client.delete_authorization(&id).await?;
            done(
                json,
                "id",
                &id,
                "deleted",
                format!("deleted authorization {id}"),
            )
        }
    }
}

async fn instances(client: &Client, json: bool, command: InstancesCommand) -> anyhow::Result<()> {
    match command {
        InstancesCommand::List => {
            let all = client.instances().await?;
            out(json, &json!({"count": all.len(), "instances": all}), || {
                println!("{:<36}  {:<24}  NAME", "ID", "CREATED");
                for i in &all {
                    println!("{:<36}  {:<24}  {}", i.id, i.created_at, i.name);
                }
            })
        }
        InstancesCommand::Create { name } => {
            let i = client.create_instance(&name).await?;
            out(json, &i, || {
                println!("created instance {} ({})", i.id, i.name);
                println!("use it with --instance {} or KEYWARD_INSTANCE", i.id);
            })
        }
    }
}
