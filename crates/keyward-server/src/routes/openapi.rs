//! The OpenAPI document of the Key Protect API v2 surface (`openapi/kp-v2.json`, written by
//! `scripts/gen-openapi-v2.py`), served at `/api/v2/openapi.json`; `ROUTES` lists what the
//! router serves under `/api/v2`, which `tests/openapi.rs` holds the document and the router to.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// The document.
pub const OPENAPI: &str = include_str!("../../openapi/kp-v2.json");

/// `GET /api/v2/openapi.json` (public).
pub async fn document() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Every (method, path) the router serves under `/api/v2`, for the OpenAPI drift test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v2/openapi.json"),
    ("get", "/api/v2/keys"),
    ("head", "/api/v2/keys"),
    ("post", "/api/v2/keys"),
    ("post", "/api/v2/keys_with_policy_overrides"),
    ("get", "/api/v2/keys/{id}"),
    ("delete", "/api/v2/keys/{id}"),
    ("post", "/api/v2/keys/{id}"),
    ("patch", "/api/v2/keys/{id}"),
    ("post", "/api/v2/keys/{id}/restore"),
    ("delete", "/api/v2/keys/{id}/purge"),
    ("post", "/api/v2/keys/{id}/aliases/{alias}"),
    ("delete", "/api/v2/keys/{id}/aliases/{alias}"),
    ("get", "/api/v2/keys/{id}/policies"),
    ("put", "/api/v2/keys/{id}/policies"),
    ("get", "/api/v2/instance/policies"),
    ("put", "/api/v2/instance/policies"),
    ("get", "/api/v2/instance/allowed_ip_port"),
    ("get", "/api/v2/import_token"),
    ("post", "/api/v2/import_token"),
    ("get", "/api/v2/key_rings"),
    ("post", "/api/v2/key_rings/{id}"),
    ("delete", "/api/v2/key_rings/{id}"),
    ("get", "/api/v2/keys/{id}/metadata"),
    ("get", "/api/v2/keys/{id}/versions"),
    ("post", "/api/v2/keys/{id}/actions/{action}"),
    ("get", "/api/v2/keys/registrations"),
    ("get", "/api/v2/keys/{id}/registrations"),
    ("post", "/api/v2/keys/{id}/registrations/{crn}"),
    ("put", "/api/v2/keys/{id}/registrations/{crn}"),
    ("patch", "/api/v2/keys/{id}/registrations/{crn}"),
    ("delete", "/api/v2/keys/{id}/registrations/{crn}"),
    ("get", "/api/v2/event_stream"),
    ("get", "/api/v2/event_subscription"),
    ("put", "/api/v2/event_subscription"),
    ("delete", "/api/v2/event_subscription"),
    ("post", "/api/v2/event_ack"),
    ("get", "/api/v2/audit_events"),
    ("get", "/api/v2/audit_events/verification"),
    ("get", "/api/v2/kmip_adapters"),
    ("post", "/api/v2/kmip_adapters"),
    ("get", "/api/v2/kmip_adapters/{id}"),
    ("delete", "/api/v2/kmip_adapters/{id}"),
    ("get", "/api/v2/kmip_adapters/{id}/certificates"),
    ("post", "/api/v2/kmip_adapters/{id}/certificates"),
    ("get", "/api/v2/kmip_adapters/{id}/certificates/{item}"),
    ("delete", "/api/v2/kmip_adapters/{id}/certificates/{item}"),
    ("get", "/api/v2/kmip_adapters/{id}/kmip_objects"),
    ("get", "/api/v2/kmip_adapters/{id}/kmip_objects/{item}"),
    ("delete", "/api/v2/kmip_adapters/{id}/kmip_objects/{item}"),
];
