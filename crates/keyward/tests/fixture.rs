//! Data directories written by an earlier release open and verify: `tests/fixtures/datadir-0.1.0`
//! was made by `make_datadir_fixture` (ignored; run it only to write a new fixture) with the code
//! of release 0.1.0, before the signed bytes and the chain hash moved to one canonical encoder
//! (issue 15). The test starts `keyward serve` on a copy and reads back every signed record.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Api, FAST_LIFECYCLE, LOCAL_WEBHOOKS, api, login, spawn_with, stop};
use reqwest::Method;
use serde_json::{Value, json};

/// The fixture's directory.
fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-0.1.0")
}

/// The files a data directory holds at rest once its log is checkpointed.
const FILES: [&str; 3] = ["keyward.db", "keystore.json", "bootstrap.json"];

/// The registration's resource CRN.
const CRN: &str = "crn:v1:bluemix:public:messagehub:us-south:a/acct:fixture-1::";

/// Whether the scheduler would change the fixture (a rotation or purge falling due as the
/// fixture ages) is not what this test is about: it runs without one.
fn config() -> String {
    format!("{FAST_LIFECYCLE}{LOCAL_WEBHOOKS}[scheduler]\nenabled = false\n")
}

fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// Sends `r`; its body, which must come with a 2xx (`want` only documents which).
fn ok(r: reqwest::blocking::RequestBuilder, want: u16) -> Value {
    let (status, body) = send(r);
    assert!(
        (200..300).contains(&status),
        "{status} (wanted {want}): {body}"
    );
    body
}

fn encode_crn(crn: &str) -> String {
    crn.replace(':', "%3A").replace('/', "%2F")
}

fn create_key(a: &Api, resource: Value) -> String {
    let b = ok(
        a.req(Method::POST, "/api/v2/keys")
            .json(&json!({"resources": [resource]})),
        201,
    );
    b["resources"][0]["id"].as_str().unwrap().to_owned()
}

fn collection(kind: &str, resources: Value) -> Value {
    let total = resources.as_array().map_or(1, Vec::len);
    json!({"metadata": {"collectionType": kind, "collectionTotal": total}, "resources": resources})
}

/// Wraps `plaintext` (base64) with `key` and `aad`: the ciphertext.
fn wrap(a: &Api, key: &str, plaintext: &str, aad: &[&str]) -> String {
    let b = ok(
        a.req(Method::POST, &format!("/api/v2/keys/{key}/actions/wrap"))
            .json(&json!({"plaintext": plaintext, "aad": aad})),
        200,
    );
    b["ciphertext"].as_str().unwrap().to_owned()
}

/// Writes the fixture with the code of this build: every kind of signed record, a rotated root
/// key's ciphertexts, audit events up to a signed checkpoint. Run it only to make a new fixture
/// (`cargo test -p keyward --test fixture -- --ignored`), never after changing what is signed.
#[test]
#[ignore = "writes tests/fixtures/datadir-0.1.0; run by hand with the release that writes it"]
fn make_datadir_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_with(dir.path(), &config());
    let a = api(dir.path(), &p.url);

    // Keys: a root key rotated once, a standard key, an imported root key, a disabled one, a
    // deleted one, and one with key policies and an authorized deletion.
    let rotated = create_key(&a, json!({"name": "rotated-root", "extractable": false}));
    let standard = create_key(
        &a,
        json!({"name": "standard", "extractable": true,
               "payload": "c3RhbmRhcmQga2V5IHBheWxvYWQ="}),
    );
    let imported = create_key(
        &a,
        json!({"name": "imported-root", "extractable": false,
               "payload": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}),
    );
    let disabled = create_key(&a, json!({"name": "disabled-root", "extractable": false}));
    let deleted = create_key(&a, json!({"name": "deleted-root", "extractable": false}));
    let policied = create_key(&a, json!({"name": "policied-root", "extractable": false}));

    let deks = [
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=",
        "Zml4dHVyZSBERUsgZm9yIHRoZSBpbXBvcnRlZCBrZXk=",
    ];
    let aad = ["fixture", "aad"];
    let mut ciphertexts = vec![json!({"key": rotated, "version": 1, "aad": aad,
        "plaintext": deks[0], "ciphertext": wrap(&a, &rotated, deks[0], &aad)})];
    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{rotated}/actions/rotate"),
        )
        .json(&json!({})),
        204,
    );
    ciphertexts.push(json!({"key": rotated, "version": 2, "aad": [],
        "plaintext": deks[1], "ciphertext": wrap(&a, &rotated, deks[1], &[])}));
    ciphertexts.push(json!({"key": imported, "version": 1, "aad": aad,
        "plaintext": deks[2], "ciphertext": wrap(&a, &imported, deks[2], &aad)}));
    ciphertexts.push(json!({"key": disabled, "version": 1, "aad": [],
        "plaintext": deks[0], "ciphertext": wrap(&a, &disabled, deks[0], &[])}));

    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{disabled}/actions/disable"),
        )
        .json(&json!({})),
        204,
    );
    ok(
        a.req(Method::DELETE, &format!("/api/v2/keys/{deleted}")),
        200,
    );

    // Key policies, then an authorized deletion (dual authorization's first approval).
    ok(
        a.req(Method::PUT, &format!("/api/v2/keys/{policied}/policies"))
            .json(&collection(
                "application/vnd.ibm.kms.policy+json",
                json!([{"rotation": {"enabled": true, "interval_month": 12}},
                       {"dualAuthDelete": {"enabled": true}}]),
            )),
        200,
    );
    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{policied}/actions/setKeyForDeletion"),
        )
        .json(&json!({})),
        204,
    );

    // Instance policies.
    ok(
        a.req(Method::PUT, "/api/v2/instance/policies")
            .json(&collection(
                "application/vnd.ibm.kms.policy+json",
                json!([
                    {"policy_type": "rotation", "policy_data": {"enabled": true,
                        "attributes": {"interval_month": 6}}},
                    {"policy_type": "metrics", "policy_data": {"enabled": true}},
                    {"policy_type": "allowedIP", "policy_data": {"enabled": true,
                        "attributes": {"allowed_ip": ["127.0.0.0/8", "::1/128"]}}},
                ]),
            )),
        204,
    );

    // A key ring holding a key, and an alias.
    let ring = "fixture-ring";
    ok(
        a.req(Method::POST, &format!("/api/v2/key_rings/{ring}")),
        201,
    );
    ok(
        a.req(Method::PATCH, &format!("/api/v2/keys/{standard}"))
            .json(&json!({"keyRingID": ring})),
        200,
    );
    let alias = "fixture-alias";
    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{rotated}/aliases/{alias}"),
        ),
        201,
    );

    // A user with an API key and an access policy on the ring.
    let user = ok(
        a.req(Method::POST, "/iam/v1/identities")
            .json(&json!({"kind": "user", "name": "fixture user"})),
        201,
    );
    let user_id = user["iam_id"].as_str().unwrap().to_owned();
    let user_key = ok(
        a.req(Method::POST, "/iam/v1/apikeys")
            .json(&json!({"iam_id": user_id, "name": "fixture user key"})),
        201,
    );
    let policy = ok(
        a.req(Method::POST, "/iam/v1/policies").json(&json!({
            "subject": user_id, "roles": ["Reader"],
            "resource": {"instance_id": a.instance, "key_ring": ring}})),
        201,
    );

    // A service with an API key and a service-to-service authorization on the instance.
    let service = ok(
        a.req(Method::POST, "/iam/v1/identities").json(
            &json!({"kind": "service", "name": "Event Streams fixture-1",
                          "service_name": "messagehub", "service_instance": "fixture-1"}),
        ),
        201,
    );
    let service_key = ok(
        a.req(Method::POST, "/iam/v1/apikeys")
            .json(&json!({"iam_id": service["iam_id"], "name": "fixture service key"})),
        201,
    );
    let authorization = ok(
        a.req(Method::POST, "/iam/v1/authorizations").json(&json!({
            "source": {"service_name": "messagehub", "service_instance": "fixture-1"},
            "target": {"instance_id": a.instance}, "roles": ["Reader"]})),
        201,
    );

    // A KMIP adapter on the rotated root key, with a client certificate.
    let adapter = ok(
        a.req(Method::POST, "/api/v2/kmip_adapters")
            .json(&collection(
                "application/vnd.ibm.kms.kmip_adapter+json",
                json!([{"name": "fixture-adapter", "profile": "native_1.0",
                    "profile_data": {"crk_id": rotated}}]),
            )),
        201,
    )["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pem = rcgen::generate_simple_self_signed(vec!["fixture-kmip-client".into()])
        .unwrap()
        .cert
        .pem();
    let certificate = ok(
        a.req(
            Method::POST,
            &format!("/api/v2/kmip_adapters/{adapter}/certificates"),
        )
        .json(&collection(
            "application/vnd.ibm.kms.kmip_client_certificate+json",
            json!([{"name": "fixture-cert", "certificate": pem}]),
        )),
        201,
    )["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // A registration of the bootstrap administrator (a service ID), and a webhook subscription.
    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{rotated}/registrations/{}", encode_crn(CRN)),
        )
        .json(
            &json!({"resources": [{"description": "fixture registration",
                                     "preventKeyDeletion": true}]}),
        ),
        201,
    );
    let webhook = "http://127.0.0.1:9/fixture-events";
    ok(
        a.req(Method::PUT, "/api/v2/event_subscription")
            .json(&json!({"url": webhook})),
        200,
    );

    // What the current release answers for each key, to compare with later.
    let mut keys = Vec::new();
    for (name, id) in [
        ("rotated", &rotated),
        ("standard", &standard),
        ("imported", &imported),
        ("disabled", &disabled),
        ("deleted", &deleted),
        ("policied", &policied),
    ] {
        let m = ok(
            a.req(Method::GET, &format!("/api/v2/keys/{id}/metadata")),
            200,
        );
        let m = &m["resources"][0];
        keys.push(json!({"name": name, "id": id, "state": m["state"],
                         "extractable": m["extractable"], "keyRingID": m["keyRingID"]}));
    }
    stop(p);

    // A KMIP object, as the KMIP listener (not written yet) would store it; not signed.
    let object = "00000000-0000-4000-8000-00000000f1f1";
    let db = rusqlite::Connection::open(dir.path().join("keyward.db")).unwrap();
    db.execute(
        "INSERT INTO kmip_objects (id, instance_id, adapter_id, object_type, state, created_at,
             created_by_cert_id, created_by)
         VALUES (?1, ?2, ?3, 2, 1, 1767225600000000000, ?4, 'kmip-client')",
        rusqlite::params![object, a.instance, adapter, certificate],
    )
    .unwrap();
    // Everything in the database file, so the fixture is three files.
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    db.execute_batch("VACUUM").unwrap();
    db.close().unwrap();

    let out = fixture_dir();
    std::fs::create_dir_all(&out).unwrap();
    for f in FILES {
        std::fs::copy(dir.path().join(f), out.join(f)).unwrap();
    }
    let expected = json!({
        "instance": a.instance,
        "keys": keys,
        "ciphertexts": ciphertexts,
        "policied": policied,
        "ring": ring,
        "ringKey": standard,
        "alias": alias,
        "aliasKey": rotated,
        "user": {"iam_id": user_id, "apikey": user_key["apikey"], "policy": policy["id"]},
        "service": {"iam_id": service["iam_id"], "apikey": service_key["apikey"],
                    "authorization": authorization["id"]},
        "kmip": {"adapter": adapter, "certificate": certificate, "object": object},
        "registration": {"key": rotated, "crn": CRN},
        "webhook": webhook,
    });
    std::fs::write(
        out.join("expected.json"),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
}

/// A copy of the fixture in a fresh 0700 directory (the files 0600, as the server wants them).
fn fixture_copy() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for f in FILES {
        let to = dir.path().join(f);
        std::fs::copy(fixture_dir().join(f), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .map(|r| r[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_data_dir_written_by_release_0_1_0_opens_and_verifies() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap(),
    )
    .unwrap();
    // The trail as the old release left it verifies, checkpoint included.
    let pristine = fixture_copy();
    let report = audit_verify(pristine.path());
    assert!(
        report["lastGoodCheckpoint"].as_i64().unwrap() > 0,
        "{report}"
    );

    let dir = fixture_copy();
    let p = spawn_with(dir.path(), &config());
    // The bootstrap API key still gets a token.
    let a = api(dir.path(), &p.url);
    assert_eq!(a.instance, expected["instance"]);

    // Every key reads (its record signature verifies) in the state it was left in.
    for k in expected["keys"].as_array().unwrap() {
        let id = k["id"].as_str().unwrap();
        let m = ok(
            a.req(Method::GET, &format!("/api/v2/keys/{id}/metadata")),
            200,
        );
        let m = &m["resources"][0];
        for field in ["state", "extractable", "keyRingID"] {
            assert_eq!(m[field], k[field], "{}: {field}", k["name"]);
        }
        let (status, v) = send(a.req(Method::GET, &format!("/api/v2/keys/{id}/versions")));
        if k["state"] != 5 {
            assert_eq!(status, 200, "{}: {v}", k["name"]);
        }
    }
    let listed = ok(a.req(Method::GET, "/api/v2/keys"), 200);
    assert!(ids(&listed, "id").contains(&expected["ringKey"].as_str().unwrap().to_owned()));

    // Every ciphertext unwraps to its DEK (the version records verify); unwrap with the disabled
    // key is refused for its state, not its signature.
    let disabled = &expected["keys"][3];
    for c in expected["ciphertexts"].as_array().unwrap() {
        let key = c["key"].as_str().unwrap();
        if key == disabled["id"] {
            continue;
        }
        let b = ok(
            a.req(Method::POST, &format!("/api/v2/keys/{key}/actions/unwrap"))
                .json(&json!({"ciphertext": c["ciphertext"], "aad": c["aad"]})),
            200,
        );
        assert_eq!(b["plaintext"], c["plaintext"], "version {}", c["version"]);
    }
    let did = disabled["id"].as_str().unwrap();
    ok(
        a.req(Method::POST, &format!("/api/v2/keys/{did}/actions/enable"))
            .json(&json!({})),
        204,
    );
    for c in expected["ciphertexts"].as_array().unwrap() {
        if c["key"] == disabled["id"] {
            let b = ok(
                a.req(Method::POST, &format!("/api/v2/keys/{did}/actions/unwrap"))
                    .json(&json!({"ciphertext": c["ciphertext"], "aad": c["aad"]})),
                200,
            );
            assert_eq!(b["plaintext"], c["plaintext"]);
        }
    }

    // The rotated key rotates again: the old record verified, the new one is signed now.
    let rotated = expected["keys"][0]["id"].as_str().unwrap();
    ok(
        a.req(
            Method::POST,
            &format!("/api/v2/keys/{rotated}/actions/rotate"),
        )
        .json(&json!({})),
        204,
    );
    for c in &expected["ciphertexts"].as_array().unwrap()[..2] {
        let b = ok(
            a.req(
                Method::POST,
                &format!("/api/v2/keys/{rotated}/actions/unwrap"),
            )
            .json(&json!({"ciphertext": c["ciphertext"], "aad": c["aad"]})),
            200,
        );
        assert_eq!(b["plaintext"], c["plaintext"]);
    }

    // Key policies and the authorized deletion (in the key record's signed extension).
    let policied = expected["policied"].as_str().unwrap();
    let pol = ok(
        a.req(Method::GET, &format!("/api/v2/keys/{policied}/policies")),
        200,
    );
    let text = pol.to_string();
    assert!(
        text.contains("\"interval_month\":12") && text.contains("dualAuthDelete"),
        "{pol}"
    );
    let m = ok(
        a.req(Method::GET, &format!("/api/v2/keys/{policied}/metadata")),
        200,
    );
    assert_eq!(
        m["resources"][0]["dualAuthDelete"]["keySetForDeletion"], true,
        "{m}"
    );

    // Instance policies (signed rows).
    let ip = ok(a.req(Method::GET, "/api/v2/instance/policies"), 200);
    let kinds: Vec<&str> = ip["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["policy_type"].as_str().unwrap())
        .collect();
    for kind in ["rotation", "metrics", "allowedIP"] {
        assert!(kinds.contains(&kind), "{ip}");
    }

    // The key ring and the alias (a signed record).
    let rings = ok(a.req(Method::GET, "/api/v2/key_rings"), 200);
    assert!(ids(&rings, "id").contains(&expected["ring"].as_str().unwrap().to_owned()));
    let by_alias = ok(
        a.req(
            Method::GET,
            &format!(
                "/api/v2/keys/{}/metadata",
                expected["alias"].as_str().unwrap()
            ),
        ),
        200,
    );
    assert_eq!(by_alias["resources"][0]["id"], expected["aliasKey"]);

    // The user: its API key gets a token, and its signed access policy grants Reader on the
    // ring (and nothing outside it).
    let users = ok(a.req(Method::GET, "/iam/v1/identities"), 200);
    assert!(
        users
            .to_string()
            .contains(expected["user"]["iam_id"].as_str().unwrap())
    );
    let policies = ok(a.req(Method::GET, "/iam/v1/policies"), 200);
    assert!(
        policies
            .to_string()
            .contains(expected["user"]["policy"].as_str().unwrap())
    );
    let user = Api {
        token: login(
            &a.http,
            &a.url,
            expected["user"]["apikey"].as_str().unwrap(),
        ),
        http: a.http.clone(),
        url: a.url.clone(),
        instance: a.instance.clone(),
    };
    let ring_key = expected["ringKey"].as_str().unwrap();
    ok(
        user.req(Method::GET, &format!("/api/v2/keys/{ring_key}/metadata")),
        200,
    );
    let (status, _) = send(user.req(Method::GET, &format!("/api/v2/keys/{rotated}/metadata")));
    assert_eq!(status, 404);

    // The service: its signed authorization lets it unwrap with the root key.
    let auths = ok(a.req(Method::GET, "/iam/v1/authorizations"), 200);
    assert!(
        auths
            .to_string()
            .contains(expected["service"]["authorization"].as_str().unwrap())
    );
    let service = Api {
        token: login(
            &a.http,
            &a.url,
            expected["service"]["apikey"].as_str().unwrap(),
        ),
        http: a.http.clone(),
        url: a.url.clone(),
        instance: a.instance.clone(),
    };
    let c = &expected["ciphertexts"][0];
    let b = ok(
        service
            .req(
                Method::POST,
                &format!("/api/v2/keys/{rotated}/actions/unwrap"),
            )
            .json(&json!({"ciphertext": c["ciphertext"], "aad": c["aad"]})),
        200,
    );
    assert_eq!(b["plaintext"], c["plaintext"]);

    // KMIP: the adapter and certificate (signed records) and the object read back.
    let kmip = &expected["kmip"];
    let adapter = kmip["adapter"].as_str().unwrap();
    ok(
        a.req(Method::GET, &format!("/api/v2/kmip_adapters/{adapter}")),
        200,
    );
    for (kind, id) in [("certificates", "certificate"), ("kmip_objects", "object")] {
        let item = kmip[id].as_str().unwrap();
        ok(
            a.req(
                Method::GET,
                &format!("/api/v2/kmip_adapters/{adapter}/{kind}/{item}"),
            ),
            200,
        );
    }

    // The registration and the webhook subscription.
    let key = expected["registration"]["key"].as_str().unwrap();
    let regs = ok(
        a.req(Method::GET, &format!("/api/v2/keys/{key}/registrations")),
        200,
    );
    assert!(regs.to_string().contains(CRN), "{regs}");
    let sub = ok(a.req(Method::GET, "/api/v2/event_subscription"), 200);
    assert_eq!(sub["url"], expected["webhook"]);
    stop(p);

    // The audit chain (old events and the ones this run appended) and its checkpoints verify.
    let after = audit_verify(dir.path());
    assert!(
        after["lastGoodCheckpoint"].as_i64() > report["lastGoodCheckpoint"].as_i64(),
        "{after}"
    );
}

/// `keyward audit verify --json` on `dir`, which must pass: its report.
fn audit_verify(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["audit", "verify", "--json", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&report).unwrap()
}
