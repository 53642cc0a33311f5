//! KMIP adapters, their client certificates and KMIP objects (`/api/v2/kmip_adapters`). Adapters
//! and certificates are addressed by id or name, KMIP objects by id.

use keyward_api::{
    Collection, KmipAdapter, KmipAdapterCreate, KmipCertificate, KmipCertificateCreate, KmipObject,
    KmipProfileData, media,
};
use reqwest::Method;
use serde::de::DeserializeOwned;

use crate::{Client, ClientError, enc};

const ADAPTERS: &str = "/api/v2/kmip_adapters";

/// The one KMIP profile.
pub const KMIP_PROFILE_NATIVE: &str = "native_1.0";

/// One page of a KMIP listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KmipPage {
    /// At most this many (the server's default is 100).
    pub limit: u32,
    /// Skip this many.
    pub offset: u32,
}

impl Default for KmipPage {
    fn default() -> Self {
        KmipPage {
            limit: 100,
            offset: 0,
        }
    }
}

impl KmipPage {
    fn query(self) -> [(&'static str, String); 3] {
        [
            ("limit", self.limit.to_string()),
            ("offset", self.offset.to_string()),
            ("totalCount", "true".into()),
        ]
    }
}

fn first<T>(c: Collection<T>, what: &str) -> Result<T, ClientError> {
    c.resources
        .into_iter()
        .next()
        .ok_or_else(|| ClientError::Decode(format!("empty {what} collection")))
}

fn adapter_path(adapter: &str) -> String {
    format!("{ADAPTERS}/{}", enc(adapter))
}

impl Client {
    async fn kmip_one<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        what: &str,
    ) -> Result<T, ClientError> {
        let req = self.request(method, path).await?;
        let c: Collection<T> = self.json(req).await?;
        first(c, what)
    }

    async fn kmip_delete(&self, path: &str, query: &[(&str, &str)]) -> Result<(), ClientError> {
        let req = self.request(Method::DELETE, path).await?.query(query);
        self.send(req).await.map(|_| ())
    }

    /// Creates a KMIP adapter on root key `crk` (an id or alias) (`POST /api/v2/kmip_adapters`).
    /// `allow_expiring_key` accepts a root key with an expiration date.
    pub async fn create_kmip_adapter(
        &self,
        crk: &str,
        name: Option<String>,
        description: Option<String>,
        allow_expiring_key: bool,
    ) -> Result<KmipAdapter, ClientError> {
        let spec = KmipAdapterCreate {
            name,
            description,
            profile: Some(KMIP_PROFILE_NATIVE.to_owned()),
            profile_data: Some(KmipProfileData {
                crk_id: Some(crk.to_owned()),
            }),
        };
        let mut req = self
            .request(Method::POST, ADAPTERS)
            .await?
            .header("content-type", media::KMIP_ADAPTER)
            .json(&Collection::new(media::KMIP_ADAPTER, vec![spec]));
        if allow_expiring_key {
            req = req.query(&[("allowExpiringKey", "true")]);
        }
        let c: Collection<KmipAdapter> = self.json(req).await?;
        first(c, "KMIP adapter")
    }

    /// The instance's KMIP adapters, with the total count (`GET /api/v2/kmip_adapters`), only
    /// those on root key `crk_id` when given.
    pub async fn kmip_adapters(
        &self,
        crk_id: Option<&str>,
        page: KmipPage,
    ) -> Result<Collection<KmipAdapter>, ClientError> {
        let mut req = self
            .request(Method::GET, ADAPTERS)
            .await?
            .query(&page.query());
        if let Some(crk) = crk_id {
            req = req.query(&[("crk_id", crk)]);
        }
        self.json(req).await
    }

    /// A KMIP adapter by id or name (`GET /api/v2/kmip_adapters/{id}`).
    pub async fn kmip_adapter(&self, adapter: &str) -> Result<KmipAdapter, ClientError> {
        self.kmip_one(Method::GET, &adapter_path(adapter), "KMIP adapter")
            .await
    }

    /// Deletes a KMIP adapter and its certificates (`DELETE /api/v2/kmip_adapters/{id}`).
    pub async fn delete_kmip_adapter(&self, adapter: &str) -> Result<(), ClientError> {
        self.kmip_delete(&adapter_path(adapter), &[]).await
    }

    /// Adds a client certificate (PEM) to an adapter
    /// (`POST /api/v2/kmip_adapters/{id}/certificates`); returns it in full.
    pub async fn add_kmip_certificate(
        &self,
        adapter: &str,
        certificate_pem: &str,
        name: Option<String>,
    ) -> Result<KmipCertificate, ClientError> {
        let spec = KmipCertificateCreate {
            name,
            certificate: Some(certificate_pem.to_owned()),
        };
        let req = self
            .request(
                Method::POST,
                &format!("{}/certificates", adapter_path(adapter)),
            )
            .await?
            .header("content-type", media::KMIP_CLIENT_CERTIFICATE)
            .json(&Collection::new(media::KMIP_CLIENT_CERTIFICATE, vec![spec]));
        let c: Collection<KmipCertificate> = self.json(req).await?;
        first(c, "KMIP client certificate")
    }

    /// An adapter's client certificates, without the PEM, with the total count
    /// (`GET /api/v2/kmip_adapters/{id}/certificates`).
    pub async fn kmip_certificates(
        &self,
        adapter: &str,
        page: KmipPage,
    ) -> Result<Collection<KmipCertificate>, ClientError> {
        let req = self
            .request(
                Method::GET,
                &format!("{}/certificates", adapter_path(adapter)),
            )
            .await?
            .query(&page.query());
        self.json(req).await
    }

    /// A client certificate by id or name, with its PEM
    /// (`GET /api/v2/kmip_adapters/{id}/certificates/{cert}`).
    pub async fn kmip_certificate(
        &self,
        adapter: &str,
        cert: &str,
    ) -> Result<KmipCertificate, ClientError> {
        let path = format!("{}/certificates/{}", adapter_path(adapter), enc(cert));
        self.kmip_one(Method::GET, &path, "KMIP client certificate")
            .await
    }

    /// Removes a client certificate (`DELETE /api/v2/kmip_adapters/{id}/certificates/{cert}`).
    pub async fn delete_kmip_certificate(
        &self,
        adapter: &str,
        cert: &str,
    ) -> Result<(), ClientError> {
        let path = format!("{}/certificates/{}", adapter_path(adapter), enc(cert));
        self.kmip_delete(&path, &[]).await
    }

    /// An adapter's KMIP objects, with the total count
    /// (`GET /api/v2/kmip_adapters/{id}/kmip_objects`), only those in `states` (KMIP states 1
    /// to 6) when not empty; the server's default is states 1 to 4.
    pub async fn kmip_objects(
        &self,
        adapter: &str,
        states: &[u8],
        page: KmipPage,
    ) -> Result<Collection<KmipObject>, ClientError> {
        let mut req = self
            .request(
                Method::GET,
                &format!("{}/kmip_objects", adapter_path(adapter)),
            )
            .await?
            .query(&page.query());
        if !states.is_empty() {
            let list = states
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(",");
            req = req.query(&[("state", list)]);
        }
        self.json(req).await
    }

    /// A KMIP object by id (`GET /api/v2/kmip_adapters/{id}/kmip_objects/{obj}`).
    pub async fn kmip_object(
        &self,
        adapter: &str,
        object: &str,
    ) -> Result<KmipObject, ClientError> {
        let path = format!("{}/kmip_objects/{}", adapter_path(adapter), enc(object));
        self.kmip_one(Method::GET, &path, "KMIP object").await
    }

    /// Destroys a KMIP object (`DELETE /api/v2/kmip_adapters/{id}/kmip_objects/{obj}`); `force`
    /// also destroys an Active one.
    pub async fn delete_kmip_object(
        &self,
        adapter: &str,
        object: &str,
        force: bool,
    ) -> Result<(), ClientError> {
        let path = format!("{}/kmip_objects/{}", adapter_path(adapter), enc(object));
        let query: &[(&str, &str)] = if force { &[("force", "true")] } else { &[] };
        self.kmip_delete(&path, query).await
    }
}
