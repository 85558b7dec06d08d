//! The embedded session store: an in-process map for a single hub (the default).
//!
//! Off the request path, behind [`super::SessionStore`]. Nothing leaves the process, so values
//! are kept as they are (no sealing); the semantics match the Redis store: a record is keyed by
//! (session id, principal), lives for the idle TTL after its last `put`, and `delete` removes it.
//! Expired records are dropped when read and by a sweep that runs at most once per second from
//! `put`. The lock is held only for a map operation, never across an `.await`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{Counters, SessionRecord, SessionStore, StoreGet, StoreStatus};

/// Records by (session id, principal), with their expiry instant.
type Map = HashMap<(String, String), (SessionRecord, Instant)>;

/// The in-process store.
pub struct MemoryStore {
    ttl: Duration,
    inner: Mutex<Inner>,
    counters: Counters,
}

struct Inner {
    map: Map,
    last_sweep: Instant,
}

impl MemoryStore {
    /// An empty store whose records expire `ttl` after their last `put`.
    pub fn new(ttl: Duration) -> Self {
        MemoryStore {
            ttl,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
            counters: Counters::default(),
        }
    }

    /// Number of records held, expired ones included until swept.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionStore for MemoryStore {
    fn put(&self, id: &str, principal: &str, record: &SessionRecord) {
        let now = Instant::now();
        let record = record.clone();
        let mut g = self.inner.lock();
        if now.duration_since(g.last_sweep) >= Duration::from_secs(1) {
            g.map.retain(|_, (_, exp)| *exp > now);
            g.last_sweep = now;
        }
        g.map.insert(
            (id.to_string(), principal.to_string()),
            (record, now + self.ttl),
        );
        drop(g);
        Counters::bump(&self.counters.writes_ok);
    }

    fn delete(&self, id: &str, principal: &str) {
        self.inner
            .lock()
            .map
            .remove(&(id.to_string(), principal.to_string()));
        Counters::bump(&self.counters.writes_ok);
    }

    fn get(&self, id: &str, principal: &str) -> StoreGet {
        let key = (id.to_string(), principal.to_string());
        let now = Instant::now();
        let mut g = self.inner.lock();
        let found = match g.map.get(&key) {
            Some((r, exp)) if *exp > now => Some(r.clone()),
            Some(_) => {
                g.map.remove(&key);
                None
            }
            None => None,
        };
        StoreGet::ready(Ok(found))
    }

    fn status(&self) -> StoreStatus {
        self.counters.status(true)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // sleeps on a plain test thread, not a worker
mod tests {
    use super::*;

    fn rec(p: &str) -> SessionRecord {
        SessionRecord {
            principal: p.into(),
            version: "2025-06-18".into(),
            client_info: r#"{"name":"t"}"#.into(),
            client_capabilities: "{}".into(),
            upstreams: vec![],
            subscriptions: vec![],
            log_level: None,
            created_unix_ms: 0,
        }
    }

    fn get(s: &MemoryStore, id: &str, p: &str) -> Option<SessionRecord> {
        futures_lite_block_on(s.get(id, p)).unwrap()
    }

    // The memory store answers at once; a trivial poll is enough.
    fn futures_lite_block_on(mut f: StoreGet) -> super::super::GetResult {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::{Context, Poll, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut f).poll(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => panic!("memory get must be ready at once"),
        }
    }

    #[test]
    fn put_get_delete_and_principal_binding() {
        let s = MemoryStore::new(Duration::from_secs(60));
        assert_eq!(get(&s, "a", "alice"), None);
        s.put("a", "alice", &rec("alice"));
        assert_eq!(get(&s, "a", "alice"), Some(rec("alice")));
        assert_eq!(get(&s, "a", "bob"), None);
        s.delete("a", "alice");
        assert_eq!(get(&s, "a", "alice"), None);
        let st = s.status();
        assert!(st.up);
        assert_eq!(st.writes_ok, 2);
    }

    #[test]
    fn ttl_expires_and_put_restarts_it() {
        let s = MemoryStore::new(Duration::from_millis(150));
        s.put("a", "p", &rec("p"));
        std::thread::sleep(Duration::from_millis(100));
        s.put("a", "p", &rec("p"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(get(&s, "a", "p").is_some(), "re-put restarts the TTL");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(get(&s, "a", "p"), None);
        assert!(s.is_empty(), "an expired record is dropped when read");
    }
}
