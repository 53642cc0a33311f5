//! RS256 access tokens. Signing uses an aws-lc-rs RSA key pair; verification is done by
//! `jsonwebtoken` pinned to RS256, so `alg: none`, HS256-with-the-public-key and other algorithm
//! confusions are refused by construction. Verified tokens are cached by hash until they expire.
//!
//! Refresh tokens are opaque (`kwr.` + 32 random bytes, base64url): the server stores only their
//! SHA-256 and each one can be exchanged once, within [`REFRESH_TOKEN_TTL_SECS`].

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use keyward_core::IdentityKind;
use keyward_crypto::{Secret, random_array, sha256};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The `iss` claim of every token this server issues.
pub const ISSUER: &str = "keyward";
const MAX_CACHED_TOKENS: usize = 65_536;

/// How long a refresh token can be exchanged: 30 days. IBM does not document its own refresh
/// token lifetime; 30 days is the usual choice. A refresh token is also single use, and dies
/// with its API key (deleted, or locked at exchange time) and with its identity.
pub const REFRESH_TOKEN_TTL_SECS: i64 = 30 * 24 * 3600;
/// The prefix of every refresh token, so they are recognisable in leaked-secret scans.
pub const REFRESH_TOKEN_PREFIX: &str = "kwr.";
/// base64url (unpadded) length of the 32 random bytes of a refresh token.
const REFRESH_TOKEN_BODY_LEN: usize = 43;

/// IBM's `sub_type` claim for an identity kind: `user`, `ServiceId`, or `CRN` for an instance of
/// an integrated service (IBM's CRN identities).
pub fn sub_type_of(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::User => "user",
        IdentityKind::ServiceId => "ServiceId",
        IdentityKind::Service => "CRN",
    }
}

/// A new refresh token and the SHA-256 to store for it. The token is a credential: it is
/// returned once to the client and never logged.
pub fn new_refresh_token() -> Result<(Zeroizing<String>, [u8; 32]), TokenError> {
    let bytes = Zeroizing::new(random_array::<32>().map_err(|_| TokenError::Signing)?);
    let token = Zeroizing::new(format!("{REFRESH_TOKEN_PREFIX}{}", B64URL.encode(*bytes)));
    let hash = sha256(token.as_bytes());
    Ok((token, hash))
}

/// The stored hash of a presented refresh token, or `None` when it cannot be one of ours.
pub fn refresh_token_hash(token: &str) -> Option<[u8; 32]> {
    let body = token.strip_prefix(REFRESH_TOKEN_PREFIX)?;
    let well_formed = body.len() == REFRESH_TOKEN_BODY_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| sha256(token.as_bytes()))
}

/// Why a token was refused. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT of ours (bad encoding, wrong algorithm, unknown key id).
    #[error("the access token is malformed or not issued by this server")]
    Malformed,
    /// The signature does not verify.
    #[error("the access token signature is invalid")]
    BadSignature,
    /// `exp` has passed.
    #[error("the access token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// Signing failed.
    #[error("token signing failed")]
    Signing,
}

/// The claims of a Keyward access token (shaped like IBM IAM's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`keyward`).
    pub iss: String,
    /// Subject: the IAM id.
    pub sub: String,
    /// IAM id (IBM tokens carry both).
    pub iam_id: String,
    /// The kind of subject, as IBM names it (`user`, `ServiceId`, `CRN`); see [`sub_type_of`].
    pub sub_type: String,
    /// The account, as IBM's `account.bss`.
    pub account: AccountClaim,
    /// The API key that was exchanged (its public id).
    pub apikey_id: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Not valid before (Unix seconds); equal to `iat`.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// Always `ibm openid`.
    pub scope: String,
}

/// IBM's account claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountClaim {
    /// The account id.
    pub bss: String,
}

/// A signed token and its lifetime, as the token endpoint returns it.
#[derive(Debug)]
pub struct AccessToken {
    /// The JWT. A credential: never log it.
    pub token: String,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Expiry as Unix seconds.
    pub expiration: i64,
}

/// Issues tokens with one RSA key.
pub struct TokenIssuer {
    kid: String,
    key: RsaKeyPair,
    ttl_secs: i64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

impl TokenIssuer {
    /// A new RSA-2048 key; returns the issuer and the PKCS#8 private key to store (wrapped).
    pub fn generate(ttl_secs: i64) -> Result<(Self, Secret), TokenError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| TokenError::Signing)?;
        let der = key.as_der().map_err(|_| TokenError::Signing)?;
        let pkcs8 = Secret::from_slice(der.as_ref());
        let kid = B64URL.encode(
            sha256(key.public_key().as_ref())
                .get(..12)
                .unwrap_or_default(),
        );
        Ok((TokenIssuer { kid, key, ttl_secs }, pkcs8))
    }

    /// An issuer from a stored PKCS#8 private key.
    pub fn from_pkcs8(kid: &str, pkcs8: &Secret, ttl_secs: i64) -> Result<Self, TokenError> {
        let key = RsaKeyPair::from_pkcs8(pkcs8.expose()).map_err(|_| TokenError::Malformed)?;
        Ok(TokenIssuer {
            kid: kid.to_owned(),
            key,
            ttl_secs,
        })
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (for `/identity/keys`).
    pub fn jwk(&self) -> serde_json::Value {
        let public = self.key.public_key();
        serde_json::json!({
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "use": "sig",
            "n": B64URL.encode(public.modulus().big_endian_without_leading_zero()),
            "e": B64URL.encode(public.exponent().big_endian_without_leading_zero()),
        })
    }

    /// A verifier that accepts this issuer's tokens.
    pub fn verifier(&self) -> TokenVerifier {
        let public = self.key.public_key();
        let key = DecodingKey::from_rsa_raw_components(
            public.modulus().big_endian_without_leading_zero(),
            public.exponent().big_endian_without_leading_zero(),
        );
        TokenVerifier::new(vec![(self.kid.clone(), key)])
    }

    /// The access-token lifetime in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Issues a token for `subject` (an identity of `kind`) of `account`, from API key
    /// `apikey_id`. `nbf` is `iat`; `exp` is `iat` + the issuer's TTL.
    pub fn issue(
        &self,
        subject: &str,
        kind: IdentityKind,
        account: &str,
        apikey_id: &str,
        now: OffsetDateTime,
    ) -> Result<AccessToken, TokenError> {
        let iat = now.unix_timestamp();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            iam_id: subject.to_owned(),
            sub_type: sub_type_of(kind).to_owned(),
            account: AccountClaim {
                bss: account.to_owned(),
            },
            apikey_id: apikey_id.to_owned(),
            iat,
            exp: iat + self.ttl_secs,
            nbf: iat,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: "ibm openid".to_owned(),
        };
        let token = self.sign(&claims)?;
        Ok(AccessToken {
            token,
            expires_in: claims.exp - claims.iat,
            expiration: claims.exp,
        })
    }

    /// Signs arbitrary claims (tests use it to build expired or odd tokens with a real key).
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String, TokenError> {
        let header = Header {
            alg: "RS256",
            typ: "JWT",
            kid: &self.kid,
        };
        let h = serde_json::to_vec(&header).map_err(|_| TokenError::Signing)?;
        let c = serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?;
        let signing_input = format!("{}.{}", B64URL.encode(h), B64URL.encode(c));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| TokenError::Signing)?;
        Ok(format!("{signing_input}.{}", B64URL.encode(sig)))
    }
}

/// Verifies tokens against a set of public keys, with a cache of tokens already verified.
pub struct TokenVerifier {
    keys: Vec<(String, DecodingKey)>,
    cache: Mutex<HashMap<[u8; 32], Claims>>,
}

impl TokenVerifier {
    fn new(keys: Vec<(String, DecodingKey)>) -> Self {
        TokenVerifier {
            keys,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Verifies `token` at time `now`: RS256 only, a known `kid`, a valid signature, our issuer,
    /// `exp` in the future, `nbf` and `iat` not in the future (`exp`, `nbf`, `iat`, `iss` and
    /// `sub` are required). No leeway.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Result<Claims, TokenError> {
        let digest = sha256(token.as_bytes());
        let cached = self.cache.lock().ok().and_then(|c| c.get(&digest).cloned());
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = self.verify_signature(token)?;
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= MAX_CACHED_TOKENS {
                        cache.clear();
                    }
                    cache.insert(digest, c.clone());
                }
                c
            }
        };
        let now = now.unix_timestamp();
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now || claims.iat > now {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Malformed);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| *k == kid)
            .ok_or(TokenError::Malformed)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "sub"]);
        // Time checks are ours (above), so cached tokens are checked the same way.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> TokenIssuer {
        TokenIssuer::generate(3600)
            .map(|(i, _)| i)
            .unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    fn claims_of(token: &str) -> serde_json::Value {
        let p = parts(token);
        let bytes = B64URL
            .decode(p.get(1).map(String::as_str).unwrap_or(""))
            .unwrap_or_default();
        serde_json::from_slice(&bytes).unwrap_or_default()
    }

    #[test]
    fn issued_tokens_verify_and_carry_exp_iat_sub_account() {
        let i = issuer();
        let t = i
            .issue("iam-admin", IdentityKind::ServiceId, "acct-1", "kwX", now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let c = i
            .verifier()
            .verify(&t.token, now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(c.sub, "iam-admin");
        assert_eq!(c.account.bss, "acct-1");
        assert_eq!(c.exp - c.iat, 3600);
        assert_eq!(t.expires_in, 3600);
    }

    #[test]
    fn survives_a_round_trip_through_pkcs8() {
        let (i, pkcs8) = TokenIssuer::generate(60).unwrap_or_else(|e| unreachable!("{e}"));
        let again =
            TokenIssuer::from_pkcs8(i.kid(), &pkcs8, 60).unwrap_or_else(|e| unreachable!("{e}"));
        let t = i
            .issue("s", IdentityKind::User, "a", "k", now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert!(again.verifier().verify(&t.token, now()).is_ok());
        assert!(!format!("{again:?}").contains("PRIVATE"));
    }

    #[test]
    fn refuses_expired_and_future_tokens() {
        let i = issuer();
        let t = i
            .issue("s", IdentityKind::User, "a", "k", now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let later = now() + time::Duration::seconds(3601);
        assert_eq!(
            i.verifier().verify(&t.token, later).err(),
            Some(TokenError::Expired)
        );
        let mut c = serde_json::from_value::<Claims>(claims_of(&t.token))
            .unwrap_or_else(|e| unreachable!("{e}"));
        c.iat = now().unix_timestamp() + 600;
        c.nbf = c.iat;
        c.exp = c.iat + 600;
        let future = i.sign(&c).unwrap_or_default();
        assert_eq!(
            i.verifier().verify(&future, now()).err(),
            Some(TokenError::NotYetValid)
        );
    }

    fn signed_with(i: &TokenIssuer, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let t = i
            .issue("s", IdentityKind::User, "a", "k", now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let mut c = claims_of(&t.token);
        edit(&mut c);
        i.sign(&c).unwrap_or_default()
    }

    #[test]
    fn nbf_and_exp_are_enforced_to_the_second_without_leeway() {
        let i = issuer();
        let v = i.verifier();
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let secs = |d: i64| at + time::Duration::seconds(d);
        let t = i
            .issue("s", IdentityKind::ServiceId, "a", "k", at)
            .unwrap_or_else(|e| unreachable!("{e}"));
        let c = v
            .verify(&t.token, at)
            .unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!((c.nbf, c.iat, c.exp), (c.iat, 1_800_000_000, 1_800_003_600));
        assert_eq!(t.expiration, c.exp);
        assert_eq!(t.expires_in, c.exp - c.iat);
        // One second before nbf/iat: not yet valid (and stays so from the cache).
        assert_eq!(
            v.verify(&t.token, secs(-1)).err(),
            Some(TokenError::NotYetValid)
        );
        assert!(v.verify(&t.token, secs(3599)).is_ok());
        assert_eq!(
            v.verify(&t.token, secs(3600)).err(),
            Some(TokenError::Expired)
        );

        // nbf alone in the future (iat now): refused until nbf, fresh and from the cache.
        let late = signed_with(&i, |c| {
            c["nbf"] = serde_json::json!(c["iat"].as_i64().unwrap_or(0) + 30)
        });
        assert_eq!(v.verify(&late, now()).err(), Some(TokenError::NotYetValid));
        assert_eq!(v.verify(&late, now()).err(), Some(TokenError::NotYetValid));
        assert!(v.verify(&late, now() + time::Duration::seconds(31)).is_ok());

        // exp in the past, properly signed.
        let old = signed_with(&i, |c| {
            c["exp"] = serde_json::json!(now().unix_timestamp() - 1)
        });
        assert_eq!(v.verify(&old, now()).err(), Some(TokenError::Expired));
    }

    #[test]
    fn required_claims_and_issuer_are_enforced() {
        let i = issuer();
        let v = i.verifier();
        for claim in ["exp", "nbf", "iat", "iss", "sub", "sub_type", "apikey_id"] {
            let t = signed_with(&i, |c| {
                if let Some(o) = c.as_object_mut() {
                    o.remove(claim);
                }
            });
            assert_eq!(
                v.verify(&t, now()).err(),
                Some(TokenError::Malformed),
                "{claim}"
            );
        }
        for iss in [
            "https://iam.cloud.ibm.com/identity",
            "keyward ",
            "Keyward",
            "",
        ] {
            let t = signed_with(&i, |c| c["iss"] = serde_json::json!(iss));
            assert_eq!(
                v.verify(&t, now()).err(),
                Some(TokenError::Malformed),
                "{iss}"
            );
        }
        // A string where a number belongs.
        let t = signed_with(&i, |c| c["nbf"] = serde_json::json!("0"));
        assert!(v.verify(&t, now()).is_err());
    }

    #[test]
    fn sub_type_follows_the_identity_kind() {
        let i = issuer();
        let v = i.verifier();
        for (kind, want) in [
            (IdentityKind::User, "user"),
            (IdentityKind::ServiceId, "ServiceId"),
            (IdentityKind::Service, "CRN"),
        ] {
            let t = i
                .issue("iam-x", kind, "a", "k", now())
                .unwrap_or_else(|e| unreachable!("{e}"));
            let c = v
                .verify(&t.token, now())
                .unwrap_or_else(|e| unreachable!("{e}"));
            assert_eq!(c.sub_type, want);
            assert_eq!(c.iam_id, "iam-x");
        }
    }

    #[test]
    fn refresh_tokens_are_random_prefixed_and_hash_checked() {
        let (a, ha) = new_refresh_token().unwrap_or_else(|e| unreachable!("{e}"));
        let (b, hb) = new_refresh_token().unwrap_or_else(|e| unreachable!("{e}"));
        assert_ne!(*a, *b);
        assert_ne!(ha, hb);
        assert!(a.starts_with("kwr."));
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(refresh_token_hash(&a), Some(ha));
        assert_eq!(refresh_token_hash(&b), Some(hb));
        assert_eq!(ha, sha256(a.as_bytes()));
        for bad in [
            "",
            "kwr.",
            "not_supported",
            &a[4..],
            &a[..a.len() - 1],
            &format!("{}A", *a),
            &format!("kwr.{}", "!".repeat(43)),
            &format!("KWR.{}", &a[4..]),
        ] {
            assert_eq!(refresh_token_hash(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_alg_none_hs256_with_public_key_foreign_keys_and_tampering() {
        let i = issuer();
        let v = i.verifier();
        let t = i
            .issue("s", IdentityKind::User, "a", "k", now())
            .unwrap_or_else(|e| unreachable!("{e}"));
        let p = parts(&t.token);
        let (h, c) = (
            p.first().cloned().unwrap_or_default(),
            p.get(1).cloned().unwrap_or_default(),
        );

        // alg: none, with and without a signature.
        let none_header = B64URL.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            i.kid()
        ));
        assert!(v.verify(&format!("{none_header}.{c}."), now()).is_err());
        assert!(v.verify(&format!("{none_header}.{c}"), now()).is_err());

        // HS256 "signed" with the RSA public key (algorithm confusion).
        let hs_header = B64URL.encode(format!(
            r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
            i.kid()
        ));
        let input = format!("{hs_header}.{c}");
        let public = i.jwk().to_string();
        let mac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, public.as_bytes()),
            input.as_bytes(),
        );
        assert!(
            v.verify(&format!("{input}.{}", B64URL.encode(mac.as_ref())), now())
                .is_err()
        );

        // Another issuer's key, even with our kid in the header.
        let other = issuer();
        let forged = TokenIssuer {
            kid: i.kid().to_owned(),
            key: other.key,
            ttl_secs: 3600,
        };
        let claims: Claims =
            serde_json::from_value(claims_of(&t.token)).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(
            v.verify(&forged.sign(&claims).unwrap_or_default(), now())
                .err(),
            Some(TokenError::BadSignature)
        );

        // Tampered claims with the original signature.
        let mut tampered = claims_of(&t.token);
        tampered["sub"] = serde_json::json!("someone-else");
        let tc = B64URL.encode(tampered.to_string());
        let sig = p.get(2).cloned().unwrap_or_default();
        assert!(v.verify(&format!("{h}.{tc}.{sig}"), now()).is_err());

        // Garbage.
        for bad in ["", "a.b.c", "not a token", "...."] {
            assert!(v.verify(bad, now()).is_err(), "{bad}");
        }
        // The genuine token still works after all that (no cache poisoning).
        assert!(v.verify(&t.token, now()).is_ok());
    }
}
