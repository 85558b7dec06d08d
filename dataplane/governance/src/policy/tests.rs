use super::*;
use serde_json::json;

fn policy(v: serde_json::Value) -> CompiledPolicy {
    let cfg: PolicyConfig = serde_json::from_value(v).unwrap();
    CompiledPolicy::compile(&cfg).unwrap()
}

fn sample() -> CompiledPolicy {
    policy(json!({
        "unmatched": "deny",
        "max_loop_steps": 3,
        "loop_window": "1m",
        "rate_limits": {"per_principal": {"rate": 100}, "per_tool": {"rate": 2, "per": "1h"}},
        "tools": [
            {"match": "payments/*", "classification": "restricted", "requires_approval": true,
             "approval_group": "finance", "roles": ["finance"], "max_execution_timeout_ms": 30000},
            {"match": "*/delete_*", "roles": ["admin"]},
            {"match": "docs/search", "scopes": ["docs:read"], "on_missing_scope": "challenge",
             "cache_ttl_seconds": 60},
            {"match": "docs/*"},
            {"match": "crm/secret", "deny": true},
            {"match": "crm/*", "roles": ["sales", "admin"], "rate_limit": {"rate": 1, "per": "1h"}}
        ]
    }))
}

#[test]
fn first_match_wins_and_unmatched_is_the_default() {
    let p = sample();
    assert_eq!(p.rule_for("payments", "refund").index, 0);
    assert_eq!(p.rule_for("crm", "delete_lead").index, 1);
    assert_eq!(p.rule_for("docs", "search").index, 2);
    assert_eq!(p.rule_for("docs", "read").index, 3);
    assert_eq!(p.rule_for("crm", "secret").index, 4);
    assert_eq!(p.rule_for("crm", "get").index, 5);
    assert_eq!(&*p.rule_for("other", "x").pattern, "<unmatched>");
    // `*` does not cross the separator.
    assert_eq!(&*p.rule_for("payments/x", "y").pattern, "<unmatched>");
    let r = p.rule_for("payments", "refund");
    assert_eq!(r.classification.as_deref(), Some("restricted"));
    assert_eq!(r.max_execution_timeout, Some(Duration::from_secs(30)));
}

#[test]
fn hidden_allowed_and_scope_challenge() {
    let p = sample();
    let table = p.tool_table([
        ("payments", "refund"),
        ("crm", "delete_lead"),
        ("crm", "get"),
        ("crm", "secret"),
        ("docs", "search"),
        ("docs", "read"),
        ("other", "x"),
    ]);
    assert_eq!(table.len(), 7);
    let fin = Principal::jwt("i", "f", ["finance"], ["docs:read"], None);
    let sales = Principal::jwt("i", "s", ["sales"], [""; 0], None);
    let admin = Principal::jwt("i", "a", ["admin", "unrelated"], [""; 0], None);
    let (cf, cs, ca) = (p.classify(&fin), p.classify(&sales), p.classify(&admin));
    let ok = |c, u, t| matches!(p.authorize(&table, c, u, t), Access::Allowed(_));
    let hidden = |c, u, t| matches!(p.authorize(&table, c, u, t), Access::Hidden);
    assert!(ok(&cf, "payments", "refund"));
    assert!(hidden(&cs, "payments", "refund"));
    assert!(ok(&ca, "crm", "delete_lead") && hidden(&cs, "crm", "delete_lead"));
    assert!(ok(&cs, "crm", "get") && ok(&ca, "crm", "get") && hidden(&cf, "crm", "get"));
    assert!(hidden(&ca, "crm", "secret"));
    assert!(hidden(&ca, "other", "x"), "unmatched: deny");
    assert!(ok(&cf, "docs", "search"));
    match p.authorize(&table, &cs, "docs", "search") {
        Access::InsufficientScope(r) => assert_eq!(&*r.required_scopes, &[Arc::from("docs:read")]),
        other => panic!("{other:?}"),
    }
    // Listed for the challenge, not hidden.
    assert!(p.visible(&table, &cs, "docs", "search"));
    assert!(!p.visible(&table, &cs, "payments", "refund"));
    // A tool missing from the table falls back to glob matching with the same answer.
    assert!(ok(&cf, "payments", "new_tool"));
}

#[test]
fn visibility_classes_ignore_unmentioned_attributes() {
    let p = sample();
    let a = Principal::jwt("i", "a", ["sales", "x", "y"], ["z"], None);
    let b = Principal::jwt("i", "b", ["sales"], [""; 0], None);
    let c = Principal::jwt("i", "c", ["admin"], [""; 0], None);
    assert_eq!(p.classify(&a), p.classify(&b));
    assert_eq!(p.classify(&a).id(), p.classify(&b).id());
    assert_ne!(p.classify(&a), p.classify(&c));
    // A class from another policy decides nothing here.
    let other = policy(json!({"tools": [{"match": "*/*", "roles": ["sales"]}]}));
    let table = p.tool_table([("crm", "get")]);
    assert!(matches!(
        p.authorize(&table, &other.classify(&b), "crm", "get"),
        Access::Hidden
    ));
}

#[test]
fn check_call_runs_rate_then_loop_then_approval() {
    let p = sample();
    let table = p.tool_table([("crm", "get"), ("docs", "read"), ("payments", "pay")]);
    let limiter = RateLimiter::new(1000);
    let loops = LoopGuard::new(1000);
    let s = Principal::jwt("i", "s", ["sales", "finance"], [""; 0], None);
    let cs = p.classify(&s);
    let call = |u, t, sess| check_call(&p, &table, &limiter, &loops, &s, &cs, sess, u, t);
    assert!(matches!(call("crm", "get", "s1"), CallDecision::Allowed(_)));
    // crm/* has its own rate (1 per hour).
    assert!(
        matches!(call("crm", "get", "s1"), CallDecision::RateLimited(r) if r.scope == RateScope::Tool)
    );
    assert!(
        matches!(call("payments", "pay", "s1"), CallDecision::NeedsApproval(r) if r.approval_group.as_deref() == Some("finance"))
    );
    // Loop lock: 3 per minute per session (the rate-limited call did not count a step).
    assert!(matches!(
        call("docs", "read", "s1"),
        CallDecision::Allowed(_)
    ));
    assert!(matches!(call("docs", "read", "s1"), CallDecision::LoopLimited(l) if l.max_steps == 3));
    assert!(matches!(
        call("docs", "other", "s2"),
        CallDecision::Allowed(_)
    ));
    assert!(matches!(call("nope", "x", "s2"), CallDecision::Hidden));
}

#[test]
fn config_errors_name_the_field() {
    let bad = |v: serde_json::Value| {
        let cfg: PolicyConfig = serde_json::from_value(v).unwrap();
        CompiledPolicy::compile(&cfg).unwrap_err()
    };
    assert_eq!(
        bad(json!({"tools": [{"match": "a/*"}, {"match": "a/[", "roles": []}]})).field,
        "policy.tools[1].match"
    );
    assert_eq!(
        bad(json!({"tools": [{"match": "a", "rate_limit": {"rate": 0}}]})).field,
        "policy.tools[0].rate_limit"
    );
    assert_eq!(
        bad(json!({"max_loop_steps": 0})).field,
        "policy.max_loop_steps"
    );
    assert_eq!(
        bad(json!({"tools": [{"match": "a", "approval_group": "g"}]})).field,
        "policy.tools[0].approval_group"
    );
    assert_eq!(
        bad(json!({"tools": [{"match": "a", "redact": [{"pattern": "("}]}]})).field,
        "policy.tools[0].redact[0].pattern"
    );
    let many: Vec<String> = (0..=MAX_ATTRIBUTES).map(|i| format!("r{i}")).collect();
    assert!(bad(json!({"tools": [{"match": "a", "roles": many}]}))
        .message
        .contains("distinct"));
    let e =
        serde_json::from_value::<PolicyConfig>(json!({"tools": [{"match": "a", "role": ["x"]}]}))
            .unwrap_err();
    assert!(e.to_string().contains("unknown field `role`"), "{e}");
}

#[test]
fn allow_all_lets_everyone_see_everything() {
    let p = CompiledPolicy::allow_all();
    let t = p.tool_table([("u", "t")]);
    let anon = p.classify(&Principal::anonymous());
    assert!(matches!(
        p.authorize(&t, &anon, "u", "t"),
        Access::Allowed(_)
    ));
    assert!(p.loop_spec.is_none() && p.principal_rate.is_none());
}
