//! Hub-signed user assertions: the caller's identity as a short-lived EdDSA (Ed25519) JWT the
//! hub sends upstream instead of the client's token.
//!
//! Used in the `forward` stage (directly as a header, or as the subject token of an RFC 8693
//! exchange in [`crate::credentials`]). Claims: `iss` = the hub, `aud` = the upstream,
//! `sub` = the principal's subject, `principal` = its binding, `idp` = the token's original
//! issuer, `roles`, `scope`, `kind`, `iat`, `exp` (≤ 5 minutes after `iat`) and a random `jti`.
//! Upstreams verify it with the hub's JWKS ([`AssertionSigner::jwks`]), which the hub can
//! serve (e.g. at `/.well-known/meshgate-assertion-jwks.json`).
//!
//! Signing costs tens of microseconds, so assertions are cached per (principal, upstream) and
//! re-signed only when less than half their lifetime is left: a call usually costs one hash
//! lookup. The cache is bounded (cleared when full).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use dashmap::DashMap;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::config::{unix_now, ConfigDuration, ConfigError};
use crate::principal::Principal;

/// The `assertion:` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// The Ed25519 private key (PKCS#8 PEM, mode 0600; see [`crate::keys`]).
    pub key_file: PathBuf,
    /// The `iss` (the hub's public URL or id).
    pub issuer: String,
    /// Lifetime (default 2m, at most 5m).
    #[serde(default = "default_ttl")]
    pub ttl: ConfigDuration,
    /// Header carrying it upstream (default `X-Meshgate-Assertion`).
    #[serde(default = "default_header")]
    pub header: String,
    /// The key id in the JWT header and the JWKS (default: derived from the public key).
    #[serde(default)]
    pub kid: Option<String>,
}

fn default_ttl() -> ConfigDuration {
    ConfigDuration::secs(120)
}
fn default_header() -> String {
    "X-Meshgate-Assertion".into()
}

/// Signing failed (should not happen with a valid key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign the user assertion: {0}")]
pub struct AssertionError(pub String);

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    principal: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    idp: &'a str,
    kind: &'a str,
    roles: &'a [Arc<str>],
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    iat: u64,
    exp: u64,
    jti: String,
}

struct Cached {
    principal: Arc<str>,
    audience: String,
    token: Arc<str>,
    exp: u64,
}

/// Signs and caches assertions; `Send + Sync`.
pub struct AssertionSigner {
    key: EncodingKey,
    public: ed25519_dalek::VerifyingKey,
    kid: String,
    issuer: String,
    ttl: u64,
    header: String,
    cache: DashMap<u64, Cached>,
    hasher: RandomState,
    max: usize,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

impl AssertionSigner {
    /// A signer for `cfg` with `key` (load it with [`crate::keys::load_signing_key`]).
    ///
    /// # Errors
    /// A [`ConfigError`] for a TTL over 5 minutes, an empty issuer or a bad header name.
    pub fn new(cfg: &AssertionConfig, key: &SigningKey) -> Result<Self, ConfigError> {
        let ttl = cfg.ttl.get();
        if ttl.is_zero() || ttl > Duration::from_secs(300) {
            return Err(ConfigError::new("assertion.ttl", "between 1s and 5m"));
        }
        if cfg.issuer.is_empty() {
            return Err(ConfigError::new("assertion.issuer", "empty"));
        }
        if cfg.header.is_empty()
            || !cfg
                .header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new("assertion.header", "not a header name"));
        }
        let der = key
            .to_pkcs8_der()
            .map_err(|e| ConfigError::new("assertion.key_file", e.to_string()))?;
        let public = key.verifying_key();
        let kid = cfg.kid.clone().unwrap_or_else(|| {
            use sha2::Digest;
            let d = sha2::Sha256::digest(public.as_bytes());
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..12])
        });
        Ok(AssertionSigner {
            key: EncodingKey::from_ed_der(der.as_bytes()),
            public,
            kid,
            issuer: cfg.issuer.clone(),
            ttl: ttl.as_secs().max(1),
            header: cfg.header.clone(),
            cache: DashMap::new(),
            hasher: RandomState::new(),
            max: 100_000,
        })
    }

    /// The header name assertions travel in.
    pub fn header_name(&self) -> &str {
        &self.header
    }

    /// The assertion for `principal` towards `audience` (cached; re-signed at half-life).
    ///
    /// # Errors
    /// [`AssertionError`] if signing fails.
    pub fn assertion(
        &self,
        principal: &Principal,
        audience: &str,
    ) -> Result<Arc<str>, AssertionError> {
        let now = unix_now();
        let k = self.hasher.hash_one((principal.binding(), audience));
        if let Some(c) = self.cache.get(&k) {
            if *c.principal == *principal.binding()
                && c.audience == audience
                && c.exp > now + self.ttl / 2
            {
                return Ok(c.token.clone());
            }
        }
        let token: Arc<str> = Arc::from(self.sign(principal, audience, now)?);
        if self.cache.len() >= self.max {
            self.cache.clear();
        }
        self.cache.insert(
            k,
            Cached {
                principal: principal.id.clone(),
                audience: audience.to_string(),
                token: token.clone(),
                exp: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// The header name and value pair to send upstream.
    ///
    /// # Errors
    /// As [`Self::assertion`].
    pub fn header_pair(
        &self,
        principal: &Principal,
        audience: &str,
    ) -> Result<(Arc<str>, Arc<str>), AssertionError> {
        Ok((
            Arc::from(&*self.header),
            self.assertion(principal, audience)?,
        ))
    }

    fn sign(&self, p: &Principal, audience: &str, now: u64) -> Result<String, AssertionError> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|e| AssertionError(e.to_string()))?;
        let scope = p.scopes.iter().map(|s| &**s).collect::<Vec<_>>().join(" ");
        let claims = Claims {
            iss: &self.issuer,
            aud: audience,
            sub: &p.subject,
            principal: p.binding(),
            idp: &p.issuer,
            kind: p.kind.as_str(),
            roles: &p.roles,
            scope,
            client_id: p.client_id.as_deref(),
            iat: now,
            exp: now + self.ttl,
            jti: hex::encode(jti),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| AssertionError(e.to_string()))
    }

    /// The public JWKS upstreams verify assertions with.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.public.as_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn signed_cached_and_verifiable_with_the_jwks() {
        let key = crate::keys::generate_signing_key();
        let s = AssertionSigner::new(
            &AssertionConfig {
                key_file: "unused".into(),
                issuer: "https://hub.example.com".into(),
                ttl: ConfigDuration::secs(120),
                header: "X-Meshgate-Assertion".into(),
                kid: None,
            },
            &key,
        )
        .unwrap();
        let p = Principal::jwt(
            "https://idp",
            "alice",
            ["ops"],
            ["a", "b"],
            Some(9_999_999_999),
        )
        .with_token_info(Some("cli"), None);
        let t1 = s.assertion(&p, "payments").unwrap();
        let t2 = s.assertion(&p, "payments").unwrap();
        assert!(Arc::ptr_eq(&t1, &t2), "cached");
        let t3 = s.assertion(&p, "crm").unwrap();
        assert_ne!(t1, t3);
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(s.jwks()).unwrap();
        let dk = DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["payments"]);
        v.set_issuer(&["https://hub.example.com"]);
        let d = jsonwebtoken::decode::<serde_json::Value>(&t1, &dk, &v).unwrap();
        assert_eq!(
            d.header.kid.as_deref(),
            Some(jwks.keys[0].common.key_id.as_deref().unwrap())
        );
        let c = d.claims;
        assert_eq!(c["sub"], "alice");
        assert_eq!(c["principal"], "jwt:https://idp#alice");
        assert_eq!(c["roles"][0], "ops");
        assert_eq!(c["scope"], "a b");
        assert_eq!(c["client_id"], "cli");
        assert!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap() <= 300);
        assert_eq!(c["jti"].as_str().unwrap().len(), 32);
        // Wrong audience does not verify.
        v.set_audience(&["crm"]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&t1, &dk, &v).is_err());
    }

    #[test]
    fn ttl_is_bounded() {
        let key = crate::keys::generate_signing_key();
        let e = AssertionSigner::new(
            &AssertionConfig {
                key_file: "k".into(),
                issuer: "h".into(),
                ttl: ConfigDuration::secs(3600),
                header: "X-A".into(),
                kid: None,
            },
            &key,
        )
        .unwrap_err();
        assert_eq!(e.field, "assertion.ttl");
    }
}
