//! Test harness for the edge agent: runs `meshgate-edge serve-local` as a real process, plus a
//! minimal blocking HTTP/1.1 client and process probes. Every wait is bounded.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `dataplane/tests/node` and its node binary; panics with instructions when missing (CI has it).
pub fn node_kit() -> (PathBuf, PathBuf) {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane/tests/node");
    let node = kit.join("node_modules/node/bin/node");
    assert!(
        node.exists(),
        "\n\n*** the Node test kit is missing: run `npm ci --prefix dataplane/tests/node` ***\n\n"
    );
    (kit.canonicalize().unwrap(), node.canonicalize().unwrap())
}

/// A YAML server entry for server-everything over stdio.
pub fn everything_entry(name: &str, extra: &str) -> String {
    let (kit, node) = node_kit();
    let script = kit.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    format!(
        "  - {{ name: {name}, kind: stdio, command: '{}', args: ['{}', stdio]{extra} }}\n",
        node.display(),
        script.display()
    )
}

/// A running `meshgate-edge serve-local`, killed on drop.
pub struct Agent {
    pub child: Child,
    pub addr: String,
    _dir: TempDir,
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        let p = std::env::temp_dir().join(format!(
            "edge-test-{tag}-{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshgate-edge")
}

impl Agent {
    /// Starts the agent with `yaml` and waits (bounded) for `listening on ADDR`.
    pub fn start(yaml: &str) -> Agent {
        let dir = TempDir::new("agent");
        let cfg = dir.0.join("edge.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let mut child = Command::new(bin())
            .args(["serve-local", "--config"])
            .arg(&cfg)
            .args(["--listen", "127.0.0.1:0"])
            .env("MESHGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(a) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(a.to_owned());
                }
                line.clear();
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("agent did not print `listening on` within 20 s");
            }
        };
        Agent {
            child,
            addr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /meshgate/edge/status`.
    pub fn status(&self) -> Value {
        let r = http(&self.addr, "GET", "/meshgate/edge/status", &[], None);
        assert_eq!(r.status, 200);
        r.json()
    }

    /// The status entry of one server.
    pub fn server_status(&self, name: &str) -> Value {
        let st = self.status();
        st["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no server {name} in {st}"))
    }

    /// Polls `f` every 50 ms until it returns `Some`, panicking after `within`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut(&Agent) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `initialize` on `/mcp/<server>`; returns the session id and the response.
    pub fn initialize(&self, server: &str) -> (String, Value) {
        let body = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        let r = http(
            &self.addr,
            "POST",
            &format!("/mcp/{server}"),
            &[],
            Some(body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let sid = r.header("mcp-session-id").unwrap_or_default().to_owned();
        let v = r.json();
        if v.get("result").is_some() {
            let n = http(
                &self.addr,
                "POST",
                &format!("/mcp/{server}"),
                &[("mcp-session-id", &sid)],
                Some(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            );
            assert_eq!(n.status, 202);
        }
        (sid, v)
    }

    /// A request on a session; returns the JSON-RPC response (last SSE message or the JSON body).
    pub fn call(&self, server: &str, sid: &str, body: &str) -> Value {
        let r = http(
            &self.addr,
            "POST",
            &format!("/mcp/{server}"),
            &[("mcp-session-id", sid)],
            Some(body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.messages()
            .pop()
            .unwrap_or_else(|| panic!("no message in {}", r.body))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM first so the agent kills its children; then make sure.
        let _ = Command::new("kill")
            .arg(self.pid().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.body))
    }

    /// JSON-RPC messages of the body: SSE `data:` lines, or the JSON body itself.
    pub fn messages(&self) -> Vec<Value> {
        if self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            self.body
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        } else if self.body.is_empty() {
            vec![]
        } else {
            vec![self.json()]
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; reads the whole response (bounded by 60 s).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        rest = dechunk(&rest);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&rest).into_owned(),
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// Whether `pid` is a live (non-zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Waits (bounded) until none of `pids` is alive; returns the survivors.
pub fn wait_dead(pids: &[i32], within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    loop {
        let live: Vec<i32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if live.is_empty() || Instant::now() >= deadline {
            return live;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn kill9(pid: i32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill -9 {pid}");
}

/// Opens a standalone GET SSE stream on a session; returns the socket after the headers.
pub fn get_stream(addr: &str, server: &str, sid: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /mcp/{server} HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\nmcp-session-id: {sid}\r\n\r\n"
    )
    .unwrap();
    s
}

/// Reads from `s` until `needle` appears or `within` passes; returns everything read.
pub fn read_until(s: &mut TcpStream, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&got).contains(needle) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A YAML server entry for the scripted stdio server (`tests/node/script-server.mjs`).
pub fn script_entry(name: &str, extra: &str) -> String {
    let (_, node) = node_kit();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/script-server.mjs");
    format!(
        "  - {{ name: {name}, kind: stdio, command: '{}', args: ['{}']{extra} }}\n",
        node.display(),
        script.display()
    )
}

/// Sends a POST and returns the socket after the request, to read its answer as it streams.
pub fn post_stream(addr: &str, server: &str, sid: &str, body: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /mcp/{server} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-session-id: {sid}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s
}

/// A GET stream read continuously by a thread: what arrived so far, and whether it ended.
pub struct GetReader {
    got: std::sync::Arc<std::sync::Mutex<(String, bool)>>,
    stream: TcpStream,
}

impl GetReader {
    /// Opens the session's GET stream (with `Last-Event-ID` when given) and starts reading.
    pub fn open(addr: &str, server: &str, sid: &str, last_event_id: Option<&str>) -> GetReader {
        let mut s = TcpStream::connect(addr).unwrap();
        let lei = last_event_id
            .map(|id| format!("last-event-id: {id}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET /mcp/{server} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\naccept: text/event-stream\r\nmcp-session-id: {sid}\r\n{lei}\r\n"
        )
        .unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new((String::new(), false)));
        let (g, mut r) = (got.clone(), s.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            // Bounded: the test ends the stream (shutdown) or the agent does.
            r.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => g
                        .lock()
                        .unwrap()
                        .0
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
            g.lock().unwrap().1 = true;
        });
        GetReader { got, stream: s }
    }

    /// Everything read so far.
    pub fn text(&self) -> String {
        self.got.lock().unwrap().0.clone()
    }

    /// Whether the stream ended (EOF or error).
    pub fn ended(&self) -> bool {
        self.got.lock().unwrap().1
    }

    /// Waits (bounded) until `needle` was read; panics naming `what` otherwise.
    pub fn wait_for(&self, needle: &str, within: Duration, what: &str) -> String {
        let deadline = Instant::now() + within;
        loop {
            {
                let g = self.got.lock().unwrap();
                if g.0.contains(needle) {
                    return g.0.clone();
                }
            }
            if Instant::now() >= deadline {
                let t = self.text();
                let tail = &t[t.len().saturating_sub(2000)..];
                panic!("timed out after {within:?} waiting for {what} ({needle:?}); got {} bytes, ending:\n{tail}", t.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the stream ended; `false` if it did not within `within`.
    pub fn wait_end(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ended() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.ended()
    }

    /// The SSE event ids read so far, in order.
    pub fn ids(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("id: "))
            .map(|s| s.trim().to_owned())
            .collect()
    }

    /// Closes the connection (the agent sees the consumer go away).
    pub fn close(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for GetReader {
    fn drop(&mut self) {
        self.close();
    }
}
