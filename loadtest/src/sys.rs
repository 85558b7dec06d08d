//! Operating-system helpers shared by the mock and the driver.
//!
//! Owns: the high-resolution timer thread (tokio's timer wheel has 1 ms granularity, which
//! would add up to 1 ms to a 2 ms service time and to every paced send), raising the
//! open-file limit, and socket tuning (large listen backlog, `TCP_NODELAY`, zero-linger close).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::oneshot;

// === impl HiResTimer ===

/// Waits shorter than this go through the timer thread; longer ones sleep on tokio first.
const TOKIO_SLACK: Duration = Duration::from_millis(3);

struct Entry {
    at: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed so the `BinaryHeap` (a max-heap) pops the earliest deadline first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at).then(other.seq.cmp(&self.seq))
    }
}

/// A timer with ~50 µs precision: one OS thread holds a deadline heap and waits with
/// `recv_timeout` (futex, nanosecond timeout). Cheap to clone; the thread exits when the
/// last clone is dropped.
#[derive(Clone)]
pub struct HiResTimer {
    tx: mpsc::Sender<(Instant, oneshot::Sender<()>)>,
}

impl HiResTimer {
    /// Starts the timer thread.
    ///
    /// # Errors
    /// When the OS refuses to spawn a thread.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || timer_thread(rx))?;
        Ok(Self { tx })
    }

    /// Completes at `at` (never earlier, typically < 100 µs later).
    pub async fn sleep_until(&self, at: Instant) {
        let now = Instant::now();
        if at <= now {
            return;
        }
        if at - now > TOKIO_SLACK {
            // The bulk of a long wait costs nothing on tokio's wheel; only the tail needs precision.
            tokio::time::sleep_until((at - TOKIO_SLACK).into()).await;
        }
        let (wake, rx) = oneshot::channel();
        if self.tx.send((at, wake)).is_err() {
            // Timer thread gone (process shutting down): fall back to tokio.
            tokio::time::sleep_until(at.into()).await;
            return;
        }
        let _ = rx.await;
    }

    /// Sleeps for `d` with high precision.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(Instant::now() + d).await;
    }
}

fn timer_thread(rx: mpsc::Receiver<(Instant, oneshot::Sender<()>)>) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|e| e.at <= now) {
            if let Some(e) = heap.pop() {
                let _ = e.wake.send(());
            }
        }
        let msg = match heap.peek() {
            Some(e) => match rx.recv_timeout(e.at.saturating_duration_since(now)) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(m) => Some(m),
                Err(_) => return,
            },
        };
        if let Some((at, wake)) = msg {
            seq += 1;
            heap.push(Entry { at, seq, wake });
            // Drain whatever else is queued without blocking.
            while let Ok((at, wake)) = rx.try_recv() {
                seq += 1;
                heap.push(Entry { at, seq, wake });
            }
        }
    }
}

// === clocks ===

/// Nanoseconds since the Unix epoch (the emit/receive timestamps of stream notifications).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// === open-file limit ===

/// Outcome of [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit now in force.
    pub soft: u64,
    /// Hard limit (the ceiling an unprivileged process may raise to).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns both.
///
/// # Errors
/// When `getrlimit`/`setrlimit` fail.
#[allow(unsafe_code)]
pub fn raise_nofile() -> std::io::Result<NofileLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`; getrlimit only writes into it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `want` is a valid `rlimit` read by setrlimit; raising soft up to hard is
        // always permitted and touches no memory of ours.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(NofileLimit {
        soft: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Raises the limit and fails with a plain message when `need` descriptors will not fit.
///
/// # Errors
/// When the hard limit is below `need`.
pub fn ensure_nofile(need: u64) -> anyhow::Result<NofileLimit> {
    let lim = raise_nofile()?;
    if lim.soft < need {
        anyhow::bail!(
            "this run needs about {need} open files but the hard limit is {} (soft now {}); \
             raise it (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE= in systemd) \
             or use fewer sessions/streams",
            lim.hard,
            lim.soft
        );
    }
    Ok(lim)
}

// === sockets ===

/// Binds a listening socket with `SO_REUSEADDR` and a large backlog (the kernel caps it at
/// `net.core.somaxconn`), non-blocking, ready for `tokio::net::TcpListener::from_std`.
///
/// # Errors
/// When binding fails.
pub fn bind_listener(addr: SocketAddr, backlog: i32) -> std::io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    Ok(sock.into())
}

/// Tunes an accepted or connected stream: `TCP_NODELAY` on, and optionally zero linger so
/// `close` sends RST and leaves no `TIME_WAIT` behind (session churn would otherwise exhaust
/// ephemeral ports).
pub fn tune_stream(s: &tokio::net::TcpStream, zero_linger: bool) {
    let _ = s.set_nodelay(true);
    if zero_linger {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hires_timer_is_precise() {
        let t = HiResTimer::start("t").unwrap();
        let mut over = Vec::new();
        for _ in 0..20 {
            let start = Instant::now();
            t.sleep(Duration::from_micros(1500)).await;
            let el = start.elapsed();
            // Never early: that would be a timer bug.
            assert!(el >= Duration::from_micros(1500));
            over.push(el - Duration::from_micros(1500));
        }
        // How small the overshoot is, is a measurement (benches/scripts/harness-accuracy.sh
        // shows it in the p50 of a fixed service time); a busy shared machine delays wake-ups.
        assert_eq!(over.len(), 20);
    }

    #[test]
    fn nofile_can_be_read() {
        let l = raise_nofile().unwrap();
        assert!(l.soft <= l.hard && l.soft > 0);
        assert!(ensure_nofile(u64::MAX).is_err());
    }
}
