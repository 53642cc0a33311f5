//! The token exchange (an API key or a refresh token for an access token and a new refresh
//! token) and the record of a refused authentication, both run through core's pipeline, so each
//! attempt is audited like any operation: `iam-identity.apikey.login`,
//! `iam-identity.refresh-token.login`, `kms.secrets.authenticate`. Tokens and API keys are never
//! logged or audited; an event names the subject and the API key id once they are known.

use std::sync::OnceLock;

use keyward_core::op;
use keyward_core::{
    Actor, ApiKeyRecord, Failure, IdentityKind, IdentityRecord, Initiator, KeyError, Operation,
    RefreshUse, Sampled, StoreError, Successor, Target,
};
use zeroize::Zeroizing;

use crate::api_key::{parse_api_key, verify_secret};
use crate::service::IamService;
use crate::sources::{Limit, Source, Sources, Throttled};
use crate::token::{
    AccessToken, REFRESH_TOKEN_TTL_SECS, TokenIssuer, new_refresh_token, refresh_token_hash,
};

/// How often at most an exchange purges expired refresh tokens.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

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
    /// The refresh token was spent already: every token of its family (the refreshes of one
    /// login) is now revoked; this many were live. Answered as [`LoginError::InvalidRefreshToken`].
    #[error("refresh token presented again: its family is revoked ({0} live tokens)")]
    ReusedRefreshToken(u64),
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
            | LoginError::ReusedRefreshToken(_)
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
    sources: &'a Sources,
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

    /// A credential nobody holds is a refusal of an unknown source: sampled. Once the
    /// credential names its identity (a spent refresh token presented again, a locked key),
    /// the failure is that identity's and always recorded.
    fn sample_failure(&self) -> Sampled {
        match self.subject.get() {
            Some(_) => Sampled::Record(None),
            None => self
                .sources
                .sample(Source::of(self.login.address.as_deref())),
        }
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
            sources: &self.sources,
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
                self.issue(issuer, &key, identity.kind, None).await
            })
            .await
    }

    /// Exchanges a refresh token (once: any attempt spends it) for new tokens, if its API key
    /// and identity still exist and are unlocked. A spent token presented again revokes every
    /// token descending from the same login (RFC 6819 5.2.2.3), its successor included.
    pub async fn refresh_login(
        &self,
        issuer: &TokenIssuer,
        refresh_token: &str,
        login: &Login,
    ) -> Result<Tokens, LoginError> {
        let who = Presenter {
            login,
            subject: OnceLock::new(),
            sources: &self.sources,
        };
        self.pipe
            .run(&op::REFRESH_TOKEN_LOGIN, &who, None, async |ctx| {
                let now = self.clock.now();
                // The successor is stored with the spend, in one transaction, so a reuse racing
                // this refresh revokes it too; it is handed out only if every check passes.
                let (successor, successor_hash) =
                    new_refresh_token().map_err(|_| LoginError::Issuance)?;
                let successor_of = Successor {
                    hash: successor_hash,
                    expires_at: now + time::Duration::seconds(REFRESH_TOKEN_TTL_SECS),
                };
                // Spent before any other check: a refresh token is spent by any attempt.
                let used = match refresh_token_hash(refresh_token.trim()) {
                    Some(hash) => {
                        self.store
                            .spend_refresh_token(hash, successor_of, now)
                            .await?
                    }
                    None => RefreshUse::Unknown,
                };
                let (key_id, expires_at) = match used {
                    RefreshUse::Unknown => return Err(LoginError::InvalidRefreshToken),
                    RefreshUse::Reused {
                        api_key_id,
                        revoked,
                    } => {
                        ctx.target(&api_key_id);
                        if let Some(key) = self.store.api_key(&api_key_id).await? {
                            who.is(&key.subject);
                        }
                        return Err(LoginError::ReusedRefreshToken(revoked));
                    }
                    RefreshUse::Spent {
                        api_key_id,
                        expires_at,
                    } => (api_key_id, expires_at),
                };
                ctx.target(&key_id);
                if expires_at <= now {
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
                self.issue(issuer, &key, identity.kind, Some(successor))
                    .await
            })
            .await
    }

    /// An access token for `key`, and its refresh token: `refresh`, already stored in its
    /// family, or a new one (stored as its hash), the first of a new family.
    async fn issue(
        &self,
        issuer: &TokenIssuer,
        key: &ApiKeyRecord,
        kind: IdentityKind,
        refresh: Option<Zeroizing<String>>,
    ) -> Result<Tokens, LoginError> {
        let now = self.clock.now();
        let access = issuer
            .issue(&key.subject, kind, &key.account, &key.id, now)
            .map_err(|_| LoginError::Issuance)?;
        let refresh = match refresh {
            Some(r) => r,
            None => {
                let (refresh, hash) = new_refresh_token().map_err(|_| LoginError::Issuance)?;
                let expires_at = now + time::Duration::seconds(REFRESH_TOKEN_TTL_SECS);
                self.store
                    .insert_refresh_token(hash, &key.id, expires_at)
                    .await?;
                refresh
            }
        };
        self.purge_refresh_tokens(now).await?;
        Ok(Tokens { access, refresh })
    }

    /// Deletes expired refresh tokens (spent or not), at most once a minute per process, on
    /// the way through an exchange: without it they were kept for ever.
    async fn purge_refresh_tokens(&self, now: time::OffsetDateTime) -> Result<(), KeyError> {
        let due = match self.last_purge.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|t| t.elapsed() >= PURGE_EVERY);
                if due {
                    *last = Some(std::time::Instant::now());
                }
                due
            }
            Err(_) => false,
        };
        if due {
            self.store.purge_refresh_tokens(now).await?;
        }
        Ok(())
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
        let who = Refusing {
            refused: &refused,
            sources: Some(&self.sources),
        };
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

    /// Counts a request from `address` against its source's `limit`;
    /// [`Throttled`] with the wait when the source is over it.
    pub fn admit(&self, limit: Limit, address: Option<&str>) -> Result<(), Throttled> {
        self.sources.check(limit, Source::of(address))
    }

    /// Records, for each source whose sampling interval has passed, the refusals that were
    /// counted but not recorded one by one (one event per source). Run periodically, so a
    /// flood that stops is still accounted for in the trail; returns how many events it wrote.
    pub async fn record_sampled_refusals(&self) -> Result<usize, KeyError> {
        let due = self.sources.due();
        for (source, skipped) in &due {
            let refused = Refused {
                request_id: uuid::Uuid::new_v4().to_string(),
                address: source.address(),
                path: String::new(),
                reason: Sources::summary(*skipped),
                ..Refused::default()
            };
            let who = Refusing {
                refused: &refused,
                sources: None,
            };
            let reason = refused.reason.clone();
            if let Err(Refusal::Key(e)) = self
                .pipe
                .run(&op::AUTHENTICATE, &who, None, async |_| {
                    Err::<(), _>(Refusal::Refused(401, reason))
                })
                .await
            {
                return Err(e);
            }
        }
        Ok(due.len())
    }
}

/// A refused request to the KMS API, as its audit event records it.
#[derive(Debug, Clone, Default)]
pub struct Refused {
    /// Request id: for an unauthenticated request, one the server chose, never the client's.
    pub request_id: String,
    /// Client address, if known.
    pub address: Option<String>,
    /// The identity whose token verified, when the refusal came after that (its instance is
    /// not its own, a policy refuses its address); `None`: unauthenticated, and its refusals
    /// are sampled per source.
    pub subject: Option<String>,
    /// The instance the caller was authenticated for, if it got that far. Never an instance
    /// the request only named: an unauthenticated request wrote into the trail of whatever
    /// instance its header named (issue 18).
    pub instance: Option<String>,
    /// The request path.
    pub path: String,
    /// Why it was refused.
    pub reason: String,
}

/// The actor of a refused request; `sources` samples an unauthenticated one (`None`: a
/// summary of sampled refusals, always recorded).
struct Refusing<'a> {
    refused: &'a Refused,
    sources: Option<&'a Sources>,
}

impl Actor for Refusing<'_> {
    fn initiator(&self) -> Initiator {
        Initiator {
            id: self
                .refused
                .subject
                .clone()
                .unwrap_or_else(|| "unauthenticated".into()),
            address: self.refused.address.clone(),
        }
    }

    fn request_id(&self) -> &str {
        &self.refused.request_id
    }

    fn audit_instance(&self) -> Option<String> {
        self.refused.instance.clone()
    }

    fn check(&self, operation: Operation, _: Target<'_>) -> Result<(), KeyError> {
        Err(KeyError::Forbidden(operation))
    }

    fn sample_failure(&self) -> Sampled {
        match (self.sources, &self.refused.subject) {
            (Some(sources), None) => sources.sample(Source::of(self.refused.address.as_deref())),
            _ => Sampled::Record(None),
        }
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
