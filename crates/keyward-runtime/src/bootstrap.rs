//! Start-up: open custody and store in the data directory, load (or create) the token-signing
//! key, and on the first start create the first instance and its administrator API key.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use keyward_core::op::{self, Op};
use keyward_core::{
    AccessPolicyRecord, ApiKeyRecord, AuditEvent, Custody, IdentityKind, IdentityRecord, Initiator,
    InstanceId, InstanceRecord, Outcome, Role, Scope, SigningKeyRecord, Store,
};
use keyward_iam::{ApiKey, TokenIssuer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The bootstrap file's name in the data directory.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";
/// The administrator created at first start.
pub const ADMIN_SUBJECT: &str = "iam-ServiceId-keyward-admin";

/// `bootstrap.json`: the first administrator's credentials. Mode 0600; the API key is shown
/// nowhere else.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct BootstrapFile {
    /// The administrator API key.
    pub api_key: String,
    /// The first instance.
    pub instance_id: String,
    /// Where the server listens.
    pub url: String,
}

fn system_event(verb: &Op, target: String) -> AuditEvent {
    let initiator = Initiator {
        id: "keyward-bootstrap".into(),
        address: None,
    };
    AuditEvent {
        target: Some(target),
        ..AuditEvent::new(
            verb.action,
            Outcome::Success,
            201,
            initiator,
            "bootstrap".into(),
            OffsetDateTime::now_utc(),
        )
    }
}

/// Writes `contents` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir).
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// On an empty store: creates the first instance and administrator, writing `bootstrap.json`
/// before the records (a crash in between leaves a file the next start refuses to overwrite). On later starts:
/// updates the `url` in an existing `bootstrap.json`. Returns the bootstrap file's path when it
/// was (re)written.
pub async fn first_start(
    store: &Arc<dyn Store>,
    dir: &Path,
    url: &str,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    let path = dir.join(BOOTSTRAP_FILE);
    if !store.instances().await?.is_empty() {
        if let Ok(text) = fs::read_to_string(&path)
            && let Ok(mut file) = serde_json::from_str::<BootstrapFile>(&text)
            && file.url != url
        {
            file.url = url.to_owned();
            write_private(&path, &serde_json::to_vec_pretty(&file)?)?;
        }
        return Ok(None);
    }
    // Never overwritten: a bootstrap file beside a store with no instance means the store was
    // replaced (or a first start stopped between the two), and the file holds the only copy of
    // the administrator key of whatever it belonged to (issue 18, item 18).
    if path.exists() {
        anyhow::bail!(
            "{} exists but the store holds no instance: the database was replaced or lost. \
             Restore the database from a backup; if this is a new install whose first start \
             was interrupted, move {} aside and start again. Nothing was changed.",
            path.display(),
            BOOTSTRAP_FILE
        );
    }
    let account = uuid::Uuid::new_v4().simple().to_string();
    let instance = InstanceRecord {
        id: InstanceId::random(),
        account: account.clone(),
        name: "default".into(),
        created_at: OffsetDateTime::now_utc(),
    };
    let key =
        ApiKey::generate().map_err(|e| anyhow::anyhow!("generating the admin API key: {e}"))?;
    let file = BootstrapFile {
        api_key: String::from_utf8(key.full.expose().to_vec())?,
        instance_id: instance.id.to_string(),
        url: url.to_owned(),
    };
    write_private(&path, &serde_json::to_vec_pretty(&file)?)?;
    let record = ApiKeyRecord {
        id: key.id.clone(),
        secret_hash: key.secret_hash,
        subject: ADMIN_SUBJECT.into(),
        account,
        name: "bootstrap administrator".into(),
        created_at: instance.created_at,
        locked: false,
    };
    store
        .insert_api_key(&record, &system_event(&op::CREATE_API_KEY, key.id.clone()))
        .await?;
    store
        .insert_instance(
            &instance,
            &system_event(&op::CREATE_INSTANCE, instance.id.to_string()),
        )
        .await?;
    Ok(Some(path))
}

/// The bootstrap administrator is the account's first Administrator and Manager (with KeyPurge,
/// so the one identity of a fresh install can use every endpoint). Creates its identity and
/// access policy when missing: on first start, and once for data directories from before access
/// control existed.
pub async fn ensure_admin_access(
    store: &Arc<dyn Store>,
    custody: &Arc<dyn Custody>,
) -> anyhow::Result<()> {
    for instance in store.instances().await? {
        let account = instance.account;
        let admins: Vec<_> = store
            .api_keys_of(&account)
            .await?
            .into_iter()
            .filter(|k| k.subject == ADMIN_SUBJECT)
            .collect();
        let Some(first) = admins.first() else {
            continue;
        };
        if store.identity(ADMIN_SUBJECT).await?.is_none() {
            let identity = IdentityRecord {
                iam_id: ADMIN_SUBJECT.into(),
                account: account.clone(),
                kind: IdentityKind::ServiceId,
                name: "bootstrap administrator".into(),
                description: Some(
                    "created at first start; its API key is in bootstrap.json".into(),
                ),
                service_name: None,
                service_instance: None,
                locked: false,
                created_at: first.created_at,
                created_by: "keyward-bootstrap".into(),
            };
            store
                .insert_identity(
                    &identity,
                    &system_event(&op::CREATE_IDENTITY, ADMIN_SUBJECT.into()),
                )
                .await?;
        }
        let has_admin = store
            .access_policies(&account, Some(ADMIN_SUBJECT))
            .await?
            .iter()
            .any(|p| p.peek_unverified().roles.contains(&Role::Administrator));
        if !has_admin {
            let mut policy = AccessPolicyRecord {
                id: uuid::Uuid::new_v4().to_string(),
                account: account.clone(),
                subject: ADMIN_SUBJECT.into(),
                roles: vec![Role::Administrator, Role::Manager, Role::KeyPurge],
                scope: Scope::Account(account.clone()),
                created_at: OffsetDateTime::now_utc(),
                created_by: "keyward-bootstrap".into(),
                signature: Vec::new(),
            };
            policy.signature = custody.sign_record(&policy.signed_bytes())?;
            store
                .insert_access_policy(
                    &policy,
                    &system_event(&op::CREATE_POLICY, policy.id.clone()),
                )
                .await?;
        }
    }
    Ok(())
}

/// Loads the newest token-signing key, or creates one (wrapped by custody) on first start.
pub async fn token_issuer(
    store: &Arc<dyn Store>,
    custody: &Arc<dyn Custody>,
    ttl_secs: i64,
) -> anyhow::Result<TokenIssuer> {
    if let Some(rec) = store.signing_keys().await?.into_iter().next() {
        let pkcs8 = custody.unwrap_material(&rec.private_key).context(
            "this node's custody cannot unwrap the database's token-signing key: every \
                 node on one database needs the same master key (copy keystore.json from the \
                 first node's data directory, or point [custody] at the same HSMs)",
        )?;
        return TokenIssuer::from_pkcs8(&rec.kid, &pkcs8, ttl_secs)
            .context("loading the token-signing key");
    }
    let (issuer, pkcs8) =
        TokenIssuer::generate(ttl_secs).context("generating the token-signing key")?;
    let rec = SigningKeyRecord {
        kid: issuer.kid().to_owned(),
        private_key: custody.wrap_material(&pkcs8)?,
        created_at: OffsetDateTime::now_utc(),
    };
    store.insert_signing_key(&rec).await?;
    Ok(issuer)
}
