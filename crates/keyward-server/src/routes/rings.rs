//! `/api/v2/key_rings`: Key Protect's key rings.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyward_api::{Collection, KeyRing, media};
use keyward_core::Page;
use serde::Deserialize;

use super::keys::{AppResult, json_response, parse_bool, parse_u32};
use crate::extract::{Authed, Body, parse_json};
use crate::state::AppState;
use crate::views::date;

/// Query of the key ring endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RingQuery {
    limit: Option<String>,
    offset: Option<String>,
    total_count: Option<String>,
    force: Option<String>,
}

/// `GET /api/v2/key_rings`: `default` first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<RingQuery>,
) -> AppResult {
    let page = Page {
        limit: parse_u32("limit", q.limit.as_deref(), 100, 5000)?,
        offset: parse_u32("offset", q.offset.as_deref(), 0, u32::MAX)?,
    };
    let (rings, total) = state.keys.key_rings(&authed.caller, page).await?;
    let views: Vec<KeyRing> = rings
        .into_iter()
        .map(|r| KeyRing {
            id: r.id,
            creation_date: Some(date(r.created_at)),
            created_by: Some(r.created_by),
        })
        .collect();
    let mut body = Collection::new(media::KEY_RING, views);
    if parse_bool("totalCount", q.total_count.as_deref())?.unwrap_or(false) {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, media::KEY_RING, &body))
}

/// `POST /api/v2/key_rings/{id}`: 201, no body.
pub async fn create(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
) -> AppResult {
    state.keys.create_key_ring(&authed.caller, &id).await?;
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /api/v2/key_rings/{id}[?force=true]`: 204. The Go client sends `{"Force": true}` as a
/// body instead of the query parameter; both are accepted.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<RingQuery>,
    Body(body): Body,
) -> AppResult {
    let mut force = parse_bool("force", q.force.as_deref())?.unwrap_or(false);
    let value: Option<serde_json::Value> = parse_json(&body)?;
    if let Some(obj) = value.as_ref().and_then(|v| v.as_object()) {
        force |= obj
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("force") && v.as_bool() == Some(true));
    }
    state
        .keys
        .delete_key_ring(&authed.caller, &id, force)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
