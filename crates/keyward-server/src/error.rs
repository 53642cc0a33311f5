//! The one place where failures become HTTP: Key Protect's status codes, reason codes and error
//! body. A 5xx says only "internal error" and the request id; the detail goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_api::{Collection, ErrorReason, ErrorResource, media};
use keyward_core::{Action, CustodyError, KeyError, KeyState, KmipError, Rule, StoreError};

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
        use KeyError as K;
        let status =
            |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            ApiError::Key(e) => {
                // Key Protect's reason codes (its "error messages" reference).
                let code = match e {
                    K::NotFound => "KEY_NOT_FOUND_ERR",
                    K::Forbidden(_) => "UNAUTHORIZED_ERR",
                    K::InvalidState {
                        state: KeyState::Destroyed,
                        ..
                    } => "KEY_DELETED_ERR",
                    K::InvalidState {
                        state: KeyState::Deactivated,
                        action: Action::Wrap,
                    } => "KEY_EXPIRED_ERR",
                    K::InvalidState { .. } => "KEY_ACTION_INVALID_STATE_ERR",
                    K::InvalidInput(_) => "BAD_BODY_ERR",
                    K::WrongKeyKind(_) => "KEY_ROOT_REQ_ERR",
                    K::PayloadRequired => "KEY_PAYLOAD_REQ_ERR",
                    K::InvalidCiphertext => "UNPROCESSABLE_CIPHERTEXT_ERR",
                    K::RotationTooSoon(_) => "KEY_ROTATION_NOT_PERMITTED",
                    K::ChangeTooSoon(_) => "REQ_TOO_EARLY_ERR",
                    K::Conflict | K::Store(StoreError::Conflict) => "CONFLICT_ERR",
                    K::Custody(CustodyError::Unavailable(_))
                    | K::Store(StoreError::Unavailable(_)) => "SERVICE_UNAVAILABLE_ERR",
                    // Key Protect: "Key metadata became corrupted".
                    K::IntegrityFailure | K::Custody(CustodyError::IntegrityFailure) => {
                        "INCOMPLETE_METADATA_ERR"
                    }
                    K::Custody(_) | K::Store(_) => "INTERNAL_SERVER_ERR",
                    K::Refused(rule, _) => rule_code(*rule),
                };
                let s = status(e.reason_code());
                let msg = if let K::Custody(CustodyError::Unavailable(_)) = e {
                    // Which tokens failed and why goes to the log only.
                    "no key custody backend (HSM) can serve this request now; retry later".into()
                } else if s.is_server_error() {
                    generic(s)
                } else {
                    e.to_string()
                };
                (s, code, msg)
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
            ApiError::Kmip(e) => (status(e.reason_code()), kmip_code(e), e.to_string()),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

/// Key Protect's reason code for each rule (its error reference; where it documents none, a code
/// in its style, listed in ARCHITECTURE.md).
fn rule_code(rule: Rule) -> &'static str {
    match rule {
        Rule::RestoreWindowPassed => "KEY_RESTORE_EXPIRED",
        Rule::RestoreMaterialMismatch => "INVALID_FIELD_ERR",
        Rule::RestorePayloadRequired => "KEY_PAYLOAD_REQ_ERR",
        Rule::KeyExpired => "KEY_EXPIRED_ERR",
        Rule::PurgeTooEarly => "REQ_TOO_EARLY_ERR",
        Rule::DualAuthRequired => "AUTHORIZATIONS_NOT_MET",
        Rule::DualAuthNotEnabled => "NOT_DUAL_AUTH_ERR",
        Rule::DualAuthPermanent => "INVALID_FIELD_ERR",
        Rule::AliasExists => "KEY_ALIAS_NOT_UNIQUE_ERR",
        Rule::TooManyAliases => "KEY_ALIAS_QUOTA_ERR",
        Rule::AliasNotFound => "NOT_FOUND_ERR",
        Rule::KeyRingExists => "KEY_RING_ALREADY_EXISTS_ERR",
        Rule::KeyRingNotFound => "KEY_RING_NOT_FOUND_ERR",
        Rule::KeyRingNotEmpty => "KEY_RING_NOT_EMPTY_ERR",
        Rule::KeyRingKeysNotDeleted => "KEY_RING_KEYS_NOT_DELETED_ERR",
        Rule::DefaultKeyRing => "INVALID_FIELD_ERR",
        Rule::CreateImportDenied => "KEY_CREATE_IMPORT_ACCESS_ERR",
        Rule::ImportTokenNotFound => "IMPORT_TOKEN_NOT_FOUND_ERR",
        Rule::ImportTokenExpired => "IMPORT_TOKEN_EXPIRED_ERR",
        Rule::IncorrectNonce => "INCORRECT_NONCE_ERR",
        Rule::IncorrectNonceIv => "INCORRECT_NONCE_IV_ERR",
        Rule::ProtectedResource => "PROTECTED_RESOURCE_ERR",
        Rule::PreventKeyDeletion => "PREV_KEY_DEL_ERR",
        Rule::ServiceOnly => "SERVICE_ONLY_ERR",
        Rule::RegistrationRootKeyRequired => "KEY_ROOT_REQ_REG_ERR",
        Rule::KeyVersionInvalid => "KEY_VERSION_INVALID",
        Rule::RegistrationOwner => "RESOURCE_OWNER_ERR",
        // Key Protect documents no code for these; Keyward's choices.
        Rule::RegistrationExists => "REGISTRATION_ALREADY_EXISTS_ERR",
        Rule::RegistrationNotFound => "REGISTRATION_NOT_FOUND_ERR",
        Rule::EventNotFound => "EVENT_NOT_FOUND_ERR",
        Rule::SubscriptionNotFound => "NOT_FOUND_ERR",
    }
}

/// Key Protect's reason codes for KMIP management refusals.
fn kmip_code(e: &KmipError) -> &'static str {
    use KmipError as E;
    match e {
        E::AdapterNotFound => "KMIP_ADAPTER_NOT_FOUND_ERR",
        E::CertificateNotFound => "KMIP_CERT_NOT_FOUND_ERR",
        E::ObjectNotFound => "KMIP_OBJECT_NOT_FOUND_ERR",
        E::AdapterNameExists => "KMIP_ADAPTER_NAME_NOT_UNIQUE_ERR",
        E::CertificateNameExists => "KMIP_CERT_NAME_NOT_UNIQUE_ERR",
        E::CertificateExists => "KMIP_CERT_NOT_UNIQUE_ERR",
        E::AdapterHasObjects => "KMIP_ADAPTER_HAS_OBJECTS_ERR",
        E::ObjectActive => "KMIP_OBJECT_ACTIVE_ERR",
        E::InvalidField(_) => "INVALID_FIELD_ERR",
        E::Quota(_) => "KMIP_ADAPTER_QUOTA_ERR",
        E::CrkNotRoot => "KEY_ROOT_REQ_ERR",
        E::CrkNotActive(_) => "KEY_ACTION_INVALID_STATE_ERR",
        E::Key(_) | E::IntegrityFailure | E::Custody(_) | E::Store(_) => "INTERNAL_SERVER_ERR",
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
        if let ApiError::TooManyRequests(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
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
