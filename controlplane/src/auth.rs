//! Authentication and RBAC of the admin API. Two kinds of bearer credentials:
//!
//! - **API keys** (`mgc_…`): stored as SHA-256 only, each with a role and approval groups. A
//!   bootstrap admin key comes from a file (created on first start) so a fresh control plane can
//!   be administered at all; hubs use keys with the `hub` role.
//! - **OIDC bearer JWTs**, validated against the issuer's JWKS (fetched, cached, refetched on an
//!   unknown `kid` at most every 10 s): issuer, audience, expiry (60 s leeway), asymmetric
//!   algorithms only. The role comes from a claim (default `roles`; a dotted path such as
//!   `realm_access.roles` works), whose values `<prefix>admin|operator|viewer` map to roles.
//!
//! Roles: `viewer` reads; `operator` also decides approvals, presses the kill switch and
//! approves tools; `admin` also changes catalog, policy, keys and edges; `hub` only talks the hub
//! protocol (snapshots, reports, audit, approval requests).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use crate::error::ApiError;
use crate::store::{ApiKeyRow, Store};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A hub: snapshots, reports, audit ingest, approval requests.
    Hub,
    /// Read everything.
    Viewer,
    /// Read, decide approvals, kill switch, approve tools and lifecycle.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Parses `viewer|operator|admin|hub`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            "hub" => Some(Role::Hub),
            _ => None,
        }
    }

    /// The name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller (snapshots).
    Any,
    /// Viewer or above.
    Read,
    /// Operator or above.
    Operate,
    /// Admin.
    Admin,
    /// Hub (or admin).
    Hub,
    /// Hub or viewer and above (e.g. polling an approval).
    HubOrRead,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Name (API key name or token subject).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Approval groups.
    pub groups: Vec<String>,
    /// `api-key` or `oidc`.
    pub via: &'static str,
}

impl Principal {
    /// Checks the role against what the route needs (403 naming both otherwise).
    pub fn require(&self, need: Need) -> Result<(), ApiError> {
        let ok = match need {
            Need::Any => true,
            Need::Read => self.role >= Role::Viewer,
            Need::Operate => self.role >= Role::Operator,
            Need::Admin => self.role == Role::Admin,
            Need::Hub => matches!(self.role, Role::Hub | Role::Admin),
            Need::HubOrRead => true,
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "role {} may not do this (needs {})",
                self.role.as_str(),
                match need {
                    Need::Any | Need::HubOrRead => "any role",
                    Need::Read => "viewer or above",
                    Need::Operate => "operator or admin",
                    Need::Admin => "admin",
                    Need::Hub => "hub or admin",
                }
            )))
        }
    }
}

/// OIDC settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// JWKS URL (`http://` or `https://`).
    pub jwks_url: String,
    /// CA for an `https` JWKS URL.
    pub jwks_ca: Option<Vec<u8>>,
    /// Claim holding roles (dotted path).
    pub role_claim: String,
    /// Prefix of role values (`""` → `admin`, `meshgate-` → `meshgate-admin`).
    pub role_prefix: String,
    /// Claim holding approval groups.
    pub groups_claim: String,
}

struct JwksCache {
    keys: Option<JwkSet>,
    fetched: Option<Instant>,
}

/// The authenticator.
pub struct Auth {
    store: Arc<dyn Store>,
    oidc: Option<OidcConfig>,
    jwks: Mutex<JwksCache>,
}

/// Prefix of API keys.
pub const KEY_PREFIX: &str = "mgc_";

/// SHA-256 hex of a key (what is stored).
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key.
pub fn new_key() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source is available");
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

/// A new random id (hex, 16 bytes).
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

impl Auth {
    /// An authenticator over the store's keys and, optionally, one OIDC issuer.
    pub fn new(store: Arc<dyn Store>, oidc: Option<OidcConfig>) -> Self {
        Auth {
            store,
            oidc,
            jwks: Mutex::new(JwksCache {
                keys: None,
                fetched: None,
            }),
        }
    }

    /// Makes sure a bootstrap key (admin, or hub for the fleet's hubs) exists in the store
    /// (idempotent).
    pub async fn ensure_bootstrap(&self, key: &str, role: Role) -> Result<(), ApiError> {
        if !key.starts_with(KEY_PREFIX) || key.len() < KEY_PREFIX.len() + 20 {
            return Err(ApiError::bad_request(format!(
                "bootstrap key must start with {KEY_PREFIX} and hold at least 20 more characters"
            )));
        }
        let hash = key_hash(key);
        if self.store.api_key_by_hash(&hash).await?.is_none() {
            self.store
                .put_api_key(&ApiKeyRow {
                    id: format!("bootstrap-{}", &hash[..8]),
                    name: format!("bootstrap-{}", role.as_str()),
                    role: role.as_str().into(),
                    groups: vec![],
                    hash,
                    created_ms: crate::store::sql::now_ms(),
                })
                .await?;
        }
        Ok(())
    }

    /// Authenticates an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Principal, ApiError> {
        let Some(h) = header else {
            return Err(ApiError::unauthorized(
                "missing Authorization: Bearer <API key or OIDC token>",
            ));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization must be a Bearer credential"))?;
        if token.len() > 16 * 1024 {
            return Err(ApiError::unauthorized("credential too long"));
        }
        if token.starts_with(KEY_PREFIX) {
            let row = self
                .store
                .api_key_by_hash(&key_hash(token))
                .await?
                .ok_or_else(|| ApiError::unauthorized("unknown API key"))?;
            let role = Role::parse(&row.role)
                .ok_or_else(|| ApiError::internal(format!("stored key has role {:?}", row.role)))?;
            return Ok(Principal {
                name: row.name,
                role,
                groups: row.groups,
                via: "api-key",
            });
        }
        self.oidc_principal(token).await
    }

    async fn oidc_principal(&self, token: &str) -> Result<Principal, ApiError> {
        let Some(cfg) = &self.oidc else {
            return Err(ApiError::unauthorized(
                "not an API key, and no OIDC issuer is configured",
            ));
        };
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ApiError::unauthorized(format!("token: {e}")))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(ApiError::unauthorized(format!(
                "token algorithm {:?} not allowed",
                header.alg
            )));
        }
        let kid = header
            .kid
            .clone()
            .ok_or_else(|| ApiError::unauthorized("token has no kid"))?;
        let key = self.jwk(cfg, &kid).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[cfg.issuer.as_str()]);
        v.set_audience(&[cfg.audience.as_str()]);
        v.leeway = 60;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| ApiError::unauthorized(format!("token: {e}")))?;
        let claims = data.claims;
        let roles = strings_at(&claims, &cfg.role_claim);
        let mut role = None;
        for r in &roles {
            if let Some(rest) = r.strip_prefix(cfg.role_prefix.as_str()) {
                if let Some(parsed) = Role::parse(rest).filter(|r| *r != Role::Hub) {
                    role = role.max(Some(parsed));
                }
            }
        }
        let role = role.ok_or_else(|| {
            ApiError::forbidden(format!(
                "token carries no {}admin/operator/viewer role in claim {:?}",
                cfg.role_prefix, cfg.role_claim
            ))
        })?;
        let name = claims
            .get("preferred_username")
            .or_else(|| claims.get("sub"))
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned();
        Ok(Principal {
            name,
            role,
            groups: strings_at(&claims, &cfg.groups_claim),
            via: "oidc",
        })
    }

    async fn jwk(&self, cfg: &OidcConfig, kid: &str) -> Result<DecodingKey, ApiError> {
        let mut cache = self.jwks.lock().await;
        let find = |set: &Option<JwkSet>| set.as_ref().and_then(|s| s.find(kid)).cloned();
        let mut jwk = find(&cache.keys);
        let stale = cache
            .fetched
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if jwk.is_none() && stale {
            match fetch_jwks(cfg).await {
                Ok(set) => {
                    cache.keys = Some(set);
                    cache.fetched = Some(Instant::now());
                    jwk = find(&cache.keys);
                }
                Err(e) => {
                    cache.fetched = Some(Instant::now());
                    tracing::warn!(url = %cfg.jwks_url, error = %e, "JWKS fetch failed");
                    return Err(ApiError::unauthorized(format!("JWKS unavailable: {e}")));
                }
            }
        }
        let jwk = jwk.ok_or_else(|| ApiError::unauthorized(format!("unknown kid {kid:?}")))?;
        DecodingKey::from_jwk(&jwk).map_err(|e| ApiError::unauthorized(format!("JWK: {e}")))
    }
}

async fn fetch_jwks(cfg: &OidcConfig) -> Result<JwkSet, String> {
    let (base, path) = split_url(&cfg.jwks_url)?;
    let client = meshgate_control_client::http::Client::new(&base, cfg.jwks_ca.as_deref(), None)
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(&path, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    if !resp.is_success() {
        return Err(format!("HTTP {}", resp.status));
    }
    serde_json::from_slice(&resp.body).map_err(|e| format!("JWKS JSON: {e}"))
}

/// Splits `scheme://authority/path?q` into (`scheme://authority`, `/path?q`).
pub fn split_url(url: &str) -> Result<(String, String), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("URL {url:?} has no scheme"))?;
    let (auth, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((format!("{scheme}://{auth}"), path.to_owned()))
}

/// Strings at a dotted path of a JSON value (a string or an array of strings).
fn strings_at(v: &serde_json::Value, path: &str) -> Vec<String> {
    let mut cur = v;
    for part in path.split('.') {
        match cur.get(part) {
            Some(n) => cur = n,
            None => return vec![],
        }
    }
    match cur {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_needs() {
        let p = |role| Principal {
            name: "x".into(),
            role,
            groups: vec![],
            via: "api-key",
        };
        assert!(p(Role::Viewer).require(Need::Read).is_ok());
        assert!(p(Role::Viewer).require(Need::Operate).is_err());
        assert!(p(Role::Operator).require(Need::Operate).is_ok());
        assert!(p(Role::Operator).require(Need::Admin).is_err());
        assert!(p(Role::Admin).require(Need::Hub).is_ok());
        assert!(p(Role::Hub).require(Need::Read).is_err());
        assert!(p(Role::Hub).require(Need::Hub).is_ok());
        assert!(p(Role::Viewer).require(Need::Hub).is_err());
    }

    #[test]
    fn claim_paths() {
        let v = serde_json::json!({"roles": ["admin", "x"], "realm_access": {"roles": ["viewer"]}, "scope": "a b"});
        assert_eq!(strings_at(&v, "roles"), vec!["admin", "x"]);
        assert_eq!(strings_at(&v, "realm_access.roles"), vec!["viewer"]);
        assert_eq!(strings_at(&v, "scope"), vec!["a", "b"]);
        assert!(strings_at(&v, "nope.x").is_empty());
    }

    #[test]
    fn urls_split() {
        assert_eq!(
            split_url("http://127.0.0.1:9/jwks.json").unwrap(),
            ("http://127.0.0.1:9".into(), "/jwks.json".into())
        );
        assert_eq!(
            split_url("https://idp").unwrap(),
            ("https://idp".into(), "/".into())
        );
        assert!(split_url("idp/x").is_err());
    }
}
