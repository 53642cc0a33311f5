//! Lifecycle events for integrated services: the pull stream (`GET /api/v2/event_stream`,
//! server-sent events), webhook subscriptions (`/api/v2/event_subscription`) and Key Protect's
//! acknowledgement (`POST /api/v2/event_ack`).
//!
//! The stream sends the caller's unacknowledged events after `Last-Event-ID` (or all of them),
//! then live ones. It wakes when this process commits events and polls every
//! [`POLL_INTERVAL`] for those other processes on the same database commit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use keyward_api::events::{EVENT_ACKNOWLEDGE, EventAck, EventSubscription, headers};
use keyward_core::{Caller, EventRecord};
use keyward_iam::Claims;
use keyward_runtime::wire::wire_event;
use serde::Deserialize;
use time::OffsetDateTime;

use super::keys::{AppResult, json_response};
use super::registrations::adopter_state_in;
use crate::error::ApiError;
use crate::extract::{Authed, Body, parse_json};
use crate::state::AppState;
use crate::views::b64;

pub use keyward_runtime::webhooks::POLL_INTERVAL;
/// The comment keep-alive interval of the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events read per query.
const PAGE: u32 = 100;

/// The event routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v2/event_stream", get(event_stream))
        .route(
            "/api/v2/event_subscription",
            get(get_subscription)
                .put(put_subscription)
                .delete(delete_subscription),
        )
        .route("/api/v2/event_ack", post(event_ack))
}

struct StreamState {
    state: Arc<AppState>,
    /// The token's claims: the stream ends when the token expires or its API key or identity is
    /// locked or deleted (seen within the access cache TTL), like any request would be refused.
    claims: Claims,
    caller: Caller,
    account: String,
    cursor: u64,
    buffer: VecDeque<EventRecord>,
    wake: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    /// Counts this stream against the identity's cap until it ends.
    _slot: crate::state::StreamSlot,
}

/// `GET /api/v2/event_stream`: `text/event-stream` of the caller's events (`id: <seq>`,
/// `event: <eventType>`, `data: <event JSON>`).
pub async fn event_stream(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Refused before the stream starts (a refusal inside it would follow a 200).
    authed.caller.require_instance_member()?;
    let slot = state
        .open_event_stream(authed.caller.subject())
        .ok_or(ApiError::TooManyStreams(
            state.config.limits.event_streams_per_identity,
        ))?;
    let cursor = match headers.get(headers::LAST_EVENT_ID) {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_HEADER_ERR",
                    "Last-Event-ID: the seq (a non-negative integer) of the last event received",
                )
            })?,
    };
    // The Authed extractor verified this token; its claims are kept to re-check access.
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(7..))
        .unwrap_or_default()
        .trim();
    let claims = state
        .verifier
        .verify(token, OffsetDateTime::now_utc())
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let mut wake = state.event_notifications.clone();
    wake.mark_unchanged();
    let st = StreamState {
        state: state.clone(),
        claims,
        caller: authed.caller,
        account: authed.account,
        cursor,
        buffer: VecDeque::new(),
        wake,
        closing: state.closing.subscribe(),
        _slot: slot,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.buffer.pop_front() {
                let wire = wire_event(&st.state.config.region, &st.account, &e);
                let data = serde_json::to_string(&wire).unwrap_or_default();
                let ev = Event::default()
                    .id(e.seq.to_string())
                    .event(wire.event_type.as_str())
                    .data(data);
                return Some((Ok::<_, Infallible>(ev), st));
            }
            let expired = OffsetDateTime::now_utc().unix_timestamp() >= st.claims.exp;
            if expired || st.state.iam.resolve(&st.claims).await.is_err() {
                return None;
            }
            match st
                .state
                .keys
                .events_for(&st.caller, st.cursor, true, PAGE)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    st.cursor = events.last().map_or(st.cursor, |e| e.seq);
                    st.buffer.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    // The client reconnects with Last-Event-ID and loses nothing.
                    tracing::warn!(error = %e, "event stream: store read failed; closing");
                    return None;
                }
            }
            if *st.closing.borrow() {
                return None;
            }
            tokio::select! {
                _ = st.wake.changed() => {}
                _ = st.closing.changed() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// `PUT /api/v2/event_subscription` `{"url"}`: 200 `{"url", "secret"}`; the secret is shown
/// only here.
pub async fn put_subscription(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Body(body): Body,
) -> AppResult {
    #[derive(Default, Deserialize)]
    struct In {
        url: Option<String>,
    }
    let req: In = parse_json(&body)?;
    let url = req
        .url
        .ok_or_else(|| ApiError::bad_request("BAD_BODY_ERR", "url: required"))?;
    let destination =
        keyward_runtime::egress::check_url(&url, state.config.webhooks.allow_private_addresses)
            .await;
    let (record, secret) = state
        .keys
        .put_subscription(&authed.caller, &url, destination)
        .await?;
    let body = EventSubscription {
        url: record.url,
        secret: Some(b64(secret.expose())),
    };
    Ok(json_response(StatusCode::OK, "application/json", &body))
}

/// `GET /api/v2/event_subscription`: `{"url"}`.
pub async fn get_subscription(State(state): State<Arc<AppState>>, authed: Authed) -> AppResult {
    let record = state.keys.subscription(&authed.caller).await?;
    let body = EventSubscription {
        url: record.url,
        secret: None,
    };
    Ok(json_response(StatusCode::OK, "application/json", &body))
}

/// `DELETE /api/v2/event_subscription`: 204.
pub async fn delete_subscription(State(state): State<Arc<AppState>>, authed: Authed) -> AppResult {
    state.keys.delete_subscription(&authed.caller).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v2/event_ack`: Key Protect's body (a collection of one `eventId`,
/// `adopterKeyState`, `timestamp`, `keyStateData.rewrappedKeyVersion`); 204.
pub async fn event_ack(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Body(body): Body,
) -> AppResult {
    #[derive(Default, Deserialize)]
    struct In {
        #[serde(default)]
        metadata: Option<keyward_api::CollectionMetadata>,
        #[serde(default)]
        resources: Vec<EventAck>,
    }
    let parsed: In = parse_json(&body)?;
    if let Some(m) = &parsed.metadata
        && m.collection_type != EVENT_ACKNOWLEDGE
    {
        return Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            format!("metadata.collectionType: must be {EVENT_ACKNOWLEDGE}"),
        ));
    }
    let [ack]: [EventAck; 1] = parsed.resources.try_into().map_err(|_| {
        ApiError::bad_request(
            "NUM_COLLECTION_RESOURCE_ERR",
            "resources: exactly one acknowledgement per request",
        )
    })?;
    crate::views::parse_date("timestamp", &ack.timestamp)?;
    let rewrapped = ack.rewrapped_key_version().map(str::to_owned);
    state
        .keys
        .ack_event(
            &authed.caller,
            &ack.event_id,
            adopter_state_in(ack.adopter_key_state),
            rewrapped,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
