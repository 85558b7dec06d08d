//! Owned-buffer IO glue over monoio's rent traits: read into the spare capacity of a
//! connection's `BytesMut`, and write a connection's reused `Vec<u8>` out in full.
//!
//! Both helpers move the buffer out of its slot for the duration of the call (monoio IO
//! takes buffers by value). If the future is dropped mid-call the slot is left empty; the
//! callers treat such a connection as poisoned and never reuse it.

use bytes::{Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Write buffers larger than this are not kept between responses, so one big reply does
/// not pin memory on an idle keep-alive connection.
const MAX_RETAINED_WRITE_BUF: usize = 64 * 1024;

/// Read once into the spare capacity of `buf` (after reserving at least `min_spare` bytes).
/// Returns the number of bytes read; 0 means the peer closed its side.
pub(crate) async fn read_more<S: AsyncReadRent>(
    io: &mut S,
    buf: &mut BytesMut,
    min_spare: usize,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let owned = std::mem::take(buf);
    let (start, end) = (owned.len(), owned.capacity());
    let (res, slice) = io.read(owned.slice_mut(start..end)).await;
    *buf = slice.into_inner();
    res
}

/// Write all of `slot`, flush, and put the (cleared) buffer back.
pub(crate) async fn write_buf<S: AsyncWriteRent>(
    io: &mut S,
    slot: &mut Vec<u8>,
) -> std::io::Result<()> {
    let owned = std::mem::take(slot);
    let (res, mut owned) = io.write_all(owned).await;
    owned.clear();
    if owned.capacity() <= MAX_RETAINED_WRITE_BUF {
        *slot = owned;
    }
    res?;
    io.flush().await
}

/// Joins the pieces of a body up to a size cap; a body that arrives in one piece is returned
/// without a copy.
#[derive(Debug, Default)]
pub(crate) struct BodyJoin {
    first: Option<Bytes>,
    joined: BytesMut,
    total: usize,
}

impl BodyJoin {
    /// Adds a piece; `Err(())` once the total passes `max`.
    pub(crate) fn push(&mut self, piece: Bytes, max: usize) -> Result<(), ()> {
        self.total += piece.len();
        if self.total > max {
            return Err(());
        }
        if let Some(f) = self.first.take() {
            self.joined.extend_from_slice(&f);
            self.joined.extend_from_slice(&piece);
        } else if self.joined.is_empty() {
            self.first = Some(piece);
        } else {
            self.joined.extend_from_slice(&piece);
        }
        Ok(())
    }

    /// The whole body.
    pub(crate) fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.joined.freeze())
    }
}

/// What a non-blocking peek at a socket sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerState {
    /// Nothing to read: the peer is there and silent.
    Quiet,
    /// Bytes are waiting (not consumed).
    Readable,
    /// The peer closed (or reset) the connection.
    Closed,
}

/// Peeks at `s` without consuming or blocking (`recv` with `MSG_PEEK | MSG_DONTWAIT`).
pub(crate) fn peek_state<S: std::os::fd::AsRawFd>(s: &S) -> PeerState {
    let fd = s.as_raw_fd();
    let mut byte = [0u8; 1];
    // SAFETY: `fd` belongs to `s`, which is borrowed (so open) for the whole call; `byte` is a
    // valid, writable 1-byte buffer; MSG_PEEK | MSG_DONTWAIT neither consumes data nor blocks,
    // whatever mode the socket is in.
    #[allow(unsafe_code)]
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => PeerState::Closed,
        n if n > 0 => PeerState::Readable,
        _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
            PeerState::Quiet
        }
        _ => PeerState::Closed,
    }
}
