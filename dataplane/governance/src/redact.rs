//! Result redaction and the guardrail hook: rules applied to a tool result's JSON bytes before
//! the result leaves the hub.
//!
//! Runs in the `relay` stage on a `tools/call` result (the JSON-RPC response body, or one SSE
//! `data:` payload carrying it), only for tools whose policy rule has `redact:` entries — other
//! results are forwarded byte for byte.
//!
//! - A **regex** rule (`pattern`) rewrites every match inside text: `content[].text` of `text`
//!   blocks and `content[].resource.text` of embedded resources.
//! - A **pointer** rule (`pointer`, RFC 6901, relative to `structuredContent`) replaces that value
//!   with the replacement string (`"[REDACTED]"` by default).
//! - Note: servers also put the serialized `structuredContent` in a text block; a pointer rule
//!   does not reach into that text, so pair it with a regex rule for the same secret.
//! - The bytes are re-serialized only when a rule changed something; otherwise they are left
//!   untouched (byte-faithful relay). Bytes that are not JSON are refused
//!   ([`GuardrailDecision::Block`]), never relayed unredacted.
//!
//! [`Guardrail`] is the extension point for more (DLP scanners, classifiers): the hub runs the
//! rule's guardrails in order; the first `Block` turns the result into a tool error.

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::ConfigError;

/// One redaction rule: exactly one of `pattern` or `pointer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// A regex (Rust `regex` syntax, linear time) applied to text content.
    #[serde(default)]
    pub pattern: Option<String>,
    /// A JSON pointer into `structuredContent` (e.g. `/customer/ssn`).
    #[serde(default)]
    pub pointer: Option<String>,
    /// What replaces the match or the value (default `[REDACTED]`).
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    "[REDACTED]".to_string()
}

#[derive(Debug)]
enum Compiled {
    Regex(Regex, String),
    Pointer(String, String),
}

/// Compiled redaction rules of one tool.
#[derive(Debug)]
pub struct Redactor {
    rules: Vec<Compiled>,
}

/// What a guardrail decided about a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardrailDecision {
    /// Relay the result as it is now (possibly modified in place).
    Pass {
        /// Whether the guardrail changed the bytes.
        modified: bool,
    },
    /// Replace the result by a tool error (`isError: true`) carrying `reason`; audit it.
    Block {
        /// Shown to the client and written to the audit record.
        reason: String,
    },
}

/// What a guardrail knows about the call whose result it inspects.
#[derive(Debug, Clone, Copy)]
pub struct GuardrailContext<'a> {
    /// The upstream that answered.
    pub upstream: &'a str,
    /// The tool's original (upstream) name.
    pub tool: &'a str,
    /// Who called.
    pub principal: &'a crate::principal::Principal,
}

/// A check or rewrite applied to tool results before they leave the hub.
///
/// Runs on a hub worker in the `relay` stage, once per result, after the upstream answered and
/// before the first byte goes to the client, so it must be quick and must not block (no IO). The
/// `result` buffer holds the JSON of the tool result (`{"content":[…],"structuredContent":…}`,
/// or a whole JSON-RPC response whose `result` is one); a guardrail may rewrite it in place and
/// must leave valid JSON behind.
pub trait Guardrail: Send + Sync {
    /// Inspects (and possibly rewrites) `result`.
    fn on_result(&self, ctx: &GuardrailContext<'_>, result: &mut Vec<u8>) -> GuardrailDecision;
}

impl Redactor {
    /// Compiles `rules`; `field` names them in errors (e.g. `policy.tools[2].redact`).
    ///
    /// # Errors
    /// A [`ConfigError`] for a rule with neither or both of `pattern`/`pointer`, a regex that does
    /// not compile, or a pointer that does not start with `/`.
    pub fn compile(rules: &[RedactRule], field: &str) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let f = format!("{field}[{i}]");
            match (&r.pattern, &r.pointer) {
                (Some(p), None) => {
                    let re = regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| ConfigError::new(format!("{f}.pattern"), e.to_string()))?;
                    out.push(Compiled::Regex(re, r.replacement.clone()));
                }
                (None, Some(p)) => {
                    if !p.starts_with('/') {
                        return Err(ConfigError::new(
                            format!("{f}.pointer"),
                            "a JSON pointer starts with `/`",
                        ));
                    }
                    out.push(Compiled::Pointer(p.clone(), r.replacement.clone()));
                }
                _ => {
                    return Err(ConfigError::new(
                        f,
                        "give exactly one of `pattern` (regex over text) or `pointer` (into structuredContent)",
                    ))
                }
            }
        }
        Ok(Redactor { rules: out })
    }

    /// Applies the rules to `bytes` (a tool result, or a JSON-RPC response carrying one).
    /// Returns how many values were changed.
    ///
    /// # Errors
    /// The bytes are not JSON.
    pub fn apply(&self, bytes: &mut Vec<u8>) -> Result<usize, serde_json::Error> {
        let mut doc: Value = serde_json::from_slice(bytes)?;
        let result = match doc.get("result") {
            Some(Value::Object(_)) => doc.get_mut("result").expect("checked just above"),
            _ => &mut doc,
        };
        let mut changed = 0;
        for rule in &self.rules {
            match rule {
                Compiled::Regex(re, rep) => {
                    if let Some(Value::Array(blocks)) = result.get_mut("content") {
                        for b in blocks {
                            if let Some(Value::String(t)) = b.get_mut("text") {
                                changed += replace_in(re, rep, t);
                            }
                            if let Some(Value::String(t)) =
                                b.get_mut("resource").and_then(|r| r.get_mut("text"))
                            {
                                changed += replace_in(re, rep, t);
                            }
                        }
                    }
                }
                Compiled::Pointer(ptr, rep) => {
                    if let Some(v) = result
                        .get_mut("structuredContent")
                        .and_then(|s| s.pointer_mut(ptr))
                    {
                        *v = Value::String(rep.clone());
                        changed += 1;
                    }
                }
            }
        }
        if changed > 0 {
            bytes.clear();
            serde_json::to_writer(&mut *bytes, &doc)?;
        }
        Ok(changed)
    }
}

fn replace_in(re: &Regex, rep: &str, text: &mut String) -> usize {
    let n = re.find_iter(text).count();
    if n > 0 {
        *text = re.replace_all(text, regex::NoExpand(rep)).into_owned();
    }
    n
}

impl Guardrail for Redactor {
    fn on_result(&self, _ctx: &GuardrailContext<'_>, result: &mut Vec<u8>) -> GuardrailDecision {
        match self.apply(result) {
            Ok(n) => GuardrailDecision::Pass { modified: n > 0 },
            Err(e) => GuardrailDecision::Block {
                reason: format!("the result is not JSON and cannot be redacted: {e}"),
            },
        }
    }
}

/// Masks `pointers` in a copy of `arguments` (for approval requests and operator views).
pub fn redact_arguments(arguments: &Value, pointers: &[String], replacement: &str) -> Value {
    let mut v = arguments.clone();
    for p in pointers {
        if let Some(slot) = v.pointer_mut(p) {
            *slot = Value::String(replacement.to_string());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<RedactRule> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn regex_and_pointer_rules() {
        let r = Redactor::compile(
            &rules(json!([
                {"pattern": "\\b\\d{3}-\\d{2}-\\d{4}\\b"},
                {"pointer": "/customer/card", "replacement": "****"}
            ])),
            "t",
        )
        .unwrap();
        let mut body = serde_json::to_vec(&json!({"jsonrpc":"2.0","id":1,"result":{
            "content":[{"type":"text","text":"ssn 123-45-6789 and 987-65-4321"},
                       {"type":"resource","resource":{"uri":"x:1","text":"ssn 111-22-3333"}}],
            "structuredContent":{"customer":{"card":"4111","name":"A"}}}}))
        .unwrap();
        assert_eq!(r.apply(&mut body).unwrap(), 4);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["result"]["content"][0]["text"],
            "ssn [REDACTED] and [REDACTED]"
        );
        assert_eq!(
            v["result"]["content"][1]["resource"]["text"],
            "ssn [REDACTED]"
        );
        assert_eq!(v["result"]["structuredContent"]["customer"]["card"], "****");
        assert_eq!(v["result"]["structuredContent"]["customer"]["name"], "A");
    }

    #[test]
    fn untouched_bytes_stay_byte_identical_and_garbage_is_blocked() {
        let r = Redactor::compile(&rules(json!([{"pattern":"secret"}])), "t").unwrap();
        let original = br#"{"content": [ {"type":"text","text":"fine"} ]}"#.to_vec();
        let mut b = original.clone();
        assert_eq!(r.apply(&mut b).unwrap(), 0);
        assert_eq!(b, original);
        let p = crate::principal::Principal::anonymous();
        let ctx = GuardrailContext {
            upstream: "u",
            tool: "t",
            principal: &p,
        };
        let mut junk = b"not json".to_vec();
        assert!(matches!(
            r.on_result(&ctx, &mut junk),
            GuardrailDecision::Block { .. }
        ));
    }

    #[test]
    fn bad_rules_name_the_field() {
        let e = Redactor::compile(&rules(json!([{"pattern":"("}])), "policy.tools[0].redact")
            .unwrap_err();
        assert_eq!(e.field, "policy.tools[0].redact[0].pattern");
        let e = Redactor::compile(&rules(json!([{}])), "r").unwrap_err();
        assert_eq!(e.field, "r[0]");
        let e = Redactor::compile(&rules(json!([{"pointer":"x"}])), "r").unwrap_err();
        assert_eq!(e.field, "r[0].pointer");
    }

    #[test]
    fn argument_masking() {
        let v = redact_arguments(
            &json!({"card":"4111","amount":5}),
            &["/card".into(), "/missing".into()],
            "[REDACTED]",
        );
        assert_eq!(v, json!({"card":"[REDACTED]","amount":5}));
    }
}
