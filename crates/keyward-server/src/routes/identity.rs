//! IAM-compatible identity: `POST /identity/token` (API key and refresh token grants) and
//! `GET /identity/keys`.
//!
//! Both grants answer like IBM IAM: `access_token` (an RS256 JWT with `exp`, `nbf` = `iat`),
//! a single-use opaque `refresh_token`, `token_type: Bearer`, `expires_in` (= `exp - iat`),
//! `expiration` (= `exp`) and `scope: ibm openid`. Errors are 400 with IAM's
//! `{errorCode, errorMessage, context}` shape. Tokens and API keys are never logged or audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_api::TokenResponse;
use keyward_core::{ApiKeyRecord, AuditEvent, IdentityKind, Initiator, Outcome};
use keyward_iam::{
    REFRESH_TOKEN_TTL_SECS, new_refresh_token, parse_api_key, refresh_token_hash, verify_secret,
};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::state::AppState;

const API_KEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";
const REFRESH_GRANT: &str = "refresh_token";

/// IBM's code for an unknown API key (seen in captured IAM responses).
const UNKNOWN_API_KEY: &str = "BXNIM0415E";
/// IBM's code for an invalid refresh token (the IBM Cloud CLI SDK maps `BXNIM0407E` to its
/// "invalid token" error). Keyward answers it for unknown, malformed, already used and revoked
/// refresh tokens, and when the API key or identity behind one is gone or locked, without saying
/// which, so the answer is no oracle.
const INVALID_REFRESH_TOKEN: &str = "BXNIM0407E";
/// IBM's code for an expired refresh token (`BXNIM0408E: Provided refresh token is expired`,
/// which the CLI SDK maps to its refresh-token-expiry error, so clients know to log in again).
const EXPIRED_REFRESH_TOKEN: &str = "BXNIM0408E";
/// Malformed request.
const BAD_REQUEST: &str = "BXNIM0109E";
/// Store or signing failure.
const UNAVAILABLE: &str = "BXNIM0001E";

/// The token request form. `apikey` and `refresh_token` are credentials: zeroized on drop,
/// never logged. Other fields SDKs send (`response_type`, `scope`) are ignored.
#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    apikey: Option<Zeroizing<String>>,
    refresh_token: Option<Zeroizing<String>>,
}

/// What every answer of one token request shares.
struct Exchange {
    state: Arc<AppState>,
    request_id: String,
    address: Option<String>,
    now: OffsetDateTime,
}

impl Exchange {
    /// An IAM-style error (`errorCode`, `errorMessage`, `context`), as IBM IAM answers token
    /// requests.
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        (
            status,
            Json(serde_json::json!({
                "errorCode": code,
                "errorMessage": message,
                "context": {
                    "requestId": self.request_id,
                    "requestType": "incoming.Identity_Token",
                },
            })),
        )
            .into_response()
    }

    fn unavailable(&self) -> Response {
        self.error(
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "temporarily unavailable",
        )
    }

    /// Records one grant attempt. A failure to record fails the request.
    async fn audit(
        &self,
        action: &str,
        outcome: Outcome,
        code: u16,
        subject: &str,
        key_id: Option<&str>,
    ) -> Result<(), Response> {
        let initiator = Initiator {
            id: subject.to_owned(),
            address: self.address.clone(),
        };
        let event = AuditEvent {
            target: key_id.map(str::to_owned),
            ..AuditEvent::new(
                action,
                outcome,
                code,
                initiator,
                self.request_id.clone(),
                self.now,
            )
        };
        self.state.store().append_audit(&event).await.map_err(|e| {
            tracing::error!(error = %e, "token: audit failed");
            self.unavailable()
        })
    }

    /// Audits a refused grant and answers 400 with `code`.
    async fn refuse(
        &self,
        action: &str,
        subject: &str,
        key_id: Option<&str>,
        code: &str,
        message: &str,
    ) -> Response {
        match self
            .audit(action, Outcome::Failure, 400, subject, key_id)
            .await
        {
            Ok(()) => self.error(StatusCode::BAD_REQUEST, code, message),
            Err(r) => r,
        }
    }

    /// The identity kind behind `key` when the identity exists, is unlocked and is in the key's
    /// account; `Ok(None)` otherwise.
    async fn usable_identity(&self, key: &ApiKeyRecord) -> Result<Option<IdentityKind>, Response> {
        match self.state.store().identity(&key.subject).await {
            Ok(Some(i)) if !i.locked && i.account == key.account => Ok(Some(i.kind)),
            Ok(_) => Ok(None),
            Err(e) => {
                tracing::error!(error = %e, "token: store failure");
                Err(self.unavailable())
            }
        }
    }

    /// Issues an access token and a new refresh token for `key`, audits the grant and answers.
    async fn grant(&self, action: &str, key: &ApiKeyRecord, kind: IdentityKind) -> Response {
        let issued =
            match self
                .state
                .issuer
                .issue(&key.subject, kind, &key.account, &key.id, self.now)
            {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "token: signing failed");
                    return self.error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        UNAVAILABLE,
                        "internal error",
                    );
                }
            };
        let (refresh, hash) = match new_refresh_token() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "token: no randomness for a refresh token");
                return self.error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    UNAVAILABLE,
                    "internal error",
                );
            }
        };
        let expires_at = self.now + time::Duration::seconds(REFRESH_TOKEN_TTL_SECS);
        if let Err(e) = self
            .state
            .store()
            .insert_refresh_token(hash, &key.id, expires_at)
            .await
        {
            tracing::error!(error = %e, "token: storing the refresh token failed");
            return self.unavailable();
        }
        if let Err(r) = self
            .audit(action, Outcome::Success, 200, &key.subject, Some(&key.id))
            .await
        {
            return r;
        }
        Json(TokenResponse {
            access_token: issued.token,
            refresh_token: refresh.as_str().to_owned(),
            token_type: "Bearer".into(),
            expires_in: issued.expires_in,
            expiration: issued.expiration,
            scope: "ibm openid".into(),
        })
        .into_response()
    }

    /// `grant_type=urn:ibm:params:oauth:grant-type:apikey`.
    async fn api_key_grant(&self, apikey: Option<Zeroizing<String>>) -> Response {
        const ACTION: &str = "iam-identity.apikey.login";
        let Some(apikey) = apikey else {
            return self.error(StatusCode::BAD_REQUEST, BAD_REQUEST, "apikey is required");
        };
        let found = match parse_api_key(apikey.trim()) {
            Some((id, secret)) => match self.state.store().api_key(id).await {
                Ok(Some(rec)) if !rec.locked && verify_secret(secret, &rec.secret_hash) => {
                    Some(rec)
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::error!(error = %e, "token: store failure");
                    return self.unavailable();
                }
            },
            None => None,
        };
        let not_found = "Provided API key could not be found.";
        let Some(rec) = found else {
            return self
                .refuse(ACTION, "unauthenticated", None, UNKNOWN_API_KEY, not_found)
                .await;
        };
        // A locked or deleted identity cannot obtain tokens (its tokens would be refused anyway).
        let kind = match self.usable_identity(&rec).await {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                return self
                    .refuse(
                        ACTION,
                        &rec.subject,
                        Some(&rec.id),
                        UNKNOWN_API_KEY,
                        not_found,
                    )
                    .await;
            }
            Err(r) => return r,
        };
        self.grant(ACTION, &rec, kind).await
    }

    /// `grant_type=refresh_token`: exchanges a refresh token (once) for new tokens, if its API
    /// key and identity still exist and are unlocked.
    async fn refresh_grant(&self, refresh_token: Option<Zeroizing<String>>) -> Response {
        const ACTION: &str = "iam-identity.refresh-token.login";
        let Some(presented) = refresh_token else {
            return self.error(
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                "refresh_token is required",
            );
        };
        let invalid = "Provided refresh token is invalid.";
        // Taken (deleted) before any other check: a refresh token is spent by any attempt.
        let taken = match refresh_token_hash(presented.trim()) {
            Some(hash) => match self.state.store().take_refresh_token(hash).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "token: store failure");
                    return self.unavailable();
                }
            },
            None => None,
        };
        let Some((key_id, expires_at)) = taken else {
            return self
                .refuse(
                    ACTION,
                    "unauthenticated",
                    None,
                    INVALID_REFRESH_TOKEN,
                    invalid,
                )
                .await;
        };
        if expires_at <= self.now {
            return self
                .refuse(
                    ACTION,
                    "unauthenticated",
                    Some(&key_id),
                    EXPIRED_REFRESH_TOKEN,
                    "Provided refresh token is expired.",
                )
                .await;
        }
        let rec = match self.state.store().api_key(&key_id).await {
            Ok(Some(rec)) if !rec.locked => rec,
            Ok(_) => {
                return self
                    .refuse(
                        ACTION,
                        "unauthenticated",
                        Some(&key_id),
                        INVALID_REFRESH_TOKEN,
                        invalid,
                    )
                    .await;
            }
            Err(e) => {
                tracing::error!(error = %e, "token: store failure");
                return self.unavailable();
            }
        };
        let kind = match self.usable_identity(&rec).await {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                return self
                    .refuse(
                        ACTION,
                        &rec.subject,
                        Some(&rec.id),
                        INVALID_REFRESH_TOKEN,
                        invalid,
                    )
                    .await;
            }
            Err(r) => return r,
        };
        self.grant(ACTION, &rec, kind).await
    }
}

/// `POST /identity/token`. The body is read as a form whatever the `Content-Type` says: an
/// older Python SDK sends `applicaton/x-www-form-urlencoded` (sic).
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let exchange = Exchange {
        state,
        request_id: crate::extract::request_id(&parts),
        address: crate::extract::client_address(&parts),
        now: OffsetDateTime::now_utc(),
    };
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let form = Form::<TokenForm>::from_request(Request::from_parts(parts, body), &()).await;
    let Ok(Form(form)) = form else {
        return exchange.error(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "the request must be form-encoded with grant_type and apikey or refresh_token",
        );
    };
    match form.grant_type.as_deref() {
        Some(API_KEY_GRANT) => exchange.api_key_grant(form.apikey).await,
        Some(REFRESH_GRANT) => exchange.refresh_grant(form.refresh_token).await,
        _ => exchange.error(
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "grant_type must be urn:ibm:params:oauth:grant-type:apikey or refresh_token",
        ),
    }
}

/// `GET /identity/keys`: the JWKS that verifies this server's tokens.
pub async fn keys(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({"keys": [state.issuer.jwk()]})).into_response()
}
