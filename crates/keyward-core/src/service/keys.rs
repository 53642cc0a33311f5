//! Creating keys and reading them: metadata, payloads, lists and versions.

use keyward_crypto::Secret;

use super::{
    Caller, GENERATED_KEY_BYTES, KeyFilter, KeyService, MAX_DESCRIPTION_CHARS, Material, NewKey,
    check_months, invalid, transition, validate_name,
};
use crate::access::Target;
use crate::op;
use crate::pipeline::key_target;
use crate::{
    Action, DEFAULT_KEY_RING, DualAuthPolicy, KeyError, KeyId, KeyKind, KeyRecord, KeyState,
    KeyVersion, PolicyMeta, RotationPolicy, Rule, StoreError, Verified,
};

impl KeyService {
    /// Creates a root or standard key, generated or imported.
    pub async fn create_key(&self, caller: &Caller, spec: NewKey) -> Result<KeyRecord, KeyError> {
        let verb = if spec.payload.is_some() {
            &op::IMPORT_KEY
        } else {
            &op::CREATE_KEY
        };
        let key_ring = spec
            .key_ring
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_RING.to_owned());
        self.pipe
            .run_in(verb, caller, Target::KeyRing(&key_ring), async |ctx| {
                validate_name(&spec.name)?;
                if let Some(d) = &spec.description
                    && d.chars().count() > MAX_DESCRIPTION_CHARS
                {
                    return Err(invalid(format!(
                        "description: at most {MAX_DESCRIPTION_CHARS} characters"
                    )));
                }
                let imported = spec.payload.is_some();
                let with_token = matches!(spec.payload, Some(Material::Secure(_)));
                self.require_ring(caller, &key_ring).await?;
                let policies = self.policies_of(caller.instance()).await?;
                if !policies.allows_creation(spec.kind, imported, with_token) {
                    let what = match (imported, spec.kind) {
                        (false, KeyKind::Root) => "creating root keys",
                        (false, KeyKind::Standard) => "creating standard keys",
                        (true, KeyKind::Root) => "importing root keys (without an import token)",
                        (true, KeyKind::Standard) => {
                            "importing standard keys (without an import token)"
                        }
                    };
                    return Err(KeyError::Refused(
                        Rule::CreateImportDenied,
                        format!("the instance's keyCreateImportAccess policy forbids {what}"),
                    ));
                }
                let now = self.clock.now();
                if let Some(exp) = spec.expiration
                    && exp <= now
                {
                    return Err(invalid("expirationDate: must be in the future".to_owned()));
                }
                let material = match spec.payload {
                    Some(m) => self.material_in(caller, spec.kind, m, now).await?,
                    None => self.custody.generate_material(GENERATED_KEY_BYTES)?,
                };
                let bits = u16::try_from(material.len().saturating_mul(8)).unwrap_or(u16::MAX);
                let id = KeyId::new(self.config.ids);
                let version = self.new_version(caller.instance(), id, 1, &material, now)?;
                let mut key = KeyRecord {
                    id,
                    instance: caller.instance(),
                    kind: spec.kind,
                    name: spec.name,
                    description: spec.description,
                    state: KeyState::Active,
                    imported,
                    key_ring: key_ring.clone(),
                    expiration: spec.expiration,
                    bits,
                    current_version: 1,
                    current_version_id: version.id,
                    revision: 1,
                    created_at: now,
                    created_by: caller.subject().to_owned(),
                    updated_at: now,
                    state_changed_at: now,
                    last_rotated_at: None,
                    deleted_at: None,
                    deleted_by: None,
                    rotation: None,
                    dual_auth_delete: None,
                    deletion_authorized: None,
                    purged_at: None,
                    next_rotation_at: None,
                    aliases: Vec::new(),
                    signature: Vec::new(),
                };
                let meta = || PolicyMeta {
                    created_at: now,
                    created_by: caller.subject().to_owned(),
                    updated_at: now,
                    updated_by: caller.subject().to_owned(),
                };
                // Rotation policies are for root keys; the instance's applies unless overridden.
                let rotation = spec
                    .overrides
                    .rotation
                    .or(policies.rotation_months().map(|m| (true, m)));
                if let (KeyKind::Root, Some((enabled, interval_month))) = (key.kind, rotation) {
                    check_months(interval_month)?;
                    key.rotation = Some(RotationPolicy {
                        enabled,
                        interval_month,
                        meta: meta(),
                    });
                }
                if spec
                    .overrides
                    .dual_auth_delete
                    .unwrap_or(policies.dual_auth_delete())
                {
                    key.dual_auth_delete = Some(DualAuthPolicy {
                        enabled: true,
                        meta: meta(),
                    });
                }
                key.next_rotation_at = self.next_rotation(&key);
                self.sign_key(&mut key)?;
                let aliases = self.new_aliases(caller, key.id, &spec.aliases, now)?;
                let event = ctx.record_key(&key, Some(version.id))?;
                match self
                    .store
                    .insert_key_with_aliases(&key, &version, &aliases, &event)
                    .await
                {
                    Err(StoreError::Conflict) if !aliases.is_empty() => {
                        return Err(KeyError::Refused(
                            Rule::AliasExists,
                            "aliases: one of them already names a key of this instance".into(),
                        ));
                    }
                    r => r?,
                }
                key.aliases = spec.aliases;
                Ok(key)
            })
            .await
    }

    /// A key's metadata and, for an active standard key, its payload.
    pub async fn get_key(
        &self,
        caller: &Caller,
        id: KeyId,
    ) -> Result<(KeyRecord, Option<Secret>), KeyError> {
        self.pipe
            .run(&op::READ_KEY, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                let payload = if key.kind == KeyKind::Standard
                    && transition(self.effective_state(&key), Action::ReadPayload).is_ok()
                {
                    let (_, material) = self.version_material(&key, key.current_version).await?;
                    Some(material)
                } else {
                    None
                };
                Ok((key.into_inner(), payload))
            })
            .await
    }

    /// A key's metadata.
    pub async fn key_metadata(&self, caller: &Caller, id: KeyId) -> Result<KeyRecord, KeyError> {
        self.pipe
            .run(&op::READ_METADATA, caller, key_target(id), async |ctx| {
                Ok(self.load(ctx, caller, id).await?.into_inner())
            })
            .await
    }

    /// A page of the instance's keys and the total that match.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        filter: &KeyFilter,
    ) -> Result<(Vec<KeyRecord>, u64), KeyError> {
        let target = match &filter.key_ring {
            Some(ring) => Target::KeyRing(ring),
            None => Target::Instance,
        };
        self.pipe
            .run_in(&op::LIST_KEYS, caller, target, async |_| {
                let (keys, total) = self.store.keys(caller.instance(), filter).await?;
                let keys = keys
                    .into_iter()
                    .map(|k| self.verify_key(k).map(Verified::into_inner))
                    .collect::<Result<_, _>>()?;
                Ok((keys, total))
            })
            .await
    }

    /// A page of a key's versions, newest first, with the key and how many versions it has.
    pub async fn key_versions(
        &self,
        caller: &Caller,
        id: KeyId,
        page: crate::Page,
    ) -> Result<(KeyRecord, Vec<KeyVersion>, u64), KeyError> {
        self.pipe
            .run(&op::LIST_VERSIONS, caller, key_target(id), async |ctx| {
                let key = self.load(ctx, caller, id).await?;
                let (versions, total) = self.store.key_versions(id, page).await?;
                let versions = versions
                    .into_iter()
                    .map(|v| self.verify_version(&key, v).map(Verified::into_inner))
                    .collect::<Result<_, _>>()?;
                Ok((key.into_inner(), versions, total))
            })
            .await
    }
}
