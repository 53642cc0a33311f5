//! Key records and versions as stored, and the canonical bytes their signatures cover.

use keyward_crypto::{Canonical, Framing};
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
    /// The key's rotation policy, if one was set (on the key or inherited from the instance).
    pub rotation: Option<RotationPolicy>,
    /// The key's dual-authorization delete policy, if one was set.
    pub dual_auth_delete: Option<DualAuthPolicy>,
    /// The first authorization of a dual-authorization delete (`setKeyForDeletion`).
    pub deletion_authorized: Option<DeletionAuthorization>,
    /// When the key's material was erased for good. A purged key has no versions left.
    pub purged_at: Option<OffsetDateTime>,
    /// When the scheduler should next rotate the key (a hint for its query, not signed: the
    /// scheduler re-checks the signed policy before rotating).
    pub next_rotation_at: Option<OffsetDateTime>,
    /// The key's aliases, in creation order. Read-only here: filled in by the store on reads,
    /// changed only through the alias operations (each alias row is signed on its own).
    pub aliases: Vec<String>,
    /// Custody signature over [`KeyRecord::signed_bytes`].
    pub signature: Vec<u8>,
}

/// Who set a policy and when, and who changed it last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMeta {
    /// When the policy was first set.
    pub created_at: OffsetDateTime,
    /// Who first set it.
    pub created_by: String,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// Who changed it last.
    pub updated_by: String,
}

/// Automatic rotation every `interval_month` months (1 to 12) while `enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Whether the scheduler rotates the key.
    pub enabled: bool,
    /// Months between rotations, 1 to 12.
    pub interval_month: u8,
    /// Who set it.
    pub meta: PolicyMeta,
}

/// Deleting the key needs two identities: one authorizes, another deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualAuthPolicy {
    /// Once true, never false again (Key Protect's rule).
    pub enabled: bool,
    /// Who set it.
    pub meta: PolicyMeta,
}

/// The first of the two authorizations a dual-authorization delete needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionAuthorization {
    /// The identity that authorized the deletion.
    pub by: String,
    /// When; the authorization lapses after `LifecycleConfig::dual_auth_window`.
    pub at: OffsetDateTime,
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

/// A time as its signed field: Unix nanoseconds, 16 bytes big-endian; empty when absent.
fn time_field(c: &mut Canonical, t: Option<OffsetDateTime>) {
    match t {
        Some(t) => c.field(&t.unix_timestamp_nanos().to_be_bytes()),
        None => c.field(&[]),
    };
}

impl KeyRecord {
    /// The canonical, unambiguous bytes the record signature covers: identity, owner, kind, state,
    /// version pointer, revision and the dates that gate use. A row edited or swapped in the
    /// database no longer matches its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut c = Canonical::new();
        c.field(b"keyward/key-record/v1")
            .field(self.id.as_bytes())
            .field(self.instance.as_bytes())
            .field(&[
                matches!(self.kind, KeyKind::Root) as u8,
                self.state.code(),
                self.imported as u8,
            ])
            .field(&self.bits.to_be_bytes())
            .field(&self.current_version.to_be_bytes())
            .field(self.current_version_id.as_bytes())
            .field(&self.revision.to_be_bytes());
        time_field(&mut c, self.expiration);
        time_field(&mut c, Some(self.state_changed_at));
        time_field(&mut c, self.last_rotated_at);
        time_field(&mut c, self.deleted_at);
        self.push_extension(&mut c);
        c.finish()
    }

    /// Fields added after the first record format. They are appended only when one differs from
    /// its default, so records signed before they existed still verify; a field that has been
    /// set can then never be removed without breaking the signature.
    fn push_extension(&self, c: &mut Canonical) {
        let untouched = self.rotation.is_none()
            && self.dual_auth_delete.is_none()
            && self.deletion_authorized.is_none()
            && self.purged_at.is_none()
            && self.key_ring == DEFAULT_KEY_RING;
        if untouched {
            return;
        }
        c.field(b"ext/v1");
        match &self.rotation {
            Some(r) => c.field(&[1, r.enabled as u8, r.interval_month]),
            None => c.field(&[0]),
        };
        match &self.dual_auth_delete {
            Some(d) => c.field(&[1, d.enabled as u8]),
            None => c.field(&[0]),
        };
        match &self.deletion_authorized {
            Some(a) => {
                c.field(a.by.as_bytes());
                time_field(c, Some(a.at));
            }
            None => {
                c.field(&[]);
            }
        }
        time_field(c, self.purged_at);
        c.field(self.key_ring.as_bytes());
    }
}

/// The key ring every instance has and keys land in unless told otherwise.
pub const DEFAULT_KEY_RING: &str = "default";

impl KeyVersion {
    /// The canonical bytes the version signature covers, including the owning key and instance so
    /// wrapped material cannot be moved to another key.
    pub fn signed_bytes(&self, instance: InstanceId) -> Vec<u8> {
        let mut c = Canonical::with_capacity(Framing::U32, 128 + self.material.bytes.len());
        c.field(b"keyward/key-version/v1")
            .field(self.key_id.as_bytes())
            .field(instance.as_bytes())
            .field(&self.number.to_be_bytes())
            .field(self.id.as_bytes())
            .field(self.material.wrapping_key.as_bytes())
            .field(&self.material.bytes);
        c.finish()
    }
}
