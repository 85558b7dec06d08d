//! The catalog: every upstream's lists (tools, prompts, resources, templates), held once per
//! upstream and shared by every session, and their merged forms. Read by the `route` stage
//! (merged list pages, name and URI resolution) and by `forward` (whether a tool may be retried).
//!
//! One copy per (upstream, list kind, client-capability class): an upstream may offer tools only
//! to clients that declared a capability (server-everything registers `trigger-sampling-request`
//! only for clients declaring `sampling`), so sessions whose clients declared the same
//! capabilities share one copy, fetched through the first such session's upstream session. With
//! N sessions of one kind of client and M upstreams the hub makes M fetches per list kind, not
//! N×M. A copy is dropped when the upstream announces `list_changed` (on any session's stream),
//! when the upstream goes away (an edge tunnel lost), and after `catalog_ttl`.
//!
//! Fetching is single flight per (upstream, kind, class): concurrent requests wait for the one
//! fetch under way. An upstream that fails to list is skipped from merged lists (logged), so one
//! bad upstream never empties the whole list. Item keys (names, URIs) are interned as `Arc<str>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::error::{ErrorKind, ProxyError};
use crate::federation::{self, Item, ListKind, Merged, UpstreamList};
use crate::hub::{lifecycle, upstream_failure, Worker};
use crate::session::{Session, UpstreamSession};
use crate::upstream::{self, Pool, UpstreamError};
use mcp_wire::modern::CacheHints;

/// A class of client sessions that see the same upstream lists: a hash of the capabilities
/// their client declared.
pub type CapsClass = u64;

/// One cached list and its state.
struct Entry {
    list: Option<Arc<UpstreamList>>,
    fetched: Instant,
    /// How long this copy is served: `catalog_ttl`, or less when the upstream's `ttlMs` says so.
    ttl: Duration,
    /// Set while a fetch is under way (single flight).
    fetching: bool,
    /// Bumped by every invalidation, so a fetch that raced one does not count as fresh.
    epoch: u64,
}

/// The lists of one upstream.
#[derive(Default)]
struct UpstreamCatalog {
    entries: Mutex<HashMap<(ListKind, CapsClass), Entry>>,
    /// Woken whenever a fetch of this upstream ends.
    fetched: Notify,
}

/// Key of a merged list: kind, capability class, the health mask it was built for, and the
/// visibility class it is filtered for (0: unfiltered).
type MergedKey = (ListKind, CapsClass, u64, u64);

/// A merged list and what it was built from.
struct MergedEntry {
    key: MergedKey,
    list: Arc<Merged>,
    /// The catalog epoch when it was built: any list stored or dropped since makes it stale.
    epoch: u64,
    /// When its oldest part expires.
    expires: Instant,
}

/// Most merged lists kept (a few kinds × capability classes × health masks in practice).
const MAX_MERGED: usize = 64;

/// The shared catalog (in [`crate::hub::Hub`]).
pub struct Catalog {
    ttl: Duration,
    upstreams: Vec<UpstreamCatalog>,
    merged: Mutex<Vec<MergedEntry>>,
    /// Bumped whenever a list is stored or dropped.
    epoch: AtomicU64,
    /// List fetches made, per kind (metrics, tests).
    fetches: [AtomicU64; 4],
}

impl Catalog {
    /// An empty catalog for `n` upstreams whose copies live at most `ttl`.
    pub fn new(n: usize, ttl: Duration) -> Self {
        Self {
            ttl,
            upstreams: (0..n).map(|_| UpstreamCatalog::default()).collect(),
            merged: Mutex::new(Vec::new()),
            epoch: AtomicU64::new(1),
            fetches: Default::default(),
        }
    }

    /// Upstream list fetches made so far for `kind` (all pages of one list count once).
    pub fn fetches(&self, kind: ListKind) -> u64 {
        self.fetches[kind as usize].load(Ordering::Relaxed)
    }

    /// Forgets upstream `u`'s lists of `kind` (its `list_changed`).
    pub fn invalidate(&self, u: usize, kind: ListKind) {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if let Some(c) = self.upstreams.get(u) {
            let mut entries = c.entries.lock();
            for ((k, _), e) in entries.iter_mut() {
                if *k == kind {
                    e.list = None;
                    e.epoch = epoch;
                }
            }
        }
        self.merged.lock().retain(|m| m.key.0 != kind);
    }

    /// Forgets everything about upstream `u` (it went away, e.g. its edge tunnel was lost).
    pub fn invalidate_upstream(&self, u: usize) {
        for k in ListKind::ALL {
            self.invalidate(u, k);
        }
    }

    /// The cached list, if fresh.
    fn cached(&self, u: usize, kind: ListKind, class: CapsClass) -> Option<Arc<UpstreamList>> {
        self.cached_since(u, kind, class).map(|(l, _)| l)
    }

    /// The cached list, if fresh, and when it was fetched.
    fn cached_since(
        &self,
        u: usize,
        kind: ListKind,
        class: CapsClass,
    ) -> Option<(Arc<UpstreamList>, Instant)> {
        let entries = self.upstreams.get(u)?.entries.lock();
        let e = entries.get(&(kind, class))?;
        let l = e.list.clone().filter(|_| e.fetched.elapsed() < e.ttl)?;
        Some((l, e.fetched))
    }
}

/// Fetches every page of one upstream list, from the replica of `us` (bounded to 1000 pages; a
/// repeated cursor ends it), with the caching hints of its first page when it has them (a
/// 2026-07-28 upstream). A modern upstream session needs `envelope`, the `_meta` object every
/// request carries (see [`lifecycle::envelope`]).
///
/// # Errors
/// [`FetchError`] on the first failing page.
pub async fn fetch_list(
    pool: &Pool,
    up: &crate::config::Upstream,
    us: &UpstreamSession,
    kind: ListKind,
    envelope: Option<&str>,
) -> Result<(Vec<Item>, Option<CacheHints>), FetchError> {
    let mut items = Vec::new();
    let mut hints = None;
    let mut cursor: Option<String> = None;
    for page_no in 0..1000 {
        let mut body = br#"{"jsonrpc":"2.0","id":"mg-list","method":""#.to_vec();
        body.extend_from_slice(kind.method().as_bytes());
        body.extend_from_slice(b"\",\"params\":{");
        if let Some(env) = envelope.filter(|_| us.is_modern()) {
            body.extend_from_slice(b"\"_meta\":");
            body.extend_from_slice(env.as_bytes());
            if cursor.is_some() {
                body.push(b',');
            }
        }
        if let Some(c) = &cursor {
            body.extend_from_slice(b"\"cursor\":");
            mcp_wire::jsonrpc::push_json_str(&mut body, c);
        }
        body.extend_from_slice(b"}}");
        let (resp, _) = upstream::request(pool, up, us.replica, Some(us), &body).await?;
        let (page, next) = federation::parse_page(kind, &resp)?;
        if page_no == 0 && us.is_modern() {
            hints = mcp_wire::modern::result_span(&resp)
                .ok()
                .flatten()
                .and_then(|r| mcp_wire::modern::cache_hints(&resp[r]).ok().flatten());
        }
        items.extend(page);
        match next {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => break,
        }
    }
    Ok((items, hints))
}

/// Why an upstream list could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The exchange failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The answer was not a list.
    #[error(transparent)]
    List(#[from] federation::ListError),
}

/// Clears the "fetching" mark of an entry and wakes the waiters, however the fetch ends.
struct FetchGuard<'a> {
    cat: &'a UpstreamCatalog,
    key: (ListKind, CapsClass),
}

impl Drop for FetchGuard<'_> {
    fn drop(&mut self) {
        if let Some(e) = self.cat.entries.lock().get_mut(&self.key) {
            e.fetching = false;
        }
        self.cat.fetched.notify_waiters();
    }
}

/// Upstream `u`'s whole list of `kind` as `session`'s client may see it: the shared copy when
/// fresh, else fetched (once, whoever asks at the same time) through `session`'s upstream
/// session there (opened if needed). An upstream that does not offer the list has an empty one.
///
/// # Errors
/// The upstream's failure, naming it.
pub async fn upstream_list(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
    kind: ListKind,
) -> Result<Arc<UpstreamList>, ProxyError> {
    let cat = &w.hub.catalog;
    let class = session.caps_class;
    let key = (kind, class);
    let Some(uc) = cat.upstreams.get(u) else {
        return Ok(Arc::new(UpstreamList::default()));
    };
    let deadline = Instant::now() + w.upstream(u).request_timeout;
    // Wait for a fetch under way, or become the one fetching.
    let (_guard, epoch) = loop {
        let notified = uc.fetched.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        {
            let mut entries = uc.entries.lock();
            let e = entries.entry(key).or_insert_with(|| Entry {
                list: None,
                fetched: Instant::now(),
                ttl: cat.ttl,
                fetching: false,
                epoch: 0,
            });
            if let Some(l) = e.list.clone().filter(|_| e.fetched.elapsed() < e.ttl) {
                return Ok(l);
            }
            if !e.fetching {
                e.fetching = true;
                break (FetchGuard { cat: uc, key }, e.epoch);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if monoio::time::timeout(left, notified).await.is_err() {
            return Err(ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!(
                    "upstream '{}' did not list its {} in time",
                    w.upstream(u).name,
                    kind.field()
                ),
            ));
        }
    };
    let us = crate::pipeline::affinity::upstream_session(w, session, u).await?;
    let list = if us.has_capability(kind.capability()) {
        cat.fetches[kind as usize].fetch_add(1, Ordering::Relaxed);
        let env = us.is_modern().then(|| {
            lifecycle::envelope(session.client_capabilities.get(), session.client_info.get())
        });
        match fetch_list(&w.pool, w.upstream(u), &us, kind, env.as_deref()).await {
            Ok((items, hints)) => {
                let mut l = UpstreamList::new(kind, items);
                l.hints = hints;
                Arc::new(l)
            }
            Err(FetchError::Upstream(UpstreamError::SessionGone)) => {
                lifecycle::drop_upstream_session(&w.hub, session, u, us.generation);
                return Err(ProxyError::new(
                    ErrorKind::UpstreamSessionLost,
                    format!(
                        "upstream '{}' lost its session while listing",
                        w.upstream(u).name
                    ),
                ));
            }
            Err(FetchError::Upstream(e)) => return Err(upstream_failure(w, u, us.replica, &e)),
            Err(FetchError::List(e)) => {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamProtocol,
                    format!("upstream '{}': {e}", w.upstream(u).name),
                ))
            }
        }
    } else {
        Arc::new(UpstreamList::default())
    };
    let mut entries = uc.entries.lock();
    if let Some(e) = entries.get_mut(&key) {
        // A `list_changed` that arrived while fetching may not be reflected: keep the copy for
        // this caller but let the next one fetch again.
        if e.epoch == epoch {
            e.list = Some(list.clone());
            e.fetched = Instant::now();
            // The hub's cache honours the upstream's own caching hint.
            e.ttl = list
                .hints
                .map_or(cat.ttl, |h| cat.ttl.min(Duration::from_millis(h.ttl_ms)));
        }
    }
    drop(entries);
    cat.epoch.fetch_add(1, Ordering::AcqRel);
    Ok(list)
}

/// The merged list of `kind` over the upstreams that are up, for `session`'s capability class.
/// An upstream failing to list is skipped (logged).
pub async fn merged(w: &Worker, session: &Arc<Session>, kind: ListKind) -> Arc<Merged> {
    let cat = &w.hub.catalog;
    let mask = w.hub.up_mask();
    // Tools a principal may not use are not in its lists: merged lists are per visibility class.
    let vis = match (kind, w.hub.gov.get()) {
        (ListKind::Tools, Some(g)) => session.state.lock().vis.map(|v| (g, v)),
        _ => None,
    };
    let key = (
        kind,
        session.caps_class,
        mask,
        vis.map_or(0, |(_, v)| v.id()),
    );
    // Fast path (every unprefixed call resolves its name here): still valid when nothing was
    // stored or dropped since it was built, and no part has expired.
    let epoch = cat.epoch.load(Ordering::Acquire);
    {
        let all = cat.merged.lock();
        if let Some(m) = all.iter().find(|m| m.key == key) {
            if m.epoch == epoch && Instant::now() < m.expires {
                return m.list.clone();
            }
        }
    }
    let n = w.hub.snap.upstreams.len();
    let mut lists = Vec::with_capacity(n);
    let mut expires = Instant::now() + cat.ttl;
    for u in 0..n {
        if mask & (1 << u) == 0 {
            lists.push(None);
            continue;
        }
        if let Some((l, at)) = cat.cached_since(u, kind, session.caps_class) {
            let ttl = l
                .hints
                .map_or(cat.ttl, |h| cat.ttl.min(Duration::from_millis(h.ttl_ms)));
            expires = expires.min(at + ttl);
            lists.push(Some(l));
            continue;
        }
        match Box::pin(upstream_list(w, session, u, kind)).await {
            Ok(l) => lists.push(Some(l)),
            Err(e) => {
                tracing::warn!(error = %e, list = kind.method(), "upstream skipped in merged list");
                lists.push(None);
            }
        }
    }
    let visible = |u: usize, name: &str| match vis {
        Some((g, class)) => g
            .policy
            .visible(&g.table, &class, &w.hub.naming.upstreams[u], name),
        None => true,
    };
    let mut m = federation::merge_visible(kind, &w.hub.naming, &lists, mask, &visible);
    if vis.is_some() {
        // Filtered per principal: never shareable beyond that authorization context.
        if let Some(h) = &mut m.hints {
            h.scope = mcp_wire::modern::CacheScope::Private;
        }
    }
    let m = Arc::new(m);
    // Built from lists fetched during the build: stamp it with the epoch after them, so only a
    // later change makes it stale.
    let epoch = cat.epoch.load(Ordering::Acquire);
    let mut all = cat.merged.lock();
    all.retain(|e| e.key != key);
    if all.len() >= MAX_MERGED {
        all.clear();
    }
    all.push(MergedEntry {
        key,
        list: m.clone(),
        epoch,
        expires,
    });
    m
}

/// Whether tool `name` (its upstream name) of upstream `u` may safely run twice
/// (`readOnlyHint` or `idempotentHint`), from the catalog; fetched when not cached.
pub async fn tool_retry_safe(w: &Worker, session: &Arc<Session>, u: usize, name: &str) -> bool {
    if let Some(l) = w.hub.catalog.cached(u, ListKind::Tools, session.caps_class) {
        return l.retry_safe(name);
    }
    upstream_list(w, session, u, ListKind::Tools)
        .await
        .is_ok_and(|l| l.retry_safe(name))
}

/// The cached answer to [`tool_retry_safe`], without fetching (`None` when not cached).
pub fn cached_retry_safe(w: &Worker, session: &Session, u: usize, name: &str) -> Option<bool> {
    w.hub
        .catalog
        .cached(u, ListKind::Tools, session.caps_class)
        .map(|l| l.retry_safe(name))
}

/// Tool `name` of upstream `u`'s `inputSchema` as `session`'s client sees the list, and a
/// version of it (the list copy it came from: a new copy is a new version).
pub async fn tool_schema(
    w: &Worker,
    session: &Arc<Session>,
    u: usize,
    name: &str,
) -> Option<(Arc<serde_json::Value>, u64)> {
    let list = upstream_list(w, session, u, ListKind::Tools).await.ok()?;
    let schema = list.input_schema(name)?;
    Some((schema, Arc::as_ptr(&list) as usize as u64))
}
