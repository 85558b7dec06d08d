//! One running stdio MCP server process and the multiplexer in front of it.
//!
//! A [`Mux`] owns one child (spawned by [`crate::supervisor`]), writes newline-delimited JSON-RPC
//! to its stdin and routes every line it prints. Over stdio nothing says which client request a
//! server message belongs to, except where the protocol carries a key; the mux routes by those
//! keys and never guesses across sessions where it cannot tell:
//! - responses go back to the waiting caller, with the agent-unique request id swapped back to the
//!   session's own id;
//! - `notifications/progress` go to the stream of the request whose (rewritten, agent-unique)
//!   `progressToken` they carry, token restored (unknown token: dropped);
//! - messages of a task (`notifications/tasks/status`, or any message whose `_meta` names a
//!   `related-task`) go to the GET stream of the session whose request created that task (the
//!   mux records the `taskId` of every `CreateTaskResult` it relays); unknown task: dropped;
//! - `notifications/elicitation/complete` goes only to the session that got the URL-mode
//!   `elicitation/create` with that `elicitationId`; unknown id: dropped;
//! - `notifications/resources/updated` goes to the GET streams of the sessions subscribed to the
//!   URI;
//! - every other notification (`notifications/message` logs, `list_changed`, ...) is not tied to
//!   a request: it goes to the GET streams of the sessions attached to this process, never to a
//!   POST stream and never to a session not attached (the GET streams keep it for replay when
//!   nobody is listening);
//! - server→client requests (sampling, elicitation, roots) go, with their id rewritten so the
//!   client's answer ([`Mux::respond`]) finds its way back: to the task's session when they name
//!   a `related-task`; else to the session with requests in flight, on the stream of its most
//!   recent one; else to the GET stream of the last caller still attached. **Ambiguous** and
//!   documented: when *several* sessions have requests in flight on one shared process, stdio
//!   does not say which call caused the request; it goes to the most recent call's stream (a
//!   shared server that needs exact attribution should run `mode: per-session`). With no session
//!   at hand the agent answers itself (`roots/list` → no roots, `ping` → `{}`, otherwise an
//!   error), so the server never waits forever.
//!
//! The agent initializes the child once ([`Mux::start`]); sessions get the cached
//! `InitializeResult`. Shared mode attaches many sessions to one `Mux`; per-session mode one.
//! When the child exits every in-flight call fails at once with "stdio server 'x' exited (...)".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use crate::body::Sink;
use crate::config::StdioConfig;
use crate::session::{lock, Session};
use crate::supervisor;

/// How a multiplexed call failed.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The child exited (message names the server and status) or could not be written to.
    Exited(String),
    /// The client cancelled the request (`notifications/cancelled`): no response is sent.
    Cancelled,
}

struct Pending {
    session: Option<Weak<Session>>,
    session_id: Option<String>,
    orig_id: Value,
    sink: Option<Sink>,
    done: oneshot::Sender<Value>,
    token: Option<(String, Value)>,
}

#[derive(Default)]
struct State {
    /// Keyed by agent request id; ascending = call order, so the last entry is the most recent.
    pending: BTreeMap<u64, Pending>,
    /// Agent progress token → agent request id.
    tokens: HashMap<String, u64>,
    /// Agent server→client request id → (child's id, session it was sent to).
    s2c: HashMap<String, (Value, Weak<Session>)>,
    sessions: HashMap<String, Weak<Session>>,
    /// Resource URI → sessions subscribed to it. The child sees one subscription per URI: the
    /// first subscriber's `resources/subscribe` and the last one's `resources/unsubscribe`.
    subs: HashMap<String, HashSet<String>>,
    last_caller: Option<Weak<Session>>,
    /// Task id (from a relayed `CreateTaskResult`) → the session whose request created it.
    tasks: RouteKeys,
    /// `elicitationId` of a URL-mode elicitation → the session it was sent to.
    elicitations: RouteKeys,
    exited: Option<String>,
}

/// Most routing keys (task ids, elicitation ids) remembered per process; the oldest go first.
const MAX_ROUTE_KEYS: usize = 1024;

/// `notifications/elicitation/complete` (URL-mode elicitation finished).
const ELICITATION_COMPLETE: &str = "notifications/elicitation/complete";
/// `notifications/tasks/status`.
const TASKS_STATUS: &str = "notifications/tasks/status";
/// The `_meta` key naming the task a message belongs to.
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// A bounded key → session map, oldest keys evicted first.
#[derive(Default)]
struct RouteKeys {
    map: HashMap<String, Weak<Session>>,
    order: std::collections::VecDeque<String>,
}

impl RouteKeys {
    fn insert(&mut self, key: String, s: &Arc<Session>) {
        if self.map.insert(key.clone(), Arc::downgrade(s)).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > MAX_ROUTE_KEYS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
    }

    fn get(&self, key: &str) -> Option<Arc<Session>> {
        self.map.get(key).and_then(Weak::upgrade)
    }

    fn remove(&mut self, key: &str) {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }
}

/// One child process and its multiplexer.
pub(crate) struct Mux {
    name: Arc<str>,
    /// The child's pid (and process group id).
    pub(crate) pid: i32,
    out: mpsc::UnboundedSender<Vec<u8>>,
    next: AtomicU64,
    st: Mutex<State>,
    exit: watch::Receiver<Option<String>>,
    init: Mutex<Option<Value>>,
    /// When the process was spawned.
    pub(crate) started: Instant,
}

impl std::fmt::Debug for Mux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mux")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // Nobody can reach this process any more.
        supervisor::kill_group(self.pid);
    }
}

static S2C_IDS: AtomicU64 = AtomicU64::new(1);

impl Mux {
    /// Spawns the child and performs the agent's own `initialize` handshake (bounded by
    /// `init_timeout`). Errors name the reason.
    pub(crate) async fn start(
        name: Arc<str>,
        cfg: &StdioConfig,
        init_timeout: Duration,
    ) -> Result<Arc<Mux>, String> {
        let sp = supervisor::spawn(&name, cfg)?;
        let supervisor::Spawned {
            mut child,
            pid,
            mut stdin,
            stdout,
        } = sp;
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                    break;
                }
            }
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let mux = Arc::new(Mux {
            name: name.clone(),
            pid,
            out: out_tx,
            next: AtomicU64::new(1),
            st: Mutex::new(State::default()),
            exit: exit_rx,
            init: Mutex::new(None),
            started: Instant::now(),
        });
        let weak = Arc::downgrade(&mux);
        let tag = name.clone();
        tokio::spawn(async move {
            let name = tag;
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(m) = weak.upgrade() else { break };
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => m.on_message(v),
                    Err(e) => {
                        tracing::warn!(server = %m.name, "non-JSON line on stdout ({e}): {line}")
                    }
                }
                drop(m);
                // Let the streams this message went to write it out before the next one: on the
                // agent's one-thread runtime a burst from the child would otherwise fill healthy
                // consumers' queues (and have them dropped as slow) before they ever ran.
                tokio::task::yield_now().await;
            }
            // stdout closed: the child is exiting (or was killed); make sure and reap it.
            supervisor::kill_group(pid);
            let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                Ok(Err(e)) => format!("wait failed: {e}"),
                Err(_) => "did not exit".to_owned(),
            };
            supervisor::release_group(pid);
            let msg = format!("stdio server '{name}' exited ({status})");
            tracing::warn!(server = %name, pid, "{msg}");
            if let Some(m) = weak.upgrade() {
                m.fail_all(&msg);
            }
            let _ = exit_tx.send(Some(msg));
        });
        let req = json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": mcp_wire::mcp::V2025_11_25,
                "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
                "clientInfo": {"name": "meshgate-edge", "version": env!("CARGO_PKG_VERSION")},
            }
        });
        let resp = match tokio::time::timeout(init_timeout, mux.call(None, req, None)).await {
            Ok(Ok(r)) => r,
            Ok(Err(CallError::Exited(e))) => return Err(format!("initialize failed: {e}")),
            Ok(Err(CallError::Cancelled)) => return Err("initialize was cancelled".to_owned()),
            Err(_) => {
                return Err(format!(
                    "stdio server '{name}' did not answer initialize within {init_timeout:?}"
                ))
            }
        };
        let Some(result) = resp.get("result").cloned() else {
            return Err(format!(
                "stdio server '{name}' rejected initialize: {}",
                resp.get("error").cloned().unwrap_or(Value::Null)
            ));
        };
        *lock(&mux.init) = Some(result);
        mux.write(&json!({"jsonrpc": "2.0", "method": mcp_wire::mcp::method::INITIALIZED}));
        Ok(mux)
    }

    /// The child's cached `InitializeResult`.
    pub(crate) fn init_result(&self) -> Value {
        lock(&self.init).clone().unwrap_or_else(|| json!({}))
    }

    /// Whether the child is still running.
    pub(crate) fn is_alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Resolves when the child has exited, with the exit message.
    pub(crate) async fn exited(&self) -> String {
        let mut rx = self.exit.clone();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                return format!("stdio server '{}' exited", self.name);
            }
        }
    }

    /// Kills the child's process group.
    pub(crate) fn kill(&self) {
        supervisor::kill_group(self.pid);
    }

    /// Number of sessions attached.
    pub(crate) fn session_count(&self) -> usize {
        let mut st = lock(&self.st);
        st.sessions.retain(|_, w| w.strong_count() > 0);
        st.sessions.len()
    }

    /// Attaches a session (it receives broadcasts).
    pub(crate) fn attach(&self, s: &Arc<Session>) {
        lock(&self.st)
            .sessions
            .insert(s.id.clone(), Arc::downgrade(s));
    }

    /// Detaches a session, dropping its resource subscriptions (the child is unsubscribed from
    /// URIs nobody else watches; its answer is ignored).
    pub(crate) fn detach(&self, id: &str) {
        let orphaned: Vec<String> = {
            let mut st = lock(&self.st);
            st.sessions.remove(id);
            let mut gone = Vec::new();
            st.subs.retain(|uri, set| {
                if set.remove(id) && set.is_empty() {
                    gone.push(uri.clone());
                }
                !set.is_empty()
            });
            gone
        };
        for uri in orphaned {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            self.write(&json!({"jsonrpc": "2.0", "id": n, "method": "resources/unsubscribe", "params": {"uri": uri}}));
        }
    }

    /// Records a (un)subscription; `true` if the child must see it (first subscriber or last
    /// unsubscriber), `false` if the agent answers it alone.
    fn track_subscription(&self, session: &Session, method: &str, msg: &Value) -> bool {
        let Some(uri) = msg.pointer("/params/uri").and_then(Value::as_str) else {
            return true;
        };
        let mut st = lock(&self.st);
        if method == mcp_wire::mcp::method::RESOURCES_SUBSCRIBE {
            let set = st.subs.entry(uri.to_owned()).or_default();
            let first = set.is_empty();
            set.insert(session.id.clone());
            first
        } else {
            let Some(set) = st.subs.get_mut(uri) else {
                return true;
            };
            set.remove(&session.id);
            let last = set.is_empty();
            if last {
                st.subs.remove(uri);
            }
            last
        }
    }

    fn write(&self, v: &Value) -> bool {
        let Ok(mut line) = serde_json::to_vec(v) else {
            return false;
        };
        line.push(b'\n');
        self.out.send(line).is_ok()
    }

    fn fail_all(&self, msg: &str) {
        let mut st = lock(&self.st);
        st.exited = Some(msg.to_owned());
        // Dropping the senders wakes every caller, who then reads `exited`.
        st.pending.clear();
        st.tokens.clear();
        st.s2c.clear();
    }

    /// Sends a request to the child on behalf of `session` and waits for its response, which is
    /// returned with the session's original id. Related messages go to `sink`.
    pub(crate) async fn call(
        &self,
        session: Option<&Arc<Session>>,
        mut msg: Value,
        sink: Option<Sink>,
    ) -> Result<Value, CallError> {
        let orig_id = msg.get("id").cloned().unwrap_or(Value::Null);
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        if let Some(s) = session {
            if (method == mcp_wire::mcp::method::RESOURCES_SUBSCRIBE
                || method == mcp_wire::mcp::method::RESOURCES_UNSUBSCRIBE)
                && !self.track_subscription(s, method, &msg)
                && self.is_alive()
            {
                return Ok(crate::body::rpc_result(&orig_id, json!({})));
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        msg["id"] = json!(n);
        let mut token = None;
        if let Some(meta) = msg
            .get_mut("params")
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        {
            if let Some(t) = meta.get("progressToken").cloned() {
                let nt = format!("edge-{n}");
                meta.insert("progressToken".into(), Value::String(nt.clone()));
                token = Some((nt, t));
            }
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.st);
            if let Some(e) = &st.exited {
                return Err(CallError::Exited(e.clone()));
            }
            if let Some((t, _)) = &token {
                st.tokens.insert(t.clone(), n);
            }
            if let Some(s) = session {
                st.last_caller = Some(Arc::downgrade(s));
            }
            st.pending.insert(
                n,
                Pending {
                    session: session.map(Arc::downgrade),
                    session_id: session.map(|s| s.id.clone()),
                    orig_id: orig_id.clone(),
                    sink,
                    done: tx,
                    token,
                },
            );
        }
        if !self.write(&msg) {
            self.forget(n);
            return Err(CallError::Exited(format!(
                "stdio server '{}' is not accepting input (exited)",
                self.name
            )));
        }
        match rx.await {
            Ok(mut v) => {
                v["id"] = orig_id;
                Ok(v)
            }
            Err(_) => match &lock(&self.st).exited {
                Some(e) => Err(CallError::Exited(e.clone())),
                None => Err(CallError::Cancelled),
            },
        }
    }

    fn forget(&self, n: u64) {
        let mut st = lock(&self.st);
        if let Some(p) = st.pending.remove(&n) {
            if let Some((t, _)) = p.token {
                st.tokens.remove(&t);
            }
        }
    }

    /// A notification from a session: `initialized` is absorbed (the agent initialized the child
    /// itself), `cancelled` has its request id mapped, the rest is forwarded.
    pub(crate) fn notify(&self, session: &Session, mut msg: Value) {
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        match method {
            mcp_wire::mcp::method::INITIALIZED => {}
            mcp_wire::mcp::method::CANCELLED => {
                let Some(rid) = msg.pointer("/params/requestId").cloned() else {
                    return;
                };
                let found = {
                    let mut st = lock(&self.st);
                    let n = st
                        .pending
                        .iter()
                        .find(|(_, p)| {
                            p.session_id.as_deref() == Some(session.id.as_str()) && p.orig_id == rid
                        })
                        .map(|(n, _)| *n);
                    if let Some(n) = n {
                        if let Some(p) = st.pending.remove(&n) {
                            if let Some((t, _)) = p.token {
                                st.tokens.remove(&t);
                            }
                        }
                    }
                    n
                };
                if let Some(n) = found {
                    msg["params"]["requestId"] = json!(n);
                    self.write(&msg);
                }
            }
            _ => {
                self.write(&msg);
            }
        }
    }

    /// A session's answer to a server→client request: id mapped back and forwarded. `false` if
    /// the id is unknown.
    pub(crate) fn respond(&self, mut msg: Value) -> bool {
        let key = msg.get("id").map(Value::to_string).unwrap_or_default();
        let Some((child_id, _)) = lock(&self.st).s2c.remove(&key) else {
            return false;
        };
        msg["id"] = child_id;
        self.write(&msg)
    }

    fn on_message(&self, v: Value) {
        let method = v.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = v.get("id").cloned().filter(|i| !i.is_null());
        match (method, id) {
            (None, Some(id)) => {
                let n = id
                    .as_u64()
                    .or_else(|| id.as_str().and_then(|s| s.parse().ok()));
                let p = n.and_then(|n| {
                    let mut st = lock(&self.st);
                    let p = st.pending.remove(&n);
                    if let Some((t, _)) = p.as_ref().and_then(|p| p.token.as_ref()) {
                        st.tokens.remove(t);
                    }
                    p
                });
                match p {
                    Some(p) => {
                        let task = v.pointer("/result/task/taskId").and_then(Value::as_str);
                        if let (Some(t), Some(s)) =
                            (task, p.session.as_ref().and_then(Weak::upgrade))
                        {
                            lock(&self.st).tasks.insert(t.to_owned(), &s);
                        }
                        let _ = p.done.send(v);
                    }
                    None => tracing::debug!(server = %self.name, "response for unknown id {id}"),
                }
            }
            (Some(m), Some(child_id)) => self.server_request(&m, child_id, v),
            (Some(m), None) => self.server_notification(&m, v),
            (None, None) => {
                tracing::debug!(server = %self.name, "ignoring message without id or method")
            }
        }
    }

    fn server_request(&self, method: &str, child_id: Value, mut v: Value) {
        let agent_id = format!("s2c-{}", S2C_IDS.fetch_add(1, Ordering::Relaxed));
        let key = Value::String(agent_id.clone()).to_string();
        v["id"] = Value::String(agent_id);
        let delivered = {
            let mut st = lock(&self.st);
            let target = route_server_request(&st, &v);
            let delivered = match &target {
                Some(Route::Post(s, sink)) => {
                    st.s2c
                        .insert(key.clone(), (child_id.clone(), Arc::downgrade(s)));
                    sink.send(&v)
                }
                Some(Route::Get(s)) => {
                    st.s2c
                        .insert(key.clone(), (child_id.clone(), Arc::downgrade(s)));
                    s.send_standalone_if_live(&v)
                }
                None => false,
            };
            if delivered {
                let s = match &target {
                    Some(Route::Post(s, _) | Route::Get(s)) => Some(s.clone()),
                    None => None,
                };
                if let (Some(s), Some(eid)) = (
                    s,
                    v.pointer("/params/elicitationId").and_then(Value::as_str),
                ) {
                    st.elicitations.insert(eid.to_owned(), &s);
                }
            } else {
                st.s2c.remove(&key);
            }
            delivered
        };
        if delivered {
            return;
        }
        // Nobody to ask: answer on the client's behalf so the server does not wait forever.
        let reply = match method {
            "roots/list" => json!({"jsonrpc": "2.0", "id": child_id, "result": {"roots": []}}),
            "ping" => json!({"jsonrpc": "2.0", "id": child_id, "result": {}}),
            _ => crate::body::rpc_error(
                Some(&child_id),
                mcp_wire::jsonrpc::code::METHOD_NOT_FOUND,
                format!("meshgate-edge: no client session available to answer {method}"),
            ),
        };
        self.write(&reply);
    }

    fn server_notification(&self, method: &str, mut v: Value) {
        use mcp_wire::mcp::method as m;
        let mut st = lock(&self.st);
        if let Some(task) = related_task(&v) {
            // A message of a task: only the session that created it.
            match st.tasks.get(&task) {
                Some(s) if is_attached(&st, &s) => {
                    s.send_standalone(&v);
                }
                _ => {
                    tracing::debug!(server = %self.name, task, method, "message of an unknown task dropped");
                }
            }
            return;
        }
        match method {
            m::PROGRESS => {
                let tok = v
                    .pointer("/params/progressToken")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some(p) = st.tokens.get(tok).and_then(|n| st.pending.get(n)) else {
                    tracing::debug!(server = %self.name, "progress for an unknown token dropped");
                    return;
                };
                if let (Some((_, orig)), Some(sink)) = (&p.token, &p.sink) {
                    v["params"]["progressToken"] = orig.clone();
                    sink.send(&v);
                }
            }
            m::CANCELLED => {
                // The server gave up on one of its own requests: tell the session it went to.
                let rid = v
                    .pointer("/params/requestId")
                    .cloned()
                    .unwrap_or(Value::Null);
                let hit = st
                    .s2c
                    .iter()
                    .find(|(_, (cid, _))| *cid == rid)
                    .map(|(k, (_, s))| (k.clone(), s.clone()));
                if let Some((k, s)) = hit {
                    if let (Ok(agent), Some(s)) = (serde_json::from_str::<Value>(&k), s.upgrade()) {
                        v["params"]["requestId"] = agent;
                        s.send_standalone(&v);
                    }
                }
            }
            ELICITATION_COMPLETE => {
                let eid = v
                    .pointer("/params/elicitationId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match st.elicitations.get(&eid) {
                    Some(s) if is_attached(&st, &s) => {
                        s.send_standalone(&v);
                    }
                    _ => {
                        tracing::debug!(server = %self.name, elicitation = eid, "completion of an unknown elicitation dropped")
                    }
                }
                st.elicitations.remove(&eid);
            }
            TASKS_STATUS => {
                let task = v
                    .pointer("/params/taskId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                match st.tasks.get(&task) {
                    Some(s) if is_attached(&st, &s) => {
                        s.send_standalone(&v);
                    }
                    _ => {
                        tracing::debug!(server = %self.name, task, "status of an unknown task dropped")
                    }
                }
                let terminal = matches!(
                    v.pointer("/params/status").and_then(Value::as_str),
                    Some("completed" | "failed" | "cancelled")
                );
                if terminal {
                    st.tasks.remove(&task);
                }
            }
            m::RESOURCES_UPDATED => {
                let uri = v
                    .pointer("/params/uri")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                for id in st.subs.get(uri).into_iter().flatten() {
                    if let Some(s) = st.sessions.get(id).and_then(Weak::upgrade) {
                        s.send_standalone(&v);
                    }
                }
            }
            _ => {
                // Not tied to a request (logs, list_changed, ...): the GET streams of the
                // sessions attached to this process, and nothing else.
                for s in st.sessions.values().filter_map(Weak::upgrade) {
                    s.send_standalone(&v);
                }
            }
        }
    }
}

/// Where a server→client request goes.
enum Route {
    /// The stream of an in-flight request of this session.
    Post(Arc<Session>, Sink),
    /// This session's GET stream.
    Get(Arc<Session>),
}

/// The task a message names in `_meta["io.modelcontextprotocol/related-task"].taskId`.
fn related_task(v: &Value) -> Option<String> {
    v.get("params")?
        .get("_meta")?
        .get(RELATED_TASK)?
        .get("taskId")?
        .as_str()
        .map(str::to_owned)
}

fn is_attached(st: &State, s: &Session) -> bool {
    st.sessions.contains_key(&s.id)
}

/// Picks the destination of a server→client request (see the module doc for the order).
fn route_server_request(st: &State, v: &Value) -> Option<Route> {
    if let Some(task) = related_task(v) {
        return st
            .tasks
            .get(&task)
            .filter(|s| is_attached(st, s))
            .map(Route::Get);
    }
    // Requests in flight with a live stream, most recent first.
    let mut inflight = st.pending.values().rev().filter_map(|p| {
        let sink = p.sink.as_ref().filter(|k| !k.is_closed())?;
        let s = p.session.as_ref()?.upgrade()?;
        Some((s, sink))
    });
    if let Some((s, sink)) = inflight.next() {
        if inflight.any(|(o, _)| o.id != s.id) {
            tracing::debug!(
                session = %s.id,
                "server request while several sessions have calls in flight: sent to the most recent call"
            );
        }
        return Some(Route::Post(s, sink.clone()));
    }
    let last = st
        .last_caller
        .as_ref()
        .and_then(Weak::upgrade)
        .filter(|s| is_attached(st, s));
    if let Some(s) = last {
        return Some(Route::Get(s));
    }
    // No caller yet: the only attached session, if there is exactly one.
    let mut attached = st.sessions.values().filter_map(Weak::upgrade);
    match (attached.next(), attached.next()) {
        (Some(s), None) => Some(Route::Get(s)),
        _ => None,
    }
}
