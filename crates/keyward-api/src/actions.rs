//! The verbs of `POST /api/v2/keys/{id}/actions/{action}` and `POST /api/v2/keys/{id}?action=`:
//! parsed once into [`KeyAction`], refused with Key Protect's `INVALID_QUERY_PARAM_ERR`.

use std::fmt;
use std::str::FromStr;

/// A key action, spelled on the wire as [`KeyAction::as_str`] gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    /// `wrap`: seal a DEK (or a generated one) under the key's latest version.
    Wrap,
    /// `unwrap`: open a ciphertext from wrap.
    Unwrap,
    /// `rewrap`: reseal a ciphertext under the latest version.
    Rewrap,
    /// `rotate`: a new key version (new material for an imported key).
    Rotate,
    /// `disable`: suspend the key.
    Disable,
    /// `enable`: make a suspended key active again.
    Enable,
    /// `setKeyForDeletion`: the first authorization of a dual-authorization delete.
    SetKeyForDeletion,
    /// `unsetKeyForDeletion`: withdraw that authorization.
    UnsetKeyForDeletion,
    /// `sync`: send the key's lifecycle events to its registrations again.
    Sync,
}

impl KeyAction {
    /// Every action, in the order the refusal of an unknown one lists them.
    pub const ALL: [KeyAction; 9] = [
        KeyAction::Wrap,
        KeyAction::Unwrap,
        KeyAction::Rewrap,
        KeyAction::Rotate,
        KeyAction::Disable,
        KeyAction::Enable,
        KeyAction::SetKeyForDeletion,
        KeyAction::UnsetKeyForDeletion,
        KeyAction::Sync,
    ];

    /// The wire spelling (path segment or `action=` value).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAction::Wrap => "wrap",
            KeyAction::Unwrap => "unwrap",
            KeyAction::Rewrap => "rewrap",
            KeyAction::Rotate => "rotate",
            KeyAction::Disable => "disable",
            KeyAction::Enable => "enable",
            KeyAction::SetKeyForDeletion => "setKeyForDeletion",
            KeyAction::UnsetKeyForDeletion => "unsetKeyForDeletion",
            KeyAction::Sync => "sync",
        }
    }

    /// The action of a request: `None` is a missing `action=` parameter.
    pub fn parse(action: Option<&str>) -> Result<Self, ActionError> {
        action.ok_or(ActionError::Missing)?.parse()
    }
}

impl FromStr for KeyAction {
    type Err = ActionError;

    /// Exact spellings only, as Key Protect (`Wrap` is unknown).
    fn from_str(s: &str) -> Result<Self, ActionError> {
        KeyAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(ActionError::Unknown)
    }
}

impl fmt::Display for KeyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request names no action Keyward knows. Both are 400 `INVALID_QUERY_PARAM_ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionError {
    /// `POST /api/v2/keys/{id}` without `action=`.
    Missing,
    /// A spelling that is not one of [`KeyAction::ALL`].
    Unknown,
}

impl ActionError {
    /// The reason code of the error body.
    pub const CODE: &'static str = "INVALID_QUERY_PARAM_ERR";

    /// The error body's message: what the caller can send instead.
    pub fn message(self) -> &'static str {
        match self {
            ActionError::Missing => "action: required",
            ActionError::Unknown => {
                "action: one of wrap, unwrap, rewrap, rotate, disable, enable, setKeyForDeletion, \
                 unsetKeyForDeletion, sync"
            }
        }
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ActionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_parses_from_its_own_spelling() {
        for a in KeyAction::ALL {
            assert_eq!(a.as_str().parse::<KeyAction>(), Ok(a));
            assert_eq!(KeyAction::parse(Some(&a.to_string())), Ok(a));
        }
    }

    #[test]
    fn unknown_missing_and_miscased_actions_are_refused() {
        assert_eq!(KeyAction::parse(None), Err(ActionError::Missing));
        for s in [
            "",
            "explode",
            "Wrap",
            "restore",
            "setkeyfordeletion",
            "wrap ",
        ] {
            assert_eq!(s.parse::<KeyAction>(), Err(ActionError::Unknown), "{s:?}");
        }
        assert_eq!(ActionError::Missing.message(), "action: required");
    }

    #[test]
    fn the_refusal_lists_every_action_in_order() {
        let listed = ActionError::Unknown
            .message()
            .trim_start_matches("action: one of ")
            .split(", ")
            .collect::<Vec<_>>();
        let all = KeyAction::ALL.map(KeyAction::as_str);
        assert_eq!(listed, all);
    }
}
