//! The access-management API (`/iam/v1`): identities, API keys, access policies,
//! service-to-service authorizations and KMS instances of the caller's account. Every call acts on
//! the account of the client's API key (no instance header is sent) and needs the Administrator
//! role there, except [`Client::create_authorization`] by a service holding a delegating
//! authorization. Records are shown as the server sends them, field for field.

pub use keyward_api::iam::{
    AccessPolicy, ApiKeyInfo, Authorization, AuthorizationSource, CreatedApiKey, Identity,
    InstanceInfo, NewAuthorization, NewIdentity, Resource,
};
use keyward_api::iam::{
    AccessPolicyList, ApiKeyList, AuthorizationList, IdentityList, InstanceList, NewAccessPolicy,
    NewApiKey, NewInstance,
};
use reqwest::{Method, RequestBuilder};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Client, ClientError, enc};

/// A scope as sent: without `account_id`, which the server shows but takes only as the caller's
/// own account.
fn to_send(r: &Resource) -> Resource {
    Resource {
        account_id: None,
        ..r.clone()
    }
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

    async fn iam_list<L: DeserializeOwned>(&self, path: &str) -> Result<L, ClientError> {
        let req = self.iam_request(Method::GET, path).await?;
        self.json(req).await
    }

    async fn iam_no_content(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let req = self.iam_request(method, path).await?;
        self.send(req).await.map(|_| ())
    }

    // ---- identities ----

    /// The account's identities (`GET /iam/v1/identities`).
    pub async fn identities(&self) -> Result<Vec<Identity>, ClientError> {
        Ok(self
            .iam_list::<IdentityList>("/identities")
            .await?
            .identities)
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
        Ok(self.iam_list::<ApiKeyList>("/apikeys").await?.apikeys)
    }

    /// Creates an API key for identity `iam_id` (`POST /iam/v1/apikeys`); the answer holds the
    /// whole key, which is never shown again.
    pub async fn create_api_key(
        &self,
        iam_id: &str,
        name: &str,
    ) -> Result<CreatedApiKey, ClientError> {
        let body = NewApiKey {
            iam_id: iam_id.to_owned(),
            name: name.to_owned(),
        };
        self.iam_create("/apikeys", &body).await
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
        Ok(self
            .iam_list::<AccessPolicyList>("/policies")
            .await?
            .policies)
    }

    /// Gives identity `subject` `roles` on `resource` (`POST /iam/v1/policies`).
    pub async fn create_access_policy(
        &self,
        subject: &str,
        roles: &[String],
        resource: &Resource,
    ) -> Result<AccessPolicy, ClientError> {
        let body = NewAccessPolicy {
            subject: subject.to_owned(),
            roles: roles.to_vec(),
            resource: to_send(resource),
        };
        self.iam_create("/policies", &body).await
    }

    /// Deletes an access policy (`DELETE /iam/v1/policies/{id}`).
    pub async fn delete_access_policy(&self, id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/policies/{}", enc(id)))
            .await
    }

    // ---- authorizations ----

    /// The account's service-to-service authorizations (`GET /iam/v1/authorizations`).
    pub async fn authorizations(&self) -> Result<Vec<Authorization>, ClientError> {
        Ok(self
            .iam_list::<AuthorizationList>("/authorizations")
            .await?
            .authorizations)
    }

    /// Authorizes a source service on a target (`POST /iam/v1/authorizations`).
    pub async fn create_authorization(
        &self,
        spec: &NewAuthorization,
    ) -> Result<Authorization, ClientError> {
        let body = NewAuthorization {
            target: to_send(&spec.target),
            ..spec.clone()
        };
        self.iam_create("/authorizations", &body).await
    }

    /// Deletes an authorization (`DELETE /iam/v1/authorizations/{id}`).
    pub async fn delete_authorization(&self, id: &str) -> Result<(), ClientError> {
        self.iam_no_content(Method::DELETE, &format!("/authorizations/{}", enc(id)))
            .await
    }

    // ---- instances ----

    /// The account's KMS instances (`GET /iam/v1/instances`).
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, ClientError> {
        Ok(self.iam_list::<InstanceList>("/instances").await?.instances)
    }

    /// Creates a KMS instance in the account (`POST /iam/v1/instances`).
    pub async fn create_instance(&self, name: &str) -> Result<InstanceInfo, ClientError> {
        let body = NewInstance {
            name: name.to_owned(),
        };
        self.iam_create("/instances", &body).await
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
            serde_json::to_value(to_send(&shown)).unwrap(),
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
