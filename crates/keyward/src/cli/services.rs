//! What integrated services and BYOK imports use: `keyward registrations` (list, and for a
//! service identity create and delete), `keyward import-token` (create, show) and
//! `keyward events ack`.

use anyhow::bail;
use clap::Subcommand;
use keyward_api::events::{AdopterKeyState, EventAck};
use keyward_api::registrations::RegistrationInput;

use super::{Conn, connect, out};

/// `keyward registrations ...`.
#[derive(Subcommand)]
pub enum RegistrationsCommand {
    /// List registrations: of one key with --key, else of every key of the instance (or of the
    /// global --key-ring).
    List {
        /// Only this key's registrations.
        #[arg(long)]
        key: Option<String>,
        /// Only resource CRNs matching this pattern (`*` matches any run of characters).
        #[arg(long, value_name = "PATTERN")]
        crn: Option<String>,
    },
    /// Register a resource on a root key (service identities only).
    Create {
        /// The root key.
        key: String,
        /// The protected resource's CRN.
        resource_crn: String,
        /// Shown to the customer.
        #[arg(long)]
        description: Option<String>,
        /// Block the key's deletion while this registration exists.
        #[arg(long)]
        prevent_key_deletion: bool,
    },
    /// Remove a registration (its owner only).
    Delete {
        /// The root key.
        key: String,
        /// The protected resource's CRN.
        resource_crn: String,
    },
}

/// `keyward import-token ...`.
#[derive(Subcommand)]
pub enum ImportTokenCommand {
    /// Create the instance's import token (replacing any other).
    Create {
        /// Lifetime in seconds (300 to 86400; default 600).
        #[arg(long)]
        expiration: Option<u32>,
        /// Retrievals allowed (1 to 500; default 1).
        #[arg(long)]
        max_retrievals: Option<u32>,
    },
    /// Retrieve the import token: its public key and nonce (uses up one retrieval).
    Show,
}

/// `keyward events ...`.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Acknowledge a lifecycle event (its recipient service only).
    Ack {
        /// The event's id.
        event_id: String,
        /// The service's state after acting on it.
        #[arg(long, value_parser = ["DEK_ENABLED", "DEK_DISABLED", "DEK_DELETED", "DEK_RESTORED"])]
        state: String,
        /// After a rotation: the key version the DEKs were rewrapped under.
        #[arg(long, value_name = "VERSION")]
        rewrapped_version: Option<String>,
    },
}

/// Runs `keyward registrations`.
pub async fn registrations(conn: Conn, command: RegistrationsCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        RegistrationsCommand::List { key, crn } => {
            let c = client.registrations(key.as_deref(), crn.as_deref()).await?;
            out(conn.json, &c, || {
                println!(
                    "{:<36}  {:<7}  {:<7}  RESOURCE CRN",
                    "KEY", "PREVENT", "PENDING"
                );
                for r in &c.resources {
                    println!(
                        "{:<36}  {:<7}  {:<7}  {}",
                        r.key_id,
                        r.prevent_key_deletion,
                        r.pending_events.len(),
                        r.resource_crn
                    );
                }
                println!(
                    "{} of {} registrations",
                    c.resources.len(),
                    c.metadata
                        .total_count
                        .unwrap_or(c.metadata.collection_total)
                );
            })
        }
        RegistrationsCommand::Create {
            key,
            resource_crn,
            description,
            prevent_key_deletion,
        } => {
            let input = RegistrationInput {
                description,
                prevent_key_deletion: prevent_key_deletion.then_some(true),
                ..RegistrationInput::default()
            };
            let r = client
                .create_registration(&key, &resource_crn, input)
                .await?;
            out(conn.json, &r, || {
                println!("registered {} on key {}", r.resource_crn, r.key_id)
            })
        }
        RegistrationsCommand::Delete { key, resource_crn } => {
            client.delete_registration(&key, &resource_crn).await?;
            out(
                conn.json,
                &serde_json::json!({"keyId": key, "resourceCrn": resource_crn, "deleted": true}),
                || println!("removed the registration of {resource_crn} on key {key}"),
            )
        }
    }
}

/// Runs `keyward import-token`.
pub async fn import_token(conn: Conn, command: ImportTokenCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    let t = match command {
        ImportTokenCommand::Create {
            expiration,
            max_retrievals,
        } => {
            client
                .create_import_token(expiration, max_retrievals)
                .await?
        }
        ImportTokenCommand::Show => client.get_import_token().await?,
    };
    out(conn.json, &t, || {
        println!("created:     {}", t.creation_date);
        println!("expires:     {}", t.expiration_date);
        println!(
            "retrievals:  {} of {} left",
            t.remaining_retrievals, t.max_allowed_retrievals
        );
        if let Some(n) = &t.nonce {
            println!("nonce:       {n}");
        }
        if let Some(p) = &t.payload {
            println!("public key:  {p}");
        }
        println!(
            "`keyward keys import --secure --use-existing` seals material for it on this machine"
        );
    })
}

/// Runs `keyward events`.
pub async fn events(conn: Conn, command: EventsCommand) -> anyhow::Result<()> {
    let client = connect(&conn)?;
    match command {
        EventsCommand::Ack {
            event_id,
            state,
            rewrapped_version,
        } => {
            let Some(adopter) = AdopterKeyState::parse(&state) else {
                bail!("unknown state {state}");
            };
            let now = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?;
            client
                .event_ack(EventAck::new(
                    event_id.clone(),
                    adopter,
                    rewrapped_version,
                    now,
                ))
                .await?;
            out(
                conn.json,
                &serde_json::json!({"eventId": event_id, "adopterKeyState": state}),
                || println!("acknowledged event {event_id} ({state})"),
            )
        }
    }
}
