//! The integration contract's access half, with real processes: two `keyward serve` processes
//! share one data directory; a service identity (an Event Streams instance) wraps and unwraps under
//! a service-to-service authorization made through one process and is refused on the other within
//! one second of its removal, then works again when it is restored.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{FAST_LIFECYCLE, api, login, spawn_with};
use reqwest::Method;
use serde_json::{Value, json};

/// Polls `probe` every 50 ms until it returns `want`; returns how long that took.
fn until(limit: Duration, want: u16, mut probe: impl FnMut() -> u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = probe();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "still {got} (want {want}) after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn removing_an_authorization_cuts_the_service_off_on_every_process_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let a = spawn_with(dir.path(), FAST_LIFECYCLE);
    let b = spawn_with(dir.path(), FAST_LIFECYCLE);
    let admin = api(dir.path(), &a.url);
    let iam = |method: Method, path: &str, body: Option<Value>| {
        let mut req = admin
            .http
            .request(method, format!("{}{path}", a.url))
            .bearer_auth(&admin.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap();
        (
            resp.status().as_u16(),
            resp.json::<Value>().unwrap_or(Value::Null),
        )
    };

    let (s, key) = {
        let resp = admin
            .req(Method::POST, "/api/v2/keys")
            .json(&json!({"resources": [{"name": "event-streams-byok"}]}))
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    assert_eq!(s, 201, "{key}");
    let root = key["resources"][0]["id"].as_str().unwrap().to_owned();
    let (s, ident) = iam(
        Method::POST,
        "/iam/v1/identities",
        Some(json!({"kind": "service", "name": "Event Streams es-1",
                    "service_name": "messagehub", "service_instance": "es-1"})),
    );
    assert_eq!(s, 201, "{ident}");
    let (s, apikey) = iam(
        Method::POST,
        "/iam/v1/apikeys",
        Some(json!({"iam_id": ident["iam_id"], "name": "es-1"})),
    );
    assert_eq!(s, 201, "{apikey}");
    let authorize = |role: &str| {
        let (s, auth) = iam(
            Method::POST,
            "/iam/v1/authorizations",
            Some(
                json!({"source": {"service_name": "messagehub", "service_instance": "es-1"},
                        "target": {"instance_id": admin.instance}, "roles": [role]}),
            ),
        );
        assert_eq!(s, 201, "{auth}");
        auth["id"].as_str().unwrap().to_owned()
    };
    let reader = authorize("Reader");

    // The service calls with its own identity, through the other process.
    let http = reqwest::blocking::Client::new();
    let token = login(&http, &b.url, apikey["apikey"].as_str().unwrap());
    let call = |url: &str, action: &str, body: Value| {
        let resp = http
            .post(format!("{url}/api/v2/keys/{root}/actions/{action}"))
            .bearer_auth(&token)
            .header("bluemix-instance", &admin.instance)
            .json(&body)
            .send()
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (s, wrapped) = call(&a.url, "wrap", json!({}));
    assert_eq!(s, 200, "{wrapped}");
    let ciphertext = wrapped["ciphertext"].clone();
    let unwrap_on_b = || call(&b.url, "unwrap", json!({"ciphertext": ciphertext})).0;
    assert_eq!(unwrap_on_b(), 200);

    // The service also manages KMIP adapters on the instance: it still sees the instance's keys
    // once Reader is gone, so the refusal is 403.
    let kmip = authorize("KmipAdapterManager");
    let (s, _) = iam(
        Method::DELETE,
        &format!("/iam/v1/authorizations/{reader}"),
        None,
    );
    assert_eq!(s, 204);
    let took = until(Duration::from_secs(1), 403, unwrap_on_b);
    eprintln!("unwrap refused on the other process {took:?} after the removal");
    // With nothing left on the instance, its keys are invisible: 404, as if they did not exist.
    let (s, _) = iam(
        Method::DELETE,
        &format!("/iam/v1/authorizations/{kmip}"),
        None,
    );
    assert_eq!(s, 204);
    until(Duration::from_secs(1), 404, unwrap_on_b);

    // Restored: the service resumes, and the data wrapped before is still there.
    authorize("Reader");
    until(Duration::from_secs(1), 200, unwrap_on_b);
    let (s, body) = call(&a.url, "unwrap", json!({"ciphertext": ciphertext}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["plaintext"], wrapped["plaintext"]);

    for p in [a, b] {
        common::kill9(p);
    }
}
