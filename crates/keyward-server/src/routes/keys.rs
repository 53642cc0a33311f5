//! `/api/v2/keys`: Key Protect's keys and key actions.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_api::{
    ActionError, Collection, ImportTokenRequest, ImportTokenView, KeyAction, KeyAlias, KeyCreate,
    KeyVersionRef, RewrapResponse, RotateRequest, RotationPolicyIn, SearchQuery, SecretText,
    UnwrapRequest, UnwrapResponse, WrapRequest, WrapResponse, headers, media,
};
use keyward_core::{
    ImportTokenRecord, KeyError, KeyFilter, KeyId, KeyKind, KeyRecord, KeyVersionId, Material,
    NewKey, Page, PolicyOverrides, ROTATION_MONTHS, SecureImport,
};
use serde::Deserialize;

use keyward_crypto::Oaep;

use super::search;
use crate::error::ApiError;
use crate::extract::{Authed, Body, KpJson, parse_json};
use crate::state::AppState;
use crate::views::{
    b64, bytes_from_b64, date, key_view, parse_date, secret_from_b64, version_view,
};

/// A handler's result.
pub type AppResult = Result<Response, ApiError>;

const MAX_LIMIT: u32 = 5000;
const DEFAULT_LIMIT: u32 = 200;

/// A JSON body with Key Protect's media type.
pub fn json_response<T: serde::Serialize>(
    status: StatusCode,
    media_type: &'static str,
    body: &T,
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (status, bytes).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    resp
}

/// As [`json_response`], for a body carrying key material (a DEK): serialized into a buffer
/// sized up front (no reallocation leaves a copy behind) that is zeroized when the response
/// body is dropped after it was written. hyper may still copy it into its own write buffer
/// (over TLS it does), which is not zeroized: see SECURITY.md.
pub fn secret_json_response<T: serde::Serialize>(
    status: StatusCode,
    media_type: &'static str,
    body: &T,
) -> Response {
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(SECRET_BODY_CAPACITY));
    if serde_json::to_writer(&mut *buf, body).is_err() {
        buf.clear();
    }
    let mut resp = (status, axum::body::Bytes::from_owner(buf)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    resp
}

/// Room for a wrap or unwrap answer with the largest DEK (4 096 bytes, base64) and its
/// ciphertext, so serializing never grows (and reallocates) the buffer.
const SECRET_BODY_CAPACITY: usize = 4 * keyward_core::MAX_DEK_BYTES + 2_048;

/// The key a path names: its id, CRN or alias. Unknown and malformed references look the same
/// (404).
pub async fn resolve(state: &AppState, authed: &Authed, raw: &str) -> Result<KeyId, ApiError> {
    Ok(state.keys.resolve(&authed.caller, raw).await?)
}

fn wants_representation(headers: &HeaderMap) -> bool {
    headers
        .get(headers::PREFER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.replace(' ', "").contains("return=representation"))
}

/// Keys in Key Protect's collection body.
pub fn keys_body(
    state: &AppState,
    authed: &Authed,
    keys: &[KeyRecord],
) -> Collection<keyward_api::Key> {
    let views = keys
        .iter()
        .map(|k| key_view(state.view_ctx(&authed.account), k, None))
        .collect();
    Collection::new(media::KEY, views)
}

/// One key in Key Protect's collection body.
pub fn key_response(
    state: &AppState,
    authed: &Authed,
    status: StatusCode,
    key: &KeyRecord,
) -> Response {
    json_response(
        status,
        media::KEY,
        &keys_body(state, authed, std::slice::from_ref(key)),
    )
}

/// `POST /api/v2/keys`: the instance's policies apply to the new key.
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    headers: HeaderMap,
    KpJson(body): KpJson<CreateBody>,
) -> AppResult {
    create(&state, &authed, &headers, body, false).await
}

/// `POST /api/v2/keys_with_policy_overrides`: the body's policies replace the instance's.
pub async fn create_key_with_overrides(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    headers: HeaderMap,
    KpJson(body): KpJson<CreateBody>,
) -> AppResult {
    create(&state, &authed, &headers, body, true).await
}

async fn create(
    state: &AppState,
    authed: &Authed,
    headers: &HeaderMap,
    body: CreateBody,
    overrides_allowed: bool,
) -> AppResult {
    let mut resources = body.resources.into_iter();
    let (Some(spec), None) = (resources.next(), resources.next()) else {
        return Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            "resources: exactly one key is created per request",
        ));
    };
    let mut overrides = PolicyOverrides::default();
    if spec.rotation.is_some() || spec.dual_auth_delete.is_some() {
        if !overrides_allowed {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                "rotation, dualAuthDelete: set policies at creation with \
                 POST /api/v2/keys_with_policy_overrides",
            ));
        }
        overrides.rotation = spec.rotation.as_ref().map(rotation_in).transpose()?;
        overrides.dual_auth_delete = spec.dual_auth_delete.as_ref().map(|d| d.enabled);
    }
    let kind = if spec.extractable.unwrap_or(false) {
        KeyKind::Standard
    } else {
        KeyKind::Root
    };
    let payload = material(
        spec.payload.as_ref().map(SecretText::expose),
        spec.encrypted_nonce.as_deref(),
        spec.iv.as_deref(),
        spec.encryption_algorithm.as_deref(),
    )?;
    let expiration = spec
        .expiration_date
        .as_deref()
        .map(|d| parse_date("expirationDate", d))
        .transpose()?;
    let key_ring = spec.key_ring_id.clone().or_else(|| {
        headers
            .get(headers::KEY_RING)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    });
    let key = state
        .keys
        .create_key(
            &authed.caller,
            NewKey {
                kind,
                name: spec.name,
                description: spec.description,
                payload,
                expiration,
                key_ring,
                overrides,
                aliases: spec.aliases.unwrap_or_default(),
            },
        )
        .await?;
    Ok(key_response(state, authed, StatusCode::CREATED, &key))
}

/// Key material from a create or rotate body: plain base64, or, with `encryptedNonce`, encrypted
/// to the instance's import token.
fn material(
    payload: Option<&str>,
    encrypted_nonce: Option<&str>,
    iv: Option<&str>,
    algorithm: Option<&str>,
) -> Result<Option<Material>, ApiError> {
    let Some(payload) = payload else {
        if encrypted_nonce.is_some() || iv.is_some() {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                "payload: required with encryptedNonce and iv",
            ));
        }
        return Ok(None);
    };
    let Some(encrypted_nonce) = encrypted_nonce else {
        if iv.is_some() || algorithm.is_some() {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                "encryptedNonce: required with iv and encryptionAlgorithm",
            ));
        }
        return Ok(Some(Material::Plain(secret_from_b64("payload", payload)?)));
    };
    let oaep = match algorithm.unwrap_or("RSAES_OAEP_SHA_256") {
        "RSAES_OAEP_SHA_256" => Oaep::Sha256,
        "RSAES_OAEP_SHA_1" => Oaep::Sha1,
        _ => {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                "encryptionAlgorithm: RSAES_OAEP_SHA_256 or RSAES_OAEP_SHA_1",
            ));
        }
    };
    let iv = iv
        .ok_or_else(|| ApiError::bad_request("BAD_BODY_ERR", "iv: required with encryptedNonce"))?;
    Ok(Some(Material::Secure(SecureImport {
        encrypted_material: bytes_from_b64("payload", payload)?,
        encrypted_nonce: bytes_from_b64("encryptedNonce", encrypted_nonce)?,
        iv: bytes_from_b64("iv", iv)?,
        oaep,
    })))
}

/// `POST /api/v2/import_token`: 200 with the token's terms.
pub async fn create_import_token(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    KpJson(body): KpJson<ImportTokenRequest>,
) -> AppResult {
    let whole = |field: &str, v: Option<f64>| -> Result<Option<u32>, ApiError> {
        v.map(|f| {
            (f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f))
                .then_some(f as u32)
                .ok_or_else(|| {
                    ApiError::bad_request("BAD_BODY_ERR", format!("{field}: a whole number"))
                })
        })
        .transpose()
    };
    let token = state
        .keys
        .create_import_token(
            &authed.caller,
            whole("expiration", body.expiration)?,
            whole("maxAllowedRetrievals", body.max_allowed_retrievals)?,
        )
        .await?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &import_token_view(&token, false),
    ))
}

/// `GET /api/v2/import_token`: the transit public key and nonce; counts a retrieval.
pub async fn get_import_token(State(state): State<Arc<AppState>>, authed: Authed) -> AppResult {
    let token = state.keys.get_import_token(&authed.caller).await?;
    Ok(json_response(
        StatusCode::OK,
        "application/json",
        &import_token_view(&token, true),
    ))
}

fn import_token_view(t: &ImportTokenRecord, with_key: bool) -> ImportTokenView {
    let secs = (t.expires_at - t.created_at).whole_seconds();
    ImportTokenView {
        expiration: u32::try_from(secs).unwrap_or(0),
        max_allowed_retrievals: t.max_retrievals,
        creation_date: date(t.created_at),
        expiration_date: date(t.expires_at),
        remaining_retrievals: t.remaining,
        payload: with_key.then(|| b64(keyward_crypto::public_key_pem(&t.public_key).as_bytes())),
        nonce: with_key.then(|| b64(&t.nonce)),
    }
}

/// A rotation policy from the wire: `enabled` defaults to true (older clients omit it), the
/// interval must be 1 to 12 months.
pub fn rotation_in(r: &RotationPolicyIn) -> Result<(bool, u8), ApiError> {
    let months = r
        .interval_month
        .and_then(|m| u8::try_from(m).ok())
        .filter(|m| ROTATION_MONTHS.contains(m));
    match (r.enabled.unwrap_or(true), months) {
        (enabled, Some(m)) => Ok((enabled, m)),
        (false, None) if r.interval_month.is_none() => Ok((false, 1)),
        _ => Err(ApiError::bad_request(
            "INVALID_FIELD_ERR",
            "rotation.interval_month: an integer from 1 to 12",
        )),
    }
}

/// The create body: a collection with one key resource.
#[derive(Debug, Default, Deserialize)]
pub struct CreateBody {
    #[serde(default)]
    resources: Vec<KeyCreate>,
}

/// Query of `GET /api/v2/keys`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    limit: Option<String>,
    offset: Option<String>,
    state: Option<String>,
    extractable: Option<String>,
    total_count: Option<String>,
    force: Option<String>,
    /// `DELETE` only: an operator's override of `preventKeyDeletion` (with `force=true`).
    prevent_key_deletion_override: Option<String>,
    search: Option<String>,
    sort: Option<String>,
    filter: Option<String>,
}

/// A bounded integer query parameter.
pub fn parse_u32(field: &str, v: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse::<u32>().ok().filter(|n| *n <= max).ok_or_else(|| {
            ApiError::bad_request(
                "INVALID_QUERY_PARAM_ERR",
                format!("{field}: an integer from 0 to {max}"),
            )
        }),
    }
}

/// A boolean query parameter.
pub fn parse_bool(field: &str, v: Option<&str>) -> Result<Option<bool>, ApiError> {
    match v {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            format!("{field}: true or false"),
        )),
    }
}

fn filter_from(q: &ListQuery, authed: &Authed) -> Result<KeyFilter, ApiError> {
    let limit = parse_u32("limit", q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = parse_u32("offset", q.offset.as_deref(), 0, u32::MAX)?;
    let mut states = match &q.state {
        Some(s) => search::parse_states("state", s)?,
        None => Vec::new(),
    };
    let mut extractable = parse_bool("extractable", q.extractable.as_deref())?;
    let parsed = q
        .filter
        .as_deref()
        .map(search::parse_filter)
        .transpose()?
        .unwrap_or_default();
    if let Some(s) = parsed.states {
        if q.state.is_some() {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAM_ERR",
                "state: given both as a parameter and in filter",
            ));
        }
        states = s;
    }
    if let Some(e) = parsed.extractable {
        if extractable.is_some() {
            return Err(ApiError::bad_request(
                "INVALID_QUERY_PARAM_ERR",
                "extractable: given both as a parameter and in filter",
            ));
        }
        extractable = Some(e);
    }
    Ok(KeyFilter {
        limit,
        offset,
        states,
        extractable,
        key_ring: authed.caller.key_ring().map(str::to_owned),
        search: q.search.as_deref().map(search::parse_search).transpose()?,
        dates: parsed.dates,
        sort: q
            .sort
            .as_deref()
            .map(search::parse_sort)
            .transpose()?
            .unwrap_or_default(),
    })
}

/// `GET /api/v2/keys`.
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<ListQuery>,
) -> AppResult {
    let filter = filter_from(&q, &authed)?;
    let (keys, total) = state.keys.list_keys(&authed.caller, &filter).await?;
    let mut body = keys_body(&state, &authed, &keys);
    body.metadata.search_query = filter.search.map(|s| SearchQuery {
        query: s.query,
        scopes: [(s.in_name, "name"), (s.in_alias, "alias")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, scope)| scope.to_owned())
            .collect(),
        not: s.not,
        exact: s.exact,
    });
    if parse_bool("totalCount", q.total_count.as_deref())?.unwrap_or(false) {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, media::KEY, &body))
}

/// `HEAD /api/v2/keys`: the total in `X-Kms-Key-Total`.
pub async fn head_keys(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<ListQuery>,
) -> AppResult {
    let mut filter = filter_from(&q, &authed)?;
    filter.limit = 0;
    let (_, total) = state.keys.list_keys(&authed.caller, &filter).await?;
    let mut resp = StatusCode::OK.into_response();
    resp.headers_mut()
        .insert(headers::KEY_TOTAL, HeaderValue::from(total));
    resp.headers_mut()
        .insert(headers::KEY_TOTAL_DOCUMENTED, HeaderValue::from(total));
    Ok(resp)
}

/// `GET /api/v2/keys/{id}`: metadata, and the payload of a standard key.
pub async fn get_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
) -> AppResult {
    let (key, payload) = state
        .keys
        .get_key(&authed.caller, resolve(&state, &authed, &id).await?)
        .await?;
    let view = key_view(state.view_ctx(&authed.account), &key, payload.as_ref());
    // A standard key's answer carries its material.
    Ok(secret_json_response(
        StatusCode::OK,
        media::KEY,
        &Collection::new(media::KEY, vec![view]),
    ))
}

/// `GET /api/v2/keys/{id}/metadata`.
pub async fn get_key_metadata(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
) -> AppResult {
    let key = state
        .keys
        .key_metadata(&authed.caller, resolve(&state, &authed, &id).await?)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        media::KEY,
        &keys_body(&state, &authed, &[key]),
    ))
}

/// `GET /api/v2/keys/{id}/versions`: newest first.
pub async fn key_versions(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> AppResult {
    let page = Page {
        limit: parse_u32("limit", q.limit.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?,
        offset: parse_u32("offset", q.offset.as_deref(), 0, u32::MAX)?,
    };
    let (_, versions, total) = state
        .keys
        .key_versions(&authed.caller, resolve(&state, &authed, &id).await?, page)
        .await?;
    let views: Vec<KeyVersionRef> = versions.iter().map(version_view).collect();
    let mut body = Collection::new(media::KEY_VERSION, views);
    if parse_bool("totalCount", q.total_count.as_deref())?.unwrap_or(false) {
        body.metadata.total_count = Some(total);
    }
    Ok(json_response(StatusCode::OK, media::KEY_VERSION, &body))
}

/// `DELETE /api/v2/keys/{id}`: 204, or 200 with the key for `Prefer: return=representation`.
/// With registrations on the key, `force=true` is required (`PROTECTED_RESOURCE_ERR`), and a
/// `preventKeyDeletion` registration refuses even that (`PREV_KEY_DEL_ERR`), unless a caller
/// holding KeyPurge on the key or Administrator adds `preventKeyDeletionOverride=true` (Keyward's
/// operator override, audited: issue 18, item 7).
pub async fn delete_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> AppResult {
    let deletion = keyward_core::Deletion {
        force: parse_bool("force", q.force.as_deref())?.unwrap_or(false),
        override_prevention: parse_bool(
            "preventKeyDeletionOverride",
            q.prevent_key_deletion_override.as_deref(),
        )?
        .unwrap_or(false),
    };
    let id = resolve(&state, &authed, &id).await?;
    let key = state
        .keys
        .delete_forced(&authed.caller, id, deletion)
        .await?;
    Ok(representation(
        &state,
        &authed,
        &headers,
        StatusCode::OK,
        &key,
    ))
}

/// 204, or `status` with the key when the caller prefers the representation.
fn representation(
    state: &AppState,
    authed: &Authed,
    headers: &HeaderMap,
    status: StatusCode,
    key: &KeyRecord,
) -> Response {
    if wants_representation(headers) {
        key_response(state, authed, status, key)
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// `POST /api/v2/keys/{id}/restore`: 201 with the key. An imported key sends its material.
pub async fn restore_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Body(body): Body,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    let req: Option<RestoreBody> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json(&body)?
    };
    let payload = req
        .and_then(|r| r.resources.into_iter().next())
        .and_then(|mut r| r.payload.take())
        .map(|p| secret_from_b64("payload", p.expose()))
        .transpose()?;
    let key = state.keys.restore(&authed.caller, id, payload).await?;
    Ok(key_response(&state, &authed, StatusCode::CREATED, &key))
}

/// Restore body (imported keys): a collection with the material.
#[derive(Debug, Default, Deserialize)]
pub struct RestoreBody {
    #[serde(default)]
    resources: Vec<RotateRequest>,
}

/// `DELETE /api/v2/keys/{id}/purge`: 200 with the last view of the key, whose material is then
/// gone for good.
pub async fn purge_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    let key = state.keys.purge(&authed.caller, id).await?;
    if headers
        .get(headers::PREFER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.replace(' ', "").contains("return=minimal"))
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(key_response(&state, &authed, StatusCode::OK, &key))
}

/// `PATCH /api/v2/keys/{id}`: moves the key to another key ring (`keyRingID`, any case: the Go
/// client sends `KeyRingID`).
pub async fn patch_key(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Body(body): Body,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    let value: Option<serde_json::Value> = parse_json(&body)?;
    let fields = value.as_ref().and_then(|v| v.as_object()).ok_or_else(|| {
        ApiError::bad_request("BAD_BODY_ERR", "a JSON object with keyRingID is required")
    })?;
    // Accept the bare object and the one-resource collection.
    let fields = match fields.get("resources").and_then(|r| r.as_array()) {
        Some(r) => r
            .first()
            .and_then(|f| f.as_object())
            .ok_or_else(|| ApiError::bad_request("BAD_BODY_ERR", "resources: one key patch"))?,
        None => fields,
    };
    let mut ring = None;
    for (name, v) in fields {
        if name.eq_ignore_ascii_case("keyRingID") {
            ring = v.as_str();
        } else if name != "type" {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                format!("{name}: only keyRingID can be changed"),
            ));
        }
    }
    let ring = ring.ok_or_else(|| ApiError::bad_request("BAD_BODY_ERR", "keyRingID: required"))?;
    let key = state.keys.move_key(&authed.caller, id, ring).await?;
    Ok(key_response(&state, &authed, StatusCode::OK, &key))
}

/// `POST /api/v2/keys/{id}/aliases/{alias}`: 201 with the alias.
pub async fn create_alias(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((id, alias)): Path<(String, String)>,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    let a = state.keys.create_alias(&authed.caller, id, &alias).await?;
    let view = KeyAlias {
        key_id: a.key_id.to_string(),
        alias: a.alias,
        creation_date: date(a.created_at),
        created_by: a.created_by,
    };
    Ok(json_response(
        StatusCode::CREATED,
        media::KEY,
        &Collection::new(media::KEY, vec![view]),
    ))
}

/// `DELETE /api/v2/keys/{id}/aliases/{alias}`: 204.
pub async fn delete_alias(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((id, alias)): Path<(String, String)>,
) -> AppResult {
    let id = resolve(&state, &authed, &id).await?;
    state.keys.delete_alias(&authed.caller, id, &alias).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v2/keys/{id}/actions/{action}`.
pub async fn key_action(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path((id, action)): Path<(String, String)>,
    Body(body): Body,
) -> AppResult {
    let action = KeyAction::parse(Some(&action)).map_err(action_error)?;
    dispatch_action(&state, &authed, &id, action, &body).await
}

/// Query of the older `POST /api/v2/keys/{id}?action=wrap` form.
#[derive(Debug, Deserialize)]
pub struct ActionQuery {
    action: Option<String>,
}

/// `POST /api/v2/keys/{id}?action=...` (the form `action_on_key` uses).
pub async fn key_action_query(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<ActionQuery>,
    Body(body): Body,
) -> AppResult {
    let action = KeyAction::parse(q.action.as_deref()).map_err(action_error)?;
    dispatch_action(&state, &authed, &id, action, &body).await
}

/// Key Protect's refusal of a missing or unknown action (400, before the key is looked up).
fn action_error(e: ActionError) -> ApiError {
    ApiError::bad_request(ActionError::CODE, e.message())
}

/// One handler per action. Actions with a body decode it before the key is resolved.
async fn dispatch_action(
    state: &AppState,
    authed: &Authed,
    id: &str,
    action: KeyAction,
    body: &[u8],
) -> AppResult {
    let (keys, caller) = (&state.keys, &authed.caller);
    match action {
        KeyAction::Wrap => wrap(state, authed, id, body).await,
        KeyAction::Unwrap => unwrap(state, authed, id, body).await,
        KeyAction::Rewrap => rewrap(state, authed, id, body).await,
        KeyAction::Rotate => rotate(state, authed, id, body).await,
        KeyAction::Disable => {
            let id = resolve(state, authed, id).await?;
            no_content(keys.disable(caller, id)).await
        }
        KeyAction::Enable => {
            let id = resolve(state, authed, id).await?;
            no_content(keys.enable(caller, id)).await
        }
        KeyAction::SetKeyForDeletion => {
            let id = resolve(state, authed, id).await?;
            no_content(keys.set_key_for_deletion(caller, id)).await
        }
        KeyAction::UnsetKeyForDeletion => {
            let id = resolve(state, authed, id).await?;
            no_content(keys.unset_key_for_deletion(caller, id)).await
        }
        KeyAction::Sync => {
            let id = resolve(state, authed, id).await?;
            no_content(keys.sync(caller, id)).await
        }
    }
}

/// 204 once `action` succeeded; its result is not part of the answer.
async fn no_content<T>(action: impl Future<Output = Result<T, KeyError>>) -> AppResult {
    action.await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn version_ref(v: KeyVersionId) -> KeyVersionRef {
    KeyVersionRef {
        id: v.to_string(),
        creation_date: None,
    }
}

async fn wrap(state: &AppState, authed: &Authed, id: &str, body: &[u8]) -> AppResult {
    let req: WrapRequest = parse_json(body)?;
    let plaintext = req
        .plaintext
        .as_ref()
        .map(|p| secret_from_b64("plaintext", p.expose()))
        .transpose()?;
    let aad = req.aad.unwrap_or_default();
    let out = state
        .keys
        .wrap(
            &authed.caller,
            resolve(state, authed, id).await?,
            plaintext,
            &aad,
        )
        .await?;
    let body = WrapResponse {
        plaintext: out
            .generated
            .as_ref()
            .map(|d| SecretText::new(b64(d.expose()))),
        ciphertext: b64(&out.ciphertext),
        key_version: version_ref(out.version),
    };
    Ok(secret_json_response(
        StatusCode::OK,
        media::KEY_ACTION,
        &body,
    ))
}

async fn unwrap(state: &AppState, authed: &Authed, id: &str, body: &[u8]) -> AppResult {
    let req: UnwrapRequest = parse_json(body)?;
    let ct = required_ciphertext(&req)?;
    let out = state
        .keys
        .unwrap(
            &authed.caller,
            resolve(state, authed, id).await?,
            &ct,
            &req.aad.unwrap_or_default(),
        )
        .await?;
    let (ciphertext, rewrapped_key_version) = match out.rewrapped {
        Some((ct, v)) => (Some(b64(&ct)), Some(version_ref(v))),
        None => (None, None),
    };
    let body = UnwrapResponse {
        plaintext: SecretText::new(b64(out.plaintext.expose())),
        key_version: version_ref(out.version),
        ciphertext,
        rewrapped_key_version,
    };
    Ok(secret_json_response(
        StatusCode::OK,
        media::KEY_ACTION,
        &body,
    ))
}

async fn rewrap(state: &AppState, authed: &Authed, id: &str, body: &[u8]) -> AppResult {
    let req: UnwrapRequest = parse_json(body)?;
    let ct = required_ciphertext(&req)?;
    let out = state
        .keys
        .rewrap(
            &authed.caller,
            resolve(state, authed, id).await?,
            &ct,
            &req.aad.unwrap_or_default(),
        )
        .await?;
    // Key Protect: keyVersion is the version of the ciphertext sent in;
    // rewrappedKeyVersion the version that sealed the new one.
    let body = RewrapResponse {
        ciphertext: b64(&out.ciphertext),
        key_version: version_ref(out.from),
        rewrapped_key_version: version_ref(out.to),
    };
    Ok(json_response(StatusCode::OK, media::KEY_ACTION, &body))
}

async fn rotate(state: &AppState, authed: &Authed, id: &str, body: &[u8]) -> AppResult {
    let req: RotateRequest = parse_json(body)?;
    let payload = material(
        req.payload.as_ref().map(SecretText::expose),
        req.encrypted_nonce.as_deref(),
        req.iv.as_deref(),
        req.encryption_algorithm.as_deref(),
    )?;
    state
        .keys
        .rotate(&authed.caller, resolve(state, authed, id).await?, payload)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn required_ciphertext(req: &UnwrapRequest) -> Result<Vec<u8>, ApiError> {
    if req.ciphertext.is_empty() {
        return Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            "ciphertext: required",
        ));
    }
    bytes_from_b64("ciphertext", &req.ciphertext)
}
