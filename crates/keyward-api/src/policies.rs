//! Policies, key rings and aliases on the wire.

use serde::{Deserialize, Serialize};

/// A rotation policy as sent: the older Go client omits `enabled` (meaning enabled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicyIn {
    /// Whether rotation is automatic; absent means true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Months between rotations (1 to 12). Signed so out-of-range values are refused by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_month: Option<i64>,
}

/// A rotation policy as returned: both fields always present (the SDK requires both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicyView {
    /// Whether rotation is automatic.
    pub enabled: bool,
    /// Months between rotations.
    pub interval_month: u8,
}

/// A dual-authorization delete policy, in and out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DualAuthPolicyIn {
    /// Whether deletion needs two identities.
    pub enabled: bool,
}

/// One resource of `PUT /keys/{id}/policies`: either or both policies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyIn {
    /// `application/vnd.ibm.kms.policy+json`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Rotation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicyIn>,
    /// Dual-authorization delete policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_auth_delete: Option<DualAuthPolicyIn>,
}

/// One policy of a key, as `GET /keys/{id}/policies` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicyView {
    /// A stable id for the policy.
    pub id: String,
    /// The policy's CRN.
    pub crn: String,
    /// When it was first set.
    pub creation_date: String,
    /// Who first set it.
    pub created_by: String,
    /// When it last changed.
    pub last_update_date: String,
    /// Who changed it last.
    pub updated_by: String,
    /// `application/vnd.ibm.kms.policy+json`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The rotation policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationPolicyView>,
    /// The dual-authorization policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dual_auth_delete: Option<DualAuthPolicyIn>,
}

/// One resource of `PUT /instance/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstancePolicyIn {
    /// `dualAuthDelete`, `rotation`, `allowedNetwork`, `allowedIP`, `keyCreateImportAccess`,
    /// `metrics`.
    pub policy_type: String,
    /// The setting.
    pub policy_data: InstancePolicyData,
}

/// An instance policy's setting; `attributes` depend on the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstancePolicyData {
    /// Whether the policy is in force.
    pub enabled: bool,
    /// Type-specific attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One instance policy, as `GET /instance/policies` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancePolicyView {
    /// When it was first set.
    pub creation_date: String,
    /// Who first set it.
    pub created_by: String,
    /// When it last changed (`lastUpdated` here, not `lastUpdateDate`).
    pub last_updated: String,
    /// Who changed it last.
    pub updated_by: String,
    /// The type.
    #[serde(rename = "policy_type")]
    pub policy_type: String,
    /// The setting.
    #[serde(rename = "policy_data")]
    pub policy_data: InstancePolicyData,
}

/// The private endpoint port of `GET /instance/allowed_ip_port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedIpPort {
    /// Port of the private endpoint.
    pub private_endpoint_port: u16,
}

/// A key ring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRing {
    /// The ring's id.
    pub id: String,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// An alias of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyAlias {
    /// The key.
    pub key_id: String,
    /// The alias.
    pub alias: String,
    /// When it was created.
    pub creation_date: String,
    /// Who created it.
    pub created_by: String,
}
