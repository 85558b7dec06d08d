//! Argument validation: each tool's `inputSchema` compiled once with the `jsonschema` crate and
//! cached per (upstream, tool, catalog version); a call's arguments checked before forwarding.
//!
//! Runs in the `policy` stage for `tools/call`, after visibility and limits, when the rule's
//! `validate_arguments` is on. An invalid call never reaches the upstream: the hub answers a tool
//! result with `isError: true` whose text is [`ArgumentError::message_for_client`] (the failing
//! instance path and a short reason, without echoing the value).
//!
//! - **Drafts**: JSON Schema 2020-12 unless the schema's `$schema` names another draft
//!   (4, 6, 7, 2019-09), as the crate detects it.
//! - **No network**: the crate is built without its HTTP/file resolvers, and a retriever that
//!   refuses every URI is installed, so only `#…` references inside the schema resolve; a
//!   schema needing anything else fails to compile with [`SchemaError::RemoteRef`].
//! - **Bounded cost**: before compiling, the schema's serialized size, nesting depth and node
//!   count are checked against [`SchemaLimits`] ([`SchemaError::TooComplex`]); `pattern`s use
//!   `fancy-regex` with a small backtracking limit, so a hostile pattern cannot stall a worker.
//! - **Cache**: compile results (including failures, so a broken schema is not recompiled on
//!   every call) live in a bounded sharded map; [`SchemaCache::retain`] drops old catalog
//!   versions when the catalog moves on.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the hub does with a tool whose schema cannot be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncompilable {
    /// Refuse calls with a tool error saying why (the default: validation is a security check).
    #[default]
    Reject,
    /// Forward calls unvalidated (and log once).
    Forward,
}

/// The `schema:` config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    /// Behaviour for schemas that do not compile (default `reject`).
    #[serde(default)]
    pub on_uncompilable: Uncompilable,
    /// Largest schema, serialized (default 256 KiB).
    #[serde(default = "d_bytes")]
    pub max_schema_bytes: usize,
    /// Deepest nesting (default 64).
    #[serde(default = "d_depth")]
    pub max_depth: usize,
    /// Most JSON values in one schema (default 20000).
    #[serde(default = "d_nodes")]
    pub max_nodes: usize,
    /// Compiled schemas kept (default 10000).
    #[serde(default = "d_entries")]
    pub cache_entries: usize,
}

fn d_bytes() -> usize {
    256 << 10
}
fn d_depth() -> usize {
    64
}
fn d_nodes() -> usize {
    20_000
}
fn d_entries() -> usize {
    10_000
}

impl Default for SchemaConfig {
    fn default() -> Self {
        SchemaConfig {
            on_uncompilable: Uncompilable::Reject,
            max_schema_bytes: d_bytes(),
            max_depth: d_depth(),
            max_nodes: d_nodes(),
            cache_entries: d_entries(),
        }
    }
}

/// Bounds on a schema the hub agrees to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Serialized size.
    pub max_bytes: usize,
    /// Nesting depth.
    pub max_depth: usize,
    /// JSON values.
    pub max_nodes: usize,
}

impl From<&SchemaConfig> for SchemaLimits {
    fn from(c: &SchemaConfig) -> Self {
        SchemaLimits {
            max_bytes: c.max_schema_bytes,
            max_depth: c.max_depth,
            max_nodes: c.max_nodes,
        }
    }
}

impl Default for SchemaLimits {
    fn default() -> Self {
        (&SchemaConfig::default()).into()
    }
}

/// Why a schema was not compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// Over a [`SchemaLimits`] bound.
    #[error("inputSchema too complex to validate: {0}")]
    TooComplex(String),
    /// It references something outside itself.
    #[error("inputSchema references {0:?}; only local (#…) references are allowed")]
    RemoteRef(String),
    /// Not a valid schema.
    #[error("inputSchema is invalid: {0}")]
    Invalid(String),
}

/// Why arguments were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid arguments at {path}: {message}")]
pub struct ArgumentError {
    /// JSON pointer to the failing value (`/` for the arguments object itself).
    pub path: String,
    /// What is wrong (the value itself is not echoed).
    pub message: String,
}

impl ArgumentError {
    /// The tool-error text for the client (`isError: true`).
    pub fn message_for_client(&self) -> String {
        self.to_string()
    }
}

/// A compiled `inputSchema`.
pub struct ToolSchema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ToolSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSchema")
            .field("draft", &self.validator.draft())
            .finish()
    }
}

struct RefuseAll;

const REFUSED: &str = "meshgate refuses to fetch schema references";

impl jsonschema::Retrieve for RefuseAll {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{REFUSED}: {}", uri.as_str()).into())
    }
}

fn check_bounds(schema: &Value, limits: &SchemaLimits) -> Result<(), SchemaError> {
    let bytes = serde_json::to_vec(schema)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if bytes > limits.max_bytes {
        return Err(SchemaError::TooComplex(format!(
            "{bytes} bytes (limit {})",
            limits.max_bytes
        )));
    }
    let mut stack = vec![(schema, 1usize)];
    let mut nodes = 0usize;
    while let Some((v, depth)) = stack.pop() {
        nodes += 1;
        if nodes > limits.max_nodes {
            return Err(SchemaError::TooComplex(format!(
                "more than {} values",
                limits.max_nodes
            )));
        }
        if depth > limits.max_depth {
            return Err(SchemaError::TooComplex(format!(
                "nested deeper than {}",
                limits.max_depth
            )));
        }
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "$ref" || k == "$dynamicRef" || k == "$recursiveRef" {
                        if let Value::String(r) = x {
                            if !r.starts_with('#') {
                                return Err(SchemaError::RemoteRef(r.clone()));
                            }
                        }
                    }
                    stack.push((x, depth + 1));
                }
            }
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

impl ToolSchema {
    /// Compiles `schema` within `limits`, refusing non-local references.
    ///
    /// # Errors
    /// [`SchemaError`] naming the bound, the reference or the schema problem.
    pub fn compile(schema: &Value, limits: &SchemaLimits) -> Result<Self, SchemaError> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(SchemaError::Invalid("not an object".into()));
        }
        check_bounds(schema, limits)?;
        let validator = jsonschema::options()
            .with_retriever(RefuseAll)
            .with_pattern_options(jsonschema::PatternOptions::fancy_regex().backtrack_limit(10_000))
            .build(schema)
            .map_err(|e| {
                let msg = e.to_string();
                match msg.find(REFUSED) {
                    Some(i) => SchemaError::RemoteRef(
                        msg[i + REFUSED.len()..]
                            .trim_start_matches(": ")
                            .to_string(),
                    ),
                    None => SchemaError::Invalid(msg),
                }
            })?;
        Ok(ToolSchema { validator })
    }

    /// Validates raw `arguments` bytes (absent or empty = `{}`).
    ///
    /// # Errors
    /// [`ArgumentError`] with the first failing path.
    pub fn validate_bytes(&self, arguments: Option<&[u8]>) -> Result<(), ArgumentError> {
        let v: Value = match arguments {
            None => Value::Object(Default::default()),
            Some(b) if b.iter().all(u8::is_ascii_whitespace) => Value::Object(Default::default()),
            Some(b) => serde_json::from_slice(b).map_err(|e| ArgumentError {
                path: "/".into(),
                message: format!("arguments are not JSON: {e}"),
            })?,
        };
        self.validate(&v)
    }

    /// Validates parsed arguments.
    ///
    /// # Errors
    /// [`ArgumentError`] with the first failing path.
    pub fn validate(&self, arguments: &Value) -> Result<(), ArgumentError> {
        match self.validator.validate(arguments) {
            Ok(()) => Ok(()),
            Err(e) => {
                let path = e.instance_path().as_str().to_string();
                let mut message = e.masked().to_string();
                message.truncate(300);
                Err(ArgumentError {
                    path: if path.is_empty() { "/".into() } else { path },
                    message,
                })
            }
        }
    }
}

/// (upstream, tool, catalog version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaKey {
    /// The upstream.
    pub upstream: Arc<str>,
    /// The tool's original name.
    pub tool: Arc<str>,
    /// The catalog version the schema came from.
    pub version: u64,
}

/// The outcome of [`SchemaCache::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The arguments are invalid: a tool error naming the path.
    #[error(transparent)]
    Arguments(#[from] ArgumentError),
    /// The schema cannot be compiled and `on_uncompilable: reject`: a tool error saying why.
    #[error("the hub cannot validate arguments for this tool: {0}")]
    Schema(SchemaError),
}

type Compiled = Arc<Result<ToolSchema, SchemaError>>;

/// Compiled schemas shared by all workers.
pub struct SchemaCache {
    map: DashMap<SchemaKey, Compiled>,
    limits: SchemaLimits,
    max: usize,
    mode: Uncompilable,
}

impl std::fmt::Debug for SchemaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaCache")
            .field("entries", &self.map.len())
            .finish()
    }
}

impl SchemaCache {
    /// An empty cache.
    pub fn new(cfg: &SchemaConfig) -> Self {
        SchemaCache {
            map: DashMap::new(),
            limits: cfg.into(),
            max: cfg.cache_entries.max(1),
            mode: cfg.on_uncompilable,
        }
    }

    /// The compiled schema for `key`, compiling `schema` on a miss (compile once per version).
    pub fn get_or_compile(&self, key: &SchemaKey, schema: &Value) -> Compiled {
        if let Some(c) = self.map.get(key) {
            return c.clone();
        }
        let compiled = Arc::new(ToolSchema::compile(schema, &self.limits));
        if let Err(e) = compiled.as_ref() {
            tracing::warn!(upstream = %key.upstream, tool = %key.tool, error = %e, "inputSchema not compiled");
        }
        if self.map.len() >= self.max {
            self.map.clear();
        }
        self.map.insert(key.clone(), compiled.clone());
        compiled
    }

    /// Validates `arguments` (raw bytes; `None` = absent) of a call to `key`'s tool.
    ///
    /// # Errors
    /// [`CheckError`]; an uncompilable schema errs only in `reject` mode.
    pub fn check(
        &self,
        key: &SchemaKey,
        schema: &Value,
        arguments: Option<&[u8]>,
    ) -> Result<(), CheckError> {
        match self.get_or_compile(key, schema).as_ref() {
            Ok(s) => s.validate_bytes(arguments).map_err(CheckError::from),
            Err(e) => match self.mode {
                Uncompilable::Reject => Err(CheckError::Schema(e.clone())),
                Uncompilable::Forward => Ok(()),
            },
        }
    }

    /// Keeps only entries of `upstream` at `version` (and all other upstreams).
    pub fn retain(&self, upstream: &str, version: u64) {
        self.map
            .retain(|k, _| &*k.upstream != upstream || k.version == version);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(v: u64) -> SchemaKey {
        SchemaKey {
            upstream: Arc::from("u"),
            tool: Arc::from("t"),
            version: v,
        }
    }

    #[test]
    fn valid_and_invalid_arguments_name_the_path() {
        let s = ToolSchema::compile(
            &json!({"type":"object","properties":{
                "amount":{"type":"integer","minimum":1},
                "to":{"type":"object","properties":{"iban":{"type":"string","pattern":"^[A-Z]{2}[0-9]+$"}},"required":["iban"]}
            },"required":["amount"],"additionalProperties":false}),
            &SchemaLimits::default(),
        )
        .unwrap();
        assert!(s
            .validate_bytes(Some(br#"{"amount":5,"to":{"iban":"DE12"}}"#))
            .is_ok());
        let e = s.validate_bytes(Some(br#"{"amount":0}"#)).unwrap_err();
        assert_eq!(e.path, "/amount");
        let e = s
            .validate_bytes(Some(br#"{"amount":1,"to":{"iban":"secret-value"}}"#))
            .unwrap_err();
        assert_eq!(e.path, "/to/iban");
        assert!(!e.message.contains("secret-value"), "value not echoed: {e}");
        let e = s.validate_bytes(None).unwrap_err();
        assert_eq!(e.path, "/");
        assert!(e.message.contains("amount"), "{e}");
        let e = s.validate_bytes(Some(b"{not json")).unwrap_err();
        assert!(e.message.contains("not JSON"));
        let e = s
            .validate_bytes(Some(br#"{"amount":1,"x":1}"#))
            .unwrap_err();
        assert!(e.to_string().starts_with("invalid arguments at /"), "{e}");
    }

    #[test]
    fn drafts_follow_dollar_schema() {
        // In draft 4, exclusiveMaximum is a boolean modifier; in 2020-12 it is a number.
        let d4 = ToolSchema::compile(
            &json!({"$schema":"http://json-schema.org/draft-04/schema#","type":"object",
                    "properties":{"n":{"maximum":5,"exclusiveMaximum":true}}}),
            &SchemaLimits::default(),
        )
        .unwrap();
        assert!(d4.validate(&json!({"n":5})).is_err());
        assert!(d4.validate(&json!({"n":4})).is_ok());
        let d2020 = ToolSchema::compile(
            &json!({"type":"object","properties":{"n":{"exclusiveMaximum":5}},
                    "$defs":{"x":{"type":"string"}},"additionalProperties":{"$ref":"#/$defs/x"}}),
            &SchemaLimits::default(),
        )
        .unwrap();
        assert!(d2020.validate(&json!({"n":5})).is_err());
        assert!(d2020.validate(&json!({"n":4,"other":"s"})).is_ok());
        assert_eq!(
            d2020.validate(&json!({"other":1})).unwrap_err().path,
            "/other"
        );
    }

    #[test]
    fn remote_refs_and_oversized_schemas_are_refused() {
        let l = SchemaLimits::default();
        assert!(matches!(
            ToolSchema::compile(&json!({"$ref":"https://example.com/s.json"}), &l),
            Err(SchemaError::RemoteRef(_))
        ));
        assert!(matches!(
            ToolSchema::compile(
                &json!({"$schema":"https://example.com/meta","type":"object"}),
                &l
            ),
            Err(SchemaError::RemoteRef(_) | SchemaError::Invalid(_))
        ));
        let mut deep = json!({"type":"object"});
        for _ in 0..100 {
            deep = json!({"type":"object","properties":{"a":deep}});
        }
        assert!(
            matches!(ToolSchema::compile(&deep, &l), Err(SchemaError::TooComplex(m)) if m.contains("deeper"))
        );
        let wide: serde_json::Map<String, Value> =
            (0..30_000).map(|i| (format!("p{i}"), json!(1))).collect();
        assert!(matches!(
            ToolSchema::compile(&json!({"properties": wide}), &l),
            Err(SchemaError::TooComplex(_))
        ));
        assert!(matches!(
            ToolSchema::compile(&json!({"type": 12}), &l),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn cache_compiles_once_per_version_and_honours_the_mode() {
        let c = SchemaCache::new(&SchemaConfig::default());
        let schema = json!({"type":"object","required":["a"]});
        assert!(c.check(&key(1), &schema, Some(br#"{"a":1}"#)).is_ok());
        let first = c.get_or_compile(&key(1), &schema);
        assert!(Arc::ptr_eq(&first, &c.get_or_compile(&key(1), &json!({}))));
        assert!(c.check(&key(2), &schema, Some(b"{}")).is_err());
        assert_eq!(c.len(), 2);
        c.retain("u", 2);
        assert_eq!(c.len(), 1);
        let bad = json!({"$ref":"http://x/y"});
        assert!(matches!(
            c.check(&key(3), &bad, None),
            Err(CheckError::Schema(_))
        ));
        let fwd = SchemaCache::new(&SchemaConfig {
            on_uncompilable: Uncompilable::Forward,
            ..Default::default()
        });
        assert!(fwd.check(&key(3), &bad, None).is_ok());
    }
}
