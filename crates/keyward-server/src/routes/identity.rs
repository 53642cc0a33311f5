//! IAM-compatible identity: `POST /identity/token` (API key grant) and `GET /identity/keys`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyward_api::TokenResponse;
use keyward_core::{AuditEvent, Initiator, Outcome};
use keyward_iam::{parse_api_key, verify_secret};
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::state::AppState;

const API_KEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// The token request form. `apikey` is a credential: zeroized on drop, never logged.
#[derive(Deserialize)]
pub struct TokenForm {
    grant_type: Option<String>,
    apikey: Option<Zeroizing<String>>,
}

/// An IAM-style error (`errorCode`, `errorMessage`), as IBM IAM answers token requests.
fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({"errorCode": code, "errorMessage": message, "context": {}})),
    )
        .into_response()
}

/// `POST /identity/token`.
pub async fn token(
    State(state): State<Arc<AppState>>,
    parts: axum::http::request::Parts,
    form: Result<Form<TokenForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "the request must be form-encoded with grant_type and apikey",
        );
    };
    if form.grant_type.as_deref() != Some(API_KEY_GRANT) {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0109E",
            "grant_type must be urn:ibm:params:oauth:grant-type:apikey",
        );
    }
    let Some(apikey) = form.apikey else {
        return iam_error(StatusCode::BAD_REQUEST, "BXNIM0109E", "apikey is required");
    };
    let now = OffsetDateTime::now_utc();
    let found = match parse_api_key(apikey.trim()) {
        Some((id, secret)) => match state.store().api_key(id).await {
            Ok(Some(rec)) if !rec.locked && verify_secret(secret, &rec.secret_hash) => Some(rec),
            Ok(_) => None,
            Err(e) => {
                tracing::error!(error = %e, "token: store failure");
                return iam_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "BXNIM0001E",
                    "temporarily unavailable",
                );
            }
        },
        None => None,
    };
    let request_id = crate::extract::request_id(&parts);
    let address = crate::extract::client_address(&parts);
    let audit = |outcome, code: u16, subject: &str, key_id: Option<&str>| {
        let initiator = Initiator {
            id: subject.to_owned(),
            address: address.clone(),
        };
        AuditEvent {
            target: key_id.map(str::to_owned),
            ..AuditEvent::new(
                "iam-identity.apikey.login",
                outcome,
                code,
                initiator,
                request_id.clone(),
                now,
            )
        }
    };
    let Some(rec) = found else {
        let event = audit(Outcome::Failure, 400, "unauthenticated", None);
        if let Err(e) = state.store().append_audit(&event).await {
            tracing::error!(error = %e, "token: audit failed");
            return iam_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "BXNIM0001E",
                "temporarily unavailable",
            );
        }
        return iam_error(
            StatusCode::BAD_REQUEST,
            "BXNIM0415E",
            "Provided API key could not be found.",
        );
    };
    let issued = match state.issuer.issue(&rec.subject, &rec.account, &rec.id, now) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "token: signing failed");
            return iam_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "BXNIM0001E",
                "internal error",
            );
        }
    };
    if let Err(e) = state
        .store()
        .append_audit(&audit(Outcome::Success, 200, &rec.subject, Some(&rec.id)))
        .await
    {
        tracing::error!(error = %e, "token: audit failed");
        return iam_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "BXNIM0001E",
            "temporarily unavailable",
        );
    }
    Json(TokenResponse {
        access_token: issued.token,
        refresh_token: "not_supported".into(),
        token_type: "Bearer".into(),
        expires_in: issued.expires_in,
        expiration: issued.expiration,
        scope: "ibm openid".into(),
    })
    .into_response()
}

/// `GET /identity/keys`: the JWKS that verifies this server's tokens.
pub async fn keys(State(state): State<Arc<AppState>>) -> Response {
    Json(serde_json::json!({"keys": [state.issuer.jwk()]})).into_response()
}
