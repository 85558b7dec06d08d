//! One client connection: read requests with the h1 codec, send each to its endpoint (MCP or an
//! operational one), and render codec errors (413, 431, 408, 400) before closing. Step 1 of the
//! request path.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use h1::{Method, ServerConn};
use monoio::net::TcpStream;

use crate::hub::Worker;

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
                }
                break;
            }
        };
        let path = req.head.path();
        let keep = if path == w.hub.snap.endpoint.as_bytes() {
            crate::pipeline::handle(&w, &mut conn, req, bound_loopback).await
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
