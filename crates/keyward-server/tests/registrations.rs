//! Registrations, lifecycle events, acknowledgements, the event stream and webhooks against a
//! real server: every route and its shapes, listing filters, every refusal (users, missing
//! roles, other owners, other instances, bad CRNs, duplicates, unknown registrations), the
//! delete refusal with `force` and `preventKeyDeletion`, SSE replay and resume, signed webhook
//! delivery with retries after 500s.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, assert_kp_error, login};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const CRN_A: &str = "crn:v1:bluemix:public:messagehub:us-south:a/acct:inst-a::";
const CRN_B: &str = "crn:v1:bluemix:public:messagehub:us-south:a/acct:inst-b:topic:orders";
const CRN_C: &str = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:cos-1:bucket:b";

/// Percent-encodes a CRN for a path segment (`:` and `/` encoded, as clients do).
fn enc(crn: &str) -> String {
    crn.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn reg_body(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json",
                     "collectionTotal": 1},
        "resources": [resource],
    })
}

fn reg_path(key: &str, crn: &str) -> String {
    format!("/api/v2/keys/{key}/registrations/{}", enc(crn))
}

/// A service identity (a service ID) with Reader on the instance: its token.
async fn service(ts: &TestServer) -> (String, String) {
    let (iam_id, _, token) = ts.identity_with("service_id", &["Reader"]).await;
    (iam_id, token)
}

async fn as_svc(
    ts: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    ts.call_as(method, path, body, Some(token), Some(&ts.instance))
        .await
}

async fn register(ts: &TestServer, token: &str, key: &str, crn: &str, resource: Value) -> Value {
    let (s, b) = as_svc(
        ts,
        token,
        Method::POST,
        &reg_path(key, crn),
        Some(reg_body(resource)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

#[tokio::test]
async fn a_service_registers_replaces_updates_and_deletes_and_customers_list() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("protects-topics").await;
    let (svc_id, svc) = service(&ts).await;

    let b = register(
        &ts,
        &svc,
        &key,
        CRN_A,
        json!({"description": "topic store A", "registrationMetadata": "shard=7",
               "preventKeyDeletion": false}),
    )
    .await;
    assert_eq!(
        b["metadata"]["collectionType"],
        "application/vnd.ibm.kms.registration+json"
    );
    let r = &b["resources"][0];
    assert_eq!(r["keyId"], key.as_str());
    assert_eq!(r["keyName"], "protects-topics");
    assert_eq!(r["resourceCrn"], CRN_A);
    assert_eq!(r["createdBy"], svc_id.as_str());
    assert_eq!(r["updatedBy"], svc_id.as_str());
    assert_eq!(r["description"], "topic store A");
    assert_eq!(r["registrationMetadata"], "shard=7");
    assert_eq!(r["preventKeyDeletion"], false);
    assert!(r["creationDate"].as_str().unwrap().ends_with('Z'));
    assert!(r["keyVersion"]["id"].is_string());
    assert!(r["keyVersion"]["creationDate"].is_string());
    assert_eq!(r["pendingEvents"], json!([]));

    // The same resource on the same key again: refused.
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_A),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(
        s,
        &e,
        StatusCode::CONFLICT,
        "REGISTRATION_ALREADY_EXISTS_ERR",
    );

    register(
        &ts,
        &svc,
        &key,
        CRN_B,
        json!({"description": "topic store B", "preventKeyDeletion": true}),
    )
    .await;
    let other = ts.create_root_key("protects-buckets").await;
    register(&ts, &svc, &other, CRN_C, json!({})).await;

    // The customer's view: no registrationMetadata.
    let (s, list) = ts
        .call(
            Method::GET,
            &format!("/api/v2/keys/{key}/registrations?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["metadata"]["collectionTotal"], 2);
    assert_eq!(list["metadata"]["totalCount"], 2);
    assert!(
        list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("registrationMetadata").is_none()),
        "{list}"
    );
    // The owner sees it.
    let (_, mine) = as_svc(
        &ts,
        &svc,
        Method::GET,
        &format!("/api/v2/keys/{key}/registrations"),
        None,
    )
    .await;
    assert_eq!(mine["resources"][0]["registrationMetadata"], "shard=7");

    // Listing over every key, with Key Protect's filters.
    let all = |q: String| {
        let ts = &ts;
        async move {
            let (s, b) = ts
                .call(Method::GET, &format!("/api/v2/keys/registrations{q}"), None)
                .await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["resourceCrn"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(all(String::new()).await.len(), 3);
    let wildcard = enc("crn:v1:bluemix:public:messagehub:us-south:a/acct:*:*");
    let mut hub = all(format!("?urlEncodedResourceCRNQuery={wildcard}")).await;
    hub.sort();
    assert_eq!(hub, [CRN_A, CRN_B]);
    assert_eq!(
        all(format!("?urlEncodedResourceCRNQuery={}", enc(CRN_C))).await,
        [CRN_C]
    );
    assert_eq!(all("?preventKeyDeletion=true".into()).await, [CRN_B]);
    assert_eq!(all("?preventKeyDeletion=false".into()).await.len(), 2);
    assert_eq!(all("?limit=1&offset=2".into()).await.len(), 1);
    let (s, paged) = ts
        .call(
            Method::GET,
            "/api/v2/keys/registrations?limit=1&totalCount=true",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(paged["metadata"]["collectionTotal"], 1);
    assert_eq!(paged["metadata"]["totalCount"], 3);
    for bad in [
        "?limit=-1",
        "?preventKeyDeletion=maybe",
        "?urlEncodedResourceCRNQuery=bucket",
    ] {
        let (s, e) = ts
            .call(
                Method::GET,
                &format!("/api/v2/keys/registrations{bad}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
    }

    // Replace: absent fields take defaults. Update: absent fields stay.
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::PUT,
        &reg_path(&key, CRN_A),
        Some(reg_body(json!({"description": "replaced"}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["description"], "replaced");
    assert!(b["resources"][0].get("registrationMetadata").is_none());
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::PATCH,
        &reg_path(&key, CRN_A),
        Some(reg_body(json!({"registrationMetadata": "shard=8"}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["description"], "replaced");
    assert_eq!(b["resources"][0]["registrationMetadata"], "shard=8");

    // A key CRN works wherever a key id does.
    let (_, meta) = ts
        .call(Method::GET, &format!("/api/v2/keys/{key}/metadata"), None)
        .await;
    let key_crn = meta["resources"][0]["crn"].as_str().unwrap().to_owned();
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::PATCH,
        &reg_path(&enc(&key_crn), CRN_A),
        Some(reg_body(json!({"description": "via crn"}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["keyId"], key.as_str());

    // Delete, then it is gone.
    let (s, _) = as_svc(&ts, &svc, Method::DELETE, &reg_path(&key, CRN_A), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = as_svc(&ts, &svc, Method::DELETE, &reg_path(&key, CRN_A), None).await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "REGISTRATION_NOT_FOUND_ERR");
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::PATCH,
        &reg_path(&key, CRN_A),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "REGISTRATION_NOT_FOUND_ERR");

    // Audited.
    let db = ts.db().await;
    for action in [
        "kms.registrations.create",
        "kms.registrations.replace",
        "kms.registrations.update",
        "kms.registrations.delete",
    ] {
        let n = db
            .int(
                "SELECT COUNT(*) FROM audit_events WHERE action = ?1 AND outcome = 'success'",
                &[action],
            )
            .await;
        assert!(n >= 1, "{action}");
    }
}

#[tokio::test]
async fn registrations_are_refused_to_users_strangers_other_owners_and_bad_input() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("guarded").await;
    let (_, svc) = service(&ts).await;
    let (_, rival) = service(&ts).await;
    register(
        &ts,
        &svc,
        &key,
        CRN_A,
        json!({"registrationMetadata": "mine"}),
    )
    .await;

    // A user, even a Manager, does not register: services do.
    let (_, _, manager) = ts.identity_with("user", &["Manager"]).await;
    let (s, e) = as_svc(
        &ts,
        &manager,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::FORBIDDEN, "SERVICE_ONLY_ERR");
    // A service without any role on the instance does not see the key.
    let (_, _, roleless) = ts.identity_with("service_id", &[]).await;
    let (s, e) = as_svc(
        &ts,
        &roleless,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    // Another service cannot change, delete or read the metadata of this one's registration.
    for method in [Method::PUT, Method::PATCH] {
        let (s, e) = as_svc(
            &ts,
            &rival,
            method,
            &reg_path(&key, CRN_A),
            Some(reg_body(json!({"description": "hijack"}))),
        )
        .await;
        assert_kp_error(s, &e, StatusCode::FORBIDDEN, "RESOURCE_OWNER_ERR");
    }
    let (s, e) = as_svc(&ts, &rival, Method::DELETE, &reg_path(&key, CRN_A), None).await;
    assert_kp_error(s, &e, StatusCode::FORBIDDEN, "RESOURCE_OWNER_ERR");
    let (_, seen) = as_svc(
        &ts,
        &rival,
        Method::GET,
        &format!("/api/v2/keys/{key}/registrations"),
        None,
    )
    .await;
    assert!(
        seen["resources"][0].get("registrationMetadata").is_none(),
        "{seen}"
    );

    // Bad CRNs, bodies and versions.
    for bad in [
        "not-a-crn",
        "crn:v1:too:short",
        "crn:v1:bluemix:public:svc:us-south:a/acct:*::",
    ] {
        let (s, e) = as_svc(
            &ts,
            &svc,
            Method::POST,
            &reg_path(&key, bad),
            Some(reg_body(json!({}))),
        )
        .await;
        assert_kp_error(s, &e, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    }
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(json!({"preventKeyDeletion": "yes"}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(
            json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json",
                                 "collectionTotal": 1}, "resources": [{}]}),
        ),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(json!({"description": "x".repeat(241)}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(
            json!({"keyVersionId": "00000000-0000-4000-8000-000000000000"}),
        )),
    )
    .await;
    assert_kp_error(
        s,
        &e,
        StatusCode::UNPROCESSABLE_ENTITY,
        "KEY_VERSION_INVALID",
    );
    // A standard key protects nothing; an unknown key is not found; a disabled key takes no
    // new registrations.
    let standard = ts
        .create_key(json!({"name": "std", "extractable": true}))
        .await;
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&standard, CRN_B),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::BAD_REQUEST, "KEY_ROOT_REQ_REG_ERR");
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path("00000000-0000-4000-8000-000000000000", CRN_B),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    assert_eq!(
        ts.action(&key, "disable", Value::Null).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, CRN_B),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");

    // Another instance: the key does not exist there.
    let (s, inst) = ts
        .iam(
            Method::POST,
            "/iam/v1/instances",
            Some(json!({"name": "elsewhere"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inst}");
    let elsewhere = inst["id"].as_str().unwrap();
    let (s, e) = ts
        .call_as(
            Method::POST,
            &reg_path(&key, CRN_C),
            Some(reg_body(json!({}))),
            Some(&svc),
            Some(elsewhere),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, list) = ts
        .call_as(
            Method::GET,
            "/api/v2/keys/registrations",
            None,
            Some(&ts.token),
            Some(elsewhere),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["resources"], json!([]));
}

#[tokio::test]
async fn a_registered_key_is_deleted_only_with_force_and_never_under_prevent_key_deletion() {
    let ts = TestServer::start().await;
    let (_, svc) = service(&ts).await;
    let key = ts.create_root_key("registered").await;
    register(&ts, &svc, &key, CRN_A, json!({})).await;
    let (s, e) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{key}"), None)
        .await;
    assert_kp_error(s, &e, StatusCode::CONFLICT, "PROTECTED_RESOURCE_ERR");
    let (s, e) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{key}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{e}");

    let worm = ts.create_root_key("worm").await;
    register(&ts, &svc, &worm, CRN_A, json!({})).await;
    register(&ts, &svc, &worm, CRN_B, json!({"preventKeyDeletion": true})).await;
    for path in [
        format!("/api/v2/keys/{worm}"),
        format!("/api/v2/keys/{worm}?force=true"),
    ] {
        let (s, e) = ts.call(Method::DELETE, &path, None).await;
        assert_kp_error(s, &e, StatusCode::CONFLICT, "PREV_KEY_DEL_ERR");
    }
    let (_, meta) = ts
        .call(Method::GET, &format!("/api/v2/keys/{worm}/metadata"), None)
        .await;
    assert_eq!(meta["resources"][0]["state"], 1, "still active");
    // Once the service lifts the retention, force deletes it.
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::PATCH,
        &reg_path(&worm, CRN_B),
        Some(reg_body(json!({"preventKeyDeletion": false}))),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{worm}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // The refusals are audited with their reason.
    let refused = ts
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'kms.secrets.delete'
               AND outcome = 'failure' AND reason_code = 409",
            &[],
        )
        .await;
    assert_eq!(refused, 3);
}

/// Reads server-sent events from a streaming response until `n` arrived (or `wait` passed).
/// See: issue 18, item 7. A Reader-level service could block a key's deletion for ever:
/// unbounded registrations, `preventKeyDeletion` surviving its owner's deletion, no override.
#[tokio::test]
async fn a_reader_service_cannot_pin_a_key_for_ever() {
    let ts = TestServer::start().await;
    let (_, svc) = service(&ts).await;

    // Bounded: 100 registrations per key, 4096 bytes of metadata.
    let key = ts.create_root_key("crowded").await;
    let crn = |n: u32| format!("crn:v1:bluemix:public:messagehub:us-south:a/acct:inst-{n}::");
    for n in 0..100 {
        register(&ts, &svc, &key, &crn(n), json!({})).await;
    }
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&key, &crn(100)),
        Some(reg_body(json!({}))),
    )
    .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "REGISTRATION_QUOTA_ERR");
    let other = ts.create_root_key("roomy").await;
    // 2 049 characters, 4 098 bytes.
    let (s, b) = as_svc(
        &ts,
        &svc,
        Method::POST,
        &reg_path(&other, CRN_A),
        Some(reg_body(json!({"registrationMetadata": "é".repeat(2_049)}))),
    )
    .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    register(
        &ts,
        &svc,
        &other,
        CRN_A,
        json!({"registrationMetadata": "é".repeat(2_048)}),
    )
    .await;

    // The operator's override: KeyPurge or Administrator, with force, audited.
    let worm = ts.create_root_key("worm").await;
    register(&ts, &svc, &worm, CRN_B, json!({"preventKeyDeletion": true})).await;
    let (_, _, manager) = ts.identity_with("user", &["Manager"]).await;
    let overriding = format!("/api/v2/keys/{worm}?force=true&preventKeyDeletionOverride=true");
    let (s, b) = ts
        .call_as(
            Method::DELETE,
            &overriding,
            None,
            Some(&manager),
            Some(&ts.instance),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    let (s, b) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{worm}?preventKeyDeletionOverride=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = ts.call(Method::DELETE, &overriding, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (_, meta) = ts
        .call(Method::GET, &format!("/api/v2/keys/{worm}/metadata"), None)
        .await;
    assert_eq!(meta["resources"][0]["state"], 5, "destroyed: {meta}");
    let audited = ts
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE action = 'kms.secrets.delete'
               AND outcome = 'success' AND reason LIKE '%preventKeyDeletionOverride=true%'",
            &[],
        )
        .await;
    assert_eq!(audited, 1);

    // A registration goes with its owner: deleting the service's identity frees the key.
    let (owner, owner_token) = service(&ts).await;
    let kept = ts.create_root_key("kept").await;
    register(
        &ts,
        &owner_token,
        &kept,
        CRN_C,
        json!({"preventKeyDeletion": true}),
    )
    .await;
    let (s, e) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{kept}?force=true"),
            None,
        )
        .await;
    assert_kp_error(s, &e, StatusCode::CONFLICT, "PREV_KEY_DEL_ERR");
    let (s, b) = ts
        .iam(Method::DELETE, &format!("/iam/v1/identities/{owner}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, e) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{kept}"), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "no registration is left: {e}");
}

async fn read_events(resp: &mut reqwest::Response, n: usize, wait: Duration) -> Vec<Value> {
    let mut buf = String::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            _ => break,
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(v.trim().to_owned());
                }
            }
            if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                let body: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(body["seq"].to_string(), id);
                assert_eq!(body["eventType"], event.as_str());
                out.push(body);
            }
        }
    }
    out
}

async fn stream(ts: &TestServer, token: &str, last: Option<&str>) -> reqwest::Response {
    let mut req = ts
        .http
        .get(format!("{}/api/v2/event_stream", ts.url))
        .bearer_auth(token)
        .header("bluemix-instance", &ts.instance);
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    resp
}

fn ack_body(event_id: &str, state: &str, rewrapped: Option<&str>) -> Value {
    let mut r = json!({"eventId": event_id, "adopterKeyState": state,
                       "timestamp": "2026-11-23T12:00:00Z"});
    if let Some(v) = rewrapped {
        r["keyStateData"] = json!({"rewrappedKeyVersion": v});
    }
    json!({"metadata": {"collectionType": "application/vnd.ibm.kms.event_acknowledge+json",
                        "collectionTotal": 1},
           "resources": [r]})
}

#[tokio::test]
async fn lifecycle_changes_reach_registered_services_and_acks_clear_them() {
    let ts = TestServer::start_with(|c| c.lifecycle.purge_wait_secs = 0).await;
    let key = ts.create_root_key("evented").await;
    let (svc_id, svc) = service(&ts).await;
    let (_, bystander) = service(&ts).await;
    register(&ts, &svc, &key, CRN_A, json!({})).await;
    register(&ts, &svc, &key, CRN_B, json!({})).await;

    // Every lifecycle change makes one event for the owning service, listing its CRNs.
    for action in ["rotate", "disable", "enable"] {
        let (s, b) = ts.action(&key, action, json!({})).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{action}: {b}");
    }
    let (s, _) = ts
        .call(
            Method::POST,
            &format!("/api/v2/keys/{key}/actions/sync"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let mut resp = stream(&ts, &svc, None).await;
    let events = read_events(&mut resp, 4, Duration::from_secs(10)).await;
    drop(resp);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["rotate", "disable", "enable", "sync"]);
    let first = &events[0];
    assert_eq!(first["action"], "kms.secrets.rotate");
    assert_eq!(first["keyId"], key.as_str());
    assert_eq!(first["instanceId"], ts.instance.as_str());
    assert!(
        first["keyCrn"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":key:{key}"))
    );
    assert_eq!(first["resourceCrns"], json!([CRN_A, CRN_B]));
    assert_eq!(events[1]["keyState"], 2);
    assert_eq!(events[2]["keyState"], 1);
    assert!(uuid_like(first["eventId"].as_str().unwrap()));
    // A service with no registration on the key gets nothing.
    let mut none = stream(&ts, &bystander, None).await;
    assert!(
        read_events(&mut none, 1, Duration::from_millis(600))
            .await
            .is_empty()
    );

    // The customer sees which services have not acted yet.
    let reg = first_registration(&ts, &key).await;
    assert_eq!(reg["pendingEvents"].as_array().unwrap().len(), 4, "{reg}");
    assert_eq!(reg["pendingEvents"][1]["eventType"], "disable");

    // Only the recipient may acknowledge.
    let disable_id = events[1]["eventId"].as_str().unwrap();
    let (s, e) = as_svc(
        &ts,
        &bystander,
        Method::POST,
        "/api/v2/event_ack",
        Some(ack_body(disable_id, "DEK_DISABLED", None)),
    )
    .await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "EVENT_NOT_FOUND_ERR");
    let (s, e) = ts
        .call(
            Method::POST,
            "/api/v2/event_ack",
            Some(ack_body(disable_id, "DEK_DISABLED", None)),
        )
        .await;
    assert_kp_error(s, &e, StatusCode::NOT_FOUND, "EVENT_NOT_FOUND_ERR");
    for bad in [
        ack_body(disable_id, "DEK_SIDEWAYS", None),
        json!({"resources": []}),
        json!({"resources": [{"eventId": disable_id, "adopterKeyState": "DEK_DISABLED",
                              "timestamp": "yesterday"}]}),
    ] {
        let (s, e) = as_svc(&ts, &svc, Method::POST, "/api/v2/event_ack", Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    }
    for (i, state) in ["DEK_ENABLED", "DEK_DISABLED", "DEK_ENABLED", "DEK_ENABLED"]
        .iter()
        .enumerate()
    {
        let rewrapped = (i == 0).then(|| events[0]["keyVersion"].as_str().unwrap());
        let id = events[i]["eventId"].as_str().unwrap();
        let (s, e) = as_svc(
            &ts,
            &svc,
            Method::POST,
            "/api/v2/event_ack",
            Some(ack_body(id, state, rewrapped)),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{e}");
    }
    let reg = first_registration(&ts, &key).await;
    assert_eq!(reg["pendingEvents"], json!([]), "{reg}");
    assert_eq!(reg["adopterKeyState"], "DEK_ENABLED");
    // Acknowledged events are not replayed.
    let mut again = stream(&ts, &svc, None).await;
    assert!(
        read_events(&mut again, 1, Duration::from_millis(600))
            .await
            .is_empty()
    );
    drop(again);
    // Acknowledgements are audited under Key Protect's names, by the service.
    let acks: Vec<(String, String)> = ts
        .db()
        .await
        .rows(
            "SELECT action, initiator FROM audit_events
             WHERE action LIKE 'kms.secrets.ack-%' AND outcome = 'success' ORDER BY time",
            &[],
        )
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    let names: Vec<&str> = acks.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        [
            "kms.secrets.ack-rotate",
            "kms.secrets.ack-disable",
            "kms.secrets.ack-enable",
            "kms.secrets.ack-sync"
        ]
    );
    assert!(acks.iter().all(|(_, who)| *who == svc_id));

    // Delete (forced), restore and purge reach the service too.
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{key}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{key}/restore"), None)
        .await;
    assert!(s.is_success(), "{b}");
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{key}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{key}/purge"), None)
        .await;
    assert!(s.is_success(), "{b}");
    let mut live = stream(&ts, &svc, None).await;
    let tail = read_events(&mut live, 4, Duration::from_secs(10)).await;
    let types: Vec<&str> = tail
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["delete", "restore", "delete", "purge"]);
    assert_eq!(tail[3]["keyState"], 5);
}

async fn first_registration(ts: &TestServer, key: &str) -> Value {
    let (s, b) = ts
        .call(
            Method::GET,
            &format!("/api/v2/keys/{key}/registrations"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    b["resources"][0].clone()
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn the_stream_replays_resumes_after_last_event_id_and_delivers_live_events() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("streamed").await;
    let (_, svc) = service(&ts).await;
    register(&ts, &svc, &key, CRN_A, json!({})).await;
    let sync = || async {
        let (s, _) = ts
            .call(
                Method::POST,
                &format!("/api/v2/keys/{key}/actions/sync"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    };
    for _ in 0..3 {
        sync().await;
    }
    let mut resp = stream(&ts, &svc, None).await;
    let replay = read_events(&mut resp, 3, Duration::from_secs(10)).await;
    assert_eq!(replay.len(), 3);
    let seqs: Vec<u64> = replay.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Live: an event committed while the stream is open arrives.
    sync().await;
    let live = read_events(&mut resp, 1, Duration::from_secs(5)).await;
    assert_eq!(live.len(), 1);
    assert!(live[0]["seq"].as_u64().unwrap() > seqs[2]);
    drop(resp);
    // Resume after the first event: the rest, in order.
    let mut resumed = stream(&ts, &svc, Some(&seqs[0].to_string())).await;
    let rest = read_events(&mut resumed, 3, Duration::from_secs(10)).await;
    let rest_seqs: Vec<u64> = rest.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        rest_seqs,
        [seqs[1], seqs[2], live[0]["seq"].as_u64().unwrap()]
    );
    // Locking the service's identity ends its stream (within the access cache TTL).
    let svc_id = first_registration(&ts, &key).await["createdBy"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = ts
        .iam(
            Method::POST,
            &format!("/iam/v1/identities/{svc_id}/lock"),
            None,
        )
        .await;
    assert!(s.is_success(), "{b}");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = resumed.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived the identity's lock");
    // A malformed Last-Event-ID is a clear 400.
    let resp = ts
        .http
        .get(format!("{}/api/v2/event_stream", ts.url))
        .bearer_auth(&ts.token)
        .header("bluemix-instance", &ts.instance)
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // No token: 401.
    let resp = ts
        .http
        .get(format!("{}/api/v2/event_stream", ts.url))
        .header("bluemix-instance", &ts.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

/// What the test's webhook receiver saw.
#[derive(Default)]
struct Received {
    /// (event id header, body, signature valid) of every request, failed ones included.
    requests: Vec<(String, Value, bool)>,
    /// How many requests to answer 500 before answering 204.
    fail_first: usize,
    secret: String,
    /// When each request arrived.
    at: Vec<Instant>,
}

/// A real HTTP server on a free port that checks each webhook's signature.
async fn receiver(received: Arc<Mutex<Received>>) -> String {
    use axum::http::HeaderMap;
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let mut r = received.lock().unwrap();
                let sig = headers
                    .get("x-keyward-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let valid =
                    keyward_api::events::verify_signature(&r.secret, sig, &body, now, 300).is_ok();
                let id = headers
                    .get("x-keyward-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                r.requests.push((id, json, valid));
                r.at.push(Instant::now());
                if r.requests.len() <= r.fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn webhooks_are_signed_retried_after_500s_and_delivered_once_acknowledged_by_2xx() {
    let ts = TestServer::start().await;
    let key = ts.create_root_key("hooked").await;
    let (_, svc) = service(&ts).await;
    register(&ts, &svc, &key, CRN_A, json!({})).await;
    let received = Arc::new(Mutex::new(Received {
        fail_first: 2,
        ..Received::default()
    }));
    let url = receiver(received.clone()).await;

    // Subscription: PUT shows the secret once; GET shows only the URL.
    let (s, e) = as_svc(&ts, &svc, Method::GET, "/api/v2/event_subscription", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    for bad in [json!({"url": "ftp://x"}), json!({}), json!({"url": 7})] {
        let (s, e) = as_svc(
            &ts,
            &svc,
            Method::PUT,
            "/api/v2/event_subscription",
            Some(bad),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    }
    let (s, sub) = as_svc(
        &ts,
        &svc,
        Method::PUT,
        "/api/v2/event_subscription",
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{sub}");
    assert_eq!(sub["url"], url.as_str());
    let secret = sub["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        keyward_api::events::decode_secret(&secret)
            .unwrap()
            .expose()
            .len(),
        32
    );
    received.lock().unwrap().secret = secret.clone();
    let (s, got) = as_svc(&ts, &svc, Method::GET, "/api/v2/event_subscription", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, json!({"url": url}));
    // The secret is not stored in the clear.
    let stored = ts
        .db()
        .await
        .blobs("SELECT secret FROM event_subscriptions", &[])
        .await
        .remove(0);
    let raw = keyward_api::events::decode_secret(&secret).unwrap();
    assert!(
        !stored
            .windows(raw.expose().len())
            .any(|w| w == raw.expose())
    );

    let disabled_at = Instant::now();
    let (s, _) = ts.action(&key, "disable", Value::Null).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Two 500s, then 204: three requests, 1 s and 2 s apart.
    let deadline = Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().requests.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    {
        let r = received.lock().unwrap();
        assert_eq!(r.requests.len(), 3, "three attempts");
        let (id, body, _) = &r.requests[0];
        assert_eq!(body["eventType"], "disable");
        assert_eq!(body["eventId"], id.as_str());
        assert!(
            r.requests
                .iter()
                .all(|(i, b, valid)| i == id && b == body && *valid)
        );
        let gaps: Vec<u128> =
            r.at.iter()
                .map(|t| t.duration_since(disabled_at).as_millis())
                .collect();
        eprintln!("webhook attempts after the disable request was sent (ms): {gaps:?}");
    }
    // Delivered: no fourth attempt, and no backlog.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(received.lock().unwrap().requests.len(), 3);
    let undelivered = ts
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM key_events WHERE delivered_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(undelivered, 0);

    // A forged signature is refused by the receiver's check.
    let body = br#"{"eventType":"delete"}"#;
    let forged = keyward_api::events::sign(
        &keyward_api::events::decode_secret("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
            .unwrap(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        body,
    );
    assert!(
        keyward_api::events::verify_signature(
            &secret,
            &forged,
            body,
            time::OffsetDateTime::now_utc().unix_timestamp(),
            300
        )
        .is_err()
    );

    let (s, _) = as_svc(
        &ts,
        &svc,
        Method::DELETE,
        "/api/v2/event_subscription",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::DELETE,
        "/api/v2/event_subscription",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn two_servers_on_one_database_share_the_outbox_without_double_delivery() {
    let a = TestServer::start().await;
    // A second server process on the same data directory: its own writer, worker and streams.
    let b = keyward_server::start(common::config(a.dir.path()))
        .await
        .unwrap();
    let key = a.create_root_key("shared-outbox").await;
    let (_, svc) = service(&a).await;
    register(&a, &svc, &key, CRN_A, json!({})).await;
    let received = Arc::new(Mutex::new(Received::default()));
    let url = receiver(received.clone()).await;
    let (s, sub) = as_svc(
        &a,
        &svc,
        Method::PUT,
        "/api/v2/event_subscription",
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    received.lock().unwrap().secret = sub["secret"].as_str().unwrap().to_owned();

    // A stream on B sees what A commits (B polls the database).
    let mut on_b = a
        .http
        .get(format!("{}/api/v2/event_stream", b.url))
        .bearer_auth(&svc)
        .header("bluemix-instance", &a.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), StatusCode::OK);
    let sync_on = |base: String| {
        let (http, token, instance) = (a.http.clone(), a.token.clone(), a.instance.clone());
        let key = key.clone();
        async move {
            let r = http
                .post(format!("{base}/api/v2/keys/{key}/actions/sync"))
                .bearer_auth(token)
                .header("bluemix-instance", instance)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::NO_CONTENT);
        }
    };
    let started = Instant::now();
    sync_on(a.url.clone()).await;
    let seen = read_events(&mut on_b, 1, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 1);
    eprintln!(
        "cross-process stream latency: {} ms",
        started.elapsed().as_millis()
    );
    drop(on_b);

    // Both workers deliver from the one outbox: every event exactly once.
    for i in 0..19 {
        let base = if i % 2 == 0 {
            b.url.clone()
        } else {
            a.url.clone()
        };
        sync_on(base).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().requests.len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    {
        let r = received.lock().unwrap();
        let mut ids: Vec<&str> = r.requests.iter().map(|(id, _, _)| id.as_str()).collect();
        assert!(r.requests.iter().all(|(_, _, valid)| *valid));
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!((ids.len(), n), (20, 20), "each event delivered once");
    }
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_schedulers_rotations_and_purges_reach_registered_services() {
    let ts = TestServer::start_with(|c| {
        c.scheduler.tick_secs = 1;
        c.lifecycle.rotation_month_secs = 2;
        c.lifecycle.auto_purge_after_secs = 3;
    })
    .await;
    let (_, svc) = service(&ts).await;
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys_with_policy_overrides",
            Some(json!({
                "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                "resources": [{"name": "rotating", "rotation": {"enabled": true, "interval_month": 1},
                               "dualAuthDelete": {"enabled": false}}],
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let rotating = b["resources"][0]["id"].as_str().unwrap().to_owned();
    register(&ts, &svc, &rotating, CRN_A, json!({})).await;
    let doomed = ts.create_root_key("auto-purged").await;
    register(&ts, &svc, &doomed, CRN_B, json!({})).await;
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{doomed}?force=true"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let mut resp = stream(&ts, &svc, None).await;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline
        && !(seen.contains(&("rotate".to_owned(), rotating.clone()))
            && seen.contains(&("purge".to_owned(), doomed.clone())))
    {
        for e in read_events(&mut resp, 1, Duration::from_secs(2)).await {
            seen.push((
                e["eventType"].as_str().unwrap().to_owned(),
                e["keyId"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(
        seen.contains(&("delete".to_owned(), doomed.clone())),
        "{seen:?}"
    );
    assert!(seen.contains(&("rotate".to_owned(), rotating)), "{seen:?}");
    assert!(seen.contains(&("purge".to_owned(), doomed)), "{seen:?}");
}

#[tokio::test]
async fn a_graceful_shutdown_ends_open_event_streams_instead_of_waiting_for_them() {
    let mut ts = TestServer::start().await;
    let (_, svc) = service(&ts).await;
    let mut open = stream(&ts, &svc, None).await;
    // Without ending the stream, the graceful shutdown would wait its full 10 s for it.
    tokio::time::timeout(Duration::from_secs(5), ts.stop())
        .await
        .expect("the shutdown waited for the open stream");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = open.chunk().await {}
    })
    .await;
    assert!(ended.is_ok());
}

/// By default a webhook may only reach public addresses: a tenant's subscription must not make
/// the server send requests into its own network (loopback, private ranges, a cloud metadata
/// service). The refusal is a clear 400, audited, and nothing is stored.
#[tokio::test]
async fn webhooks_to_private_addresses_are_refused_by_default() {
    let ts = TestServer::start_with(|c| c.webhooks.allow_private_addresses = false).await;
    let (_, svc) = service(&ts).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ] {
        let (s, e) = as_svc(
            &ts,
            &svc,
            Method::PUT,
            "/api/v2/event_subscription",
            Some(json!({ "url": url })),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {e}");
        let message = e["resources"][0]["errorMsg"].as_str().unwrap_or_default();
        assert!(message.contains("not a public address"), "{url}: {e}");
    }
    let (s, e) = as_svc(&ts, &svc, Method::GET, "/api/v2/event_subscription", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing stored: {e}");
    let refused = ts
        .db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events
             WHERE action = 'kms.eventsubscription.put' AND outcome = 'failure'",
            &[],
        )
        .await;
    assert_eq!(refused, 7, "every refusal is audited");
    // A public address literal passes the check (nothing is sent until an event is due).
    let (s, e) = as_svc(
        &ts,
        &svc,
        Method::PUT,
        "/api/v2/event_subscription",
        Some(json!({ "url": "https://8.8.8.8/hook" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{e}");
}

/// `GET /api/v2/keys/registrations` with `X-Kms-Key-Ring`: that ring's keys' registrations only,
/// and a role on the ring is enough to list them (as for the key listing).
#[tokio::test]
async fn the_instance_listing_is_narrowed_by_x_kms_key_ring() {
    let ts = TestServer::start().await;
    let plain = ts.create_root_key("in-default").await;
    let (s, b) = ts
        .call(Method::POST, "/api/v2/key_rings/team-a", None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let ringed = ts
        .create_key(json!({"name": "ringed", "keyRingID": "team-a"}))
        .await;
    let (_, svc) = service(&ts).await;
    register(&ts, &svc, &plain, CRN_A, json!({})).await;
    register(&ts, &svc, &ringed, CRN_B, json!({})).await;
    register(&ts, &svc, &ringed, CRN_C, json!({})).await;

    let list = |token: String, ring: Option<&'static str>| {
        let ts = &ts;
        async move {
            let path = "/api/v2/keys/registrations?totalCount=true";
            let (status, body) = ts.get_in_ring(path, &token, ring).await;
            let crns: Vec<String> = body["resources"]
                .as_array()
                .map(|a| {
                    a.iter()
                        // (an error body's resources are errors: no resourceCrn)
                        .filter_map(|r| r["resourceCrn"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            (status, crns, body)
        }
    };
    let admin = ts.token.clone();
    let (s, crns, b) = list(admin.clone(), None).await;
    assert_eq!((s, crns.len()), (StatusCode::OK, 3), "{b}");
    let (s, mut crns, b) = list(admin.clone(), Some("team-a")).await;
    crns.sort();
    let mut want = vec![CRN_B.to_owned(), CRN_C.to_owned()];
    want.sort();
    assert_eq!((s, crns), (StatusCode::OK, want), "{b}");
    assert_eq!(b["metadata"]["totalCount"], 2, "{b}");
    let (s, crns, b) = list(admin.clone(), Some("default")).await;
    assert_eq!((s, crns), (StatusCode::OK, vec![CRN_A.to_owned()]), "{b}");
    let (s, crns, b) = list(admin, Some("no-such-ring")).await;
    assert_eq!((s, crns.len()), (StatusCode::OK, 0), "{b}");

    // A Reader of ring team-a only: its ring's registrations with the header, 403 without it
    // (the instance listing needs a role on the instance).
    let (iam_id, key, _) = ts.identity_with("user", &[]).await;
    let (s, p) = ts
        .iam(
            Method::POST,
            "/iam/v1/policies",
            Some(json!({"subject": iam_id, "roles": ["Reader"],
                        "resource": {"instance_id": ts.instance, "key_ring": "team-a"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let reader = login(&ts.http, &ts.url, &key).await;
    let (s, crns, b) = list(reader.clone(), Some("team-a")).await;
    assert_eq!((s, crns.len()), (StatusCode::OK, 2), "{b}");
    let (s, _, b) = list(reader.clone(), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // Another ring: refused exactly as the key listing refuses it.
    let (s, _, b) = list(reader.clone(), Some("default")).await;
    let (keys, _) = ts
        .get_in_ring("/api/v2/keys", &reader, Some("default"))
        .await;
    assert!(keys.is_client_error(), "{keys}");
    assert_eq!(s, keys, "{b}");
}

/// Issue 18 item 8: `event_subscription` and `event_stream` never checked access, so an
/// identity with no policy in the instance used both (on every instance of its account). Now
/// the caller must hold some role in the instance; a Reader still may.
#[tokio::test]
async fn event_subscription_and_stream_need_a_role_in_the_instance() {
    let ts = TestServer::start().await;
    let (_, _, nobody) = ts.identity_with("user", &[]).await;
    let (_, _, reader) = ts.identity_with("user", &["Reader"]).await;
    let subscribe = |token: String| {
        let ts = &ts;
        async move {
            ts.call_as(
                Method::PUT,
                "/api/v2/event_subscription",
                Some(json!({"url": "https://93.184.216.34/hook"})),
                Some(&token),
                Some(&ts.instance),
            )
            .await
        }
    };
    let (s, b) = subscribe(nobody.clone()).await;
    assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    for (method, path) in [
        (Method::GET, "/api/v2/event_subscription"),
        (Method::DELETE, "/api/v2/event_subscription"),
    ] {
        let (s, b) = ts
            .call_as(method, path, None, Some(&nobody), Some(&ts.instance))
            .await;
        assert_kp_error(s, &b, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    }
    let resp = ts
        .http
        .get(format!("{}/api/v2/event_stream", ts.url))
        .bearer_auth(&nobody)
        .header("bluemix-instance", &ts.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Nothing was stored for the refused caller; a Reader of the instance may subscribe.
    let (s, b) = subscribe(reader.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    stream(&ts, &reader, None).await;
}

/// An identity holds at most `[limits] event_streams_per_identity` event streams; one more is a
/// 429 in Key Protect's error format, and a closed stream frees its slot (issue 18: SSE streams
/// were unbounded per identity).
#[tokio::test]
async fn event_streams_per_identity_are_bounded() {
    let ts = TestServer::start_with(|c| c.limits.event_streams_per_identity = 2).await;
    let open = || async {
        ts.http
            .get(format!("{}/api/v2/event_stream", ts.url))
            .bearer_auth(&ts.token)
            .header("bluemix-instance", &ts.instance)
            .send()
            .await
            .unwrap()
    };
    let (a, b) = (open().await, open().await);
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let third = open().await;
    let status = third.status();
    let body: Value = third.json().await.unwrap();
    assert_kp_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS_ERR",
    );
    // Another identity is not affected.
    let (_, _, other) = ts.identity_with("user", &["Reader"]).await;
    let resp = ts
        .http
        .get(format!("{}/api/v2/event_stream", ts.url))
        .bearer_auth(&other)
        .header("bluemix-instance", &ts.instance)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Closing one frees its slot: the server sees the disconnect at its next write, a
    // keep-alive comment at the latest (every 15 s).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = open().await;
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was not freed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(b);
}
