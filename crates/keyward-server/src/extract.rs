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
use keyward_iam::{Claims, Limit, Refused, Throttled};
use keyward_runtime::metrics::Refusal;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::state::AppState;

/// The request ids, set by the request-id middleware.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// The client's `x-request-id` when it sent a usable one, else `own`.
    pub id: String,
    /// The server's own id. An unauthenticated request's audit event records this one: a
    /// caller-chosen id is trusted only once the caller is authenticated (issue 18).
    pub own: String,
}

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

/// The request id of a request (the client's, when it sent a usable one).
pub fn request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.id.clone())
        .unwrap_or_default()
}

/// The server's own id of a request, for what an unauthenticated caller causes.
pub fn own_request_id(parts: &Parts) -> String {
    parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.own.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let mut progress = Progress::default();
        match authenticate(parts, state, &mut progress).await {
            Ok(authed) => Ok(authed),
            Err(e) => Err(refuse(parts, state, progress, e).await),
        }
    }
}

/// How far a refused request got: whose token verified, and the instance it was authenticated
/// for.
#[derive(Default)]
struct Progress {
    subject: Option<String>,
    instance: Option<InstanceId>,
}

/// Records a refused request (without its token) and chooses its answer. One without a token
/// that verifies is counted against its source's limit (past it: 429) and sampled in the audit
/// trail, under the server's request id and no instance; one whose token verified is its
/// identity's, in the instance it was authenticated for if it got that far (issue 18: refusals
/// were written into the trail of whatever instance the header named, under the client's id).
async fn refuse(parts: &Parts, state: &AppState, progress: Progress, e: ApiError) -> ApiError {
    let authenticated = progress.subject.is_some();
    let e = if authenticated || e.status() != StatusCode::UNAUTHORIZED {
        e
    } else {
        unauthenticated(parts, state, e)
    };
    let refused = Refused {
        request_id: if authenticated {
            request_id(parts)
        } else {
            own_request_id(parts)
        },
        address: client_address(parts),
        subject: progress.subject,
        instance: progress.instance.map(|i| i.to_string()),
        path: parts.uri.path().chars().take(200).collect(),
        reason: format!("{e:?}").chars().take(200).collect(),
    };
    match state.iam.record_refused(refused, e.status().as_u16()).await {
        Ok(()) => e,
        Err(err) => ApiError::Key(err),
    }
}

/// A refusal of a request without a valid token, counted against its source: `e`, or 429
/// once the source is over its limit.
pub fn unauthenticated(parts: &Parts, state: &AppState, e: ApiError) -> ApiError {
    state.metrics.refused(Refusal::Authentication);
    match state
        .iam
        .admit(Limit::Unauthenticated, client_address(parts).as_deref())
    {
        Ok(()) => e,
        Err(Throttled(secs)) => {
            state.metrics.refused(Refusal::UnauthenticatedRate);
            ApiError::SourceTooManyRequests(secs)
        }
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

async fn authenticate(
    parts: &Parts,
    state: &AppState,
    progress: &mut Progress,
) -> Result<Authed, ApiError> {
    let claims = verified_claims(parts, state)?;
    let resolved = state.iam.resolve(&claims).await?;
    progress.subject = Some(resolved.identity.iam_id.clone());
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
    progress.instance = Some(instance);
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
