//! KMIP adapters, client certificates and KMIP objects over REST (`/api/v2/kmip_adapters`):
//! shapes, statuses and reason codes, every refusal, instance isolation, audit and tampering.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use keyward_core::{AuditEvent, Initiator, InstanceId, InstanceRecord, KmipObjectRecord, Outcome};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const ADAPTERS: &str = "/api/v2/kmip_adapters";

fn adapter_body(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.kmip_adapter+json", "collectionTotal": 1},
        "resources": [resource],
    })
}

fn cert_body(resource: Value) -> Value {
    json!({
        "metadata": {"collectionType": "application/vnd.ibm.kms.kmip_client_certificate+json", "collectionTotal": 1},
        "resources": [resource],
    })
}

async fn create_adapter(s: &TestServer, resource: Value) -> (StatusCode, Value) {
    s.call(Method::POST, ADAPTERS, Some(adapter_body(resource)))
        .await
}

async fn adapter_id(s: &TestServer, name: &str, crk: &str) -> String {
    let (st, b) = create_adapter(
        s,
        json!({"name": name, "profile": "native_1.0", "profile_data": {"crk_id": crk}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    b["resources"][0]["id"].as_str().unwrap().to_owned()
}

/// A self-signed certificate, valid now unless `expired`.
fn certificate(cn: &str, expired: bool) -> String {
    let mut params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

async fn upload(s: &TestServer, adapter: &str, resource: Value) -> (StatusCode, Value) {
    s.call(
        Method::POST,
        &format!("{ADAPTERS}/{adapter}/certificates"),
        Some(cert_body(resource)),
    )
    .await
}

#[tokio::test]
async fn adapters_are_created_read_listed_and_deleted_by_id_or_name() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let other_crk = s.create_root_key("crk2").await;
    let (st, _) = s
        .call(
            Method::POST,
            &format!("/api/v2/keys/{other_crk}/aliases/my-crk"),
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");

    let (st, b) = create_adapter(
        &s,
        json!({"name": "kmip-adapter-name", "description": "kmip adapter description",
               "profile": "native_1.0", "profile_data": {"crk_id": crk}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(
        b["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_adapter+json"
    );
    assert_eq!(b["metadata"]["collectionTotal"], 1);
    let a = &b["resources"][0];
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["name"], "kmip-adapter-name");
    assert_eq!(a["description"], "kmip adapter description");
    assert_eq!(a["profile"], "native_1.0");
    assert_eq!(a["profile_data"]["crk_id"], crk.as_str());
    for f in ["created_at", "created_by", "updated_at", "updated_by"] {
        assert!(a[f].is_string(), "{f}: {a}");
    }

    // An alias names the root key too; the adapter records the key's id. No name: generated.
    let (st, b) = create_adapter(
        &s,
        json!({"description": "", "profile": "native_1.0", "profile_data": {"crk_id": "my-crk"}}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let generated = b["resources"][0]["name"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("kmip_adapter_"), "{generated}");
    assert_eq!(
        b["resources"][0]["profile_data"]["crk_id"],
        other_crk.as_str()
    );

    // Read by id and by name.
    for reference in [id.as_str(), "kmip-adapter-name"] {
        let (st, b) = s
            .call(Method::GET, &format!("{ADAPTERS}/{reference}"), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
        assert_eq!(b["metadata"]["collectionTotal"], 1);
        assert_eq!(b["resources"][0]["id"], id.as_str());
    }

    // List, with totals, pages and the crk_id filter (id or alias).
    let (st, b) = s
        .call(Method::GET, &format!("{ADAPTERS}?totalCount=true"), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["metadata"]["totalCount"], 2);
    assert_eq!(b["resources"].as_array().unwrap().len(), 2);
    let (_, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}?limit=1&offset=1&totalCount=true"),
            None,
        )
        .await;
    assert_eq!(b["resources"].as_array().unwrap().len(), 1);
    assert_eq!(b["metadata"]["totalCount"], 2);
    for filter in [crk.as_str(), other_crk.as_str(), "my-crk"] {
        let (_, b) = s
            .call(Method::GET, &format!("{ADAPTERS}?crk_id={filter}"), None)
            .await;
        assert_eq!(b["resources"].as_array().unwrap().len(), 1, "{filter}: {b}");
    }
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}?crk_id=no-such-key&totalCount=true"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["metadata"]["totalCount"], 0);
    let (st, b) = s
        .call(Method::GET, &format!("{ADAPTERS}?limit=201"), None)
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");

    // Delete by name; then it is gone under both references.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{ADAPTERS}/kmip-adapter-name"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for reference in [id.as_str(), "kmip-adapter-name"] {
        for method in [Method::GET, Method::DELETE] {
            let (st, b) = s
                .call(method, &format!("{ADAPTERS}/{reference}"), None)
                .await;
            assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR");
        }
    }
    // The name is free again.
    adapter_id(&s, "kmip-adapter-name", &crk).await;
}

#[tokio::test]
async fn adapter_requests_are_validated() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let ok = |name: &str| json!({"name": name, "profile": "native_1.0", "profile_data": {"crk_id": crk}});

    let invalid = [
        json!({"name": "a", "profile": "native_1.0", "profile_data": {"crk_id": crk}}),
        ok(&"a".repeat(41)),
        ok("has space"),
        ok("dots.are.out"),
        ok("12345678-1234-4234-8234-123456789abc"),
        json!({"name": "noprofile", "profile_data": {"crk_id": crk}}),
        json!({"name": "badprofile", "profile": "native_2.0", "profile_data": {"crk_id": crk}}),
        json!({"name": "nocrk", "profile": "native_1.0"}),
        json!({"name": "emptycrk", "profile": "native_1.0", "profile_data": {}}),
        json!({"name": "longdesc", "description": "d".repeat(241), "profile": "native_1.0",
               "profile_data": {"crk_id": crk}}),
    ];
    for resource in invalid {
        let (st, b) = create_adapter(&s, resource.clone()).await;
        assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    }
    // Names at the bounds are fine.
    for name in ["ab", &"a".repeat(40), "A-b_9"] {
        let (st, b) = create_adapter(&s, ok(name)).await;
        assert_eq!(st, StatusCode::CREATED, "{name}: {b}");
    }
    // Unique in the instance.
    let (st, b) = create_adapter(&s, ok("ab")).await;
    assert_kp_error(
        st,
        &b,
        StatusCode::CONFLICT,
        "KMIP_ADAPTER_NAME_NOT_UNIQUE_ERR",
    );

    // The crk must exist, be a root key, and be active.
    let (st, b) = create_adapter(
        &s,
        json!({"profile": "native_1.0", "profile_data": {"crk_id": "12345678-1234-4234-8234-123456789abc"}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let (st, b) = create_adapter(
        &s,
        json!({"profile": "native_1.0", "profile_data": {"crk_id": "no-such-alias"}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    let standard = s
        .create_key(json!({"name": "std", "extractable": true}))
        .await;
    let (st, b) = create_adapter(
        &s,
        json!({"profile": "native_1.0", "profile_data": {"crk_id": standard}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "KEY_ROOT_REQ_ERR");
    let disabled = s.create_root_key("disabled").await;
    let (st, b) = s.action(&disabled, "disable", json!({})).await;
    assert!(st.is_success(), "{b}");
    let (st, b) = create_adapter(
        &s,
        json!({"profile": "native_1.0", "profile_data": {"crk_id": disabled}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");
    let deleted = s.create_root_key("deleted").await;
    let (st, _) = s
        .call(Method::DELETE, &format!("/api/v2/keys/{deleted}"), None)
        .await;
    assert!(st.is_success());
    let (st, b) = create_adapter(
        &s,
        json!({"profile": "native_1.0", "profile_data": {"crk_id": deleted}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KEY_ACTION_INVALID_STATE_ERR");

    // A key with an expiration date only with allowExpiringKey=true.
    let expiring = s
        .create_key(json!({"name": "expiring", "extractable": false,
                           "expirationDate": "2099-01-01T00:00:00Z"}))
        .await;
    let body =
        json!({"name": "exp", "profile": "native_1.0", "profile_data": {"crk_id": expiring}});
    let (st, b) = create_adapter(&s, body.clone()).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    let (st, b) = s
        .call(
            Method::POST,
            &format!("{ADAPTERS}?allowExpiringKey=true"),
            Some(adapter_body(body)),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");

    // Not JSON, or two resources.
    let (st, b) = s.raw(Method::POST, ADAPTERS, b"{not json".to_vec()).await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
    let (st, b) = s
        .call(
            Method::POST,
            ADAPTERS,
            Some(json!({"resources": [ok("x1"), ok("x2")]})),
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "BAD_BODY_ERR");
}

#[tokio::test]
async fn an_instance_holds_at_most_200_adapters() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    for i in 0..200 {
        adapter_id(&s, &format!("a{i}"), &crk).await;
    }
    let (st, b) = create_adapter(
        &s,
        json!({"name": "one-more", "profile": "native_1.0", "profile_data": {"crk_id": crk}}),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "KMIP_ADAPTER_QUOTA_ERR");
}

#[tokio::test]
async fn certificates_are_validated_unique_and_go_with_their_adapter() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let a = adapter_id(&s, "adapter-a", &crk).await;
    let b_id = adapter_id(&s, "adapter-b", &crk).await;
    let pem = certificate("client-1", false);

    let (st, b) = upload(&s, &a, json!({"name": "my-cert", "certificate": pem})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(
        b["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_client_certificate+json"
    );
    let c = &b["resources"][0];
    let cert_id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["name"], "my-cert");
    assert_eq!(c["certificate"], pem.as_str());
    assert!(
        c["created_at"].is_string() && c["created_by"].is_string(),
        "{c}"
    );

    // Listed without the certificate; read (by id or name, adapter by id or name) with it.
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/adapter-a/certificates?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["metadata"]["totalCount"], 1);
    assert_eq!(b["resources"][0]["id"], cert_id.as_str());
    assert!(b["resources"][0].get("certificate").is_none(), "{b}");
    for path in [
        format!("{ADAPTERS}/{a}/certificates/{cert_id}"),
        format!("{ADAPTERS}/adapter-a/certificates/my-cert"),
    ] {
        let (st, b) = s.call(Method::GET, &path, None).await;
        assert_eq!(st, StatusCode::OK, "{b}");
        assert_eq!(b["metadata"]["collectionTotal"], 1);
        assert_eq!(b["resources"][0]["certificate"], pem.as_str());
    }
    // Not on another adapter.
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/{b_id}/certificates/{cert_id}"),
            None,
        )
        .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_CERT_NOT_FOUND_ERR");

    // Same name on the adapter; same certificate anywhere in the instance.
    let (st, b) = upload(
        &s,
        &a,
        json!({"name": "my-cert", "certificate": certificate("client-2", false)}),
    )
    .await;
    assert_kp_error(
        st,
        &b,
        StatusCode::CONFLICT,
        "KMIP_CERT_NAME_NOT_UNIQUE_ERR",
    );
    for adapter in [&a, &b_id] {
        let (st, b) = upload(&s, adapter, json!({"name": "again", "certificate": pem})).await;
        assert_kp_error(st, &b, StatusCode::CONFLICT, "KMIP_CERT_NOT_UNIQUE_ERR");
    }
    // The same name on another adapter is fine; no name: generated.
    let (st, b) = upload(
        &s,
        &b_id,
        json!({"name": "my-cert", "certificate": certificate("client-3", false)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, b) = upload(
        &s,
        &b_id,
        json!({"certificate": certificate("client-4", false)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert!(
        b["resources"][0]["name"]
            .as_str()
            .unwrap()
            .starts_with("kmip_cert_"),
        "{b}"
    );

    // Refused certificates.
    let key_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let other = certificate("client-5", false);
    let two = format!("{other}{}", certificate("client-6", false));
    let not_x509 =
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQoLDA0ODw==\n-----END CERTIFICATE-----\n";
    let refused = [
        json!({"name": "missing"}),
        json!({"name": "notpem", "certificate": "this is not PEM"}),
        json!({"name": "keypem", "certificate": key_pem}),
        json!({"name": "notx509", "certificate": not_x509}),
        json!({"name": "two", "certificate": two}),
        json!({"name": "expired", "certificate": certificate("old", true)}),
        json!({"name": "a", "certificate": other}),
        json!({"name": "bad name", "certificate": other}),
    ];
    for resource in refused {
        let (st, b) = upload(&s, &a, resource.clone()).await;
        assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_FIELD_ERR");
    }
    // An unknown adapter.
    let (st, b) = upload(&s, "no-such-adapter", json!({"certificate": other})).await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR");
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/no-such-adapter/certificates"),
            None,
        )
        .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR");

    // Delete by name; then 404.
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("{ADAPTERS}/{a}/certificates/my-cert"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    for method in [Method::GET, Method::DELETE] {
        let (st, b) = s
            .call(
                method,
                &format!("{ADAPTERS}/{a}/certificates/{cert_id}"),
                None,
            )
            .await;
        assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_CERT_NOT_FOUND_ERR");
    }
    // Registered again, then deleted with its adapter: the certificate is free once more.
    let (st, b) = upload(&s, &a, json!({"name": "back", "certificate": pem})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let (st, _) = s
        .call(Method::DELETE, &format!("{ADAPTERS}/{a}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, b) = upload(&s, &b_id, json!({"name": "moved", "certificate": pem})).await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
}

#[tokio::test]
async fn kmip_objects_are_listed_read_and_destroyed_and_block_adapter_deletion() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let a = adapter_id(&s, "adapter", &crk).await;

    // None are created over REST.
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/{a}/kmip_objects?totalCount=true"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(
        b["metadata"]["collectionType"],
        "application/vnd.ibm.kms.kmip_object+json"
    );
    assert_eq!(b["metadata"]["collectionTotal"], 0);
    assert_eq!(b["metadata"]["totalCount"], 0);
    assert_eq!(b["resources"], json!([]));
    for id in ["12345678-1234-4234-8234-123456789abc", "not-a-uuid"] {
        for method in [Method::GET, Method::DELETE] {
            let (st, b) = s
                .call(method, &format!("{ADAPTERS}/{a}/kmip_objects/{id}"), None)
                .await;
            assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_OBJECT_NOT_FOUND_ERR");
        }
    }
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/{a}/kmip_objects?state=7"),
            None,
        )
        .await;
    assert_kp_error(st, &b, StatusCode::BAD_REQUEST, "INVALID_QUERY_PARAM_ERR");
    let (st, b) = s
        .call(Method::GET, &format!("{ADAPTERS}/nope/kmip_objects"), None)
        .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR");

    // An Active object, as the KMIP listener will create it, through a second store on the file.
    let store = s.stores().await.kmip;
    let cert = uuid::Uuid::new_v4();
    let object = KmipObjectRecord {
        instance: s.instance.parse().unwrap(),
        adapter_id: a.parse().unwrap(),
        id: uuid::Uuid::new_v4(),
        object_type: 2,
        state: 2,
        created_at: time::OffsetDateTime::now_utc(),
        created_by_cert_id: cert,
        created_by: "kmip-client".into(),
        updated_at: None,
        updated_by_cert_id: None,
        updated_by: None,
        destroyed_at: None,
        destroyed_by_cert_id: None,
        destroyed_by: None,
        name: None,
        algorithm: None,
        length: None,
        object_group: None,
        attributes: "{}".into(),
        material: None,
        signature: Vec::new(),
    };
    store
        .insert_kmip_object(&object, &event("kms.kmip.create"))
        .await
        .unwrap();
    let oid = object.id.to_string();

    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/adapter/kmip_objects"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["id"], oid.as_str());
    assert_eq!(b["resources"][0]["kmip_object_type"], 2);
    assert_eq!(b["resources"][0]["state"], 2);
    assert_eq!(
        b["resources"][0]["created_by_kmip_client_cert_id"],
        cert.to_string()
    );
    let (st, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/{a}/kmip_objects/{oid}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["resources"][0]["id"], oid.as_str());

    let (st, b) = s
        .call(Method::DELETE, &format!("{ADAPTERS}/{a}"), None)
        .await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KMIP_ADAPTER_HAS_OBJECTS_ERR");
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("{ADAPTERS}/{a}/kmip_objects/{oid}"),
            None,
        )
        .await;
    assert_kp_error(st, &b, StatusCode::CONFLICT, "KMIP_OBJECT_ACTIVE_ERR");
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("{ADAPTERS}/{a}/kmip_objects/{oid}?force=true"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    // Destroyed: out of the default list, in the state=5 list, and no longer in the way.
    let (_, b) = s
        .call(Method::GET, &format!("{ADAPTERS}/{a}/kmip_objects"), None)
        .await;
    assert_eq!(b["resources"], json!([]));
    let (_, b) = s
        .call(
            Method::GET,
            &format!("{ADAPTERS}/{a}/kmip_objects?state=5,6"),
            None,
        )
        .await;
    assert_eq!(b["resources"][0]["state"], 5);
    assert!(b["resources"][0]["destroyed_at"].is_string(), "{b}");
    let (st, b) = s
        .call(
            Method::DELETE,
            &format!("{ADAPTERS}/{a}/kmip_objects/{oid}"),
            None,
        )
        .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_OBJECT_NOT_FOUND_ERR");
    let (st, _) = s
        .call(Method::DELETE, &format!("{ADAPTERS}/{a}"), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
}

fn event(action: &str) -> AuditEvent {
    AuditEvent::new(
        action,
        Outcome::Success,
        201,
        Initiator {
            id: "test".into(),
            address: None,
        },
        "test".into(),
        time::OffsetDateTime::now_utc(),
    )
}

#[tokio::test]
async fn adapters_of_another_instance_are_not_found() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let a = adapter_id(&s, "mine", &crk).await;
    let (st, b) = upload(
        &s,
        &a,
        json!({"name": "cc", "certificate": certificate("x", false)}),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    let cert = b["resources"][0]["id"].as_str().unwrap().to_owned();

    let store = s.stores().await.store;
    let account = store.instances().await.unwrap()[0].account.clone();
    let other = InstanceRecord {
        id: InstanceId::random(),
        account,
        name: "b".into(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    store
        .insert_instance(&other, &event("kms.instance.create"))
        .await
        .unwrap();
    let b_inst = other.id.to_string();
    let as_b = |method: Method, path: String, body: Option<Value>| {
        let b_inst = b_inst.clone();
        let s = &s;
        async move {
            s.call_as(method, &path, body, Some(&s.token), Some(&b_inst))
                .await
        }
    };
    for reference in [a.as_str(), "mine"] {
        for (method, path) in [
            (Method::GET, format!("{ADAPTERS}/{reference}")),
            (Method::DELETE, format!("{ADAPTERS}/{reference}")),
            (Method::GET, format!("{ADAPTERS}/{reference}/certificates")),
            (
                Method::GET,
                format!("{ADAPTERS}/{reference}/certificates/{cert}"),
            ),
            (
                Method::DELETE,
                format!("{ADAPTERS}/{reference}/certificates/{cert}"),
            ),
            (Method::GET, format!("{ADAPTERS}/{reference}/kmip_objects")),
        ] {
            let (st, b) = as_b(method, path, None).await;
            assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KMIP_ADAPTER_NOT_FOUND_ERR");
        }
    }
    let (st, b) = as_b(Method::GET, ADAPTERS.to_owned(), None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(b["resources"], json!([]));
    // Instance B cannot use A's root key either.
    let (st, b) = as_b(
        Method::POST,
        ADAPTERS.to_owned(),
        Some(adapter_body(
            json!({"profile": "native_1.0", "profile_data": {"crk_id": crk}}),
        )),
    )
    .await;
    assert_kp_error(st, &b, StatusCode::NOT_FOUND, "KEY_NOT_FOUND_ERR");
    // Still there for A.
    let (st, _) = s.call(Method::GET, &format!("{ADAPTERS}/{a}"), None).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn every_action_is_audited_and_a_tampered_adapter_is_refused() {
    let s = TestServer::start().await;
    let crk = s.create_root_key("crk").await;
    let other_crk = s.create_root_key("crk2").await;
    let a = adapter_id(&s, "audited", &crk).await;
    s.call(Method::GET, ADAPTERS, None).await;
    s.call(Method::GET, &format!("{ADAPTERS}/{a}"), None).await;
    s.call(Method::GET, &format!("{ADAPTERS}/nope"), None).await;
    adapter_id(&s, "gone", &crk).await;
    s.call(Method::DELETE, &format!("{ADAPTERS}/gone"), None)
        .await;

    let db = s.db().await;
    let rows: Vec<(String, String, i64, Option<String>)> = db
        .rows(
            "SELECT action, outcome, reason_code, target FROM audit_events
             WHERE action LIKE 'kms.kmip-management.%' ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| {
            (
                r[0].clone().unwrap(),
                r[1].clone().unwrap(),
                r[2].as_deref().unwrap().parse().unwrap(),
                r[3].clone(),
            )
        })
        .collect();
    let summary: Vec<(&str, &str, i64)> = rows
        .iter()
        .map(|(a, o, c, _)| (a.as_str(), o.as_str(), *c))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("kms.kmip-management.create", "success", 201),
            ("kms.kmip-management.list", "success", 200),
            ("kms.kmip-management.read", "success", 200),
            ("kms.kmip-management.read", "failure", 404),
            ("kms.kmip-management.create", "success", 201),
            ("kms.kmip-management.delete", "success", 204),
        ]
    );
    assert_eq!(rows[0].3.as_deref(), Some(a.as_str()));

    // The adapter's root key moved in the database: its signature no longer verifies.
    let n = db
        .execute(
            "UPDATE kmip_adapters SET crk_id = ?1 WHERE id = ?2",
            &[other_crk.as_str(), a.as_str()],
        )
        .await;
    assert_eq!(n, 1);
    let (st, b) = s.call(Method::GET, &format!("{ADAPTERS}/{a}"), None).await;
    assert_kp_error(
        st,
        &b,
        StatusCode::INTERNAL_SERVER_ERROR,
        "INCOMPLETE_METADATA_ERR",
    );
}
