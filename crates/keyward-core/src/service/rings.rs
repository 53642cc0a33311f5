//! Key rings, aliases, and resolving the key references callers send (id, alias or CRN).

use super::{Caller, KeyFilter, KeyService, integrity};
use crate::access::Target;
use crate::op;
use crate::pipeline::key_target;
use crate::{
    AliasRecord, DEFAULT_KEY_RING, KeyError, KeyId, KeyRecord, KeyRingRecord, KeyState, Page,
    RingDeletion, Rule, StoreError,
};

/// Most aliases one key may have (Key Protect: 5).
pub const MAX_ALIASES_PER_KEY: u32 = 5;
const RING_ID_CHARS: std::ops::RangeInclusive<usize> = 2..=100;
const ALIAS_CHARS: std::ops::RangeInclusive<usize> = 2..=90;
/// Most key rings an instance may have besides `default` (Key Protect: 50).
pub const MAX_KEY_RINGS: usize = 50;
/// Words Key Protect reserves: they name API paths, not keys.
const RESERVED_ALIASES: [&str; 16] = [
    "allowed_ip",
    "key",
    "keys",
    "metadata",
    "policy",
    "policies",
    "registration",
    "registrations",
    "ring",
    "rings",
    "rotate",
    "wrap",
    "unwrap",
    "rewrap",
    "version",
    "versions",
];

impl KeyService {
    /// The key a caller's reference names: a key id, a key CRN (`...:key:<id>`), or an alias.
    /// Aliases are looked up and their signatures checked; nothing else is read here.
    pub async fn resolve(&self, caller: &Caller, reference: &str) -> Result<KeyId, KeyError> {
        let tail = match reference.strip_prefix("crn:") {
            Some(crn) => crn.rsplit_once(":key:").map(|(_, id)| id).unwrap_or(""),
            None => reference,
        };
        if let Ok(id) = tail.parse::<KeyId>() {
            return Ok(id);
        }
        if reference.starts_with("crn:") || !valid_alias(reference) {
            return Err(KeyError::NotFound);
        }
        let alias = self
            .store
            .alias(caller.instance(), reference)
            .await?
            .ok_or(KeyError::NotFound)?;
        let alias = crate::Verified::check(alias, self.custody.as_ref()).map_err(integrity)?;
        if alias.instance != caller.instance() {
            return Err(KeyError::IntegrityFailure);
        }
        Ok(alias.key_id)
    }

    /// Signed alias records for a key being created: valid, distinct, at most five.
    pub(super) fn new_aliases(
        &self,
        caller: &Caller,
        key: KeyId,
        aliases: &[String],
        now: time::OffsetDateTime,
    ) -> Result<Vec<AliasRecord>, KeyError> {
        if aliases.len() > MAX_ALIASES_PER_KEY as usize {
            return Err(KeyError::Refused(
                Rule::TooManyAliases,
                format!("a key has at most {MAX_ALIASES_PER_KEY} aliases"),
            ));
        }
        let mut out: Vec<AliasRecord> = Vec::with_capacity(aliases.len());
        for alias in aliases {
            if !valid_alias(alias) {
                return Err(bad_alias());
            }
            if out.iter().any(|a| a.alias == *alias) {
                return Err(KeyError::InvalidInput(format!(
                    "aliases: {alias:?} appears twice"
                )));
            }
            let mut record = AliasRecord {
                instance: caller.instance(),
                alias: alias.clone(),
                key_id: key,
                created_at: now,
                created_by: caller.subject().to_owned(),
                signature: Vec::new(),
            };
            record.signature = self.custody.sign_record(&record.signed_bytes())?;
            out.push(record);
        }
        Ok(out)
    }

    /// Adds an alias to a key.
    pub async fn create_alias(
        &self,
        caller: &Caller,
        id: KeyId,
        alias: &str,
    ) -> Result<AliasRecord, KeyError> {
        self.pipe
            .run(&op::CREATE_ALIAS, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                if !valid_alias(alias) {
                    return Err(KeyError::InvalidInput(
                        "alias: 2 to 90 characters (letters, digits, '-' and '_'), not a key id"
                            .into(),
                    ));
                }
                super::transition(key.state, crate::Action::Modify)?;
                let mut record = AliasRecord {
                    instance: caller.instance(),
                    alias: alias.to_owned(),
                    key_id: id,
                    created_at: self.clock.now(),
                    created_by: caller.subject().to_owned(),
                    signature: Vec::new(),
                };
                record.signature = self.custody.sign_record(&record.signed_bytes())?;
                let event = ctx.record_key(&key, None)?;
                match self
                    .store
                    .insert_alias(&record, MAX_ALIASES_PER_KEY, &event)
                    .await
                {
                    Ok(true) => Ok(record),
                    Ok(false) => Err(KeyError::Refused(
                        Rule::TooManyAliases,
                        format!("a key has at most {MAX_ALIASES_PER_KEY} aliases"),
                    )),
                    Err(StoreError::Conflict) => Err(KeyError::Refused(
                        Rule::AliasExists,
                        "alias: already names a key of this instance".into(),
                    )),
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }

    /// Removes an alias from a key.
    pub async fn delete_alias(
        &self,
        caller: &Caller,
        id: KeyId,
        alias: &str,
    ) -> Result<(), KeyError> {
        self.pipe
            .run(&op::DELETE_ALIAS, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                let event = ctx.record_key(&key, None)?;
                if self
                    .store
                    .delete_alias(caller.instance(), id, alias, &event)
                    .await?
                {
                    Ok(())
                } else {
                    Err(KeyError::Refused(
                        Rule::AliasNotFound,
                        "alias: the key has no such alias".into(),
                    ))
                }
            })
            .await
    }

    /// A page of the instance's key rings, `default` first, and how many there are.
    pub async fn key_rings(
        &self,
        caller: &Caller,
        page: Page,
    ) -> Result<(Vec<KeyRingRecord>, u64), KeyError> {
        self.pipe
            .run_in(&op::LIST_KEY_RINGS, caller, Target::Instance, async |_| {
                let instance = self
                    .store
                    .instance(caller.instance())
                    .await?
                    .ok_or(KeyError::NotFound)?;
                // `default` is row 0 of the listing; the store's rows follow it.
                let (with_default, stored) = match page.offset.checked_sub(1) {
                    None => (
                        page.limit > 0,
                        Page {
                            limit: page.limit.saturating_sub(1),
                            offset: 0,
                        },
                    ),
                    Some(offset) => (false, Page { offset, ..page }),
                };
                let (stored, total) = self.store.key_rings(caller.instance(), stored).await?;
                let default = with_default.then(|| KeyRingRecord {
                    instance: caller.instance(),
                    id: DEFAULT_KEY_RING.to_owned(),
                    created_at: instance.created_at,
                    created_by: "keyward".to_owned(),
                });
                Ok((default.into_iter().chain(stored).collect(), total + 1))
            })
            .await
    }

    /// Creates a key ring.
    pub async fn create_key_ring(&self, caller: &Caller, id: &str) -> Result<(), KeyError> {
        self.pipe
            .run_in(
                &op::CREATE_KEY_RING,
                caller,
                Target::Instance,
                async |ctx| {
                    check_ring_id(id)?;
                    if id == DEFAULT_KEY_RING {
                        return Err(KeyError::Refused(
                            Rule::KeyRingExists,
                            "every instance has the default key ring".into(),
                        ));
                    }
                    let count = Page {
                        limit: 0,
                        offset: 0,
                    };
                    let (_, rings) = self.store.key_rings(caller.instance(), count).await?;
                    if rings >= MAX_KEY_RINGS as u64 {
                        return Err(KeyError::Refused(
                            Rule::KeyRingExists,
                            format!(
                                "an instance has at most {MAX_KEY_RINGS} key rings besides default"
                            ),
                        ));
                    }
                    let ring = KeyRingRecord {
                        instance: caller.instance(),
                        id: id.to_owned(),
                        created_at: self.clock.now(),
                        created_by: caller.subject().to_owned(),
                    };
                    let event = ctx.record()?;
                    match self.store.insert_key_ring(&ring, &event).await {
                        Err(StoreError::Conflict) => Err(KeyError::Refused(
                            Rule::KeyRingExists,
                            format!("key ring {id:?} already exists"),
                        )),
                        r => r.map_err(KeyError::from),
                    }
                },
            )
            .await
    }

    /// Deletes a key ring that holds no keys; with `force`, one that holds only deleted keys.
    pub async fn delete_key_ring(
        &self,
        caller: &Caller,
        id: &str,
        force: bool,
    ) -> Result<(), KeyError> {
        self.pipe
            .run_in(
                &op::DELETE_KEY_RING,
                caller,
                Target::Instance,
                async |ctx| {
                    if id == DEFAULT_KEY_RING {
                        return Err(KeyError::Refused(
                            Rule::DefaultKeyRing,
                            "the default key ring cannot be deleted".into(),
                        ));
                    }
                    if force {
                        self.move_deleted_keys_to_default(caller, id).await?;
                    }
                    let event = ctx.record()?;
                    match self.store.delete_key_ring(caller.instance(), id, &event).await? {
                RingDeletion::Deleted => Ok(()),
                RingDeletion::NotFound => Err(no_such_ring(id)),
                RingDeletion::HasLiveKeys => Err(KeyError::Refused(
                    Rule::KeyRingKeysNotDeleted,
                    "the key ring holds keys that are not deleted: delete or move them first"
                        .to_owned(),
                )),
                RingDeletion::HasDeletedKeys => Err(KeyError::Refused(
                    Rule::KeyRingNotEmpty,
                    "the key ring holds deleted keys: force=true moves them to the default ring \
                     and deletes it"
                        .to_owned(),
                )),
            }
                },
            )
            .await
    }

    /// Moves a key to another key ring of its instance.
    pub async fn move_key(
        &self,
        caller: &Caller,
        id: KeyId,
        ring: &str,
    ) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(&op::PATCH_KEY, caller, key_target(id), async |ctx| {
                let mut key = self.load(ctx, caller, id).await?.into_inner();
                // The move is a patch of the destination ring too: a Manager of ring A may not
                // put a key into ring B, where B's readers would use it (issue 18 item 6). A
                // ring the caller cannot see is, to it, a ring that does not exist.
                match ctx.authorize(Target::KeyRing(ring)) {
                    Err(KeyError::NotFound) => return Err(no_such_ring(ring)),
                    r => r?,
                }
                self.require_ring(caller, ring).await?;
                let now = self.clock.now();
                key.key_ring = ring.to_owned();
                self.save(ctx, &mut key, None, now, crate::Deletion::default())
                    .await?;
                Ok(key)
            })
            .await
    }

    /// A forced ring delete first moves the ring's deleted keys (and tombstones) to `default`,
    /// each re-signed. If a live key remains or arrives, the delete itself is then refused.
    async fn move_deleted_keys_to_default(
        &self,
        caller: &Caller,
        ring: &str,
    ) -> Result<(), KeyError> {
        let filter = KeyFilter {
            limit: u32::MAX,
            offset: 0,
            states: vec![KeyState::Destroyed],
            extractable: None,
            key_ring: Some(ring.to_owned()),
            ..KeyFilter::default()
        };
        let (keys, _) = self.store.keys(caller.instance(), &filter).await?;
        for key in keys {
            let mut key = self.verify_key(key)?.into_inner();
            // Each move is a patch of that key, recorded as one.
            self.pipe
                .run(&op::PATCH_KEY, caller, key_target(key.id), async |ctx| {
                    ctx.authorize(Target::Key(key.id, &key.key_ring))?;
                    let now = self.clock.now();
                    key.key_ring = DEFAULT_KEY_RING.to_owned();
                    self.save(ctx, &mut key, None, now, crate::Deletion::default())
                        .await
                })
                .await?;
        }
        Ok(())
    }

    /// Refuses a key ring that does not exist in the caller's instance.
    pub(super) async fn require_ring(&self, caller: &Caller, ring: &str) -> Result<(), KeyError> {
        if ring == DEFAULT_KEY_RING {
            return Ok(());
        }
        check_ring_id(ring)?;
        let all = Page {
            limit: u32::MAX,
            offset: 0,
        };
        let (rings, _) = self.store.key_rings(caller.instance(), all).await?;
        if rings.iter().any(|r| r.id == ring) {
            Ok(())
        } else {
            Err(no_such_ring(ring))
        }
    }
}

fn no_such_ring(ring: &str) -> KeyError {
    KeyError::Refused(
        Rule::KeyRingNotFound,
        format!("no key ring {ring:?} in this instance"),
    )
}

fn bad_alias() -> KeyError {
    KeyError::InvalidInput(
        "alias: 2 to 90 characters (letters, digits, '-' and '_'), not a key id or reserved word"
            .into(),
    )
}

/// Key Protect's key ring ids: 2 to 100 characters, letters, digits and '-'.
fn check_ring_id(id: &str) -> Result<(), KeyError> {
    let ok = RING_ID_CHARS.contains(&id.chars().count())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidInput(
            "keyRingID: 2 to 100 characters: letters, digits and '-'".into(),
        ))
    }
}

/// Aliases: 2 to 90 characters of letters, digits, '-' and '_', and never a key id (so a
/// reference is unambiguous).
fn valid_alias(alias: &str) -> bool {
    ALIAS_CHARS.contains(&alias.chars().count())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && alias.parse::<KeyId>().is_err()
        && !RESERVED_ALIASES.contains(&alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_and_ring_rules() {
        assert!(valid_alias("my-key_1"));
        assert!(!valid_alias("a"));
        assert!(!valid_alias("has space"));
        assert!(!valid_alias(&"x".repeat(91)));
        assert!(!valid_alias(&KeyId::random().to_string()));
        assert!(!valid_alias("versions"));
        assert!(check_ring_id("ring-1").is_ok());
        assert!(check_ring_id("r").is_err());
        assert!(check_ring_id("ring_1").is_err());
        assert!(check_ring_id(&"r".repeat(101)).is_err());
    }
}
