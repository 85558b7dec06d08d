use super::*;

fn cfg(v: serde_json::Value) -> AuthConfig {
    serde_json::from_value(v).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn keyed() -> (Authenticator, String) {
    let key = generate_api_key();
    let a = Authenticator::new(
        &cfg(serde_json::json!({
            "resource": "https://gw.example.com/mcp",
            "scopes_supported": ["mcp:tools"],
            "api_keys": [
                {"name": "ci", "hash": hash_api_key(&key), "roles": ["deployer"]},
                {"name": "other", "hash": hash_api_key("something else")}
            ]
        })),
        None,
    )
    .unwrap();
    (a, key)
}

#[test]
fn auth_none_only_on_loopback() {
    let none = cfg(serde_json::json!("none"));
    assert!(validate(&none, "127.0.0.1:8080".parse().unwrap()).is_ok());
    assert!(validate(&none, "[::1]:8080".parse().unwrap()).is_ok());
    let e = validate(&none, "0.0.0.0:8080".parse().unwrap()).unwrap_err();
    assert_eq!(e.field, "auth");
    assert!(
        e.message.contains("loopback") && e.message.contains("0.0.0.0:8080"),
        "{e}"
    );
    let a = Authenticator::new(&none, None).unwrap();
    let p = a.authenticate_cached(None).unwrap().unwrap();
    assert_eq!(p.binding(), "anonymous");
}

#[test]
fn config_errors_name_the_field() {
    let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
    let bad = |v: serde_json::Value| validate(&cfg(v), any).unwrap_err();
    let jwt = |algs: serde_json::Value| {
        serde_json::json!({"resource": "https://gw/mcp",
            "jwt": {"issuer": "https://idp", "algorithms": algs}})
    };
    assert_eq!(
        bad(jwt(serde_json::json!(["RS256", "none"]))).field,
        "auth.jwt.algorithms[1]"
    );
    let e = bad(jwt(serde_json::json!(["HS256"])));
    assert!(e.message.contains("shared-secret"), "{e}");
    assert_eq!(
        bad(serde_json::json!({"resource": "https://gw/mcp"})).field,
        "auth"
    );
    assert_eq!(
        bad(serde_json::json!({"resource": "https://GW/mcp", "api_keys": []})).field,
        "auth.resource"
    );
    assert_eq!(
        bad(serde_json::json!({"resource": "https://gw/mcp",
            "jwt": {"issuer": "http://idp.example.com"}}))
        .field,
        "auth.jwt.issuer"
    );
    assert_eq!(
        bad(serde_json::json!({"resource": "https://gw/mcp",
            "api_keys": [{"name": "a", "hash": "md5:00"}]}))
        .field,
        "auth.api_keys[0].hash"
    );
    let e = serde_json::from_value::<AuthConfig>(serde_json::json!({"resource": "x", "jwks": 1}))
        .unwrap_err();
    assert!(e.to_string().contains("unknown field `jwks`"), "{e}");
    let e = serde_json::from_value::<AuthConfig>(serde_json::json!("nothing")).unwrap_err();
    assert!(e.to_string().contains("none"), "{e}");
}

#[test]
fn api_keys_authenticate_and_cache() {
    let (a, key) = keyed();
    let h = format!("Bearer {key}");
    let p = a.authenticate_cached(Some(h.as_bytes())).unwrap().unwrap();
    assert_eq!(p.binding(), "key:ci");
    assert!(p.has_role("deployer"));
    let p2 = block_on(a.authenticate(Some(h.as_bytes()))).unwrap();
    assert_eq!(p2, p);
    assert_eq!(a.stats().cache_hits.load(Ordering::Relaxed), 1);
    // Scheme is case-insensitive.
    let h = format!("bearer {key}");
    assert!(a.authenticate_cached(Some(h.as_bytes())).unwrap().is_ok());
    let wrong = format!("Bearer {}", generate_api_key());
    assert_eq!(
        a.authenticate_cached(Some(wrong.as_bytes())).unwrap(),
        Err(AuthError::UnknownApiKey)
    );
}

#[test]
fn bad_headers_are_classified() {
    let (a, _) = keyed();
    let check = |h: Option<&[u8]>| a.authenticate_cached(h).unwrap().unwrap_err();
    assert_eq!(check(None), AuthError::Missing);
    assert_eq!(check(None).status(), 401);
    assert!(matches!(check(Some(b"Basic abc")), AuthError::Malformed(_)));
    assert!(matches!(check(Some(b"Bearer ")), AuthError::Malformed(_)));
    assert!(matches!(
        check(Some(b"Bearer a b")),
        AuthError::Malformed(_)
    ));
    assert!(matches!(
        check(Some(b"Bearer \xff\xfe")),
        AuthError::Malformed(_)
    ));
    let huge = format!("Bearer {}", "a".repeat(10 << 20));
    let e = check(Some(huge.as_bytes()));
    assert!(matches!(e, AuthError::TooLarge { max: 8192, .. }));
    assert_eq!(e.status(), 431);
    // A JWT-shaped token without JWT config is tried as an API key.
    assert_eq!(check(Some(b"Bearer a.b.c")), AuthError::UnknownApiKey);
}

#[test]
fn challenges_and_metadata() {
    let (a, _) = keyed();
    assert_eq!(
        a.well_known_paths(),
        &[
            "/.well-known/oauth-protected-resource/mcp".to_string(),
            "/.well-known/oauth-protected-resource".to_string()
        ]
    );
    assert_eq!(
        a.resource_metadata_url(),
        "https://gw.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(
        a.challenge_401(&AuthError::Missing),
        "Bearer resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\""
    );
    let v = a.challenge_401(&AuthError::Expired);
    assert!(
        v.ends_with(", error=\"invalid_token\", error_description=\"token expired\""),
        "{v}"
    );
    let v = a.challenge_403(&["docs:read"], &[Arc::from("mcp:tools")], "needs \"docs\"");
    assert_eq!(
        v,
        "Bearer error=\"insufficient_scope\", scope=\"mcp:tools docs:read\", resource_metadata=\"https://gw.example.com/.well-known/oauth-protected-resource/mcp\", error_description=\"needs \\\"docs\\\"\""
    );
    let md: serde_json::Value = serde_json::from_slice(a.protected_resource_metadata()).unwrap();
    assert_eq!(md["resource"], "https://gw.example.com/mcp");
    assert_eq!(md["bearer_methods_supported"][0], "header");
    assert_eq!(md["scopes_supported"][0], "mcp:tools");
}

#[test]
fn required_scopes_give_403_with_all_needed() {
    let key = generate_api_key();
    let a = Authenticator::new(
        &cfg(serde_json::json!({
            "resource": "https://gw/mcp",
            "required_scopes": ["mcp:tools", "mcp:call"],
            "api_keys": [{"name": "k", "hash": hash_api_key(&key), "scopes": ["mcp:tools"]}]
        })),
        None,
    )
    .unwrap();
    let p = a
        .authenticate_cached(Some(format!("Bearer {key}").as_bytes()))
        .unwrap()
        .unwrap();
    let e = a.require_scopes(&p).unwrap_err();
    assert_eq!(e.status(), 403);
    assert_eq!(
        e,
        AuthError::InsufficientScope {
            needed: vec!["mcp:tools".into(), "mcp:call".into()]
        }
    );
}

#[test]
fn metadata_url_forms() {
    assert_eq!(
        metadata_urls("https://idp.example.com"),
        vec![
            "https://idp.example.com/.well-known/oauth-authorization-server",
            "https://idp.example.com/.well-known/openid-configuration"
        ]
    );
    assert_eq!(
        metadata_urls("https://idp.example.com/realms/x"),
        vec![
            "https://idp.example.com/.well-known/oauth-authorization-server/realms/x",
            "https://idp.example.com/.well-known/openid-configuration/realms/x",
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        ]
    );
}

#[test]
fn jwks_parsing_skips_unusable_and_symmetric_keys() {
    let set = parse_jwks(
        br#"{"keys":[
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a","alg":"EdDSA","use":"sig"},
        {"kty":"oct","k":"c2VjcmV0","kid":"h"},
        {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e","use":"enc"},
        {"kty":"weird","kid":"w"}
    ]}"#,
    )
    .unwrap();
    assert_eq!(set.by_kid.len(), 1);
    assert!(set.by_kid.contains_key("a"));
    assert_eq!(set.by_kid["a"].alg, Some(Algorithm::EdDSA));
    assert!(parse_jwks(b"{}").is_err());
}
