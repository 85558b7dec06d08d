//! One client connection: read requests with the h1 codec, send each to its endpoint (MCP or an
//! operational one), and render codec errors (413, 431, 408, 400) before closing. Step 1 of the
//! request path.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use h1::{Method, ServerConn};
use monoio::net::TcpStream;

use crate::hub::Worker;

/// How much of a rejected request is read and discarded before closing, and for how long.
const LINGER_BYTES: usize = 16 << 20;
const LINGER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one accepted connection until it closes.
pub async fn serve(w: Rc<Worker>, stream: TcpStream, bound_loopback: bool) {
    let _ = stream.set_nodelay(true);
    w.hub
        .metrics
        .open_connections
        .fetch_add(1, Ordering::Relaxed);
    let mut conn = ServerConn::new(stream, w.hub.snap.limits);
    loop {
        let req = match conn.next_request().await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                if let Some(status) = e.status() {
                    tracing::debug!(status, error = %e, "bad request from client");
                    let body = format!("{e}\n");
                    let _ = conn
                        .write_full(
                            status,
                            &[("Content-Type", b"text/plain")],
                            body.as_bytes(),
                            false,
                        )
                        .await;
                    // The client may still be sending the oversized head or body: drain it
                    // (bounded) so closing does not reset the reply away.
                    conn.linger(LINGER_BYTES, LINGER_WAIT).await;
                }
                break;
            }
        };
        let path = req.head.path();
        let keep = if path == w.hub.snap.endpoint.as_bytes() {
            crate::pipeline::handle(&w, &mut conn, req, bound_loopback).await
        } else if path.starts_with(b"/.well-known/oauth-protected-resource") {
            resource_metadata(&w, &mut conn, &req).await
        } else if path.starts_with(b"/admin/") {
            admin(&w, &mut conn, &req).await
        } else {
            ops(&w, &mut conn, &req).await
        };
        if !keep {
            break;
        }
    }
    w.hub
        .metrics
        .open_connections
        .fetch_sub(1, Ordering::Relaxed);
}

/// RFC 9728 protected-resource metadata, at the root well-known path and the one suffixed with
/// the endpoint's path (404 without `auth`).
async fn resource_metadata(
    w: &Worker,
    conn: &mut ServerConn<TcpStream>,
    req: &h1::Request,
) -> bool {
    let keep = req.head.keep_alive;
    let auth = w.hub.gov.get().and_then(|g| g.auth.as_ref());
    let path = std::str::from_utf8(req.head.path()).unwrap_or("");
    match auth {
        Some(a) if a.well_known_paths().iter().any(|p| p == path) => {
            let body = a.protected_resource_metadata();
            conn.write_full(
                200,
                &[
                    ("Content-Type", b"application/json"),
                    ("Cache-Control", b"max-age=300"),
                ],
                body,
                keep,
            )
            .await
            .is_ok()
                && keep
        }
        _ => {
            conn.write_full(
                404,
                &[("Content-Type", b"text/plain")],
                b"no such metadata\n",
                keep,
            )
            .await
            .is_ok()
                && keep
        }
    }
}

/// The hub's admin endpoints, behind an admin API key (`admin.api_keys`):
/// `GET /admin/approvals` lists the held calls; `POST /admin/approvals/<id>` with
/// `{"outcome":"approved"|"rejected","by":"…","comment":"…"}` decides one.
async fn admin(w: &Worker, conn: &mut ServerConn<TcpStream>, req: &h1::Request) -> bool {
    let keep = req.head.keep_alive;
    let json: &[(&str, &[u8])] = &[("Content-Type", b"application/json")];
    let reply = |status: u16, body: String| (status, body);
    let (status, body) = match w.hub.gov.get() {
        None => reply(404, r#"{"error":"no governance configured"}"#.into()),
        Some(g) if !g.is_admin(req.head.headers.get_str("authorization")) => reply(
            401,
            r#"{"error":"an admin API key is required (Authorization: Bearer <key>)"}"#.into(),
        ),
        Some(g) => {
            let path = std::str::from_utf8(req.head.path()).unwrap_or("");
            match (req.head.method, path.strip_prefix("/admin/approvals")) {
                (Method::Get, Some("") | Some("/")) => reply(
                    200,
                    serde_json::to_string(&g.approvals.pending()).unwrap_or_else(|_| "[]".into()),
                ),
                (Method::Post, Some(rest)) if rest.len() > 1 => {
                    #[derive(serde::Deserialize)]
                    struct Decide {
                        outcome: governance::approval::ApprovalOutcome,
                        #[serde(default)]
                        by: Option<String>,
                        #[serde(default)]
                        comment: Option<String>,
                    }
                    match serde_json::from_slice::<Decide>(&req.body) {
                        Err(e) => reply(
                            400,
                            serde_json::json!({"error": format!("bad decision: {e}")}).to_string(),
                        ),
                        Ok(d) => {
                            let decision = governance::approval::ApprovalDecision {
                                id: rest[1..].to_string(),
                                outcome: d.outcome,
                                by: d.by.unwrap_or_else(|| "admin".into()),
                                comment: d.comment,
                                decided_at: governance::audit::to_unix_ms(
                                    std::time::SystemTime::now(),
                                ),
                            };
                            match g.approvals.decide(decision) {
                                Ok(_) => reply(200, r#"{"ok":true}"#.into()),
                                Err(e) => reply(
                                    404,
                                    serde_json::json!({"error": e.to_string()}).to_string(),
                                ),
                            }
                        }
                    }
                }
                _ => reply(404, r#"{"error":"unknown admin endpoint"}"#.into()),
            }
        }
    };
    conn.write_full(status, json, body.as_bytes(), keep)
        .await
        .is_ok()
        && keep
}

/// `/healthz` (the process serves), `/readyz` (some upstream is up, or none is configured),
/// `/metrics` (Prometheus text); anything else is 404.
async fn ops(w: &Worker, conn: &mut ServerConn<TcpStream>, req: &h1::Request) -> bool {
    let keep = req.head.keep_alive;
    let text: &[(&str, &[u8])] = &[("Content-Type", b"text/plain; charset=utf-8")];
    if !matches!(req.head.method, Method::Get | Method::Head) {
        return conn
            .write_empty(405, &[("Allow", b"GET")], keep)
            .await
            .is_ok()
            && keep;
    }
    let (status, body, headers): (u16, String, &[(&str, &[u8])]) = match req.head.path() {
        b"/healthz" => (200, "ok\n".into(), text),
        b"/readyz" => {
            // Edge slots come and go with their tunnels; a hub with only edges is ready.
            let n = w
                .hub
                .snap
                .upstreams
                .iter()
                .filter(|u| u.edge_slot.is_none())
                .count();
            if n == 0 || w.hub.up_mask() != 0 {
                (200, "ready\n".into(), text)
            } else {
                (503, "no upstream is up\n".into(), text)
            }
        }
        b"/metrics" => {
            let names: Vec<String> = w
                .hub
                .snap
                .upstreams
                .iter()
                .map(|u| match u.edge_slot {
                    Some(k) if !u.name.is_bound() => format!("edge-slot-{k}"),
                    _ => u.name.to_string(),
                })
                .collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let up: Vec<bool> = (0..names.len()).map(|u| w.hub.is_up(u)).collect();
            let replicas: Vec<(&str, &str, bool)> =
                w.hub
                    .snap
                    .upstreams
                    .iter()
                    .filter(|u| u.replicas.len() > 1)
                    .flat_map(|u| {
                        u.replicas.iter().enumerate().map(move |(r, rep)| {
                            (&*u.name, &*rep.url, w.hub.replica_up(u.index, r))
                        })
                    })
                    .collect();
            let mut body = w
                .hub
                .metrics
                .render(&names, &up, &replicas, w.hub.sessions.len());
            body.push_str("# HELP meshgate_upstream_era Which MCP era the upstream speaks (legacy sessions, 2026-07-28 modern, dual, or unknown until probed).\n# TYPE meshgate_upstream_era gauge\n");
            if let Some(g) = w.hub.gov.get() {
                use std::fmt::Write as _;
                let st = &g.stats;
                let v = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let _ = write!(
                    body,
                    "# HELP meshgate_auth_failures_total Requests refused by authentication.\n# TYPE meshgate_auth_failures_total counter\nmeshgate_auth_failures_total {}\n\
                     # HELP meshgate_policy_denied_total Tool calls denied by policy.\n# TYPE meshgate_policy_denied_total counter\nmeshgate_policy_denied_total {}\n\
                     # HELP meshgate_rate_limited_total Requests refused by a rate limit.\n# TYPE meshgate_rate_limited_total counter\nmeshgate_rate_limited_total {}\n\
                     # HELP meshgate_approvals_total Held calls by outcome.\n# TYPE meshgate_approvals_total counter\nmeshgate_approvals_total{{outcome=\"held\"}} {}\nmeshgate_approvals_total{{outcome=\"approved\"}} {}\nmeshgate_approvals_total{{outcome=\"denied\"}} {}\n\
                     # HELP meshgate_approval_cycle_ms_total Time held calls waited for a decision.\n# TYPE meshgate_approval_cycle_ms_total counter\nmeshgate_approval_cycle_ms_total {}\n",
                    v(&st.auth_failed),
                    v(&st.denied),
                    v(&st.rate_limited),
                    v(&st.approvals_held),
                    v(&st.approvals_approved),
                    v(&st.approvals_denied),
                    v(&st.approval_ms_total),
                );
                if let Some(log) = &g.audit {
                    let _ = write!(
                        body,
                        "# HELP meshgate_audit_records_total Audit records written and dropped.\n# TYPE meshgate_audit_records_total counter\nmeshgate_audit_records_total{{state=\"written\"}} {}\nmeshgate_audit_records_total{{state=\"dropped\"}} {}\n",
                        log.written(),
                        log.dropped()
                    );
                }
            }
            for (u, name) in names.iter().enumerate() {
                let era = w.hub.snap.upstreams[u].era.label();
                body.push_str(&format!(
                    "meshgate_upstream_era{{upstream=\"{name}\",era=\"{era}\"}} 1\n"
                ));
            }
            (200, body, &[("Content-Type", b"text/plain; version=0.0.4")])
        }
        _ => (
            404,
            "not found: the MCP endpoint is elsewhere\n".into(),
            text,
        ),
    };
    conn.write_full(status, headers, body.as_bytes(), keep)
        .await
        .is_ok()
        && keep
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-connection future is allocated once per client connection (every open stream
    /// holds one), so its size is part of the hub's memory per stream.
    #[test]
    fn connection_future_size() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let stream = monoio::net::TcpStream::connect(addr).await.unwrap();
            let cfg = crate::config::HubConfig::empty();
            let snap = crate::config::Snapshot::from_config(&cfg).unwrap();
            let hub = crate::hub::Hub::new(std::sync::Arc::new(snap));
            let w = Rc::new(Worker::new(hub, 0));
            let fut = serve(w, stream, true);
            let size = std::mem::size_of_val(&fut);
            println!("serve() future: {size} bytes");
            // Measured 6.9 KiB (debug build); a jump past 16 KiB means a state machine grew.
            assert!(size < 16 * 1024, "{size}");
        });
    }
}
