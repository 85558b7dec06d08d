//! Server-sent events (`text/event-stream`) framing: [`SseDecoder`] splits an upstream
//! stream into events, [`encode_sse_event`] writes events for downstream clients.
//!
//! The decoder is sans-IO: push bytes as they arrive (any split), pull complete events.
//! It follows the WHATWG parsing rules for lines and fields, with one deliberate
//! difference: blocks that set only `id:`, `event:` and/or `retry:` are yielded too, because
//! the hub must see an upstream's priming event and its reconnection hints.

/// A keep-alive comment frame; clients ignore it, proxies see traffic.
pub const SSE_KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// Start of the decoder's buffer is compacted away once this many bytes are consumed.
const COMPACT_AT: usize = 4096;

/// One dispatched event block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// Value of the block's last `id:` field (ids containing NUL are ignored).
    pub id: Option<String>,
    /// Value of the block's last `event:` field.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// True if the block had at least one `data` field (even an empty one).
    pub has_data: bool,
    /// Value of the block's last valid `retry:` field (ASCII digits only).
    pub retry: Option<u64>,
}

/// Incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// The previous line ended with `\r` at the end of the buffer; a `\n` that follows
    /// belongs to it.
    skip_lf: bool,
    /// The stream start (and a possible BOM) has been handled.
    started: bool,
    /// The event being built.
    cur: SseEvent,
    /// Whether `cur` has any field set.
    cur_set: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append bytes from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos >= COMPACT_AT && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet consumed as complete lines.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Next complete event block, if one is buffered.
    ///
    /// Unlike a browser, also yields blocks that carry only `id:` and/or `retry:` (a
    /// priming event `id: x\ndata:\n\n` yields `id = Some("x")`, `has_data = true`,
    /// `data = ""`). Comment lines are skipped; a block of comments only yields nothing.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        if !self.started {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let avail = &self.buf[self.pos..];
            if avail.len() < BOM.len() && BOM.starts_with(avail) {
                // Could still become a BOM; wait for more bytes.
                return None;
            }
            if avail.starts_with(BOM) {
                self.pos += BOM.len();
            }
            self.started = true;
        }
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let avail = &self.buf[self.pos..];
            let end = memchr::memchr2(b'\n', b'\r', avail)?;
            let line_start = self.pos;
            let line_end = line_start + end;
            let term = avail[end];
            self.pos = line_end + 1;
            if term == b'\r' {
                if self.pos < self.buf.len() {
                    if self.buf[self.pos] == b'\n' {
                        self.pos += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            if line_start == line_end {
                if self.cur_set {
                    self.cur_set = false;
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.data.ends_with('\n') {
                        ev.data.pop();
                    }
                    return Some(ev);
                }
                continue;
            }
            self.field(line_start, line_end);
        }
    }

    /// Apply one non-empty line to the event being built.
    fn field(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.cur.data.push_str(&String::from_utf8_lossy(value));
                self.cur.data.push('\n');
                self.cur.has_data = true;
                self.cur_set = true;
            }
            b"event" => {
                self.cur.event = Some(String::from_utf8_lossy(value).into_owned());
                self.cur_set = true;
            }
            b"id" if !value.contains(&0) => {
                self.cur.id = Some(String::from_utf8_lossy(value).into_owned());
                self.cur_set = true;
            }
            b"retry" => {
                let ms = parse_retry(value);
                if ms.is_some() {
                    self.cur.retry = ms;
                    self.cur_set = true;
                }
            }
            _ => {}
        }
    }
}

/// A `retry:` value: ASCII digits only, fitting in a `u64`.
fn parse_retry(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Append one event to `out`.
///
/// Multi-line data (split at `\n`, `\r\n` or `\r`) becomes several `data:` lines;
/// `data: None` writes no data line (e.g. a retry-only frame), `Some(b"")` writes one empty
/// `data:` line. Line breaks inside `id` or `event` are dropped so they cannot break framing.
pub fn encode_sse_event(
    out: &mut Vec<u8>,
    id: Option<&str>,
    event: Option<&str>,
    data: Option<&[u8]>,
    retry: Option<u64>,
) {
    if let Some(id) = id {
        put_single_line(out, b"id", id.as_bytes());
    }
    if let Some(event) = event {
        put_single_line(out, b"event", event.as_bytes());
    }
    if let Some(data) = data {
        let mut rest = data;
        loop {
            let (line, next) = match memchr::memchr2(b'\n', b'\r', rest) {
                Some(i) => {
                    let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                        2
                    } else {
                        1
                    };
                    (&rest[..i], Some(&rest[i + skip..]))
                }
                None => (rest, None),
            };
            put_field(out, b"data", line);
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }
    }
    if let Some(ms) = retry {
        put_field(out, b"retry", itoa::Buffer::new().format(ms).as_bytes());
    }
    out.push(b'\n');
}

/// `name: value\n`, or `name:\n` for an empty value (the decoder strips one space).
fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.push(b':');
    if !value.is_empty() {
        out.push(b' ');
        out.extend_from_slice(value);
    }
    out.push(b'\n');
}

fn put_single_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if memchr::memchr2(b'\n', b'\r', value).is_none() {
        put_field(out, name, value);
    } else {
        let clean: Vec<u8> = value
            .iter()
            .copied()
            .filter(|&b| b != b'\n' && b != b'\r')
            .collect();
        put_field(out, name, &clean);
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
