//! Test harness for the hub: starts the real `meshgate` binary with a config file, starts real
//! upstreams (the loadtest mock in-process, or Node MCP servers as child processes), and talks
//! raw HTTP/1.1 over loopback sockets. Every wait is bounded.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running hub process; killed on drop.
pub struct Hub {
    pub child: Child,
    pub addr: SocketAddr,
    pub url: String,
    pub stderr_path: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh scratch directory under the system temp dir.
pub fn scratch(tag: &str) -> PathBuf {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meshgate-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Starts the hub with `yaml` (a complete config; `listen` should be 127.0.0.1:0).
pub fn start_hub(yaml: &str, driver: &str) -> Hub {
    start_hub_in(None, yaml, driver)
}

/// As [`start_hub`], inside network namespace `netns` when given (`ip netns exec`, which also
/// puts `/etc/netns/<netns>/*` over `/etc/*` for the hub, e.g. its own `hosts` file).
pub fn start_hub_in(netns: Option<&str>, yaml: &str, driver: &str) -> Hub {
    let dir = scratch("hub");
    let cfg = dir.join("hub.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let stderr_path = dir.join("stderr.log");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_meshgate")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_meshgate")),
    };
    let mut child = cmd
        .arg("--config")
        .arg(&cfg)
        .env("MESHGATE_DRIVER", driver)
        .env("MESHGATE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn meshgate");
    let stdout = child.stdout.take().expect("stdout");
    let line = read_line_matching(stdout, "meshgate listening on ", Duration::from_secs(20));
    let Some(line) = line else {
        let _ = child.kill();
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        panic!("hub did not start; stderr:\n{log}");
    };
    let url = line
        .trim()
        .trim_start_matches("meshgate listening on ")
        .to_string();
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host")
        .to_string();
    let addr: SocketAddr = hostport.parse().expect("hub address");
    Hub {
        child,
        addr,
        url,
        stderr_path,
    }
}

impl Hub {
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Reads lines from a child's stdout on a thread until one starts with `prefix` (bounded).
/// The rest of the output is drained in the background so the child never blocks on a pipe.
pub fn read_line_matching<R: Read + Send + 'static>(
    r: R,
    prefix: &str,
    within: Duration,
) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&prefix) {
                let _ = tx.send(line[line.find(&prefix).unwrap_or(0)..].to_string());
                sent = true;
            }
        }
    });
    rx.recv_timeout(within).ok()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// JSON-RPC messages carried by an SSE body (or the JSON body itself).
    pub fn messages(&self) -> Vec<serde_json::Value> {
        if self
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
        {
            self.text()
                .split("\n\n")
                .flat_map(|ev| {
                    let data: Vec<&str> = ev
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    let joined = data.join("\n");
                    serde_json::from_str(&joined).ok()
                })
                .collect()
        } else {
            vec![self.json()]
        }
    }
}

/// Sends raw bytes, reads the whole response (the request should say `Connection: close`).
pub fn raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(bytes)?;
    read_response(&mut s, timeout)
}

fn read_response(s: &mut TcpStream, timeout: Duration) -> std::io::Result<Resp> {
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
            let status = r.code.unwrap_or(0);
            let hs: Vec<(String, String)> = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let mut rest = buf[n..].to_vec();
            let find = |k: &str| {
                hs.iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            let body = if let Some(cl) = find("content-length") {
                let cl: usize = cl.trim().parse().unwrap_or(0);
                while rest.len() < cl && Instant::now() < deadline {
                    let k = s.read(&mut tmp)?;
                    if k == 0 {
                        break;
                    }
                    rest.extend_from_slice(&tmp[..k]);
                }
                rest.truncate(cl);
                rest
            } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                loop {
                    if let Some(b) = dechunk(&rest) {
                        break b;
                    }
                    if Instant::now() >= deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "chunked body timeout",
                        ));
                    }
                    let k = s.read(&mut tmp)?;
                    if k == 0 {
                        break dechunk_partial(&rest);
                    }
                    rest.extend_from_slice(&tmp[..k]);
                }
            } else {
                while Instant::now() < deadline {
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => rest.extend_from_slice(&tmp[..k]),
                    }
                }
                rest
            };
            return Ok(Resp {
                status,
                headers: hs,
                body,
            });
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no response head",
            ));
        }
        let k = s.read(&mut tmp)?;
        if k == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&tmp[..k]);
    }
}

/// Decodes a complete chunked body, or None if the terminating chunk has not arrived.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..nl])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn dechunk_partial(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let Some(size) = std::str::from_utf8(&b[..nl])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            break;
        };
        b = &b[nl + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

/// Anything with a hub address: a [`Hub`] this harness started, or a bare address.
pub trait Target {
    /// The hub's address.
    fn addr(&self) -> SocketAddr;
}

impl Target for Hub {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Target for SocketAddr {
    fn addr(&self) -> SocketAddr {
        *self
    }
}

/// POSTs a JSON-RPC body to the hub's MCP endpoint with the usual headers plus `extra`.
pub fn post(hub: &impl Target, sid: Option<&str>, body: &str, extra: &[(&str, &str)]) -> Resp {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        hub.addr(),
        body.len()
    );
    let has = |k: &str| extra.iter().any(|(a, _)| a.eq_ignore_ascii_case(k));
    if !has("accept") {
        req.push_str("Accept: application/json, text/event-stream\r\n");
    }
    if !has("content-type") {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some(s) = sid {
        req.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw(hub.addr(), req.as_bytes(), Duration::from_secs(20)).expect("hub answers")
}

/// Initializes a session at `version`; returns its id.
pub fn initialize(hub: &impl Target, version: &str) -> String {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"rust-test","version":"1"}}}}}}"#
    );
    let r = post(hub, None, &body, &[]);
    assert_eq!(r.status, 200, "initialize failed: {}", r.text());
    let sid = r
        .header("mcp-session-id")
        .expect("session id header")
        .to_string();
    let n = post(
        hub,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &[("MCP-Protocol-Version", version)],
    );
    assert_eq!(n.status, 202);
    sid
}

/// Calls a tool and returns the final JSON-RPC message.
pub fn call_tool(hub: &impl Target, sid: &str, name: &str, args: &str) -> serde_json::Value {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{{"name":"{name}","arguments":{args}}}}}"#
    );
    let r = post(hub, Some(sid), &body, &[]);
    assert_eq!(r.status, 200, "tools/call HTTP status; body {}", r.text());
    r.messages()
        .into_iter()
        .rev()
        .find(|m| m.get("id").is_some())
        .expect("a response message")
}

/// A loopback port that refuses connections (bound, then closed).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The Node 22 binary and the node kit directory.
pub fn node_kit() -> Option<(PathBuf, PathBuf)> {
    let kit = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let node = kit.join("node_modules/node/bin/node");
    (node.exists()).then_some((node, kit))
}

/// Like [`node_kit`], but fails the test with instructions when the kit is not installed.
pub fn require_node_kit() -> (PathBuf, PathBuf) {
    node_kit().unwrap_or_else(|| panic!("the Node test kit is not installed: run `npm ci --prefix dataplane/tests/node` (see README)"))
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub line: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The child leads its own process group (see spawn_ready): kill the whole group, so
        // wrappers that spawn the real server (node scripts) leave nothing behind.
        let _ = kill_group(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd` and waits (bounded) for a stdout line containing `ready`.
pub fn spawn_ready(mut cmd: Command, ready: &str, within: Duration) -> Proc {
    use std::os::unix::process::CommandExt;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = child.stdout.take().expect("stdout");
    match read_line_matching(out, ready, within) {
        Some(line) => Proc { child, line },
        None => {
            let _ = kill_group(child.id());
            let _ = child.kill();
            panic!("{cmd:?} did not print {ready:?} within {within:?}");
        }
    }
}

/// Kills a whole process group (the child was started as its leader).
pub fn kill_group(pgid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
}

// === Node check reports ===

/// What a Node check runner printed, one entry per check line.
///
/// Understands both report formats of `tests/node`: `e2e-client.mjs` (`ok - NAME`,
/// `ok - NAME # SKIP why`, `not ok - NAME: why`) and `conformance.mjs` (`PASS NAME (p/f)`,
/// `XPASS NAME (p/f)`, `XFAIL NAME (p/f): why`, `FAIL NAME ...`), each closed by the line
/// `N passed, M failed`.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Names of checks that passed (`ok - NAME`, `PASS`, `XPASS`).
    pub passed: Vec<String>,
    /// Checks that skipped themselves, with the reason (`ok - NAME # SKIP why`).
    pub skipped: Vec<String>,
    /// Names of checks that failed as a baseline allows (`XFAIL`).
    pub xfailed: Vec<String>,
    /// Whole lines of checks that failed (`not ok - ...`, `FAIL ...`).
    pub failed: Vec<String>,
    /// The closing `N passed, M failed`, if printed.
    pub summary: Option<(usize, usize)>,
}

impl CheckReport {
    /// Parses a runner's output (stdout and stderr mixed is fine: other lines are ignored).
    pub fn parse(out: &str) -> Self {
        let mut r = Self::default();
        // `NAME (p/f)` or `NAME (p/f): why` -> NAME
        let scenario =
            |rest: &str| -> String { rest.split(" (").next().unwrap_or(rest).trim().to_string() };
        for line in out.lines().map(str::trim_end) {
            if let Some(rest) = line.strip_prefix("ok - ") {
                match rest.split_once(" # SKIP") {
                    Some((name, why)) => r.skipped.push(format!("{name} ({})", why.trim())),
                    None => r.passed.push(rest.to_string()),
                }
            } else if line.starts_with("not ok - ") || line.starts_with("FAIL ") {
                r.failed.push(line.to_string());
            } else if let Some(rest) = line.strip_prefix("XFAIL ") {
                r.xfailed.push(scenario(rest));
            } else if let Some(rest) = line
                .strip_prefix("PASS ")
                .or_else(|| line.strip_prefix("XPASS "))
            {
                r.passed.push(scenario(rest));
            } else if let Some((p, f)) = line.split_once(" passed, ") {
                if let (Ok(p), Some(Ok(f))) = (
                    p.parse::<usize>(),
                    f.strip_suffix(" failed").map(str::parse::<usize>),
                ) {
                    r.summary = Some((p, f));
                }
            }
        }
        r
    }
}

/// Asserts a Node check run did exactly what it must: every check in `pass` passed and no
/// other one did, only the checks in `xfail` failed (as their baseline allows), nothing failed
/// otherwise, nothing skipped itself, and the closing line agrees. A check that silently skips
/// itself, disappears, or is renamed fails here. Returns the parsed report.
pub fn assert_checks(out: &str, pass: &[&str], xfail: &[&str]) -> CheckReport {
    let r = CheckReport::parse(out);
    let sorted = |v: &[&str]| {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    let mut got_pass = r.passed.clone();
    got_pass.sort();
    let mut got_xfail = r.xfailed.clone();
    got_xfail.sort();
    let want_pass = sorted(pass);
    let missing: Vec<&String> = want_pass.iter().filter(|n| !got_pass.contains(n)).collect();
    let extra: Vec<&String> = got_pass.iter().filter(|n| !want_pass.contains(n)).collect();
    assert!(
        r.failed.is_empty() && r.skipped.is_empty() && missing.is_empty() && extra.is_empty(),
        "check run differs from the expected list:\n  failed: {:?}\n  skipped: {:?}\n  \
         expected to pass but did not: {missing:?}\n  passed but not in the list: {extra:?}\n\
         --- output ---\n{out}",
        r.failed,
        r.skipped,
    );
    assert_eq!(
        got_pass.len(),
        want_pass.len(),
        "a check passed twice:\n{out}"
    );
    assert_eq!(got_xfail, sorted(xfail), "allowed failures differ:\n{out}");
    assert_eq!(
        r.summary,
        Some((pass.len() + xfail.len(), 0)),
        "closing `N passed, M failed` line:\n{out}"
    );
    r
}
