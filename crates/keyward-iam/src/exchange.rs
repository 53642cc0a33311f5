//! The token exchange (an API key or a refresh token for an access token and a new refresh
//! token) and the record of a refused authentication, both run through core's pipeline, so each
//! attempt is audited like any operation: `iam-identity.apikey.login`,
//! `iam-identity.refresh-token.login`, `kms.secrets.authenticate`. Tokens and API keys are never
//! logged or audited; an event names the subject and the API key id once they are known.

use std::sync::OnceLock;

use keyward_core::op;
use keyward_core::{
    Actor, ApiKeyRecord, Failure, IdentityKind, IdentityRecord, Initiator, KeyError, Operation,
    StoreError, Target,
};
use zeroize::Zeroizing;

use crate::api_key::{parse_api_key, verify_secret};
use crate::service::IamService;
use crate::token::{
    AccessToken, REFRESH_TOKEN_TTL_SECS, TokenIssuer, new_refresh_token, refresh_token_hash,
};

/// Where a token request comes from.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// Request id for audit and logs.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
}

/// What a successful exchange returns.
#[derive(Debug)]
pub struct Tokens {
    /// The access token.
    pub access: AccessToken,
    /// A new single-use refresh token. A credential: returned once, never logged.
    pub refresh: Zeroizing<String>,
}

/// Why an exchange was refused. The three refusals answer alike whatever the cause (unknown,
/// malformed, spent, locked, deleted), so the answer is no oracle; their text is IBM IAM's.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The API key is unknown, malformed or locked, or its identity is gone or locked.
    #[error("Provided API key could not be found.")]
    UnknownApiKey,
    /// The refresh token is unknown, malformed or spent, or its API key or identity is gone or
    /// locked.
    #[error("Provided refresh token is invalid.")]
    InvalidRefreshToken,
    /// The refresh token is past its lifetime.
    #[error("Provided refresh token is expired.")]
    ExpiredRefreshToken,
    /// Signing the token or drawing the refresh token's randomness failed.
    #[error("token issuance failed")]
    Issuance,
    /// The store or custody failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        LoginError::Key(e.into())
    }
}

impl Failure for LoginError {
    fn reason_code(&self) -> u16 {
        match self {
            LoginError::UnknownApiKey
            | LoginError::InvalidRefreshToken
            | LoginError::ExpiredRefreshToken => 400,
            LoginError::Issuance => 500,
            LoginError::Key(e) => e.reason_code(),
        }
    }
}

/// Whoever presents a credential: unauthenticated until the body knows whose it is.
struct Presenter<'a> {
    login: &'a Login,
    subject: OnceLock<String>,
}

impl Presenter<'_> {
    fn is(&self, subject: &str) {
        let _ = self.subject.set(subject.to_owned());
    }
}

impl Actor for Presenter<'_> {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: self
                .subject
                .get()
                .map_or_else(|| "unauthenticated".to_owned(), Clone::clone),
            address: self.login.address.clone(),
        }
    }

    fn request_id(&self) -> &str {
        &self.login.request_id
    }

    fn audit_instance(&self) -> Option<String> {
        None
    }

    /// The exchange's verbs have no access operation: the body authorizes with the credential.
    fn check(&self, operation: Operation, _: Target<'_>) -> Result<(), KeyError> {
        Err(KeyError::Forbidden(operation))
    }
}

impl IamService {
    /// Exchanges an API key for tokens, if the key and its identity exist and are unlocked.
    pub async fn api_key_login(
        &self,
        issuer: &TokenIssuer,
        apikey: &str,
        login: &Login,
    ) -> Result<Tokens, LoginError> {
        let who = Presenter {
            login,
            subject: OnceLock::new(),
        };
        self.pipe
            .run(&op::API_KEY_LOGIN, &who, None, async |ctx| {
                let key = match parse_api_key(apikey.trim()) {
                    Some((id, secret)) => self
                        .store
                        .api_key(id)
                        .await?
                        .filter(|k| !k.locked && verify_secret(secret, &k.secret_hash)),
                    None => None,
                };
                let key = key.ok_or(LoginError::UnknownApiKey)?;
                who.is(&key.subject);
                ctx.target(&key.id);
                // A locked or deleted identity cannot obtain tokens (they would be refused anyway).
                let identity = self
                    .usable_identity(&key)
                    .await?
                    .ok_or(LoginError::UnknownApiKey)?;
                ctx.authorize_own()?;
                self.issue(issuer, &key, identity.kind).await
            })
            .await
    }

    /// Exchanges a refresh token (once: any attempt spends it) for new tokens, if its API key
    /// and identity still exist and are unlocked.
    pub async fn refresh_login(
        &self,
        issuer: &TokenIssuer,
        refresh_token: &str,
        login: &Login,
    ) -> Result<Tokens, LoginError> {
        let who = Presenter {
            login,
            subject: OnceLock::new(),
        };
        self.pipe
            .run(&op::REFRESH_TOKEN_LOGIN, &who, None, async |ctx| {
                // Taken (deleted) before any other check: a refresh token is spent by any attempt.
                let taken = match refresh_token_hash(refresh_token.trim()) {
                    Some(hash) => self.store.take_refresh_token(hash).await?,
                    None => None,
                };
                let (key_id, expires_at) = taken.ok_or(LoginError::InvalidRefreshToken)?;
                ctx.target(&key_id);
                if expires_at <= self.clock.now() {
                    return Err(LoginError::ExpiredRefreshToken);
                }
                let key = self
                    .store
                    .api_key(&key_id)
                    .await?
                    .filter(|k| !k.locked)
                    .ok_or(LoginError::InvalidRefreshToken)?;
                who.is(&key.subject);
                let identity = self
                    .usable_identity(&key)
                    .await?
                    .ok_or(LoginError::InvalidRefreshToken)?;
                ctx.authorize_own()?;
                self.issue(issuer, &key, identity.kind).await
            })
            .await
    }

    /// An access token and a new refresh token (stored as its hash) for `key`.
    async fn issue(
        &self,
        issuer: &TokenIssuer,
        key: &ApiKeyRecord,
        kind: IdentityKind,
    ) -> Result<Tokens, LoginError> {
        let now = self.clock.now();
        let access = issuer
            .issue(&key.subject, kind, &key.account, &key.id, now)
            .map_err(|_| LoginError::Issuance)?;
        let (refresh, hash) = new_refresh_token().map_err(|_| LoginError::Issuance)?;
        let expires_at = now + time::Duration::seconds(REFRESH_TOKEN_TTL_SECS);
        self.store
            .insert_refresh_token(hash, &key.id, expires_at)
            .await?;
        Ok(Tokens { access, refresh })
    }

    /// The identity behind `key` when it exists, is unlocked and is in the key's account.
    pub(crate) async fn usable_identity(
        &self,
        key: &ApiKeyRecord,
    ) -> Result<Option<IdentityRecord>, KeyError> {
        Ok(self
            .store
            .identity(&key.subject)
            .await?
            .filter(|i| !i.locked && i.account == key.account))
    }

    /// Records a request to the KMS API whose authentication was refused, answering `status`
    /// for `reason` (never a token). An error is a failure to record it.
    pub async fn record_refused(&self, refused: Refused, status: u16) -> Result<(), KeyError> {
        let who = Refusing(&refused);
        let path = Some(refused.path.clone());
        let reason = refused.reason.clone();
        match self
            .pipe
            .run(&op::AUTHENTICATE, &who, path, async |_| {
                Err::<(), _>(Refusal::Refused(status, reason))
            })
            .await
        {
            Err(Refusal::Key(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// A refused request to the KMS API, as its audit event records it.
#[derive(Debug, Clone, Default)]
pub struct Refused {
    /// Request id.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
    /// The `bluemix-instance` header as sent (it may not be an instance id), if any.
    pub instance: Option<String>,
    /// The request path.
    pub path: String,
    /// Why it was refused.
    pub reason: String,
}

struct Refusing<'a>(&'a Refused);

impl Actor for Refusing<'_> {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: "unauthenticated".into(),
            address: self.0.address.clone(),
        }
    }

    fn request_id(&self) -> &str {
        &self.0.request_id
    }

    fn audit_instance(&self) -> Option<String> {
        self.0.instance.clone()
    }

    fn check(&self, operation: Operation, _: Target<'_>) -> Result<(), KeyError> {
        Err(KeyError::Forbidden(operation))
    }
}

/// The outcome of [`IamService::record_refused`]'s operation: always a refusal, unless
/// recording it failed.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{1}")]
    Refused(u16, String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl Failure for Refusal {
    fn reason_code(&self) -> u16 {
        match self {
            Refusal::Refused(status, _) => *status,
            Refusal::Key(e) => e.reason_code(),
        }
    }
}
