//! Key records and versions as stored, and the canonical bytes their signatures cover.

use time::OffsetDateTime;

use crate::{InstanceId, KeyId, KeyState, KeyVersionId, WrappedMaterial};

/// Accepted sizes, in bytes, of imported root key material (128, 192 or 256 bits).
pub const ALLOWED_ROOT_KEY_BYTES: [usize; 3] = [16, 24, 32];
/// Largest imported standard key payload, in bytes (Key Protect's limit is 7,500).
pub const MAX_STANDARD_KEY_BYTES: usize = 7_500;

/// Root keys wrap DEKs and never leave Keyward; standard keys are secrets returned to callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `extractable: false`.
    Root,
    /// `extractable: true`.
    Standard,
}

/// A key's metadata, one row per key. `signature` covers the fields that decide what the key may
/// do (see [`KeyRecord::signed_bytes`]); a record whose signature fails is never used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key's id.
    pub id: KeyId,
    /// The instance that owns it.
    pub instance: InstanceId,
    /// Root or standard.
    pub kind: KeyKind,
    /// Human-readable name (not unique).
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// Lifecycle state.
    pub state: KeyState,
    /// Whether the material was supplied by the caller.
    pub imported: bool,
    /// Key ring (Key Protect's `keyRingID`); `default` unless set.
    pub key_ring: String,
    /// When the key becomes Deactivated, if ever.
    pub expiration: Option<OffsetDateTime>,
    /// Size of the material in bits.
    pub bits: u16,
    /// Number of the current version (1 for a new key).
    pub current_version: u32,
    /// Id of the current version.
    pub current_version_id: KeyVersionId,
    /// Incremented on every change; writes are compare-and-swap on it.
    pub revision: u64,
    /// When the key was created.
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: String,
    /// Last change of any kind.
    pub updated_at: OffsetDateTime,
    /// Last state change (enable-after-disable rule).
    pub state_changed_at: OffsetDateTime,
    /// Last rotation, if any.
    pub last_rotated_at: Option<OffsetDateTime>,
    /// When it was deleted, if it was.
    pub deleted_at: Option<OffsetDateTime>,
    /// Who deleted it.
    pub deleted_by: Option<String>,
    /// Custody signature over [`KeyRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

/// One version of a key's material, wrapped by custody. Versions are never changed, only added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    /// The key it belongs to.
    pub key_id: KeyId,
    /// 1, 2, 3, ... in rotation order.
    pub number: u32,
    /// Globally unique id, written into every DEK ciphertext.
    pub id: KeyVersionId,
    /// When this version was created.
    pub created_at: OffsetDateTime,
    /// The material, wrapped by the custody MKEK.
    pub material: WrappedMaterial,
    /// Custody signature over [`KeyVersion::signed_bytes`].
    pub signature: Vec<u8>,
}

fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn time_bytes(t: Option<OffsetDateTime>) -> Vec<u8> {
    t.map(|t| t.unix_timestamp_nanos().to_be_bytes().to_vec())
        .unwrap_or_default()
}

impl KeyRecord {
    /// The canonical, unambiguous bytes the record signature covers: identity, owner, kind, state,
    /// version pointer, revision and the dates that gate use. A row edited or swapped in the
    /// database no longer matches its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        push_field(&mut out, b"keyward/key-record/v1");
        push_field(&mut out, self.id.as_bytes());
        push_field(&mut out, self.instance.as_bytes());
        push_field(
            &mut out,
            &[
                matches!(self.kind, KeyKind::Root) as u8,
                self.state.code(),
                self.imported as u8,
            ],
        );
        push_field(&mut out, &self.bits.to_be_bytes());
        push_field(&mut out, &self.current_version.to_be_bytes());
        push_field(&mut out, self.current_version_id.as_bytes());
        push_field(&mut out, &self.revision.to_be_bytes());
        push_field(&mut out, &time_bytes(self.expiration));
        push_field(&mut out, &time_bytes(Some(self.state_changed_at)));
        push_field(&mut out, &time_bytes(self.last_rotated_at));
        push_field(&mut out, &time_bytes(self.deleted_at));
        out
    }
}

impl KeyVersion {
    /// The canonical bytes the version signature covers, including the owning key and instance so
    /// wrapped material cannot be moved to another key.
    pub fn signed_bytes(&self, instance: InstanceId) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.material.bytes.len());
        push_field(&mut out, b"keyward/key-version/v1");
        push_field(&mut out, self.key_id.as_bytes());
        push_field(&mut out, instance.as_bytes());
        push_field(&mut out, &self.number.to_be_bytes());
        push_field(&mut out, self.id.as_bytes());
        push_field(&mut out, self.material.wrapping_key.as_bytes());
        push_field(&mut out, &self.material.bytes);
        out
    }
}
