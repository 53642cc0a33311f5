//! Envelope encryption: wrap, unwrap and rewrap DEKs under a root key, on the hot path (the
//! verified root key comes from the cache while it is fresh).

use keyward_crypto::{DekCiphertext, Secret};

use super::{
    Caller, GENERATED_KEY_BYTES, KeyService, MAX_DEK_BYTES, RewrapOutput, UnwrapOutput, WrapOutput,
    aad_refs, check_aad, invalid, seal,
};
use crate::op::{self, Op};
use crate::pipeline::{Ctx, key_target};
use crate::{Action, KeyError, KeyId, KeyVersionId};

impl KeyService {
    /// Encrypts `plaintext` (or a new 256-bit DEK when `None`) under the key's latest version.
    pub async fn wrap(
        &self,
        caller: &Caller,
        id: KeyId,
        plaintext: Option<Secret>,
        aad: &[String],
    ) -> Result<WrapOutput, KeyError> {
        self.pipe
            .run(&op::WRAP, caller, key_target(id), async |ctx| {
                let entry = self.root_key(ctx, caller, id, Action::Wrap).await?;
                check_aad(aad)?;
                if let Some(p) = &plaintext
                    && (p.is_empty() || p.len() > MAX_DEK_BYTES)
                {
                    return Err(invalid(format!("plaintext: 1 to {MAX_DEK_BYTES} bytes")));
                }
                let (dek, generated) = match plaintext {
                    Some(p) => (p, false),
                    None => (self.custody.generate_material(GENERATED_KEY_BYTES)?, true),
                };
                let ct = seal(&entry.material, &entry.current, &aad_refs(aad), &dek)?;
                ctx.key(entry.key.state, Some(entry.current.id));
                Ok(WrapOutput {
                    ciphertext: ct,
                    generated: generated.then_some(dek),
                    version: entry.current.id,
                })
            })
            .await
    }

    /// Decrypts a DEK ciphertext of any version of the key; when that version is not the latest,
    /// also returns the DEK sealed under the latest.
    pub async fn unwrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<UnwrapOutput, KeyError> {
        self.pipe
            .run(&op::UNWRAP, caller, key_target(id), async |ctx| {
                let out = self
                    .open(ctx, &op::UNWRAP, caller, id, ciphertext, aad)
                    .await?;
                ctx.key_version(out.version);
                Ok(out)
            })
            .await
    }

    /// Decrypts a DEK ciphertext and seals it under the key's latest version.
    pub async fn rewrap(
        &self,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<RewrapOutput, KeyError> {
        self.pipe
            .run(&op::REWRAP, caller, key_target(id), async |ctx| {
                let out = self
                    .open(ctx, &op::REWRAP, caller, id, ciphertext, aad)
                    .await?;
                let from = out.version;
                // `open` always reseals for Rewrap.
                let (ciphertext, to) = out.rewrapped.ok_or(KeyError::IntegrityFailure)?;
                ctx.key_version(to);
                Ok(RewrapOutput {
                    ciphertext,
                    from,
                    to,
                })
            })
            .await
    }

    pub(crate) async fn open(
        &self,
        ctx: &mut Ctx<'_>,
        verb: &'static Op,
        caller: &Caller,
        id: KeyId,
        ciphertext: &[u8],
        aad: &[String],
    ) -> Result<UnwrapOutput, KeyError> {
        let rewrap = verb == &op::REWRAP;
        let action = if rewrap {
            Action::Rewrap
        } else {
            Action::Unwrap
        };
        let entry = self.root_key(ctx, caller, id, action).await?;
        check_aad(aad)?;
        let ct = DekCiphertext::decode(ciphertext).map_err(|_| KeyError::InvalidCiphertext)?;
        let (key, current) = (&entry.key, &entry.current);
        let version_id = KeyVersionId::from_bytes(ct.version_id);
        let aad = aad_refs(aad);
        let plaintext = if version_id == current.id {
            ct.open(&entry.material, key.id.as_bytes(), &aad)
        } else {
            let old = self
                .store
                .key_version_by_id(id, version_id)
                .await?
                .ok_or(KeyError::InvalidCiphertext)?;
            let old = self.verify_version(key, old)?;
            ct.open(&self.material(&old)?, key.id.as_bytes(), &aad)
        }
        .map_err(|_| KeyError::InvalidCiphertext)?;
        // Unwrap returns the DEK sealed under the latest version only when it was sealed under an
        // older one; rewrap always wants it, and the latest material is already in hand here.
        let rewrapped = if version_id != current.id || rewrap {
            Some((
                seal(&entry.material, current, &aad, &plaintext)?,
                current.id,
            ))
        } else {
            None
        };
        Ok(UnwrapOutput {
            plaintext,
            version: version_id,
            rewrapped,
        })
    }
}
