//! Key Protect's registrations: `GET /api/v2/keys/registrations`, `GET
//! /api/v2/keys/{id}/registrations`, and `POST|PUT|PATCH|DELETE
//! /api/v2/keys/{id}/registrations/{urlEncodedResourceCRN}`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use keyward_api::events::AdopterKeyState;
use keyward_api::registrations::{
    PendingEvent, REGISTRATION, REGISTRATION_INPUT, Registration, RegistrationInput,
};
use keyward_api::{Collection, KeyVersionRef};
use keyward_core::{
    AdopterState, RegistrationFilter, RegistrationSpec, RegistrationView, RegistrationWrite,
};
use serde::Deserialize;

use super::keys::{AppResult, json_response, parse_bool, parse_u32, resolve};
use crate::error::ApiError;
use crate::extract::{Authed, Body, parse_json};
use crate::state::AppState;
use crate::views::date;

const DEFAULT_LIMIT: u32 = 200;
const MAX_LIMIT: u32 = 5000;

/// The registration routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v2/keys/registrations", get(list_all))
        .route("/api/v2/keys/{id}/registrations", get(list_for_key))
        .route(
            "/api/v2/keys/{id}/registrations/{crn}",
            post(|s, a, p, b| write(s, a, p, b, RegistrationWrite::Create))
                .put(|s, a, p, b| write(s, a, p, b, RegistrationWrite::Replace))
                .patch(|s, a, p, b| write(s, a, p, b, RegistrationWrite::Update))
                .delete(delete_registration),
        )
}

/// Query of the listings, as Key Protect names it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationQuery {
    #[serde(rename = "urlEncodedResourceCRNQuery")]
    crn_query: Option<String>,
    prevent_key_deletion: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    total_count: Option<String>,
}

fn filter(q: &RegistrationQuery) -> Result<(RegistrationFilter, bool), ApiError> {
    if let Some(p) = &q.crn_query {
        let ok = p.starts_with("crn:") && p.len() <= 512 && p.chars().all(|c| c.is_ascii_graphic());
        if !ok {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAM_ERR",
                "urlEncodedResourceCRNQuery: a URL-encoded CRN, '*' matching any characters",
            ));
        }
    }
    Ok((
        RegistrationFilter {
            key_id: None,
            key_ring: None,
            crn_pattern: q.crn_query.clone(),
            prevent_key_deletion: parse_bool(
                "preventKeyDeletion",
                q.prevent_key_deletion.as_deref(),
            )?,
            limit: parse_u32("limit", q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
            offset: parse_u32("offset", q.offset.as_deref(), 0, u32::MAX)?,
        },
        parse_bool("totalCount", q.total_count.as_deref())?.unwrap_or(false),
    ))
}

pub use keyward_runtime::wire::event_type;

/// The wire state for a domain one.
pub fn adopter_state(a: AdopterState) -> AdopterKeyState {
    match a {
        AdopterState::Enabled => AdopterKeyState::DekEnabled,
        AdopterState::Disabled => AdopterKeyState::DekDisabled,
        AdopterState::Deleted => AdopterKeyState::DekDeleted,
        AdopterState::Restored => AdopterKeyState::DekRestored,
    }
}

/// The domain state for a wire one.
pub fn adopter_state_in(a: AdopterKeyState) -> AdopterState {
    match a {
        AdopterKeyState::DekEnabled => AdopterState::Enabled,
        AdopterKeyState::DekDisabled => AdopterState::Disabled,
        AdopterKeyState::DekDeleted => AdopterState::Deleted,
        AdopterKeyState::DekRestored => AdopterState::Restored,
    }
}

fn view(v: RegistrationView) -> Registration {
    let r = v.record;
    Registration {
        key_id: r.key_id.to_string(),
        key_name: Some(v.key_name),
        resource_crn: r.resource_crn,
        created_by: r.owner,
        creation_date: date(r.created_at),
        updated_by: r.updated_by,
        last_updated: date(r.updated_at),
        description: r.description,
        prevent_key_deletion: r.prevent_key_deletion,
        key_version: KeyVersionRef {
            id: r.key_version_id.to_string(),
            creation_date: v.key_version_created_at.map(date),
        },
        registration_metadata: r.metadata,
        pending_events: v
            .pending
            .into_iter()
            .map(|e| PendingEvent {
                event_id: e.id,
                seq: e.seq,
                event_type: event_type(e.kind),
                time: date(e.time),
            })
            .collect(),
        adopter_key_state: r.adopter_state.map(adopter_state),
    }
}

fn listing(views: Vec<RegistrationView>, total: u64, with_total: bool) -> AppResult {
    let mut body = Collection::new(REGISTRATION, views.into_iter().map(view).collect());
    if with_total {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, REGISTRATION, &body))
}

/// `GET /api/v2/keys/registrations`: the instance's registrations.
pub async fn list_all(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<RegistrationQuery>,
) -> AppResult {
    let (f, with_total) = filter(&q)?;
    let (views, total) = state
        .keys
        .list_registrations(&authed.caller, None, f)
        .await?;
    listing(views, total, with_total)
}

/// `GET /api/v2/keys/{id}/registrations`: one key's registrations.
pub async fn list_for_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<RegistrationQuery>,
) -> AppResult {
    let (f, with_total) = filter(&q)?;
    let id = resolve(&state, &authed, &id).await?;
    let (views, total) = state
        .keys
        .list_registrations(&authed.caller, Some(id), f)
        .await?;
    listing(views, total, with_total)
}

/// The one resource of a registration request body. An empty body is an empty resource.
fn spec(body: &[u8]) -> Result<RegistrationSpec, ApiError> {
    #[derive(Default, Deserialize)]
    struct In {
        #[serde(default)]
        metadata: Option<keyward_api::CollectionMetadata>,
        #[serde(default)]
        resources: Vec<RegistrationInput>,
    }
    let parsed: In = parse_json(body)?;
    if let Some(m) = &parsed.metadata
        && m.collection_type != REGISTRATION_INPUT
    {
        return Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            format!("metadata.collectionType: must be {REGISTRATION_INPUT}"),
        ));
    }
    let one = match parsed.resources.len() {
        0 => RegistrationInput::default(),
        1 => parsed.resources.into_iter().next().unwrap_or_default(),
        _ => {
            return Err(ApiError::bad_request(
                "NUM_COLLECTION_RESOURCE_ERR",
                "resources: exactly one registration per request",
            ));
        }
    };
    Ok(RegistrationSpec {
        description: one.description,
        metadata: one.registration_metadata,
        prevent_key_deletion: one.prevent_key_deletion,
        key_version_id: one.key_version_id,
    })
}

fn one(status: StatusCode, v: RegistrationView) -> AppResult {
    let body = Collection::new(REGISTRATION, vec![view(v)]);
    Ok(json_response(status, REGISTRATION, &body))
}

/// `POST` (201, create), `PUT` (200, replace) and `PATCH` (200, update) of
/// `/api/v2/keys/{id}/registrations/{crn}`: the registration as written.
async fn write(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((id, crn)): Path<(String, String)>,
    Body(body): Body,
    how: RegistrationWrite,
) -> AppResult {
    let spec = spec(&body)?;
    let id = resolve(&state, &authed, &id).await?;
    let v = state
        .keys
        .write_registration(&authed.caller, id, &crn, spec, how)
        .await?;
    let status = match how {
        RegistrationWrite::Create => StatusCode::CREATED,
        RegistrationWrite::Replace | RegistrationWrite::Update => StatusCode::OK,
    };
    one(status, v)
}

/// `DELETE /api/v2/keys/{id}/registrations/{crn}`: 204.
pub async fn delete_registration(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((id, crn)): Path<(String, String)>,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    state
        .keys
        .delete_registration(&authed.caller, id, &crn)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
