//! `keyward keys`: create, use and manage keys, and their policies.

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use clap::{Args, Subcommand};
use keyward_api::{DualAuthPolicyIn, Key, KeyCreate, KeyPolicyIn, KeyPolicyView, RotationPolicyIn};
use keyward_client::{Client, SealedMaterial};

use super::{Conn, connect, out, print_key, read_payload, state_name};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key with generated (256-bit) material.
    Create(CreateArgs),
    /// Create a key from your own material (base64 on stdin or in a file); with --secure, sent
    /// encrypted to an import token.
    Import {
        #[command(flatten)]
        create: CreateArgs,
        /// File holding the base64 material; `-` (default) reads stdin.
        #[arg(long, default_value = "-")]
        payload_file: String,
        #[command(flatten)]
        secure: SecureArgs,
    },
    /// List keys.
    List {
        /// Page size.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Only keys in these states (numbers or names, comma-separated: 0 pre-active, 1 active,
        /// 2 suspended, 3 deactivated, 5 destroyed; the server's default is 0 to 3).
        #[arg(long, value_delimiter = ',', value_name = "STATE,...")]
        state: Vec<String>,
        /// Key Protect's search (`payments`, `exact:name:payments-root`, `alias:a`, `not:x`).
        #[arg(long, value_name = "QUERY")]
        search: Option<String>,
    },
    /// A key's versions, newest first.
    Versions {
        id: String,
        /// Page size.
        #[arg(long, default_value_t = 200)]
        limit: u32,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Send the key's current state again to every service registered on it (`actions/sync`).
    Sync { id: String },
    /// Show a key (and a standard key's payload).
    Show { id: String },
    /// Wrap a DEK (base64), or generate one when --plaintext is absent.
    Wrap {
        id: String,
        /// Base64 DEK to wrap.
        #[arg(long)]
        plaintext: Option<String>,
        /// Additional authenticated data (repeatable).
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Unwrap a ciphertext.
    Unwrap {
        id: String,
        /// Ciphertext from wrap.
        #[arg(long)]
        ciphertext: String,
        /// Additional authenticated data, as given to wrap.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rewrap a ciphertext under the key's latest version.
    Rewrap {
        id: String,
        /// Ciphertext from wrap.
        #[arg(long)]
        ciphertext: String,
        /// Additional authenticated data.
        #[arg(long)]
        aad: Vec<String>,
    },
    /// Rotate a key (imported keys: new base64 material with --payload-file, --secure to send it
    /// encrypted to an import token).
    Rotate {
        id: String,
        /// File with new base64 material, for imported keys.
        #[arg(long)]
        payload_file: Option<String>,
        #[command(flatten)]
        secure: SecureArgs,
    },
    /// Disable (suspend) a key.
    Disable { id: String },
    /// Enable a disabled key.
    Enable { id: String },
    /// Delete (destroy) a key.
    Delete {
        id: String,
        /// Delete it even though services have registered resources on it (never while one
        /// has preventKeyDeletion).
        #[arg(long)]
        force: bool,
    },
    /// Restore a deleted key (imported keys: their base64 material with --payload-file).
    Restore {
        id: String,
        /// File with the key's base64 material (`-` for stdin), for imported keys.
        #[arg(long)]
        payload_file: Option<String>,
    },
    /// Purge a deleted key for good (allowed some hours after the delete).
    Purge { id: String },
    /// Authorize the deletion of a dual-authorization key (another identity then deletes it).
    SetDeletion { id: String },
    /// Withdraw a deletion authorization.
    UnsetDeletion { id: String },
    /// Move a key to another key ring (the global --key-ring names the ring it is in now).
    Move {
        id: String,
        /// The key ring to move the key to.
        #[arg(long, value_name = "RING")]
        to: String,
    },
    /// Show or set a key's rotation and dual-authorization policies.
    Policy {
        #[command(subcommand)]
        command: KeyPolicyCommand,
    },
}

#[derive(Subcommand)]
pub enum KeyPolicyCommand {
    /// Show a key's policies.
    Show {
        id: String,
        /// Only this policy.
        #[arg(long, value_parser = ["rotation", "dual-auth", "dualAuthDelete"])]
        policy: Option<String>,
    },
    /// Set a key's rotation and/or dual-authorization policy.
    Set {
        id: String,
        /// Rotate automatically every N months (1 to 12).
        #[arg(long, value_name = "N")]
        rotation_months: Option<i64>,
        /// Turn automatic rotation on or off.
        #[arg(long, value_name = "BOOL")]
        rotation_enabled: Option<bool>,
        /// Require two identities to delete the key (cannot be turned off once on).
        #[arg(long, value_name = "BOOL")]
        dual_auth: Option<bool>,
    },
}

/// Secure import through an import token.
#[derive(Args)]
pub struct SecureArgs {
    /// Send the material encrypted to an import token (RSA-OAEP-SHA-256 to its public key, its
    /// nonce AES-GCM-sealed under the material) instead of in base64; root keys only.
    #[arg(long)]
    secure: bool,
    /// With --secure: use the instance's live import token instead of creating one (it must
    /// have a retrieval left).
    #[arg(long, requires = "secure")]
    use_existing: bool,
}

impl SecureArgs {
    /// The material (base64) sealed for an import token: a new one unless --use-existing.
    async fn seal(&self, client: &Client, payload_b64: &str) -> anyhow::Result<SealedMaterial> {
        let material = B64
            .decode(payload_b64)
            .context("the payload must be base64")?;
        if !matches!(material.len(), 16 | 24 | 32) {
            bail!(
                "secure import takes 16, 24 or 32 bytes of key material, not {}",
                material.len()
            );
        }
        if !self.use_existing {
            client.create_import_token(None, None).await?;
        }
        Ok(client.seal_with_import_token(&material).await?)
    }
}

#[derive(Args)]
pub struct CreateArgs {
    /// Key name.
    #[arg(long)]
    name: String,
    /// Description.
    #[arg(long)]
    description: Option<String>,
    /// Create a standard (extractable) key instead of a root key.
    #[arg(long)]
    standard: bool,
    /// Expiration date (RFC 3339).
    #[arg(long)]
    expiration: Option<String>,
    /// Alias for the new key (repeatable).
    #[arg(long = "alias", value_name = "ALIAS")]
    aliases: Vec<String>,
    /// Rotation policy for this key: every N months (1 to 12), instead of the instance's.
    #[arg(long, value_name = "N")]
    rotation_months: Option<i64>,
    /// Require two identities to delete this key, whatever the instance's policy.
    #[arg(long)]
    dual_auth: bool,
}

impl CreateArgs {
    fn into_spec(self, payload: Option<String>, key_ring: &Option<String>) -> KeyCreate {
        KeyCreate {
            type_: Some(keyward_api::media::KEY.to_owned()),
            name: self.name,
            description: self.description,
            extractable: Some(self.standard),
            payload: payload.map(Into::into),
            expiration_date: self.expiration,
            key_ring_id: key_ring.clone(),
            rotation: self.rotation_months.map(|m| RotationPolicyIn {
                enabled: Some(true),
                interval_month: Some(m),
            }),
            dual_auth_delete: self.dual_auth.then_some(DualAuthPolicyIn { enabled: true }),
            aliases: (!self.aliases.is_empty()).then_some(self.aliases),
            ..KeyCreate::default()
        }
    }
}

/// Runs a `keyward keys` subcommand.
pub async fn run(conn: Conn, command: KeysCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    let json = conn.json;
    match command {
        KeysCommand::Create(args) => {
            let k = create(&client, args.into_spec(None, &conn.key_ring)).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::Import {
            create,
            payload_file,
            secure,
        } => {
            let payload = read_payload(&payload_file)?;
            let spec = if secure.secure {
                if create.standard {
                    bail!("--secure imports root keys only: drop --standard");
                }
                let sealed = secure.seal(&client, &payload).await?;
                let mut spec = create.into_spec(None, &conn.key_ring);
                sealed.apply_to(&mut spec);
                spec
            } else {
                create.into_spec(Some(payload), &conn.key_ring)
            };
            let k = self::create(&client, spec).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::List {
            limit,
            offset,
            state,
            search,
        } => {
            if let Some(ring) = &conn.key_ring {
                super::admin::require_ring(&client, ring).await?;
            }
            let mut filters = Vec::new();
            if !state.is_empty() {
                let states = state
                    .iter()
                    .map(|s| state_number(s))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                filters.push(("state", states.join(",")));
            }
            if let Some(q) = search {
                filters.push(("search", q));
            }
            let c = client.list_keys_where(limit, offset, &filters).await?;
            out(json, &c, || {
                println!(
                    "{:<36}  {:<5}  {:<8}  {:<11}  NAME",
                    "ID", "STATE", "TYPE", "STATUS"
                );
                for k in &c.resources {
                    let kind = if k.extractable { "standard" } else { "root" };
                    println!(
                        "{:<36}  {:<5}  {:<8}  {:<11}  {}",
                        k.id,
                        k.state,
                        kind,
                        state_name(k.state),
                        k.name
                    );
                }
                println!(
                    "{} of {} keys",
                    c.resources.len(),
                    c.metadata
                        .total_count
                        .unwrap_or(c.metadata.collection_total)
                );
            })
        }
        KeysCommand::Versions { id, limit, offset } => {
            let c = client.key_versions(&id, limit, offset).await?;
            out(json, &c, || {
                println!("{:<36}  CREATED", "VERSION");
                for v in &c.resources {
                    println!(
                        "{:<36}  {}",
                        v.id,
                        v.creation_date.as_deref().unwrap_or("-")
                    );
                }
                println!(
                    "{} of {} versions",
                    c.resources.len(),
                    c.metadata
                        .total_count
                        .unwrap_or(c.metadata.collection_total)
                );
            })
        }
        KeysCommand::Sync { id } => {
            client.sync_key(&id).await?;
            out(json, &serde_json::json!({"id": id, "synced": true}), || {
                println!("sent {id}'s state again to the services registered on it")
            })
        }
        KeysCommand::Show { id } => {
            let k = client.get_key(&id).await?;
            out(json, &k, || print_key(&k))
        }
        KeysCommand::Wrap { id, plaintext, aad } => {
            let r = client.wrap(&id, plaintext, aad).await?;
            out(json, &r, || {
                if let Some(p) = &r.plaintext {
                    println!("plaintext:   {}", p.expose());
                }
                println!("ciphertext:  {}", r.ciphertext);
                println!("key version: {}", r.key_version.id);
            })
        }
        KeysCommand::Unwrap {
            id,
            ciphertext,
            aad,
        } => {
            let r = client.unwrap(&id, ciphertext, aad).await?;
            out(json, &r, || {
                println!("plaintext:   {}", r.plaintext.expose());
                println!("key version: {}", r.key_version.id);
                if let (Some(c), Some(v)) = (&r.ciphertext, &r.rewrapped_key_version) {
                    println!("rewrapped:   {c} (version {})", v.id);
                }
            })
        }
        KeysCommand::Rewrap {
            id,
            ciphertext,
            aad,
        } => {
            let r = client.rewrap(&id, ciphertext, aad).await?;
            out(json, &r, || {
                println!("ciphertext:  {}", r.ciphertext);
                println!(
                    "key version: {} (was {})",
                    r.rewrapped_key_version.id, r.key_version.id
                );
            })
        }
        KeysCommand::Rotate {
            id,
            payload_file,
            secure,
        } => {
            let payload = payload_file.as_deref().map(read_payload).transpose()?;
            if secure.secure {
                let Some(payload) = payload else {
                    bail!("--secure needs the new material: give --payload-file");
                };
                let sealed = secure.seal(&client, &payload).await?;
                client.rotate_sealed(&id, sealed).await?;
            } else {
                client.rotate(&id, payload).await?;
            }
            let k = client.get_key(&id).await?;
            out(json, &k, || {
                println!("rotated {id}: new version {}", k.key_version.id)
            })
        }
        KeysCommand::Disable { id } => {
            client.disable(&id).await?;
            out(json, &serde_json::json!({"id": id, "state": 2}), || {
                println!("disabled {id}")
            })
        }
        KeysCommand::Enable { id } => {
            client.enable(&id).await?;
            out(json, &serde_json::json!({"id": id, "state": 1}), || {
                println!("enabled {id}")
            })
        }
        KeysCommand::Delete { id, force } => {
            let k = if force {
                client.delete_key(&id, true).await?
            } else {
                client.delete(&id).await?
            };
            out(json, &k, || println!("deleted {id} (state {})", k.state))
        }
        KeysCommand::Restore { id, payload_file } => {
            let payload = payload_file.as_deref().map(read_payload).transpose()?;
            let k = client.restore(&id, payload).await?;
            out(json, &k, || {
                println!("restored {id} (state {})", state_name(k.state))
            })
        }
        KeysCommand::Purge { id } => {
            let k = client.purge(&id).await?;
            out(json, &k, || {
                println!("purged {id}: its key material is gone for good")
            })
        }
        KeysCommand::SetDeletion { id } => {
            client.set_key_for_deletion(&id).await?;
            let k = client.key_metadata(&id).await?;
            out(json, &k, || {
                let until = k
                    .dual_auth_delete
                    .auth_expiration
                    .as_deref()
                    .map(|d| format!(" until {d}"))
                    .unwrap_or_default();
                println!("{id} is set for deletion{until}: another identity can now delete it");
            })
        }
        KeysCommand::UnsetDeletion { id } => {
            client.unset_key_for_deletion(&id).await?;
            let k = client.key_metadata(&id).await?;
            out(json, &k, || println!("{id} is no longer set for deletion"))
        }
        KeysCommand::Move { id, to } => {
            let k = client.move_key(&id, &to).await?;
            out(json, &k, || {
                println!("moved {id} to key ring {}", k.key_ring_id)
            })
        }
        KeysCommand::Policy { command } => match command {
            KeyPolicyCommand::Show { id, policy } => {
                let policy = policy.as_deref().map(key_policy_name);
                let c = client.key_policies(&id, policy).await?;
                out(json, &c, || print_key_policies(&c.resources))
            }
            KeyPolicyCommand::Set {
                id,
                rotation_months,
                rotation_enabled,
                dual_auth,
            } => {
                let rotation = (rotation_months.is_some() || rotation_enabled.is_some()).then_some(
                    RotationPolicyIn {
                        enabled: rotation_enabled,
                        interval_month: rotation_months,
                    },
                );
                if rotation.is_none() && dual_auth.is_none() {
                    bail!(
                        "nothing to set: give --rotation-months, --rotation-enabled or --dual-auth"
                    );
                }
                let c = client
                    .set_key_policies(
                        &id,
                        KeyPolicyIn {
                            type_: None,
                            rotation,
                            dual_auth_delete: dual_auth.map(|enabled| DualAuthPolicyIn { enabled }),
                        },
                    )
                    .await?;
                out(json, &c, || print_key_policies(&c.resources))
            }
        },
    }
}

/// A create with policy flags goes to `keys_with_policy_overrides`, as Key Protect requires.
async fn create(client: &Client, spec: KeyCreate) -> anyhow::Result<Key> {
    Ok(
        if spec.rotation.is_some() || spec.dual_auth_delete.is_some() {
            client.create_key_with_policies(spec).await?
        } else {
            client.create_key(spec).await?
        },
    )
}

/// A key state given by number or name, as the API's `state` parameter wants it.
fn state_number(s: &str) -> anyhow::Result<String> {
    let n = match s.trim().to_ascii_lowercase().as_str() {
        n @ ("0" | "1" | "2" | "3" | "5") => return Ok(n.to_owned()),
        "pre-active" | "preactive" => "0",
        "active" => "1",
        "suspended" | "disabled" => "2",
        "deactivated" => "3",
        "destroyed" | "deleted" => "5",
        other => bail!(
            "unknown key state {other:?}: use 0 (pre-active), 1 (active), 2 (suspended), \
             3 (deactivated) or 5 (destroyed)"
        ),
    };
    Ok(n.to_owned())
}

fn key_policy_name(p: &str) -> &str {
    match p {
        "dual-auth" => "dualAuthDelete",
        other => other,
    }
}

fn print_key_policies(policies: &[KeyPolicyView]) {
    if policies.is_empty() {
        println!("no key policies (the instance's policies apply)");
    }
    for p in policies {
        if let Some(r) = &p.rotation {
            println!(
                "rotation:    {}, every {} month(s) (updated {} by {})",
                if r.enabled { "enabled" } else { "disabled" },
                r.interval_month,
                p.last_update_date,
                p.updated_by
            );
        }
        if let Some(d) = &p.dual_auth_delete {
            println!(
                "dual auth:   {} (updated {} by {})",
                if d.enabled { "enabled" } else { "disabled" },
                p.last_update_date,
                p.updated_by
            );
        }
    }
}
