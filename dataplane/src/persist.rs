//! Session persistence: what a session writes to the shared store when its state changes, and
//! how another hub replica rebuilds it from that record (takeover). Beside step 4 (`session`)
//! of the request path: writes are fire-and-forget (the store queues them to its own thread),
//! reads happen only when a replica must take over a session it does not hold.
//!
//! A record holds only what continuing the session needs (DESIGN.md §6): negotiated version,
//! the client's info and capabilities, each upstream session (upstream and replica by name,
//! upstream session id, version, capabilities), subscriptions and log level. Replay buffers,
//! pending server→client requests and cached lists stay in memory: after a takeover the client
//! resumes its streams from the new replica without the events the dead one had buffered.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::hub::Hub;
use crate::session::{Session, UpstreamSession};
use crate::store::{SessionRecord, UpstreamRecord};

/// The store record of a session, as it stands.
pub fn record_of(hub: &Hub, s: &Session) -> SessionRecord {
    let st = s.state.lock();
    let ups = &hub.snap.upstreams;
    let upstreams = st
        .upstreams
        .iter()
        .enumerate()
        .filter_map(|(u, us)| {
            let us = us.as_ref()?;
            let up = ups.get(u)?;
            Some(UpstreamRecord {
                upstream: up.name.to_string(),
                replica: up
                    .replicas
                    .get(us.replica)
                    .map(|r| r.url.to_string())
                    .unwrap_or_default(),
                session_id: us.sid.as_deref().map(str::to_string),
                version: us.version.to_string(),
                capabilities: us.capabilities.to_string(),
            })
        })
        .collect();
    let subscriptions = st
        .subscriptions
        .iter()
        .filter_map(|(u, uri)| Some((ups.get(*u)?.name.to_string(), uri.clone())))
        .collect();
    SessionRecord {
        principal: s.principal.to_string(),
        version: s.version.to_string(),
        client_info: s.client_info.get().to_string(),
        client_capabilities: s.client_capabilities.get().to_string(),
        upstreams,
        subscriptions,
        log_level: st.log_level.clone(),
        created_unix_ms: s.created_unix_ms(),
    }
}

/// Writes the session's record (no-op without a store). Call after every state change worth
/// keeping: creation, an upstream session opened or replaced, subscribe/unsubscribe, log level.
pub fn save(hub: &Hub, s: &Session) {
    if let Some(store) = &hub.store {
        store.put(&s.id, &s.principal, &record_of(hub, s));
    }
}

/// Removes the session's record everywhere (DELETE, expiry).
pub fn forget(hub: &Hub, id: &str, principal: &str) {
    if let Some(store) = &hub.store {
        store.delete(id, principal);
    }
}

/// Session ids the store recently did not know: a request naming one is answered 404 without
/// another store lookup for [`NegativeCache::TTL`]. Bounded: past [`NegativeCache::MAX`]
/// entries the expired ones go, then (a flood of random ids) the whole table.
#[derive(Default)]
pub struct NegativeCache {
    map: parking_lot::Mutex<std::collections::HashMap<Box<str>, std::time::Instant>>,
}

impl NegativeCache {
    /// How long "unknown" is believed. Short: a record written by a replica that died just
    /// after `initialize` may arrive in the store a moment late.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(2);
    /// Most ids remembered.
    pub const MAX: usize = 4096;

    /// Whether `key` was recently found unknown.
    pub fn contains(&self, key: &str) -> bool {
        let map = self.map.lock();
        map.get(key).is_some_and(|t| t.elapsed() < Self::TTL)
    }

    /// Remembers `key` as unknown.
    pub fn insert(&self, key: &str) {
        let mut map = self.map.lock();
        if map.len() >= Self::MAX {
            map.retain(|_, t| t.elapsed() < Self::TTL);
            if map.len() >= Self::MAX {
                map.clear();
            }
        }
        map.insert(key.into(), std::time::Instant::now());
    }

    /// Ids remembered now (tests, metrics).
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

/// Rebuilds session `id` from the store and adds it to this replica's table; `None` when the
/// store has no (valid) record for it. Upstream sessions continue where they were: same
/// upstream replica, same upstream session id.
pub async fn take_over(hub: &Arc<Hub>, id: &str, principal: &str) -> Option<Arc<Session>> {
    let store = hub.store.as_ref()?;
    // The negative cache is keyed like the store (id and principal), so one principal's
    // misses say nothing about another's.
    let neg_key = format!("{principal}\u{0}{id}");
    if hub.unknown_sessions.contains(&neg_key) {
        return None;
    }
    let rec = match store.get(id, principal).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            hub.unknown_sessions.insert(&neg_key);
            return None;
        }
        Err(e) => {
            tracing::warn!(session = %id, error = %e, "cannot take a session over: the store is unavailable");
            return None;
        }
    };
    let version = mcp_wire::mcp::legacy_revision(&rec.version)?;
    let caps = RawValue::from_string(rec.client_capabilities).ok()?;
    let info = RawValue::from_string(rec.client_info).ok()?;
    let n = hub.snap.upstreams.len();
    let s = Session::with_id(Arc::from(id), principal, version, caps, info, n);
    {
        let mut st = s.state.lock();
        for r in &rec.upstreams {
            let Some(u) = hub
                .snap
                .upstreams
                .iter()
                .position(|x| *x.name == *r.upstream)
            else {
                continue;
            };
            let up = &hub.snap.upstreams[u];
            let Some(replica) = up.replicas.iter().position(|x| *x.url == *r.replica) else {
                continue;
            };
            let Some(version) = mcp_wire::mcp::legacy_revision(&r.version) else {
                continue;
            };
            let capabilities = serde_json::from_str(&r.capabilities)
                .unwrap_or(serde_json::Value::Object(Default::default()));
            st.upstreams[u] = Some(UpstreamSession {
                sid: r.session_id.as_deref().map(Arc::from),
                version: version.into(),
                capabilities: Arc::new(capabilities),
                generation: hub.next_generation(),
                replica,
            });
            hub.acquire(u, replica);
        }
        st.log_level = rec.log_level;
        st.subscriptions = rec
            .subscriptions
            .iter()
            .filter_map(|(name, uri)| {
                let u = hub.snap.upstreams.iter().position(|x| *x.name == **name)?;
                Some((u, uri.clone()))
            })
            .collect();
    }
    // Another request may have taken it over meanwhile: the first one in the table wins, and
    // the loser gives back the replica loads it counted.
    let kept = hub.sessions.insert_if_absent(s.clone());
    if Arc::ptr_eq(&kept, &s) {
        tracing::info!(session = %id, "took the session over from the shared store");
    } else {
        let st = s.state.lock();
        for (u, us) in st.upstreams.iter().enumerate() {
            if let Some(us) = us {
                hub.release(u, us.replica);
            }
        }
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{SessionStore, StoreGet, StoreStatus};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The memory store, counting reads.
    struct Counting {
        inner: MemoryStore,
        gets: AtomicU64,
    }

    impl SessionStore for Counting {
        fn put(&self, id: &str, principal: &str, record: &SessionRecord) {
            self.inner.put(id, principal, record);
        }
        fn delete(&self, id: &str, principal: &str) {
            self.inner.delete(id, principal);
        }
        fn get(&self, id: &str, principal: &str) -> StoreGet {
            self.gets.fetch_add(1, Ordering::Relaxed);
            self.inner.get(id, principal)
        }
        fn status(&self) -> StoreStatus {
            self.inner.status()
        }
    }

    fn hub_with_store() -> (Arc<Hub>, Arc<Counting>) {
        let cfg = crate::config::HubConfig::from_yaml(
            "listen: 127.0.0.1:0\nupstreams:\n  - name: a\n    url: http://127.0.0.1:9/mcp\n",
        )
        .unwrap();
        let snap = crate::config::Snapshot::from_config(&cfg).unwrap();
        let store = Arc::new(Counting {
            inner: MemoryStore::new(std::time::Duration::from_secs(60)),
            gets: AtomicU64::new(0),
        });
        let hub = Hub::with_cluster(Arc::new(snap), Some(store.clone()), None);
        (hub, store)
    }

    fn record() -> SessionRecord {
        SessionRecord {
            principal: String::new(),
            version: "2025-11-25".into(),
            client_info: "{}".into(),
            client_capabilities: "{}".into(),
            upstreams: vec![UpstreamRecord {
                upstream: "a".into(),
                replica: "http://127.0.0.1:9/mcp".into(),
                session_id: Some("up-1".into()),
                version: "2025-11-25".into(),
                capabilities: "{}".into(),
            }],
            subscriptions: vec![],
            log_level: None,
            created_unix_ms: 0,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn two_takeovers_of_one_session_count_its_replica_load_once() {
        let (hub, store) = hub_with_store();
        store.put("s1", "", &record());
        let (a, b) =
            block_on(async { monoio::join!(take_over(&hub, "s1", ""), take_over(&hub, "s1", "")) });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(
            Arc::ptr_eq(&a, &b),
            "both requests continue the same session"
        );
        assert_eq!(hub.replica_load(0, 0), 1, "the loser's load was given back");
    }

    #[test]
    fn unknown_session_ids_cost_one_store_read_per_ttl() {
        let (hub, store) = hub_with_store();
        block_on(async {
            for _ in 0..50 {
                assert!(take_over(&hub, "nope", "").await.is_none());
            }
        });
        assert_eq!(store.gets.load(Ordering::Relaxed), 1);
        // Another principal's miss is its own.
        block_on(async { assert!(take_over(&hub, "nope", "someone").await.is_none()) });
        assert_eq!(store.gets.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_negative_cache_is_bounded() {
        let c = NegativeCache::default();
        for i in 0..NegativeCache::MAX * 3 {
            c.insert(&format!("id{i}"));
        }
        assert!(c.len() <= NegativeCache::MAX);
        assert!(c.contains(&format!("id{}", NegativeCache::MAX * 3 - 1)));
    }
}
