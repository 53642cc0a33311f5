//! The web console's serving side, through the router in-process: `/` redirects to `/ui/`, the
//! page and its assets come from the binary with their media types, an unknown asset is 404, and
//! every console answer (404s included) carries the Content-Security-Policy and
//! `X-Frame-Options: DENY`. The console in a browser: `tests/interop/test_console.py`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;
use keyward_server::console::CONTENT_SECURITY_POLICY;
use tower::ServiceExt;

/// Answers `GET path` from a router over a fresh data directory.
async fn get(path: &str) -> (Response, String) {
    let dir = tempfile::tempdir().unwrap();
    let state = keyward_server::open(common::config(dir.path()))
        .await
        .unwrap();
    let resp = keyward_server::router(state)
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        Response::from_parts(parts, Body::empty()),
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn header_of(resp: &Response, name: header::HeaderName) -> &str {
    resp.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn assert_protected(resp: &Response, path: &str) {
    let csp = header_of(resp, header::CONTENT_SECURITY_POLICY);
    assert_eq!(csp, CONTENT_SECURITY_POLICY, "{path}");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(directive), "{path}: {directive} missing");
    }
    assert!(!csp.contains("unsafe-inline"), "{path}");
    assert_eq!(header_of(resp, header::X_FRAME_OPTIONS), "DENY", "{path}");
    assert_eq!(
        header_of(resp, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{path}"
    );
    assert_eq!(
        header_of(resp, header::REFERRER_POLICY),
        "no-referrer",
        "{path}"
    );
}

#[tokio::test]
async fn root_redirects_to_the_console() {
    let (resp, _) = get("/").await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    assert_eq!(header_of(&resp, header::LOCATION), "/ui/");
    assert_protected(&resp, "/");
}

#[tokio::test]
async fn console_page_is_served_with_csp_and_no_inline_script_or_style() {
    for path in ["/ui", "/ui/"] {
        let (resp, body) = get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header_of(&resp, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header_of(&resp, header::CACHE_CONTROL), "no-store");
        assert_protected(&resp, path);
        assert!(body.contains(r#"<script src="/ui/assets/console.js" defer></script>"#));
        assert!(body.contains(r#"<label for="apikey">API key</label>"#));
        // Nothing the CSP would block: no inline script, handler or style, nothing off-site.
        assert_eq!(body.matches("<script").count(), 1, "{path}");
        for inline in [
            " style=",
            "<style",
            " onclick=",
            " onload=",
            "javascript:",
            "http://",
            "https://",
        ] {
            assert!(!body.contains(inline), "{path}: {inline}");
        }
    }
}

#[tokio::test]
async fn console_assets_are_served_with_their_media_types() {
    for (path, media, marker) in [
        (
            "/ui/assets/console.js",
            "text/javascript; charset=utf-8",
            "'use strict';",
        ),
        ("/ui/assets/console.css", "text/css; charset=utf-8", ":root"),
        ("/ui/assets/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let (resp, body) = get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header_of(&resp, header::CONTENT_TYPE), media, "{path}");
        assert_protected(&resp, path);
        assert!(body.contains(marker), "{path}");
    }
}

#[tokio::test]
async fn unknown_console_paths_are_404_with_csp() {
    for path in [
        "/ui/assets/nothing.js",
        "/ui/assets/..%2Fconsole.js",
        "/ui/keys",
        "/ui/assets/",
    ] {
        let (resp, _) = get(path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_protected(&resp, path);
    }
}

#[tokio::test]
async fn console_script_keeps_tokens_out_of_storage_and_markup() {
    let (_, js) = get("/ui/assets/console.js").await;
    // The token lives in memory: no Web Storage, no cookie; the DOM is never fed markup.
    for banned in [
        "localStorage",
        "sessionStorage",
        "document.cookie",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(banned), "console.js uses {banned}");
    }
}
