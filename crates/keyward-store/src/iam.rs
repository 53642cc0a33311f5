//! `IamStore` for SQLite: identities, API key state, access policies, service authorizations and
//! refresh tokens.

use keyward_core::{
    AccessPolicyRecord, ApiKeyRecord, AuditEvent, AuthorizationRecord, IamStore, IdentityKind,
    IdentityRecord, InstanceId, KeyId, RefreshUse, Role, Scope, StoreError, Successor, Unverified,
};
use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;

use crate::columns::{Bad, Columns};
use crate::rows::{api_key_from_row, nanos, time, time_of};
use crate::sqlite::SqliteStore;
use crate::writer::Statements;

/// A scope as stored: `account:<id>`, `instance:<id>`, `key_ring:<instance>:<ring>`,
/// `key:<instance>:<key>` (ring ids and account ids hold no ':').
pub(crate) fn scope_text(s: &Scope) -> String {
    match s {
        Scope::Account(a) => format!("account:{a}"),
        Scope::Instance(i) => format!("instance:{i}"),
        Scope::KeyRing(i, r) => format!("key_ring:{i}:{r}"),
        Scope::Key(i, k) => format!("key:{i}:{k}"),
    }
}

pub(crate) fn scope_from(text: String) -> Result<Scope, Bad> {
    let bad = || Bad(format!("bad scope {text:?}"));
    let mut parts = text.splitn(3, ':');
    let kind = parts.next().ok_or_else(bad)?;
    let first = parts.next().ok_or_else(bad)?;
    let instance = || first.parse::<InstanceId>().map_err(|_| bad());
    Ok(match (kind, parts.next()) {
        ("account", None) => Scope::Account(first.to_owned()),
        ("instance", None) => Scope::Instance(instance()?),
        ("key_ring", Some(r)) => Scope::KeyRing(instance()?, r.to_owned()),
        ("key", Some(k)) => Scope::Key(instance()?, k.parse::<KeyId>().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

pub(crate) fn roles_text(roles: &[Role]) -> String {
    roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
}

fn roles_from(text: String) -> Result<Vec<Role>, Bad> {
    text.split(',')
        .map(|r| Role::from_name(r).ok_or_else(|| Bad(format!("bad role {r:?}"))))
        .collect()
}

pub(crate) const IDENTITY_COLUMNS: &str = "iam_id, account, kind, name, description, \
     service_name, service_instance, locked, created_at, created_by";

pub(crate) const POLICY_COLUMNS: &str =
    "id, account, subject, roles, scope, created_at, created_by, signature";

pub(crate) const AUTHORIZATION_COLUMNS: &str = "id, account, source_service, source_instance, \
     target, roles, delegation, created_at, created_by, signature, dependents, delegated_from";

/// An authorization's dependent services as stored: a JSON array, NULL when there are none.
pub(crate) fn dependents_text(dependents: &[String]) -> Option<String> {
    (!dependents.is_empty()).then(|| serde_json::Value::from(dependents.to_vec()).to_string())
}

fn dependents_from(text: Option<String>) -> Result<Vec<String>, Bad> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t).map_err(|e| Bad(format!("bad dependents: {e}"))),
    }
}

pub(crate) const API_KEY_COLUMNS: &str =
    "id, secret_hash, subject, account, name, created_at, locked";

/// An identity from the columns of [`IDENTITY_COLUMNS`].
pub(crate) fn identity_from<R: Columns + ?Sized>(r: &R) -> Result<IdentityRecord, Bad> {
    let kind = r.text(2)?;
    Ok(IdentityRecord {
        iam_id: r.text(0)?,
        account: r.text(1)?,
        kind: IdentityKind::from_name(&kind).ok_or_else(|| Bad(format!("bad kind {kind}")))?,
        name: r.text(3)?,
        description: r.opt_text(4)?,
        service_name: r.opt_text(5)?,
        service_instance: r.opt_text(6)?,
        locked: r.bool(7)?,
        created_at: time_of(r.i64(8)?)?,
        created_by: r.text(9)?,
    })
}

fn identity_from_row(r: &Row<'_>) -> rusqlite::Result<IdentityRecord> {
    Ok(identity_from(r)?)
}

/// An access policy from the columns of [`POLICY_COLUMNS`].
pub(crate) fn policy_from<R: Columns + ?Sized>(r: &R) -> Result<AccessPolicyRecord, Bad> {
    Ok(AccessPolicyRecord {
        id: r.text(0)?,
        account: r.text(1)?,
        subject: r.text(2)?,
        roles: roles_from(r.text(3)?)?,
        scope: scope_from(r.text(4)?)?,
        created_at: time_of(r.i64(5)?)?,
        created_by: r.text(6)?,
        signature: r.blob(7)?,
    })
}

/// A service authorization from the columns of [`AUTHORIZATION_COLUMNS`].
pub(crate) fn authorization_from<R: Columns + ?Sized>(r: &R) -> Result<AuthorizationRecord, Bad> {
    Ok(AuthorizationRecord {
        id: r.text(0)?,
        account: r.text(1)?,
        source_service: r.text(2)?,
        source_instance: r.opt_text(3)?,
        target: scope_from(r.text(4)?)?,
        roles: roles_from(r.text(5)?)?,
        delegation: r.bool(6)?,
        created_at: time_of(r.i64(7)?)?,
        created_by: r.text(8)?,
        signature: r.blob(9)?,
        dependents: dependents_from(r.opt_text(10)?)?,
        delegated_from: r.opt_text(11)?,
    })
}

#[async_trait::async_trait]
impl IamStore for SqliteStore {
    async fn identity(&self, iam_id: &str) -> Result<Option<IdentityRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities WHERE iam_id = ?1"
            ))?
            .query_row(params![iam_id], identity_from_row)
            .optional()
        })
    }

    async fn identities(&self, account: &str) -> Result<Vec<IdentityRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {IDENTITY_COLUMNS} FROM identities WHERE account = ?1 ORDER BY created_at, iam_id"
            ))?
            .query_map(params![account], identity_from_row)?
            .collect()
        })
    }

    async fn insert_identity(
        &self,
        identity: &IdentityRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let i = identity.clone();
        self.write_audited(event, move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
            ))?
            .execute(params![
                i.iam_id,
                i.account,
                i.kind.name(),
                i.name,
                i.description,
                i.service_name,
                i.service_instance,
                i.locked,
                nanos(i.created_at),
                i.created_by,
            ])?;
            Ok(())
        })
        .await
    }

    async fn set_identity_locked(
        &self,
        account: &str,
        iam_id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), iam_id.to_owned());
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE identities SET locked = ?3 WHERE account = ?1 AND iam_id = ?2",
                )?
                .execute(params![a, i, locked])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_identity(
        &self,
        account: &str,
        iam_id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), iam_id.to_owned());
        self.write_audited(event, move |c| {
            c.prepare_cached(
                "DELETE FROM refresh_tokens WHERE api_key_id IN
                   (SELECT id FROM api_keys WHERE account = ?1 AND subject = ?2)",
            )?
            .execute(params![a, i])?;
            c.prepare_cached("DELETE FROM api_keys WHERE account = ?1 AND subject = ?2")?
                .execute(params![a, i])?;
            c.prepare_cached("DELETE FROM access_policies WHERE account = ?1 AND subject = ?2")?
                .execute(params![a, i])?;
            let n = c
                .prepare_cached("DELETE FROM identities WHERE account = ?1 AND iam_id = ?2")?
                .execute(params![a, i])?;
            // Its registrations go with it: nobody else may lift their preventKeyDeletion
            // (issue 18, item 7).
            if n > 0 {
                c.prepare_cached(
                    "DELETE FROM registrations WHERE owner = ?2
                       AND instance_id IN (SELECT id FROM instances WHERE account = ?1)",
                )?
                .execute(params![a, i])?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn api_keys_of(&self, account: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account = ?1 ORDER BY created_at, id"
            ))?
            .query_map(params![account], api_key_from_row)?
            .collect()
        })
    }

    async fn set_api_key_locked(
        &self,
        account: &str,
        id: &str,
        locked: bool,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), id.to_owned());
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached("UPDATE api_keys SET locked = ?3 WHERE account = ?1 AND id = ?2")?
                .execute(params![a, i, locked])?;
            Ok(n > 0)
        })
        .await
    }

    async fn delete_api_key(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), id.to_owned());
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached("DELETE FROM api_keys WHERE account = ?1 AND id = ?2")?
                .execute(params![a, i])?;
            // Another account's key of that id keeps its tokens.
            if n > 0 {
                c.prepare_cached("DELETE FROM refresh_tokens WHERE api_key_id = ?1")?
                    .execute(params![i])?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn access_policies(
        &self,
        account: &str,
        subject: Option<&str>,
    ) -> Result<Vec<Unverified<AccessPolicyRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {POLICY_COLUMNS}
                 FROM access_policies WHERE account = ?1 AND (?2 IS NULL OR subject = ?2)
                 ORDER BY created_at, id"
            ))?
            .query_map(params![account, subject], |r| {
                Ok(Unverified::new(policy_from(r)?))
            })?
            .collect()
        })
    }

    async fn insert_access_policy(
        &self,
        policy: &AccessPolicyRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let p = policy.clone();
        self.write_audited(event, move |c| {
            c.prepare_cached(&format!(
                "INSERT INTO access_policies ({POLICY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                p.id,
                p.account,
                p.subject,
                roles_text(&p.roles),
                scope_text(&p.scope),
                nanos(p.created_at),
                p.created_by,
                p.signature,
            ])?;
            Ok(())
        })
        .await
    }

    async fn delete_access_policy(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), id.to_owned());
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached("DELETE FROM access_policies WHERE account = ?1 AND id = ?2")?
                .execute(params![a, i])?;
            Ok(n > 0)
        })
        .await
    }

    async fn authorizations(
        &self,
        account: &str,
        source_service: Option<&str>,
    ) -> Result<Vec<Unverified<AuthorizationRecord>>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {AUTHORIZATION_COLUMNS}
                 FROM authorizations WHERE account = ?1 AND (?2 IS NULL OR source_service = ?2)
                 ORDER BY created_at, id"
            ))?
            .query_map(params![account, source_service], |r| {
                Ok(Unverified::new(authorization_from(r)?))
            })?
            .collect()
        })
    }

    async fn insert_authorization(
        &self,
        authorization: &AuthorizationRecord,
        event: &AuditEvent,
    ) -> Result<(), StoreError> {
        let a = authorization.clone();
        self.write_audited(event, move |c| {
            if let Some(parent) = &a.delegated_from {
                let exists = c
                    .prepare_cached("SELECT 1 FROM authorizations WHERE account = ?1 AND id = ?2")?
                    .exists(params![a.account, parent])?;
                if !exists {
                    return Err(crate::sqlite::abort(
                        "the delegating authorization was deleted",
                    ));
                }
            }
            c.prepare_cached(&format!(
                "INSERT INTO authorizations ({AUTHORIZATION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                a.id,
                a.account,
                a.source_service,
                a.source_instance,
                scope_text(&a.target),
                roles_text(&a.roles),
                a.delegation,
                nanos(a.created_at),
                a.created_by,
                a.signature,
                dependents_text(&a.dependents),
                a.delegated_from,
            ])?;
            Ok(())
        })
        .await
    }

    async fn delete_authorization(
        &self,
        account: &str,
        id: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let (a, i) = (account.to_owned(), id.to_owned());
        self.write_audited(event, move |c| {
            let n = c
                .prepare_cached("DELETE FROM authorizations WHERE account = ?1 AND id = ?2")?
                .execute(params![a, i])?;
            // What was delegated under it goes with it (IAM: removing the source's access
            // removes the access it delegated).
            if n > 0 {
                c.prepare_cached(
                    "DELETE FROM authorizations WHERE account = ?1 AND delegated_from = ?2",
                )?
                .execute(params![a, i])?;
            }
            Ok(n > 0)
        })
        .await
    }

    async fn insert_refresh_token(
        &self,
        hash: [u8; 32],
        api_key_id: &str,
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = api_key_id.to_owned();
        self.write(Statements::One, move |c| {
            c.prepare_cached(
                "INSERT INTO refresh_tokens (hash, api_key_id, expires_at, family)
                 VALUES (?1, ?2, ?3, ?1)",
            )?
            .execute(params![hash.to_vec(), id, nanos(expires_at)])?;
            Ok(())
        })
        .await
    }

    async fn spend_refresh_token(
        &self,
        hash: [u8; 32],
        successor: Successor,
        now: OffsetDateTime,
    ) -> Result<RefreshUse, StoreError> {
        self.write(Statements::Many, move |c| {
            let found: Option<(String, i64, Option<Vec<u8>>, Option<i64>)> = c
                .prepare_cached(
                    "SELECT api_key_id, expires_at, family, spent_at FROM refresh_tokens
                     WHERE hash = ?1",
                )?
                .query_row(params![hash.to_vec()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let Some((api_key_id, expires_at, family, spent_at)) = found else {
                return Ok(RefreshUse::Unknown);
            };
            let family = family.unwrap_or_else(|| hash.to_vec());
            if spent_at.is_some() {
                let revoked = c
                    .prepare_cached(
                        "UPDATE refresh_tokens SET spent_at = ?2
                         WHERE family = ?1 AND spent_at IS NULL",
                    )?
                    .execute(params![family, nanos(now)])?;
                return Ok(RefreshUse::Reused {
                    api_key_id,
                    revoked: revoked as u64,
                });
            }
            c.prepare_cached("UPDATE refresh_tokens SET spent_at = ?2 WHERE hash = ?1")?
                .execute(params![hash.to_vec(), nanos(now)])?;
            if expires_at > nanos(now) {
                c.prepare_cached(
                    "INSERT INTO refresh_tokens (hash, api_key_id, expires_at, family)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    successor.hash.to_vec(),
                    api_key_id,
                    nanos(successor.expires_at),
                    family
                ])?;
            }
            Ok(RefreshUse::Spent {
                api_key_id,
                expires_at: time(expires_at)?,
            })
        })
        .await
    }

    async fn purge_refresh_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(Statements::One, move |c| {
            let n = c
                .prepare_cached("DELETE FROM refresh_tokens WHERE expires_at <= ?1")?
                .execute(params![nanos(now)])?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip() {
        let i = InstanceId::random();
        for s in [
            Scope::Account("abc".into()),
            Scope::Instance(i),
            Scope::KeyRing(i, "ring-1".into()),
            Scope::Key(i, KeyId::random()),
        ] {
            assert_eq!(scope_from(scope_text(&s)).unwrap(), s);
        }
        assert!(scope_from("instance:nope".into()).is_err());
        assert!(scope_from("galaxy:x".into()).is_err());
    }
}
