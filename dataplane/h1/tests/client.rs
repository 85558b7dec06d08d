//! Client codec against a raw loopback server, under both monoio drivers.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use common::{accept, listener, on_both_drivers, Raw};
use h1::{BodyKind, ClientConn, ClientError, Limits, ServerConn, SseDecoder, SseEvent};
use monoio::net::TcpListener;

/// Spawn a raw server task that accepts one connection and runs `script` on it.
fn raw_server<S, Fut>(script: S) -> (std::net::SocketAddr, monoio::task::JoinHandle<()>)
where
    S: FnOnce(Raw) -> Fut + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (l, addr) = listener();
    let task = monoio::spawn(async move {
        let l: TcpListener = l;
        let raw = Raw::from_stream(accept(&l).await);
        script(raw).await;
    });
    (addr, task)
}

async fn connect(addr: std::net::SocketAddr) -> ClientConn {
    monoio::time::timeout(common::WAIT, ClientConn::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

#[test]
fn content_length_response_and_reuse() {
    on_both_drivers(|| async {
        let (addr, server) = raw_server(|mut s| async move {
            let (head, body) = s.read_message().await;
            assert!(
                head.starts_with("POST /mcp HTTP/1.1\r\nHost: up:8080\r\n"),
                "{head}"
            );
            assert!(
                head.contains("\r\nContent-Type: application/json\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\nContent-Length: 2\r\n"), "{head}");
            assert_eq!(body, b"{}");
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel")
                .await;
            monoio::time::sleep(Duration::from_millis(20)).await;
            s.send(b"lo").await;
            let (head, body) = s.read_message().await;
            assert!(head.starts_with("GET /two HTTP/1.1\r\n"), "{head}");
            assert!(
                !head.to_ascii_lowercase().contains("content-length"),
                "{head}"
            );
            assert!(body.is_empty());
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
        });
        let mut c = connect(addr).await;
        assert!(c.is_reusable(), "a fresh connection is reusable");
        let head = c
            .send(
                "POST",
                "/mcp",
                "up:8080",
                &[("Content-Type", b"application/json")],
                b"{}",
            )
            .await
            .expect("send");
        assert_eq!(head.status, 200);
        assert_eq!(head.body, BodyKind::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.headers.get_str("x-a"), Some("1"));
        assert!(!c.is_reusable(), "body not read yet");
        assert_eq!(&c.read_to_end(1024).await.expect("body")[..], b"hello");
        assert!(c.is_reusable());
        assert_eq!(c.read_chunk().await.expect("end"), None);

        let head = c
            .send("GET", "/two", "up:8080", &[], b"")
            .await
            .expect("second send");
        assert_eq!(head.body, BodyKind::Length(0));
        assert_eq!(c.read_chunk().await.expect("end"), None);
        assert!(c.is_reusable());
        server.await;
    });
}

#[test]
fn chunked_response_is_delivered_piece_by_piece() {
    on_both_drivers(|| async {
        let step = Rc::new(Cell::new(0u32));
        let seen = step.clone();
        let (addr, server) = raw_server(move |mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nhello\r\n")
                .await;
            // The client must get the first piece before the rest exists.
            while seen.get() == 0 {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
            s.send(b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n").await;
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n1\r\nb\r\n0\r\n\r\n")
                .await;
        });
        let mut c = connect(addr).await;
        let head = c.send("GET", "/sse", "up", &[], b"").await.expect("send");
        assert_eq!(head.body, BodyKind::Chunked);
        let first = c.read_chunk().await.expect("chunk").expect("data");
        assert_eq!(&first[..], b"hello");
        step.set(1);
        let mut rest = Vec::new();
        while let Some(piece) = c.read_chunk().await.expect("chunk") {
            rest.extend_from_slice(&piece);
        }
        assert_eq!(rest, b" world");
        assert!(c.is_reusable());

        let _ = c.send("GET", "/again", "up", &[], b"").await.expect("send");
        assert_eq!(&c.read_to_end(16).await.expect("body")[..], b"ab");
        assert!(c.is_reusable());
        server.await;
    });
}

#[test]
fn until_close_response() {
    on_both_drivers(|| async {
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
                .await;
            monoio::time::sleep(Duration::from_millis(20)).await;
            s.send(b"def").await;
        });
        let mut c = connect(addr).await;
        let head = c.send("GET", "/", "up", &[], b"").await.expect("send");
        assert_eq!(head.body, BodyKind::UntilClose);
        assert!(!head.keep_alive);
        assert_eq!(&c.read_to_end(100).await.expect("body")[..], b"abcdef");
        assert!(!c.is_reusable(), "an until-close body ends the connection");
        server.await;
    });
}

#[test]
fn interim_responses_are_skipped() {
    on_both_drivers(|| async {
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
                .await;
            monoio::time::sleep(Duration::from_millis(20)).await;
            s.send(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .await;
        });
        let mut c = connect(addr).await;
        let head = c.send("POST", "/", "up", &[], b"x").await.expect("send");
        assert_eq!(head.status, 201);
        assert_eq!(head.headers.get("link"), None);
        assert_eq!(&c.read_to_end(100).await.expect("body")[..], b"ok");
        assert!(c.is_reusable());
        server.await;
    });
}

#[test]
fn keep_alive_is_negotiated() {
    on_both_drivers(|| async {
        // Server says close.
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx")
                .await;
        });
        let mut c = connect(addr).await;
        let head = c.send("GET", "/", "up", &[], b"").await.expect("send");
        assert!(!head.keep_alive);
        let _ = c.read_to_end(10).await.expect("body");
        assert!(!c.is_reusable());
        assert!(
            c.send("GET", "/", "up", &[], b"").await.is_err(),
            "refuses a non-reusable conn"
        );
        server.await;

        // Client said close.
        let (addr, server) = raw_server(|mut s| async move {
            let (head, _) = s.read_message().await;
            assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
                .await;
        });
        let mut c = connect(addr).await;
        let head = c
            .send("GET", "/", "up", &[("Connection", b"close")], b"")
            .await
            .expect("send");
        assert!(!head.keep_alive);
        let _ = c.read_to_end(10).await.expect("body");
        assert!(!c.is_reusable());
        server.await;

        // HTTP/1.0 server without keep-alive; 204 has no body.
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.0 204 No Content\r\n\r\n").await;
        });
        let mut c = connect(addr).await;
        let head = c
            .send("DELETE", "/mcp", "up", &[], b"")
            .await
            .expect("send");
        assert_eq!(head.body, BodyKind::Empty);
        assert!(!head.keep_alive);
        assert_eq!(c.read_chunk().await.expect("end"), None);
        assert!(!c.is_reusable());
        server.await;
    });
}

#[test]
fn dropped_timed_out_read_poisons_the_connection() {
    on_both_drivers(|| async {
        let done = Rc::new(Cell::new(false));
        let done_server = done.clone();
        let (addr, server) = raw_server(move |mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await;
            while !done_server.get() {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut c = connect(addr).await;
        let _ = c.send("GET", "/", "up", &[], b"").await.expect("send");
        assert_eq!(
            c.read_chunk().await.expect("chunk").as_deref(),
            Some(&b"hello"[..])
        );
        let stalled = monoio::time::timeout(Duration::from_millis(100), c.read_chunk()).await;
        assert!(stalled.is_err(), "the read must time out");
        assert!(!c.is_reusable());
        done.set(true);
        server.await;
    });
}

#[test]
fn dropped_timed_out_send_poisons_the_connection() {
    on_both_drivers(|| async {
        let done = Rc::new(Cell::new(false));
        let done_server = done.clone();
        let (addr, server) = raw_server(move |mut s| async move {
            let _ = s.read_message().await;
            // Half a head, then silence.
            s.send(b"HTTP/1.1 200 OK\r\nContent-Le").await;
            while !done_server.get() {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut c = connect(addr).await;
        let res = monoio::time::timeout(
            Duration::from_millis(100),
            c.send("GET", "/", "up", &[], b""),
        )
        .await;
        assert!(res.is_err(), "the send must time out");
        assert!(!c.is_reusable());
        done.set(true);
        server.await;
    });
}

#[test]
fn errors() {
    on_both_drivers(|| async {
        // Peer closes before any response.
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
        });
        let mut c = connect(addr).await;
        let e = c
            .send("GET", "/", "up", &[], b"")
            .await
            .expect_err("closed");
        assert!(matches!(e, ClientError::Closed), "{e:?}");
        assert!(!c.is_reusable());
        server.await;

        // Body over the caller's limit, for each framing.
        for reply in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nhello world",
        ] {
            let (addr, server) = raw_server(move |mut s| async move {
                let _ = s.read_message().await;
                s.send(reply).await;
            });
            let mut c = connect(addr).await;
            let _ = c.send("GET", "/", "up", &[], b"").await.expect("send");
            let e = c.read_to_end(10).await.expect_err("too large");
            assert!(matches!(e, ClientError::BodyTooLarge), "{e:?}");
            assert!(!c.is_reusable());
            server.await;
        }

        // Garbage status line; truncated Content-Length body.
        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTX/1.1 200 OK\r\n\r\n").await;
        });
        let mut c = connect(addr).await;
        let e = c
            .send("GET", "/", "up", &[], b"")
            .await
            .expect_err("malformed");
        assert!(matches!(e, ClientError::Malformed(_)), "{e:?}");
        server.await;

        let (addr, server) = raw_server(|mut s| async move {
            let _ = s.read_message().await;
            s.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                .await;
        });
        let mut c = connect(addr).await;
        let _ = c.send("GET", "/", "up", &[], b"").await.expect("send");
        let e = c.read_to_end(100).await.expect_err("truncated");
        assert!(matches!(e, ClientError::Io(_)), "{e:?}");
        assert!(!c.is_reusable());
        server.await;
    });
}

/// Both halves of the crate together: a `ServerConn` streams SSE, a `ClientConn` reads it
/// and an `SseDecoder` parses it.
#[test]
fn sse_stream_end_to_end() {
    on_both_drivers(|| async {
        let (l, addr) = listener();
        let server = monoio::spawn(async move {
            let mut conn = ServerConn::new(accept(&l).await, Limits::default());
            let req = conn
                .next_request()
                .await
                .expect("request")
                .expect("not EOF");
            assert_eq!(&req.body[..], b"{\"jsonrpc\":\"2.0\"}");
            conn.start_stream(200, &[("Content-Type", b"text/event-stream")])
                .await
                .expect("start");
            let mut frame = Vec::new();
            h1::encode_sse_event(&mut frame, Some("p"), None, Some(b""), Some(1000));
            conn.write_chunk(&frame).await.expect("chunk");
            conn.write_chunk(h1::SSE_KEEPALIVE).await.expect("chunk");
            frame.clear();
            h1::encode_sse_event(
                &mut frame,
                Some("1"),
                Some("message"),
                Some(b"{\"id\":1}"),
                None,
            );
            // Split one event across two chunks.
            conn.write_chunk(&frame[..7]).await.expect("chunk");
            conn.write_chunk(&frame[7..]).await.expect("chunk");
            conn.finish_stream().await.expect("finish");
        });
        let mut c = connect(addr).await;
        let head = c
            .send(
                "POST",
                "/mcp",
                "up",
                &[("Accept", b"text/event-stream")],
                b"{\"jsonrpc\":\"2.0\"}",
            )
            .await
            .expect("send");
        assert_eq!(
            head.headers.get_str("content-type"),
            Some("text/event-stream")
        );
        let mut dec = SseDecoder::new();
        let mut events = Vec::new();
        while let Some(piece) = c.read_chunk().await.expect("chunk") {
            let piece: Bytes = piece;
            dec.push(&piece);
            while let Some(ev) = dec.next_event() {
                events.push(ev);
            }
        }
        assert!(c.is_reusable());
        assert_eq!(
            events,
            vec![
                SseEvent {
                    id: Some("p".into()),
                    has_data: true,
                    retry: Some(1000),
                    ..Default::default()
                },
                SseEvent {
                    id: Some("1".into()),
                    event: Some("message".into()),
                    data: "{\"id\":1}".into(),
                    has_data: true,
                    retry: None,
                },
            ]
        );
        server.await;
    });
}
