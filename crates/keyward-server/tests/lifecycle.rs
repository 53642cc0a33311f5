//! The Key Protect surface beyond wrap and unwrap, against a real server: the deletion lifecycle
//! (dual authorization, restore, purge and its proof), the scheduler, key rings, aliases, and
//! enforced instance policies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_kp_error};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn collection(resources: Value) -> Value {
    let n = resources.as_array().map_or(1, Vec::len);
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": n},
        "resources": resources,
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls `probe` until it returns true or `limit` passes.
async fn eventually(limit: Duration, mut probe: impl AsyncFnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if probe().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// Every stored wrapped material of a key, read straight from the database file.
async fn stored_material(ts: &TestServer, key: &str) -> Vec<Vec<u8>> {
    ts.db()
        .await
        .blobs(
            "SELECT material FROM key_versions WHERE key_id = ?1",
            &[key],
        )
        .await
}

fn file_contains(path: &std::path::Path, needle: &[u8]) -> bool {
    let Ok(hay) = std::fs::read(path) else {
        return false;
    };
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A purged key cannot unwrap, be restored or be read.
async fn assert_purged(ts: &TestServer, id: &str, ciphertext: &str) {
    let (s, b) = ts
        .action(id, "unwrap", json!({"ciphertext": ciphertext}))
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{id}/restore"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (s, b) = ts
        .call(Method::GET, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
}

#[tokio::test]
async fn purge_erases_the_material_from_the_database_file_for_good() {
    if common::sqlite_file_only("purge_erases_the_material_from_the_database_file_for_good") {
        return;
    }
    let ts = TestServer::start_with(|c| c.lifecycle.purge_wait_secs = 0).await;
    let id = ts.create_root_key("doomed").await;
    assert_eq!(
        ts.action(&id, "rotate", json!({})).await.0,
        StatusCode::NO_CONTENT
    );
    let (s, wrapped) = ts.action(&id, "wrap", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let ciphertext = wrapped["ciphertext"].as_str().unwrap().to_owned();
    let materials = stored_material(&ts, &id).await;
    assert_eq!(materials.len(), 2);
    let (db, wal) = (ts.db_path(), ts.db_path().with_extension("db-wal"));
    // Wait for the checkpointer so the material is in the main file too (the stronger case).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        materials
            .iter()
            .all(|m| file_contains(&db, m) || file_contains(&wal, m)),
        "the scan finds live material (else it proves nothing)"
    );

    // Purge is refused while the key is not deleted.
    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{id}/purge"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    assert_eq!(
        ts.call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{id}/purge"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["state"], 5);
    assert_eq!(b["resources"][0]["purgeAllowed"], true);

    assert!(stored_material(&ts, &id).await.is_empty());
    for m in &materials {
        assert!(
            !file_contains(&db, m),
            "wrapped material left in keyward.db"
        );
        assert!(!file_contains(&wal, m), "wrapped material left in the WAL");
    }
    assert_purged(&ts, &id, &ciphertext).await;
    let ts = ts.restart().await;
    assert_purged(&ts, &id, &ciphertext).await;
    // Even a row put back to Active by someone with the database cannot unwrap: no version
    // exists, and the altered row fails its signature.
    {
        let db = rusqlite::Connection::open(ts.db_path()).unwrap();
        db.execute(
            "UPDATE keys SET state = 1, purged_at = NULL, deleted_at = NULL WHERE id = ?1",
            [&id],
        )
        .unwrap();
    }
    let (s, _) = ts
        .action(&id, "unwrap", json!({"ciphertext": ciphertext}))
        .await;
    assert!(s == StatusCode::NOT_FOUND || s.is_server_error(), "{s}");
}

#[tokio::test]
async fn purge_waits_restore_brings_keys_back_and_imported_keys_need_their_material() {
    let ts = TestServer::start().await;
    let id = ts.create_root_key("kept").await;
    let (_, wrapped) = ts.action(&id, "wrap", json!({})).await;
    let ct = wrapped["ciphertext"].as_str().unwrap().to_owned();
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{id}/restore"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    let resp = ts
        .http
        .delete(format!("{}/api/v2/keys/{id}", ts.url))
        .bearer_auth(&ts.token)
        .header("bluemix-instance", &ts.instance)
        .header("prefer", "return=representation")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let deleted: Value = resp.json().await.unwrap();
    let k = &deleted["resources"][0];
    assert_eq!(
        (k["state"].clone(), k["deleted"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(k["restoreAllowed"], true);
    assert_eq!(k["purgeAllowed"], false);
    assert!(k["purgeAllowedFrom"].is_string() && k["purgeScheduledOn"].is_string());
    // Purge is 4 hours away by default.
    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{id}/purge"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "REQ_TOO_EARLY_ERR");
    let (s, b) = ts.action(&id, "unwrap", json!({"ciphertext": ct})).await;
    assert_kp_error(s, &b, StatusCode::GONE, "KEY_DELETED_ERR");
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{id}/restore"), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["resources"][0]["state"], 1);
    assert_eq!(b["resources"][0]["deleted"], false);
    let (s, b) = ts.action(&id, "unwrap", json!({"ciphertext": ct})).await;
    assert_eq!(s, StatusCode::OK, "restored keys unwrap old data: {b}");

    // An imported key comes back only with the material it had.
    let material = [7u8; 32];
    let imported = ts
        .create_key(json!({"name": "imp", "payload": b64(&material)}))
        .await;
    ts.call(Method::DELETE, &format!("/api/v2/keys/{imported}"), None)
        .await;
    let restore = |payload: Option<String>| {
        let imported = imported.clone();
        let ts = &ts;
        async move {
            let body = payload.map(|p| {
                json!({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                       "resources": [{"payload": p}]})
            });
            ts.call(
                Method::POST,
                &format!("/api/v2/keys/{imported}/restore"),
                body,
            )
            .await
        }
    };
    let (s, b) = restore(None).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_PAYLOAD_REQ_ERR");
    let (s, b) = restore(Some(b64(&[8u8; 32]))).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    let (s, b) = restore(Some("%%%".into())).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (s, b) = restore(Some(b64(&material))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn restore_window_closes() {
    let ts = TestServer::start_with(|c| c.lifecycle.restore_window_secs = 1).await;
    let id = ts.create_root_key("late").await;
    ts.call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{id}/restore"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_RESTORE_EXPIRED");
}

#[tokio::test]
async fn dual_authorization_delete_needs_two_identities() {
    let ts = TestServer::start().await;
    let plain = ts.create_root_key("plain").await;
    let (s, b) = ts.action(&plain, "setKeyForDeletion", Value::Null).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "NOT_DUAL_AUTH_ERR");

    let id = ts.create_root_key("guarded").await;
    let (s, b) = ts
        .call(
            Method::PUT,
            &format!("/api/v2/keys/{id}/policies?policy=dualAuthDelete"),
            Some(collection(
                json!([{"type": "application/vnd.ibm.kms.policy+json",
                                    "dualAuthDelete": {"enabled": true}}]),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["dualAuthDelete"]["enabled"], true);
    // Once on, never off.
    let (s, b) = ts
        .call(
            Method::PUT,
            &format!("/api/v2/keys/{id}/policies"),
            Some(collection(json!([{"dualAuthDelete": {"enabled": false}}]))),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");

    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "AUTHORIZATIONS_NOT_MET");
    assert_eq!(
        ts.action(&id, "setKeyForDeletion", Value::Null).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, k) = ts
        .call(Method::GET, &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_eq!(
        k["resources"][0]["dualAuthDelete"]["keySetForDeletion"],
        true
    );
    assert!(k["resources"][0]["dualAuthDelete"]["authExpiration"].is_string());
    // The identity that authorized cannot also delete.
    let (s, b) = ts
        .call(Method::DELETE, &format!("/api/v2/keys/{id}"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "AUTHORIZATIONS_NOT_MET");
    // Withdrawn, then authorized again: a second identity deletes.
    assert_eq!(
        ts.action(&id, "unsetKeyForDeletion", Value::Null).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, _, second) = ts.identity_with("user", &["Manager"]).await;
    let (s, _) = ts
        .call_as(
            Method::DELETE,
            &format!("/api/v2/keys/{id}"),
            None,
            Some(&second),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "the withdrawal counts");
    ts.action(&id, "setKeyForDeletion", Value::Null).await;
    let (s, b) = ts
        .call_as(
            Method::DELETE,
            &format!("/api/v2/keys/{id}"),
            None,
            Some(&second),
            Some(&ts.instance),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

#[tokio::test]
async fn the_scheduler_rotates_expires_and_purges_without_any_call() {
    let ts = TestServer::start_with(|c| {
        c.scheduler.tick_secs = 1;
        c.lifecycle.rotation_month_secs = 2;
        c.lifecycle.auto_purge_after_secs = 1;
    })
    .await;
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
    assert_eq!(b["resources"][0]["rotation"]["interval_month"], 1);
    let rotating = b["resources"][0]["id"].as_str().unwrap().to_owned();
    let first_version = b["resources"][0]["keyVersion"]["id"].clone();
    let (_, wrapped) = ts.action(&rotating, "wrap", json!({})).await;

    let expires = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let expiring = ts
        .create_key(json!({"name": "expiring", "expirationDate": expires}))
        .await;
    let doomed = ts.create_root_key("auto-purged").await;
    ts.call(Method::DELETE, &format!("/api/v2/keys/{doomed}"), None)
        .await;

    let versions = |id: String| {
        let ts = &ts;
        async move {
            let (_, b) = ts
                .call(Method::GET, &format!("/api/v2/keys/{id}/versions"), None)
                .await;
            b["resources"].as_array().map_or(0, Vec::len)
        }
    };
    assert!(
        eventually(Duration::from_secs(20), async || versions(rotating.clone())
            .await
            >= 2)
        .await,
        "no scheduled rotation"
    );
    let (_, k) = ts
        .call(
            Method::GET,
            &format!("/api/v2/keys/{rotating}/metadata"),
            None,
        )
        .await;
    assert_ne!(k["resources"][0]["keyVersion"]["id"], first_version);
    // Data wrapped before the rotation still unwraps, and comes back rewrapped.
    let (s, u) = ts
        .action(
            &rotating,
            "unwrap",
            json!({"ciphertext": wrapped["ciphertext"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(u["ciphertext"].is_string());

    assert!(
        eventually(Duration::from_secs(20), async || {
            let (_, b) = ts
                .call(
                    Method::GET,
                    &format!("/api/v2/keys/{expiring}/metadata"),
                    None,
                )
                .await;
            b["resources"][0]["state"] == 3
        })
        .await,
        "the expired key was not deactivated"
    );
    let (s, b) = ts.action(&expiring, "wrap", json!({})).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_EXPIRED_ERR");

    assert!(
        eventually(Duration::from_secs(20), async || {
            ts.call(Method::GET, &format!("/api/v2/keys/{doomed}"), None)
                .await
                .0
                == StatusCode::NOT_FOUND
        })
        .await,
        "the deleted key was not purged"
    );
    assert!(stored_material(&ts, &doomed).await.is_empty());
}

#[tokio::test]
async fn two_schedulers_on_one_database_rotate_each_due_key_once() {
    // Two key services over the same database act on the same due keys: compare-and-swap lets
    // exactly one change commit per key.
    let ts = TestServer::start_with(|c| {
        c.scheduler.enabled = false;
        c.lifecycle.rotation_month_secs = 1;
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let (s, b) = ts
            .call(
                Method::POST,
                "/api/v2/keys_with_policy_overrides",
                Some(json!({"resources": [{"name": format!("k{i}"),
                                           "rotation": {"enabled": true, "interval_month": 1}}]})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        ids.push(b["resources"][0]["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut config = common::config(ts.dir.path());
    config.lifecycle.rotation_month_secs = 1;
    let (a, b) = (
        keyward_server::open(config.clone()).await.unwrap(),
        keyward_server::open(config).await.unwrap(),
    );
    let (ra, rb) = tokio::join!(a.keys.run_due_work(100), b.keys.run_due_work(100));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.failed + rb.failed, 0, "{ra:?} {rb:?}");
    assert_eq!(ra.rotated + rb.rotated, 6, "{ra:?} {rb:?}");
    for id in &ids {
        let (_, v) = ts
            .call(Method::GET, &format!("/api/v2/keys/{id}/versions"), None)
            .await;
        assert_eq!(v["resources"].as_array().unwrap().len(), 2, "{id}");
    }
}

#[tokio::test]
async fn allowed_ip_admits_listed_addresses_only() {
    let ts = TestServer::start().await;
    let put = |ranges: Value, enabled: bool| {
        let ts = &ts;
        async move {
            let data = if enabled {
                json!({"enabled": true, "attributes": {"allowed_ip": ranges}})
            } else {
                json!({"enabled": false})
            };
            ts.call(
                Method::PUT,
                "/api/v2/instance/policies?policy=allowedIP",
                Some(collection(
                    json!([{"policy_type": "allowedIP", "policy_data": data}]),
                )),
            )
            .await
        }
    };
    let (s, b) = put(json!(["not-an-ip"]), true).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    let (s, b) = put(json!(["127.0.0.1/32"]), true).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");

    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let get = async |client: &reqwest::Client| {
        let resp = client
            .get(format!("{}/api/v2/keys", ts.url))
            .bearer_auth(&ts.token)
            .header("bluemix-instance", &ts.instance)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json::<Value>().await.unwrap_or(Value::Null))
    };
    let (s, _) = get(&from("127.0.0.1")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = get(&from("127.0.0.2")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert!(b["resources"][0]["errorMsg"].is_string());
    assert!(b["resources"][0].get("reasons").is_none(), "{b}");
    let (s, b) = ts
        .call(Method::GET, "/api/v2/instance/allowed_ip_port", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let port = ts.url.rsplit(':').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        b["resources"][0]["private_endpoint_port"], port,
        "the bound port"
    );
    let (_, b) = ts
        .call(
            Method::GET,
            "/api/v2/instance/policies?policy=allowedIP",
            None,
        )
        .await;
    assert_eq!(
        b["resources"][0]["policy_data"]["attributes"]["allowed_ip"],
        json!(["127.0.0.1/32"])
    );

    let (s, _) = put(Value::Null, false).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(get(&from("127.0.0.2")).await.0, StatusCode::OK);
}

#[tokio::test]
async fn instance_policies_shape_new_keys_and_gate_creation() {
    let ts = TestServer::start().await;
    let (s, b) = ts
        .call(
            Method::PUT,
            "/api/v2/instance/policies",
            Some(collection(json!([
                {"policy_type": "rotation", "policy_data": {"enabled": true, "attributes": {"interval_month": 4}}},
                {"policy_type": "dualAuthDelete", "policy_data": {"enabled": true}},
                {"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": true,
                    "attributes": {"create_standard_key": false, "import_root_key": false}}},
            ]))),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (_, b) = ts
        .call(Method::GET, "/api/v2/instance/policies", None)
        .await;
    assert_eq!(b["resources"].as_array().unwrap().len(), 3, "{b}");

    let id = ts.create_root_key("shaped").await;
    let (_, k) = ts
        .call(Method::GET, &format!("/api/v2/keys/{id}/metadata"), None)
        .await;
    assert_eq!(
        k["resources"][0]["rotation"],
        json!({"enabled": true, "interval_month": 4})
    );
    assert_eq!(k["resources"][0]["dualAuthDelete"]["enabled"], true);

    let create = |resource: Value| {
        let ts = &ts;
        async move {
            ts.call(
                Method::POST,
                "/api/v2/keys",
                Some(json!({"resources": [resource]})),
            )
            .await
        }
    };
    let (s, b) = create(json!({"name": "std", "extractable": true})).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_CREATE_IMPORT_ACCESS_ERR");
    let (s, b) = create(json!({"name": "imp", "payload": b64(&[1u8; 32])})).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_CREATE_IMPORT_ACCESS_ERR");
    let (s, _) =
        create(json!({"name": "std-imp", "extractable": true, "payload": b64(b"secret")})).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "importing standard keys stays allowed"
    );

    // Mismatched query and body, duplicate types, bad values.
    let (s, b) = ts
        .call(
            Method::PUT,
            "/api/v2/instance/policies?policy=metrics",
            Some(collection(
                json!([{"policy_type": "rotation", "policy_data": {"enabled": false}}]),
            )),
        )
        .await;
    assert_kp_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "BODY_QUERY_PARAM_MISMATCH_ERR",
    );
    let (s, b) = ts
        .call(
            Method::PUT,
            "/api/v2/instance/policies",
            Some(collection(json!([
                {"policy_type": "metrics", "policy_data": {"enabled": true}},
                {"policy_type": "metrics", "policy_data": {"enabled": false}},
            ]))),
        )
        .await;
    assert_kp_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "NUM_COLLECTION_RESOURCE_ERR",
    );
    let (s, b) = ts
        .call(
            Method::PUT,
            "/api/v2/instance/policies",
            Some(collection(json!([{"policy_type": "rotation",
                "policy_data": {"enabled": true, "attributes": {"interval_month": 13}}}]))),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
}

#[tokio::test]
async fn key_rings_and_aliases() {
    let ts = TestServer::start().await;
    let ring = |method: Method, id: &str| {
        let ts = &ts;
        let path = format!("/api/v2/key_rings/{id}");
        async move { ts.call(method, &path, None).await }
    };
    assert_eq!(ring(Method::POST, "ring-a").await.0, StatusCode::CREATED);
    let (s, b) = ring(Method::POST, "ring-a").await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_RING_ALREADY_EXISTS_ERR");
    let (s, b) = ring(Method::POST, "bad_ring").await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (s, b) = ring(Method::DELETE, "default").await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    let (_, b) = ts.call(Method::GET, "/api/v2/key_rings", None).await;
    let ids: Vec<&str> = b["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["default", "ring-a"]);

    let id = ts
        .create_key(json!({"name": "ringed", "keyRingID": "ring-a"}))
        .await;
    let other = ts.create_root_key("elsewhere").await;
    let in_ring = |ring: &str| {
        let (ts, ring) = (&ts, ring.to_owned());
        async move {
            let resp = ts
                .http
                .get(format!("{}/api/v2/keys", ts.url))
                .bearer_auth(&ts.token)
                .header("bluemix-instance", &ts.instance)
                .header("x-kms-key-ring", ring)
                .send()
                .await
                .unwrap();
            let b: Value = resp.json().await.unwrap();
            b["resources"].as_array().unwrap().len()
        }
    };
    assert_eq!(in_ring("ring-a").await, 1);
    assert_eq!(in_ring("default").await, 1);
    let (s, b) = ring(Method::DELETE, "ring-a").await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_RING_KEYS_NOT_DELETED_ERR");

    // Aliases name keys everywhere an id does.
    let (s, b) = ts
        .call(
            Method::POST,
            &format!("/api/v2/keys/{id}/aliases/payments"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["resources"][0]["keyId"], id.as_str());
    let (s, wrapped) = ts.action("payments", "wrap", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{wrapped}");
    let (s, _) = ts
        .action(&id, "unwrap", json!({"ciphertext": wrapped["ciphertext"]}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, k) = ts
        .call(Method::GET, "/api/v2/keys/payments/metadata", None)
        .await;
    assert_eq!(k["resources"][0]["aliases"], json!(["payments"]));
    // Clients percent-encode path parameters; a CRN holds a '/'.
    let crn = k["resources"][0]["crn"]
        .as_str()
        .unwrap()
        .replace('/', "%2F");
    let (s, _) = ts
        .call(Method::GET, &format!("/api/v2/keys/{crn}/metadata"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "a key CRN is a key reference");
    let (s, b) = ts
        .call(
            Method::POST,
            &format!("/api/v2/keys/{other}/aliases/payments"),
            None,
        )
        .await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_ALIAS_NOT_UNIQUE_ERR");
    for bad in ["x", "versions", &other] {
        let (s, b) = ts
            .call(
                Method::POST,
                &format!("/api/v2/keys/{id}/aliases/{bad}"),
                None,
            )
            .await;
        assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    }
    for n in 2..=5 {
        let (s, _) = ts
            .call(
                Method::POST,
                &format!("/api/v2/keys/{id}/aliases/a{n}"),
                None,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{id}/aliases/a6"), None)
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_ALIAS_QUOTA_ERR");
    let (s, _) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{id}/aliases/payments"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = ts
        .call(
            Method::DELETE,
            &format!("/api/v2/keys/{id}/aliases/payments"),
            None,
        )
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "NOT_FOUND_ERR");
    let (s, _) = ts.call(Method::GET, "/api/v2/keys/payments", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The key ring header hides keys of other rings; PATCH moves keys.
    let resp = ts
        .http
        .get(format!("{}/api/v2/keys/{id}", ts.url))
        .bearer_auth(&ts.token)
        .header("bluemix-instance", &ts.instance)
        .header("x-kms-key-ring", "default")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (s, b) = ts
        .call(
            Method::PATCH,
            &format!("/api/v2/keys/{id}"),
            Some(json!({"keyRingID": "nope"})),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_RING_NOT_FOUND_ERR");
    let (s, b) = ts
        .call(
            Method::PATCH,
            &format!("/api/v2/keys/{id}"),
            Some(json!({"KeyRingID": "default"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["keyRingID"], "default");
    let (s, b) = ts
        .call(
            Method::PATCH,
            &format!("/api/v2/keys/{id}"),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");

    // A ring holding only deleted keys goes with force, its keys moving to default.
    ts.call(
        Method::PATCH,
        &format!("/api/v2/keys/{other}"),
        Some(json!({"keyRingID": "ring-a"})),
    )
    .await;
    ts.call(Method::DELETE, &format!("/api/v2/keys/{other}"), None)
        .await;
    let (s, b) = ring(Method::DELETE, "ring-a").await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_RING_NOT_EMPTY_ERR");
    let (s, b) = ring(Method::DELETE, "ring-a?force=true").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, b) = ring(Method::DELETE, "ring-a").await;
    assert_kp_error(s, &b, StatusCode::NOT_FOUND, "KEY_RING_NOT_FOUND_ERR");
    let (s, b) = ts
        .call(Method::POST, &format!("/api/v2/keys/{other}/restore"), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["resources"][0]["keyRingID"], "default");
}

#[tokio::test]
async fn key_policies_round_trip_and_refuse_bad_values() {
    let ts = TestServer::start().await;
    let id = ts.create_root_key("policied").await;
    let path = format!("/api/v2/keys/{id}/policies");
    let (s, b) = ts.call(Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["resources"], json!([]));
    // The older Go client omits `enabled`.
    let (s, b) = ts
        .call(
            Method::PUT,
            &format!("{path}?policy=rotation"),
            Some(collection(
                json!([{"type": "application/vnd.ibm.kms.policy+json",
                                    "rotation": {"interval_month": 3}}]),
            )),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["resources"][0]["rotation"],
        json!({"enabled": true, "interval_month": 3})
    );
    assert!(
        b["resources"][0]["crn"]
            .as_str()
            .unwrap()
            .contains(":policy:")
    );
    for bad in [json!(0), json!(13), json!(-1), json!("3")] {
        let (s, b) = ts
            .call(
                Method::PUT,
                &path,
                Some(collection(
                    json!([{"rotation": {"enabled": true, "interval_month": bad}}]),
                )),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    let (s, b) = ts
        .call(
            Method::PUT,
            &format!("{path}?policy=rotation"),
            Some(collection(json!([{"dualAuthDelete": {"enabled": true}}]))),
        )
        .await;
    assert_kp_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "BODY_QUERY_PARAM_MISMATCH_ERR",
    );
    let (s, b) = ts
        .call(
            Method::PUT,
            &path,
            Some(
                json!({"metadata": {"collectionType": "x", "collectionTotal": 2},
                        "resources": [{"dualAuthDelete": {"enabled": true}}]}),
            ),
        )
        .await;
    assert_kp_error(
        s,
        &b,
        StatusCode::BAD_REQUEST,
        "COLLECTION_TOTAL_MISMATCH_ERR",
    );
    let standard = ts
        .create_key(json!({"name": "std", "extractable": true}))
        .await;
    let (s, b) = ts
        .call(
            Method::PUT,
            &format!("/api/v2/keys/{standard}/policies"),
            Some(collection(
                json!([{"rotation": {"enabled": true, "interval_month": 2}}]),
            )),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_ROOT_REQ_ERR");
    let (s, b) = ts
        .call(
            Method::POST,
            "/api/v2/keys",
            Some(json!({"resources": [{"name": "p", "rotation": {"interval_month": 2}}]})),
        )
        .await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    // Policies of another instance's key are not found.
    let (s, _) = ts
        .call_as(
            Method::GET,
            &path,
            None,
            Some(&ts.token),
            Some(&keyward_core::InstanceId::random().to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn listing_search_sort_and_filter() {
    let ts = TestServer::start().await;
    let a = ts.create_root_key("orders-db").await;
    ts.create_root_key("orders-cache").await;
    ts.create_root_key("ledger").await;
    ts.call(
        Method::POST,
        &format!("/api/v2/keys/{a}/aliases/primary"),
        None,
    )
    .await;
    let list = |query: &str| {
        let ts = &ts;
        let path = format!("/api/v2/keys?{query}");
        async move { ts.call(Method::GET, &path, None).await }
    };
    let names = |b: &Value| -> Vec<String> {
        b["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (s, b) = list("search=orders&sort=-creationDate").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(names(&b), ["orders-cache", "orders-db"]);
    assert_eq!(
        b["metadata"]["searchQuery"],
        json!({"query": "orders", "scopes": ["name", "alias"], "not": false, "exact": false})
    );
    let (_, b) = list("search=alias:exact:primary").await;
    assert_eq!(names(&b), ["orders-db"]);
    let (_, b) = list("search=not:orders").await;
    assert_eq!(names(&b), ["ledger"]);
    let (_, b) = list("filter=lastRotateDate%3Dnone%20extractable%3Dfalse").await;
    assert_eq!(names(&b).len(), 3);
    for bad in [
        "sort=name",
        "filter=creationDate%3D2020",
        "filter=extractable%3Dtrue&extractable=true",
        "search=",
    ] {
        let (s, b) = list(bad).await;
        assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");
    }
}

#[tokio::test]
async fn aliases_given_at_creation_come_with_the_key_or_not_at_all() {
    let ts = TestServer::start().await;
    let id = ts
        .create_key(json!({"name": "aliased", "aliases": ["first", "second"]}))
        .await;
    let (_, b) = ts
        .call(Method::GET, "/api/v2/keys/second/metadata", None)
        .await;
    assert_eq!(b["resources"][0]["id"], id.as_str());
    assert_eq!(b["resources"][0]["aliases"], json!(["first", "second"]));
    let create = |aliases: Value| {
        let ts = &ts;
        async move {
            ts.call(
                Method::POST,
                "/api/v2/keys",
                Some(json!({"resources": [{"name": "again", "aliases": aliases}]})),
            )
            .await
        }
    };
    let (s, b) = create(json!(["fresh", "first"])).await;
    assert_kp_error(s, &b, StatusCode::CONFLICT, "KEY_ALIAS_NOT_UNIQUE_ERR");
    // Nothing of the refused key remains: not its key, not its other alias.
    let (_, b) = ts
        .call(Method::GET, "/api/v2/keys?search=again", None)
        .await;
    assert_eq!(b["resources"], json!([]));
    let (s, _) = ts.call(Method::GET, "/api/v2/keys/fresh", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = create(json!(["a1", "a2", "a3", "a4", "a5", "a6"])).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "KEY_ALIAS_QUOTA_ERR");
    let (s, b) = create(json!(["dup", "dup"])).await;
    assert_kp_error(s, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
}

/// The UUID version of an id in its text (the 13th hex digit).
fn uuid_version(id: &str) -> char {
    assert_eq!(id.len(), 36, "{id}");
    id.chars().nth(14).unwrap()
}

async fn created_and_rotated_ids(ts: &TestServer) -> Vec<String> {
    let id = ts.create_root_key("ids").await;
    let (s, b) = ts.action(&id, "rotate", json!({})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, v) = ts
        .call(Method::GET, &format!("/api/v2/keys/{id}/versions"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let versions: Vec<String> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions.len(), 2, "{v}");
    std::iter::once(id).chain(versions).collect()
}

#[tokio::test]
async fn new_keys_and_versions_get_time_ordered_ids_unless_configured_random() {
    let ts = TestServer::start().await;
    let ids = created_and_rotated_ids(&ts).await;
    assert!(ids.iter().all(|id| uuid_version(id) == '7'), "{ids:?}");
    // Versions listed newest first: a later version's id sorts after the earlier one's.
    assert!(ids[1] > ids[2], "{ids:?}");

    // `key_ids = "random"`: v4, as Key Protect's; the keys made before keep their ids and work.
    let ts = ts
        .restart_with(|c| c.key_ids = keyward_runtime::config::KeyIds::Random)
        .await;
    let random = created_and_rotated_ids(&ts).await;
    assert!(
        random.iter().all(|id| uuid_version(id) == '4'),
        "{random:?}"
    );
    let (s, b) = ts
        .action(&ids[0], "wrap", json!({"plaintext": b64(&[7; 32])}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
