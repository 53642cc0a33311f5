//! The one place where failures become HTTP: Key Protect's status codes, reason codes and error
//! body. A 5xx says only "internal error" and the request id; the detail goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_api::{Collection, ErrorReason, ErrorResource, media};
use keyward_core::{CustodyError, KeyError, KmipError};

const MORE_INFO: &str = "https://cloud.ibm.com/apidocs/key-protect";

/// A request failure, mapped to Key Protect's error body.
#[derive(Debug)]
pub enum ApiError {
    /// A domain error from the key service.
    Key(KeyError),
    /// The request is malformed (JSON, base64, headers, query).
    BadRequest {
        /// Key Protect reason code.
        code: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Missing, malformed, expired or forged credentials.
    Unauthorized(String),
    /// The instance's allowedIP policy does not cover the client address. Key Protect answers
    /// with an `errorMsg` and no `reasons`.
    AddressNotAllowed,
    /// The instance's allowedNetwork policy refuses this endpoint.
    NetworkNotAllowed,
    /// The caller's identity is over its request rate; retry after this many seconds.
    TooManyRequests(u64),
    /// The client's address is over its limit of unauthenticated requests; retry after this
    /// many seconds.
    SourceTooManyRequests(u64),
    /// The identity holds as many event streams as `[limits]` allows.
    TooManyStreams(usize),
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// A route or key id that does not exist.
    NotFound,
    /// A path that exists, with a method it does not serve.
    MethodNotAllowed,
    /// Anything unexpected; detail for the log only.
    Internal(String),
    /// A refused KMIP management request (client errors only; see `routes::kmip`).
    Kmip(KmipError),
}

impl From<keyward_iam::AuthError> for ApiError {
    fn from(e: keyward_iam::AuthError) -> Self {
        use keyward_iam::AuthError as A;
        match e {
            A::Revoked | A::NoAccessToInstance => ApiError::Unauthorized(e.to_string()),
            A::TooManyRequests(secs) => ApiError::TooManyRequests(secs),
            A::Key(e) => ApiError::Key(e),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        ApiError::Key(e)
    }
}

impl ApiError {
    /// A 400 with a reason code and a message naming the field.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status and Key Protect reason code, and the message the caller sees.
    fn parts(&self) -> (StatusCode, &'static str, String) {
        let status =
            |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            ApiError::Key(e) => {
                let (code, reason) = e.reason();
                let s = status(code);
                let msg = if let KeyError::Custody(CustodyError::Unavailable(_)) = e {
                    // Which tokens failed and why goes to the log only.
                    "no key custody backend (HSM) can serve this request now; retry later".into()
                } else if s.is_server_error() {
                    generic(s)
                } else {
                    e.to_string()
                };
                (s, reason, msg)
            }
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR", m.clone()),
            ApiError::AddressNotAllowed => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED_ERR",
                "The user does not have access to the specified resource".into(),
            ),
            ApiError::TooManyRequests(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS_ERR",
                format!("this identity is over its request rate; retry in {secs} s"),
            ),
            ApiError::TooManyStreams(max) => (
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS_ERR",
                format!(
                    "this identity has {max} event streams open, the most it may: close one first"
                ),
            ),
            ApiError::SourceTooManyRequests(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS_ERR",
                format!(
                    "too many requests without a valid token from this address; retry in {secs} s"
                ),
            ),
            ApiError::NetworkNotAllowed => (
                StatusCode::FORBIDDEN,
                "CONFIG_RULE_CONFLICT_ERR",
                "Requested change is not compliant with configuration rules: the instance's \
                 allowedNetwork policy admits only its private endpoint"
                    .into(),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "BODY_TOO_LARGE_ERR",
                "the request body is larger than this server accepts".into(),
            ),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED_ERR",
                "this method is not allowed on this path".into(),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "NOT_FOUND_ERR",
                "no such resource".into(),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_SERVER_ERR",
                generic(StatusCode::INTERNAL_SERVER_ERROR),
            ),
            ApiError::Kmip(e) => {
                let (code, reason) = e.reason();
                (status(code), reason, e.to_string())
            }
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

fn generic(s: StatusCode) -> String {
    if s == StatusCode::SERVICE_UNAVAILABLE {
        "the service is temporarily unavailable; retry later".into()
    } else {
        "internal error".into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            // Detail (never secret: errors carry no key material) goes to the log only.
            tracing::error!(error = ?self, "request failed");
        }
        let reason_text = status.canonical_reason().unwrap_or("Error");
        // Key Protect's allowedIP refusal carries only the message.
        let reasons = if matches!(self, ApiError::AddressNotAllowed) {
            Vec::new()
        } else {
            vec![ErrorReason {
                code: code.to_owned(),
                message: message.clone(),
                status: status.as_u16(),
                more_info: MORE_INFO.to_owned(),
            }]
        };
        let body = Collection::new(
            media::ERROR,
            vec![ErrorResource {
                error_msg: format!("{reason_text}: {message}"),
                reasons,
            }],
        );
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (status, bytes).into_response();
        if let ApiError::TooManyRequests(secs) | ApiError::SourceTooManyRequests(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            if matches!(self, ApiError::SourceTooManyRequests(_)) {
                resp.extensions_mut().insert(crate::state::SourceThrottled);
            }
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            // A failed HSM token is probed again after a second.
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1u32));
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
