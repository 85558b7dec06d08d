//! Upstream credentials: what the hub sends upstream *instead of* the client's token (which
//! never leaves the hub — no token passthrough).
//!
//! Used in the `forward` stage: [`Credentials::headers`] returns the header pairs to add to the
//! upstream request (the hub strips the client's `Authorization` first). Per upstream, one of:
//!
//! - **`header`**: a static header (e.g. `Authorization: Bearer …`, `X-Api-Key: …`) whose value
//!   is read at start from an encrypted secret file ([`seal_secret`] / [`open_secret`]).
//! - **`client_credentials`**: an OAuth 2.1 client-credentials token from a token endpoint,
//!   one per upstream (the hub acts as itself).
//! - **`token_exchange`**: RFC 8693 token exchange at a token endpoint, one token per
//!   (principal, upstream). The subject token is, by default, a hub-signed assertion of the user
//!   ([`crate::assertion`]) whose audience is the token endpoint: the authorization server learns
//!   who the user is from a short-lived token minted for it alone. `subject: client_token`
//!   sends the client's own validated token as the subject instead; it must be enabled
//!   explicitly (`allow_client_token: true`) because it hands a bearer token that was issued
//!   for the hub to a third party (a replay risk if that party is compromised, and it only works
//!   when the authorization server accepts tokens with the hub's audience). Prefer it only when
//!   the exchange endpoint belongs to the same issuer that minted the client token.
//! - **`assertion`** (combinable with any of the above): the hub-signed user assertion in its
//!   own header (`X-Meshgate-Assertion` by default), so upstreams learn who is calling.
//!
//! Tokens are cached until shortly before they expire (a quarter of their lifetime or 30 s,
//! whichever is less) and fetched on the network thread ([`crate::net`]); concurrent callers
//! for the same token wait on one fetch (single flight) through `tokio::sync::oneshot`s, so a
//! worker's await is runtime-agnostic and bounded by the fetch timeout.
//!
//! # Secret files
//!
//! One line: `meshgate-secret:v1:` followed by standard base64 of `nonce (12 bytes) ||
//! AES-256-GCM ciphertext+tag`, with the associated data `meshgate-secret:v1`. The 32-byte key
//! comes from the file named by `secret_key_file` (base64, mode 0600) or, if unset, from the
//! environment variable `MESHGATE_SECRET_KEY` (base64) — see [`load_secret_key`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::assertion::AssertionSigner;
use crate::config::{ConfigDuration, ConfigError};
use crate::net::NetRuntime;
use crate::principal::Principal;

const SECRET_PREFIX: &str = "meshgate-secret:v1:";

// === secrets ===

/// A secret could not be sealed, opened or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecretError(pub String);

/// Seals `plaintext` with `key` into the secret-file text (one line).
pub fn seal_secret(key: &[u8; 32], plaintext: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).expect("the OS random source is available");
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: SECRET_PREFIX.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    format!(
        "{SECRET_PREFIX}{}\n",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// Opens secret-file text sealed by [`seal_secret`].
///
/// # Errors
/// [`SecretError`] for a wrong format, a wrong key or altered bytes.
pub fn open_secret(key: &[u8; 32], text: &str) -> Result<Vec<u8>, SecretError> {
    let body = text
        .trim()
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| SecretError(format!("not a sealed secret (expected `{SECRET_PREFIX}…`)")))?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| SecretError("sealed secret is not base64".into()))?;
    if blob.len() < 12 + 16 {
        return Err(SecretError("sealed secret is too short".into()));
    }
    Aes256Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(&blob[..12]),
            Payload {
                msg: &blob[12..],
                aad: SECRET_PREFIX.as_bytes(),
            },
        )
        .map_err(|_| SecretError("cannot open the secret: wrong key or altered file".into()))
}

/// Loads the 32-byte secret key from `file` (base64) or, when `None`, from `$MESHGATE_SECRET_KEY`.
///
/// # Errors
/// [`SecretError`] when missing, unreadable, readable by group/others, or not 32 bytes.
pub fn load_secret_key(file: Option<&Path>) -> Result<[u8; 32], SecretError> {
    let text = match file {
        Some(p) => {
            use std::os::unix::fs::PermissionsExt;
            let meta =
                std::fs::metadata(p).map_err(|e| SecretError(format!("{}: {e}", p.display())))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(SecretError(format!(
                    "{}: readable by group/others; chmod 600 it",
                    p.display()
                )));
            }
            std::fs::read_to_string(p).map_err(|e| SecretError(format!("{}: {e}", p.display())))?
        }
        None => std::env::var("MESHGATE_SECRET_KEY").map_err(|_| {
            SecretError("no secret key: set secret_key_file or MESHGATE_SECRET_KEY".into())
        })?,
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| SecretError("the secret key is not base64".into()))?;
    raw.try_into()
        .map_err(|_| SecretError("the secret key must be 32 bytes".into()))
}

fn read_secret(key: &[u8; 32], field: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))?;
    let raw = open_secret(key, &text)
        .map_err(|e| ConfigError::new(field, format!("{}: {e}", path.display())))?;
    String::from_utf8(raw).map_err(|_| ConfigError::new(field, "the secret is not UTF-8"))
}

// === config ===

/// A static header from a sealed secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticHeaderConfig {
    /// Header name (`Authorization`, `X-Api-Key`).
    pub name: String,
    /// The sealed secret file holding the value.
    pub secret_file: PathBuf,
    /// Prepended to the value (e.g. `Bearer `).
    #[serde(default)]
    pub prefix: String,
}

/// How the hub authenticates to a token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic (`client_secret_basic`, the default).
    #[default]
    Basic,
    /// In the form body (`client_secret_post`).
    Post,
}

/// OAuth client credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsConfig {
    /// The token endpoint.
    pub token_endpoint: String,
    /// The hub's client id there.
    pub client_id: String,
    /// Sealed secret file with the client secret.
    pub client_secret_file: PathBuf,
    /// Client authentication method (default `basic`).
    #[serde(default)]
    pub auth_method: ClientAuth,
    /// `scope` to request.
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` (RFC 8707) to request: the upstream's canonical URI.
    #[serde(default)]
    pub resource: Option<String>,
    /// `audience` to request (some servers use it instead of `resource`).
    #[serde(default)]
    pub audience: Option<String>,
    /// Fetch timeout (default 5s).
    #[serde(default = "d_timeout")]
    pub timeout: ConfigDuration,
    /// Allow plain http to a non-loopback endpoint (tests only).
    #[serde(default)]
    pub allow_http: bool,
}

/// What the subject token of an exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// A hub-signed assertion of the user, audience = the token endpoint (the default).
    #[default]
    Assertion,
    /// The client's validated token (needs `allow_client_token: true`; see the module doc).
    ClientToken,
}

/// RFC 8693 token exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The token endpoint.
    pub token_endpoint: String,
    /// The hub's client id there.
    pub client_id: String,
    /// Sealed secret file with the client secret.
    pub client_secret_file: PathBuf,
    /// Client authentication method (default `basic`).
    #[serde(default)]
    pub auth_method: ClientAuth,
    /// The subject token (default `assertion`).
    #[serde(default)]
    pub subject: Subject,
    /// Required for `subject: client_token`.
    #[serde(default)]
    pub allow_client_token: bool,
    /// `audience` to request.
    #[serde(default)]
    pub audience: Option<String>,
    /// `resource` to request.
    #[serde(default)]
    pub resource: Option<String>,
    /// `scope` to request.
    #[serde(default)]
    pub scope: Option<String>,
    /// `requested_token_type` (default `urn:ietf:params:oauth:token-type:access_token`).
    #[serde(default)]
    pub requested_token_type: Option<String>,
    /// Fetch timeout (default 5s).
    #[serde(default = "d_timeout")]
    pub timeout: ConfigDuration,
    /// Allow plain http to a non-loopback endpoint (tests only).
    #[serde(default)]
    pub allow_http: bool,
}

/// The assertion header for an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionUse {
    /// The assertion's `aud` (default: the upstream's name).
    #[serde(default)]
    pub audience: Option<String>,
}

fn d_timeout() -> ConfigDuration {
    ConfigDuration::secs(5)
}

/// Credentials of one upstream: at most one of `header` / `client_credentials` /
/// `token_exchange`, plus optionally `assertion`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamCredentialsConfig {
    /// Static header from a sealed secret.
    #[serde(default)]
    pub header: Option<StaticHeaderConfig>,
    /// OAuth client credentials.
    #[serde(default)]
    pub client_credentials: Option<ClientCredentialsConfig>,
    /// RFC 8693 token exchange.
    #[serde(default)]
    pub token_exchange: Option<TokenExchangeConfig>,
    /// Send the user assertion too.
    #[serde(default)]
    pub assertion: Option<AssertionUse>,
}

/// The `credentials:` config: the key source and one entry per upstream name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// The secret key file (base64, 0600); default `$MESHGATE_SECRET_KEY`.
    #[serde(default)]
    pub secret_key_file: Option<PathBuf>,
    /// Per-upstream credentials.
    #[serde(default)]
    pub upstreams: HashMap<String, UpstreamCredentialsConfig>,
}

// === runtime ===

/// Why credentials could not be produced (the call fails with -32603 naming the upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The token endpoint refused or failed.
    #[error("token endpoint {endpoint}: {why}")]
    TokenEndpoint {
        /// The endpoint.
        endpoint: String,
        /// What happened.
        why: String,
    },
    /// The user assertion could not be signed, or no signer is configured.
    #[error("{0}")]
    Assertion(String),
    /// The exchange needs the client token and none was given.
    #[error("token exchange needs the client's token")]
    NoClientToken,
    /// The network thread is gone.
    #[error("the governance network thread stopped")]
    Stopped,
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

#[derive(Default)]
struct Slot {
    token: Option<Token>,
    waiters: Vec<oneshot::Sender<Result<Arc<str>, CredentialError>>>,
    in_flight: bool,
}

struct Endpoint {
    url: String,
    client_id: String,
    secret: String,
    auth: ClientAuth,
    timeout: Duration,
    allow_http: bool,
}

enum Source {
    None,
    Static(Arc<str>, Arc<str>),
    ClientCredentials {
        ep: Arc<Endpoint>,
        form: Arc<Vec<(String, String)>>,
        slot: Arc<Mutex<Slot>>,
    },
    Exchange {
        ep: Arc<Endpoint>,
        cfg: Box<TokenExchangeConfig>,
        slots: DashMap<Arc<str>, Arc<Mutex<Slot>>>,
    },
}

struct Upstream {
    source: Source,
    assertion_audience: Option<String>,
}

/// All upstreams' credentials; `Send + Sync`, one per snapshot.
pub struct Credentials {
    upstreams: HashMap<String, Upstream>,
    net: Option<Arc<NetRuntime>>,
    signer: Option<Arc<AssertionSigner>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("upstreams", &self.upstreams.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[allow(clippy::too_many_arguments)]
fn endpoint(
    field: &str,
    key: &[u8; 32],
    url: &str,
    client_id: &str,
    secret_file: &Path,
    auth: ClientAuth,
    timeout: Duration,
    allow_http: bool,
) -> Result<Endpoint, ConfigError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| ConfigError::new(format!("{field}.token_endpoint"), "not a URL"))?;
    let host = uri.host().unwrap_or("");
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_http || crate::net::is_loopback_host(host) => {}
        _ => {
            return Err(ConfigError::new(
                format!("{field}.token_endpoint"),
                "must be https (http only for loopback or with allow_http)",
            ))
        }
    }
    Ok(Endpoint {
        url: url.to_string(),
        client_id: client_id.to_string(),
        secret: read_secret(key, &format!("{field}.client_secret_file"), secret_file)?,
        auth,
        timeout,
        allow_http,
    })
}

impl Credentials {
    /// Builds the credentials for `cfg`, reading and opening the sealed secrets now.
    /// `secret_key` is the result of [`load_secret_key`] (needed only if a secret file is used).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field (two sources on one upstream, an unreadable or
    /// unopenable secret, `client_token` without `allow_client_token`, no signer…).
    pub fn new(
        cfg: &CredentialsConfig,
        secret_key: Option<&[u8; 32]>,
        net: Option<Arc<NetRuntime>>,
        signer: Option<Arc<AssertionSigner>>,
    ) -> Result<Self, ConfigError> {
        let mut upstreams = HashMap::new();
        for (name, u) in &cfg.upstreams {
            let field = format!("credentials.upstreams.{name}");
            let n = [
                u.header.is_some(),
                u.client_credentials.is_some(),
                u.token_exchange.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n > 1 {
                return Err(ConfigError::new(
                    &field,
                    "give at most one of header, client_credentials, token_exchange",
                ));
            }
            let need_key = || {
                secret_key.ok_or_else(|| {
                    ConfigError::new(
                        "credentials.secret_key_file",
                        "a sealed secret is used but no secret key is loaded",
                    )
                })
            };
            let needs_net = u.client_credentials.is_some() || u.token_exchange.is_some();
            if needs_net && net.is_none() {
                return Err(ConfigError::new(
                    &field,
                    "token endpoints need the network thread",
                ));
            }
            let source = if let Some(h) = &u.header {
                let value = read_secret(
                    need_key()?,
                    &format!("{field}.header.secret_file"),
                    &h.secret_file,
                )?;
                if h.name.is_empty() || h.name.eq_ignore_ascii_case("host") {
                    return Err(ConfigError::new(
                        format!("{field}.header.name"),
                        "not allowed",
                    ));
                }
                Source::Static(
                    Arc::from(h.name.as_str()),
                    Arc::from(format!("{}{}", h.prefix, value.trim_end())),
                )
            } else if let Some(c) = &u.client_credentials {
                let f = format!("{field}.client_credentials");
                let ep = endpoint(
                    &f,
                    need_key()?,
                    &c.token_endpoint,
                    &c.client_id,
                    &c.client_secret_file,
                    c.auth_method,
                    c.timeout.get(),
                    c.allow_http,
                )?;
                let mut form = vec![("grant_type".to_string(), "client_credentials".to_string())];
                for (k, v) in [
                    ("scope", &c.scope),
                    ("resource", &c.resource),
                    ("audience", &c.audience),
                ] {
                    if let Some(v) = v {
                        form.push((k.to_string(), v.clone()));
                    }
                }
                Source::ClientCredentials {
                    ep: Arc::new(ep),
                    form: Arc::new(form),
                    slot: Arc::default(),
                }
            } else if let Some(x) = &u.token_exchange {
                let f = format!("{field}.token_exchange");
                if x.subject == Subject::ClientToken && !x.allow_client_token {
                    return Err(ConfigError::new(
                        format!("{f}.subject"),
                        "client_token hands the client's token to the token endpoint; set allow_client_token: true to accept that",
                    ));
                }
                if x.subject == Subject::Assertion && signer.is_none() {
                    return Err(ConfigError::new(
                        format!("{f}.subject"),
                        "the assertion subject needs `assertion:` configured",
                    ));
                }
                let ep = endpoint(
                    &f,
                    need_key()?,
                    &x.token_endpoint,
                    &x.client_id,
                    &x.client_secret_file,
                    x.auth_method,
                    x.timeout.get(),
                    x.allow_http,
                )?;
                Source::Exchange {
                    ep: Arc::new(ep),
                    cfg: Box::new(x.clone()),
                    slots: DashMap::new(),
                }
            } else {
                Source::None
            };
            if u.assertion.is_some() && signer.is_none() {
                return Err(ConfigError::new(
                    format!("{field}.assertion"),
                    "needs `assertion:` (the hub's signing key) configured",
                ));
            }
            upstreams.insert(
                name.clone(),
                Upstream {
                    source,
                    assertion_audience: u
                        .assertion
                        .as_ref()
                        .map(|a| a.audience.clone().unwrap_or_else(|| name.clone())),
                },
            );
        }
        Ok(Credentials {
            upstreams,
            net,
            signer,
        })
    }

    /// The header pairs to add to a request to `upstream` on behalf of `principal`.
    /// `client_token` is the client's validated bearer token, used only by an exchange with
    /// `subject: client_token`. Awaits only when a token must be fetched (runtime-agnostic).
    ///
    /// # Errors
    /// [`CredentialError`]; the hub fails the call (never forwards without credentials).
    pub async fn headers(
        &self,
        upstream: &str,
        principal: &Principal,
        client_token: Option<&str>,
    ) -> Result<Vec<(Arc<str>, Arc<str>)>, CredentialError> {
        let Some(u) = self.upstreams.get(upstream) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(2);
        match &u.source {
            Source::None => {}
            Source::Static(n, v) => out.push((n.clone(), v.clone())),
            Source::ClientCredentials { ep, form, slot } => {
                let form = form.clone();
                let t = self
                    .token(slot, ep.clone(), move || form.as_ref().clone())
                    .await?;
                out.push((Arc::from("Authorization"), Arc::from(format!("Bearer {t}"))));
            }
            Source::Exchange { ep, cfg, slots } => {
                let subject = match cfg.subject {
                    Subject::Assertion => {
                        let s = self.signer.as_ref().ok_or_else(|| {
                            CredentialError::Assertion("no assertion signer".into())
                        })?;
                        (
                            s.assertion(principal, &ep.url)
                                .map_err(|e| CredentialError::Assertion(e.to_string()))?
                                .to_string(),
                            "urn:ietf:params:oauth:token-type:jwt",
                        )
                    }
                    Subject::ClientToken => (
                        client_token
                            .ok_or(CredentialError::NoClientToken)?
                            .to_string(),
                        "urn:ietf:params:oauth:token-type:access_token",
                    ),
                };
                let slot = slots.entry(principal.id.clone()).or_default().clone();
                if slots.len() > 100_000 {
                    slots.clear();
                }
                let cfg = cfg.as_ref().clone();
                let t = self
                    .token(&slot, ep.clone(), move || {
                        let mut f = vec![
                            (
                                "grant_type".to_string(),
                                "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
                            ),
                            ("subject_token".to_string(), subject.0),
                            ("subject_token_type".to_string(), subject.1.to_string()),
                            (
                                "requested_token_type".to_string(),
                                cfg.requested_token_type.clone().unwrap_or_else(|| {
                                    "urn:ietf:params:oauth:token-type:access_token".into()
                                }),
                            ),
                        ];
                        for (k, v) in [
                            ("audience", &cfg.audience),
                            ("resource", &cfg.resource),
                            ("scope", &cfg.scope),
                        ] {
                            if let Some(v) = v {
                                f.push((k.to_string(), v.clone()));
                            }
                        }
                        f
                    })
                    .await?;
                out.push((Arc::from("Authorization"), Arc::from(format!("Bearer {t}"))));
            }
        }
        if let (Some(aud), Some(s)) = (&u.assertion_audience, &self.signer) {
            out.push(
                s.header_pair(principal, aud)
                    .map_err(|e| CredentialError::Assertion(e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn token(
        &self,
        slot: &Arc<Mutex<Slot>>,
        ep: Arc<Endpoint>,
        form: impl FnOnce() -> Vec<(String, String)>,
    ) -> Result<Arc<str>, CredentialError> {
        let rx = {
            let mut s = slot.lock();
            if let Some(t) = &s.token {
                if Instant::now() < t.refresh_at {
                    return Ok(t.value.clone());
                }
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.push(tx);
            if !s.in_flight {
                s.in_flight = true;
                let net = self.net.clone().ok_or(CredentialError::Stopped)?;
                let slot = slot.clone();
                let form = form();
                let n2 = net.clone();
                net.spawn(async move {
                    let res = fetch_token(&n2, &ep, &form).await;
                    let mut s = slot.lock();
                    s.in_flight = false;
                    let answer = match res {
                        Ok((value, lifetime)) => {
                            let margin = (lifetime / 4).min(Duration::from_secs(30));
                            s.token = Some(Token {
                                value: value.clone(),
                                refresh_at: Instant::now() + lifetime - margin,
                            });
                            Ok(value)
                        }
                        Err(e) => Err(e),
                    };
                    for w in s.waiters.drain(..) {
                        let _ = w.send(answer.clone());
                    }
                });
            }
            rx
        };
        rx.await.map_err(|_| CredentialError::Stopped)?
    }
}

async fn fetch_token(
    net: &NetRuntime,
    ep: &Endpoint,
    form: &[(String, String)],
) -> Result<(Arc<str>, Duration), CredentialError> {
    let err = |why: String| CredentialError::TokenEndpoint {
        endpoint: ep.url.clone(),
        why,
    };
    let mut pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut headers = Vec::new();
    match ep.auth {
        ClientAuth::Basic => {
            let cred = format!(
                "{}:{}",
                crate::net::form_encode(&[("", &ep.client_id)]).trim_start_matches('='),
                crate::net::form_encode(&[("", &ep.secret)]).trim_start_matches('=')
            );
            headers.push((
                "authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(cred)
                ),
            ));
        }
        ClientAuth::Post => {
            pairs.push(("client_id", &ep.client_id));
            pairs.push(("client_secret", &ep.secret));
        }
    }
    let r = net
        .post_form(&ep.url, ep.allow_http, ep.timeout, &pairs, &headers)
        .await
        .map_err(|e| err(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|_| err(format!("HTTP {}: not JSON", r.status)))?;
    if r.status != 200 {
        let e = v.get("error").and_then(|e| e.as_str()).unwrap_or("error");
        let d = v
            .get("error_description")
            .and_then(|e| e.as_str())
            .unwrap_or("");
        return Err(err(format!("HTTP {}: {e} {d}", r.status)
            .trim_end()
            .to_string()));
    }
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err("no access_token in the response".into()))?;
    let lifetime = v
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .unwrap_or(300)
        .clamp(1, 86_400);
    Ok((Arc::from(token), Duration::from_secs(lifetime)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_roundtrip_and_detect_tampering() {
        let key = [7u8; 32];
        let sealed = seal_secret(&key, b"s3cret-token");
        assert!(sealed.starts_with("meshgate-secret:v1:"));
        assert_eq!(open_secret(&key, &sealed).unwrap(), b"s3cret-token");
        assert!(open_secret(&[8u8; 32], &sealed).is_err());
        let mut bytes = sealed.trim().to_string().into_bytes();
        let n = bytes.len();
        bytes[n - 3] = if bytes[n - 3] == b'A' { b'B' } else { b'A' };
        assert!(open_secret(&key, std::str::from_utf8(&bytes).unwrap()).is_err());
        assert!(open_secret(&key, "plain").is_err());
    }

    #[test]
    fn static_header_and_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let key = [1u8; 32];
        let f = dir.path().join("pay.sealed");
        std::fs::write(&f, seal_secret(&key, b"abc\n")).unwrap();
        let cfg: CredentialsConfig = serde_json::from_value(serde_json::json!({
            "upstreams": {"payments": {"header": {"name": "Authorization", "prefix": "Bearer ",
                                                   "secret_file": f}}}
        }))
        .unwrap();
        let c = Credentials::new(&cfg, Some(&key), None, None).unwrap();
        let h = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(c.headers("payments", &Principal::anonymous(), Some("client-token")))
            .unwrap();
        assert_eq!(
            h,
            vec![(Arc::from("Authorization"), Arc::from("Bearer abc"))]
        );
        assert!(!h.iter().any(|(_, v)| v.contains("client-token")));
        // Wrong key: the field is named.
        let e = Credentials::new(&cfg, Some(&[2u8; 32]), None, None).unwrap_err();
        assert_eq!(e.field, "credentials.upstreams.payments.header.secret_file");
        let cfg: CredentialsConfig = serde_json::from_value(serde_json::json!({
            "upstreams": {"x": {"token_exchange": {"token_endpoint": "https://as/token",
                "client_id": "hub", "client_secret_file": f, "subject": "client_token"}}}
        }))
        .unwrap();
        let net = NetRuntime::start(None).unwrap();
        let e = Credentials::new(&cfg, Some(&key), Some(net), None).unwrap_err();
        assert!(e.message.contains("allow_client_token"), "{e}");
    }

    #[test]
    fn secret_key_sources() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(
            &p,
            base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_secret_key(Some(&p)).unwrap_err().0.contains("chmod"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_secret_key(Some(&p)).unwrap(), [3u8; 32]);
    }
}
