//! `GET /api/v2/audit_events` (a Keyward extension: the instance's audit trail, Managers only),
//! `GET /api/v2/audit_events/verification` (the chain's newest signed checkpoint and the events
//! after it, verified) and `GET /metrics` (Prometheus text format).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_api::{
    AUDIT_EVENT_MEDIA, AUDIT_VERIFICATION_MEDIA, AuditChainBreak, AuditChainVerification,
    AuditCheckpointView, Collection, hex,
};
use keyward_core::{AuditQuery, Outcome};
use keyward_runtime::metrics::CustodyHealth;
use keyward_runtime::wire::{date, event_view};
use serde::Deserialize;

use super::keys::{AppResult, json_response, parse_u32};
use crate::error::ApiError;
use crate::extract::Authed;
use crate::state::AppState;
use crate::views::parse_date;

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 200;

/// Query of `GET /api/v2/audit_events`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEventsQuery {
    from: Option<String>,
    to: Option<String>,
    action: Option<String>,
    key_id: Option<String>,
    initiator: Option<String>,
    outcome: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn text_filter(field: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.is_empty() || s.len() > 256 => Err(ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            format!("{field}: 1 to 256 characters"),
        )),
        v => Ok(v),
    }
}

/// `GET /api/v2/audit_events`: the instance's events, oldest first, filtered and paginated
/// like Key Protect's collections (`limit` up to 5000, `offset`), with `totalCount`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    query: Result<Query<AuditEventsQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult {
    let Query(q) = query.map_err(|_| {
        ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            "query: allowed are from, to, action, keyId, initiator, outcome, limit, offset",
        )
    })?;
    let outcome = match q.outcome.as_deref() {
        None => None,
        Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
            ApiError::bad_request("INVALID_QUERY_PARAM_ERR", "outcome: success or failure")
        })?),
    };
    let query = AuditQuery {
        instance: None,
        from: q
            .from
            .as_deref()
            .map(|d| parse_date("from", d))
            .transpose()?,
        to: q.to.as_deref().map(|d| parse_date("to", d)).transpose()?,
        action: text_filter("action", q.action)?,
        target: text_filter("keyId", q.key_id)?,
        initiator: text_filter("initiator", q.initiator)?,
        outcome,
        limit: parse_u32(
            "limit",
            q.limit.as_deref(),
            DEFAULT_LIMIT,
            keyward_store::MAX_AUDIT_PAGE,
        )?,
        offset: parse_u32("offset", q.offset.as_deref(), 0, u32::MAX)?,
    };
    let (events, total) = state
        .keys
        .audit_events(&authed.caller, state.trail.as_ref(), query)
        .await?;
    // Events before the database's first row were pruned after archiving: say so, rather than
    // let the listing look complete.
    let first = state.trail.audit_first_seq().await.ok().flatten();
    let mut body = Collection::new(AUDIT_EVENT_MEDIA, events.iter().map(event_view).collect());
    body.metadata.total_count = Some(total);
    body.metadata.archived_through = first.filter(|f| *f > 1).map(|f| f - 1);
    Ok(json_response(StatusCode::OK, AUDIT_EVENT_MEDIA, &body))
}

/// `GET /api/v2/audit_events/verification`: the newest signed checkpoint (signature and stored
/// hash) and every event after it up to the head, verified (Managers of the instance, like the
/// trail; `keyward audit verify` walks the whole chain offline).
pub async fn verification(State(state): State<Arc<AppState>>, authed: Authed) -> AppResult {
    let r = state
        .keys
        .verify_audit_tail(&authed.caller, state.trail.as_ref())
        .await?;
    let body = AuditChainVerification {
        ok: r.first_break.is_none(),
        head_seq: r.head.map(|h| h.0),
        head_hash: r.head.map(|h| hex(&h.1)),
        checkpoint: r.checkpoint.map(|cp| AuditCheckpointView {
            seq: cp.seq,
            hash: hex(&cp.hash),
            time: date(cp.time),
            valid: r.checkpoint_valid,
        }),
        verified_from: r.from,
        events_checked: r.checked,
        complete: r.complete,
        first_break: r.first_break.map(|b| AuditChainBreak {
            kind: b.kind.as_str().to_owned(),
            seq: b.seq,
            detail: b.detail,
        }),
    };
    Ok(json_response(
        StatusCode::OK,
        AUDIT_VERIFICATION_MEDIA,
        &body,
    ))
}

/// `GET /metrics`: open, unless `[metrics] bearer_token_env` names a token it then requires.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !keyward_crypto::Secret::new(given.as_bytes().to_vec()).ct_eq(expected) {
            return ApiError::Unauthorized("a valid metrics bearer token is required".into())
                .into_response();
        }
    }
    let keys = state
        .store()
        .key_counts_by_state()
        .await
        .unwrap_or_default();
    let custody = state.keys.custody().clone();
    let backend = custody.name();
    // Signing and probing tokens may call into an HSM: off the async workers.
    let custody_health = tokio::task::spawn_blocking(move || CustodyHealth {
        up: custody.sign_record(b"keyward.metrics.probe").is_ok(),
        backend: custody.name(),
        tokens: custody.tokens(),
    })
    .await
    .unwrap_or(CustodyHealth {
        backend,
        ..CustodyHealth::default()
    });
    let head = state
        .trail
        .audit_head()
        .await
        .ok()
        .flatten()
        .map_or(0, |h| h.0);
    // Lifecycle events not yet delivered to webhook subscribers.
    let backlog = state.store().event_backlog().await.unwrap_or(0);
    match state.metrics.render(&keys, &custody_health, head, backlog) {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "metrics: cannot render");
            ApiError::Internal("metrics".into()).into_response()
        }
    }
}
