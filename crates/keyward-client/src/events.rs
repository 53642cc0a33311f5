//! The lifecycle-event listener of an integrated service: a server-sent-events client of
//! `GET /api/v2/event_stream` that resumes with `Last-Event-ID` and reconnects with backoff, and
//! the rules a service applies to each event before acknowledging it with `event_ack`:
//!
//! | event | action | ack |
//! |---|---|---|
//! | disable | drop the key's cached DEKs, report `Disabled` | `DEK_DISABLED` |
//! | delete, purge | drop the key's cached DEKs, report `Deleted`, [`EventHandler::deleted`] | `DEK_DELETED` |
//! | enable | re-read the key; report what it says | `DEK_ENABLED` |
//! | restore | re-read the key; report what it says | `DEK_RESTORED` |
//! | rotate | rewrap stored DEKs ([`EventHandler::rewrap`]) | `DEK_ENABLED` + `rewrappedKeyVersion` |
//! | sync | as the key's state says | as above |

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use keyward_api::events::{AdopterKeyState, EVENT_STREAM, EventAck, EventType, KeyEvent, headers};
use reqwest::Method;

use crate::ClientError;
use crate::envelope::{DataKeyring, KeyStatus, key_status};

/// What an [`EventHandler`] may fail with (the event is then not acknowledged, and replayed).
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
}

/// An incremental parser of `text/event-stream` (the WHATWG rules this stream needs: `field:
/// value` lines, one optional space after the colon, comments, CRLF or LF, a blank line ends an
/// event). Written by hand: a few dozen lines, where an SSE crate would bring its own HTTP stack.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns every event they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if self.has_data || self.cur.id.is_some() || self.cur.event.is_some() {
                    out.push(std::mem::take(&mut self.cur));
                }
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "id" => self.cur.id = Some(value.to_owned()),
                "event" => self.cur.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

/// What the service does on a rotation: rewrap every stored DEK of `event.key_id` (e.g. with
/// [`DataKeyring::rewrap`]) and persist them.
pub trait EventHandler: Send + Sync + 'static {
    /// Rewraps the stored DEKs under the key's latest version; returns the version they are now
    /// wrapped under (`None` when the service holds none).
    fn rewrap(
        &self,
        event: &KeyEvent,
    ) -> impl Future<Output = Result<Option<String>, HandlerError>> + Send;

    /// After a delete or purge, once the key's DEKs are dropped from the cache: destroy what the
    /// key protected (crypto-shredding) before the `DEK_DELETED` acknowledgement goes out.
    fn deleted(&self, event: &KeyEvent) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let _ = event;
        async { Ok(()) }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Applies the integration rules to `event` (see the module table) and returns the
/// acknowledgement to send.
pub async fn handle_event<H: EventHandler>(
    keyring: &DataKeyring,
    handler: &H,
    event: &KeyEvent,
) -> Result<EventAck, HandlerError> {
    let key = event.key_id.as_str();
    let state = |s: AdopterKeyState, v: Option<String>| {
        EventAck::new(event.event_id.clone(), s, v, now_rfc3339())
    };
    // The event says what changed; the key service says what holds now (an enable does not
    // give back an authorization that was removed).
    let confirm = || async {
        if let Ok(status) = key_status(keyring.client(), key).await {
            keyring.report(key, status);
        }
    };
    let kind = match event.event_type {
        EventType::Sync => match event.key_state {
            2 => EventType::Disable,
            5 => EventType::Delete,
            _ => EventType::Enable,
        },
        other => other,
    };
    Ok(match kind {
        EventType::Disable => {
            keyring.report(key, KeyStatus::Disabled);
            state(AdopterKeyState::DekDisabled, None)
        }
        EventType::Delete | EventType::Purge => {
            keyring.report(key, KeyStatus::Deleted);
            handler.deleted(event).await?;
            state(AdopterKeyState::DekDeleted, None)
        }
        EventType::Enable | EventType::Sync => {
            confirm().await;
            state(AdopterKeyState::DekEnabled, None)
        }
        EventType::Restore => {
            confirm().await;
            state(AdopterKeyState::DekRestored, None)
        }
        EventType::Rotate => {
            let version = handler.rewrap(event).await?;
            state(
                AdopterKeyState::DekEnabled,
                Some(version.unwrap_or_else(|| event.key_version.clone())),
            )
        }
    })
}

/// Listens to the event stream of `keyring`'s client (its identity, its instance) until the
/// returned handle is aborted: each event is handled ([`handle_event`]) and acknowledged; the
/// stream resumes after the last event handled (`Last-Event-ID`) and reconnects with backoff
/// (100 ms doubling to 5 s). Events not acknowledged are replayed by the server, so a crash
/// between handling and acknowledging repeats the (idempotent) handling.
pub fn listen<H: EventHandler>(
    keyring: Arc<DataKeyring>,
    handler: Arc<H>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match stream_once(&keyring, handler.as_ref(), &mut last).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    eprintln!("keyward-client: event stream: {e}; reconnecting in {backoff:?}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn stream_once<H: EventHandler>(
    keyring: &DataKeyring,
    handler: &H,
    last: &mut Option<u64>,
) -> Result<(), ClientError> {
    let client = keyring.client();
    let mut req = client
        .stream_request(Method::GET, "/api/v2/event_stream")
        .await?
        .header("accept", EVENT_STREAM);
    if let Some(id) = last {
        req = req.header(headers::LAST_EVENT_ID, id.to_string());
    }
    let mut resp = req.send().await?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        return Err(ClientError::Api {
            status,
            code: String::new(),
            message: "event stream refused".into(),
        });
    }
    let mut parser = SseParser::default();
    while let Some(chunk) = resp.chunk().await? {
        for sse in parser.push(&chunk) {
            let Ok(event) = serde_json::from_str::<KeyEvent>(&sse.data) else {
                continue;
            };
            match handle_event(keyring, handler, &event).await {
                Ok(ack) => {
                    client.event_ack(ack).await?;
                    *last = Some(event.seq);
                }
                // Not acknowledged: the server replays it on the next connection.
                Err(e) => {
                    return Err(ClientError::Decode(format!(
                        "handling event {}: {e}",
                        event.event_id
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_anywhere_with_comments_and_crlf() {
        let text = ": keep-alive\n\nid: 7\nevent: disable\ndata: {\"a\":1}\n\nid: 8\r\nevent: enable\r\ndata: x\r\ndata:y\r\n\r\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut got = p.push(&text.as_bytes()[..split]);
            got.extend(p.push(&text.as_bytes()[split..]));
            assert_eq!(
                got,
                vec![
                    SseEvent {
                        id: Some("7".into()),
                        event: Some("disable".into()),
                        data: "{\"a\":1}".into()
                    },
                    SseEvent {
                        id: Some("8".into()),
                        event: Some("enable".into()),
                        data: "x\ny".into()
                    },
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn an_unfinished_event_is_held_back() {
        let mut p = SseParser::default();
        assert!(p.push(b"id: 1\ndata: partial\n").is_empty());
        assert_eq!(p.push(b"\n").len(), 1);
    }
}
