//! Child-process plumbing for stdio servers: spawning (own process group, parent-death signal,
//! piped stdio, stderr into `tracing`), the registry of live process groups killed on agent exit,
//! and the capped exponential restart backoff.
//!
//! Sits under `mux` (which owns one spawned child) and [`crate::stdio`] (which decides
//! when to spawn and restart).

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::config::StdioConfig;

fn registry() -> &'static Mutex<HashSet<i32>> {
    static R: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Sends SIGKILL to the process group led by `pgid` (ignoring "no such process").
pub fn kill_group(pgid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// Kills every child process group the agent spawned (on agent exit).
pub fn kill_all_children() {
    let groups: Vec<i32> = match registry().lock() {
        Ok(mut g) => g.drain().collect(),
        Err(p) => p.into_inner().drain().collect(),
    };
    for g in groups {
        kill_group(g);
    }
}

/// The pids (= process group ids) of all live children, for diagnostics and tests.
pub fn live_children() -> Vec<i32> {
    match registry().lock() {
        Ok(g) => g.iter().copied().collect(),
        Err(p) => p.into_inner().iter().copied().collect(),
    }
}

/// Forgets a child's process group after it was reaped; also kills the group so helpers it left
/// behind do not outlive it.
pub fn release_group(pgid: i32) {
    kill_group(pgid);
    match registry().lock() {
        Ok(mut g) => g.remove(&pgid),
        Err(p) => p.into_inner().remove(&pgid),
    };
}

/// A spawned child with its pipes.
#[derive(Debug)]
pub struct Spawned {
    /// The process (also its process group id).
    pub child: Child,
    /// Its pid.
    pub pid: i32,
    /// Its stdin.
    pub stdin: ChildStdin,
    /// Its stdout.
    pub stdout: ChildStdout,
}

/// Spawns a stdio server: own process group, SIGKILL on parent death, stdin/stdout piped, stderr
/// logged line by line tagged with the server name.
pub fn spawn(name: &str, cfg: &StdioConfig) -> Result<Spawned, String> {
    let mut cmd = Command::new(&cfg.command);
    cmd.args(&cfg.args)
        .envs(&cfg.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = &cfg.cwd {
        cmd.current_dir(cwd);
    }
    set_pdeathsig(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("stdio server '{name}' cannot start `{}`: {e}", cfg.command))?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| "child exited before its pid was read".to_owned())?;
    match registry().lock() {
        Ok(mut g) => g.insert(pid),
        Err(p) => p.into_inner().insert(pid),
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        release_group(pid);
        return Err("child pipes missing".to_owned());
    };
    let tag = name.to_owned();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(server = %tag, pid, "stderr: {line}");
        }
    });
    Ok(Spawned {
        child,
        pid,
        stdin,
        stdout,
    })
}

/// Arms `PR_SET_PDEATHSIG(SIGKILL)` in the child between fork and exec, so a `kill -9` of the
/// agent takes its children down too.
#[allow(unsafe_code)]
fn set_pdeathsig(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec; it only calls prctl(2) through
    // rustix, which is async-signal-safe (no allocation, no locks), as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// Capped exponential backoff: 100 ms doubling up to `max`; reset after a healthy run.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at 100 ms (or `max` if smaller).
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100).min(max),
            max,
        }
    }

    /// The delay to wait now; doubles the next one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(100).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_caps() {
        let mut b = Backoff::new(Duration::from_millis(500));
        let v: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(v, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
