//! `/iam/v1`: Keyward's management API for identities, API keys, access policies,
//! service-to-service authorizations and instances. Field names follow IBM Cloud IAM's where it
//! has them (`iam_id`, `account_id`, `apikey`, `locked`, `created_at`). Documented in
//! `openapi/iam-v1.json`, served at `/iam/v1/openapi.json`.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward_api::iam::{
    AccessPolicy, AccessPolicyList, ApiKeyInfo, ApiKeyList, Authorization, AuthorizationList,
    AuthorizationSource, CreatedApiKey, Identity, IdentityList, InstanceInfo, InstanceList,
    NewAccessPolicy, NewApiKey, NewAuthorization, NewInstance, Resource,
};
use keyward_core::op;
use keyward_core::{
    AccessPolicyRecord, ApiKeyRecord, AuthorizationRecord, IdentityKind, IdentityRecord,
    InstanceId, InstanceRecord, KeyId, Role, Scope,
};
use keyward_iam::{NewIdentity, Principal};
use serde::Serialize;
use time::OffsetDateTime;

use super::keys::json_response;
use crate::error::ApiError;
use crate::extract::{KpJson, client_address, request_id};
use crate::state::AppState;
use crate::views::date;

/// The OpenAPI description of this API.
pub const OPENAPI: &str = include_str!("../../openapi/iam-v1.json");

type IamResult = Result<Response, ApiError>;

/// An authenticated caller of the management API.
pub struct Admin(pub Principal);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        // Refused tokens are counted against their source, as on the KMS API.
        let refused = |e: ApiError| match e.status() {
            StatusCode::UNAUTHORIZED => crate::extract::unauthenticated(parts, state, e),
            _ => e,
        };
        let claims = crate::extract::verified_claims(parts, state).map_err(refused)?;
        let resolved = state
            .iam
            .resolve(&claims)
            .await
            .map_err(|e| refused(e.into()))?;
        state.iam.throttle(&resolved.identity.iam_id)?;
        Ok(Admin(state.iam.principal(
            &resolved,
            request_id(parts),
            client_address(parts),
        )))
    }
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    json_response(status, "application/json", body)
}

fn list<T: Serialize>(body: T) -> Response {
    json(StatusCode::OK, &body)
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn created<T: Serialize>(body: &T) -> Response {
    json(StatusCode::CREATED, body)
}

fn identity_view(i: &IdentityRecord) -> Identity {
    Identity {
        iam_id: i.iam_id.clone(),
        account_id: i.account.clone(),
        kind: i.kind.name().to_owned(),
        name: i.name.clone(),
        description: i.description.clone(),
        service_name: i.service_name.clone(),
        service_instance: i.service_instance.clone(),
        locked: i.locked,
        created_at: date(i.created_at),
        created_by: i.created_by.clone(),
    }
}

fn api_key_view(k: &ApiKeyRecord) -> ApiKeyInfo {
    ApiKeyInfo {
        id: k.id.clone(),
        name: k.name.clone(),
        iam_id: k.subject.clone(),
        account_id: k.account.clone(),
        locked: k.locked,
        created_at: date(k.created_at),
    }
}

fn scope_view(s: &Scope) -> Resource {
    match s {
        Scope::Account(a) => Resource {
            account_id: Some(a.clone()),
            ..Resource::default()
        },
        Scope::Instance(i) => Resource::instance(&i.to_string()),
        Scope::KeyRing(i, r) => Resource::key_ring(&i.to_string(), r),
        Scope::Key(i, k) => Resource::key(&i.to_string(), &k.to_string()),
    }
}

fn roles_view(roles: &[Role]) -> Vec<String> {
    roles.iter().map(|r| r.name().to_owned()).collect()
}

fn policy_view(p: &AccessPolicyRecord) -> AccessPolicy {
    AccessPolicy {
        id: p.id.clone(),
        account_id: p.account.clone(),
        subject: p.subject.clone(),
        roles: roles_view(&p.roles),
        resource: scope_view(&p.scope),
        created_at: date(p.created_at),
        created_by: p.created_by.clone(),
    }
}

fn authorization_view(a: &AuthorizationRecord) -> Authorization {
    Authorization {
        id: a.id.clone(),
        account_id: a.account.clone(),
        source: AuthorizationSource {
            service_name: a.source_service.clone(),
            service_instance: a.source_instance.clone(),
        },
        target: scope_view(&a.target),
        roles: roles_view(&a.roles),
        delegation: a.delegation,
        dependents: a.dependents.clone(),
        delegated_from: a.delegated_from.clone(),
        created_at: date(a.created_at),
        created_by: a.created_by.clone(),
    }
}

fn instance_view(i: &InstanceRecord) -> InstanceInfo {
    InstanceInfo {
        id: i.id.to_string(),
        account_id: i.account.clone(),
        name: i.name.clone(),
        created_at: date(i.created_at),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request("INVALID_FIELD_ERR", msg)
}

fn scope_from(account: &str, r: &Resource) -> Result<Scope, ApiError> {
    if r.account_id.as_deref().is_some_and(|a| a != account) {
        return Err(bad("resource.account_id: the caller's account only"));
    }
    let Some(instance) = &r.instance_id else {
        if r.key_ring.is_some() || r.key_id.is_some() {
            return Err(bad("resource: key_ring and key_id need instance_id"));
        }
        return Ok(Scope::Account(account.to_owned()));
    };
    let instance: InstanceId = instance
        .parse()
        .map_err(|_| bad("resource.instance_id: an instance id"))?;
    match (&r.key_ring, &r.key_id) {
        (None, None) => Ok(Scope::Instance(instance)),
        (Some(ring), None) => Ok(Scope::KeyRing(instance, ring.clone())),
        (None, Some(key)) => Ok(Scope::Key(
            instance,
            key.parse::<KeyId>()
                .map_err(|_| bad("resource.key_id: a key id"))?,
        )),
        (Some(_), Some(_)) => Err(bad("resource: key_ring or key_id, not both")),
    }
}

fn roles_from(names: &[String]) -> Result<Vec<Role>, ApiError> {
    names
        .iter()
        .map(|n| {
            Role::from_name(n).ok_or_else(|| {
                bad(
                    "roles: Reader, ReaderPlus, Writer, Manager, KeyPurge, KmipAdapterManager, \
                     Administrator",
                )
            })
        })
        .collect()
}

// ---- identities ----

/// `POST /iam/v1/identities`: a user, service ID or service instance.
pub async fn create_identity(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    KpJson(body): KpJson<keyward_api::iam::NewIdentity>,
) -> IamResult {
    state.iam.check_admin(&who, &op::CREATE_IDENTITY).await?;
    let kind = IdentityKind::from_name(&body.kind)
        .ok_or_else(|| bad("kind: user, service_id or service"))?;
    let rec = state
        .iam
        .create_identity(
            &who,
            NewIdentity {
                kind,
                name: body.name,
                description: body.description,
                service_name: body.service_name,
                service_instance: body.service_instance,
            },
        )
        .await?;
    Ok(created(&identity_view(&rec)))
}

/// `GET /iam/v1/identities`.
pub async fn identities(State(state): State<Arc<AppState>>, Admin(who): Admin) -> IamResult {
    let all = state.iam.identities(&who).await?;
    Ok(list(IdentityList::from(
        all.iter().map(identity_view).collect::<Vec<_>>(),
    )))
}

/// `DELETE /iam/v1/identities/{iam_id}`.
pub async fn delete_identity(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(iam_id): Path<String>,
) -> IamResult {
    state.iam.delete_identity(&who, &iam_id).await?;
    Ok(no_content())
}

/// `POST /iam/v1/identities/{iam_id}/lock`.
pub async fn lock_identity(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(iam_id): Path<String>,
) -> IamResult {
    state.iam.lock_identity(&who, &iam_id, true).await?;
    Ok(no_content())
}

/// `DELETE /iam/v1/identities/{iam_id}/lock`.
pub async fn unlock_identity(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(iam_id): Path<String>,
) -> IamResult {
    state.iam.lock_identity(&who, &iam_id, false).await?;
    Ok(no_content())
}

// ---- API keys ----

/// `POST /iam/v1/apikeys`: the response holds `apikey`, shown this once.
pub async fn create_api_key(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    KpJson(body): KpJson<NewApiKey>,
) -> IamResult {
    state.iam.check_admin(&who, &op::CREATE_API_KEY).await?;
    let created_key = state
        .iam
        .create_api_key(&who, &body.iam_id, &body.name)
        .await?;
    let apikey = String::from_utf8(created_key.secret.expose().to_vec())
        .map_err(|_| ApiError::Internal("API key is not UTF-8".into()))?;
    let view = CreatedApiKey {
        info: api_key_view(&created_key.record),
        apikey,
    };
    Ok(created(&view))
}

/// `GET /iam/v1/apikeys`: never the secrets.
pub async fn api_keys(State(state): State<Arc<AppState>>, Admin(who): Admin) -> IamResult {
    let all = state.iam.api_keys(&who).await?;
    Ok(list(ApiKeyList::from(
        all.iter().map(api_key_view).collect::<Vec<_>>(),
    )))
}

/// `DELETE /iam/v1/apikeys/{id}`: its tokens stop working within the access cache TTL.
pub async fn delete_api_key(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> IamResult {
    state.iam.delete_api_key(&who, &id).await?;
    Ok(no_content())
}

/// `POST /iam/v1/apikeys/{id}/lock`.
pub async fn lock_api_key(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> IamResult {
    state.iam.lock_api_key(&who, &id, true).await?;
    Ok(no_content())
}

/// `DELETE /iam/v1/apikeys/{id}/lock`.
pub async fn unlock_api_key(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> IamResult {
    state.iam.lock_api_key(&who, &id, false).await?;
    Ok(no_content())
}

// ---- access policies ----

/// `POST /iam/v1/policies`.
pub async fn create_policy(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    KpJson(body): KpJson<NewAccessPolicy>,
) -> IamResult {
    state.iam.check_admin(&who, &op::CREATE_POLICY).await?;
    let scope = scope_from(&who.identity.account, &body.resource)?;
    let roles = roles_from(&body.roles)?;
    let p = state
        .iam
        .create_policy(&who, &body.subject, roles, scope)
        .await?;
    Ok(created(&policy_view(&p)))
}

/// `GET /iam/v1/policies`.
pub async fn policies(State(state): State<Arc<AppState>>, Admin(who): Admin) -> IamResult {
    let all = state.iam.policies(&who).await?;
    Ok(list(AccessPolicyList::from(
        all.iter().map(policy_view).collect::<Vec<_>>(),
    )))
}

/// `DELETE /iam/v1/policies/{id}`.
pub async fn delete_policy(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> IamResult {
    state.iam.delete_policy(&who, &id).await?;
    Ok(no_content())
}

// ---- authorizations ----

/// `POST /iam/v1/authorizations`.
pub async fn create_authorization(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    KpJson(body): KpJson<NewAuthorization>,
) -> IamResult {
    // Services may delegate; anyone else must be an administrator, checked before the body.
    if who.identity.kind != IdentityKind::Service {
        state
            .iam
            .check_admin(&who, &op::CREATE_AUTHORIZATION)
            .await?;
    }
    if body.target.instance_id.is_none() {
        return Err(bad("target.instance_id: required"));
    }
    let target = scope_from(&who.identity.account, &body.target)?;
    let spec = AuthorizationRecord {
        id: String::new(),
        account: String::new(),
        source_service: body.source.service_name,
        source_instance: body.source.service_instance,
        target,
        roles: roles_from(&body.roles)?,
        delegation: body.delegation,
        dependents: body.dependents,
        delegated_from: None,
        created_at: OffsetDateTime::UNIX_EPOCH,
        created_by: String::new(),
        signature: Vec::new(),
    };
    let a = state.iam.create_authorization(&who, spec).await?;
    Ok(created(&authorization_view(&a)))
}

/// `GET /iam/v1/authorizations`.
pub async fn authorizations(State(state): State<Arc<AppState>>, Admin(who): Admin) -> IamResult {
    let all = state.iam.authorizations(&who).await?;
    Ok(list(AuthorizationList::from(
        all.iter().map(authorization_view).collect::<Vec<_>>(),
    )))
}

/// `DELETE /iam/v1/authorizations/{id}`: the source service is cut off within the access cache
/// TTL on every process.
pub async fn delete_authorization(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    Path(id): Path<String>,
) -> IamResult {
    state.iam.delete_authorization(&who, &id).await?;
    Ok(no_content())
}

// ---- instances ----

/// `POST /iam/v1/instances`: another KMS instance in the caller's account.
pub async fn create_instance(
    State(state): State<Arc<AppState>>,
    Admin(who): Admin,
    KpJson(body): KpJson<NewInstance>,
) -> IamResult {
    state.iam.check_admin(&who, &op::CREATE_INSTANCE).await?;
    let i = state.iam.create_instance(&who, &body.name).await?;
    Ok(created(&instance_view(&i)))
}

/// `GET /iam/v1/instances`.
pub async fn instances(State(state): State<Arc<AppState>>, Admin(who): Admin) -> IamResult {
    let all = state.iam.instances(&who).await?;
    Ok(list(InstanceList::from(
        all.iter().map(instance_view).collect::<Vec<_>>(),
    )))
}

/// `GET /iam/v1/openapi.json`.
pub async fn openapi() -> Response {
    let mut resp = OPENAPI.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The management routes.
pub fn router() -> axum::Router<Arc<AppState>> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/iam/v1/openapi.json", get(openapi))
        .route("/iam/v1/identities", get(identities).post(create_identity))
        .route("/iam/v1/identities/{iam_id}", delete(delete_identity))
        .route(
            "/iam/v1/identities/{iam_id}/lock",
            post(lock_identity).delete(unlock_identity),
        )
        .route("/iam/v1/apikeys", get(api_keys).post(create_api_key))
        .route("/iam/v1/apikeys/{id}", delete(delete_api_key))
        .route(
            "/iam/v1/apikeys/{id}/lock",
            post(lock_api_key).delete(unlock_api_key),
        )
        .route("/iam/v1/policies", get(policies).post(create_policy))
        .route("/iam/v1/policies/{id}", delete(delete_policy))
        .route(
            "/iam/v1/authorizations",
            get(authorizations).post(create_authorization),
        )
        .route("/iam/v1/authorizations/{id}", delete(delete_authorization))
        .route("/iam/v1/instances", get(instances).post(create_instance))
}

/// Every (method, path) the router serves, for the OpenAPI drift test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/iam/v1/openapi.json"),
    ("get", "/iam/v1/identities"),
    ("post", "/iam/v1/identities"),
    ("delete", "/iam/v1/identities/{iam_id}"),
    ("post", "/iam/v1/identities/{iam_id}/lock"),
    ("delete", "/iam/v1/identities/{iam_id}/lock"),
    ("get", "/iam/v1/apikeys"),
    ("post", "/iam/v1/apikeys"),
    ("delete", "/iam/v1/apikeys/{id}"),
    ("post", "/iam/v1/apikeys/{id}/lock"),
    ("delete", "/iam/v1/apikeys/{id}/lock"),
    ("get", "/iam/v1/policies"),
    ("post", "/iam/v1/policies"),
    ("delete", "/iam/v1/policies/{id}"),
    ("get", "/iam/v1/authorizations"),
    ("post", "/iam/v1/authorizations"),
    ("delete", "/iam/v1/authorizations/{id}"),
    ("get", "/iam/v1/instances"),
    ("post", "/iam/v1/instances"),
];
