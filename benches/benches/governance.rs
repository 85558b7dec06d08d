//! Per-call CPU of the governance engine (`governance` crate): what the hub's identify, policy
//! and audit stages add to one `tools/call`. Budget (issue 9): ≤ 5 µs for auth + policy +
//! schema + audit together.
//!
//! - `auth/*`: a cached bearer JWT (EdDSA, ~450 B) and a cached API key, both a hash lookup;
//!   `auth/verify_jwt_eddsa` forces a cache miss (one signature check) for comparison. The JWKS
//!   comes from a tiny loopback HTTP server in this process.
//! - `policy/*`: visibility class, a decision from the tool table (and the glob fallback), rate
//!   buckets, the loop lock, and `check_call` (all of them in sequence).
//! - `schema/validate_small`: a 60-byte `arguments` object against a cached compiled schema.
//! - `audit/*`: the argument digest (SHA-256 of 200 bytes) and `submit` (a `try_send`; the
//!   writer thread signs and writes in the background, fail-open so a full queue only counts),
//!   and `writer_per_record`: the writer thread's own time per record (serialize, chain hash,
//!   Ed25519 signature, append; no fsync), measured as batch wall time ÷ records, with every
//!   record signed and with `sign_every: 64`.
//! - `assertion/cached`: the hub-signed user assertion for a (principal, upstream) seen before.
//! - `total/one_call`: the sequence the hub runs per call (cached auth, classify, check_call,
//!   schema, digest, audit submit).

// Bench code: unwraps are setup assertions; the JWKS server is a plain std thread.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use criterion::Criterion;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use governance::audit::{argument_digest, AuditConfig, AuditKind, AuditLog, AuditRecord, FailMode};
use governance::identity::{hash_api_key, AuthConfig, Authenticator};
use governance::policy::{check_call, CompiledPolicy, LoopGuard, PolicyConfig, RateLimiter};
use governance::schema::{SchemaCache, SchemaConfig, SchemaKey};
use serde_json::json;

const RES: &str = "https://gw.example.com/mcp";

/// Serves `body` to every HTTP request on a loopback port (for the JWKS fetch).
fn serve_forever(body: String) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    format!("http://{addr}")
}

fn setup_jwt(cache_entries: usize) -> (Authenticator, Vec<String>) {
    let sk = governance::keys::generate_signing_key();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [{"kty":"OKP","crv":"Ed25519","x": b64(sk.verifying_key().as_bytes()),
                                "kid":"k1","alg":"EdDSA","use":"sig"}]});
    let url = serve_forever(jwks.to_string());
    let cfg: AuthConfig = serde_json::from_value(json!({
        "resource": RES,
        "jwt": {"issuer": "https://idp.example.com", "jwks_uri": format!("{url}/jwks"),
                "roles_claim": "realm_access.roles"},
        "token_cache_entries": cache_entries
    }))
    .unwrap();
    let net = governance::net::NetRuntime::start(None).unwrap();
    let a = Authenticator::new(&cfg, Some(net)).unwrap();
    a.wait_ready(Duration::from_secs(10)).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ed_der(sk.to_pkcs8_der().unwrap().as_bytes());
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("k1".into());
    let now = governance::config::unix_now();
    let tokens = (0..2)
        .map(|i| {
            let claims = json!({"iss":"https://idp.example.com","sub":format!("user-{i}"),"aud":RES,
                "iat":now,"exp":now+3600,"jti":format!("j{i}"),"scope":"mcp:tools docs:read",
                "realm_access":{"roles":["sales","viewer","ops"]},"client_id":"agent-cli"});
            format!(
                "Bearer {}",
                jsonwebtoken::encode(&h, &claims, &key).unwrap()
            )
        })
        .collect();
    (a, tokens)
}

fn policy() -> CompiledPolicy {
    let cfg: PolicyConfig = serde_json::from_value(json!({
        "unmatched": "deny",
        "max_loop_steps": 16_000_000,
        "loop_window": "1s",
        "rate_limits": {"per_principal": {"rate": 1_000_000_000u32}, "per_tool": {"rate": 1_000_000_000u32}},
        "tools": [
            {"match": "payments/*", "roles": ["finance"], "requires_approval": true, "approval_group": "fin"},
            {"match": "*/delete_*", "roles": ["admin"]},
            {"match": "crm/*", "roles": ["sales", "admin"], "classification": "internal"},
            {"match": "docs/*", "scopes": ["docs:read"]}
        ]
    }))
    .unwrap();
    CompiledPolicy::compile(&cfg).unwrap()
}

fn bench(c: &mut Criterion) {
    // === auth ===
    let (auth, tokens) = setup_jwt(10_000);
    let tok = tokens[0].clone();
    assert!(auth
        .authenticate_cached(Some(tok.as_bytes()))
        .unwrap()
        .is_ok());
    let mut g = c.benchmark_group("auth");
    g.bench_function("cached_jwt", |b| {
        b.iter(|| {
            auth.authenticate_cached(black_box(Some(tok.as_bytes())))
                .unwrap()
        })
    });
    let (miss, miss_tokens) = setup_jwt(1);
    let mut i = 0usize;
    g.bench_function("verify_jwt_eddsa", |b| {
        b.iter(|| {
            i += 1;
            miss.authenticate_cached(Some(miss_tokens[i % 2].as_bytes()))
                .unwrap()
                .unwrap()
        })
    });
    let api_key = governance::identity::generate_api_key();
    let keyed = Authenticator::new(
        &serde_json::from_value(json!({"resource": RES,
            "api_keys": [{"name":"ci","hash": hash_api_key(&api_key),"roles":["sales"]}]}))
        .unwrap(),
        None,
    )
    .unwrap();
    let key_header = format!("Bearer {api_key}");
    g.bench_function("cached_api_key", |b| {
        b.iter(|| {
            keyed
                .authenticate_cached(black_box(Some(key_header.as_bytes())))
                .unwrap()
        })
    });
    g.finish();

    // === policy ===
    let p = policy();
    let catalog: Vec<(String, String)> = (0..50)
        .flat_map(|i| {
            [
                ("crm".to_string(), format!("get_{i}")),
                ("docs".to_string(), format!("read_{i}")),
                ("payments".to_string(), format!("pay_{i}")),
            ]
        })
        .collect();
    let table = p.tool_table(catalog.iter().map(|(u, t)| (u.as_str(), t.as_str())));
    let principal = auth
        .authenticate_cached(Some(tok.as_bytes()))
        .unwrap()
        .unwrap();
    let class = p.classify(&principal);
    let limiter = RateLimiter::new(100_000);
    let loops = LoopGuard::new(100_000);
    let prate = p.principal_rate.unwrap();
    let trate = p.tool_rate.unwrap();
    let lspec = p.loop_spec.unwrap();
    let mut g = c.benchmark_group("policy");
    g.bench_function("classify", |b| b.iter(|| p.classify(black_box(&principal))));
    g.bench_function("authorize_table", |b| {
        b.iter(|| {
            matches!(
                p.authorize(&table, black_box(&class), "crm", "get_17"),
                governance::policy::Access::Allowed(_)
            )
        })
    });
    g.bench_function("authorize_glob_fallback", |b| {
        b.iter(|| {
            matches!(
                p.authorize(&table, black_box(&class), "crm", "not_in_table"),
                governance::policy::Access::Allowed(_)
            )
        })
    });
    g.bench_function("rate_principal", |b| {
        b.iter(|| {
            limiter
                .check_principal(black_box(&principal), &prate)
                .is_ok()
        })
    });
    g.bench_function("rate_tool", |b| {
        b.iter(|| {
            limiter
                .check_tool(black_box(&principal), "crm", "get_17", &trate)
                .is_ok()
        })
    });
    g.bench_function("loop_step", |b| {
        b.iter(|| {
            loops
                .step(black_box("4f9c1a7e2b3d4c5e6f708192a3b4c5d6"), &lspec)
                .is_ok()
        })
    });
    g.bench_function("check_call", |b| {
        b.iter(|| {
            let d = check_call(
                &p,
                &table,
                &limiter,
                &loops,
                &principal,
                &class,
                "4f9c1a7e2b3d4c5e6f708192a3b4c5d6",
                "crm",
                black_box("get_17"),
            );
            assert!(matches!(d, governance::policy::CallDecision::Allowed(_)));
        })
    });
    g.finish();

    // === schema ===
    let schemas = SchemaCache::new(&SchemaConfig::default());
    let key = SchemaKey {
        upstream: Arc::from("crm"),
        tool: Arc::from("get_17"),
        version: 1,
    };
    let schema = json!({"type":"object","properties":{
        "customer_id":{"type":"string","pattern":"^[a-z0-9-]+$"},
        "limit":{"type":"integer","minimum":1,"maximum":100},
        "fields":{"type":"array","items":{"type":"string"}}},
        "required":["customer_id"],"additionalProperties":false});
    let args = br#"{"customer_id":"c-1234","limit":10,"fields":["name","email"]}"#;
    assert!(schemas.check(&key, &schema, Some(args)).is_ok());
    c.bench_function("schema/validate_small", |b| {
        b.iter(|| schemas.check(&key, &schema, black_box(Some(args))).is_ok())
    });

    // === audit ===
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(
        &AuditConfig {
            path: dir.path().join("audit.jsonl"),
            head_path: None,
            key_file: dir.path().join("unused"),
            queue: 1 << 16,
            on_failure: FailMode::Open,
            fsync: false,
            sign_every: 1,
        },
        "hub-bench",
        governance::keys::generate_signing_key(),
    )
    .unwrap();
    let raw_args = [b'x'; 200];
    let mut g = c.benchmark_group("audit");
    g.bench_function("argument_digest_200b", |b| {
        b.iter(|| argument_digest(black_box(&raw_args)))
    });
    let record = |principal: &governance::Principal| {
        let mut r = AuditRecord::new(AuditKind::ToolCall);
        r.principal = Some(principal.id.to_string());
        r.session = Some("4f9c1a7e2b3d4c5e6f708192a3b4c5d6".into());
        r.upstream = Some("crm".into());
        r.tool = Some("get_17".into());
        r.args_sha256 = Some(argument_digest(args));
        r.outcome = Some("ok".into());
        r.latency_us = Some(812);
        r
    };
    g.bench_function("submit", |b| {
        b.iter(|| log.submit(record(black_box(&principal))).is_ok())
    });
    // The writer thread's cost per record (serialize, chain hash, Ed25519 signature, append):
    // submit a batch, wait until written, divide. Off the worker, but CPU all the same.
    let wdir = tempfile::tempdir().unwrap();
    let wlog = AuditLog::open(
        &AuditConfig {
            path: wdir.path().join("audit.jsonl"),
            head_path: None,
            key_file: wdir.path().join("unused"),
            queue: 1 << 16,
            on_failure: FailMode::Closed,
            fsync: false,
            sign_every: 1,
        },
        "hub-bench",
        governance::keys::generate_signing_key(),
    )
    .unwrap();
    g.bench_function("writer_per_record", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                for _ in 0..n {
                    wlog.submit(record(&principal)).unwrap();
                }
                assert!(wlog.flush(Duration::from_secs(60)));
                left -= n;
            }
            start.elapsed()
        })
    });
    wlog.close(Duration::from_secs(10));
    let wdir64 = tempfile::tempdir().unwrap();
    let wlog64 = AuditLog::open(
        &AuditConfig {
            path: wdir64.path().join("audit.jsonl"),
            head_path: None,
            key_file: wdir64.path().join("unused"),
            queue: 1 << 16,
            on_failure: FailMode::Closed,
            fsync: false,
            sign_every: 64,
        },
        "hub-bench",
        governance::keys::generate_signing_key(),
    )
    .unwrap();
    g.bench_function("writer_per_record_sign_every_64", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000);
                for _ in 0..n {
                    wlog64.submit(record(&principal)).unwrap();
                }
                assert!(wlog64.flush(Duration::from_secs(60)));
                left -= n;
            }
            start.elapsed()
        })
    });
    wlog64.close(Duration::from_secs(10));
    g.finish();

    // === assertion ===
    let signer = governance::assertion::AssertionSigner::new(
        &serde_json::from_value(json!({"key_file":"unused","issuer":"https://gw.example.com"}))
            .unwrap(),
        &governance::keys::generate_signing_key(),
    )
    .unwrap();
    signer.assertion(&principal, "crm").unwrap();
    c.bench_function("assertion/cached", |b| {
        b.iter(|| signer.assertion(black_box(&principal), "crm").unwrap())
    });

    // === the whole per-call sequence ===
    c.bench_function("total/one_call", |b| {
        b.iter(|| {
            let p0 = auth
                .authenticate_cached(Some(tok.as_bytes()))
                .unwrap()
                .unwrap();
            let cl = p.classify(&p0);
            limiter.check_principal(&p0, &prate).unwrap();
            let d = check_call(
                &p,
                &table,
                &limiter,
                &loops,
                &p0,
                &cl,
                "4f9c1a7e2b3d4c5e6f708192a3b4c5d6",
                "crm",
                "get_17",
            );
            assert!(matches!(d, governance::policy::CallDecision::Allowed(_)));
            schemas.check(&key, &schema, Some(args)).unwrap();
            log.submit(record(&p0)).unwrap();
        })
    });
    log.close(Duration::from_secs(10));
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    bench(&mut c);
    c.final_summary();
}
