//! `/api/v2/keys/{id}/policies` and `/api/v2/instance/policies`: Key Protect's key and instance
//! policies.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use keyward_api::{
    AllowedIpPort, Collection, DualAuthPolicyIn, InstancePolicyData, InstancePolicyIn,
    InstancePolicyView, KeyPolicyIn, KeyPolicyView, RotationPolicyView, media,
};
use keyward_core::op;
use keyward_core::{
    AllowedNetwork, CreateImportAccess, InstancePolicy, InstancePolicyUpdate, KeyPolicyUpdate,
    KeyRecord, PolicyKind, PolicyMeta, PolicySetting,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::keys::{AppResult, json_response, resolve, rotation_in};
use crate::error::ApiError;
use crate::extract::{Authed, KpJson};
use crate::state::AppState;
use crate::views::date;

/// `?policy=` of the policy endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct PolicyQuery {
    policy: Option<String>,
}

/// A policy collection body.
#[derive(Debug, Deserialize)]
pub struct PolicyBody<T> {
    metadata: Option<keyward_api::CollectionMetadata>,
    #[serde(default = "Vec::new")]
    resources: Vec<T>,
}

impl<T> Default for PolicyBody<T> {
    fn default() -> Self {
        PolicyBody {
            metadata: None,
            resources: Vec::new(),
        }
    }
}

fn check_collection<T>(body: &PolicyBody<T>) -> Result<(), ApiError> {
    if body.resources.is_empty() {
        return Err(ApiError::bad_request(
            "BAD_BODY_ERR",
            "resources: at least one policy is required",
        ));
    }
    if let Some(m) = &body.metadata
        && m.collection_total != body.resources.len() as u64
    {
        return Err(ApiError::bad_request(
            "COLLECTION_TOTAL_MISMATCH_ERR",
            "metadata.collectionTotal: must equal the number of resources",
        ));
    }
    Ok(())
}

fn mismatch(kind: &str) -> ApiError {
    ApiError::bad_request(
        "BODY_QUERY_PARAM_MISMATCH_ERR",
        format!("the policy query parameter and the body disagree ({kind})"),
    )
}

// ---- key policies ----

fn key_policy_views(key: &KeyRecord, crn_base: &str, only: Option<&str>) -> Vec<KeyPolicyView> {
    let view = |suffix: &str, meta: &PolicyMeta| {
        let id = policy_id(key, suffix);
        KeyPolicyView {
            crn: format!("{crn_base}:policy:{id}"),
            id,
            creation_date: date(meta.created_at),
            created_by: meta.created_by.clone(),
            last_update_date: date(meta.updated_at),
            updated_by: meta.updated_by.clone(),
            type_: media::POLICY.to_owned(),
            rotation: None,
            dual_auth_delete: None,
        }
    };
    let mut out = Vec::new();
    if let Some(r) = &key.rotation
        && only.is_none_or(|o| o == "rotation")
    {
        out.push(KeyPolicyView {
            rotation: Some(RotationPolicyView {
                enabled: r.enabled,
                interval_month: r.interval_month,
            }),
            ..view("rotation", &r.meta)
        });
    }
    if let Some(d) = &key.dual_auth_delete
        && only.is_none_or(|o| o == "dualAuthDelete")
    {
        out.push(KeyPolicyView {
            dual_auth_delete: Some(DualAuthPolicyIn { enabled: d.enabled }),
            ..view("dualAuthDelete", &d.meta)
        });
    }
    out
}

/// A policy's id: a v4-shaped UUID derived from the key and the policy type, so it is stable
/// across reads without being stored.
fn policy_id(key: &KeyRecord, policy: &str) -> String {
    let mut input = key.id.as_bytes().to_vec();
    input.extend_from_slice(policy.as_bytes());
    let digest = keyward_crypto::sha256(&input);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn key_policy_query(q: &PolicyQuery) -> Result<Option<&str>, ApiError> {
    match q.policy.as_deref() {
        None => Ok(None),
        Some(p @ ("rotation" | "dualAuthDelete")) => Ok(Some(p)),
        Some(_) => Err(ApiError::bad_request(
            "INVALID_QUERY_PARAM_ERR",
            "policy: rotation or dualAuthDelete",
        )),
    }
}

fn policies_response(
    state: &AppState,
    authed: &Authed,
    key: &KeyRecord,
    only: Option<&str>,
) -> AppResult {
    let base = format!(
        "crn:v1:keyward:private:kms:{}:a/{}:{}",
        state.config.region, authed.account, key.instance
    );
    let views = key_policy_views(key, &base, only);
    Ok(json_response(
        StatusCode::OK,
        media::POLICY,
        &Collection::new(media::POLICY, views),
    ))
}

/// `GET /api/v2/keys/{id}/policies[?policy=]`.
pub async fn get_key_policies(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<PolicyQuery>,
) -> AppResult {
    let only = key_policy_query(&q)?;
    let id = resolve(&state, &authed, &id).await?;
    let key = state.keys.key_policies(&authed.caller, id).await?;
    policies_response(&state, &authed, &key, only)
}

/// `PUT /api/v2/keys/{id}/policies[?policy=]`: 200 with the key's policies.
pub async fn put_key_policies(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Path(id): Path<String>,
    Query(q): Query<PolicyQuery>,
    KpJson(body): KpJson<PolicyBody<KeyPolicyIn>>,
) -> AppResult {
    let only = key_policy_query(&q)?;
    check_collection(&body)?;
    let mut update = KeyPolicyUpdate::default();
    for r in &body.resources {
        if let Some(rot) = &r.rotation {
            if only == Some("dualAuthDelete") {
                return Err(mismatch("rotation"));
            }
            update.rotation = Some(rotation_in(rot)?);
        }
        if let Some(d) = &r.dual_auth_delete {
            if only == Some("rotation") {
                return Err(mismatch("dualAuthDelete"));
            }
            update.dual_auth_delete = Some(d.enabled);
        }
        if r.rotation.is_none() && r.dual_auth_delete.is_none() {
            return Err(ApiError::bad_request(
                "BAD_BODY_ERR",
                "resources: each policy needs rotation or dualAuthDelete",
            ));
        }
    }
    let id = resolve(&state, &authed, &id).await?;
    let key = state
        .keys
        .put_key_policies(&authed.caller, id, update)
        .await?;
    policies_response(&state, &authed, &key, only)
}

// ---- instance policies ----

fn attr<'a>(attrs: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    attrs.get(name)
}

fn bad_attr(kind: PolicyKind, msg: &str) -> ApiError {
    ApiError::bad_request(
        "INVALID_FIELD_ERR",
        format!("{}: policy_data.attributes: {msg}", kind.name()),
    )
}

/// One wire policy to a domain update; a disabled policy keeps the attributes it had.
fn instance_update(
    p: &InstancePolicyIn,
    current: Option<&InstancePolicy>,
) -> Result<InstancePolicyUpdate, ApiError> {
    let kind = PolicyKind::from_name(&p.policy_type).ok_or_else(|| {
        ApiError::bad_request(
            "BAD_BODY_ERR",
            "policy_type: one of dualAuthDelete, rotation, allowedNetwork, allowedIP, \
             keyCreateImportAccess, metrics",
        )
    })?;
    let enabled = p.policy_data.enabled;
    let empty = Map::new();
    let attrs = p.policy_data.attributes.as_ref().unwrap_or(&empty);
    let keep = || current.map(|c| c.setting.clone());
    let setting = match kind {
        PolicyKind::DualAuthDelete => PolicySetting::DualAuthDelete,
        PolicyKind::Metrics => PolicySetting::Metrics,
        PolicyKind::Rotation => match attr(attrs, "interval_month") {
            Some(v) => PolicySetting::Rotation {
                interval_month: v
                    .as_u64()
                    .and_then(|m| u8::try_from(m).ok())
                    .filter(|m| keyward_core::ROTATION_MONTHS.contains(m))
                    .ok_or_else(|| bad_attr(kind, "interval_month: 1 to 12"))?,
            },
            None if !enabled => keep().unwrap_or(PolicySetting::Rotation { interval_month: 1 }),
            None => return Err(bad_attr(kind, "interval_month is required")),
        },
        PolicyKind::AllowedNetwork => match attr(attrs, "allowed_network") {
            Some(v) => PolicySetting::AllowedNetwork(
                serde_json::from_value::<AllowedNetwork>(v.clone()).map_err(|_| {
                    bad_attr(kind, "allowed_network: public-and-private or private-only")
                })?,
            ),
            None if !enabled => keep().unwrap_or(PolicySetting::AllowedNetwork(
                AllowedNetwork::PublicAndPrivate,
            )),
            None => return Err(bad_attr(kind, "allowed_network is required")),
        },
        PolicyKind::AllowedIp => match attr(attrs, "allowed_ip") {
            Some(Value::Array(items)) => {
                let mut ranges = Vec::with_capacity(items.len());
                for item in items {
                    let s = item.as_str().unwrap_or_default();
                    let net = s
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| bad_attr(kind, "allowed_ip: IPv4 or IPv6 CIDR ranges"))?;
                    ranges.push(net.trunc());
                }
                if enabled && ranges.is_empty() {
                    return Err(bad_attr(kind, "allowed_ip: at least one range"));
                }
                PolicySetting::AllowedIp(ranges)
            }
            Some(_) => return Err(bad_attr(kind, "allowed_ip: a list of CIDR ranges")),
            None if !enabled => keep().unwrap_or(PolicySetting::AllowedIp(Vec::new())),
            None => return Err(bad_attr(kind, "allowed_ip is required")),
        },
        PolicyKind::KeyCreateImportAccess => {
            let mut a = CreateImportAccess::default();
            for (name, v) in attrs {
                let b = v
                    .as_bool()
                    .ok_or_else(|| bad_attr(kind, &format!("{name}: true or false")))?;
                match name.as_str() {
                    "create_root_key" => a.create_root_key = b,
                    "create_standard_key" => a.create_standard_key = b,
                    "import_root_key" => a.import_root_key = b,
                    "import_standard_key" => a.import_standard_key = b,
                    "enforce_token" => a.enforce_token = b,
                    _ => return Err(bad_attr(kind, &format!("{name}: unknown attribute"))),
                }
            }
            PolicySetting::KeyCreateImportAccess(a)
        }
    };
    Ok(InstancePolicyUpdate { enabled, setting })
}

fn instance_view(p: &InstancePolicy) -> InstancePolicyView {
    let attributes = p.attributes_json().and_then(|j| {
        serde_json::from_str::<Value>(&j)
            .ok()
            .and_then(|v| v.as_object().cloned())
    });
    InstancePolicyView {
        creation_date: date(p.meta.created_at),
        created_by: p.meta.created_by.clone(),
        last_updated: date(p.meta.updated_at),
        updated_by: p.meta.updated_by.clone(),
        policy_type: p.setting.kind().name().to_owned(),
        policy_data: InstancePolicyData {
            enabled: p.enabled,
            attributes,
        },
    }
}

fn instance_kind_query(q: &PolicyQuery) -> Result<Option<PolicyKind>, ApiError> {
    q.policy
        .as_deref()
        .map(|p| {
            PolicyKind::from_name(p).ok_or_else(|| {
                ApiError::bad_request(
                    "INVALID_QUERY_PARAM_ERR",
                    "policy: one of dualAuthDelete, rotation, allowedNetwork, allowedIP, \
                     keyCreateImportAccess, metrics",
                )
            })
        })
        .transpose()
}

/// `GET /api/v2/instance/policies[?policy=]`.
pub async fn get_instance_policies(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<PolicyQuery>,
) -> AppResult {
    let only = instance_kind_query(&q)?;
    let policies = state
        .keys
        .instance_policies(&authed.caller, &op::READ_INSTANCE_POLICIES)
        .await?;
    let mut all: Vec<&InstancePolicy> = policies
        .all
        .iter()
        .filter(|p| only.is_none_or(|k| p.setting.kind() == k))
        .collect();
    all.sort_by_key(|p| PolicyKind::ALL.iter().position(|k| *k == p.setting.kind()));
    let views: Vec<InstancePolicyView> = all.into_iter().map(instance_view).collect();
    Ok(json_response(
        StatusCode::OK,
        media::POLICY,
        &Collection::new(media::POLICY, views),
    ))
}

/// `PUT /api/v2/instance/policies[?policy=]`: 204.
pub async fn put_instance_policies(
    State(state): State<Arc<AppState>>,
    authed: Authed,
    Query(q): Query<PolicyQuery>,
    KpJson(body): KpJson<PolicyBody<InstancePolicyIn>>,
) -> AppResult {
    let only = instance_kind_query(&q)?;
    check_collection(&body)?;
    let current = state.keys.policies_of(authed.caller.instance()).await?;
    let mut updates = Vec::with_capacity(body.resources.len());
    for p in &body.resources {
        if only.is_some_and(|k| k.name() != p.policy_type) {
            return Err(mismatch(&p.policy_type));
        }
        if updates
            .iter()
            .any(|u: &InstancePolicyUpdate| u.setting.kind().name() == p.policy_type)
        {
            return Err(ApiError::bad_request(
                "NUM_COLLECTION_RESOURCE_ERR",
                format!("policy_type: {} appears more than once", p.policy_type),
            ));
        }
        let kind = PolicyKind::from_name(&p.policy_type);
        updates.push(instance_update(p, kind.and_then(|k| current.get(k)))?);
    }
    let result = state
        .keys
        .put_instance_policies(&authed.caller, updates)
        .await;
    state.forget_policies(authed.caller.instance());
    result?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v2/instance/allowed_ip_port`: the port of the (private) endpoint, when an
/// allowedIP policy is in force.
pub async fn allowed_ip_port(State(state): State<Arc<AppState>>, authed: Authed) -> AppResult {
    let policies = state
        .keys
        .instance_policies(&authed.caller, &op::READ_ALLOWED_IP_PORT)
        .await?;
    let active = policies
        .get(PolicyKind::AllowedIp)
        .is_some_and(|p| p.enabled);
    let resources = if active {
        vec![AllowedIpPort {
            private_endpoint_port: state
                .bound_port
                .get()
                .copied()
                .unwrap_or(state.config.listen.port()),
        }]
    } else {
        Vec::new()
    };
    Ok(json_response(
        StatusCode::OK,
        media::ALLOWED_IP_METADATA,
        &Collection::new(media::ALLOWED_IP_METADATA, resources),
    ))
}
