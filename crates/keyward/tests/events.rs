//! Lifecycle events survive a crash: a real `keyward serve` acknowledges a disable of a key with
//! a registration, is killed with SIGKILL before it could deliver the webhook (the receiver is
//! not listening yet), and after a restart the receiver gets the event, correctly signed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{FAST_LIFECYCLE, LOCAL_WEBHOOKS, api, kill9, spawn_with};
use serde_json::{Value, json};

const CRN: &str = "crn:v1:bluemix:public:messagehub:us-south:a/acct:inst-1::";

/// One webhook request as the receiver saw it.
struct Hook {
    event_id: String,
    signature: String,
    body: Vec<u8>,
}

/// A minimal HTTP/1.1 receiver on `listener`: reads each request (headers, `Content-Length`
/// body), answers 204, and sends what it read on `tx`. Hand-written because the test only needs
/// to accept POSTs, and a blocking one keeps this test free of an async runtime.
fn serve_hooks(listener: TcpListener, tx: mpsc::Sender<Hook>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end().to_owned();
                if line.is_empty() {
                    break;
                }
                headers.push(line);
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .unwrap();
            let _ = tx.send(Hook {
                event_id: header("x-keyward-event-id"),
                signature: header("x-keyward-signature"),
                body,
            });
        }
    });
}

#[test]
fn an_acknowledged_disable_reaches_the_webhook_after_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = spawn_with(dir.path(), &format!("{FAST_LIFECYCLE}{LOCAL_WEBHOOKS}"));
    let a = api(dir.path(), &p.url);
    let r = a
        .req(reqwest::Method::POST, "/api/v2/keys")
        .json(&json!({"resources": [{"name": "evented"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let key = r.json::<Value>().unwrap()["resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The bootstrap administrator is a service ID: it may register.
    let crn: String = CRN
        .bytes()
        .map(|b| match b {
            b':' => "%3A".to_owned(),
            b'/' => "%2F".to_owned(),
            b => (b as char).to_string(),
        })
        .collect();
    let r = a
        .req(
            reqwest::Method::POST,
            &format!("/api/v2/keys/{key}/registrations/{crn}"),
        )
        .json(&json!({"resources": [{"description": "topic store"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());

    // A free port with nothing listening yet: deliveries fail until the restart.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let r = a
        .req(reqwest::Method::PUT, "/api/v2/event_subscription")
        .json(&json!({ "url": url }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let secret = r.json::<Value>().unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let r = a
        .req(
            reqwest::Method::POST,
            &format!("/api/v2/keys/{key}/actions/disable"),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    kill9(p);

    let (tx, rx) = mpsc::channel();
    serve_hooks(TcpListener::bind(("127.0.0.1", port)).unwrap(), tx);
    let p = spawn_with(dir.path(), &format!("{FAST_LIFECYCLE}{LOCAL_WEBHOOKS}"));
    // A delivery the killed process had leased is retried once the lease (15 s) runs out.
    let hook = rx
        .recv_timeout(Duration::from_secs(40))
        .expect("the event was not delivered after the restart");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    keyward_api::events::verify_signature(&secret, &hook.signature, &hook.body, now, 300).unwrap();
    let event: Value = serde_json::from_slice(&hook.body).unwrap();
    assert_eq!(event["eventType"], "disable");
    assert_eq!(event["keyId"], key.as_str());
    assert_eq!(event["keyState"], 2);
    assert_eq!(event["resourceCrns"], json!([CRN]));
    assert_eq!(event["eventId"], hook.event_id.as_str());
    kill9(p);
}
