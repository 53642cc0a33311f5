//! Key lifecycle beyond the basics (restore, purge, dual authorization, moves), aliases, key
//! rings, and key and instance policies.

use keyward_api::{
    AllowedIpPort, Collection, InstancePolicyIn, InstancePolicyView, Key, KeyAlias, KeyCreate,
    KeyPolicyIn, KeyPolicyView, KeyRing, headers, media,
};
use reqwest::Method;

use crate::{Client, ClientError, enc};

/// A one-resource (or n-resource) collection body of media type `collection_type`.
fn collection_body<T: serde::Serialize>(
    collection_type: &str,
    resources: &[T],
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"collectionType": collection_type, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

impl Client {
    /// A key's metadata, never its payload (`GET /api/v2/keys/{id}/metadata`).
    pub async fn key_metadata(&self, id: &str) -> Result<Key, ClientError> {
        let req = self
            .request(Method::GET, &format!("/api/v2/keys/{}/metadata", enc(id)))
            .await?;
        self.first_key(req).await
    }

    /// Creates a key whose rotation and dual-authorization policies replace the instance's
    /// (`POST /api/v2/keys_with_policy_overrides`; `spec.rotation`, `spec.dual_auth_delete`).
    pub async fn create_key_with_policies(&self, spec: KeyCreate) -> Result<Key, ClientError> {
        let req = self
            .request(Method::POST, "/api/v2/keys_with_policy_overrides")
            .await?
            .header("content-type", media::KEY)
            .header(headers::PREFER, "return=representation")
            .json(&collection_body(media::KEY, std::slice::from_ref(&spec)));
        self.first_key(req).await
    }

    /// A key's policies (`GET /api/v2/keys/{id}/policies`), all of them or only `policy`
    /// (`rotation` or `dualAuthDelete`).
    pub async fn key_policies(
        &self,
        id: &str,
        policy: Option<&str>,
    ) -> Result<Collection<KeyPolicyView>, ClientError> {
        let mut req = self
            .request(Method::GET, &format!("/api/v2/keys/{}/policies", enc(id)))
            .await?;
        if let Some(p) = policy {
            req = req.query(&[("policy", p)]);
        }
        self.json(req).await
    }

    /// Sets a key's rotation and/or dual-authorization policy (`PUT /api/v2/keys/{id}/policies`);
    /// returns the key's policies. When only one is given, `?policy=` names it, as Key Protect
    /// expects.
    pub async fn set_key_policies(
        &self,
        id: &str,
        mut policy: KeyPolicyIn,
    ) -> Result<Collection<KeyPolicyView>, ClientError> {
        if policy.type_.is_none() {
            policy.type_ = Some(media::POLICY.to_owned());
        }
        let only = match (&policy.rotation, &policy.dual_auth_delete) {
            (Some(_), None) => Some("rotation"),
            (None, Some(_)) => Some("dualAuthDelete"),
            _ => None,
        };
        let mut req = self
            .request(Method::PUT, &format!("/api/v2/keys/{}/policies", enc(id)))
            .await?
            .header("content-type", media::POLICY)
            .json(&collection_body(
                media::POLICY,
                std::slice::from_ref(&policy),
            ));
        if let Some(p) = only {
            req = req.query(&[("policy", p)]);
        }
        self.json(req).await
    }

    /// The instance's policies (`GET /api/v2/instance/policies`), all or only `policy`
    /// (`dualAuthDelete`, `rotation`, `allowedNetwork`, `allowedIP`, `keyCreateImportAccess`,
    /// `metrics`).
    pub async fn instance_policies(
        &self,
        policy: Option<&str>,
    ) -> Result<Collection<InstancePolicyView>, ClientError> {
        let mut req = self
            .request(Method::GET, "/api/v2/instance/policies")
            .await?;
        if let Some(p) = policy {
            req = req.query(&[("policy", p)]);
        }
        self.json(req).await
    }

    /// Sets instance policies in one request (`PUT /api/v2/instance/policies`, with `?policy=`
    /// when there is exactly one).
    pub async fn set_instance_policies(
        &self,
        policies: &[InstancePolicyIn],
    ) -> Result<(), ClientError> {
        if policies.is_empty() {
            return Err(ClientError::Config("no instance policy to set".into()));
        }
        let mut req = self
            .request(Method::PUT, "/api/v2/instance/policies")
            .await?
            .header("content-type", media::POLICY)
            .json(&collection_body(media::POLICY, policies));
        if let [only] = policies {
            req = req.query(&[("policy", only.policy_type.as_str())]);
        }
        self.send(req).await.map(|_| ())
    }

    /// The private endpoint port (`GET /api/v2/instance/allowed_ip_port`): one resource while an
    /// allowedIP policy is in force, none otherwise.
    pub async fn allowed_ip_port(&self) -> Result<Collection<AllowedIpPort>, ClientError> {
        let req = self
            .request(Method::GET, "/api/v2/instance/allowed_ip_port")
            .await?;
        self.json(req).await
    }

    /// Restores a deleted key (`POST /api/v2/keys/{id}/restore`). An imported key needs its
    /// base64 material again.
    pub async fn restore(&self, id: &str, payload_b64: Option<String>) -> Result<Key, ClientError> {
        let mut req = self
            .request(Method::POST, &format!("/api/v2/keys/{}/restore", enc(id)))
            .await?
            .header(headers::PREFER, "return=representation");
        if let Some(payload) = payload_b64 {
            req = req
                .header("content-type", media::KEY)
                .json(&collection_body(
                    media::KEY,
                    &[serde_json::json!({ "payload": payload })],
                ));
        }
        self.first_key(req).await
    }

    /// Purges a deleted key for good (`DELETE /api/v2/keys/{id}/purge`); returns its last view.
    pub async fn purge(&self, id: &str) -> Result<Key, ClientError> {
        let req = self
            .request(Method::DELETE, &format!("/api/v2/keys/{}/purge", enc(id)))
            .await?
            .header(headers::PREFER, "return=representation");
        self.first_key(req).await
    }

    /// Authorizes the deletion of a dual-authorization key (the first of two identities).
    pub async fn set_key_for_deletion(&self, id: &str) -> Result<(), ClientError> {
        self.action_no_content(
            id,
            keyward_api::KeyAction::SetKeyForDeletion,
            &serde_json::json!({}),
        )
        .await
    }

    /// Withdraws a deletion authorization.
    pub async fn unset_key_for_deletion(&self, id: &str) -> Result<(), ClientError> {
        self.action_no_content(
            id,
            keyward_api::KeyAction::UnsetKeyForDeletion,
            &serde_json::json!({}),
        )
        .await
    }

    /// Moves a key to key ring `ring` (`PATCH /api/v2/keys/{id}`). With a client key ring
    /// ([`Client::with_key_ring`]), that must be the ring the key is in now.
    pub async fn move_key(&self, id: &str, ring: &str) -> Result<Key, ClientError> {
        let req = self
            .request(Method::PATCH, &format!("/api/v2/keys/{}", enc(id)))
            .await?
            .header("content-type", "application/json")
            .json(&serde_json::json!({ "keyRingID": ring }));
        self.first_key(req).await
    }

    /// The instance's key rings (`GET /api/v2/key_rings`), `default` first.
    pub async fn key_rings(&self) -> Result<Collection<KeyRing>, ClientError> {
        let req = self
            .request(Method::GET, "/api/v2/key_rings")
            .await?
            .query(&[("limit", "5000"), ("totalCount", "true")]);
        self.json(req).await
    }

    /// Creates key ring `ring` (`POST /api/v2/key_rings/{id}`).
    pub async fn create_key_ring(&self, ring: &str) -> Result<(), ClientError> {
        let req = self
            .request(Method::POST, &format!("/api/v2/key_rings/{}", enc(ring)))
            .await?;
        self.send(req).await.map(|_| ())
    }

    /// Deletes key ring `ring`; `force` also deletes a ring that still holds deleted keys (they
    /// move to `default`).
    pub async fn delete_key_ring(&self, ring: &str, force: bool) -> Result<(), ClientError> {
        let mut req = self
            .request(Method::DELETE, &format!("/api/v2/key_rings/{}", enc(ring)))
            .await?;
        if force {
            req = req.query(&[("force", "true")]);
        }
        self.send(req).await.map(|_| ())
    }

    /// Gives a key an alias (`POST /api/v2/keys/{id}/aliases/{alias}`).
    pub async fn create_alias(&self, id: &str, alias: &str) -> Result<KeyAlias, ClientError> {
        let req = self
            .request(
                Method::POST,
                &format!("/api/v2/keys/{}/aliases/{}", enc(id), enc(alias)),
            )
            .await?;
        let c: Collection<KeyAlias> = self.json(req).await?;
        c.resources
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("empty alias collection".into()))
    }

    /// Removes an alias (`DELETE /api/v2/keys/{id}/aliases/{alias}`).
    pub async fn delete_alias(&self, id: &str, alias: &str) -> Result<(), ClientError> {
        let req = self
            .request(
                Method::DELETE,
                &format!("/api/v2/keys/{}/aliases/{}", enc(id), enc(alias)),
            )
            .await?;
        self.send(req).await.map(|_| ())
    }
}
