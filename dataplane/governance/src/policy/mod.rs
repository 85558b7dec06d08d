//! Tool policy: the playbook-shaped config, compiled once into hash lookups and bit masks.
//!
//! Sits in the `policy` stage (and in `route`, when the hub merges `tools/list`):
//!
//! ```text
//! identify ──Principal──> policy.classify(&p) ──VisibilityClass──┐
//!                                                                ├─> lists cached per (upstream, class)
//! tools/call (upstream, tool) ──> table.rule(upstream, tool) ────┴─> access(class, rule): Allowed | Hidden | InsufficientScope
//!                                                                    then limits (rate, loop), then approval gate
//! ```
//!
//! - **Config** ([`PolicyConfig`]): ordered `tools:` entries matched by glob on `upstream/name`
//!   (`payments/*`, `*/delete_*`; `*` never crosses `/`), first match wins; entries carry
//!   `classification`, `requires_approval`, `approval_group`, `approval_timeout`,
//!   `max_execution_timeout_ms`, `cache_ttl_seconds`, `roles` (any of), `scopes` (all of),
//!   `deny`, a per-tool `rate_limit`, `redact` rules for results and `redact_arguments` pointers
//!   for the arguments shown to approvers. Global `max_loop_steps` + `loop_window`, rate limits
//!   per principal and per (principal, tool). A tool no entry matches gets `unmatched`
//!   (`allow` by default so a hub without a policy works; security teams set `deny`).
//! - **Compile** ([`CompiledPolicy::compile`]): every role and scope that any rule mentions gets
//!   one bit. A principal's [`VisibilityClass`] is the mask of the mentioned roles/scopes it
//!   holds, so two principals with the same mask see exactly the same tools: the hub caches a
//!   merged list per (upstream, class), not per session. Roles and scopes no rule mentions
//!   cannot change any decision and are ignored.
//! - **Decide**: [`ToolTable`] maps each catalogued (upstream, tool) to its rule once per catalog
//!   version (glob matching happens there, off the request path); a decision is then two hash
//!   lookups and two mask tests ([`CompiledPolicy::authorize`]). A tool the principal may not
//!   use is [`Access::Hidden`], which the hub must render exactly like an unknown tool.
//! - **Limits** ([`limits`]): token buckets and the loop lock, shared by all workers.

pub mod limits;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigDuration, ConfigError};
use crate::principal::Principal;
use crate::redact::{RedactRule, Redactor};
pub use limits::{LoopGuard, LoopLimited, LoopSpec, RateLimited, RateLimiter, RateScope, RateSpec};

// === config ===

/// What a tool that no `tools:` entry matches gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Visible and callable by everyone (the default, so a hub without a policy works).
    #[default]
    Allow,
    /// Hidden from everyone (looks unknown).
    Deny,
}

/// What a principal that has the roles but lacks a rule's `scopes` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingScope {
    /// The tool is hidden (looks unknown) — the default.
    #[default]
    Hide,
    /// The tool is listed, and a call answers HTTP 403 `insufficient_scope` naming the scopes,
    /// so the client can step up its token.
    Challenge,
}

/// A token-bucket rate: `rate` calls per `per`, bursts up to `burst` (default `rate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpecConfig {
    /// Calls allowed per `per`.
    pub rate: u32,
    /// The period of `rate` (default `1s`).
    #[serde(default = "one_second")]
    pub per: ConfigDuration,
    /// Largest burst (default: `rate`).
    #[serde(default)]
    pub burst: Option<u32>,
}

fn one_second() -> ConfigDuration {
    ConfigDuration::secs(1)
}

/// Global rate limits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// All requests of one principal (checked before parsing; HTTP 429 + `Retry-After`).
    #[serde(default)]
    pub per_principal: Option<RateSpecConfig>,
    /// Tool calls of one principal to one tool (a tool error); a rule's `rate_limit` overrides it.
    #[serde(default)]
    pub per_tool: Option<RateSpecConfig>,
    /// Most buckets kept (idle ones are evicted first; default 100000).
    #[serde(default)]
    pub max_buckets: Option<usize>,
}

/// One `tools:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPolicyConfig {
    /// Glob on `upstream/name`: `payments/*`, `*/delete_*`, `crm/get_?`; `*` stays within a part.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Free-form label (`public`, `internal`, `restricted`…) copied to audit records.
    #[serde(default)]
    pub classification: Option<String>,
    /// Calls are held until an operator approves (or the approval times out = denied).
    #[serde(default)]
    pub requires_approval: bool,
    /// Who may approve (an operator group name).
    #[serde(default)]
    pub approval_group: Option<String>,
    /// How long a held call waits for a decision (default 10m).
    #[serde(default)]
    pub approval_timeout: Option<ConfigDuration>,
    /// Upper bound on the upstream call.
    #[serde(default)]
    pub max_execution_timeout_ms: Option<u64>,
    /// How long the hub may cache a result of this tool (0 = never).
    #[serde(default)]
    pub cache_ttl_seconds: Option<u64>,
    /// Principals holding any of these roles may use the tool (empty = no role needed).
    #[serde(default)]
    pub roles: Vec<String>,
    /// Principals must hold all of these scopes (empty = none needed).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// What a principal lacking `scopes` gets (default `hide`).
    #[serde(default)]
    pub on_missing_scope: MissingScope,
    /// Hide the tool from everyone.
    #[serde(default)]
    pub deny: bool,
    /// Per (principal, tool) rate for this tool (overrides `rate_limits.per_tool`).
    #[serde(default)]
    pub rate_limit: Option<RateSpecConfig>,
    /// Redaction applied to this tool's results.
    #[serde(default)]
    pub redact: Vec<RedactRule>,
    /// JSON pointers into the arguments masked in approval requests (what approvers see).
    #[serde(default)]
    pub redact_arguments: Vec<String>,
    /// Validate arguments against the tool's `inputSchema` (default true).
    #[serde(default = "yes")]
    pub validate_arguments: bool,
}

fn yes() -> bool {
    true
}

fn ten_minutes() -> ConfigDuration {
    ConfigDuration::secs(600)
}

/// The policy file (or the `policy:` section of the hub config; later a control-plane snapshot).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What unmatched tools get (default `allow`).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// At most this many tool calls per session per `loop_window` (absent = no loop lock).
    #[serde(default)]
    pub max_loop_steps: Option<u32>,
    /// The loop lock's window (default 10m).
    #[serde(default = "ten_minutes")]
    pub loop_window: ConfigDuration,
    /// Rate limits.
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    /// Ordered tool rules; the first whose glob matches `upstream/name` applies.
    #[serde(default)]
    pub tools: Vec<ToolPolicyConfig>,
}

// === compiled ===

/// Most distinct roles + scopes that rules may mention (one bit each).
pub const MAX_ATTRIBUTES: usize = 256;

/// A bit per mentioned role/scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mask([u64; 4]);

impl Mask {
    fn set(&mut self, bit: u16) {
        self.0[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
    fn intersects(&self, other: &Mask) -> bool {
        (0..4).any(|i| self.0[i] & other.0[i] != 0)
    }
    fn contains(&self, other: &Mask) -> bool {
        (0..4).all(|i| self.0[i] & other.0[i] == other.0[i])
    }
}

/// Principals with equal classes see exactly the same tools and get the same decisions (under
/// one [`CompiledPolicy`]); key merged-list caches by `(upstream, class)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisibilityClass {
    mask: Mask,
    policy: u64,
}

impl VisibilityClass {
    /// A short stable id for logs and cache keys (a hash of the mask and the policy fingerprint).
    pub fn id(&self) -> u64 {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        self.mask.hash(&mut h);
        self.policy.hash(&mut h);
        h.finish()
    }
}

/// FNV-1a, for stable (non-adversarial) fingerprints.
struct Fnv(u64);
impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// One compiled rule (the `unmatched` default is a rule too, with `pattern` `"*"`).
#[derive(Debug)]
pub struct ToolRule {
    /// The glob it came from (`"<unmatched>"` for the default rule).
    pub pattern: Arc<str>,
    /// Position in `tools:` (the default rule comes last).
    pub index: u32,
    /// Label for audit records.
    pub classification: Option<Arc<str>>,
    /// Calls wait for an operator's decision.
    pub requires_approval: bool,
    /// Who may approve.
    pub approval_group: Option<Arc<str>>,
    /// How long a held call waits (default 10 minutes).
    pub approval_timeout: Duration,
    /// Upper bound on the upstream call.
    pub max_execution_timeout: Option<Duration>,
    /// Result cache lifetime (`None` or zero = do not cache).
    pub cache_ttl: Option<Duration>,
    /// Per (principal, tool) rate for this tool, if any (else the global per-tool rate).
    pub rate: Option<RateSpec>,
    /// Result redaction, if the rule has `redact` entries.
    pub redactor: Option<Arc<Redactor>>,
    /// Pointers masked in approval requests.
    pub redact_arguments: Box<[String]>,
    /// Validate arguments against `inputSchema`.
    pub validate_arguments: bool,
    /// The scopes the rule requires (for the 403 challenge).
    pub required_scopes: Box<[Arc<str>]>,
    deny: bool,
    roles: Mask,
    scopes: Mask,
    challenge: bool,
}

/// The outcome of [`CompiledPolicy::authorize`].
#[derive(Debug, Clone, Copy)]
pub enum Access<'a> {
    /// May call; the rule carries approval, timeout, cache, rate and redaction settings.
    Allowed(&'a ToolRule),
    /// Must look exactly like an unknown tool (JSON-RPC -32602 "unknown tool"); audit as
    /// `hidden_called`.
    Hidden,
    /// Has the roles but lacks scopes and the rule says `challenge`: HTTP 403 with
    /// `WWW-Authenticate: Bearer error="insufficient_scope", scope="<these, plus granted>"`.
    InsufficientScope(&'a ToolRule),
}

/// The compiled policy of one snapshot: immutable, `Send + Sync`, shared through an `Arc`.
#[derive(Debug)]
pub struct CompiledPolicy {
    rules: Box<[ToolRule]>,
    globs: GlobSet,
    roles: HashMap<Arc<str>, u16>,
    scopes: HashMap<Arc<str>, u16>,
    fingerprint: u64,
    /// The loop lock, if `max_loop_steps` is set.
    pub loop_spec: Option<LoopSpec>,
    /// The per-principal rate, if set.
    pub principal_rate: Option<RateSpec>,
    /// The global per (principal, tool) rate, if set.
    pub tool_rate: Option<RateSpec>,
    /// `rate_limits.max_buckets` (default 100000).
    pub max_buckets: usize,
}

fn rate_spec(field: &str, c: &Option<RateSpecConfig>) -> Result<Option<RateSpec>, ConfigError> {
    match c {
        None => Ok(None),
        Some(c) => RateSpec::new(c.rate, c.per.get(), c.burst.unwrap_or(c.rate))
            .map(Some)
            .ok_or_else(|| {
                ConfigError::new(
                    field,
                    "rate and burst must be at least 1 and `per` more than 0",
                )
            }),
    }
}

impl CompiledPolicy {
    /// Compiles `cfg`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: a bad glob, a bad rate, an invalid redaction rule, or
    /// more than [`MAX_ATTRIBUTES`] distinct roles and scopes.
    pub fn compile(cfg: &PolicyConfig) -> Result<Self, ConfigError> {
        let mut roles: HashMap<Arc<str>, u16> = HashMap::new();
        let mut scopes: HashMap<Arc<str>, u16> = HashMap::new();
        let mut next_bit: usize = 0;
        let mut intern = |map: &mut HashMap<Arc<str>, u16>,
                          name: &str,
                          field: String|
         -> Result<u16, ConfigError> {
            if name.is_empty() {
                return Err(ConfigError::new(field, "empty role/scope name"));
            }
            if let Some(b) = map.get(name) {
                return Ok(*b);
            }
            if next_bit >= MAX_ATTRIBUTES {
                return Err(ConfigError::new(
                    field,
                    format!("more than {MAX_ATTRIBUTES} distinct roles and scopes are mentioned"),
                ));
            }
            let b = next_bit as u16;
            next_bit += 1;
            map.insert(Arc::from(name), b);
            Ok(b)
        };
        let mut globs = GlobSetBuilder::new();
        let mut rules = Vec::with_capacity(cfg.tools.len() + 1);
        let tool_rate = rate_spec("policy.rate_limits.per_tool", &cfg.rate_limits.per_tool)?;
        for (i, t) in cfg.tools.iter().enumerate() {
            let f = |name: &str| format!("policy.tools[{i}].{name}");
            if t.pattern.is_empty() {
                return Err(ConfigError::new(f("match"), "empty glob"));
            }
            let glob = GlobBuilder::new(&t.pattern)
                .literal_separator(true)
                .build()
                .map_err(|e| ConfigError::new(f("match"), format!("bad glob: {e}")))?;
            globs.add(glob);
            let mut rmask = Mask::default();
            for (j, r) in t.roles.iter().enumerate() {
                rmask.set(intern(&mut roles, r, f(&format!("roles[{j}]")))?);
            }
            let mut smask = Mask::default();
            for (j, s) in t.scopes.iter().enumerate() {
                smask.set(intern(&mut scopes, s, f(&format!("scopes[{j}]")))?);
            }
            let redactor = if t.redact.is_empty() {
                None
            } else {
                Some(Arc::new(Redactor::compile(&t.redact, &f("redact"))?))
            };
            for (j, p) in t.redact_arguments.iter().enumerate() {
                if !(p.is_empty() || p.starts_with('/')) {
                    return Err(ConfigError::new(
                        f(&format!("redact_arguments[{j}]")),
                        "a JSON pointer starts with `/`",
                    ));
                }
            }
            if t.approval_group.is_some() && !t.requires_approval {
                return Err(ConfigError::new(
                    f("approval_group"),
                    "set only with requires_approval: true",
                ));
            }
            let mut required: Vec<Arc<str>> = t.scopes.iter().map(|s| Arc::from(&**s)).collect();
            required.sort();
            required.dedup();
            rules.push(ToolRule {
                pattern: Arc::from(&*t.pattern),
                index: i as u32,
                classification: t.classification.as_deref().map(Arc::from),
                requires_approval: t.requires_approval,
                approval_group: t.approval_group.as_deref().map(Arc::from),
                approval_timeout: t
                    .approval_timeout
                    .map(|d| d.get())
                    .unwrap_or(Duration::from_secs(600)),
                max_execution_timeout: t.max_execution_timeout_ms.map(Duration::from_millis),
                cache_ttl: t.cache_ttl_seconds.map(Duration::from_secs),
                rate: rate_spec(&f("rate_limit"), &t.rate_limit)?,
                redactor,
                redact_arguments: t.redact_arguments.clone().into_boxed_slice(),
                validate_arguments: t.validate_arguments,
                required_scopes: required.into_boxed_slice(),
                deny: t.deny,
                roles: rmask,
                scopes: smask,
                challenge: t.on_missing_scope == MissingScope::Challenge,
            });
        }
        rules.push(ToolRule {
            pattern: Arc::from("<unmatched>"),
            index: cfg.tools.len() as u32,
            classification: None,
            requires_approval: false,
            approval_group: None,
            approval_timeout: Duration::from_secs(600),
            max_execution_timeout: None,
            cache_ttl: None,
            rate: None,
            redactor: None,
            redact_arguments: Box::new([]),
            validate_arguments: true,
            required_scopes: Box::new([]),
            deny: cfg.unmatched == Unmatched::Deny,
            roles: Mask::default(),
            scopes: Mask::default(),
            challenge: false,
        });
        let globs = globs
            .build()
            .map_err(|e| ConfigError::new("policy.tools", format!("bad glob set: {e}")))?;
        let loop_spec = match cfg.max_loop_steps {
            None => None,
            Some(0) => {
                return Err(ConfigError::new(
                    "policy.max_loop_steps",
                    "must be at least 1 (omit it for no loop lock)",
                ))
            }
            Some(n) => Some(LoopSpec::new(n, cfg.loop_window.get()).ok_or_else(|| {
                ConfigError::new("policy.loop_window", "must be between 1ms and 1 year")
            })?),
        };
        let principal_rate = rate_spec(
            "policy.rate_limits.per_principal",
            &cfg.rate_limits.per_principal,
        )?;
        let mut fp = Fnv(0xcbf2_9ce4_8422_2325);
        serde_json::to_string(cfg).unwrap_or_default().hash(&mut fp);
        Ok(CompiledPolicy {
            rules: rules.into_boxed_slice(),
            globs,
            roles,
            scopes,
            fingerprint: fp.finish(),
            loop_spec,
            principal_rate,
            tool_rate,
            max_buckets: cfg.rate_limits.max_buckets.unwrap_or(100_000),
        })
    }

    /// The policy of a hub without one: every tool visible to everyone, no limits.
    pub fn allow_all() -> Self {
        Self::compile(&PolicyConfig::default()).expect("the default policy compiles")
    }

    /// A fingerprint of the policy's content (equal configs give equal fingerprints).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The principal's visibility class: which mentioned roles/scopes it holds. Costs one hash
    /// lookup per role and scope of the principal; cache it per request (or per token).
    pub fn classify(&self, p: &Principal) -> VisibilityClass {
        let mut mask = Mask::default();
        // Roles and scopes share one bit space; a name that is both a role and a scope gets
        // separate bits (each map assigns its own).
        for r in p.roles.iter() {
            if let Some(b) = self.roles.get(r) {
                mask.set(*b);
            }
        }
        for s in p.scopes.iter() {
            if let Some(b) = self.scopes.get(s) {
                mask.set(*b);
            }
        }
        VisibilityClass {
            mask,
            policy: self.fingerprint,
        }
    }

    /// The rule for `upstream/tool` by glob matching (allocates; for catalog-time use or a tool
    /// missing from the [`ToolTable`]).
    pub fn rule_for(&self, upstream: &str, tool: &str) -> &ToolRule {
        let mut path = String::with_capacity(upstream.len() + tool.len() + 1);
        path.push_str(upstream);
        path.push('/');
        path.push_str(tool);
        let idx = self
            .globs
            .matches(&path)
            .into_iter()
            .min()
            .unwrap_or(self.rules.len() - 1);
        &self.rules[idx]
    }

    /// The rules, in `tools:` order, the `unmatched` default last.
    pub fn rules(&self) -> &[ToolRule] {
        &self.rules
    }

    /// The decision for a class and a rule: two mask tests.
    pub fn access<'a>(&self, class: &VisibilityClass, rule: &'a ToolRule) -> Access<'a> {
        if rule.deny || class.policy != self.fingerprint {
            return Access::Hidden;
        }
        if !rule.roles.is_empty() && !class.mask.intersects(&rule.roles) {
            return Access::Hidden;
        }
        if !class.mask.contains(&rule.scopes) {
            return if rule.challenge {
                Access::InsufficientScope(rule)
            } else {
                Access::Hidden
            };
        }
        Access::Allowed(rule)
    }

    /// The decision for (class, upstream, tool): `table` lookup (glob fallback for a tool the
    /// table does not know), then [`Self::access`].
    pub fn authorize<'a>(
        &'a self,
        table: &ToolTable,
        class: &VisibilityClass,
        upstream: &str,
        tool: &str,
    ) -> Access<'a> {
        let rule = match table.index(upstream, tool) {
            Some(i) if table.policy == self.fingerprint => &self.rules[i as usize],
            _ => self.rule_for(upstream, tool),
        };
        self.access(class, rule)
    }

    /// Whether the tool appears in this class's lists (allowed, or listed for a scope challenge).
    pub fn visible(
        &self,
        table: &ToolTable,
        class: &VisibilityClass,
        upstream: &str,
        tool: &str,
    ) -> bool {
        !matches!(self.authorize(table, class, upstream, tool), Access::Hidden)
    }

    /// Builds the (upstream, tool) → rule table for a catalog (call when the catalog changes).
    pub fn tool_table<'s>(&self, tools: impl IntoIterator<Item = (&'s str, &'s str)>) -> ToolTable {
        let mut map: HashMap<Arc<str>, HashMap<Arc<str>, u32>> = HashMap::new();
        for (u, t) in tools {
            let idx = self.rule_for(u, t).index;
            map.entry(Arc::from(u))
                .or_default()
                .insert(Arc::from(t), idx);
        }
        ToolTable {
            map,
            policy: self.fingerprint,
        }
    }
}

/// (upstream, tool) → rule index for one catalog version and one policy.
#[derive(Debug, Default)]
pub struct ToolTable {
    map: HashMap<Arc<str>, HashMap<Arc<str>, u32>>,
    policy: u64,
}

impl ToolTable {
    fn index(&self, upstream: &str, tool: &str) -> Option<u32> {
        self.map.get(upstream)?.get(tool).copied()
    }
    /// Number of tools in the table.
    pub fn len(&self) -> usize {
        self.map.values().map(HashMap::len).sum()
    }
    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// === the whole policy stage for one call ===

/// The outcome of [`check_call`], in the order the checks run.
#[derive(Debug)]
pub enum CallDecision<'a> {
    /// Forward (after schema validation); the rule carries timeouts, cache and redaction.
    Allowed(&'a ToolRule),
    /// Allowed, but hold for an operator first (`rule.requires_approval`).
    NeedsApproval(&'a ToolRule),
    /// Render as "unknown tool"; audit `hidden_called`.
    Hidden,
    /// HTTP 403 `insufficient_scope` with `rule.required_scopes`.
    InsufficientScope(&'a ToolRule),
    /// The per-(principal, tool) bucket is empty: a tool error saying so.
    RateLimited(RateLimited),
    /// The session hit `max_loop_steps` in the window: a tool error saying so.
    LoopLimited(LoopLimited),
}

/// The policy stage for a `tools/call`: visibility → per-tool rate → loop lock → approval.
/// (The per-principal rate runs earlier, before parsing: [`RateLimiter::check_principal`].)
/// The hub audits every outcome but `Allowed`/`NeedsApproval` right away.
#[allow(clippy::too_many_arguments)]
pub fn check_call<'a>(
    policy: &'a CompiledPolicy,
    table: &ToolTable,
    limiter: &RateLimiter,
    loops: &LoopGuard,
    principal: &Principal,
    class: &VisibilityClass,
    session: &str,
    upstream: &str,
    tool: &str,
) -> CallDecision<'a> {
    let rule = match policy.authorize(table, class, upstream, tool) {
        Access::Hidden => return CallDecision::Hidden,
        Access::InsufficientScope(r) => return CallDecision::InsufficientScope(r),
        Access::Allowed(r) => r,
    };
    if let Some(spec) = rule.rate.as_ref().or(policy.tool_rate.as_ref()) {
        if let Err(e) = limiter.check_tool(principal, upstream, tool, spec) {
            return CallDecision::RateLimited(e);
        }
    }
    if let Some(spec) = &policy.loop_spec {
        if let Err(e) = loops.step(session, spec) {
            return CallDecision::LoopLimited(e);
        }
    }
    if rule.requires_approval {
        CallDecision::NeedsApproval(rule)
    } else {
        CallDecision::Allowed(rule)
    }
}

/// A keyed hasher for limiter keys (random per process, so keys cannot be steered).
pub(crate) fn keyed_hash<T: Hash>(state: &std::collections::hash_map::RandomState, v: T) -> u64 {
    state.hash_one(v)
}

#[cfg(test)]
mod tests;
