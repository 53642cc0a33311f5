//! Registrations on the wire: a service's record that one of its resources (named by CRN) is
//! protected by a root key, as Key Protect's registration API shapes it.
//!
//! Bodies are collections: requests carry `metadata.collectionType =
//! application/vnd.ibm.kms.registration_input+json` and one resource; answers carry
//! `application/vnd.ibm.kms.registration+json`. `pendingEvents` and `adopterKeyState` are
//! Keyward extensions (Key Protect keeps that state internally).

use serde::{Deserialize, Serialize};

use crate::{Collection, KeyVersionRef};

/// Media type of registration answers.
pub const REGISTRATION: &str = "application/vnd.ibm.kms.registration+json";
/// Media type of registration request bodies.
pub const REGISTRATION_INPUT: &str = "application/vnd.ibm.kms.registration_input+json";

/// Query parameters of the two listing routes, as Key Protect names them.
pub mod query {
    /// A resource CRN pattern (URL-encoded); `*` matches any run of characters.
    pub const CRN: &str = "urlEncodedResourceCRNQuery";
    /// `true` or `false`: only registrations with that `preventKeyDeletion`.
    pub const PREVENT_KEY_DELETION: &str = "preventKeyDeletion";
    /// Page size (default 200, at most 5000).
    pub const LIMIT: &str = "limit";
    /// Registrations to skip.
    pub const OFFSET: &str = "offset";
    /// `true`: answer `metadata.totalCount`.
    pub const TOTAL_COUNT: &str = "totalCount";
}

/// The resource of a create, replace or update request. On update (`PATCH`) an absent field is
/// left as it was; on create and replace it takes its default (empty, `false`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationInput {
    /// Shown to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Visible only to the registering service, never in the customer's listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_metadata: Option<String>,
    /// The key cannot be deleted, even with `force=true`, while this is set (a WORM policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prevent_key_deletion: Option<bool>,
    /// The key version the resource's DEKs are wrapped under; default the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version_id: Option<String>,
}

impl RegistrationInput {
    /// The request body Key Protect expects: a one-resource collection.
    pub fn into_body(self) -> Collection<RegistrationInput> {
        Collection::new(REGISTRATION_INPUT, vec![self])
    }
}

/// An event sent to the registration's owner and not acknowledged yet (Keyward extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingEvent {
    /// The event's id, as `event_ack` names it.
    pub event_id: String,
    /// Its sequence number.
    pub seq: u64,
    /// `rotate`, `disable`, ...
    pub event_type: crate::events::EventType,
    /// When it was created (RFC 3339).
    pub time: String,
}

/// A registration as Key Protect returns it, plus Keyward's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The root key's id.
    pub key_id: String,
    /// The root key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// The protected resource.
    pub resource_crn: String,
    /// The identity that created the registration (its owner).
    pub created_by: String,
    /// Creation date.
    pub creation_date: String,
    /// The identity that last changed it.
    pub updated_by: String,
    /// Last change.
    pub last_updated: String,
    /// Shown to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether it blocks the key's deletion.
    pub prevent_key_deletion: bool,
    /// The key version the resource uses.
    pub key_version: KeyVersionRef,
    /// Only in answers to the registration's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_metadata: Option<String>,
    /// Keyward extension: events the owner has not acknowledged yet, oldest first. Empty when the
    /// owning service has acted on every change of the key.
    #[serde(default)]
    pub pending_events: Vec<PendingEvent>,
    /// Keyward extension: the state the owner last acknowledged (`DEK_DISABLED`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopter_key_state: Option<crate::events::AdopterKeyState>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_input_reads_key_protects_body() {
        let body = r#"{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json",
            "collectionTotal":1},"resources":[{"description":"d","registrationMetadata":"m",
            "preventKeyDeletion":true}]}"#;
        let c: Collection<RegistrationInput> = serde_json::from_str(body).unwrap_or_else(|e| {
            panic!("{e}");
        });
        let r = c.resources.first().cloned().unwrap_or_default();
        assert_eq!(r.description.as_deref(), Some("d"));
        assert_eq!(r.registration_metadata.as_deref(), Some("m"));
        assert_eq!(r.prevent_key_deletion, Some(true));
        assert_eq!(r.key_version_id, None);
    }

    #[test]
    fn registration_without_metadata_omits_it() {
        let r = Registration {
            key_id: "k".into(),
            key_name: None,
            resource_crn: "crn:v1:x".into(),
            created_by: "a".into(),
            creation_date: "t".into(),
            updated_by: "a".into(),
            last_updated: "t".into(),
            description: None,
            prevent_key_deletion: false,
            key_version: KeyVersionRef {
                id: "v".into(),
                creation_date: None,
            },
            registration_metadata: None,
            pending_events: vec![],
            adopter_key_state: None,
        };
        let text = serde_json::to_string(&r).unwrap_or_default();
        assert!(!text.contains("registrationMetadata"), "{text}");
        assert!(text.contains(r#""pendingEvents":[]"#), "{text}");
    }
}
