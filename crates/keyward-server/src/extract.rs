//! Request extractors: the authenticated caller, and JSON bodies whose failures answer in Key
//! Protect's error format (never echoing body content, which may hold key material).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use keyward_api::headers;
use keyward_core::{Caller, InstanceId};
use keyward_iam::{Claims, Refused};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

/// The request id, set by the request-id middleware.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An authenticated caller of an instance, and the account its token names.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The caller as the key service sees it.
    pub caller: Caller,
    /// The caller's account.
    pub account: String,
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The client's IP address, when the server was started with connect info.
fn peer_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The client address, when the server was started with connect info.
pub fn client_address(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
}

/// The request id of a request.
pub fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let result = authenticate(parts, state).await;
        if let Err(e) = &result {
            // Refused authentication is an action too: record it (without the token).
            let refused = Refused {
                request_id: request_id(parts),
                address: client_address(parts),
                instance: header(parts, headers::INSTANCE).map(|s| s.chars().take(64).collect()),
                path: parts.uri.path().chars().take(200).collect(),
                reason: format!("{e:?}").chars().take(200).collect(),
            };
            if let Err(err) = state.iam.record_refused(refused, e.status().as_u16()).await {
                return Err(ApiError::Key(err));
            }
        }
        result
    }
}

/// The verified claims of the request's bearer token.
pub fn verified_claims(parts: &Parts, state: &AppState) -> Result<Claims, ApiError> {
    let auth = header(parts, "authorization").ok_or_else(|| {
        ApiError::Unauthorized("an Authorization: Bearer <token> header is required".into())
    })?;
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be 'Bearer <token>'".into())
        })?;
    state
        .verifier
        .verify(token, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::Unauthorized(format!("{e}; get a new token from /identity/token")))
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Authed, ApiError> {
    let claims = verified_claims(parts, state)?;
    let resolved = state.iam.resolve(&claims).await?;
    state.iam.throttle(&resolved.identity.iam_id)?;
    let instance = header(parts, headers::INSTANCE).ok_or_else(|| {
        ApiError::bad_request(
            "MISSING_HEADER_ERR",
            "the bluemix-instance header is required",
        )
    })?;
    let instance: InstanceId = instance.parse().map_err(|_| {
        ApiError::bad_request(
            "INVALID_HEADER_ERR",
            "the bluemix-instance header must be an instance id (UUID)",
        )
    })?;
    let request = keyward_iam::Request {
        request_id: request_id(parts),
        address: client_address(parts),
        key_ring: header(parts, headers::KEY_RING)
            .filter(|r| !r.is_empty())
            .map(str::to_owned),
    };
    // An instance of another account and an instance that does not exist look the same.
    let caller = state
        .iam
        .caller(&claims, &resolved, instance, request)
        .await?;
    let policies = state
        .instance_policies(instance)
        .await
        .map_err(ApiError::Key)?;
    if let Some(peer) = peer_ip(parts)
        && !policies.allows_address(peer)
    {
        return Err(ApiError::AddressNotAllowed);
    }
    if !policies.allows_network(state.config.private_endpoint) {
        return Err(ApiError::NetworkNotAllowed);
    }
    Ok(Authed {
        caller,
        account: claims.account.bss,
    })
}

/// A request body, read under the configured size limit; failures answer in Key Protect's format.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::bad_request("BAD_BODY_ERR", "the request body could not be read")
                }
            })
    }
}

/// A JSON body. Accepts any JSON media type (Key Protect's `application/vnd.ibm.kms.*+json`
/// included); an empty body is the type's default.
#[derive(Debug)]
pub struct KpJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for KpJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(KpJson)
    }
}

/// Parses a JSON body; an empty body is `T::default()`. Errors never quote the body, which may
/// hold key material: serde's messages quote values, so only its missing-field message is passed on.
pub fn parse_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    // The Key Protect Go client sends the literal body `null` for enable, disable and rotate.
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let text = e.to_string();
        let what = match e.classify() {
            serde_json::error::Category::Data if text.starts_with("missing field") => text
                .split(" at line")
                .next()
                .unwrap_or("a field is missing")
                .to_owned(),
            serde_json::error::Category::Data => "a field has the wrong type".to_owned(),
            _ => "the body is not valid JSON".to_owned(),
        };
        ApiError::bad_request(
            "BAD_BODY_ERR",
            format!(
                "invalid request body: {what} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}
