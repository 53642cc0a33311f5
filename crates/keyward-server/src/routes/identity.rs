//! IAM-compatible identity: `POST /identity/token` (API key and refresh token grants) and
//! `GET /identity/keys`. The exchange's rules and its audit events are keyward-iam's
//! (`IamService::api_key_login`, `refresh_login`); this module parses the form and answers.
//!
//! Both grants answer like IBM IAM: `access_token` (an RS256 JWT with `exp`, `nbf` = `iat`),
//! a single-use opaque `refresh_token`, `token_type: Bearer`, `expires_in` (= `exp - iat`),
//! `expiration` (= `exp`) and `scope: ibm openid`. Errors are 400 with IAM's
//! `{errorCode, errorMessage, context}` shape. Tokens and API keys are never logged or audited.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, FromRequest, Request, State};
use axum::http::header::{self, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_api::TokenResponse;
use keyward_iam::{Limit, Login, LoginError, Refused, Throttled, Tokens};
use keyward_runtime::metrics::Refusal;
use serde::Deserialize;
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
/// Too many token requests from one address (per-source limit). IBM documents no code for it:
/// Keyward's, in IAM's style.
const TOO_MANY_REQUESTS: &str = "BXNIM0429E";

/// The token request form. `apikey` and `refresh_token` are credentials: zeroized on drop,
/// never logged. Other fields SDKs send (`response_type`, `scope`) are ignored.
#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    apikey: Option<Zeroizing<String>>,
    refresh_token: Option<Zeroizing<String>>,
}

/// An IAM-style error (`errorCode`, `errorMessage`, `context`), as IBM IAM answers token
/// requests.
fn error(login: &Login, status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({
            "errorCode": code,
            "errorMessage": message,
            "context": {
                "requestId": login.request_id,
                "requestType": "incoming.Identity_Token",
            },
        })),
    )
        .into_response()
}

/// The answer to an exchange: the tokens, or the refusal in IAM's shape.
fn answer(login: &Login, result: Result<Tokens, LoginError>) -> Response {
    let e = match result {
        Ok(t) => {
            return Json(TokenResponse {
                access_token: t.access.token,
                refresh_token: t.refresh.as_str().to_owned(),
                token_type: "Bearer".into(),
                expires_in: t.access.expires_in,
                expiration: t.access.expiration,
                scope: "ibm openid".into(),
            })
            .into_response();
        }
        Err(e) => e,
    };
    let message = match e {
        // Answered as any invalid token: the answer is no oracle (the audit event says more).
        LoginError::ReusedRefreshToken(_) => LoginError::InvalidRefreshToken.to_string(),
        _ => e.to_string(),
    };
    match e {
        LoginError::UnknownApiKey => {
            error(login, StatusCode::BAD_REQUEST, UNKNOWN_API_KEY, &message)
        }
        LoginError::InvalidRefreshToken | LoginError::ReusedRefreshToken(_) => error(
            login,
            StatusCode::BAD_REQUEST,
            INVALID_REFRESH_TOKEN,
            &message,
        ),
        LoginError::ExpiredRefreshToken => error(
            login,
            StatusCode::BAD_REQUEST,
            EXPIRED_REFRESH_TOKEN,
            &message,
        ),
        LoginError::Issuance => {
            tracing::error!("token: issuance failed");
            error(
                login,
                StatusCode::INTERNAL_SERVER_ERROR,
                UNAVAILABLE,
                "internal error",
            )
        }
        LoginError::Key(e) => {
            tracing::error!(error = %e, "token: store or audit failure");
            error(
                login,
                StatusCode::SERVICE_UNAVAILABLE,
                UNAVAILABLE,
                "temporarily unavailable",
            )
        }
    }
}

/// A token request over its source's rate: 429 in IAM's shape with `Retry-After`, counted,
/// and recorded (sampled: at most one event per source per interval).
async fn throttle(state: &AppState, login: &Login, Throttled(secs): Throttled) -> Response {
    state.metrics.refused(Refusal::TokenRate);
    let refused = Refused {
        request_id: login.request_id.clone(),
        address: login.address.clone(),
        path: "/identity/token".into(),
        reason: format!("too many token requests from this address; retry in {secs} s"),
        ..Refused::default()
    };
    if let Err(e) = state.iam.record_refused(refused, 429).await {
        tracing::error!(error = %e, "token: store or audit failure");
        return error(
            login,
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            "temporarily unavailable",
        );
    }
    let mut resp = error(
        login,
        StatusCode::TOO_MANY_REQUESTS,
        TOO_MANY_REQUESTS,
        &format!("too many token requests from this address; retry in {secs} s"),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp.extensions_mut().insert(crate::state::SourceThrottled);
    resp
}

/// `POST /identity/token`. The body is read as a form whatever the `Content-Type` says: an
/// older Python SDK sends `applicaton/x-www-form-urlencoded` (sic).
pub async fn token(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    // Nobody is authenticated yet: the audit events carry the server's request id.
    let login = Login {
        request_id: crate::extract::own_request_id(&parts),
        address: crate::extract::client_address(&parts),
    };
    if let Err(throttled) = state.iam.admit(Limit::Token, login.address.as_deref()) {
        return throttle(&state, &login, throttled).await;
    }
    parts.headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let form = Form::<TokenForm>::from_request(Request::from_parts(parts, body), &()).await;
    let Ok(Form(form)) = form else {
        return error(
            &login,
            StatusCode::BAD_REQUEST,
            BAD_REQUEST,
            "the request must be form-encoded with grant_type and apikey or refresh_token",
        );
    };
    let result = match (form.grant_type.as_deref(), form.apikey, form.refresh_token) {
        (Some(API_KEY_GRANT), Some(apikey), _) => {
            state
                .iam
                .api_key_login(&state.issuer, &apikey, &login)
                .await
        }
        (Some(API_KEY_GRANT), None, _) => {
            return error(
                &login,
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                "apikey is required",
            );
        }
        (Some(REFRESH_GRANT), _, Some(refresh)) => {
            state
                .iam
                .refresh_login(&state.issuer, &refresh, &login)
                .await
        }
        (Some(REFRESH_GRANT), _, None) => {
            return error(
                &login,
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                "refresh_token is required",
            );
        }
        _ => {
            return error(
                &login,
                StatusCode::BAD_REQUEST,
                BAD_REQUEST,
                "grant_type must be urn:ibm:params:oauth:grant-type:apikey or refresh_token",
            );
        }
    };
    if matches!(
        result,
        Err(LoginError::UnknownApiKey
            | LoginError::InvalidRefreshToken
            | LoginError::ReusedRefreshToken(_)
            | LoginError::ExpiredRefreshToken)
    ) {
        state.metrics.refused(Refusal::Login);
    }
    answer(&login, result)
}

/// `GET /identity/keys`: the JWKS that verifies this server's tokens.
pub async fn keys(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({"keys": [state.issuer.jwk()]})).into_response()
}
