//! The approval gate: the shared records ([`ApprovalRequest`], [`ApprovalDecision`]) and the
//! hub's in-process [`ApprovalRegistry`] of held calls.
//!
//! Runs in the `policy` stage when the rule says `requires_approval`:
//!
//! ```text
//! worker: (id, rx) = registry.hold(request)   -- audit approval_held, keep the client's SSE alive
//!         decision = rx.await                 -- a tokio oneshot: runtime-agnostic, no timer
//! admin endpoint / control plane: registry.decide(id, decision)   -> Ok(outcome) to audit
//! expiry thread (std): at expires_at, decide(id, expired)          -> observer audits it
//! shutdown: registry.deny_all("hub restarting")                    -> every waiter gets rejected
//! ```
//!
//! - The same two records are what the control plane (issue 12) queues and decides, so they are
//!   plain serde types with stable field names.
//! - Expiry = deny. A single `meshgate-approvals` std thread sleeps until the earliest deadline
//!   (a condvar wait with timeout); waiters never need a timer of their own.
//! - Every outcome is returned to whoever caused it ([`ApprovalRegistry::decide`],
//!   [`ApprovalRegistry::deny_all`]) and also passed to the optional observer, so the hub can
//!   audit every outcome in one place even when the waiting client has gone away.
//! - Locks: one mutex over the pending map, held only for inserts/removals (never across an
//!   await or a send to a waiter that could block — oneshot sends never block).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A held call, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRequest {
    /// Random id (hex); minted by [`ApprovalRegistry::hold`] when empty.
    #[serde(default)]
    pub id: String,
    /// The hub replica holding the call.
    pub hub: String,
    /// The tool's original (upstream) name.
    pub tool: String,
    /// The upstream that serves it.
    pub upstream: String,
    /// The call's arguments with the rule's `redact_arguments` masked.
    pub arguments: serde_json::Value,
    /// The principal's id ([`crate::principal::Principal::binding`]).
    pub principal: String,
    /// Why approval is needed (the rule, its classification).
    pub reason: String,
    /// Who may approve.
    #[serde(default)]
    pub approval_group: Option<String>,
    /// Unix milliseconds when held.
    pub created_at: u64,
    /// Unix milliseconds when it expires (= rejected as `expired`).
    pub expires_at: u64,
}

impl ApprovalRequest {
    /// The request for a call held by `rule`: arguments masked per `rule.redact_arguments`,
    /// `expires_at` from `rule.approval_timeout`, the reason naming the rule.
    pub fn for_call(
        hub: &str,
        upstream: &str,
        tool: &str,
        arguments: &serde_json::Value,
        principal: &crate::principal::Principal,
        rule: &crate::policy::ToolRule,
    ) -> Self {
        let now = now_ms();
        let reason = match &rule.classification {
            Some(c) => format!("policy rule `{}` ({c}) requires approval", rule.pattern),
            None => format!("policy rule `{}` requires approval", rule.pattern),
        };
        ApprovalRequest {
            id: String::new(),
            hub: hub.to_string(),
            tool: tool.to_string(),
            upstream: upstream.to_string(),
            arguments: crate::redact::redact_arguments(
                arguments,
                &rule.redact_arguments,
                "[REDACTED]",
            ),
            principal: principal.binding().to_string(),
            reason,
            approval_group: rule.approval_group.as_deref().map(str::to_string),
            created_at: now,
            expires_at: now.saturating_add(rule.approval_timeout.as_millis() as u64),
        }
    }
}

impl From<ApprovalOutcome> for crate::audit::AuditKind {
    fn from(o: ApprovalOutcome) -> Self {
        match o {
            ApprovalOutcome::Approved => crate::audit::AuditKind::ApprovalApproved,
            ApprovalOutcome::Rejected => crate::audit::AuditKind::ApprovalRejected,
            ApprovalOutcome::Expired => crate::audit::AuditKind::ApprovalExpired,
        }
    }
}

/// How an approval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// Run the call.
    Approved,
    /// Do not run it; the client gets a tool error with the comment.
    Rejected,
    /// Nobody decided in time: denied.
    Expired,
}

/// An operator's (or the timer's, or shutdown's) decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    /// The request's id.
    pub id: String,
    /// The outcome.
    pub outcome: ApprovalOutcome,
    /// Who decided (`operator:<name>`, `timer`, `hub`).
    pub by: String,
    /// Free text shown to the client on rejection.
    #[serde(default)]
    pub comment: Option<String>,
    /// Unix milliseconds of the decision.
    pub decided_at: u64,
}

/// Why [`ApprovalRegistry::decide`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// No pending request has this id (never held, already decided, expired or cancelled).
    #[error("no pending approval {0:?} (unknown, already decided or expired)")]
    NotFound(String),
    /// `decide` was given `expired`; only the registry expires requests.
    #[error("an operator decides approved or rejected; expiry is the registry's")]
    ExpiredByOperator,
}

/// A request that was decided, with its decision (what the hub audits).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The request as it was held.
    pub request: ApprovalRequest,
    /// The decision.
    pub decision: ApprovalDecision,
    /// Whether a waiter was still there to receive it.
    pub delivered: bool,
}

/// Called for every decided request (any cause), on the thread that decided it; must not block.
pub type Observer = Box<dyn Fn(&Decided) + Send + Sync>;

struct Pending {
    request: ApprovalRequest,
    tx: oneshot::Sender<ApprovalDecision>,
}

struct Inner {
    pending: Mutex<HashMap<String, Pending>>,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    observer: Option<Observer>,
}

/// The hub's held calls; `Send + Sync`, share it through an `Arc`.
pub struct ApprovalRegistry {
    inner: Arc<Inner>,
    timer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ApprovalRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalRegistry")
            .field("pending", &self.inner.pending.lock().len())
            .finish()
    }
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    hex::encode(b)
}

impl ApprovalRegistry {
    /// A registry with its expiry thread; `observer` sees every outcome.
    pub fn new(observer: Option<Observer>) -> Self {
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            observer,
        });
        let weak = Arc::downgrade(&inner);
        let timer = std::thread::Builder::new()
            .name("meshgate-approvals".into())
            .spawn(move || expiry_loop(weak))
            .ok();
        ApprovalRegistry { inner, timer }
    }

    /// Holds a call: returns its id and the receiver the worker awaits. The request's `id` is
    /// minted when empty; `created_at` is set when zero.
    pub fn hold(
        &self,
        mut request: ApprovalRequest,
    ) -> (String, oneshot::Receiver<ApprovalDecision>) {
        if request.id.is_empty() {
            request.id = random_id();
        }
        if request.created_at == 0 {
            request.created_at = now_ms();
        }
        let id = request.id.clone();
        let (tx, rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .insert(id.clone(), Pending { request, tx });
        self.kick();
        (id, rx)
    }

    /// Records an operator's decision (`approved` or `rejected`) and wakes the waiter.
    ///
    /// # Errors
    /// [`ApprovalError::NotFound`] when nothing is pending under that id;
    /// [`ApprovalError::ExpiredByOperator`] for an `expired` outcome.
    pub fn decide(&self, mut decision: ApprovalDecision) -> Result<Decided, ApprovalError> {
        if decision.outcome == ApprovalOutcome::Expired {
            return Err(ApprovalError::ExpiredByOperator);
        }
        if decision.decided_at == 0 {
            decision.decided_at = now_ms();
        }
        let p = self
            .inner
            .pending
            .lock()
            .remove(&decision.id)
            .ok_or_else(|| ApprovalError::NotFound(decision.id.clone()))?;
        Ok(self.inner.finish(p, decision))
    }

    /// Drops a held call whose client went away (no decision, nothing to audit but the
    /// cancellation, which the hub records itself). Returns the request if it was pending.
    pub fn cancel(&self, id: &str) -> Option<ApprovalRequest> {
        self.inner.pending.lock().remove(id).map(|p| p.request)
    }

    /// The pending requests, oldest first.
    pub fn pending(&self) -> Vec<ApprovalRequest> {
        let mut v: Vec<ApprovalRequest> = self
            .inner
            .pending
            .lock()
            .values()
            .map(|p| p.request.clone())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    /// Rejects every pending request with `reason` (hub shutdown/restart); returns the outcomes.
    pub fn deny_all(&self, reason: &str) -> Vec<Decided> {
        let drained: Vec<Pending> = self.inner.pending.lock().drain().map(|(_, p)| p).collect();
        let at = now_ms();
        drained
            .into_iter()
            .map(|p| {
                let d = ApprovalDecision {
                    id: p.request.id.clone(),
                    outcome: ApprovalOutcome::Rejected,
                    by: "hub".into(),
                    comment: Some(reason.to_string()),
                    decided_at: at,
                };
                self.inner.finish(p, d)
            })
            .collect()
    }

    /// Expires every request whose deadline is at or before `now_ms` (the timer thread calls
    /// this; tests may too). Returns the outcomes.
    pub fn expire_due(&self, now_ms: u64) -> Vec<Decided> {
        self.inner.expire_due(now_ms)
    }

    fn kick(&self) {
        let mut flag = self.inner.wake_lock.lock();
        *flag = true;
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn finish(&self, p: Pending, decision: ApprovalDecision) -> Decided {
        let delivered = p.tx.send(decision.clone()).is_ok();
        let d = Decided {
            request: p.request,
            decision,
            delivered,
        };
        if let Some(obs) = &self.observer {
            obs(&d);
        }
        d
    }

    fn expire_due(&self, now: u64) -> Vec<Decided> {
        let due: Vec<Pending> = {
            let mut map = self.pending.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, p)| p.request.expires_at <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        due.into_iter()
            .map(|p| {
                let d = ApprovalDecision {
                    id: p.request.id.clone(),
                    outcome: ApprovalOutcome::Expired,
                    by: "timer".into(),
                    comment: Some("no decision before the approval timeout".into()),
                    decided_at: now,
                };
                self.finish(p, d)
            })
            .collect()
    }

    fn next_deadline(&self) -> Option<u64> {
        self.pending
            .lock()
            .values()
            .map(|p| p.request.expires_at)
            .min()
    }
}

fn expiry_loop(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let now = now_ms();
        inner.expire_due(now);
        // Sleep until the next deadline (at most 1 s, so a dropped registry ends the thread).
        let wait = inner
            .next_deadline()
            .map(|d| d.saturating_sub(now))
            .unwrap_or(1000)
            .clamp(1, 1000);
        let mut flag = inner.wake_lock.lock();
        if !*flag {
            inner.wake.wait_for(&mut flag, Duration::from_millis(wait));
        }
        *flag = false;
    }
}

impl Drop for ApprovalRegistry {
    fn drop(&mut self) {
        // Waiters still holding receivers see their sender dropped (= the hub went away).
        self.inner.pending.lock().clear();
        self.kick();
        if let Some(t) = self.timer.take() {
            // The thread exits within a second once the last strong reference is gone; do not
            // join (a registry dropped on a worker must not block it).
            drop(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn req(expires_in_ms: u64) -> ApprovalRequest {
        ApprovalRequest {
            id: String::new(),
            hub: "hub-a".into(),
            tool: "pay".into(),
            upstream: "payments".into(),
            arguments: serde_json::json!({"amount": 5}),
            principal: "jwt:i#alice".into(),
            reason: "requires approval".into(),
            approval_group: Some("finance".into()),
            created_at: 0,
            expires_at: now_ms() + expires_in_ms,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn approve_reject_expire_and_deny_all_each_reach_the_waiter_and_the_observer() {
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        let reg = ApprovalRegistry::new(Some(Box::new(move |_d| {
            s2.fetch_add(1, Ordering::SeqCst);
        })));
        let (a, rx_a) = reg.hold(req(60_000));
        let (b, rx_b) = reg.hold(req(60_000));
        let (_c, rx_c) = reg.hold(req(50));
        let (_d, rx_d) = reg.hold(req(60_000));
        assert_eq!(reg.pending().len(), 4);
        let out = reg
            .decide(ApprovalDecision {
                id: a.clone(),
                outcome: ApprovalOutcome::Approved,
                by: "operator:bob".into(),
                comment: None,
                decided_at: 0,
            })
            .unwrap();
        assert!(out.delivered);
        assert_eq!(block_on(rx_a).unwrap().outcome, ApprovalOutcome::Approved);
        reg.decide(ApprovalDecision {
            id: b.clone(),
            outcome: ApprovalOutcome::Rejected,
            by: "operator:bob".into(),
            comment: Some("no".into()),
            decided_at: 0,
        })
        .unwrap();
        assert_eq!(block_on(rx_b).unwrap().comment.as_deref(), Some("no"));
        // The timer thread expires c without anyone calling in (the wait is bounded at 10 s).
        let got = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), rx_c).await })
            .expect("the expiry thread answers within 10 s")
            .unwrap();
        assert_eq!(got.outcome, ApprovalOutcome::Expired);
        assert_eq!(got.by, "timer");
        let denied = reg.deny_all("hub restarting");
        assert_eq!(denied.len(), 1);
        let d = block_on(rx_d).unwrap();
        assert_eq!(d.outcome, ApprovalOutcome::Rejected);
        assert_eq!(d.comment.as_deref(), Some("hub restarting"));
        assert!(reg.pending().is_empty());
        assert_eq!(seen.load(Ordering::SeqCst), 4);
        let again = reg.decide(ApprovalDecision {
            id: a.clone(),
            outcome: ApprovalOutcome::Approved,
            by: "x".into(),
            comment: None,
            decided_at: 0,
        });
        assert_eq!(again, Err(ApprovalError::NotFound(a)));
    }

    #[test]
    fn requests_for_calls_mask_arguments() {
        let cfg: crate::policy::PolicyConfig = serde_json::from_value(serde_json::json!({"tools": [
            {"match": "payments/*", "requires_approval": true, "approval_group": "finance",
             "approval_timeout": "2m", "classification": "restricted", "redact_arguments": ["/card"]}
        ]}))
        .unwrap();
        let p = crate::policy::CompiledPolicy::compile(&cfg).unwrap();
        let rule = p.rule_for("payments", "pay");
        let alice = crate::principal::Principal::jwt("i", "alice", [""; 0], [""; 0], None);
        let r = ApprovalRequest::for_call(
            "hub-a",
            "payments",
            "pay",
            &serde_json::json!({"card": "4111", "amount": 5}),
            &alice,
            rule,
        );
        assert_eq!(
            r.arguments,
            serde_json::json!({"card": "[REDACTED]", "amount": 5})
        );
        assert_eq!(r.expires_at - r.created_at, 120_000);
        assert_eq!(r.approval_group.as_deref(), Some("finance"));
        assert!(r.reason.contains("restricted"));
        assert_eq!(
            crate::audit::AuditKind::from(ApprovalOutcome::Expired),
            crate::audit::AuditKind::ApprovalExpired
        );
    }

    #[test]
    fn expiry_is_deny_and_observed() {
        let reg = ApprovalRegistry::new(None);
        let (_id, rx) = reg.hold(req(0));
        // Either this call or the timer thread (racing it) expires the request, exactly once.
        let out = reg.expire_due(now_ms() + 1);
        assert!(out.len() <= 1);
        assert!(out
            .iter()
            .all(|d| d.decision.outcome == ApprovalOutcome::Expired));
        assert_eq!(block_on(rx).unwrap().outcome, ApprovalOutcome::Expired);
        assert!(reg.pending().is_empty());
        assert_eq!(
            reg.decide(ApprovalDecision {
                id: "x".into(),
                outcome: ApprovalOutcome::Expired,
                by: "op".into(),
                comment: None,
                decided_at: 0
            }),
            Err(ApprovalError::ExpiredByOperator)
        );
    }
}
