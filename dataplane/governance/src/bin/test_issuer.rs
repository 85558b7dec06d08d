//! `meshgate-test-issuer` — a small, real OAuth 2.1 authorization server **for tests only**.
//!
//! It exists so the hub's identity stage and the official MCP SDK client can be tested end to
//! end over loopback without an external identity provider. It is not a production server:
//! it auto-approves every authorization request (no login, no consent), keeps everything in
//! memory, trusts subject tokens of a token exchange without verifying them, and mints
//! deliberately bad tokens on request. Never expose it.
//!
//! Serves:
//! - RFC 8414 metadata at `/.well-known/oauth-authorization-server` (and the OIDC path);
//! - the JWKS at `/jwks` (Ed25519 by default, `--alg ES256` for P-256);
//! - `/authorize` (authorization code + PKCE S256; redirects at once with `code`, `state`, `iss`);
//! - `/token` (`authorization_code`, `client_credentials`, RFC 8693 token exchange);
//! - `/register` (RFC 7591 dynamic client registration);
//! - `/admin/mint?…` — a token with chosen claims, including bad ones:
//!   `sub`, `aud`, `iss`, `exp_in` (seconds, may be negative), `nbf_in`, `roles`, `scope`,
//!   `kid` (e.g. an unknown one), `alg` (`none`, `HS256`, or the key's), `pad` (bytes of filler);
//! - `POST /admin/rotate[?alg=ES256][&drop_old=1]` — a new signing key becomes current;
//! - `/admin/stats` — JWKS fetches and tokens issued.
//!
//! Prints `LISTENING http://127.0.0.1:PORT` on stdout when ready.

// A plain tokio program (not a hub worker): the dataplane's monoio-only bans do not apply.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use governance::net::parse_form;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Parser, Debug)]
#[command(about = "Test-only OAuth authorization server (auto-approves; never expose it)")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Algorithm of the first signing key: EdDSA or ES256.
    #[arg(long, default_value = "EdDSA")]
    alg: String,
    /// Subject of users approved at /authorize.
    #[arg(long, default_value = "alice")]
    subject: String,
    /// Roles put in user tokens (comma-separated).
    #[arg(long, default_value = "")]
    roles: String,
    /// Audience when the client sends no `resource`.
    #[arg(long, default_value = "")]
    audience: String,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    ttl: i64,
    /// Pre-registered confidential clients, `id:secret` (repeatable).
    #[arg(long)]
    client: Vec<String>,
    /// Scopes advertised in the metadata (comma-separated).
    #[arg(long, default_value = "mcp:tools")]
    scopes: String,
}

struct SigningKeyEntry {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

struct Client {
    secret: Option<String>,
    redirect_uris: Vec<String>,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    resource: Option<String>,
}

struct State {
    issuer: String,
    args: Args,
    keys: Mutex<Vec<SigningKeyEntry>>,
    clients: Mutex<HashMap<String, Client>>,
    codes: Mutex<HashMap<String, Grant>>,
    jwks_fetches: AtomicU64,
    tokens: AtomicU64,
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn random(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b64(&b)
}

fn now() -> i64 {
    governance::config::unix_now() as i64
}

fn new_key(alg: &str) -> Result<SigningKeyEntry, String> {
    let kid = random(9);
    match alg {
        "EdDSA" => {
            let sk = governance::keys::generate_signing_key();
            let der = sk.to_pkcs8_der().map_err(|e| e.to_string())?;
            Ok(SigningKeyEntry {
                jwk: json!({"kty":"OKP","crv":"Ed25519","x":b64(sk.verifying_key().as_bytes()),
                            "kid":kid,"alg":"EdDSA","use":"sig"}),
                kid,
                alg: Algorithm::EdDSA,
                key: EncodingKey::from_ed_der(der.as_bytes()),
            })
        }
        "ES256" => {
            use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
            let rng = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|e| e.to_string())?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(|e| e.to_string())?;
            let point = pair.public_key().as_ref();
            Ok(SigningKeyEntry {
                jwk: json!({"kty":"EC","crv":"P-256","x":b64(&point[1..33]),"y":b64(&point[33..65]),
                            "kid":kid,"alg":"ES256","use":"sig"}),
                kid,
                alg: Algorithm::ES256,
                key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            })
        }
        other => Err(format!("unsupported alg {other}")),
    }
}

fn reply(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .header("access-control-allow-origin", "*")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", v.to_string())
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<Full<Bytes>> {
    json_reply(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

impl State {
    fn metadata(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "registration_endpoint": format!("{i}/register"),
            "jwks_uri": format!("{i}/jwks"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "client_credentials",
                                      "urn:ietf:params:oauth:grant-type:token-exchange"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": self.args.scopes.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Signs `claims` with the current key (or as told by `alg`/`kid` overrides).
    fn sign(&self, claims: &Value, alg: Option<&str>, kid: Option<&str>) -> Result<String, String> {
        let keys = self.keys.lock();
        let cur = keys.last().ok_or("no key")?;
        match alg {
            Some("none") => {
                let h = b64(br#"{"alg":"none","typ":"JWT"}"#);
                let p = b64(claims.to_string().as_bytes());
                Ok(format!("{h}.{p}."))
            }
            Some("HS256") => {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(kid.unwrap_or(&cur.kid).to_string());
                jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(b"test-shared-secret"))
                    .map_err(|e| e.to_string())
            }
            _ => {
                let mut h = Header::new(cur.alg);
                h.kid = Some(kid.unwrap_or(&cur.kid).to_string());
                h.typ = Some("JWT".into());
                jsonwebtoken::encode(&h, claims, &cur.key).map_err(|e| e.to_string())
            }
        }
    }

    fn access_token(
        &self,
        sub: &str,
        aud: &str,
        scope: &str,
        extra: Value,
    ) -> Result<Value, String> {
        let t = now();
        let mut claims = json!({
            "iss": self.issuer, "sub": sub, "aud": aud, "iat": t, "nbf": t,
            "exp": t + self.args.ttl, "jti": random(12), "scope": scope,
            "roles": self.args.roles.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        });
        if let (Value::Object(c), Value::Object(e)) = (&mut claims, extra) {
            c.extend(e);
        }
        let token = self.sign(&claims, None, None)?;
        self.tokens.fetch_add(1, Ordering::Relaxed);
        Ok(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": self.args.ttl, "scope": scope}),
        )
    }

    fn client_auth(
        &self,
        req_auth: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<String, &'static str> {
        let (id, secret) = match req_auth.and_then(|h| h.strip_prefix("Basic ")) {
            Some(b) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|_| "bad basic auth")?;
                let s = String::from_utf8(raw).map_err(|_| "bad basic auth")?;
                let (i, p) = s.split_once(':').ok_or("bad basic auth")?;
                (
                    governance::net::form_decode(i),
                    Some(governance::net::form_decode(p)),
                )
            }
            None => (
                form.get("client_id").cloned().ok_or("no client_id")?,
                form.get("client_secret").cloned(),
            ),
        };
        let clients = self.clients.lock();
        let c = clients.get(&id).ok_or("unknown client")?;
        match (&c.secret, secret) {
            (None, _) => Ok(id),
            (Some(s), Some(p)) if *s == p => Ok(id),
            _ => Err("bad client secret"),
        }
    }
}

async fn handle(
    st: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let query: HashMap<String, String> = parse_form(req.uri().query().unwrap_or(""))
        .into_iter()
        .collect();
    let method = req.method().clone();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "body too large",
            ))
        }
    };
    let r = match (method.as_str(), path.as_str()) {
        ("GET", "/.well-known/oauth-authorization-server")
        | ("GET", "/.well-known/openid-configuration") => {
            json_reply(StatusCode::OK, &st.metadata())
        }
        ("GET", "/jwks") => {
            st.jwks_fetches.fetch_add(1, Ordering::Relaxed);
            let keys: Vec<Value> = st.keys.lock().iter().map(|k| k.jwk.clone()).collect();
            json_reply(StatusCode::OK, &json!({"keys": keys}))
        }
        ("POST", "/register") => {
            let v: Value = match serde_json::from_slice(&body) {
                Ok(v) => v,
                Err(_) => {
                    return Ok(oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_client_metadata",
                        "body is not JSON",
                    ))
                }
            };
            let redirect_uris: Vec<String> = v
                .get("redirect_uris")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let method = v
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
                .unwrap_or("client_secret_basic")
                .to_string();
            let id = format!("client-{}", random(9));
            let secret = (method != "none").then(|| random(24));
            st.clients.lock().insert(
                id.clone(),
                Client {
                    secret: secret.clone(),
                    redirect_uris: redirect_uris.clone(),
                },
            );
            let mut out = v.clone();
            if let Value::Object(o) = &mut out {
                o.insert("client_id".into(), json!(id));
                o.insert("client_id_issued_at".into(), json!(now()));
                o.insert("token_endpoint_auth_method".into(), json!(method));
                if let Some(s) = secret {
                    o.insert("client_secret".into(), json!(s));
                    o.insert("client_secret_expires_at".into(), json!(0));
                }
            }
            json_reply(StatusCode::CREATED, &out)
        }
        ("GET", "/authorize") => {
            let get = |k: &str| query.get(k).cloned().unwrap_or_default();
            let client_id = get("client_id");
            let redirect_uri = get("redirect_uri");
            let known = st
                .clients
                .lock()
                .get(&client_id)
                .map(|c| c.redirect_uris.contains(&redirect_uri));
            match known {
                None => reply(StatusCode::BAD_REQUEST, "text/plain", "unknown client_id"),
                Some(false) => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "redirect_uri is not registered",
                ),
                Some(true) if get("response_type") != "code" => reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "response_type must be code",
                ),
                Some(true)
                    if get("code_challenge_method") != "S256"
                        || get("code_challenge").is_empty() =>
                {
                    reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        "PKCE S256 is required",
                    )
                }
                Some(true) => {
                    let code = random(24);
                    st.codes.lock().insert(
                        code.clone(),
                        Grant {
                            client_id,
                            redirect_uri: redirect_uri.clone(),
                            challenge: get("code_challenge"),
                            scope: get("scope"),
                            resource: query.get("resource").cloned(),
                        },
                    );
                    let sep = if redirect_uri.contains('?') { '&' } else { '?' };
                    let loc = format!(
                        "{redirect_uri}{sep}{}",
                        governance::net::form_encode(&[
                            ("code", &code),
                            ("state", &get("state")),
                            ("iss", &st.issuer)
                        ])
                    );
                    Response::builder()
                        .status(StatusCode::FOUND)
                        .header("location", loc)
                        .body(Full::new(Bytes::new()))
                        .expect("valid redirect")
                }
            }
        }
        ("POST", "/token") => {
            let form: HashMap<String, String> =
                parse_form(std::str::from_utf8(&body).unwrap_or(""))
                    .into_iter()
                    .collect();
            let client = match st.client_auth(auth.as_deref(), &form) {
                Ok(c) => c,
                Err(e) => return Ok(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", e)),
            };
            let default_aud = |f: &HashMap<String, String>| {
                f.get("resource")
                    .or_else(|| f.get("audience"))
                    .cloned()
                    .unwrap_or_else(|| st.args.audience.clone())
            };
            match form.get("grant_type").map(String::as_str) {
                Some("authorization_code") => {
                    let code = form.get("code").cloned().unwrap_or_default();
                    let Some(g) = st.codes.lock().remove(&code) else {
                        return Ok(oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "unknown or used code",
                        ));
                    };
                    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
                    if g.client_id != client
                        || form.get("redirect_uri") != Some(&g.redirect_uri)
                        || b64(&Sha256::digest(verifier.as_bytes())) != g.challenge
                    {
                        return Ok(oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_grant",
                            "client, redirect_uri or PKCE verifier mismatch",
                        ));
                    }
                    let aud = form
                        .get("resource")
                        .cloned()
                        .or(g.resource)
                        .unwrap_or_else(|| st.args.audience.clone());
                    match st.access_token(
                        &st.args.subject,
                        &aud,
                        &g.scope,
                        json!({"client_id": client}),
                    ) {
                        Ok(v) => json_reply(StatusCode::OK, &v),
                        Err(e) => {
                            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e)
                        }
                    }
                }
                Some("client_credentials") => {
                    if st
                        .clients
                        .lock()
                        .get(&client)
                        .is_some_and(|c| c.secret.is_none())
                    {
                        return Ok(oauth_error(
                            StatusCode::UNAUTHORIZED,
                            "invalid_client",
                            "public clients cannot use client_credentials",
                        ));
                    }
                    let scope = form.get("scope").cloned().unwrap_or_default();
                    match st.access_token(
                        &client,
                        &default_aud(&form),
                        &scope,
                        json!({"client_id": client}),
                    ) {
                        Ok(v) => json_reply(StatusCode::OK, &v),
                        Err(e) => {
                            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e)
                        }
                    }
                }
                Some("urn:ietf:params:oauth:grant-type:token-exchange") => {
                    // Test-only: the subject token's payload is read, not verified.
                    let subject = form.get("subject_token").cloned().unwrap_or_default();
                    let payload = subject
                        .split('.')
                        .nth(1)
                        .and_then(|p| {
                            base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .decode(p)
                                .ok()
                        })
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                    let Some(sub) = payload
                        .as_ref()
                        .and_then(|p| p.get("sub"))
                        .and_then(Value::as_str)
                    else {
                        return Ok(oauth_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "subject_token is not a JWT with sub",
                        ));
                    };
                    let scope = form.get("scope").cloned().unwrap_or_default();
                    let extra = json!({"act": {"sub": client}, "client_id": client,
                        "subject_token_type": form.get("subject_token_type")});
                    match st.access_token(sub, &default_aud(&form), &scope, extra) {
                        Ok(mut v) => {
                            v["issued_token_type"] =
                                json!("urn:ietf:params:oauth:token-type:access_token");
                            json_reply(StatusCode::OK, &v)
                        }
                        Err(e) => {
                            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e)
                        }
                    }
                }
                _ => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "use authorization_code, client_credentials or token exchange",
                ),
            }
        }
        ("GET", "/admin/mint") => {
            let t = now();
            let num = |k: &str, d: i64| {
                query
                    .get(k)
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(d)
            };
            let mut claims = json!({
                "iss": query.get("iss").cloned().unwrap_or_else(|| st.issuer.clone()),
                "sub": query.get("sub").cloned().unwrap_or_else(|| st.args.subject.clone()),
                "aud": query.get("aud").cloned().unwrap_or_else(|| st.args.audience.clone()),
                "iat": t,
                "nbf": t + num("nbf_in", 0),
                "exp": t + num("exp_in", st.args.ttl),
                "jti": random(12),
            });
            if let Some(r) = query.get("roles") {
                claims["roles"] = json!(r.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>());
            }
            if let Some(s) = query.get("scope") {
                claims["scope"] = json!(s);
            }
            if let Some(n) = query.get("pad").and_then(|v| v.parse::<usize>().ok()) {
                claims["pad"] = json!("x".repeat(n.min(20 << 20)));
            }
            match st.sign(
                &claims,
                query.get("alg").map(String::as_str),
                query.get("kid").map(String::as_str),
            ) {
                Ok(tok) => reply(StatusCode::OK, "text/plain", tok),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e),
            }
        }
        ("POST", "/admin/rotate") => {
            let alg = query.get("alg").cloned().unwrap_or_else(|| "EdDSA".into());
            match new_key(&alg) {
                Ok(k) => {
                    let kid = k.kid.clone();
                    let mut keys = st.keys.lock();
                    if query.contains_key("drop_old") {
                        keys.clear();
                    }
                    keys.push(k);
                    json_reply(StatusCode::OK, &json!({"kid": kid}))
                }
                Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", e),
            }
        }
        ("GET", "/admin/stats") => json_reply(
            StatusCode::OK,
            &json!({"jwks_fetches": st.jwks_fetches.load(Ordering::Relaxed),
                    "tokens": st.tokens.load(Ordering::Relaxed),
                    "kid": st.keys.lock().last().map(|k| k.kid.clone())}),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found"),
    };
    Ok(r)
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut clients = HashMap::new();
        for c in &args.client {
            let (id, secret) = c.split_once(':').ok_or("--client wants id:secret")?;
            clients.insert(
                id.to_string(),
                Client {
                    secret: Some(secret.to_string()),
                    redirect_uris: vec![],
                },
            );
        }
        let first = new_key(&args.alg)?;
        let st = Arc::new(State {
            issuer: format!("http://{addr}"),
            args,
            keys: Mutex::new(vec![first]),
            clients: Mutex::new(clients),
            codes: Mutex::new(HashMap::new()),
            jwks_fetches: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        });
        println!("LISTENING http://{addr}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept: {e}");
                    continue;
                }
            };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(st.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}
