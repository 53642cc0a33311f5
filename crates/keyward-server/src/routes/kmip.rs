//! `/api/v2/kmip_adapters`: KMIP adapters, their client certificates and KMIP objects, over REST.
//! Handlers translate to [`keyward_core::KmipService`] calls and back; the rules live there.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use keyward_api::{
    Collection, KmipAdapter, KmipAdapterCreate, KmipCertificate, KmipCertificateCreate, KmipObject,
    KmipProfileData, media,
};
use keyward_core::{
    KmipAdapterRecord, KmipCertificateRecord, KmipError, KmipObjectRecord, NewKmipAdapter,
    NewKmipCertificate, Page,
};
use serde::Deserialize;

use super::keys::{AppResult, json_response, parse_bool, parse_u32};
use crate::error::ApiError;
use crate::extract::{Authed, Body, parse_json};
use crate::state::AppState;
use crate::views::date;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 200;
const MAX_OBJECT_LIMIT: u32 = 5000;

/// The KMIP routes, to merge into the main router.
pub fn router() -> Router<Arc<AppState>> {
    // One parameter name per path position (the router requires it): `{id}` is the adapter.
    Router::new()
        .route(
            "/api/v2/kmip_adapters",
            get(list_adapters).post(create_adapter),
        )
        .route(
            "/api/v2/kmip_adapters/{id}",
            get(get_adapter).delete(delete_adapter),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/certificates",
            get(list_certificates).post(create_certificate),
        )
        .route(
            "/api/v2/kmip_adapters/{id}/certificates/{item}",
            get(get_certificate).delete(delete_certificate),
        )
        .route("/api/v2/kmip_adapters/{id}/kmip_objects", get(list_objects))
        .route(
            "/api/v2/kmip_adapters/{id}/kmip_objects/{item}",
            get(get_object).delete(delete_object),
        )
}

impl From<KmipError> for ApiError {
    fn from(e: KmipError) -> Self {
        match e {
            // Key service failures (an unknown crk_id, a store or custody failure) keep their
            // own mapping.
            KmipError::Key(k) => ApiError::Key(k),
            KmipError::Store(s) => ApiError::Key(s.into()),
            KmipError::Custody(c) => ApiError::Key(c.into()),
            KmipError::IntegrityFailure => ApiError::Key(keyward_core::KeyError::IntegrityFailure),
            e => ApiError::Kmip(e),
        }
    }
}

/// Query parameters of the KMIP endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KmipQuery {
    limit: Option<String>,
    offset: Option<String>,
    total_count: Option<String>,
    #[serde(rename = "crk_id")]
    crk_id: Option<String>,
    state: Option<String>,
    force: Option<String>,
    allow_expiring_key: Option<String>,
}

impl KmipQuery {
    fn page(&self, max: u32) -> Result<Page, ApiError> {
        Ok(Page {
            limit: parse_u32("limit", self.limit.as_deref(), DEFAULT_LIMIT, max)?,
            offset: parse_u32("offset", self.offset.as_deref(), 0, u32::MAX)?,
        })
    }

    fn total_count(&self) -> Result<bool, ApiError> {
        Ok(parse_bool("totalCount", self.total_count.as_deref())?.unwrap_or(false))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Resources<T> {
    #[serde(default = "Vec::new")]
    resources: Vec<T>,
}

fn one<T>(body: Resources<T>, what: &str) -> Result<T, ApiError> {
    let mut r = body.resources.into_iter();
    match (r.next(), r.next()) {
        (Some(x), None) => Ok(x),
        _ => Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            format!("resources: exactly one {what} per request"),
        )),
    }
}

fn adapter_view(a: KmipAdapterRecord) -> KmipAdapter {
    KmipAdapter {
        id: a.id.to_string(),
        name: a.name,
        description: a.description,
        profile: a.profile,
        profile_data: Some(KmipProfileData {
            crk_id: Some(a.crk_id.to_string()),
        }),
        created_at: Some(date(a.created_at)),
        created_by: a.created_by,
        updated_at: Some(date(a.updated_at)),
        updated_by: a.updated_by,
    }
}

fn certificate_view(c: KmipCertificateRecord, full: bool) -> KmipCertificate {
    KmipCertificate {
        id: c.id.to_string(),
        name: c.name,
        created_at: Some(date(c.created_at)),
        created_by: c.created_by,
        certificate: full.then_some(c.certificate),
    }
}

fn object_view(o: KmipObjectRecord) -> KmipObject {
    KmipObject {
        id: o.id.to_string(),
        kmip_object_type: o.object_type,
        state: Some(o.state),
        created_at: Some(date(o.created_at)),
        created_by_kmip_client_cert_id: o.created_by_cert_id.to_string(),
        created_by: Some(o.created_by),
        updated_at: o.updated_at.map(date),
        updated_by_kmip_client_cert_id: o.updated_by_cert_id.map(|u| u.to_string()),
        updated_by: o.updated_by,
        destroyed_at: o.destroyed_at.map(date),
        destroyed_by_kmip_client_cert_id: o.destroyed_by_cert_id.map(|u| u.to_string()),
        destroyed_by: o.destroyed_by,
        recoverable: Some(false),
    }
}

/// `POST /api/v2/kmip_adapters[?allowExpiringKey=true]`: 201 with the adapter.
pub async fn create_adapter(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<KmipQuery>,
    Body(body): Body,
) -> AppResult {
    let spec: KmipAdapterCreate = one(parse_json(&body)?, "KMIP adapter")?;
    let allow_expiring_key =
        parse_bool("allowExpiringKey", q.allow_expiring_key.as_deref())?.unwrap_or(false);
    let adapter = state
        .kmip
        .create_adapter(
            &authed.caller,
            NewKmipAdapter {
                name: spec.name,
                description: spec.description,
                profile: spec.profile,
                crk_id: spec.profile_data.and_then(|p| p.crk_id),
                allow_expiring_key,
            },
        )
        .await?;
    let body = Collection::new(media::KMIP_ADAPTER, vec![adapter_view(adapter)]);
    Ok(json_response(
        StatusCode::CREATED,
        media::KMIP_ADAPTER,
        &body,
    ))
}

/// `GET /api/v2/kmip_adapters[?limit&offset&totalCount&crk_id]`.
pub async fn list_adapters(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<KmipQuery>,
) -> AppResult {
    let page = q.page(MAX_LIMIT)?;
    let (list, total) = state
        .kmip
        .adapters(&authed.caller, q.crk_id.as_deref(), page)
        .await?;
    let mut body = Collection::new(
        media::KMIP_ADAPTER,
        list.into_iter().map(adapter_view).collect(),
    );
    if q.total_count()? {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, media::KMIP_ADAPTER, &body))
}

/// `GET /api/v2/kmip_adapters/{id}`: the adapter (by id or name) in a one-element list.
pub async fn get_adapter(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
) -> AppResult {
    let adapter = state.kmip.adapter(&authed.caller, &id).await?;
    let body = Collection::new(media::KMIP_ADAPTER, vec![adapter_view(adapter)]);
    Ok(json_response(StatusCode::OK, media::KMIP_ADAPTER, &body))
}

/// `DELETE /api/v2/kmip_adapters/{id}`: 204.
pub async fn delete_adapter(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
) -> AppResult {
    state.kmip.delete_adapter(&authed.caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v2/kmip_adapters/{id}/certificates`: 201 with the certificate.
pub async fn create_certificate(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(adapter): Path<String>,
    Body(body): Body,
) -> AppResult {
    let spec: KmipCertificateCreate = one(parse_json(&body)?, "certificate")?;
    let cert = state
        .kmip
        .create_certificate(
            &authed.caller,
            &adapter,
            NewKmipCertificate {
                name: spec.name,
                certificate: spec.certificate,
            },
        )
        .await?;
    let body = Collection::new(
        media::KMIP_CLIENT_CERTIFICATE,
        vec![certificate_view(cert, true)],
    );
    Ok(json_response(
        StatusCode::CREATED,
        media::KMIP_CLIENT_CERTIFICATE,
        &body,
    ))
}

/// `GET /api/v2/kmip_adapters/{id}/certificates`: without the certificates themselves.
pub async fn list_certificates(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(adapter): Path<String>,
    Query(q): Query<KmipQuery>,
) -> AppResult {
    let page = q.page(MAX_LIMIT)?;
    let (list, total) = state
        .kmip
        .certificates(&authed.caller, &adapter, page)
        .await?;
    let mut body = Collection::new(
        media::KMIP_CLIENT_CERTIFICATE,
        list.into_iter()
            .map(|c| certificate_view(c, false))
            .collect(),
    );
    if q.total_count()? {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(
        StatusCode::OK,
        media::KMIP_CLIENT_CERTIFICATE,
        &body,
    ))
}

/// `GET /api/v2/kmip_adapters/{id}/certificates/{item}`: the full certificate.
pub async fn get_certificate(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((adapter, id)): Path<(String, String)>,
) -> AppResult {
    let cert = state
        .kmip
        .certificate(&authed.caller, &adapter, &id)
        .await?;
    let body = Collection::new(
        media::KMIP_CLIENT_CERTIFICATE,
        vec![certificate_view(cert, true)],
    );
    Ok(json_response(
        StatusCode::OK,
        media::KMIP_CLIENT_CERTIFICATE,
        &body,
    ))
}

/// `DELETE /api/v2/kmip_adapters/{id}/certificates/{item}`: 204.
pub async fn delete_certificate(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((adapter, id)): Path<(String, String)>,
) -> AppResult {
    state
        .kmip
        .delete_certificate(&authed.caller, &adapter, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v2/kmip_adapters/{id}/kmip_objects[?state=1,2,3,4]`.
pub async fn list_objects(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(adapter): Path<String>,
    Query(q): Query<KmipQuery>,
) -> AppResult {
    let page = q.page(MAX_OBJECT_LIMIT)?;
    let mut states = Vec::new();
    for part in q
        .state
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.parse::<u8>() {
            Ok(s @ 1..=6) => states.push(s),
            _ => {
                return Err(ApiError::bad_request(
                    "INVALID_QUERY_PARAM_ERR",
                    "state: a comma-separated list of KMIP states 1 to 6",
                ));
            }
        }
    }
    let (list, total) = state
        .kmip
        .objects(&authed.caller, &adapter, &states, page)
        .await?;
    let mut body = Collection::new(
        media::KMIP_OBJECT,
        list.into_iter().map(object_view).collect(),
    );
    if q.total_count()? {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, media::KMIP_OBJECT, &body))
}

/// `GET /api/v2/kmip_adapters/{id}/kmip_objects/{item}`.
pub async fn get_object(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((adapter, id)): Path<(String, String)>,
) -> AppResult {
    let object = state.kmip.object(&authed.caller, &adapter, &id).await?;
    let body = Collection::new(media::KMIP_OBJECT, vec![object_view(object)]);
    Ok(json_response(StatusCode::OK, media::KMIP_OBJECT, &body))
}

/// `DELETE /api/v2/kmip_adapters/{id}/kmip_objects/{item}[?force=true]`: 204.
pub async fn delete_object(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((adapter, id)): Path<(String, String)>,
    Query(q): Query<KmipQuery>,
) -> AppResult {
    let force = parse_bool("force", q.force.as_deref())?.unwrap_or(false);
    state
        .kmip
        .delete_object(&authed.caller, &adapter, &id, force)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
