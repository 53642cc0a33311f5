//! `RewrapStore` for `SqliteStore`: the four tables that hold wrapped material (key versions,
//! token-signing keys, import tokens, webhook secrets), read by wrapping key and swapped one item
//! at a time. The SQL (`?N` marks), row mapping and compare-and-swap are shared with PostgreSQL.

use keyward_core::{AuditEvent, RewrapStore, StoreError, WrappedItem, WrappedMaterial};
use rusqlite::{params, params_from_iter};

use crate::columns::{Bad, Columns, Param};
use crate::rows::version_from_at;
use crate::sqlite::SqliteStore;

/// A table that holds wrapped material.
#[derive(Clone, Copy)]
pub(crate) enum Holder {
    KeyVersions,
    SigningKeys,
    ImportTokens,
    WebhookSecrets,
}

impl Holder {
    /// The tables in the order `stale_wrapped` fills its page from.
    pub(crate) const ALL: [Holder; 4] = [
        Holder::KeyVersions,
        Holder::SigningKeys,
        Holder::ImportTokens,
        Holder::WebhookSecrets,
    ];

    /// Up to `?2` items not wrapped by `?1`, in the columns [`Holder::item`] reads.
    pub(crate) fn stale_sql(self) -> &'static str {
        match self {
            Holder::KeyVersions => {
                "SELECT k.instance_id, v.key_id, v.number, v.id, v.created_at, v.wrapping_key,
                        v.material, v.signature
                 FROM key_versions v JOIN keys k ON k.id = v.key_id
                 WHERE v.wrapping_key <> ?1 LIMIT ?2"
            }
            Holder::SigningKeys => {
                "SELECT kid, wrapping_key, private_key FROM signing_keys
                 WHERE wrapping_key <> ?1 LIMIT ?2"
            }
            Holder::ImportTokens => {
                "SELECT instance_id, wrapping_key, private_key FROM import_tokens
                 WHERE wrapping_key <> ?1 LIMIT ?2"
            }
            Holder::WebhookSecrets => {
                "SELECT recipient, instance_id, wrapping_key, secret FROM event_subscriptions
                 WHERE wrapping_key <> ?1 LIMIT ?2"
            }
        }
    }

    /// An item from a row of [`Holder::stale_sql`].
    pub(crate) fn item<R: Columns + ?Sized>(self, r: &R) -> Result<WrappedItem, Bad> {
        let material = |at: usize| -> Result<WrappedMaterial, Bad> {
            Ok(WrappedMaterial {
                wrapping_key: r.text(at)?,
                bytes: r.blob(at + 1)?,
            })
        };
        Ok(match self {
            Holder::KeyVersions => WrappedItem::KeyVersion {
                instance: r.parsed(0)?,
                version: version_from_at(r, 1)?,
            },
            Holder::SigningKeys => WrappedItem::SigningKey {
                kid: r.text(0)?,
                material: material(1)?,
            },
            Holder::ImportTokens => WrappedItem::ImportToken {
                instance: r.parsed(0)?,
                material: material(1)?,
            },
            Holder::WebhookSecrets => WrappedItem::WebhookSecret {
                recipient: r.text(0)?,
                instance: r.parsed(1)?,
                material: material(2)?,
            },
        })
    }
}

/// The compare-and-swap that gives `old`'s row `new`'s material: its SQL (`?N` marks) and
/// values. It changes one row when `old` is still stored as it was; `None` when the two are not
/// the same kind of item.
pub(crate) fn replacement(
    old: &WrappedItem,
    new: &WrappedItem,
) -> Option<(&'static str, Vec<Param>)> {
    let (was, now) = (old.material(), new.material());
    let (now_key, now_bytes) = (
        Param::Text(now.wrapping_key.clone()),
        Param::Blob(now.bytes.clone()),
    );
    let (was_key, was_bytes) = (
        Param::Text(was.wrapping_key.clone()),
        Param::Blob(was.bytes.clone()),
    );
    Some(match (old, new) {
        (
            WrappedItem::KeyVersion { version: o, .. },
            WrappedItem::KeyVersion { version: n, .. },
        ) => (
            "UPDATE key_versions SET wrapping_key = ?1, material = ?2, signature = ?3
             WHERE key_id = ?4 AND number = ?5 AND wrapping_key = ?6 AND material = ?7",
            vec![
                now_key,
                now_bytes,
                Param::Blob(n.signature.clone()),
                Param::Text(o.key_id.to_string()),
                Param::Int(i64::from(o.number)),
                was_key,
                was_bytes,
            ],
        ),
        (WrappedItem::SigningKey { kid, .. }, WrappedItem::SigningKey { .. }) => (
            "UPDATE signing_keys SET wrapping_key = ?1, private_key = ?2
             WHERE kid = ?3 AND wrapping_key = ?4 AND private_key = ?5",
            vec![
                now_key,
                now_bytes,
                Param::Text(kid.clone()),
                was_key,
                was_bytes,
            ],
        ),
        (WrappedItem::ImportToken { instance, .. }, WrappedItem::ImportToken { .. }) => (
            "UPDATE import_tokens SET wrapping_key = ?1, private_key = ?2
             WHERE instance_id = ?3 AND wrapping_key = ?4 AND private_key = ?5",
            vec![
                now_key,
                now_bytes,
                Param::Text(instance.to_string()),
                was_key,
                was_bytes,
            ],
        ),
        (
            WrappedItem::WebhookSecret {
                recipient,
                instance,
                ..
            },
            WrappedItem::WebhookSecret { .. },
        ) => (
            "UPDATE event_subscriptions SET wrapping_key = ?1, secret = ?2
             WHERE recipient = ?3 AND instance_id = ?4 AND wrapping_key = ?5 AND secret = ?6",
            vec![
                now_key,
                now_bytes,
                Param::Text(recipient.clone()),
                Param::Text(instance.to_string()),
                was_key,
                was_bytes,
            ],
        ),
        _ => return None,
    })
}

/// Items per wrapping key, over the four tables.
pub(crate) const WRAPPED_COUNTS: &str = "SELECT wrapping_key, COUNT(*) FROM (
         SELECT wrapping_key FROM key_versions
         UNION ALL SELECT wrapping_key FROM signing_keys
         UNION ALL SELECT wrapping_key FROM import_tokens
         UNION ALL SELECT wrapping_key FROM event_subscriptions) AS w
     GROUP BY wrapping_key ORDER BY wrapping_key";

/// A row of [`WRAPPED_COUNTS`].
pub(crate) fn count_from<R: Columns + ?Sized>(r: &R) -> Result<(String, u64), Bad> {
    Ok((r.text(0)?, u64::try_from(r.i64(1)?).unwrap_or(0)))
}

/// What is left of a page of `limit` once `items` are in it.
pub(crate) fn left(limit: u32, items: &[WrappedItem]) -> u32 {
    limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX))
}

#[async_trait::async_trait]
impl RewrapStore for SqliteStore {
    async fn stale_wrapped(
        &self,
        current: &str,
        limit: u32,
    ) -> Result<Vec<WrappedItem>, StoreError> {
        self.read(|c| {
            let mut items = Vec::new();
            for holder in Holder::ALL {
                let left = left(limit, &items);
                let mut stmt = c.prepare_cached(holder.stale_sql())?;
                let rows = stmt.query_map(params![current, left], |r| Ok(holder.item(r)?))?;
                for item in rows {
                    items.push(item?);
                }
            }
            Ok(items)
        })
    }

    async fn replace_wrapped(
        &self,
        old: &WrappedItem,
        new: &WrappedItem,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let swap = replacement(old, new);
        self.write_audited(event, move |c| {
            let changed = match &swap {
                Some((sql, values)) => c
                    .prepare_cached(sql)?
                    .execute(params_from_iter(values.iter()))?,
                None => 0,
            };
            Ok(changed == 1)
        })
        .await
    }

    async fn wrapped_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(WRAPPED_COUNTS)?;
            let rows = stmt
                .query_map([], |r| Ok(count_from(r)?))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}
