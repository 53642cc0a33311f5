//! Registrations (Key Protect's API for integrated services: a resource, named by CRN, protected
//! by a root key), `actions/sync`, `event_ack`, webhook subscriptions, and forced key deletion.
//! A service makes the registration calls with its own identity (Reader on the key suffices).

use keyward_api::events::{
    EVENT_ACKNOWLEDGE, EventAck, EventSubscription, EventSubscriptionRequest,
};
use keyward_api::registrations::{REGISTRATION_INPUT, Registration, RegistrationInput, query};
use keyward_api::{Collection, Key, headers};
use reqwest::Method;

use crate::{Client, ClientError, enc};

impl Client {
    async fn registration_write(
        &self,
        method: Method,
        key_id: &str,
        resource_crn: &str,
        input: RegistrationInput,
    ) -> Result<Registration, ClientError> {
        let req = self
            .request(
                method,
                &format!(
                    "/api/v2/keys/{}/registrations/{}",
                    enc(key_id),
                    enc(resource_crn)
                ),
            )
            .await?
            .header("content-type", REGISTRATION_INPUT)
            .header(headers::PREFER, "return=representation")
            .json(&input.into_body());
        let c: Collection<Registration> = self.json(req).await?;
        c.resources
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Decode("empty registration collection".into()))
    }

    /// Registers `resource_crn` as protected by `key_id` (`POST …/registrations/{crn}`, 201).
    pub async fn create_registration(
        &self,
        key_id: &str,
        resource_crn: &str,
        input: RegistrationInput,
    ) -> Result<Registration, ClientError> {
        self.registration_write(Method::POST, key_id, resource_crn, input)
            .await
    }

    /// Replaces a registration (`PUT`): absent fields take their defaults.
    pub async fn replace_registration(
        &self,
        key_id: &str,
        resource_crn: &str,
        input: RegistrationInput,
    ) -> Result<Registration, ClientError> {
        self.registration_write(Method::PUT, key_id, resource_crn, input)
            .await
    }

    /// Updates a registration (`PATCH`): absent fields are left as they are.
    pub async fn update_registration(
        &self,
        key_id: &str,
        resource_crn: &str,
        input: RegistrationInput,
    ) -> Result<Registration, ClientError> {
        self.registration_write(Method::PATCH, key_id, resource_crn, input)
            .await
    }

    /// Deletes a registration (`DELETE`, 204).
    pub async fn delete_registration(
        &self,
        key_id: &str,
        resource_crn: &str,
    ) -> Result<(), ClientError> {
        let req = self
            .request(
                Method::DELETE,
                &format!(
                    "/api/v2/keys/{}/registrations/{}",
                    enc(key_id),
                    enc(resource_crn)
                ),
            )
            .await?;
        self.send(req).await.map(drop)
    }

    /// Registrations of one key (`GET /api/v2/keys/{id}/registrations`) or, with `key_id` `None`,
    /// of every key of the instance (`GET /api/v2/keys/registrations`); `crn_pattern` filters by
    /// resource CRN (`*` matches any run of characters).
    pub async fn registrations(
        &self,
        key_id: Option<&str>,
        crn_pattern: Option<&str>,
    ) -> Result<Collection<Registration>, ClientError> {
        let path = match key_id {
            Some(id) => format!("/api/v2/keys/{}/registrations", enc(id)),
            None => "/api/v2/keys/registrations".to_owned(),
        };
        let mut q = vec![(query::TOTAL_COUNT, "true".to_owned())];
        if let Some(p) = crn_pattern {
            q.push((query::CRN, p.to_owned()));
        }
        let req = self.request(Method::GET, &path).await?.query(&q);
        self.json(req).await
    }

    /// Re-sends the key's current state to every registered service (`actions/sync`, 204).
    pub async fn sync_key(&self, key_id: &str) -> Result<(), ClientError> {
        let req = self
            .request(
                Method::POST,
                &format!("/api/v2/keys/{}/actions/sync", enc(key_id)),
            )
            .await?;
        self.send(req).await.map(drop)
    }

    /// Acknowledges a lifecycle event (`POST /api/v2/event_ack`, 204).
    pub async fn event_ack(&self, ack: EventAck) -> Result<(), ClientError> {
        let req = self
            .request(Method::POST, "/api/v2/event_ack")
            .await?
            .header("content-type", EVENT_ACKNOWLEDGE)
            .json(&ack.into_body());
        self.send(req).await.map(drop)
    }

    /// Sets the caller's webhook (`PUT /api/v2/event_subscription`); the answer holds the HMAC
    /// secret, shown only here.
    pub async fn subscribe_events(&self, url: &str) -> Result<EventSubscription, ClientError> {
        let req = self
            .request(Method::PUT, "/api/v2/event_subscription")
            .await?
            .json(&EventSubscriptionRequest {
                url: url.to_owned(),
            });
        self.json(req).await
    }

    /// Removes the caller's webhook (`DELETE /api/v2/event_subscription`).
    pub async fn unsubscribe_events(&self) -> Result<(), ClientError> {
        let req = self
            .request(Method::DELETE, "/api/v2/event_subscription")
            .await?;
        self.send(req).await.map(drop)
    }

    /// Deletes a key; `force` also deletes one that has registrations (none of them
    /// `preventKeyDeletion`). Returns it as deleted.
    pub async fn delete_key(&self, id: &str, force: bool) -> Result<Key, ClientError> {
        let mut req = self
            .request(Method::DELETE, &format!("/api/v2/keys/{}", enc(id)))
            .await?
            .header(headers::PREFER, "return=representation");
        if force {
            req = req.query(&[("force", "true")]);
        }
        self.first_key(req).await
    }
}
