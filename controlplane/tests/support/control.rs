//! The real `meshgate-control` binary as a child process on a loopback port, plus a small JSON
//! client for its API (the `meshgate-control-client` HTTP client).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use meshgate_control_client::http::Client;
use serde_json::Value;

/// The bootstrap admin key every test control plane gets.
pub const ADMIN: &str = "mgc_test-bootstrap-admin-key-0123456789";

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_meshgate-control")
}

/// A running control plane.
pub struct Control {
    child: Option<Child>,
    /// Base URL (`http://127.0.0.1:PORT` or `https://…`).
    pub url: String,
    /// The listen address.
    pub addr: String,
    /// Data directory.
    pub data: PathBuf,
    /// Extra args it was started with (for restarts).
    args: Vec<String>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Control {
    /// Starts `meshgate-control serve --listen 127.0.0.1:0 --data DATA ARGS…` and waits (60 s at
    /// most) for its `listening on` line.
    pub fn start(data: &Path, args: &[&str]) -> Control {
        Self::start_at(
            data,
            "127.0.0.1:0",
            args.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn start_at(data: &Path, listen: &str, args: Vec<String>) -> Control {
        std::fs::create_dir_all(data).expect("data dir");
        let log = data.join(format!(
            "control-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--listen", listen, "--data"])
            .arg(data)
            .args(&args)
            .env("MESHGATE_CONTROL_ADMIN_KEY", ADMIN)
            .env("MESHGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("spawn meshgate-control");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let url = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => {
                    if let Some(u) = l.strip_prefix("meshgate-control listening on ") {
                        break u.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "meshgate-control did not start within 60 s:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        };
        let addr = url
            .split_once("://")
            .map(|(_, a)| a.to_owned())
            .expect("url has a scheme");
        Control {
            child: Some(child),
            url,
            addr,
            data: data.to_owned(),
            args,
            log,
        }
    }

    /// Kills it with SIGKILL (no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same address and data (retrying the bind briefly).
    pub fn restart(&mut self) {
        self.kill();
        let new = Self::start_at(&self.data, &self.addr, self.args.clone());
        *self = new;
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An API client with this token.
    pub fn client(&self, token: Option<&str>) -> Api {
        Api {
            c: Client::new(&self.url, None, token.map(str::to_owned)).expect("client"),
        }
    }

    /// An admin API client.
    pub fn admin(&self) -> Api {
        self.client(Some(ADMIN))
    }

    /// Runs the CLI against this control plane (admin token unless `token` is given); returns
    /// (success, stdout, stderr).
    pub fn cli(&self, args: &[&str], token: Option<&str>) -> (bool, String, String) {
        let out = Command::new(bin())
            .args(args)
            .env("MESHGATE_CONTROL_URL", &self.url)
            .env("MESHGATE_CONTROL_TOKEN", token.unwrap_or(ADMIN))
            .env("MESHGATE_LOG", "warn")
            .output()
            .expect("run CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JSON API client.
#[derive(Clone)]
pub struct Api {
    /// The underlying client.
    pub c: Client,
}

impl Api {
    /// Any request; returns (status, JSON or `null`).
    pub async fn req(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let r = self
            .c
            .request(
                method,
                path,
                body.map(|b| Bytes::from(b.to_string())),
                Duration::from_secs(70),
            )
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    /// GET, expecting 2xx.
    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.req(Method::GET, path, None).await;
        assert!((200..300).contains(&s), "GET {path}: {s} {v}");
        v
    }

    /// POST, expecting 2xx.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.req(Method::POST, path, Some(body)).await;
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    }

    /// PUT, expecting 2xx.
    pub async fn put(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.req(Method::PUT, path, Some(body)).await;
        assert!((200..300).contains(&s), "PUT {path}: {s} {v}");
        v
    }
}
