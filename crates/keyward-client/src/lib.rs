//! `keyward-client`: a typed Rust client for the Key Protect v2 API as Keyward serves it (and as
//! IBM Key Protect serves it). It exchanges an API key for an access token at `/identity/token`,
//! refreshes it before expiry, and speaks the wire types of `keyward-api`.
//!
//! This is Keyward's one public, semver-minded API. It depends on no server crate.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyward_api::{
    Collection, ErrorResource, Key, KeyAction, KeyCreate, RewrapResponse, RotateRequest,
    SecretText, TokenResponse, UnwrapRequest, UnwrapResponse, WrapRequest, WrapResponse, headers,
    media,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

mod admin;
mod crn;
pub mod envelope;
pub mod events;
mod iam;
mod import;
mod kmip;
mod registrations;
mod signal;
mod tls;

pub use crn::KeyCrn;
pub use iam::{
    AccessPolicy, ApiKeyInfo, Authorization, AuthorizationSource, CreatedApiKey, Identity,
    InstanceInfo, NewAuthorization, NewIdentity, Resource,
};
pub use import::{IMPORT_ALGORITHM, SealedMaterial, seal_for_import};
/// The wire types (`keyward-api`), for services built only on this crate.
pub use keyward_api as api;
pub use keyward_crypto::Secret;
pub use kmip::{KMIP_PROFILE_NATIVE, KmipPage};
pub use signal::shutdown_signal;

/// A client failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or the connection failed.
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// The server answered with a Key Protect error.
    #[error("{status}: {message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Key Protect reason code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The answer could not be understood.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The client was configured wrongly.
    #[error("configuration: {0}")]
    Config(String),
}

struct CachedToken {
    token: String,
    refresh_at: u64,
}

/// A Key Protect API client bound to one instance.
pub struct Client {
    http: reqwest::Client,
    /// For long-lived streams: no total timeout, a read timeout instead.
    stream_http: reqwest::Client,
    base: String,
    instance: String,
    api_key: String,
    key_ring: Option<String>,
    token: Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("instance", &self.instance)
            .field("key_ring", &self.key_ring)
            .finish_non_exhaustive()
    }
}

/// Refuses a URL a request could not be sent to, saying how to write it (a bare
/// `127.0.0.1:8200` would otherwise fail deep in the HTTP client as a relative URL).
fn check_url(url: &str) -> Result<(), ClientError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) if !url.contains("://") => Err(ClientError::Config(format!(
            "the server URL {url:?} has no scheme (read as scheme {:?}): write \
             https://{url}, or http://{url} for a plain-HTTP server on loopback",
            u.scheme()
        ))),
        Ok(u) => Err(ClientError::Config(format!(
            "the server URL {url:?} must start with https:// or http://, not {}://",
            u.scheme()
        ))),
        Err(e) if !url.contains("://") => Err(ClientError::Config(format!(
            "the server URL {url:?} has no scheme ({e}): write https://{url}, or http://{url} \
             for a plain-HTTP server on loopback"
        ))),
        Err(e) => Err(ClientError::Config(format!(
            "the server URL {url:?} is not a URL: {e}"
        ))),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Client {
    /// A client for `url` (e.g. `http://127.0.0.1:8200`), authenticating with `api_key`, acting on
    /// `instance`. `ca_pem` names the only trusted certificates (one or more, PEM): CAs, or the
    /// server's own self-signed certificate, which is then accepted as itself.
    pub fn new(
        url: &str,
        api_key: &str,
        instance: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ClientError> {
        check_url(url)?;
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        // The event stream sends a keep-alive every 15 s: a minute of silence is a dead peer.
        let mut stream_builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60));
        if let Some(pem) = ca_pem {
            let config = tls::client_config(pem)?;
            builder = builder.tls_backend_preconfigured(config.clone());
            stream_builder = stream_builder.tls_backend_preconfigured(config);
        }
        Ok(Client {
            http: builder.build()?,
            stream_http: stream_builder.build()?,
            base: url.trim_end_matches('/').to_owned(),
            instance: instance.to_owned(),
            api_key: api_key.to_owned(),
            key_ring: None,
            token: Mutex::new(None),
        })
    }

    /// Scopes every request to key ring `ring` (the `X-Kms-Key-Ring` header): keys outside it
    /// are not found, lists show only its keys, and new keys go into it.
    #[must_use]
    pub fn with_key_ring(mut self, ring: Option<String>) -> Self {
        self.key_ring = ring.filter(|r| !r.is_empty());
        self
    }

    /// The key ring requests are scoped to, if any.
    pub fn key_ring(&self) -> Option<&str> {
        self.key_ring.as_deref()
    }

    /// A fresh or cached access token (refreshed a minute before expiry, as IAM clients do).
    pub async fn access_token(&self) -> Result<String, ClientError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && now_secs() < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        let resp = self
            .http
            .post(format!("{}/identity/token", self.base))
            .form(&[
                ("grant_type", "urn:ibm:params:oauth:grant-type:apikey"),
                ("apikey", self.api_key.as_str()),
            ])
            .send()
            .await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: v
                    .get("errorCode")
                    .and_then(|c| c.as_str())
                    .unwrap_or("")
                    .to_owned(),
                message: v
                    .get("errorMessage")
                    .and_then(|m| m.as_str())
                    .unwrap_or("token request refused")
                    .to_owned(),
            });
        }
        let t: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))?;
        let lifetime = u64::try_from(t.expires_in).unwrap_or(0);
        let refresh_at = now_secs() + lifetime.saturating_sub(60.min(lifetime / 2));
        *cached = Some(CachedToken {
            token: t.access_token.clone(),
            refresh_at,
        });
        Ok(t.access_token)
    }

    async fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, ClientError> {
        self.request_on(&self.http, method, path).await
    }

    /// A request for a long-lived response (the event stream).
    async fn stream_request(
        &self,
        method: Method,
        path: &str,
    ) -> Result<RequestBuilder, ClientError> {
        self.request_on(&self.stream_http, method, path).await
    }

    async fn request_on(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
    ) -> Result<RequestBuilder, ClientError> {
        let token = self.access_token().await?;
        let req = http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
            .header(headers::INSTANCE, &self.instance);
        Ok(match &self.key_ring {
            Some(ring) => req.header(headers::KEY_RING, ring),
            None => req,
        })
    }

    async fn send(&self, req: RequestBuilder) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return Ok((status, bytes.to_vec()));
        }
        let err: Option<Collection<ErrorResource>> = serde_json::from_slice(&bytes).ok();
        let reason = err
            .as_ref()
            .and_then(|c| c.resources.first())
            .and_then(|r| r.reasons.first());
        Err(ClientError::Api {
            status: status.as_u16(),
            code: reason.map(|r| r.code.clone()).unwrap_or_default(),
            message: reason
                .map(|r| r.message.clone())
                .unwrap_or_else(|| status.to_string()),
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let (_, bytes) = self.send(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn first_key(&self, req: RequestBuilder) -> Result<Key, ClientError> {
        let c: Collection<Key> = self.json(req).await?;
        c.resources
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("empty key collection".into()))
    }

    /// Creates a key (`POST /api/v2/keys`).
    pub async fn create_key(&self, spec: KeyCreate) -> Result<Key, ClientError> {
        let body = serde_json::json!({
            "metadata": {"collectionType": media::KEY, "collectionTotal": 1},
            "resources": [spec],
        });
        let req = self
            .request(Method::POST, "/api/v2/keys")
            .await?
            .header("content-type", media::KEY)
            .header(headers::PREFER, "return=representation")
            .json(&body);
        self.first_key(req).await
    }

    /// Lists keys (`GET /api/v2/keys`).
    pub async fn list_keys(&self, limit: u32, offset: u32) -> Result<Collection<Key>, ClientError> {
        self.list_keys_where(limit, offset, &[]).await
    }

    /// Lists keys matching `filters`, Key Protect's query parameters (`state`, e.g. `0,1`;
    /// `search`, e.g. `exact:name:payments`; `extractable`; `sort`; `filter`).
    pub async fn list_keys_where(
        &self,
        limit: u32,
        offset: u32,
        filters: &[(&str, String)],
    ) -> Result<Collection<Key>, ClientError> {
        let req = self
            .request(Method::GET, "/api/v2/keys")
            .await?
            .query(&[
                ("limit", limit.to_string()),
                ("offset", offset.to_string()),
                ("totalCount", "true".into()),
            ])
            .query(filters);
        self.json(req).await
    }

    /// A key's versions, newest first (`GET /api/v2/keys/{id}/versions`).
    pub async fn key_versions(
        &self,
        id: &str,
        limit: u32,
        offset: u32,
    ) -> Result<Collection<keyward_api::KeyVersionRef>, ClientError> {
        let req = self
            .request(Method::GET, &format!("/api/v2/keys/{}/versions", enc(id)))
            .await?
            .query(&[
                ("limit", limit.to_string()),
                ("offset", offset.to_string()),
                ("totalCount", "true".into()),
            ]);
        self.json(req).await
    }

    /// The instance's audit events (`GET /api/v2/audit_events`, a Keyward extension): `filters`
    /// are query pairs (`from`, `to`, `action`, `keyId`, `initiator`, `outcome`).
    pub async fn audit_events(
        &self,
        filters: &[(&str, String)],
        limit: u32,
        offset: u32,
    ) -> Result<Collection<keyward_api::AuditEventView>, ClientError> {
        let req = self
            .request(Method::GET, "/api/v2/audit_events")
            .await?
            .query(filters)
            .query(&[("limit", limit.to_string()), ("offset", offset.to_string())]);
        self.json(req).await
    }

    /// A key, with the payload of a standard key (`GET /api/v2/keys/{id}`).
    pub async fn get_key(&self, id: &str) -> Result<Key, ClientError> {
        let req = self
            .request(Method::GET, &format!("/api/v2/keys/{}", enc(id)))
            .await?;
        self.first_key(req).await
    }

    async fn action_request<B: serde::Serialize>(
        &self,
        id: &str,
        action: KeyAction,
        body: &B,
    ) -> Result<RequestBuilder, ClientError> {
        Ok(self
            .request(
                Method::POST,
                &format!("/api/v2/keys/{}/actions/{action}", enc(id)),
            )
            .await?
            .header(
                "content-type",
                format!("application/vnd.ibm.kms.key_action_{action}+json"),
            )
            .json(body))
    }

    async fn action<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        id: &str,
        action: KeyAction,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self.action_request(id, action, body).await?;
        self.json(req).await
    }

    async fn action_no_content<B: serde::Serialize>(
        &self,
        id: &str,
        action: KeyAction,
        body: &B,
    ) -> Result<(), ClientError> {
        let req = self.action_request(id, action, body).await?;
        self.send(req).await.map(|_| ())
    }

    /// Wraps a base64 DEK, or generates one when `plaintext_b64` is `None`.
    pub async fn wrap(
        &self,
        id: &str,
        plaintext_b64: Option<String>,
        aad: Vec<String>,
    ) -> Result<WrapResponse, ClientError> {
        let aad = (!aad.is_empty()).then_some(aad);
        self.action(
            id,
            KeyAction::Wrap,
            &WrapRequest {
                plaintext: plaintext_b64.map(SecretText::new),
                aad,
            },
        )
        .await
    }

    /// Unwraps a ciphertext.
    pub async fn unwrap(
        &self,
        id: &str,
        ciphertext: String,
        aad: Vec<String>,
    ) -> Result<UnwrapResponse, ClientError> {
        let aad = (!aad.is_empty()).then_some(aad);
        self.action(id, KeyAction::Unwrap, &UnwrapRequest { ciphertext, aad })
            .await
    }

    /// Rewraps a ciphertext under the latest key version.
    pub async fn rewrap(
        &self,
        id: &str,
        ciphertext: String,
        aad: Vec<String>,
    ) -> Result<RewrapResponse, ClientError> {
        let aad = (!aad.is_empty()).then_some(aad);
        self.action(id, KeyAction::Rewrap, &UnwrapRequest { ciphertext, aad })
            .await
    }

    /// Rotates a key (with new base64 material for an imported key).
    pub async fn rotate(&self, id: &str, payload_b64: Option<String>) -> Result<(), ClientError> {
        self.action_no_content(
            id,
            KeyAction::Rotate,
            &RotateRequest {
                payload: payload_b64.map(SecretText::new),
                ..RotateRequest::default()
            },
        )
        .await
    }

    /// Disables a key.
    pub async fn disable(&self, id: &str) -> Result<(), ClientError> {
        self.action_no_content(id, KeyAction::Disable, &serde_json::json!({}))
            .await
    }

    /// Enables a key.
    pub async fn enable(&self, id: &str) -> Result<(), ClientError> {
        self.action_no_content(id, KeyAction::Enable, &serde_json::json!({}))
            .await
    }

    /// Deletes a key; returns it as deleted.
    pub async fn delete(&self, id: &str) -> Result<Key, ClientError> {
        let req = self
            .request(Method::DELETE, &format!("/api/v2/keys/{}", enc(id)))
            .await?
            .header(headers::PREFER, "return=representation");
        self.first_key(req).await
    }
}

fn enc(id: &str) -> String {
    // Key ids and aliases are URL-safe; anything else is percent-encoded byte by byte.
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
