//! Upstream credentials against the real test issuer: client credentials and RFC 8693 token
//! exchange (assertion subject and, when allowed, the client's token), cached until near
//! expiry, one fetch for many concurrent callers, and the client's token never sent upstream.

// Test code: unwraps are assertions.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::sync::Arc;

use base64::Engine;
use governance::assertion::{AssertionConfig, AssertionSigner};
use governance::credentials::{seal_secret, CredentialError, Credentials, CredentialsConfig};
use governance::net::NetRuntime;
use governance::Principal;
use serde_json::{json, Value};
use support::Issuer;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn payload(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

fn bearer(h: &[(Arc<str>, Arc<str>)]) -> String {
    h.iter()
        .find(|(n, _)| &**n == "Authorization")
        .map(|(_, v)| v.strip_prefix("Bearer ").unwrap().to_string())
        .expect("an Authorization header")
}

struct Setup {
    iss: Issuer,
    creds: Arc<Credentials>,
    _dir: tempfile::TempDir,
}

fn setup(secret: &str) -> Setup {
    let iss = Issuer::start(&["--client", "hub:hub-secret"]);
    let dir = tempfile::tempdir().unwrap();
    let key = [9u8; 32];
    let secret_file = dir.path().join("hub.sealed");
    std::fs::write(&secret_file, seal_secret(&key, secret.as_bytes())).unwrap();
    let signer = AssertionSigner::new(
        &AssertionConfig {
            key_file: "unused".into(),
            issuer: "https://gw.example.com".into(),
            ttl: governance::config::ConfigDuration::secs(120),
            header: "X-Meshgate-Assertion".into(),
            kid: None,
        },
        &governance::keys::generate_signing_key(),
    )
    .unwrap();
    let token = format!("{}/token", iss.url);
    let cfg: CredentialsConfig = serde_json::from_value(json!({"upstreams": {
        "crm": {"client_credentials": {"token_endpoint": token, "client_id": "hub",
                 "client_secret_file": secret_file, "resource": "https://crm.internal/mcp",
                 "scope": "crm:read"},
                "assertion": {}},
        "docs": {"token_exchange": {"token_endpoint": token, "client_id": "hub",
                 "client_secret_file": secret_file, "audience": "https://docs.internal/mcp"}},
        "legacy": {"token_exchange": {"token_endpoint": token, "client_id": "hub",
                 "client_secret_file": secret_file, "auth_method": "post",
                 "subject": "client_token", "allow_client_token": true,
                 "audience": "https://legacy.internal/mcp"}}
    }}))
    .unwrap();
    let creds = Credentials::new(
        &cfg,
        Some(&key),
        Some(NetRuntime::start(None).unwrap()),
        Some(Arc::new(signer)),
    )
    .unwrap();
    Setup {
        iss,
        creds: Arc::new(creds),
        _dir: dir,
    }
}

fn user(sub: &str) -> Principal {
    Principal::jwt("https://idp.example.com", sub, ["ops"], ["mcp:tools"], None)
}

#[test]
fn client_credentials_are_cached_and_the_client_token_never_goes_upstream() {
    let s = setup("hub-secret");
    let alice = user("alice");
    let h = block_on(s.creds.headers("crm", &alice, Some("CLIENT-TOKEN"))).unwrap();
    assert!(h.iter().all(|(_, v)| !v.contains("CLIENT-TOKEN")));
    let t = bearer(&h);
    let c = payload(&t);
    assert_eq!(c["sub"], "hub");
    assert_eq!(c["aud"], "https://crm.internal/mcp");
    assert_eq!(c["scope"], "crm:read");
    let assertion = h
        .iter()
        .find(|(n, _)| &**n == "X-Meshgate-Assertion")
        .map(|(_, v)| v.to_string())
        .unwrap();
    assert_eq!(payload(&assertion)["sub"], "alice");
    assert_eq!(payload(&assertion)["aud"], "crm");
    let issued = s.iss.stats()["tokens"].as_u64().unwrap();
    // Again, and for another user: the one client-credentials token is reused.
    let h2 = block_on(s.creds.headers("crm", &user("bob"), None)).unwrap();
    assert_eq!(bearer(&h2), t);
    assert_eq!(s.iss.stats()["tokens"].as_u64().unwrap(), issued);
}

#[test]
fn token_exchange_is_per_principal_and_single_flight() {
    let s = setup("hub-secret");
    let alice = user("alice");
    let t1 = bearer(&block_on(s.creds.headers("docs", &alice, None)).unwrap());
    let c = payload(&t1);
    assert_eq!(
        c["sub"], "alice",
        "the subject came from the hub-signed assertion"
    );
    assert_eq!(c["act"]["sub"], "hub");
    assert_eq!(c["aud"], "https://docs.internal/mcp");
    assert_eq!(
        c["subject_token_type"],
        "urn:ietf:params:oauth:token-type:jwt"
    );
    let t2 = bearer(&block_on(s.creds.headers("docs", &alice, None)).unwrap());
    assert_eq!(t1, t2, "cached");
    let tb = bearer(&block_on(s.creds.headers("docs", &user("bob"), None)).unwrap());
    assert_ne!(t1, tb);
    assert_eq!(payload(&tb)["sub"], "bob");
    // Eight concurrent callers for a new principal: one token request.
    let before = s.iss.stats()["tokens"].as_u64().unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let creds = s.creds.clone();
            std::thread::spawn(move || {
                bearer(&block_on(creds.headers("docs", &user("carol"), None)).unwrap())
            })
        })
        .collect();
    let got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(got.iter().all(|t| *t == got[0]));
    assert_eq!(s.iss.stats()["tokens"].as_u64().unwrap(), before + 1);
}

#[test]
fn exchange_with_the_client_token_only_when_allowed_and_errors_are_clear() {
    let s = setup("hub-secret");
    let client_token = s.iss.mint("sub=dave&aud=https://gw.example.com/mcp");
    let t = bearer(
        &block_on(
            s.creds
                .headers("legacy", &user("dave"), Some(&client_token)),
        )
        .unwrap(),
    );
    assert_ne!(t, client_token, "a new token, not the client's");
    assert_eq!(payload(&t)["sub"], "dave");
    assert_eq!(
        block_on(s.creds.headers("legacy", &user("erin"), None)).unwrap_err(),
        CredentialError::NoClientToken
    );
    // An upstream without credentials gets nothing (and certainly not the client's token).
    assert!(block_on(s.creds.headers("plain", &user("x"), Some("T")))
        .unwrap()
        .is_empty());
    // A wrong client secret: the endpoint's refusal is reported with its error code.
    let bad = setup("wrong-secret");
    match block_on(bad.creds.headers("crm", &user("alice"), None)).unwrap_err() {
        CredentialError::TokenEndpoint { why, .. } => {
            assert!(why.contains("invalid_client"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
