//! Server codec over real loopback sockets, under both monoio drivers.

mod common;

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{accept, listener, on_both_drivers, Raw};
use h1::{Limits, Method, Request, ServerConn, ServerError};
use monoio::net::TcpStream;

/// Accept one connection as a `ServerConn` while `client` runs as a separate task.
async fn with_client<C, Fut>(
    limits: Limits,
    client: C,
) -> (ServerConn<TcpStream>, monoio::task::JoinHandle<()>)
where
    C: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let (l, addr) = listener();
    let task = monoio::spawn(client(addr));
    let conn = ServerConn::new(accept(&l).await, limits);
    (conn, task)
}

async fn expect_request(conn: &mut ServerConn<TcpStream>) -> Request {
    conn.next_request()
        .await
        .expect("request")
        .expect("a request, not EOF")
}

async fn expect_error(conn: &mut ServerConn<TcpStream>) -> ServerError {
    match conn.next_request().await {
        Err(e) => e,
        Ok(r) => panic!("expected an error, got {:?}", r.map(|r| r.head)),
    }
}

#[test]
fn get_then_post_on_one_keep_alive_connection() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET /mcp?x=1 HTTP/1.1\r\nHost: hub\r\nX-Multi: a\r\nx-multi: b\r\n\r\n")
                .await;
            let (head, body) = c.read_message().await;
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            assert!(head.contains("\r\nContent-Type: text/plain\r\n"), "{head}");
            assert!(head.contains("\r\nContent-Length: 2\r\n"), "{head}");
            assert!(!head.to_ascii_lowercase().contains("connection:"), "{head}");
            assert_eq!(body, b"hi");
            c.send(b"POST /mcp HTTP/1.1\r\nHost: hub\r\nContent-Length: 7\r\n\r\n{\"a\":1}")
                .await;
            let (head, body) = c.read_message().await;
            assert!(head.starts_with("HTTP/1.1 202 Accepted\r\n"), "{head}");
            assert!(head.contains("\r\nContent-Length: 0\r\n"), "{head}");
            assert!(body.is_empty());
            c.send(b"DELETE /mcp HTTP/1.1\r\nConnection: close\r\n\r\n")
                .await;
            let rest = c.read_to_close().await;
            assert_eq!(
                rest,
                b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
            );
        })
        .await;

        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.method, Method::Get);
        assert_eq!(&req.head.method_raw[..], b"GET");
        assert_eq!(&req.head.target[..], b"/mcp?x=1");
        assert_eq!(req.head.path(), b"/mcp");
        assert_eq!(req.head.query(), Some(&b"x=1"[..]));
        assert_eq!(req.head.minor_version, 1);
        assert!(req.head.keep_alive);
        assert_eq!(req.head.headers.get_str("host"), Some("hub"));
        assert_eq!(
            req.head.headers.get_all("X-MULTI").collect::<Vec<_>>(),
            [b"a", b"b"]
        );
        assert!(req.body.is_empty());
        conn.write_full(200, &[("Content-Type", b"text/plain")], b"hi", true)
            .await
            .expect("write");

        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.method, Method::Post);
        assert_eq!(&req.body[..], b"{\"a\":1}");
        conn.write_empty(202, &[], true).await.expect("write");

        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.method, Method::Delete);
        assert!(!req.head.keep_alive);
        conn.write_empty(204, &[], false).await.expect("write");
        drop(conn);
        client.await;
    });
}

#[test]
fn peer_close_between_requests_is_none() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET / HTTP/1.1\r\n\r\n").await;
            let _ = c.read_message().await;
        })
        .await;
        let _ = expect_request(&mut conn).await;
        conn.write_full(200, &[], b"", true).await.expect("write");
        assert!(conn.next_request().await.expect("clean close").is_none());
        client.await;
    });
}

#[test]
fn http10_keep_alive_rules() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .await;
            let (head, _) = c.read_message().await;
            assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{head}");
            c.send(b"GET /b HTTP/1.0\r\n\r\n").await;
            let all = c.read_to_close().await;
            assert!(all.starts_with(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"));
        })
        .await;
        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.minor_version, 0);
        assert!(req.head.keep_alive);
        conn.write_full(200, &[], b"", req.head.keep_alive)
            .await
            .expect("write");
        let req = expect_request(&mut conn).await;
        assert!(!req.head.keep_alive);
        conn.write_full(200, &[], b"", req.head.keep_alive)
            .await
            .expect("write");
        drop(conn);
        client.await;
    });
}

#[test]
fn chunked_request_body_with_extensions_and_trailers() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;name=val\r\nhel")
                .await;
            monoio::time::sleep(Duration::from_millis(20)).await;
            c.send(b"lo\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n")
                .await;
            c.send(
                b"POST /single HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
            .await;
            let _ = c.read_message().await;
        })
        .await;
        let req = expect_request(&mut conn).await;
        assert_eq!(&req.body[..], b"hello world");
        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.path(), b"/single");
        assert_eq!(&req.body[..], b"abc");
        conn.write_full(200, &[], b"", true).await.expect("write");
        client.await;
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(
                b"GET /a HTTP/1.1\r\n\r\n\
                  POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
                  POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n\
                  GET /d HTTP/1.1\r\n\r\n",
            )
            .await;
            for want in [&b"/a"[..], b"/b:abc", b"/c:xy", b"/d"] {
                let (_, body) = c.read_message().await;
                assert_eq!(body, want);
            }
        })
        .await;
        for _ in 0..4 {
            let req = expect_request(&mut conn).await;
            let mut reply = req.head.path().to_vec();
            if !req.body.is_empty() {
                reply.push(b':');
                reply.extend_from_slice(&req.body);
            }
            conn.write_full(200, &[], &reply, true)
                .await
                .expect("write");
        }
        client.await;
    });
}

#[test]
fn head_over_limit_is_rejected() {
    on_both_drivers(|| async {
        let limits = Limits {
            max_head_bytes: 1024,
            ..Limits::default()
        };
        // A complete but oversized head.
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000));
            let _ = c.try_send(big.as_bytes()).await;
        })
        .await;
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::HeadTooLarge), "{e:?}");
        assert_eq!(e.status(), Some(431));
        client.await;

        // A head that never ends must not be buffered without bound.
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            let mut line = b"GET / HTTP/1.1\r\n".to_vec();
            line.extend(std::iter::repeat_n(b'x', 3000));
            let _ = c.try_send(&line).await;
        })
        .await;
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::HeadTooLarge), "{e:?}");
        client.await;
    });
}

#[test]
fn too_many_headers_is_rejected() {
    on_both_drivers(|| async {
        let limits = Limits {
            max_headers: 4,
            ..Limits::default()
        };
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
                .await;
            let _ = c.read_message().await;
            let _ = c
                .try_send(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n")
                .await;
        })
        .await;
        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.headers.len(), 4);
        conn.write_full(200, &[], b"", true).await.expect("write");
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::TooManyHeaders), "{e:?}");
        assert_eq!(e.status(), Some(431));
        client.await;
    });
}

#[test]
fn body_over_limit_by_content_length() {
    on_both_drivers(|| async {
        let limits = Limits {
            max_body_bytes: 100,
            ..Limits::default()
        };
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            // Only the head: the limit is enforced before reading the body.
            c.send(b"POST / HTTP/1.1\r\nContent-Length: 101\r\n\r\n")
                .await;
            let (head, _) = c.read_message().await;
            assert!(
                head.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
                "{head}"
            );
        })
        .await;
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::BodyTooLarge), "{e:?}");
        let status = e.status().expect("has a status");
        assert_eq!(status, 413);
        conn.write_full(status, &[], b"", false)
            .await
            .expect("write");
        client.await;

        // Exactly at the limit is fine.
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            let mut req = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n".to_vec();
            req.extend(std::iter::repeat_n(b'z', 100));
            c.send(&req).await;
        })
        .await;
        assert_eq!(expect_request(&mut conn).await.body.len(), 100);
        client.await;
    });
}

#[test]
fn body_over_limit_by_chunked_total() {
    on_both_drivers(|| async {
        let limits = Limits {
            max_body_bytes: 100,
            ..Limits::default()
        };
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            let mut req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..3 {
                req.extend_from_slice(b"28\r\n");
                req.extend(std::iter::repeat_n(b'q', 40));
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
            let _ = c.try_send(&req).await;
        })
        .await;
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::BodyTooLarge), "{e:?}");
        client.await;
    });
}

#[test]
fn head_trickled_byte_by_byte_times_out() {
    on_both_drivers(|| async {
        let limits = Limits {
            head_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let head = b"GET /slow HTTP/1.1\r\nHost: example\r\nX-Padding: 0123456789\r\n\r\n";
        let stop = Rc::new(Cell::new(false));
        let sent = Rc::new(Cell::new(0usize));
        let (stop_client, sent_client) = (stop.clone(), sent.clone());
        let (mut conn, client) = with_client(limits, move |addr| async move {
            let mut c = Raw::connect(addr).await;
            for b in head {
                if stop_client.get() || !c.try_send(&[*b]).await {
                    return;
                }
                sent_client.set(sent_client.get() + 1);
                monoio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        let started = Instant::now();
        let e = expect_error(&mut conn).await;
        let took = started.elapsed();
        stop.set(true);
        assert!(matches!(e, ServerError::Timeout), "{e:?}");
        assert_eq!(e.status(), Some(408));
        // The timeout fired while the head was still arriving (the whole trickle takes 1.6 s at
        // the least), not after it: behaviour, not a latency bound. Timers never fire early, so
        // the lower bound holds however loaded the machine is.
        assert!(
            sent.get() < head.len(),
            "the head completed before the timeout"
        );
        assert!(
            took >= Duration::from_millis(250),
            "timed out too early: {took:?}"
        );
        client.await;
    });
}

#[test]
fn body_timeout() {
    on_both_drivers(|| async {
        let limits = Limits {
            body_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let (mut conn, client) = with_client(limits, |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
                .await;
            monoio::time::sleep(Duration::from_millis(600)).await;
        })
        .await;
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::Timeout), "{e:?}");
        client.await;
    });
}

#[test]
fn idle_timeout_returns_none() {
    on_both_drivers(|| async {
        let limits = Limits {
            idle_timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let stop = Rc::new(Cell::new(false));
        let gone = Rc::new(Cell::new(false));
        let (stop_client, gone_client) = (stop.clone(), gone.clone());
        let (mut conn, client) = with_client(limits, move |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET / HTTP/1.1\r\n\r\n").await;
            let _ = c.read_message().await;
            // Stay connected but silent until the server gave up (bounded: 10 s).
            for _ in 0..1000 {
                if stop_client.get() {
                    break;
                }
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
            gone_client.set(true);
        })
        .await;
        let _ = expect_request(&mut conn).await;
        conn.write_full(200, &[], b"ok", true).await.expect("write");
        let started = Instant::now();
        let next = conn.next_request().await.expect("idle is not an error");
        let took = started.elapsed();
        assert!(next.is_none());
        // It was the idle timeout, not the client leaving: the client was still connected.
        assert!(!gone.get(), "the client closed first");
        stop.set(true);
        assert!(took >= Duration::from_millis(150), "{took:?}");
        client.await;
    });
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
                .await;
            let interim = c.read_until(b"\r\n\r\n").await;
            assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
            c.send(b"hello").await;
            let (head, body) = c.read_message().await;
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            assert_eq!(body, b"got hello");
            c.send(b"POST / HTTP/1.1\r\nExpect: tea\r\nContent-Length: 5\r\n\r\n")
                .await;
        })
        .await;
        let req = expect_request(&mut conn).await;
        let mut reply = b"got ".to_vec();
        reply.extend_from_slice(&req.body);
        conn.write_full(200, &[], &reply, true)
            .await
            .expect("write");
        let e = expect_error(&mut conn).await;
        assert!(matches!(e, ServerError::ExpectationFailed), "{e:?}");
        assert_eq!(e.status(), Some(417));
        client.await;
    });
}

#[test]
fn framing_errors() {
    type Case = (&'static [u8], u16);
    const CASES: &[Case] = &[
        (
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
            400,
        ),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"GET\r\n\r\n", 400),
    ];
    on_both_drivers(|| async {
        for (input, status) in CASES {
            let (mut conn, client) = with_client(Limits::default(), |addr| async move {
                let mut c = Raw::connect(addr).await;
                let _ = c.try_send(input).await;
                let _ = c.read_to_close().await;
            })
            .await;
            let e = expect_error(&mut conn).await;
            assert_eq!(
                e.status(),
                Some(*status),
                "{e:?} for {:?}",
                String::from_utf8_lossy(input)
            );
            drop(conn);
            client.await;
        }
    });
}

#[test]
fn streaming_response_has_chunked_framing_and_flushes_each_chunk() {
    on_both_drivers(|| async {
        let got_first = Rc::new(Cell::new(false));
        let flag = got_first.clone();
        let (mut conn, client) = with_client(Limits::default(), move |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET /sse HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n").await;
            let head = c.read_until(b"\r\n\r\n").await;
            assert_eq!(
                head,
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            );
            let first = c.read_exact(b"9\r\ndata: 1\n\n\r\n".len()).await;
            assert_eq!(first, b"9\r\ndata: 1\n\n\r\n");
            flag.set(true);
            let rest = c.read_until(b"0\r\n\r\n").await;
            let mut want = b"19\r\n".to_vec();
            want.extend_from_slice(b"data: 0123456789abcdefg\n\n\r\n0\r\n\r\n");
            assert_eq!(rest, want);
            // The connection stays usable after the stream.
            c.send(b"GET /next HTTP/1.1\r\n\r\n").await;
            let (_, body) = c.read_message().await;
            assert_eq!(body, b"next");
        })
        .await;
        let _ = expect_request(&mut conn).await;
        conn.start_stream(200, &[("Content-Type", b"text/event-stream")])
            .await
            .expect("start");
        conn.write_chunk(b"data: 1\n\n").await.expect("chunk");
        conn.write_chunk(b"").await.expect("empty chunk is skipped");
        // The client must see the first chunk while the stream is still open.
        while !got_first.get() {
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        conn.write_chunk(b"data: 0123456789abcdefg\n\n")
            .await
            .expect("chunk");
        conn.finish_stream().await.expect("finish");
        let req = expect_request(&mut conn).await;
        assert_eq!(req.head.path(), b"/next");
        conn.write_full(200, &[], b"next", true)
            .await
            .expect("write");
        client.await;
    });
}

#[test]
fn streaming_to_http10_client_is_delimited_by_close() {
    on_both_drivers(|| async {
        let (mut conn, client) = with_client(Limits::default(), |addr| async move {
            let mut c = Raw::connect(addr).await;
            c.send(b"GET /sse HTTP/1.0\r\n\r\n").await;
            let all = c.read_to_close().await;
            assert_eq!(
                all,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ndata: a\n\ndata: b\n\n"
            );
        })
        .await;
        let _ = expect_request(&mut conn).await;
        conn.start_stream(200, &[]).await.expect("start");
        conn.write_chunk(b"data: a\n\n").await.expect("chunk");
        conn.write_chunk(b"data: b\n\n").await.expect("chunk");
        conn.finish_stream().await.expect("finish");
        drop(conn.into_inner());
        client.await;
    });
}
