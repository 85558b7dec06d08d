//! The `identify` stage's engine: an OAuth 2.1 resource server (bearer JWTs checked against the
//! issuer's JWKS) plus static API keys, producing a [`Principal`] or a classified [`AuthError`].
//!
//! Per request the hub calls [`Authenticator::authenticate`] with the raw `Authorization` header
//! value. The common case — a token seen before — is one hash lookup in the verification cache
//! ([`Authenticator::authenticate_cached`] is the same fast path as a plain sync fn). A new token
//! costs one signature check. Only a token whose `kid` is unknown waits: it asks the network
//! thread ([`crate::net`]) to refetch the JWKS and awaits a `tokio::sync::watch` change, which
//! the network thread always sends (its fetch has its own timeout).
//!
//! - **JWT checks**: allowed algorithms only (never `none`, never HS* — a JWKS holds public keys),
//!   signature with the JWKS key named by `kid`, `iss` = the configured issuer, `aud` contains the
//!   hub's resource URI (RFC 8707), `exp`/`nbf` with a small leeway, `sub` present, size at most
//!   `max_token_bytes` (the hub answers 431 for a huge header). Roles come from a configurable
//!   claim path (`roles`, `realm_access.roles`, `groups`), scopes from `scope` (space-separated)
//!   and/or `scp` (array).
//! - **JWKS**: fetched at start (discovered from RFC 8414 metadata when `jwks_uri` is not given),
//!   refreshed every `jwks_refresh`, and on an unknown `kid` at most once per
//!   `unknown_kid_min_interval` — random `kid`s from an attacker cost the issuer nothing more.
//!   A refresh that drops a key empties the verification cache.
//! - **Verification cache**: keyed by the token bytes, bounded (`token_cache_entries`), entries
//!   expire with the token; failures are not cached.
//! - **API keys**: configured as `sha256:<hex>` ([`hash_api_key`]); a presented key is hashed
//!   and compared in constant time against every configured hash.
//! - **`auth: none`**: the anonymous principal, allowed only on a loopback listener
//!   ([`validate`]).
//! - **Discovery**: [`Authenticator::protected_resource_metadata`] (RFC 9728) served at
//!   [`Authenticator::well_known_paths`]; [`Authenticator::challenge_401`] and
//!   [`Authenticator::challenge_403`] build the `WWW-Authenticate` values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::config::{unix_now, ConfigDuration, ConfigError};
use crate::net::{is_loopback_host, NetRuntime};
use crate::principal::Principal;

// === config ===

/// The `auth:` config: the string `none` (loopback only) or a map ([`AuthSettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    /// No authentication: everyone is the anonymous principal. Loopback listeners only.
    None,
    /// Bearer tokens required.
    Required(Box<AuthSettings>),
}

impl<'de> Deserialize<'de> for AuthConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AuthConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`none` or a map with `resource`, `jwt` and/or `api_keys`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AuthConfig, E> {
                if v == "none" {
                    Ok(AuthConfig::None)
                } else {
                    Err(E::custom(format!(
                        "auth: expected `none` or a map, found {v:?}"
                    )))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<AuthConfig, A::Error> {
                AuthSettings::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(|s| AuthConfig::Required(Box::new(s)))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for AuthConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AuthConfig::None => s.serialize_str("none"),
            AuthConfig::Required(a) => a.serialize(s),
        }
    }
}

/// Bearer-token settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The hub's canonical resource URI (`https://gw.example.com/mcp`): the audience tokens must
    /// carry and the `resource` of the protected-resource metadata.
    pub resource: String,
    /// Authorization servers listed in the metadata (default: the JWT issuer).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes listed in the metadata's `scopes_supported`.
    #[serde(default)]
    pub scopes_supported: Vec<String>,
    /// Scopes every request needs (a token without them gets 403 `insufficient_scope`); also
    /// the `scope` of the 401 challenge.
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// Bearer JWT validation.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// Static API keys for machine clients.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Longest token accepted (bytes; default 8192). Longer: [`AuthError::TooLarge`] (431).
    #[serde(default = "default_max_token")]
    pub max_token_bytes: usize,
    /// Verified tokens kept in the cache (default 10000).
    #[serde(default = "default_cache")]
    pub token_cache_entries: usize,
}

fn default_max_token() -> usize {
    8192
}
fn default_cache() -> usize {
    10_000
}

/// JWT validation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The expected `iss`.
    pub issuer: String,
    /// The JWKS URL (default: discovered from the issuer's RFC 8414 / OIDC metadata).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The expected `aud` (default: `auth.resource`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Allowed `alg`s (default RS256, ES256, EdDSA); `none` and HS* are refused.
    #[serde(default = "default_algs")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`/`nbf` (default 30s).
    #[serde(default = "default_leeway")]
    pub leeway: ConfigDuration,
    /// Dotted path of the roles claim (default `roles`; e.g. `realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claims holding scopes: strings are space-separated, arrays are lists (default `scope`, `scp`).
    #[serde(default = "default_scope_claims")]
    pub scope_claims: Vec<String>,
    /// Periodic JWKS refresh (default 10m).
    #[serde(default = "default_refresh")]
    pub jwks_refresh: ConfigDuration,
    /// Least time between refreshes triggered by unknown `kid`s (default 30s).
    #[serde(default = "default_kid_interval")]
    pub unknown_kid_min_interval: ConfigDuration,
    /// Timeout of one fetch (default 5s).
    #[serde(default = "default_http_timeout")]
    pub http_timeout: ConfigDuration,
    /// Allow plain `http` to non-loopback issuers (never in production; default false).
    #[serde(default)]
    pub allow_http: bool,
    /// Extra CA certificates (PEM) for the issuer's TLS.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_algs() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_scope_claims() -> Vec<String> {
    vec!["scope".into(), "scp".into()]
}
fn default_refresh() -> ConfigDuration {
    ConfigDuration::secs(600)
}
fn default_kid_interval() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_http_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}

/// One static API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The key's name (the principal is `key:<name>`).
    pub name: String,
    /// `sha256:<64 hex>` of the key ([`hash_api_key`]).
    pub hash: String,
    /// Roles granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// `sha256:<hex>` of an API key, for the config (`meshgate auth hash-key` prints this).
pub fn hash_api_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

/// A new random API key (`mgk_` + 43 base64url characters, 256 bits).
pub fn generate_api_key() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source is available");
    format!(
        "mgk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

fn parse_alg(field: &str, s: &str) -> Result<Algorithm, ConfigError> {
    let lower = s.to_ascii_lowercase();
    if lower == "none" {
        return Err(ConfigError::new(field, "`none` is never allowed"));
    }
    if lower.starts_with("hs") {
        return Err(ConfigError::new(
            field,
            format!("{s} is a shared-secret algorithm; a JWKS holds public keys (use RS*, PS*, ES* or EdDSA)"),
        ));
    }
    s.parse::<Algorithm>()
        .map_err(|_| ConfigError::new(field, format!("unknown algorithm {s:?}")))
}

fn check_url(field: &str, url: &str, allow_http: bool) -> Result<hyper::Uri, ConfigError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| ConfigError::new(field, format!("not a URL: {url:?}")))?;
    let host = uri
        .host()
        .ok_or_else(|| ConfigError::new(field, "the URL has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http || is_loopback_host(host) => {}
        Some("http") => {
            return Err(ConfigError::new(
                field,
                "must be https (plain http only for loopback or with allow_http)",
            ))
        }
        _ => return Err(ConfigError::new(field, "must be an http(s) URL")),
    }
    if url.contains('#') {
        return Err(ConfigError::new(field, "must not have a fragment"));
    }
    Ok(uri)
}

/// Checks an `auth:` config against the listen address: `auth: none` only on loopback, at least
/// one way to authenticate, no `none`/HS* algorithms, well-formed URIs and key hashes.
///
/// # Errors
/// A [`ConfigError`] naming the field with a message an operator can act on.
pub fn validate(cfg: &AuthConfig, listen: SocketAddr) -> Result<(), ConfigError> {
    let s = match cfg {
        AuthConfig::None => {
            if listen.ip().is_loopback() {
                return Ok(());
            }
            return Err(ConfigError::new(
                "auth",
                format!(
                    "`auth: none` is allowed only when the hub listens on a loopback address, but it listens on {listen}; \
                     configure auth.jwt (OAuth) or auth.api_keys, or listen on 127.0.0.1"
                ),
            ));
        }
        AuthConfig::Required(s) => s,
    };
    let res = check_url("auth.resource", &s.resource, true)?;
    let scheme_host = format!(
        "{}://{}",
        res.scheme_str().unwrap_or(""),
        res.authority().map(|a| a.as_str()).unwrap_or("")
    );
    if scheme_host != scheme_host.to_ascii_lowercase() {
        return Err(ConfigError::new(
            "auth.resource",
            "scheme and host must be lowercase (the canonical URI clients send as `resource`)",
        ));
    }
    if s.jwt.is_none() && s.api_keys.is_empty() {
        return Err(ConfigError::new(
            "auth",
            "set auth.jwt and/or auth.api_keys (or `auth: none` on loopback)",
        ));
    }
    if s.max_token_bytes < 64 {
        return Err(ConfigError::new("auth.max_token_bytes", "at least 64"));
    }
    if let Some(j) = &s.jwt {
        check_url("auth.jwt.issuer", &j.issuer, j.allow_http)?;
        if let Some(u) = &j.jwks_uri {
            check_url("auth.jwt.jwks_uri", u, j.allow_http)?;
        }
        if j.algorithms.is_empty() {
            return Err(ConfigError::new("auth.jwt.algorithms", "list at least one"));
        }
        for (i, a) in j.algorithms.iter().enumerate() {
            parse_alg(&format!("auth.jwt.algorithms[{i}]"), a)?;
        }
        if j.leeway.get() > Duration::from_secs(300) {
            return Err(ConfigError::new("auth.jwt.leeway", "at most 5m"));
        }
        if j.roles_claim.is_empty() {
            return Err(ConfigError::new("auth.jwt.roles_claim", "empty"));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, k) in s.api_keys.iter().enumerate() {
        let f = |n: &str| format!("auth.api_keys[{i}].{n}");
        if k.name.is_empty() || !names.insert(k.name.as_str()) {
            return Err(ConfigError::new(f("name"), "empty or duplicate name"));
        }
        parse_key_hash(&k.hash).ok_or_else(|| {
            ConfigError::new(
                f("hash"),
                "expected sha256:<64 hex digits> (see hash_api_key / `meshgate auth hash-key`)",
            )
        })?;
    }
    for (i, a) in s.authorization_servers.iter().enumerate() {
        check_url(&format!("auth.authorization_servers[{i}]"), a, true)?;
    }
    Ok(())
}

fn parse_key_hash(s: &str) -> Option<[u8; 32]> {
    let hexpart = s.strip_prefix("sha256:")?;
    let v = hex::decode(hexpart).ok()?;
    v.try_into().ok()
}

// === errors ===

/// Why a request was not authenticated; each maps to an HTTP status for the hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("missing bearer token")]
    Missing,
    /// Not `Bearer <token>`, or not a JWT/API key.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Longer than `max_token_bytes` (431).
    #[error("token too large: {len} bytes (limit {max})")]
    TooLarge {
        /// The header's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The signature does not verify.
    #[error("invalid token signature")]
    InvalidSignature,
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this hub.
    #[error("token audience is not this resource")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token issuer is not trusted")]
    WrongIssuer,
    /// `kid` not in the JWKS, even after a refresh.
    #[error("unknown signing key {0:?}")]
    UnknownKid(String),
    /// `alg` not allowed (including `none` and HS*).
    #[error("token algorithm {0:?} is not allowed")]
    DisallowedAlg(String),
    /// A required claim is missing or has the wrong type.
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
    /// No configured API key matches.
    #[error("unknown API key")]
    UnknownApiKey,
    /// Valid token, but lacking required scopes (403).
    #[error("insufficient scope: needs {}", .needed.join(" "))]
    InsufficientScope {
        /// All scopes the request needs.
        needed: Vec<String>,
    },
    /// The JWKS could not be fetched and no key is known (503).
    #[error("cannot verify tokens now: {0}")]
    KeysUnavailable(String),
}

impl AuthError {
    /// The HTTP status the hub answers with.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::TooLarge { .. } => 431,
            AuthError::InsufficientScope { .. } => 403,
            AuthError::KeysUnavailable(_) => 503,
            AuthError::Missing
            | AuthError::Malformed(_)
            | AuthError::InvalidSignature
            | AuthError::Expired
            | AuthError::NotYetValid
            | AuthError::WrongAudience
            | AuthError::WrongIssuer
            | AuthError::UnknownKid(_)
            | AuthError::DisallowedAlg(_)
            | AuthError::InvalidClaims(_)
            | AuthError::UnknownApiKey => 401,
        }
    }

    /// A short stable label for metrics and audit (`expired`, `wrong_audience`…).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::TooLarge { .. } => "too_large",
            AuthError::InvalidSignature => "invalid_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::UnknownKid(_) => "unknown_kid",
            AuthError::DisallowedAlg(_) => "disallowed_alg",
            AuthError::InvalidClaims(_) => "invalid_claims",
            AuthError::UnknownApiKey => "unknown_api_key",
            AuthError::InsufficientScope { .. } => "insufficient_scope",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
        }
    }
}

// === JWKS ===

struct Key {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    unnamed: Vec<Arc<Key>>,
    loaded: bool,
}

struct Jwks {
    keys: RwLock<Arc<KeySet>>,
    generation: watch::Sender<u64>,
    in_flight: AtomicBool,
    last_attempt: Mutex<Option<Instant>>,
    min_interval: Duration,
    last_error: Mutex<Option<String>>,
    fetches: AtomicU64,
}

/// Counters of the identify stage.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Cache hits.
    pub cache_hits: AtomicU64,
    /// Signature verifications.
    pub verifications: AtomicU64,
    /// JWKS fetch attempts.
    pub jwks_fetches: AtomicU64,
    /// Unknown-`kid` refreshes refused by the rate limit.
    pub refresh_suppressed: AtomicU64,
}

struct ApiKey {
    hash: [u8; 32],
    principal: Principal,
}

struct Jwt {
    cfg: JwtConfig,
    audience: String,
    algorithms: Vec<Algorithm>,
    roles_path: Vec<String>,
    jwks: Arc<Jwks>,
    net: Arc<NetRuntime>,
    jwks_uri: Arc<Mutex<Option<String>>>,
    allow_http: bool,
}

struct CacheEntry {
    principal: Principal,
    exp: u64,
}

/// The identify stage's engine; `Send + Sync`, shared through an `Arc` (or cloned: it is one).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    none: bool,
    resource: String,
    metadata_url: String,
    metadata: Vec<u8>,
    paths: Vec<String>,
    required_scopes: Vec<String>,
    challenge_scope: String,
    jwt: Option<Jwt>,
    api_keys: Vec<ApiKey>,
    cache: DashMap<Box<[u8]>, CacheEntry>,
    cache_max: usize,
    max_token: usize,
    leeway: u64,
    stats: AuthStats,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("resource", &self.inner.resource)
            .field("none", &self.inner.none)
            .field("cached", &self.inner.cache.len())
            .finish()
    }
}

enum Step {
    Done(Result<Principal, AuthError>),
    NeedKeys { kid: Option<String> },
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Authenticator {
    /// Builds the authenticator (and starts the first JWKS fetch on `net`). Call [`validate`]
    /// first for the loopback rule.
    ///
    /// # Errors
    /// A [`ConfigError`] for invalid settings.
    pub fn new(cfg: &AuthConfig, net: Option<Arc<NetRuntime>>) -> Result<Self, ConfigError> {
        let s = match cfg {
            AuthConfig::None => {
                return Ok(Authenticator {
                    inner: Arc::new(Inner {
                        none: true,
                        resource: String::new(),
                        metadata_url: String::new(),
                        metadata: Vec::new(),
                        paths: Vec::new(),
                        required_scopes: Vec::new(),
                        challenge_scope: String::new(),
                        jwt: None,
                        api_keys: Vec::new(),
                        cache: DashMap::new(),
                        cache_max: 0,
                        max_token: 0,
                        leeway: 0,
                        stats: AuthStats::default(),
                    }),
                })
            }
            AuthConfig::Required(s) => s,
        };
        validate(cfg, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let uri: hyper::Uri = s
            .resource
            .parse()
            .map_err(|_| ConfigError::new("auth.resource", "not a URL"))?;
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let path = uri.path().trim_end_matches('/');
        let root = "/.well-known/oauth-protected-resource".to_string();
        let mut paths = vec![];
        if !path.is_empty() {
            paths.push(format!("{root}{path}"));
        }
        paths.push(root);
        let metadata_url = format!("{origin}{}", paths[0]);
        let mut servers = s.authorization_servers.clone();
        if servers.is_empty() {
            if let Some(j) = &s.jwt {
                servers.push(j.issuer.clone());
            }
        }
        let mut md = serde_json::json!({
            "resource": s.resource,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
        });
        if !s.scopes_supported.is_empty() {
            md["scopes_supported"] = serde_json::json!(s.scopes_supported);
        }
        let challenge_scope = if s.required_scopes.is_empty() {
            s.scopes_supported.join(" ")
        } else {
            s.required_scopes.join(" ")
        };
        let mut api_keys = Vec::new();
        for k in &s.api_keys {
            api_keys.push(ApiKey {
                hash: parse_key_hash(&k.hash).expect("validated above"),
                principal: Principal::api_key(&k.name, &k.roles, &k.scopes),
            });
        }
        let jwt = match &s.jwt {
            None => None,
            Some(j) => {
                let net = net.ok_or_else(|| {
                    ConfigError::new("auth.jwt", "JWT validation needs the network thread")
                })?;
                let algorithms = j
                    .algorithms
                    .iter()
                    .enumerate()
                    .map(|(i, a)| parse_alg(&format!("auth.jwt.algorithms[{i}]"), a))
                    .collect::<Result<Vec<_>, _>>()?;
                let (gen, _) = watch::channel(0u64);
                let jwt = Jwt {
                    audience: j.audience.clone().unwrap_or_else(|| s.resource.clone()),
                    algorithms,
                    roles_path: j.roles_claim.split('.').map(str::to_string).collect(),
                    jwks: Arc::new(Jwks {
                        keys: RwLock::new(Arc::new(KeySet::default())),
                        generation: gen,
                        in_flight: AtomicBool::new(false),
                        last_attempt: Mutex::new(None),
                        min_interval: j.unknown_kid_min_interval.get(),
                        last_error: Mutex::new(None),
                        fetches: AtomicU64::new(0),
                    }),
                    net,
                    jwks_uri: Arc::new(Mutex::new(j.jwks_uri.clone())),
                    allow_http: j.allow_http,
                    cfg: j.clone(),
                };
                Some(jwt)
            }
        };
        let a = Authenticator {
            inner: Arc::new(Inner {
                none: false,
                resource: s.resource.clone(),
                metadata_url,
                metadata: serde_json::to_vec(&md).expect("metadata serializes"),
                paths,
                required_scopes: s.required_scopes.clone(),
                challenge_scope,
                jwt,
                api_keys,
                cache: DashMap::new(),
                cache_max: s.token_cache_entries.max(1),
                max_token: s.max_token_bytes,
                leeway: s
                    .jwt
                    .as_ref()
                    .map(|j| j.leeway.get().as_secs())
                    .unwrap_or(0),
                stats: AuthStats::default(),
            }),
        };
        if let Some(j) = &a.inner.jwt {
            a.start_fetch(true);
            let weak = Arc::downgrade(&a.inner);
            let every = j.cfg.jwks_refresh.get().max(Duration::from_secs(1));
            j.net.spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(inner) = weak.upgrade() else { return };
                    Authenticator { inner }.start_fetch(true);
                }
            });
        }
        Ok(a)
    }

    /// Counters (cache hits, verifications, JWKS fetches, suppressed refreshes).
    pub fn stats(&self) -> &AuthStats {
        &self.inner.stats
    }

    /// Whether the JWKS has been loaded at least once (always true without JWT auth).
    pub fn keys_loaded(&self) -> bool {
        match &self.inner.jwt {
            None => true,
            Some(j) => j.jwks.keys.read().loaded,
        }
    }

    /// Blocks (a std thread, at startup — never a worker) until the JWKS is loaded or `timeout`
    /// passes; returns the last fetch error on timeout.
    ///
    /// # Errors
    /// The last fetch error, or "timed out".
    // Startup only, on the hub's main thread (documented above): sleeping there blocks nothing.
    #[allow(clippy::disallowed_methods)]
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.keys_loaded() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let err = self
            .inner
            .jwt
            .as_ref()
            .and_then(|j| j.jwks.last_error.lock().clone());
        Err(err.unwrap_or_else(|| "timed out waiting for the JWKS".into()))
    }

    /// Starts a JWKS fetch on the network thread unless one is running; `periodic` bypasses the
    /// unknown-kid rate limit. Returns whether a fetch was started or is running.
    fn start_fetch(&self, periodic: bool) -> bool {
        let Some(j) = &self.inner.jwt else {
            return false;
        };
        {
            let mut last = j.jwks.last_attempt.lock();
            if j.jwks.in_flight.load(Ordering::Acquire) {
                return true;
            }
            if !periodic {
                if let Some(t) = *last {
                    if t.elapsed() < j.jwks.min_interval {
                        self.inner
                            .stats
                            .refresh_suppressed
                            .fetch_add(1, Ordering::Relaxed);
                        return false;
                    }
                }
            }
            // Only refreshes triggered by unknown kids count against the rate limit, so a
            // periodic refresh never delays picking up a rotated key.
            if !periodic {
                *last = Some(Instant::now());
            }
            j.jwks.in_flight.store(true, Ordering::Release);
        }
        self.inner
            .stats
            .jwks_fetches
            .fetch_add(1, Ordering::Relaxed);
        j.jwks.fetches.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.clone();
        j.net.spawn(async move {
            let Some(j) = &inner.jwt else { return };
            let res = fetch_keys(j).await;
            match res {
                Ok(set) => {
                    let old = j.jwks.keys.read().clone();
                    let dropped = old.by_kid.keys().any(|k| !set.by_kid.contains_key(k))
                        || old.unnamed.len() > set.unnamed.len();
                    *j.jwks.keys.write() = Arc::new(set);
                    *j.jwks.last_error.lock() = None;
                    if dropped {
                        // A key was withdrawn: tokens it signed must be verified again.
                        inner.cache.clear();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS fetch failed");
                    *j.jwks.last_error.lock() = Some(e);
                }
            }
            j.jwks.in_flight.store(false, Ordering::Release);
            j.jwks.generation.send_modify(|g| *g += 1);
        });
        true
    }

    /// Authenticates a request from its raw `Authorization` header value.
    ///
    /// Awaits only when the token's `kid` is unknown (a JWKS refresh on the network thread,
    /// bounded by its fetch timeout); the await is a `tokio::sync::watch` change, usable from
    /// any runtime. Call [`Self::require_scopes`] afterwards for `required_scopes`, or use
    /// the returned error as is.
    ///
    /// # Errors
    /// A classified [`AuthError`].
    pub async fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let token = match self.prepare(authorization) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(Principal::anonymous()),
            Err(e) => return Err(e),
        };
        match self.step(token) {
            Step::Done(r) => r,
            Step::NeedKeys { kid } => {
                let Some(j) = &self.inner.jwt else {
                    return Err(AuthError::Malformed("not an API key"));
                };
                let mut rx = j.jwks.generation.subscribe();
                if self.start_fetch(false) && rx.changed().await.is_ok() {
                    if let Step::Done(r) = self.step(token) {
                        return r;
                    }
                }
                let set = j.jwks.keys.read().clone();
                if !set.loaded {
                    let why = j
                        .jwks
                        .last_error
                        .lock()
                        .clone()
                        .unwrap_or_else(|| "the JWKS is not loaded yet".into());
                    return Err(AuthError::KeysUnavailable(why));
                }
                Err(AuthError::UnknownKid(kid.unwrap_or_default()))
            }
        }
    }

    /// The synchronous fast path: `Some` when the request was decided without waiting (cache
    /// hit, API key, known `kid`, or an error), `None` when a JWKS refresh is needed (then call
    /// [`Self::authenticate`]).
    pub fn authenticate_cached(
        &self,
        authorization: Option<&[u8]>,
    ) -> Option<Result<Principal, AuthError>> {
        let token = match self.prepare(authorization) {
            Ok(Some(t)) => t,
            Ok(None) => return Some(Ok(Principal::anonymous())),
            Err(e) => return Some(Err(e)),
        };
        match self.step(token) {
            Step::Done(r) => Some(r),
            Step::NeedKeys { .. } => None,
        }
    }

    /// Checks `required_scopes` for a principal.
    ///
    /// # Errors
    /// [`AuthError::InsufficientScope`] naming every needed scope.
    pub fn require_scopes(&self, p: &Principal) -> Result<(), AuthError> {
        if self.inner.required_scopes.iter().all(|s| p.has_scope(s)) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope {
                needed: self.inner.required_scopes.clone(),
            })
        }
    }

    /// Header → token bytes; `Ok(None)` = anonymous (`auth: none`).
    fn prepare<'a>(&self, authorization: Option<&'a [u8]>) -> Result<Option<&'a [u8]>, AuthError> {
        if self.inner.none {
            return Ok(None);
        }
        let h = authorization.ok_or(AuthError::Missing)?;
        if h.len() > self.inner.max_token + 7 {
            return Err(AuthError::TooLarge {
                len: h.len(),
                max: self.inner.max_token,
            });
        }
        let h = trim(h);
        if h.len() < 7 || !h[..7].eq_ignore_ascii_case(b"bearer ") {
            return Err(AuthError::Malformed(
                "expected `Authorization: Bearer <token>`",
            ));
        }
        let t = trim(&h[7..]);
        if t.is_empty() {
            return Err(AuthError::Malformed("empty bearer token"));
        }
        // RFC 6750 b64token: ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" *"="
        let body_end = t.iter().rposition(|c| *c != b'=').map_or(0, |i| i + 1);
        if !t[..body_end]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(c))
        {
            return Err(AuthError::Malformed(
                "invalid characters in the bearer token",
            ));
        }
        Ok(Some(t))
    }

    fn step(&self, token: &[u8]) -> Step {
        let now = unix_now();
        if let Some(e) = self.inner.cache.get(token) {
            if now > e.exp.saturating_add(self.inner.leeway) {
                drop(e);
                self.inner.cache.remove(token);
                return Step::Done(Err(AuthError::Expired));
            }
            self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Step::Done(Ok(e.principal.clone()));
        }
        let dots = token.iter().filter(|c| **c == b'.').count();
        if dots == 2 && self.inner.jwt.is_some() {
            return self.verify_jwt(token, now);
        }
        if !self.inner.api_keys.is_empty() {
            return Step::Done(self.api_key(token));
        }
        Step::Done(Err(AuthError::Malformed("not a JWT")))
    }

    fn api_key(&self, token: &[u8]) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        let mut found: Option<&Principal> = None;
        // Compare against every key (no early exit), each comparison in constant time.
        for k in &self.inner.api_keys {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(&k.principal);
            }
        }
        let p = found.cloned().ok_or(AuthError::UnknownApiKey)?;
        self.remember(token, &p, u64::MAX);
        Ok(p)
    }

    fn remember(&self, token: &[u8], p: &Principal, exp: u64) {
        let c = &self.inner.cache;
        if c.len() >= self.inner.cache_max {
            let now = unix_now();
            c.retain(|_, e| e.exp >= now);
            if c.len() >= self.inner.cache_max {
                c.clear();
            }
        }
        c.insert(
            token.into(),
            CacheEntry {
                principal: p.clone(),
                exp,
            },
        );
    }

    fn verify_jwt(&self, token: &[u8], now: u64) -> Step {
        let j = self.inner.jwt.as_ref().expect("checked by the caller");
        let Ok(text) = std::str::from_utf8(token) else {
            return Step::Done(Err(AuthError::Malformed("not UTF-8")));
        };
        let header_b64 = text.split('.').next().unwrap_or("");
        #[derive(Deserialize)]
        struct Header {
            alg: String,
            #[serde(default)]
            kid: Option<String>,
        }
        let header: Header = match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
        {
            Some(h) => h,
            None => return Step::Done(Err(AuthError::Malformed("bad JWT header"))),
        };
        let alg = match header.alg.parse::<Algorithm>() {
            Ok(a) if j.algorithms.contains(&a) => a,
            _ => return Step::Done(Err(AuthError::DisallowedAlg(header.alg))),
        };
        let set = j.jwks.keys.read().clone();
        let candidates: Vec<Arc<Key>> = match &header.kid {
            Some(kid) => match set.by_kid.get(kid) {
                Some(k) => vec![k.clone()],
                None => return Step::NeedKeys { kid: header.kid },
            },
            None => set
                .by_kid
                .values()
                .chain(set.unnamed.iter())
                .filter(|k| k.alg.is_none_or(|a| a == alg))
                .cloned()
                .collect(),
        };
        if candidates.is_empty() {
            return Step::NeedKeys { kid: None };
        }
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.inner.leeway;
        v.validate_nbf = true;
        v.set_issuer(&[&j.cfg.issuer]);
        v.set_audience(&[&j.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut last = AuthError::InvalidSignature;
        for k in candidates {
            if let Some(ka) = k.alg {
                if ka != alg {
                    last = AuthError::DisallowedAlg(format!("{alg:?} token for a {ka:?} key"));
                    continue;
                }
            }
            self.inner
                .stats
                .verifications
                .fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(text, &k.key, &v) {
                Ok(data) => {
                    let p = match principal_from_claims(j, &data.claims) {
                        Ok(p) => p,
                        Err(e) => return Step::Done(Err(e)),
                    };
                    let exp = p.expires_at.unwrap_or(now);
                    self.remember(token, &p, exp);
                    return Step::Done(Ok(p));
                }
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => AuthError::InvalidSignature,
                        ErrorKind::ExpiredSignature => AuthError::Expired,
                        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                        ErrorKind::InvalidAudience => AuthError::WrongAudience,
                        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                            AuthError::DisallowedAlg(format!("{alg:?} does not fit the key"))
                        }
                        ErrorKind::MissingRequiredClaim(c) => {
                            AuthError::InvalidClaims(format!("missing `{c}`"))
                        }
                        ErrorKind::Json(_) => AuthError::InvalidClaims(
                            "claims are not valid JSON of the right types".into(),
                        ),
                        _ => AuthError::Malformed("undecodable JWT"),
                    };
                    // Only a bad signature is worth trying the next key for.
                    if last != AuthError::InvalidSignature {
                        return Step::Done(Err(last));
                    }
                }
            }
        }
        Step::Done(Err(last))
    }

    // === discovery and challenges ===

    /// The RFC 9728 protected-resource metadata document (JSON bytes, built once).
    pub fn protected_resource_metadata(&self) -> &[u8] {
        &self.inner.metadata
    }

    /// The paths to serve the metadata at: the endpoint-path-suffixed one first
    /// (`/.well-known/oauth-protected-resource/mcp`), then the root one.
    pub fn well_known_paths(&self) -> &[String] {
        &self.inner.paths
    }

    /// The metadata URL named in `WWW-Authenticate`.
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.metadata_url
    }

    /// The `WWW-Authenticate` value for a 401: `Bearer resource_metadata="…", scope="…"`, plus
    /// `error="invalid_token", error_description="…"` when a token was presented (RFC 6750).
    pub fn challenge_401(&self, err: &AuthError) -> String {
        let mut v = format!(
            "Bearer resource_metadata=\"{}\"",
            escape(&self.inner.metadata_url)
        );
        if !self.inner.challenge_scope.is_empty() {
            v.push_str(&format!(
                ", scope=\"{}\"",
                escape(&self.inner.challenge_scope)
            ));
        }
        if !matches!(err, AuthError::Missing) {
            v.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{}\"",
                escape(&err.to_string())
            ));
        }
        v
    }

    /// The `WWW-Authenticate` value for a 403 `insufficient_scope`: the needed scopes together
    /// with those already granted (so a step-up keeps them), the metadata URL and a description.
    pub fn challenge_403(
        &self,
        needed: &[&str],
        granted: &[Arc<str>],
        description: &str,
    ) -> String {
        let mut scopes: Vec<&str> = granted.iter().map(|s| &**s).collect();
        for n in needed {
            if !scopes.contains(n) {
                scopes.push(n);
            }
        }
        format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\", error_description=\"{}\"",
            escape(&scopes.join(" ")),
            escape(&self.inner.metadata_url),
            escape(description)
        )
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &b[s..e.max(s)]
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn principal_from_claims(
    j: &Jwt,
    c: &serde_json::Map<String, Value>,
) -> Result<Principal, AuthError> {
    let sub = c
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::InvalidClaims("`sub` must be a non-empty string".into()))?;
    let iss = c.get("iss").and_then(Value::as_str).unwrap_or("");
    let mut node = c.get(&j.roles_path[0]);
    for part in &j.roles_path[1..] {
        node = node.and_then(|n| n.get(part));
    }
    let roles = strings(node);
    let mut scopes = Vec::new();
    for name in &j.cfg.scope_claims {
        scopes.extend(strings(c.get(name)));
    }
    let exp = c.get("exp").and_then(Value::as_u64);
    let client = c
        .get("client_id")
        .or_else(|| c.get("azp"))
        .and_then(Value::as_str);
    let jti = c.get("jti").and_then(Value::as_str);
    Ok(Principal::jwt(iss, sub, roles, scopes, exp).with_token_info(client, jti))
}

/// The RFC 8414 (then OIDC) metadata URLs for an issuer, in the order clients try them.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let (origin, path) = match trimmed.find("://").map(|i| i + 3) {
        Some(i) => match trimmed[i..].find('/') {
            Some(p) => trimmed.split_at(i + p),
            None => (trimmed, ""),
        },
        None => (trimmed, ""),
    };
    if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{trimmed}/.well-known/openid-configuration"),
        ]
    }
}

async fn fetch_keys(j: &Jwt) -> Result<KeySet, String> {
    let timeout = j.cfg.http_timeout.get();
    let known = j.jwks_uri.lock().clone();
    let uri = match known {
        Some(u) => u,
        None => {
            let mut found = None;
            let mut errors = Vec::new();
            for url in metadata_urls(&j.cfg.issuer) {
                match j.net.get(&url, j.allow_http, timeout, 1 << 20).await {
                    Ok(r) if r.status == 200 => {
                        let md: Value = serde_json::from_slice(&r.body)
                            .map_err(|e| format!("{url}: metadata is not JSON: {e}"))?;
                        if md.get("issuer").and_then(Value::as_str) != Some(j.cfg.issuer.as_str()) {
                            return Err(format!(
                                "{url}: metadata `issuer` is not {} (RFC 8414 §3.3)",
                                j.cfg.issuer
                            ));
                        }
                        let u = md
                            .get("jwks_uri")
                            .and_then(Value::as_str)
                            .ok_or_else(|| format!("{url}: metadata has no jwks_uri"))?;
                        found = Some(u.to_string());
                        break;
                    }
                    Ok(r) => errors.push(format!("{url}: HTTP {}", r.status)),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            let u = found.ok_or_else(|| {
                format!("no authorization server metadata: {}", errors.join("; "))
            })?;
            *j.jwks_uri.lock() = Some(u.clone());
            u
        }
    };
    let r = j
        .net
        .get(&uri, j.allow_http, timeout, 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("{uri}: HTTP {}", r.status));
    }
    parse_jwks(&r.body).map_err(|e| format!("{uri}: {e}"))
}

fn parse_jwks(body: &[u8]) -> Result<KeySet, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("JWKS has no `keys` array")?;
    let mut set = KeySet {
        loaded: true,
        ..Default::default()
    };
    for k in keys {
        if k.get("use")
            .and_then(Value::as_str)
            .is_some_and(|u| u != "sig")
        {
            continue;
        }
        if k.get("kty").and_then(Value::as_str) == Some("oct") {
            // Symmetric keys never verify tokens here.
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
            tracing::debug!("skipping a JWKS entry this hub cannot use");
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        let alg = jwk
            .common
            .key_algorithm
            .and_then(|a| format!("{a:?}").parse::<Algorithm>().ok());
        let key = Arc::new(Key { key, alg });
        match jwk.common.key_id {
            Some(kid) => {
                set.by_kid.insert(kid, key);
            }
            None => set.unnamed.push(key),
        }
    }
    Ok(set)
}

#[cfg(test)]
#[path = "identity_tests.rs"]
mod tests;
