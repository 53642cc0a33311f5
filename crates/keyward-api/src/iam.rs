//! `/iam/v1` wire types: identities, API keys, access policies, service-to-service authorizations,
//! instances and their list envelopes (`{"count": n, "<name>": [...]}`). Field names follow IBM
//! Cloud IAM's where it has them (`iam_id`, `account_id`, `apikey`, `locked`, `created_at`).
//!
//! Request bodies refuse unknown fields (a typo must not widen or narrow a grant silently);
//! records keep `null` for an absent optional field, as the server has always sent them.

use serde::{Deserialize, Serialize};

/// An identity of the account: a user, a service ID or a service instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The IAM id (`IBMid-…`, `iam-ServiceId-…`, `crn-…`).
    pub iam_id: String,
    /// The account.
    pub account_id: String,
    /// `user`, `service_id` or `service`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Optional description.
    pub description: Option<String>,
    /// For a service instance: the service's name.
    pub service_name: Option<String>,
    /// For a service instance: its instance id.
    pub service_instance: Option<String>,
    /// A locked identity gets no tokens, and its tokens stop working.
    pub locked: bool,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// IAM id of its creator.
    pub created_by: String,
}

/// An identity to create (`POST /iam/v1/identities`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIdentity {
    /// `user`, `service_id` or `service`.
    pub kind: String,
    /// Display name (1 to 100 characters).
    pub name: String,
    /// Optional description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// For kind `service` (required there): the service's name, e.g. `messagehub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// For kind `service` (required there): the service instance's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_instance: Option<String>,
}

/// An API key of the account, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// Public id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The identity it authenticates as.
    pub iam_id: String,
    /// The account.
    pub account_id: String,
    /// A locked key gets no tokens, and its tokens stop working.
    pub locked: bool,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
}

/// A new API key with its secret, which the server shows this once. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    /// The key's record.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The whole API key, to exchange at `/identity/token`.
    pub apikey: String,
}

impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// An API key to create (`POST /iam/v1/apikeys`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// The identity it authenticates as.
    pub iam_id: String,
    /// Name.
    pub name: String,
}

/// Where a policy or authorization applies. All `None`: the whole account (policies only);
/// `instance_id`: an instance; with `key_ring` or `key_id`: a key ring or key of it.
/// The server shows an account scope as `account_id`; when sent, it must be the caller's account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The account (shown for an account scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// An instance of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// A key ring of that instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ring: Option<String>,
    /// A key of that instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

impl Resource {
    /// The whole account.
    pub fn account() -> Self {
        Resource::default()
    }

    /// One instance.
    pub fn instance(instance_id: &str) -> Self {
        Resource {
            instance_id: Some(instance_id.to_owned()),
            ..Resource::default()
        }
    }

    /// One key ring of an instance.
    pub fn key_ring(instance_id: &str, ring: &str) -> Self {
        Resource {
            key_ring: Some(ring.to_owned()),
            ..Resource::instance(instance_id)
        }
    }

    /// One key of an instance.
    pub fn key(instance_id: &str, key_id: &str) -> Self {
        Resource {
            key_id: Some(key_id.to_owned()),
            ..Resource::instance(instance_id)
        }
    }
}

/// An access policy: a subject's roles on a scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessPolicy {
    /// Policy id.
    pub id: String,
    /// The account.
    pub account_id: String,
    /// IAM id of the identity it gives roles to.
    pub subject: String,
    /// Role names (`Reader`, `ReaderPlus`, `Writer`, `Manager`, `KeyPurge`,
    /// `KmipAdapterManager`, `Administrator`).
    pub roles: Vec<String>,
    /// What it covers.
    pub resource: Resource,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// IAM id of its creator.
    pub created_by: String,
}

/// An access policy to create (`POST /iam/v1/policies`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccessPolicy {
    /// IAM id of the identity to give roles to.
    pub subject: String,
    /// Role names.
    pub roles: Vec<String>,
    /// What it covers; absent: the whole account.
    #[serde(default)]
    pub resource: Resource,
}

/// The source service of an authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationSource {
    /// The service's name, e.g. `messagehub`.
    pub service_name: String,
    /// One instance of it; `None`: every instance.
    pub service_instance: Option<String>,
}

/// A service-to-service authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// Authorization id.
    pub id: String,
    /// The account that owns the target.
    pub account_id: String,
    /// Who is authorized.
    pub source: AuthorizationSource,
    /// On what: an instance, key ring or key.
    pub target: Resource,
    /// Role names.
    pub roles: Vec<String>,
    /// Whether the source may authorize its dependent services in turn.
    pub delegation: bool,
    /// With `delegation`: the services the source may authorize.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<String>,
    /// The delegating authorization this one was made under (deleted with it), if a service
    /// made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_from: Option<String>,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// IAM id of its creator.
    pub created_by: String,
}

/// An authorization to create (`POST /iam/v1/authorizations`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAuthorization {
    /// Who is authorized.
    pub source: AuthorizationSource,
    /// On what: an instance, key ring or key (`instance_id` required).
    pub target: Resource,
    /// Role names (not `Administrator`).
    pub roles: Vec<String>,
    /// Whether the source may authorize its dependent services with a subset of these roles on
    /// the same target.
    #[serde(default)]
    pub delegation: bool,
    /// With `delegation` (and required by it): the services the source may authorize, one
    /// named instance at a time (its dependent services; never its own service).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependents: Vec<String>,
}

/// A KMS instance of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// The instance id (the `bluemix-instance` header of the Key Protect API).
    pub id: String,
    /// The account.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
}

/// An instance to create (`POST /iam/v1/instances`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// Name.
    pub name: String,
}

/// The list envelopes: `{"count": n, "<field>": [...]}`, one per record type.
macro_rules! lists {
    ($($(#[$doc:meta])* $list:ident { $field:ident: $item:ty })*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $list {
            /// Number of records in this body.
            #[serde(default)]
            pub count: u64,
            /// The records.
            pub $field: Vec<$item>,
        }

        impl From<Vec<$item>> for $list {
            fn from($field: Vec<$item>) -> Self {
                $list { count: $field.len() as u64, $field }
            }
        }
    )*};
}

lists! {
    /// `GET /iam/v1/identities`.
    IdentityList { identities: Identity }
    /// `GET /iam/v1/apikeys`.
    ApiKeyList { apikeys: ApiKeyInfo }
    /// `GET /iam/v1/policies`.
    AccessPolicyList { policies: AccessPolicy }
    /// `GET /iam/v1/authorizations`.
    AuthorizationList { authorizations: Authorization }
    /// `GET /iam/v1/instances`.
    InstanceList { instances: InstanceInfo }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_keep_null_for_absent_optional_fields() {
        let source = AuthorizationSource {
            service_name: "messagehub".into(),
            service_instance: None,
        };
        assert_eq!(
            serde_json::to_value(&source).unwrap_or_default(),
            json!({"service_name": "messagehub", "service_instance": null})
        );
        let i = Identity {
            iam_id: "iam-x".into(),
            account_id: "a".into(),
            kind: "user".into(),
            name: "n".into(),
            description: None,
            service_name: None,
            service_instance: None,
            locked: false,
            created_at: "t".into(),
            created_by: "c".into(),
        };
        let v = serde_json::to_value(&i).unwrap_or_default();
        assert_eq!(v["description"], serde_json::Value::Null);
        assert!(
            v.as_object()
                .is_some_and(|o| o.contains_key("service_name"))
        );
    }

    #[test]
    fn resources_show_only_their_scope() {
        assert_eq!(
            serde_json::to_value(Resource::account()).unwrap_or_default(),
            json!({})
        );
        assert_eq!(
            serde_json::to_value(Resource::key("i", "k")).unwrap_or_default(),
            json!({"instance_id": "i", "key_id": "k"})
        );
    }

    #[test]
    fn request_bodies_refuse_unknown_fields() {
        let r = serde_json::from_value::<NewAccessPolicy>(
            json!({"subject": "s", "roles": [], "resource": {"instanceid": "i"}}),
        );
        assert!(r.is_err());
        let p: NewAccessPolicy =
            serde_json::from_value(json!({"subject": "s", "roles": ["Reader"]}))
                .unwrap_or_default();
        assert_eq!(p.resource, Resource::account());
        assert_eq!(p.roles, ["Reader"]);
    }

    #[test]
    fn lists_count_their_records() {
        let list = InstanceList::from(vec![InstanceInfo {
            id: "i".into(),
            account_id: "a".into(),
            name: "n".into(),
            created_at: "t".into(),
        }]);
        let v = serde_json::to_value(&list).unwrap_or_default();
        assert_eq!(v["count"], 1);
        assert_eq!(v["instances"][0]["id"], "i");
    }
}
