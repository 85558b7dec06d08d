//! Worker threads: one monoio runtime per core, each with its own `SO_REUSEPORT` listener on the
//! same address, so the kernel spreads connections and workers share nothing but the [`Hub`].
//! The io_uring driver is used where the kernel allows it; `driver: legacy` (or `auto` on a
//! kernel or sandbox that forbids io_uring) runs the epoll driver instead.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::Driver;
use crate::hub::{Hub, Worker};

/// Binds the first listener (resolving port 0), so every worker can bind the same address.
///
/// # Errors
/// When the address cannot be bound.
pub fn probe_bind(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let l = reuseport_listener(addr)?;
    l.local_addr()
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Whether this kernel lets us create an io_uring.
pub fn io_uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Starts `hub.snap.workers` worker threads serving `addr`; returns their handles.
///
/// # Errors
/// When a thread cannot be spawned.
pub fn start(hub: Arc<Hub>, addr: SocketAddr) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let uring = match hub.snap.driver {
        Driver::Legacy => false,
        Driver::IoUring => true,
        Driver::Auto => io_uring_available(),
    };
    tracing::info!(
        workers = hub.snap.workers,
        driver = if uring { "io_uring" } else { "epoll" },
        "starting workers"
    );
    let mut handles = Vec::with_capacity(hub.snap.workers);
    // Bind all listeners first so the port is open before this returns.
    let mut listeners = Vec::with_capacity(hub.snap.workers);
    for _ in 0..hub.snap.workers {
        listeners.push(reuseport_listener(addr)?);
    }
    for (i, l) in listeners.into_iter().enumerate() {
        let hub = hub.clone();
        let h = std::thread::Builder::new()
            .name(format!("meshgate-w{i}"))
            .spawn(move || {
                let res = if uring {
                    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .enable_timer()
                        .with_entries(4096)
                        .build()
                        .map(|mut rt| rt.block_on(run(hub, i, l)))
                } else {
                    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(run(hub, i, l)))
                };
                if let Err(e) = res {
                    tracing::error!(worker = i, error = %e, "worker runtime failed to start");
                }
            })?;
        handles.push(h);
    }
    Ok(handles)
}

async fn run(hub: Arc<Hub>, index: usize, std_listener: std::net::TcpListener) {
    let bound_loopback = std_listener
        .local_addr()
        .is_ok_and(|a| a.ip().is_loopback());
    let listener = match monoio::net::TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "listener setup failed");
            return;
        }
    };
    let w = Rc::new(Worker::new(hub, index));
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                let w = w.clone();
                monoio::spawn(CatchUnwind(Box::pin(crate::server::serve(
                    w,
                    stream,
                    bound_loopback,
                ))));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(worker = index, error = %e, "accept failed");
                monoio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs a connection's future and contains a panic inside it: the connection is dropped and
/// logged, while the worker thread (and every other connection on it) keeps serving.
struct CatchUnwind<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()>> std::future::Future for CatchUnwind<F> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(p) => p,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %what, "a connection task panicked; the connection was dropped (this is a bug)");
                std::task::Poll::Ready(())
            }
        }
    }
}
