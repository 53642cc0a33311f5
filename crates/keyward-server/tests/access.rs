//! Access control against a real server: the access matrix (every role × every operation,
//! generated from the one table the code enforces), scopes, the 404-not-403 rule, service
//! authorizations with delegation, revocation, and rate limits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_kp_error, login};
use keyward_core::{OPERATIONS, Operation, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn keys_body(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [resource],
    })
}

/// What one operation's request needs, made fresh by the administrator for each call.
struct Fixture {
    root: String,
    standard: String,
    deleted: String,
    disabled: String,
    ciphertext: String,
}

async fn fixture(ts: &TestServer) -> Fixture {
    let root = ts.create_root_key("matrix-root").await;
    let standard = ts
        .create_key(json!({"name": "matrix-std", "extractable": true}))
        .await;
    let deleted = ts.create_root_key("matrix-deleted").await;
    let (s, _) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{deleted}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let disabled = ts.create_root_key("matrix-disabled").await;
    assert_eq!(
        ts.action(&disabled, "disable", Value::Null).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, w) = ts.action(&root, "wrap", json!({})).await;
    Fixture {
        root,
        standard,
        deleted,
        disabled,
        ciphertext: w["ciphertext"].as_str().unwrap().to_owned(),
    }
}

fn registration(n: usize) -> String {
    format!(
        "/registrations/crn%3Av1%3Abluemix%3Apublic%3Asvc%3Aus-south%3Aa%2Facct%3Ainst-{n}%3A%3A"
    )
}

/// The request that exercises `op`. The match has no wildcard: a new operation does not compile
/// until the matrix covers it.
fn request(op: Operation, f: &Fixture, n: usize) -> (Method, String, Option<Value>) {
    let key = |suffix: &str| format!("/api/v2/keys/{}{suffix}", f.root);
    let policy = json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                        "resources": [{"rotation": {"enabled": true, "interval_month": 3}}]});
    match op {
        Operation::ListKeys => (Method::GET, "/api/v2/keys".into(), None),
        Operation::KeyTotal => (Method::HEAD, "/api/v2/keys".into(), None),
        Operation::ReadMetadata => (Method::GET, key("/metadata"), None),
        Operation::ReadPayload => (Method::GET, format!("/api/v2/keys/{}", f.standard), None),
        Operation::ListVersions => (Method::GET, key("/versions"), None),
        Operation::CreateKey => (
            Method::POST,
            "/api/v2/keys".into(),
            Some(keys_body(json!({"name": format!("created-{n}")}))),
        ),
        Operation::ImportKey => (
            Method::POST,
            "/api/v2/keys".into(),
            Some(keys_body(
                json!({"name": format!("imported-{n}"), "payload": b64(&[3u8; 32])}),
            )),
        ),
        Operation::Wrap => (Method::POST, key("/actions/wrap"), Some(json!({}))),
        Operation::Unwrap => (
            Method::POST,
            key("/actions/unwrap"),
            Some(json!({"ciphertext": f.ciphertext})),
        ),
        Operation::Rewrap => (
            Method::POST,
            key("/actions/rewrap"),
            Some(json!({"ciphertext": f.ciphertext})),
        ),
        Operation::Rotate => (Method::POST, key("/actions/rotate"), Some(json!({}))),
        Operation::Disable => (Method::POST, key("/actions/disable"), None),
        Operation::Enable => (
            Method::POST,
            format!("/api/v2/keys/{}/actions/enable", f.disabled),
            None,
        ),
        Operation::Delete => (Method::DELETE, key(""), None),
        Operation::Restore => (
            Method::POST,
            format!("/api/v2/keys/{}/restore", f.deleted),
            None,
        ),
        Operation::Purge => (
            Method::DELETE,
            format!("/api/v2/keys/{}/purge", f.deleted),
            None,
        ),
        Operation::SetKeyForDeletion => (Method::POST, key("/actions/setKeyForDeletion"), None),
        Operation::UnsetKeyForDeletion => (Method::POST, key("/actions/unsetKeyForDeletion"), None),
        Operation::ReadKeyPolicies => (Method::GET, key("/policies"), None),
        Operation::WriteKeyPolicies => (Method::PUT, key("/policies"), Some(policy)),
        Operation::ReadInstancePolicies => (Method::GET, "/api/v2/instance/policies".into(), None),
        Operation::WriteInstancePolicies => (
            Method::PUT,
            "/api/v2/instance/policies?policy=metrics".into(),
            Some(
                json!({"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                        "resources": [{"policy_type": "metrics", "policy_data": {"enabled": false}}]}),
            ),
        ),
        Operation::ReadAllowedIpPort => {
            (Method::GET, "/api/v2/instance/allowed_ip_port".into(), None)
        }
        Operation::ListKeyRings => (Method::GET, "/api/v2/key_rings".into(), None),
        Operation::CreateKeyRing => (Method::POST, format!("/api/v2/key_rings/ring-{n}"), None),
        Operation::DeleteKeyRing => (
            Method::DELETE,
            "/api/v2/key_rings/no-such-ring".into(),
            None,
        ),
        Operation::PatchKey => (
            Method::PATCH,
            key(""),
            Some(json!({"keyRingID": "default"})),
        ),
        Operation::CreateAlias => (Method::POST, key(&format!("/aliases/alias-{n}")), None),
        Operation::DeleteAlias => (Method::DELETE, key("/aliases/no-such-alias"), None),
        Operation::KmipRead => (Method::GET, "/api/v2/kmip_adapters".into(), None),
        Operation::KmipWrite => (
            Method::POST,
            "/api/v2/kmip_adapters".into(),
            Some(
                json!({"metadata": {"collectionType": "application/vnd.ibm.kms.kmip_adapter+json", "collectionTotal": 1},
                        "resources": [{"name": format!("adapter-{n}"), "profile": "native_1.0",
                                       "profile_data": {"crk_id": f.root}}]}),
            ),
        ),
        Operation::CreateImportToken => (
            Method::POST,
            "/api/v2/import_token".into(),
            Some(json!({"expiration": 600})),
        ),
        // No token exists: an allowed caller learns that (404), a refused one only 403.
        Operation::ReadImportToken => (Method::GET, "/api/v2/import_token".into(), None),
        Operation::ListRegistrations => (Method::GET, key("/registrations"), None),
        // The matrix's identities are users: an allowed role gets past the role table and is
        // then refused as not a service (SERVICE_ONLY_ERR), a refused one gets UNAUTHORIZED_ERR.
        Operation::CreateRegistration => (Method::POST, key(&registration(n)), None),
        Operation::UpdateRegistration => (Method::PATCH, key(&registration(n)), None),
        Operation::DeleteRegistration => (Method::DELETE, key(&registration(n)), None),
        Operation::SyncKey => (Method::POST, key("/actions/sync"), None),
        Operation::ManageAccess => (Method::GET, "/iam/v1/identities".into(), None),
        Operation::ReadAuditEvents => (Method::GET, "/api/v2/audit_events?limit=5".into(), None),
    }
}

#[tokio::test]
async fn every_role_can_do_exactly_what_the_table_says() {
    let ts = TestServer::start_with(|c| c.lifecycle.purge_wait_secs = 0).await;
    let mut n = 0;
    for role in Role::ALL {
        let (_, _, token) = if role == Role::Administrator {
            // Administrator is granted on the account only.
            let (iam_id, key, _) = ts.identity_with("user", &[]).await;
            let (s, b) = ts
                .iam(
                    Method::POST,
                    "/iam/v1/policies",
                    Some(json!({"subject": iam_id, "roles": ["Administrator"], "resource": {}})),
                )
                .await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
            let token = login(&ts.http, &ts.url, &key).await;
            (iam_id, key, token)
        } else {
            ts.identity_with("user", &[role.name()]).await
        };
        for (op, action, roles) in OPERATIONS {
            n += 1;
            let f = fixture(&ts).await;
            let (method, path, body) = request(*op, &f, n);
            let instance = (!path.starts_with("/iam/")).then_some(ts.instance.as_str());
            let (status, resp) = ts
                .call_as(method.clone(), &path, body, Some(&token), instance)
                .await;
            let allowed = roles.contains(&role);
            let service_only = matches!(
                op,
                Operation::CreateRegistration
                    | Operation::UpdateRegistration
                    | Operation::DeleteRegistration
            );
            if allowed && service_only {
                assert_kp_error(status, &resp, StatusCode::FORBIDDEN, "SERVICE_ONLY_ERR");
            } else if allowed {
                assert!(
                    ![
                        StatusCode::UNAUTHORIZED,
                        StatusCode::FORBIDDEN,
                        StatusCode::NOT_FOUND
                    ]
                    .contains(&status)
                        || (status == StatusCode::NOT_FOUND
                            && matches!(
                                op,
                                Operation::DeleteKeyRing
                                    | Operation::DeleteAlias
                                    | Operation::ReadImportToken
                            )),
                    "{role:?} may {action} ({method} {path}) but got {status}: {resp}"
                );
            } else if method == Method::HEAD {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role:?} {action}");
            } else {
                assert_kp_error(status, &resp, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
            }
        }
    }
    // The audit trail names the refused actions.
    let refused = ts
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE outcome = 'failure' AND reason_code = 403",
            &[],
        )
        .await;
    assert!(refused > 50, "{refused}");
}

#[tokio::test]
async fn scopes_narrow_what_a_grant_covers_and_invisible_keys_are_404() {
    let ts = TestServer::start().await;
    let mine = ts.create_root_key("mine").await;
    let other = ts.create_root_key("other").await;
    assert_eq!(
        ts.call(Method::POST, "/api/v2/key_rings/team-a", None)
            .await
            .0,
        StatusCode::CREATED
    );
    let in_ring = ts
        .create_key(json!({"name": "ringed", "keyRingID": "team-a"}))
        .await;

    // A Manager of one key only.
    let (iam_id, key, _) = ts.identity_with("user", &[]).await;
    let (s, b) = ts
        .iam(
            Method::POST,
            "/iam/v1/policies",
            Some(json!({"subject": iam_id, "roles": ["Manager"],
                        "resource": {"instance_id": ts.instance, "key_id": mine}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = login(&ts.http, &ts.url, &key).await;
    let call = |method: Method, path: String| {
        let (ts, token) = (&ts, token.clone());
        async move {
            ts.call_as(
                method,
                &path,
                Some(json!({})),
                Some(&token),
                Some(&ts.instance),
            )
            .await
        }
    };
    let (s, _) = call(Method::POST, format!("/api/v2/keys/{mine}/actions/wrap")).await;
    assert_eq!(s, StatusCode::OK);
    // Another key of the same instance is invisible: 404, exactly as a key that does not exist.
    let (s, b) = call(Method::POST, format!("/api/v2/keys/{other}/actions/wrap")).await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (s2, b2) = call(
        Method::POST,
        format!(
            "/api/v2/keys/{}/actions/wrap",
            keyward_core::KeyId::random()
        ),
    )
    .await;
    assert_eq!(
        (s, b["resources"][0]["reasons"][0]["code"].clone()),
        (s2, b2["resources"][0]["reasons"][0]["code"].clone())
    );
    // Instance-wide operations are forbidden (the caller does see the instance).
    let (s, b) = call(Method::GET, "/api/v2/keys".into()).await;
    assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");

    // A Writer of one key ring: its keys, and listing it with the header, but no other key.
    let (iam_id, key, _) = ts.identity_with("user", &[]).await;
    ts.iam(
        Method::POST,
        "/iam/v1/policies",
        Some(json!({"subject": iam_id, "roles": ["Writer"],
                    "resource": {"instance_id": ts.instance, "key_ring": "team-a"}})),
    )
    .await;
    let ring_token = login(&ts.http, &ts.url, &key).await;
    let (s, _) = ts
        .call_as(
            Method::POST,
            &format!("/api/v2/keys/{in_ring}/actions/rotate"),
            Some(json!({})),
            Some(&ring_token),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = ts
        .call_as(
            Method::POST,
            &format!("/api/v2/keys/{mine}/actions/rotate"),
            Some(json!({})),
            Some(&ring_token),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, listed) = ts
        .get_in_ring("/api/v2/keys", &ring_token, Some("team-a"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(listed["resources"].as_array().unwrap().len(), 1);
    // Creating into the ring is allowed; into default it is not.
    let (s, b) = ts
        .call_as(
            Method::POST,
            "/api/v2/keys",
            Some(keys_body(
                json!({"name": "ring-made", "keyRingID": "team-a"}),
            )),
            Some(&ring_token),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // A caller with nothing in an instance cannot tell its keys from keys that do not exist.
    let (s, inst) = ts
        .iam(
            Method::POST,
            "/iam/v1/instances",
            Some(json!({"name": "second"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inst}");
    let second = inst["id"].as_str().unwrap();
    let (_, _, reader) = ts.identity_with("user", &["Reader"]).await;
    let (s, b) = ts
        .call_as(
            Method::GET,
            &format!("/api/v2/keys/{mine}/metadata"),
            None,
            Some(&reader),
            Some(second),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
}

/// Issue 18 item 6: moving a key (`PATCH keyRingID`) checked only that the destination ring
/// existed, so a Manager scoped to ring A moved a key into ring B, where B's Readers then used
/// it. The move now needs the role on the destination ring too.
#[tokio::test]
async fn a_manager_of_one_ring_cannot_move_a_key_into_another() {
    let ts = TestServer::start().await;
    for ring in ["team-a", "team-b"] {
        let (s, b) = ts
            .call(Method::POST, &format!("/api/v2/key_rings/{ring}"), None)
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let key = ts
        .create_key(json!({"name": "ringed", "keyRingID": "team-a"}))
        .await;
    let (iam_id, api_key, _) = ts.identity_with("user", &[]).await;
    let (s, b) = ts
        .iam(
            Method::POST,
            "/iam/v1/policies",
            Some(json!({"subject": iam_id, "roles": ["Manager"],
                        "resource": {"instance_id": ts.instance, "key_ring": "team-a"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let token = login(&ts.http, &ts.url, &api_key).await;
    let server = &ts;
    let patch = |ring: &str, token: Option<String>| {
        let (ts, body) = (server, json!({"keyRingID": ring}));
        let path = format!("/api/v2/keys/{key}");
        async move {
            ts.call_as(
                Method::PATCH,
                &path,
                Some(body),
                token.as_deref(),
                Some(&ts.instance),
            )
            .await
        }
    };
    let (s, b) = patch("team-b", Some(token.clone())).await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_RING_NOT_FOUND_ERR");
    // The refusal looks like a ring that does not exist.
    let (s2, b2) = patch("no-such-ring", Some(token.clone())).await;
    assert_kp_error(s2, &b2, StatusCode::NOT_FOUND, "KEY_RING_NOT_FOUND_ERR");
    let (_, meta) = ts
        .call(Method::GET, &format!("/api/v2/keys/{key}/metadata"), None)
        .await;
    assert_eq!(meta["resources"][0]["keyRingID"], "team-a", "{meta}");
    // An instance Manager may still move it.
    let (s, b) = patch("team-b", Some(ts.token.clone())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Creates a service identity (Event Streams instance `es-1`) with an API key; returns its
/// iam_id and API key.
async fn service_identity(ts: &TestServer, service: &str, instance: &str) -> (String, String) {
    let (s, ident) = ts
        .iam(
            Method::POST,
            "/iam/v1/identities",
            Some(json!({"kind": "service", "name": "event streams",
                        "service_name": service, "service_instance": instance})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ident}");
    let iam_id = ident["iam_id"].as_str().unwrap().to_owned();
    assert!(iam_id.starts_with("crn-crn:v1:"), "{iam_id}");
    let (s, key) = ts
        .iam(
            Method::POST,
            "/iam/v1/apikeys",
            Some(json!({"iam_id": iam_id, "name": "svc"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    (iam_id, key["apikey"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn service_authorizations_grant_and_delegate_and_revoke() {
    let ts = TestServer::start().await;
    let root = ts.create_root_key("byok").await;
    let (_, es_key) = service_identity(&ts, "messagehub", "es-1").await;
    let (_, other_key) = service_identity(&ts, "messagehub", "es-2").await;
    let es = login(&ts.http, &ts.url, &es_key).await;
    let es2 = login(&ts.http, &ts.url, &other_key).await;
    let wrap = |token: String| {
        let (ts, root) = (&ts, root.clone());
        async move {
            ts.call_as(
                Method::POST,
                &format!("/api/v2/keys/{root}/actions/wrap"),
                Some(json!({})),
                Some(&token),
                Some(&ts.instance),
            )
            .await
        }
    };
    assert_eq!(
        wrap(es.clone()).await.0,
        StatusCode::NOT_FOUND,
        "no authorization yet"
    );
    let (s, auth) = ts
        .iam(
            Method::POST,
            "/iam/v1/authorizations",
            Some(
                json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                        "target": {"instance_id": ts.instance, "key_id": root},
                        "roles": ["Reader"], "delegation": true, "dependents": ["backup"]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{auth}");
    assert_eq!(wrap(es.clone()).await.0, StatusCode::OK);
    assert_eq!(
        wrap(es2.clone()).await.0,
        StatusCode::NOT_FOUND,
        "another instance of the service"
    );
    // Reader may not delete.
    let (s, _) = ts
        .call_as(
            Method::DELETE,
            &format!("/api/v2/keys/{root}"),
            None,
            Some(&es),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Delegation: es-1 grants its dependent service (a backup service) Reader on the same key,
    // but not more, not elsewhere, and not further delegation.
    let delegate = |body: Value| {
        let (ts, es) = (&ts, es.clone());
        async move {
            ts.call_as(
                Method::POST,
                "/iam/v1/authorizations",
                Some(body),
                Some(&es),
                None,
            )
            .await
        }
    };
    let target = json!({"instance_id": ts.instance, "key_id": root});
    let backup = json!({"service_name": "backup", "service_instance": "b-1"});
    let (s, b) = delegate(json!({"source": backup, "target": target, "roles": ["Reader"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["delegated_from"], auth["id"], "{b}");
    for refused in [
        json!({"source": backup, "target": target, "roles": ["Manager"]}),
        json!({"source": backup, "target": {"instance_id": ts.instance}, "roles": ["Reader"]}),
        json!({"source": backup, "target": target, "roles": ["Reader"], "delegation": true,
               "dependents": ["x"]}),
    ] {
        let (s, b) = delegate(refused).await;
        assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    }
    let (s, b) = ts
        .call_as(Method::GET, "/iam/v1/identities", None, Some(&es), None)
        .await;
    assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");

    // Removing the authorization cuts es-1 off.
    let id = auth["id"].as_str().unwrap();
    let (s, _) = ts
        .iam(
            Method::DELETE,
            &format!("/iam/v1/authorizations/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(wrap(es.clone()).await.0, StatusCode::NOT_FOUND);
}

/// See: issue 18, item 1. A service instance holding Reader-with-delegation on a key could
/// authorize its whole service (every instance, its siblings included) and an unrelated service,
/// and both copies outlived the delegating authorization, still wrapping.
#[tokio::test]
async fn delegated_authorizations_cannot_widen_and_go_with_the_delegating_one() {
    let ts = TestServer::start().await;
    let root = ts.create_root_key("delegated").await;
    let (_, es_key) = service_identity(&ts, "messagehub", "es-1").await;
    let (_, sibling_key) = service_identity(&ts, "messagehub", "es-2").await;
    let (_, backup_key) = service_identity(&ts, "backup", "b-1").await;
    let (_, unrelated_key) = service_identity(&ts, "cloud-object-storage", "c-1").await;
    let es = login(&ts.http, &ts.url, &es_key).await;
    let target = json!({"instance_id": ts.instance, "key_id": root});

    // The administrator must name the dependents of a delegating authorization, and only there.
    for (body, field) in [
        (
            json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                   "target": target, "roles": ["Reader"], "delegation": true}),
            "dependents",
        ),
        (
            json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                   "target": target, "roles": ["Reader"], "dependents": ["backup"]}),
            "dependents",
        ),
    ] {
        let (s, b) = ts
            .iam(Method::POST, "/iam/v1/authorizations", Some(body))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b.to_string().contains(field), "{b}");
    }
    let (s, parent) = ts
        .iam(
            Method::POST,
            "/iam/v1/authorizations",
            Some(
                json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                        "target": target, "roles": ["Reader"], "delegation": true,
                        "dependents": ["backup"]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{parent}");
    assert_eq!(parent["dependents"], json!(["backup"]), "{parent}");

    let delegate = |source: Value| {
        let (ts, es, target) = (&ts, es.clone(), target.clone());
        async move {
            ts.call_as(
                Method::POST,
                "/iam/v1/authorizations",
                Some(json!({"source": source, "target": target, "roles": ["Reader"]})),
                Some(&es),
                None,
            )
            .await
        }
    };
    // The widenings of the finding, and their neighbours: refused, and nothing stored.
    for source in [
        json!({"service_name": "messagehub"}),
        json!({"service_name": "messagehub", "service_instance": "es-2"}),
        json!({"service_name": "messagehub", "service_instance": "es-1"}),
        json!({"service_name": "cloud-object-storage"}),
        json!({"service_name": "cloud-object-storage", "service_instance": "c-1"}),
        json!({"service_name": "backup"}),
    ] {
        let (s, b) = delegate(source.clone()).await;
        assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    }
    let (s, list) = ts.iam(Method::GET, "/iam/v1/authorizations", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["count"], 1, "{list}");

    // One named instance of a named dependent: allowed, and it wraps.
    let (s, child) = delegate(json!({"service_name": "backup", "service_instance": "b-1"})).await;
    assert_eq!(s, StatusCode::CREATED, "{child}");
    assert_eq!(child["delegated_from"], parent["id"], "{child}");
    let wrap = |key: String| {
        let (ts, root) = (&ts, root.clone());
        async move {
            let token = login(&ts.http, &ts.url, &key).await;
            ts.call_as(
                Method::POST,
                &format!("/api/v2/keys/{root}/actions/wrap"),
                Some(json!({})),
                Some(&token),
                Some(&ts.instance),
            )
            .await
            .0
        }
    };
    assert_eq!(wrap(backup_key.clone()).await, StatusCode::OK);
    assert_eq!(wrap(sibling_key.clone()).await, StatusCode::NOT_FOUND);
    assert_eq!(wrap(unrelated_key.clone()).await, StatusCode::NOT_FOUND);

    // Deleting the delegating authorization deletes what was delegated under it.
    let id = parent["id"].as_str().unwrap();
    let (s, _) = ts
        .iam(
            Method::DELETE,
            &format!("/iam/v1/authorizations/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, list) = ts.iam(Method::GET, "/iam/v1/authorizations", None).await;
    assert_eq!(list["count"], 0, "{list}");
    let removed = Instant::now();
    loop {
        let s = wrap(backup_key.clone()).await;
        if s != StatusCode::OK {
            assert_eq!(s, StatusCode::NOT_FOUND);
            break;
        }
        assert!(removed.elapsed() < Duration::from_secs(2), "still wraps");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(wrap(es_key).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn revocations_reach_another_server_process_within_a_second() {
    // Two servers on one data directory: the change is made through one, the refusal observed
    // on the other, whose cache the change did not touch.
    let a = TestServer::start().await;
    let b = keyward_server::start(common::config(a.dir.path()))
        .await
        .unwrap();
    let root = a.create_root_key("shared").await;
    let (_, es_key) = service_identity(&a, "messagehub", "es-1").await;
    let (s, auth) = a
        .iam(
            Method::POST,
            "/iam/v1/authorizations",
            Some(
                json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                        "target": {"instance_id": a.instance}, "roles": ["Reader"]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{auth}");
    let token = login(&a.http, &b.url, &es_key).await;
    let wrap_on_b = || {
        let (http, url, token, root, inst) = (
            a.http.clone(),
            b.url.clone(),
            token.clone(),
            root.clone(),
            a.instance.clone(),
        );
        async move {
            http.post(format!("{url}/api/v2/keys/{root}/actions/wrap"))
                .bearer_auth(token)
                .header("bluemix-instance", inst)
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(wrap_on_b().await, StatusCode::OK);
    let id = auth["id"].as_str().unwrap();
    let (s, _) = a
        .iam(
            Method::DELETE,
            &format!("/iam/v1/authorizations/{id}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let removed = Instant::now();
    loop {
        let s = wrap_on_b().await;
        if s != StatusCode::OK {
            assert_eq!(s, StatusCode::NOT_FOUND);
            break;
        }
        assert!(
            removed.elapsed() < Duration::from_secs(1),
            "still allowed after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let ts = TestServer::start_with(|c| {
        c.rate_limit.per_second = 3;
        c.rate_limit.burst = 3;
    })
    .await;
    let (_, _, other) = ts.identity_with("user", &["Reader"]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..10 {
        let resp = ts
            .http
            .get(format!("{}/api/v2/keys", ts.url))
            .bearer_auth(&ts.token)
            .header("bluemix-instance", &ts.instance)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
        if resp.status() == StatusCode::TOO_MANY_REQUESTS && limited.is_none() {
            let retry = resp.headers()["retry-after"].to_str().unwrap().to_owned();
            let body: Value = resp.json().await.unwrap();
            limited = Some((retry, body));
        }
    }
    assert!(
        statuses.iter().take(3).all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let (retry, body) = limited.expect("the limit was reached");
    assert!(retry.parse::<u64>().unwrap() >= 1);
    assert_kp_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS_ERR",
    );
    // Another identity has its own budget.
    let (s, _) = ts
        .call_as(
            Method::GET,
            "/api/v2/keys",
            None,
            Some(&other),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn management_needs_the_administrator_and_validates_input() {
    let ts = TestServer::start().await;
    let (_, _, manager) = ts.identity_with("user", &["Manager"]).await;
    let (s, b) = ts
        .call_as(Method::GET, "/iam/v1/policies", None, Some(&manager), None)
        .await;
    assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    let (s, _) = ts
        .call_as(Method::GET, "/iam/v1/policies", None, None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    for (path, body) in [
        ("/iam/v1/identities", json!({"kind": "robot", "name": "x"})),
        (
            "/iam/v1/identities",
            json!({"kind": "service", "name": "x"}),
        ),
        (
            "/iam/v1/identities",
            json!({"kind": "user", "name": "x", "extra": 1}),
        ),
        (
            "/iam/v1/apikeys",
            json!({"iam_id": "IBMid-nobody", "name": "x"}),
        ),
        (
            "/iam/v1/policies",
            json!({"subject": "IBMid-nobody", "roles": ["Reader"]}),
        ),
        (
            "/iam/v1/policies",
            json!({"subject": "x", "roles": ["Emperor"]}),
        ),
        (
            "/iam/v1/authorizations",
            json!({"source": {"service_name": "s"}, "target": {}, "roles": ["Reader"]}),
        ),
    ] {
        let (s, b) = ts.iam(Method::POST, path, Some(body.clone())).await;
        assert!(
            s == StatusCode::BAD_REQUEST || s == StatusCode::NOT_FOUND,
            "{path} {body}: {s} {b}"
        );
    }
    // A policy on an instance of another account is refused.
    let (iam_id, _, _) = ts.identity_with("user", &[]).await;
    let (s, _) = ts
        .iam(
            Method::POST,
            "/iam/v1/policies",
            Some(json!({"subject": iam_id, "roles": ["Reader"],
                        "resource": {"instance_id": keyward_core::InstanceId::random().to_string()}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// The bootstrap administrator's iam_id and API key id, and a second API key of its own
/// (its id and a token from it).
async fn second_admin_key(ts: &TestServer) -> (String, String, String) {
    let first = ts.api_key.split('.').next().unwrap().to_owned();
    let (s, list) = ts.iam(Method::GET, "/iam/v1/apikeys", None).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let admin = list["apikeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == first.as_str())
        .unwrap()["iam_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, key) = ts
        .iam(
            Method::POST,
            "/iam/v1/apikeys",
            Some(json!({"iam_id": admin, "name": "second"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let token = login(&ts.http, &ts.url, key["apikey"].as_str().unwrap()).await;
    (first, key["id"].as_str().unwrap().to_owned(), token)
}

/// See: issue 18, item 11. An administrator cannot lock or delete the API key its request is
/// authenticated with (409 `API_KEY_IN_USE_ERR`, and the key keeps working); it can lock and
/// delete its other key.
#[tokio::test]
async fn an_administrator_cannot_lock_or_delete_the_api_key_it_is_using() {
    let ts = TestServer::start().await;
    let (first, second, _) = second_admin_key(&ts).await;
    for (method, path) in [
        (Method::POST, format!("/iam/v1/apikeys/{first}/lock")),
        (Method::DELETE, format!("/iam/v1/apikeys/{first}")),
    ] {
        let (s, b) = ts.iam(method, &path, None).await;
        assert_kp_error(s, &b, StatusCode::CONFLICT, "API_KEY_IN_USE_ERR");
    }
    let (s, b) = ts.call(Method::GET, "/api/v2/keys", None).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    login(&ts.http, &ts.url, &ts.api_key).await;
    // Its other key it may lock, unlock and delete.
    for (method, path) in [
        (Method::POST, format!("/iam/v1/apikeys/{second}/lock")),
        (Method::DELETE, format!("/iam/v1/apikeys/{second}/lock")),
        (Method::DELETE, format!("/iam/v1/apikeys/{second}")),
    ] {
        let (s, b) = ts.iam(method, &path, None).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{path}: {b}");
    }
}

/// See: issue 18, item 11. The last unlocked API key of the account's administrators cannot be
/// locked, even by a token whose own key another server locked a moment ago (still accepted
/// within the access cache's TTL): else nobody could administer the account any more.
#[tokio::test]
async fn the_last_unlocked_api_key_of_the_administrators_cannot_be_locked() {
    let a = TestServer::start_with(|c| c.access_cache_ttl_ms = 1000).await;
    let (first, second, second_token) = second_admin_key(&a).await;
    // A second server process on the same database, which has just seen the second key's token.
    let mut cb = common::config(a.dir.path());
    cb.access_cache_ttl_ms = 1000;
    let b = keyward_server::start(cb).await.unwrap();
    let on_b = |method: Method, path: String| {
        a.http
            .request(method, format!("{}{path}", b.url))
            .bearer_auth(&second_token)
            .send()
    };
    let resp = on_b(Method::GET, "/iam/v1/apikeys".into()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The first server locks the second key; the second server still honours its token for
    // up to a second, and with it tries to lock the first (and last unlocked) key.
    let (s, body) = a
        .iam(
            Method::POST,
            &format!("/iam/v1/apikeys/{second}/lock"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
    let resp = on_b(Method::POST, format!("/iam/v1/apikeys/{first}/lock"))
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED {
        // The second server learned of the lock first (PostgreSQL notifies it at once).
        assert!(common::on_postgres(), "{body}");
    } else {
        assert_kp_error(
            status,
            &body,
            StatusCode::CONFLICT,
            "LAST_ADMIN_API_KEY_ERR",
        );
    }
    login(&a.http, &a.url, &a.api_key).await;
    b.shutdown().await.unwrap();
}
