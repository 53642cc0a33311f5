//! The OpenAPI document of `/iam/v1` against the router: the document served at
//! `/iam/v1/openapi.json` names exactly the (method, path) pairs of `routes::iam::ROUTES`, plus the
//! two identity endpoints; every operation is described; and every management route asks for a
//! token before anything else. The same for the Key Protect surface: `/api/v2/openapi.json`
//! against `routes::openapi::ROUTES`, every one of which the router serves (issue 22).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use keyward_server::routes::iam::ROUTES;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Paths outside `/iam/v1` that the document also describes (tag `identity`).
const IDENTITY_ROUTES: &[(&str, &str)] = &[("post", "/identity/token"), ("get", "/identity/keys")];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(s: &TestServer) -> Value {
    let resp = s
        .http
        .get(format!("{}/iam/v1/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "application/json",
        "{:?}",
        resp.headers()
    );
    resp.json().await.unwrap()
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn document_matches_the_router() {
    let s = TestServer::start().await;
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);

    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|(_, p, _)| p.starts_with("/iam/v1/"))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(ROUTES.len(), routed.len(), "ROUTES lists a route twice");
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not routed: {extra:?}"
    );

    // Outside /iam/v1: exactly the identity endpoints, tagged `identity`.
    let others: BTreeSet<(String, String)> = ops
        .iter()
        .filter(|(_, p, _)| !p.starts_with("/iam/v1/"))
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    let identity: BTreeSet<(String, String)> = IDENTITY_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(others, identity);
    for (m, p, op) in &ops {
        if !p.starts_with("/iam/v1/") {
            assert!(
                op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == "identity")),
                "{m} {p}: not tagged identity"
            );
        }
    }

    // Every operation is described, with at least one response; ids are unique.
    let mut ids = BTreeSet::new();
    for (m, p, op) in &ops {
        let summary = op["summary"].as_str().unwrap_or("");
        assert!(
            !summary.trim().is_empty() && !summary.contains("TODO"),
            "{m} {p}: summary {summary:?}"
        );
        assert!(
            op["description"]
                .as_str()
                .is_some_and(|d| !d.trim().is_empty() && !d.contains("TODO")),
            "{m} {p}: no description"
        );
        let responses = op["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{m} {p}: no responses");
        if let Some(id) = op["operationId"].as_str() {
            assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        }
        // Path parameters are declared.
        for seg in p.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x["name"] == name && x["in"] == "path")),
                "{m} {p}: path parameter {name} not declared"
            );
        }
    }

    // Every $ref resolves.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    if k == "$ref" {
                        out.push(x.as_str().unwrap().to_owned());
                    } else {
                        refs(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "unresolved $ref {r}");
    }
    assert!(
        doc.pointer("/components/securitySchemes/bearerAuth")
            .is_some()
    );
    assert!(doc.pointer("/components/schemas/Error").is_some());
}

fn method(m: &str) -> Method {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap()
}

/// A concrete path for a route template (any value for its parameters).
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { "some-id" } else { seg })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn management_routes_need_a_token() {
    let s = TestServer::start().await;
    let mut checked = 0;
    for (m, p) in ROUTES {
        let url = format!("{}{}", s.url, concrete(p));
        if p.ends_with("/openapi.json") {
            // The document is public.
            let resp = s.http.request(method(m), &url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{m} {p}");
            continue;
        }
        // No token, and a forged one; with a body where the route takes one: 401, never 404/405.
        for token in [None, Some("not.a.token")] {
            let mut req = s.http.request(method(m), &url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if *m == "post" {
                req = req.header("content-type", "application/json").body("{}");
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            common::assert_kp_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED_ERR");
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (ROUTES.len() - 1));
}

#[tokio::test]
async fn management_routes_refuse_a_caller_without_administrator() {
    let s = TestServer::start().await;
    // A Manager of the instance: full key access, no access management.
    let (_, _, token) = s.identity_with("service_id", &["Manager"]).await;
    for (m, p) in ROUTES {
        if p.ends_with("/openapi.json") {
            continue;
        }
        let mut req = s
            .http
            .request(method(m), format!("{}{}", s.url, concrete(p)))
            .bearer_auth(&token);
        // Bodies that pass validation, so that only the role is missing.
        let body = match (*m, *p) {
            ("post", "/iam/v1/identities") => r#"{"kind":"user","name":"x"}"#.to_owned(),
            ("post", "/iam/v1/apikeys") => r#"{"iam_id":"x","name":"x"}"#.to_owned(),
            ("post", "/iam/v1/policies") => r#"{"subject":"x","roles":["Reader"]}"#.to_owned(),
            ("post", "/iam/v1/authorizations") => format!(
                r#"{{"source":{{"service_name":"messagehub"}},"target":{{"instance_id":"{}"}},"roles":["Reader"]}}"#,
                s.instance
            ),
            ("post", "/iam/v1/instances") => r#"{"name":"x"}"#.to_owned(),
            _ => String::new(),
        };
        if !body.is_empty() {
            req = req.header("content-type", "application/json").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::FORBIDDEN, "{m} {p}: {body}");
        common::assert_kp_error(status, &body, StatusCode::FORBIDDEN, "UNAUTHORIZED_ERR");
    }
}

/// See: issue 22 ("an OpenAPI document for `/api/v2` (only `/iam/v1` has one)").
#[tokio::test]
async fn key_protect_document_matches_the_router() {
    use keyward_server::routes::openapi::ROUTES as KP_ROUTES;
    let s = TestServer::start().await;
    let resp = s
        .http
        .get(format!("{}/api/v2/openapi.json", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    let documented: BTreeSet<(String, String)> =
        ops.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let routed: BTreeSet<(String, String)> = KP_ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(KP_ROUTES.len(), routed.len(), "ROUTES lists a route twice");
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not in ROUTES: {extra:?}"
    );
    let mut ids = BTreeSet::new();
    for (m, p, op) in &ops {
        assert!(p.starts_with("/api/v2/"), "{p}");
        for field in ["summary", "description"] {
            assert!(
                op[field].as_str().is_some_and(|t| !t.trim().is_empty()),
                "{m} {p}: no {field}"
            );
        }
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        for seg in p.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|x| x["name"] == name && x["in"] == "path")),
                "{m} {p}: path parameter {name} not declared"
            );
        }
    }
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = r.split('"').next().unwrap();
        let pointer = target.strip_prefix('#').expect("local $ref");
        assert!(doc.pointer(pointer).is_some(), "unresolved $ref {target}");
    }

    // Every listed route is served: without a token it is refused as unauthenticated (or is
    // the public document), never answered 404 or 405 by the router's fallbacks.
    for (m, p) in KP_ROUTES {
        let url = format!(
            "{}{}",
            s.url,
            concrete(p).replace("actions/some-id", "actions/wrap")
        );
        let mut req = s.http.request(method(m), &url);
        if matches!(*m, "post" | "put" | "patch") {
            req = req.header("content-type", "application/json").body("{}");
        }
        let status = req.send().await.unwrap().status();
        if p.ends_with("/openapi.json") {
            assert_eq!(status, StatusCode::OK, "{m} {p}");
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {p}");
        }
    }
}
