//! A real PostgreSQL server per test binary: `initdb` into a temp dir and `postgres` on a free
//! loopback port, from Debian's `postgresql` package (`/usr/lib/postgresql/<ver>/bin`). As root,
//! both run as `nobody` through `setpriv` (initdb refuses root; setpriv execs, so the child we
//! kill is postgres itself). Killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL.
pub struct Pg {
    child: Child,
    /// Port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
             install them (Debian: apt-get install -y postgresql; .ci/run does this)"
        )
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--reset-env",
        ]);
        c.arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Pg {
    /// Starts a fresh server (bounded: panics with the log if it is not up within 60 s).
    pub fn start() -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("meshgate-pg")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            // nobody must own the directory it initialises.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod temp dir");
        }
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).expect("log file");
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        let pg = Pg {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // Accepting TCP is not yet accepting queries; the caller's connect retries.
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(pg._dir.path().join("postgres.log"))
                    .unwrap_or_default();
                panic!("postgres did not listen on {port} within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pg
    }

    /// URL of a database on this server (created by [`Pg::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a database (retrying while the server finishes starting, bounded).
    pub fn create_db(&self, db: &str) {
        let bin = bin_dir();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(bin.join("psql"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c"])
                .arg(format!("CREATE DATABASE {db}"))
                .output();
            match out {
                Ok(o) if o.status.success() => return,
                Ok(o) if Instant::now() > deadline => {
                    panic!(
                        "CREATE DATABASE {db}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    )
                }
                Err(e) => panic!("run psql: {e}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
