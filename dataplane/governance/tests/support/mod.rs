//! Test support: start the real `meshgate-test-issuer` binary on loopback and talk to it.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running issuer, killed on drop.
pub struct Issuer {
    child: Child,
    pub url: String,
}

impl Issuer {
    pub fn start(args: &[&str]) -> Issuer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate-test-issuer"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start meshgate-test-issuer");
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(u) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(u.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the issuer prints LISTENING within 20 s");
        Issuer { child, url }
    }

    /// `GET`/`POST` a path, returning (status, body).
    pub fn call(&self, method: &str, path_and_query: &str) -> (u16, String) {
        http(method, &format!("{}{}", self.url, path_and_query), None)
    }

    pub fn mint(&self, query: &str) -> String {
        let (s, b) = self.call("GET", &format!("/admin/mint?{query}"));
        assert_eq!(s, 200, "mint {query}: {b}");
        b
    }

    pub fn stats(&self) -> serde_json::Value {
        serde_json::from_str(&self.call("GET", "/admin/stats").1).unwrap()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal blocking HTTP/1.1 client for loopback tests (Connection: close, 10 s timeouts).
pub fn http(method: &str, url: &str, body: Option<(&str, &[u8])>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some((ctype, b)) = body {
        req.push_str(&format!(
            "Content-Type: {ctype}\r\nContent-Length: {}\r\n",
            b.len()
        ));
    } else if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    if let Some((_, b)) = body {
        s.write_all(b).unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}
