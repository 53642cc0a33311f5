//! The one way Keyward sends a request out: a signed JSON POST, used by event delivery to
//! subscribed services and by the audit trail's webhook sinks alike.
//!
//! One HTTP client, built once: no redirects (a receiver cannot bounce the request elsewhere),
//! no proxy from the environment (a proxy would resolve and reach the target itself, past the
//! guard), names resolved through [`PublicOnly`] and address literals checked by
//! [`literal_allowed`] unless `[webhooks] allow_private_addresses` is set, and a timeout on every
//! request. One signature scheme: `X-Keyward-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "t.body">` ([`keyward_api::events::sign`]); the timestamp lets a receiver refuse replays
//! ([`keyward_api::events::verify_signature`] checks it against a tolerance).

use std::sync::Arc;
use std::time::Duration;

use keyward_crypto::Secret;
use time::OffsetDateTime;

use crate::egress::{PublicOnly, literal_allowed};

/// The longest a POST may take unless the caller gives its own limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends signed POSTs; cheap to clone (one connection pool shared by every clone).
#[derive(Clone)]
pub struct WebhookSender {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookSender {
    /// The sender; `allow_private` also lets it reach loopback, private and other non-public
    /// addresses (`[webhooks] allow_private_addresses`).
    pub fn new(allow_private: bool) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(WebhookSender {
            http: builder.build()?,
            allow_private,
        })
    }

    /// POSTs the JSON `body` to `url`, signed with `secret` at the current time, with `headers`
    /// besides, within `timeout`. Ok only on a 2xx answer (a redirect is a failure).
    pub async fn post(
        &self,
        url: &str,
        secret: &Secret,
        body: Vec<u8>,
        headers: &[(&'static str, &str)],
        timeout: Duration,
    ) -> Result<(), String> {
        if !self.allow_private && !literal_allowed(url) {
            return Err(
                "the URL's address is not public ([webhooks] allow_private_addresses)".into(),
            );
        }
        let t = OffsetDateTime::now_utc().unix_timestamp();
        let signature = keyward_api::events::sign(secret, t, &body);
        let mut request = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(keyward_api::events::headers::SIGNATURE, signature);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let resp = request
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST failed: {}", e.without_url()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST answered {}", resp.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_private_address_literal_is_refused_before_any_request() {
        let sender = WebhookSender::new(false).unwrap();
        let secret = Secret::new(b"s".to_vec());
        let err = sender
            .post(
                "http://127.0.0.1:9/x",
                &secret,
                b"[]".to_vec(),
                &[],
                DEFAULT_TIMEOUT,
            )
            .await
            .unwrap_err();
        assert!(err.contains("not public"), "{err}");
    }
}
