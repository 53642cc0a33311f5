//! Floods of unauthenticated requests against a real server (issue 18, items 5 and 10): bad API
//! keys and bad bearer tokens are limited per source address and sampled in the audit trail,
//! a client holding a valid token keeps working at the same address, and a refused request is
//! never written into the trail of the instance it names nor under the request id it chose.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::{DEK_B64, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const API_KEY_GRANT: &str = "urn:ibm:params:oauth:grant-type:apikey";

/// Audit events of refused unauthenticated requests (failed logins and refused tokens).
async fn refusal_rows(s: &TestServer) -> i64 {
    s.db()
        .await
        .int(
            "SELECT COUNT(*) FROM audit_events WHERE outcome = 'failure'
               AND action IN ('iam-identity.apikey.login', 'kms.secrets.authenticate')",
            &[],
        )
        .await
}

async fn audit_rows(s: &TestServer) -> i64 {
    s.db()
        .await
        .int("SELECT COUNT(*) FROM audit_events", &[])
        .await
}

/// The value of `keyward_refused_requests_total{reason}` on the server's `/metrics`.
async fn refused_metric(s: &TestServer, reason: &str) -> f64 {
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("keyward_refused_requests_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The size of the SQLite database with its log (0 on PostgreSQL).
fn db_bytes(s: &TestServer) -> u64 {
    ["keyward.db", "keyward.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(s.dir.path().join(f)).map_or(0, |m| m.len()))
        .sum()
}

/// See: issue 18, item 5. 2 000 bad API keys and 2 000 bad bearer tokens, as fast as eight
/// tasks send them from 127.0.0.1, while a client with a valid token wraps from the same
/// address: the flood gets 400/401 then 429, its refusals are counted in /metrics and leave a
/// handful of audit rows, and every wrap succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_bad_credentials_is_throttled_and_sampled_and_a_valid_client_keeps_wrapping() {
    // Refusals answered at once: the flood's 3 000 refusals would otherwise be held a second
    // each (that holding is the next test's).
    let s = TestServer::start_with(|c| c.ip_limits.refusal_delay_ms = 0).await;
    let key = s.create_root_key("flooded").await;
    let rows_before = refusal_rows(&s).await;
    let all_before = audit_rows(&s).await;
    let bytes_before = db_bytes(&s);

    let started = Instant::now();
    let mut flood = Vec::new();
    for task in 0..8 {
        let (url, instance) = (s.url.clone(), s.instance.clone());
        flood.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut statuses = Vec::new();
            for i in 0..250 {
                let apikey = format!("kw{task:02}{i:020}.{}", "A".repeat(43));
                let resp = http
                    .post(format!("{url}/identity/token"))
                    .form(&[("grant_type", API_KEY_GRANT), ("apikey", &apikey)])
                    .send()
                    .await
                    .unwrap();
                statuses.push(resp.status());
                let resp = http
                    .post(format!("{url}/api/v2/keys/x/actions/wrap"))
                    .bearer_auth(format!("not-a-token-{task}-{i}"))
                    .header("bluemix-instance", &instance)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                statuses.push(resp.status());
            }
            statuses
        }));
    }
    let mut wraps = 0;
    while flood.iter().any(|t| !t.is_finished()) {
        let (status, body) = s.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(status, StatusCode::OK, "a valid client was refused: {body}");
        wraps += 1;
    }
    let mut statuses = Vec::new();
    for t in flood {
        statuses.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    let count = |want: StatusCode| statuses.iter().filter(|s| **s == want).count();
    let (bad, unauthorized, throttled) = (
        count(StatusCode::BAD_REQUEST),
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(bad + unauthorized + throttled, 4000, "{statuses:?}");
    assert!(throttled >= 3000, "only {throttled} of 4000 throttled");
    assert!(wraps > 0);

    let rows = refusal_rows(&s).await - rows_before;
    let all = audit_rows(&s).await - all_before;
    eprintln!(
        "flood: 4000 requests in {took:?}: {bad} x 400, {unauthorized} x 401, {throttled} x 429; \
         {wraps} wraps meanwhile; {rows} refusal rows, {all} audit rows in all (wraps included), \
         database grew {} bytes",
        db_bytes(&s).saturating_sub(bytes_before)
    );
    assert!(rows <= 6, "{rows} audit rows for a flood from one address");

    assert!(refused_metric(&s, "token_rate").await >= 1000.0);
    assert!(refused_metric(&s, "unauthenticated_rate").await >= 1000.0);
    assert!(refused_metric(&s, "login").await >= 1.0);
    assert!(refused_metric(&s, "authentication").await >= 2000.0);

    // A throttled token request answers in IAM's shape with Retry-After (the bucket refilled
    // a little while the trail was read: drain it again).
    let mut throttled = None;
    for _ in 0..300 {
        let resp = s
            .http
            .post(format!("{}/identity/token", s.url))
            .form(&[("grant_type", API_KEY_GRANT), ("apikey", "kwnope")])
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(resp);
            break;
        }
    }
    let resp = throttled.expect("throttled");
    assert!(resp.headers().contains_key("retry-after"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["errorCode"].as_str().unwrap().starts_with("BXNIM"));
    // A throttled bad bearer answers in Key Protect's error format.
    let mut last = None;
    for _ in 0..300 {
        let (status, body) = s
            .call_as(
                Method::GET,
                "/api/v2/keys",
                None,
                Some("bogus"),
                Some(&s.instance),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            last = Some((status, body));
            break;
        }
    }
    let (status, body) = last.expect("throttled");
    common::assert_kp_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "TOO_MANY_REQUESTS_ERR",
    );
}

/// See: issue 18's flood criterion. A source over its limit waits `refusal_delay_ms` for its
/// 429 (so a flooding client waits instead of sending), at most `max_delayed_refusals` are held
/// at once (the others are answered at once), and a client with a valid token at the same
/// address is never held.
#[tokio::test]
async fn an_over_limit_source_waits_for_its_refusal_and_the_holding_is_bounded() {
    const DELAY: Duration = Duration::from_millis(2000);
    let s = TestServer::start_with(|c| {
        c.ip_limits.token_per_second = 1;
        c.ip_limits.token_burst = 2;
        c.ip_limits.refusal_delay_ms = DELAY.as_millis() as u64;
        c.ip_limits.max_delayed_refusals = 2;
    })
    .await;
    let key = s.create_root_key("held").await;
    let login = |apikey: String| {
        let (http, url) = (reqwest::Client::new(), s.url.clone());
        async move {
            let started = Instant::now();
            let resp = http
                .post(format!("{url}/identity/token"))
                .form(&[("grant_type", API_KEY_GRANT), ("apikey", &apikey)])
                .send()
                .await
                .unwrap();
            (resp.status(), started.elapsed())
        }
    };
    // Six at once (each on its own connection) while the valid client wraps: the burst of two
    // holds at most two tokens (the server's own login took some), so four or more are over
    // the limit; two of those are held,
    // the rest go out at once.
    let six = futures_util::future::join_all((0..6).map(|i| login(format!("kwsix{i}"))));
    let wrap = async {
        let started = Instant::now();
        let (status, body) = s.action(&key, "wrap", json!({"plaintext": DEK_B64})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        started.elapsed()
    };
    let (six, wrapped_in) = tokio::join!(six, wrap);
    assert!(wrapped_in < DELAY, "the valid client waited {wrapped_in:?}");
    let refused: Vec<Duration> = six
        .iter()
        .filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, took)| *took)
        .collect();
    assert!(refused.len() >= 4, "{six:?}");
    let held = refused.iter().filter(|took| **took >= DELAY).count();
    assert_eq!(held, 2, "{six:?}");
    for (status, took) in &six {
        assert!(
            *status == StatusCode::TOO_MANY_REQUESTS || *took < DELAY,
            "an admitted request was held: {six:?}"
        );
    }
}

/// See: issue 18, item 5. A flood that stops between two sampling intervals is still accounted
/// for: the refusals not recorded one by one are summed into one event per source.
#[tokio::test]
async fn refusals_not_recorded_one_by_one_are_summed_after_the_interval() {
    let s = TestServer::start_with(|c| c.ip_limits.audit_interval_secs = 1).await;
    for _ in 0..30 {
        let (status, _) = s
            .call_as(Method::GET, "/api/v2/keys", None, Some("bogus"), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let reasons: Vec<String> = s
        .db()
        .await
        .rows(
            "SELECT reason FROM audit_events WHERE action = 'kms.secrets.authenticate'
             ORDER BY seq",
            &[],
        )
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[1].contains("29 refused requests"), "{reasons:?}");
}

/// See: issue 18, item 10. A refused request names an instance and a request id of its
/// choosing: its audit event is on no instance (that instance's trail does not show it) and
/// carries the server's request id; a request whose token verified but names another account's
/// instance is recorded as its identity's, on no instance either.
#[tokio::test]
async fn a_refused_request_is_not_recorded_on_the_instance_it_names_nor_under_its_request_id() {
    let s = TestServer::start().await;
    let resp = s
        .http
        .get(format!("{}/api/v2/keys", s.url))
        .bearer_auth("forged")
        .header("bluemix-instance", &s.instance)
        .header("x-request-id", "chosen-by-the-caller")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let other = uuid::Uuid::new_v4().to_string();
    let (status, _) = s
        .call_as(
            Method::GET,
            "/api/v2/keys",
            None,
            Some(&s.token),
            Some(&other),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let rows = s
        .db()
        .await
        .rows(
            "SELECT instance_id, request_id, initiator FROM audit_events
             WHERE action = 'kms.secrets.authenticate' ORDER BY seq",
            &[],
        )
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r[0], None, "a refusal recorded on an instance: {rows:?}");
        assert_ne!(r[1].as_deref(), Some("chosen-by-the-caller"), "{rows:?}");
    }
    assert!(rows[0][2].as_deref().unwrap().contains("unauthenticated"));
    assert!(!rows[1][2].as_deref().unwrap().contains("unauthenticated"));
    // The instance's own trail, as its Manager reads it, shows neither.
    let (status, trail) = s
        .call(
            Method::GET,
            "/api/v2/audit_events?action=kms.secrets.authenticate",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    assert_eq!(
        trail["resources"].as_array().map_or(0, Vec::len),
        0,
        "{trail}"
    );
}

/// The database's logical size (pages in use, the log's committed pages included), read
/// through SQLite: unlike the files' sizes it does not move with checkpoints and log restarts.
fn logical_db_bytes(s: &TestServer) -> u64 {
    let c = rusqlite::Connection::open_with_flags(
        s.dir.path().join("keyward.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let pages: i64 = c
        .query_row(
            "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    u64::try_from(pages * size).unwrap()
}

/// See: issue 18, item 5 and its "done when": a flood of bad API keys grows the database by
/// less than 1 MB. Sixteen source addresses (127.0.0.2 to .17) post bad API keys as fast as
/// they can for 8 s with audit sampling every second (ten times the default rate of sampled
/// rows, so this stands for 80 s at the default): what is written depends on sources and
/// intervals, not on how many requests they send. Timing (wrap latency under a 60 s flood) is
/// `scripts/flood.sh`'s, not a test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_bad_api_keys_from_many_addresses_grows_the_database_by_less_than_1_mb() {
    if common::on_postgres() {
        return;
    }
    let s = TestServer::start_with(|c| c.ip_limits.audit_interval_secs = 1).await;
    let before = logical_db_bytes(&s);
    let rows_before = refusal_rows(&s).await;
    let deadline = Instant::now() + std::time::Duration::from_secs(8);
    let mut flood = Vec::new();
    for source in 2..18u8 {
        for task in 0..2 {
            let url = s.url.clone();
            flood.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .local_address(std::net::IpAddr::from([127, 0, 0, source]))
                    .build()
                    .unwrap();
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let apikey = format!("kw{source:03}{task}{sent:018}.{}", "B".repeat(43));
                    let status = http
                        .post(format!("{url}/identity/token"))
                        .form(&[("grant_type", API_KEY_GRANT), ("apikey", &apikey)])
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert!(
                        [StatusCode::BAD_REQUEST, StatusCode::TOO_MANY_REQUESTS].contains(&status),
                        "{status}"
                    );
                    sent += 1;
                }
                sent
            }));
        }
    }
    let mut sent = 0;
    for t in flood {
        sent += t.await.unwrap();
    }
    // The last interval's unrecorded refusals are summed after it ends.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let grew = logical_db_bytes(&s).saturating_sub(before);
    let rows = refusal_rows(&s).await - rows_before;
    eprintln!(
        "flood: {sent} bad API keys from 16 addresses in 8 s: {rows} audit rows, database grew \
         {grew} bytes"
    );
    assert!(sent > 1_000, "too little load: {sent}");
    assert!(grew < 1 << 20, "the database grew {grew} bytes");
    // At most one row per source per interval, plus the sums at interval ends.
    assert!(rows <= 16 * 2 * 11, "{rows} audit rows");
}
