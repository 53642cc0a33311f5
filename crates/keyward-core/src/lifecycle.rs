//! The key lifecycle: states and the single transition function that holds Key Protect's rules.

use crate::KeyError;

/// A key's state, numbered as Key Protect numbers them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Created but not yet usable (KMIP pre-active). Not produced by the REST API today.
    PreActive,
    /// Usable for every operation its kind allows.
    Active,
    /// Disabled by a user: refuses wrap and unwrap until enabled.
    Suspended,
    /// Past its expiration date: may unwrap old data but never wrap new data.
    Deactivated,
    /// Deleted: its material can no longer be used.
    Destroyed,
}

impl KeyState {
    /// Key Protect's number for the state.
    pub fn code(self) -> u8 {
        match self {
            KeyState::PreActive => 0,
            KeyState::Active => 1,
            KeyState::Suspended => 2,
            KeyState::Deactivated => 3,
            KeyState::Destroyed => 5,
        }
    }

    /// The state for a Key Protect number.
    pub fn from_code(code: i64) -> Option<KeyState> {
        Some(match code {
            0 => KeyState::PreActive,
            1 => KeyState::Active,
            2 => KeyState::Suspended,
            3 => KeyState::Deactivated,
            5 => KeyState::Destroyed,
            _ => return None,
        })
    }
}

/// Something a caller does to or with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Encrypt a DEK.
    Wrap,
    /// Decrypt a DEK.
    Unwrap,
    /// Decrypt a DEK and encrypt it again under the latest version.
    Rewrap,
    /// Create a new version of the key material.
    Rotate,
    /// Suspend the key.
    Disable,
    /// Reactivate a suspended key.
    Enable,
    /// Destroy the key.
    Delete,
    /// Read a standard key's payload.
    ReadPayload,
    /// Bring a deleted key back.
    Restore,
    /// Erase a deleted key's material for good.
    Purge,
    /// Move an active key past its expiration date to Deactivated (the scheduler).
    Expire,
    /// Authorize (or withdraw) a dual-authorization delete.
    AuthorizeDeletion,
    /// Change what the key is called or governed by (policies, aliases).
    Modify,
    /// Create, replace or update a service's registration on the key.
    Register,
    /// Remove a registration.
    Deregister,
    /// Re-send the key's state to its registered services (`actions/sync`).
    Sync,
}

impl Action {
    /// The name used in error messages and audit events.
    pub fn name(self) -> &'static str {
        match self {
            Action::Wrap => "wrap",
            Action::Unwrap => "unwrap",
            Action::Rewrap => "rewrap",
            Action::Rotate => "rotate",
            Action::Disable => "disable",
            Action::Enable => "enable",
            Action::Delete => "delete",
            Action::ReadPayload => "read",
            Action::Restore => "restore",
            Action::Purge => "purge",
            Action::Expire => "expire",
            Action::AuthorizeDeletion => "be set for deletion",
            Action::Modify => "be changed",
            Action::Register => "be registered",
            Action::Deregister => "have a registration removed",
            Action::Sync => "be synced",
        }
    }
}

/// Key Protect's state table (see KEY-PROTECT.md): returns the state after `action`, or why the
/// action is refused in state `from`. This is the only place these rules live.
pub fn transition(from: KeyState, action: Action) -> Result<KeyState, KeyError> {
    use Action::*;
    use KeyState::*;
    let to = match (from, action) {
        (Active, Wrap | Unwrap | Rewrap | Rotate | ReadPayload) => Active,
        (Deactivated, Unwrap | Rewrap | Rotate) => Deactivated,
        (Active, Disable) => Suspended,
        (Suspended, Enable) => Active,
        (Active | Suspended | Deactivated, Delete) => Destroyed,
        (Destroyed, Restore) => Active,
        (Destroyed, Purge) => Destroyed,
        (Active, Expire) => Deactivated,
        (Active, AuthorizeDeletion) => Active,
        (s @ (PreActive | Active | Suspended | Deactivated), Modify) => s,
        // Key Protect: registrations are created and changed on active keys only, removed from
        // active and suspended ones (Keyward also lets a service clean up after a delete).
        (Active, Register) => Active,
        (s @ (Active | Suspended | Deactivated | Destroyed), Deregister | Sync) => s,
        _ => {
            return Err(KeyError::InvalidState {
                state: from,
                action,
            });
        }
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STATES: [KeyState; 5] = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Deactivated,
        KeyState::Destroyed,
    ];

    #[test]
    fn matches_key_protects_table() {
        use Action::*;
        use KeyState::*;
        // (action, states that permit it) from Key Protect's documented table.
        let table: [(Action, &[KeyState]); 15] = [
            (Wrap, &[Active]),
            (Unwrap, &[Active, Deactivated]),
            (Rewrap, &[Active, Deactivated]),
            (Rotate, &[Active, Deactivated]),
            (Enable, &[Suspended]),
            (Disable, &[Active]),
            (Delete, &[Active, Suspended, Deactivated]),
            (Restore, &[Destroyed]),
            (Purge, &[Destroyed]),
            (Expire, &[Active]),
            (AuthorizeDeletion, &[Active]),
            (Modify, &[PreActive, Active, Suspended, Deactivated]),
            (Register, &[Active]),
            (Deregister, &[Active, Suspended, Deactivated, Destroyed]),
            (Sync, &[Active, Suspended, Deactivated, Destroyed]),
        ];
        for (action, allowed) in table {
            for state in ALL_STATES {
                let result = transition(state, action);
                assert_eq!(
                    result.is_ok(),
                    allowed.contains(&state),
                    "{action:?} in {state:?}"
                );
            }
        }
        assert_eq!(transition(Active, Disable).ok(), Some(Suspended));
        assert_eq!(transition(Suspended, Enable).ok(), Some(Active));
        assert_eq!(transition(Deactivated, Delete).ok(), Some(Destroyed));
    }

    #[test]
    fn codes_round_trip() {
        for s in ALL_STATES {
            assert_eq!(KeyState::from_code(i64::from(s.code())), Some(s));
        }
        assert_eq!(KeyState::from_code(4), None);
        assert_eq!(KeyState::from_code(-1), None);
    }
}
