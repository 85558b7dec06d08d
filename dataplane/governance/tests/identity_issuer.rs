//! The identity module against the real test issuer over loopback: JWKS discovery and fetch,
//! kid rotation → refresh, the refresh rate limit, and every bad-token class.
// Test code: unwraps are assertions, and the stand-in servers run on plain tokio threads.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use governance::identity::{AuthConfig, AuthError, Authenticator};
use governance::net::NetRuntime;
use support::Issuer;

const RES: &str = "http://127.0.0.1:1/mcp";

fn authenticator(iss: &Issuer, extra: serde_json::Value) -> Authenticator {
    let mut jwt = serde_json::json!({"issuer": iss.url, "roles_claim": "roles"});
    if let serde_json::Value::Object(e) = extra {
        jwt.as_object_mut().unwrap().extend(e);
    }
    let cfg: AuthConfig =
        serde_json::from_value(serde_json::json!({"resource": RES, "jwt": jwt})).unwrap();
    let a = Authenticator::new(&cfg, Some(NetRuntime::start(None).unwrap())).unwrap();
    a.wait_ready(Duration::from_secs(20)).expect("JWKS loaded");
    a
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn auth(a: &Authenticator, token: &str) -> Result<governance::Principal, AuthError> {
    let h = format!("Bearer {token}");
    block_on(a.authenticate(Some(h.as_bytes())))
}

#[test]
fn a_good_token_yields_the_principal_and_is_cached() {
    let iss = Issuer::start(&["--audience", RES]);
    let a = authenticator(&iss, serde_json::json!({}));
    let tok = iss.mint("sub=alice&roles=ops,admin&scope=mcp:tools%20docs:read");
    let p = auth(&a, &tok).unwrap();
    assert_eq!(p.binding(), format!("jwt:{}#alice", iss.url));
    assert!(p.has_role("ops") && p.has_role("admin"));
    assert!(p.has_scope("docs:read"));
    assert_eq!(a.stats().verifications.load(Ordering::Relaxed), 1);
    // Repeated: a cache hit, no second signature check, also on the sync fast path.
    let h = format!("Bearer {tok}");
    assert_eq!(
        a.authenticate_cached(Some(h.as_bytes())).unwrap().unwrap(),
        p
    );
    assert_eq!(a.stats().verifications.load(Ordering::Relaxed), 1);
    assert_eq!(a.stats().cache_hits.load(Ordering::Relaxed), 1);
    // Discovery went through the RFC 8414 metadata, then one JWKS fetch.
    assert_eq!(iss.stats()["jwks_fetches"], 1);
}

#[test]
fn every_bad_token_class_is_classified() {
    let iss = Issuer::start(&["--audience", RES]);
    let a = authenticator(&iss, serde_json::json!({"unknown_kid_min_interval": "0s"}));
    let cases: Vec<(&str, AuthError)> = vec![
        ("exp_in=-120", AuthError::Expired),
        ("nbf_in=600", AuthError::NotYetValid),
        (
            "aud=https://other.example.com/mcp",
            AuthError::WrongAudience,
        ),
        ("iss=https://evil.example.com", AuthError::WrongIssuer),
        (
            "kid=no-such-key",
            AuthError::UnknownKid("no-such-key".into()),
        ),
        ("alg=none", AuthError::DisallowedAlg("none".into())),
        ("alg=HS256", AuthError::DisallowedAlg("HS256".into())),
        ("pad=20000", AuthError::TooLarge { len: 0, max: 8192 }),
    ];
    for (q, want) in cases {
        let tok = iss.mint(q);
        let got = auth(&a, &tok).unwrap_err();
        match (&got, &want) {
            (AuthError::TooLarge { max, .. }, AuthError::TooLarge { .. }) => {
                assert_eq!(*max, 8192);
                assert_eq!(got.status(), 431);
            }
            _ => assert_eq!(got, want, "{q}"),
        }
        if !matches!(got, AuthError::TooLarge { .. }) {
            assert_eq!(got.status(), 401, "{q}");
            let ch = a.challenge_401(&got);
            assert!(ch.starts_with("Bearer resource_metadata=\"http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp\""), "{ch}");
            assert!(ch.contains("error=\"invalid_token\""), "{ch}");
        }
    }
    // A changed signature byte.
    let tok = iss.mint("sub=bob");
    let mut b = tok.into_bytes();
    let n = b.len();
    b[n - 5] = if b[n - 5] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        auth(&a, std::str::from_utf8(&b).unwrap()).unwrap_err(),
        AuthError::InvalidSignature
    );
    // A changed claim (payload swapped from another token, signature kept).
    let t1 = iss.mint("sub=bob");
    let t2 = iss.mint("sub=mallory");
    let p: Vec<&str> = t1.split('.').collect();
    let q: Vec<&str> = t2.split('.').collect();
    let forged = format!("{}.{}.{}", p[0], q[1], p[2]);
    assert_eq!(auth(&a, &forged).unwrap_err(), AuthError::InvalidSignature);
    // Garbage.
    assert!(matches!(
        auth(&a, "e30.e30").unwrap_err(),
        AuthError::Malformed(_)
    ));
    assert!(matches!(
        block_on(a.authenticate(Some(b"Bearer \x01\x02"))).unwrap_err(),
        AuthError::Malformed(_)
    ));
    let huge = format!("Bearer {}", "a".repeat(10 << 20));
    assert_eq!(
        block_on(a.authenticate(Some(huge.as_bytes())))
            .unwrap_err()
            .status(),
        431
    );
    // Still healthy afterwards.
    assert!(auth(&a, &iss.mint("sub=carol")).is_ok());
}

#[test]
fn rotation_refreshes_the_jwks_and_a_dropped_key_stops_verifying() {
    let iss = Issuer::start(&["--audience", RES]);
    let a = authenticator(&iss, serde_json::json!({"unknown_kid_min_interval": "0s"}));
    let old = iss.mint("sub=alice");
    assert!(auth(&a, &old).is_ok());
    let (s, _) = iss.call("POST", "/admin/rotate?drop_old=1&alg=ES256");
    assert_eq!(s, 200);
    let new = iss.mint("sub=alice");
    // Awaited on a monoio runtime (what the hub workers run): the only await is a watch change.
    let a2 = a.clone();
    let h = format!("Bearer {new}");
    let res = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .build()
        .unwrap()
        .block_on(async move { a2.authenticate(Some(h.as_bytes())).await });
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(iss.stats()["jwks_fetches"], 2);
    // The old key was withdrawn: its token is no longer accepted, even though it was cached.
    assert!(matches!(
        auth(&a, &old).unwrap_err(),
        AuthError::UnknownKid(_)
    ));
}

#[test]
fn random_kids_cannot_hammer_the_issuer() {
    let iss = Issuer::start(&["--audience", RES]);
    let a = Arc::new(authenticator(
        &iss,
        serde_json::json!({"unknown_kid_min_interval": "1h"}),
    ));
    for i in 0..50 {
        let tok = iss.mint(&format!("kid=random-{i}"));
        assert!(matches!(
            auth(&a, &tok).unwrap_err(),
            AuthError::UnknownKid(_)
        ));
    }
    // The start-up fetch plus at most one refresh.
    let fetches = iss.stats()["jwks_fetches"].as_u64().unwrap();
    assert!(fetches <= 2, "{fetches} JWKS fetches");
    assert!(a.stats().refresh_suppressed.load(Ordering::Relaxed) >= 49);
}

#[test]
fn allowed_algorithms_are_enforced_per_key_type() {
    let iss = Issuer::start(&["--audience", RES, "--alg", "ES256"]);
    let a = authenticator(&iss, serde_json::json!({}));
    assert!(
        auth(&a, &iss.mint("sub=alice")).is_ok(),
        "ES256 is allowed by default"
    );
    let strict = authenticator(&iss, serde_json::json!({"algorithms": ["EdDSA"]}));
    assert_eq!(
        auth(&strict, &iss.mint("sub=alice")).unwrap_err(),
        AuthError::DisallowedAlg("ES256".into())
    );
}

#[test]
fn an_unreachable_issuer_is_reported_not_hung() {
    // Nothing listens on port 1; the fetch fails fast and authentication says why (503).
    let cfg: AuthConfig = serde_json::from_value(serde_json::json!({"resource": RES,
        "jwt": {"issuer": "http://127.0.0.1:1", "http_timeout": "2s", "unknown_kid_min_interval": "0s"}}))
    .unwrap();
    let a = Authenticator::new(&cfg, Some(NetRuntime::start(None).unwrap())).unwrap();
    assert!(a.wait_ready(Duration::from_secs(5)).is_err());
    let tok = "eyJhbGciOiJFZERTQSIsImtpZCI6IngifQ.e30.c2ln";
    let e = auth(&a, tok).unwrap_err();
    assert_eq!(e.status(), 503, "{e}");
}
