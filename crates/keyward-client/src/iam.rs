//! The access-management API (`/iam/v1`): identities, API keys, access policies,
//! service-to-service authorizations and KMS instances of the caller's account. Every call acts on
//! the account of the client's API key (no instance header is sent) and needs the Administrator
//! role there, except [`Client::create_authorization`] by a service holding a delegating
//! authorization. Records are shown as the server sends them, field for field.

use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, enc};

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

/// A new API key with its secret, which the server shows this once.
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

/// Where a policy or authorization applies. All `None`: the whole account (policies only);
/// `instance_id`: an instance; with `key_ring` or `key_id`: a key ring or key of it.
/// The server shows an account scope as `account_id`; that field is never sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The account (shown for an account scope; ignored when sent).
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

    /// As sent: without `account_id`, which the server does not accept.
    fn to_send(&self) -> Resource {
        Resource {
            account_id: None,
            ..self.clone()
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

/// The source service of an authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Creation time (RFC 3339, UTC).
    pub created_at: String,
    /// IAM id of its creator.
    pub created_by: String,
}

/// An authorization to create (`POST /iam/v1/authorizations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewAuthorization {
    /// Who is authorized.
    pub source: AuthorizationSource,
    /// On what: an instance, key ring or key (`instance_id` required).
    pub target: Resource,
    /// Role names (not `Administrator`).
    pub roles: Vec<String>,
    /// Whether the source may authorize its dependent services with a subset of these roles on
    /// the same target.
    pub delegation: bool,
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

impl Client {
    /// A client for the management API only: no instance, so the Key Protect (`/api/v2`) calls
    /// of this client are refused by the server.
    pub fn for_account(
        url: &str,
        api_key: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        Client::new(url, api_key, "", ca_pem)
    }

    /// A `/iam/v1` request: the bearer token, no instance or key ring header.
    async fn iam_request(&self, method: Method, path: &str) -> Result<RequestBuilder, ClientError> {
        let token = self.access_token().await?;
        Ok(self
            .http
            .request(method, format!("{}/iam/v1{path}", self.base))
            .bearer_auth(token))
    }

    async fn iam_create<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self
            .iam_request(Method::POST, path)
            .await?
            .header("content-type", "application/json")
            .json(body);
        self.json(req).await
    }

    /// The `field` array of a `{"count": n, field: [...]}` list.
    async fn iam_list<T: DeserializeOwned>(
        &self,
        path: &str,
        field: &str,
    ) -> Result<Vec<T>, ClientError> {
        let req = self.iam_request(Method::GET, path).await?;
        let mut v: serde_json::Value = self.json(req).await?;
        let items = v
            .get_mut(field)
            .map(serde_json::Value::take)
            .ok_or_else(|| ClientError::Decode(format!("no `{field}` in the list")))?;
        serde_json::from_value(items).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn iam_no_content(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let req = self.iam_request(method, path).await?;
        self.send(req).await.map(|_| ())
    }

    // ---- identities ----

    /// The account's identities (`GET /iam/v1/identities`).
    pub async fn identities(&self) -> Result<Vec<Identity>, ClientError> {
        self.iam_list("/identities", "identities").await
    }

    /// Creates an identity (`POST /iam/v1/identities`).
    pub async fn create_identity(&self, spec: &NewIdentity) -> Result<Identity, ClientError> {
        self.iam_create("/identities", spec).await
    }

    /// Deletes an identity with its API keys and policies (`DELETE /iam/v1/identities/{iam_id}`).
    pub async fn delete_identity(&self, iam_id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/identities/{}", enc(iam_id)))
            .await
    }

    /// Locks (`true`) or unlocks an identity (`POST`/`DELETE /iam/v1/identities/{iam_id}/lock`).
    pub async fn lock_identity(&self, iam_id: &str, locked: bool) -> Result<(), ClientError> {
        let method = if locked { Method::POST } else { Method::DELETE };
        self.iam_no_content(method, &format!("/identities/{}/lock", enc(iam_id)))
            .await
    }

    // ---- API keys ----

    /// The account's API keys, without secrets (`GET /iam/v1/apikeys`).
    pub async fn api_keys(&self) -> Result<Vec<ApiKeyInfo>, ClientError> {
        self.iam_list("/apikeys", "apikeys").await
    }

    /// Creates an API key for identity `iam_id` (`POST /iam/v1/apikeys`); the answer holds the
    /// whole key, which is never shown again.
    pub async fn create_api_key(
        &self,
        iam_id: &str,
        name: &str,
    ) -> Result<CreatedApiKey, ClientError> {
        self.iam_create(
            "/apikeys",
            &serde_json::json!({ "iam_id": iam_id, "name": name }),
        )
        .await
    }

    /// Deletes an API key (`DELETE /iam/v1/apikeys/{id}`).
    pub async fn delete_api_key(&self, id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/apikeys/{}", enc(id)))
            .await
    }

    /// Locks (`true`) or unlocks an API key (`POST`/`DELETE /iam/v1/apikeys/{id}/lock`).
    pub async fn lock_api_key(&self, id: &str, locked: bool) -> Result<(), ClientError> {
        let method = if locked { Method::POST } else { Method::DELETE };
        self.iam_no_content(method, &format!("/apikeys/{}/lock", enc(id)))
            .await
    }

    // ---- access policies ----

    /// The account's access policies (`GET /iam/v1/policies`).
    pub async fn access_policies(&self) -> Result<Vec<AccessPolicy>, ClientError> {
        self.iam_list("/policies", "policies").await
    }

    /// Gives identity `subject` `roles` on `resource` (`POST /iam/v1/policies`).
    pub async fn create_access_policy(
        &self,
        subject: &str,
        roles: &[String],
        resource: &Resource,
    ) -> Result<AccessPolicy, ClientError> {
        self.iam_create(
            "/policies",
            &serde_json::json!({
                "subject": subject,
                "roles": roles,
                "resource": resource.to_send(),
            }),
        )
        .await
    }

    /// Deletes an access policy (`DELETE /iam/v1/policies/{id}`).
    pub async fn delete_access_policy(&self, id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/policies/{}", enc(id)))
            .await
    }

    // ---- authorizations ----

    /// The account's service-to-service authorizations (`GET /iam/v1/authorizations`).
    pub async fn authorizations(&self) -> Result<Vec<Authorization>, ClientError> {
        self.iam_list("/authorizations", "authorizations").await
    }

    /// Authorizes a source service on a target (`POST /iam/v1/authorizations`).
    pub async fn create_authorization(
        &self,
        spec: &NewAuthorization,
    ) -> Result<Authorization, ClientError> {
        let mut source = serde_json::json!({ "service_name": spec.source.service_name });
        if let (Some(i), Some(obj)) = (&spec.source.service_instance, source.as_object_mut()) {
            obj.insert("service_instance".into(), i.clone().into());
        }
        self.iam_create(
            "/authorizations",
            &serde_json::json!({
                "source": source,
                "target": spec.target.to_send(),
                "roles": spec.roles,
                "delegation": spec.delegation,
            }),
        )
        .await
    }

    /// Deletes an authorization (`DELETE /iam/v1/authorizations/{id}`).
    pub async fn delete_authorization(&self, id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/authorizations/{}", enc(id)))
            .await
    }

    // ---- instances ----

    /// The account's KMS instances (`GET /iam/v1/instances`).
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, ClientError> {
        self.iam_list("/instances", "instances").await
    }

    /// Creates a KMS instance in the account (`POST /iam/v1/instances`).
    pub async fn create_instance(&self, name: &str) -> Result<InstanceInfo, ClientError> {
        self.iam_create("/instances", &serde_json::json!({ "name": name }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_serialize_as_the_server_expects() {
        assert_eq!(
            serde_json::to_value(Resource::account()).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(Resource::key_ring("i", "r")).unwrap(),
            serde_json::json!({"instance_id": "i", "key_ring": "r"})
        );
        let shown: Resource = serde_json::from_str(r#"{"account_id":"a"}"#).unwrap();
        assert_eq!(shown.account_id.as_deref(), Some("a"));
        assert_eq!(
            serde_json::to_value(shown.to_send()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn created_keys_round_trip_and_hide_the_secret_in_debug() {
        let v = serde_json::json!({
            "id": "k1", "name": "n", "iam_id": "iam-x", "account_id": "a", "locked": false,
            "created_at": "2025-01-01T00:00:00.000Z", "apikey": "kwk1.secret",
        });
        let k: CreatedApiKey = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(serde_json::to_value(&k).unwrap(), v);
        assert!(!format!("{k:?}").contains("secret"));
    }
}
