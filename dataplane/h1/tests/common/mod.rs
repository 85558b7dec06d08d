//! Test support: run a test body under both monoio drivers with a hard time bound, and a
//! raw loopback peer that reads and writes plain bytes.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

/// Bound on any single test body.
pub(crate) const TEST_BOUND: Duration = Duration::from_secs(10);
/// Bound on any single raw-peer wait.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Run `test` on a legacy (epoll) runtime, then on an io_uring runtime, each with the
/// timer enabled and the whole body bounded by [`TEST_BOUND`].
pub(crate) fn on_both_drivers<F, Fut>(test: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut legacy = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("legacy runtime");
    legacy.block_on(async {
        monoio::time::timeout(TEST_BOUND, test())
            .await
            .expect("test timed out (legacy driver)")
    });
    drop(legacy);
    let mut uring = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime (kernel or sandbox may block io_uring)");
    uring.block_on(async {
        monoio::time::timeout(TEST_BOUND, test())
            .await
            .expect("test timed out (io_uring driver)")
    });
}

/// A listener on an ephemeral loopback port.
pub(crate) fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = l.local_addr().expect("local addr");
    (l, addr)
}

/// Accept one connection, bounded.
pub(crate) async fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = monoio::time::timeout(WAIT, l.accept())
        .await
        .expect("accept timed out")
        .expect("accept");
    s
}

/// A raw byte-level peer (client or server side of a test).
pub(crate) struct Raw {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Self {
        let stream = monoio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub(crate) fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        let (res, _) = self.stream.write_all(bytes.to_vec()).await;
        res.expect("raw write");
    }

    /// Write, tolerating a peer that already closed (returns whether it worked).
    pub(crate) async fn try_send(&mut self, bytes: &[u8]) -> bool {
        let (res, _) = self.stream.write_all(bytes.to_vec()).await;
        res.is_ok()
    }

    /// One read; returns bytes read (0 at EOF).
    async fn fill(&mut self) -> usize {
        let (res, chunk) = monoio::time::timeout(WAIT, self.stream.read(Vec::with_capacity(8192)))
            .await
            .expect("raw read timed out");
        let n = res.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Read until `pat` is buffered; return everything up to and including it.
    pub(crate) async fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                return self.buf.drain(..i + pat.len()).collect();
            }
            assert!(
                self.fill().await > 0,
                "EOF before {:?}",
                String::from_utf8_lossy(pat)
            );
        }
    }

    /// Read exactly `n` bytes.
    pub(crate) async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "EOF before {n} bytes");
        }
        self.buf.drain(..n).collect()
    }

    /// Read until the peer closes.
    pub(crate) async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await > 0 {}
        std::mem::take(&mut self.buf)
    }

    /// Read one message head plus a Content-Length body: (head text, body).
    pub(crate) async fn read_message(&mut self) -> (String, Vec<u8>) {
        let head = String::from_utf8(self.read_until(b"\r\n\r\n").await).expect("utf-8 head");
        let len = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        let body = self.read_exact(len).await;
        (head, body)
    }
}
