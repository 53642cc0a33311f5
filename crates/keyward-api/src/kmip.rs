//! KMIP adapter, client certificate and KMIP object bodies (`/api/v2/kmip_adapters`). Field names
//! are snake_case on the wire, unlike the key bodies.

use serde::{Deserialize, Serialize};

/// `profile_data` of a `native_1.0` adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipProfileData {
    /// The root key: id (or, in a request, an alias).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crk_id: Option<String>,
}

/// The create-adapter request resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipAdapterCreate {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Optional description (the Go SDK always sends one, maybe empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `native_1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The profile's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_data: Option<KmipProfileData>,
}

/// A KMIP adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipAdapter {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `native_1.0`.
    pub profile: String,
    /// The profile's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_data: Option<KmipProfileData>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Who changed it last.
    pub updated_by: String,
}

/// The upload-certificate request resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipCertificateCreate {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A KMIP client certificate; lists leave out `certificate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipCertificate {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// The certificate, PEM (one certificate only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// A KMIP object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmipObject {
    /// Its id.
    pub id: String,
    /// KMIP object type (2: Symmetric Key).
    pub kmip_object_type: u32,
    /// KMIP state (1 Pre-Active … 6 Destroyed Compromised).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<u8>,
    /// Creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The client certificate that created it.
    pub created_by_kmip_client_cert_id: String,
    /// Who created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// Last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// The client certificate that changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by_kmip_client_cert_id: Option<String>,
    /// Who changed it last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// When it was destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<String>,
    /// The client certificate that destroyed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_by_kmip_client_cert_id: Option<String>,
    /// Who destroyed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroyed_by: Option<String>,
    /// Whether it can be recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable: Option<bool>,
}
