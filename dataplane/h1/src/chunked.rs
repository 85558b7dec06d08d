//! Sans-IO decoder for `Transfer-Encoding: chunked` bodies, shared by the server (request
//! bodies) and the client (upstream responses, including SSE streams).
//!
//! The decoder consumes bytes from the front of the connection's read buffer and hands out
//! chunk data as `Bytes` split off that buffer, so data is never copied here. It returns
//! data as soon as any of a chunk is buffered, which keeps streamed responses low-latency.
//! Chunk extensions are skipped, trailer fields are read and discarded (bounded in size).

use bytes::{Bytes, BytesMut};

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;

/// What one decoding step produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Some body data (never empty).
    Data(Bytes),
    /// The buffer holds no complete unit; read more bytes and call again.
    NeedMore,
    /// The last chunk and the trailer section have been consumed.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

/// Incremental chunked-body decoder.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder expecting a chunk-size line; the trailer section may take at most
    /// `max_trailer_bytes`.
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            state: State::Size,
            trailer_bytes: 0,
            max_trailer_bytes,
        }
    }

    /// Consume as much of `buf` as forms the next unit of the body.
    ///
    /// # Errors
    /// A static description of the framing error; the body cannot be recovered.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, &'static str> {
        loop {
            match self.state {
                State::Size => {
                    let Some(nl) = memchr::memchr(b'\n', buf) else {
                        if buf.len() > MAX_SIZE_LINE {
                            return Err("chunk size line too long");
                        }
                        return Ok(Chunk::NeedMore);
                    };
                    if nl > MAX_SIZE_LINE {
                        return Err("chunk size line too long");
                    }
                    let size = parse_size_line(strip_cr(&buf[..nl]))?;
                    let _ = buf.split_to(nl + 1);
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Data(rem) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let n = usize::try_from(rem).unwrap_or(usize::MAX).min(buf.len());
                    let rem = rem - n as u64;
                    self.state = if rem == 0 {
                        State::DataEnd
                    } else {
                        State::Data(rem)
                    };
                    return Ok(Chunk::Data(buf.split_to(n).freeze()));
                }
                State::DataEnd => match &buf[..] {
                    [b'\r', b'\n', ..] => {
                        let _ = buf.split_to(2);
                        self.state = State::Size;
                    }
                    [b'\n', ..] => {
                        let _ = buf.split_to(1);
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok(Chunk::NeedMore),
                    _ => return Err("missing CRLF after chunk data"),
                },
                State::Trailer => {
                    let Some(nl) = memchr::memchr(b'\n', buf) else {
                        if self.trailer_bytes + buf.len() > self.max_trailer_bytes {
                            return Err("chunked trailer section too large");
                        }
                        return Ok(Chunk::NeedMore);
                    };
                    self.trailer_bytes += nl + 1;
                    if self.trailer_bytes > self.max_trailer_bytes {
                        return Err("chunked trailer section too large");
                    }
                    let line_empty = strip_cr(&buf[..nl]).is_empty();
                    let _ = buf.split_to(nl + 1);
                    if line_empty {
                        self.state = State::Done;
                    }
                }
                State::Done => return Ok(Chunk::Done),
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `chunk-size [ BWS ";" ext ]`: hex digits, then optional whitespace and extensions.
fn parse_size_line(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err("bad chunk size");
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let v = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .ok_or("chunk size overflow")?;
    }
    let rest = &line[digits..];
    let rest_trimmed = crate::headers::trim_ascii(rest);
    if !rest_trimmed.is_empty() && rest_trimmed[0] != b';' {
        return Err("bad chunk size");
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in pieces of `step` bytes; collect the body or the error.
    fn run(input: &[u8], step: usize) -> Result<(Vec<u8>, usize), &'static str> {
        let mut dec = ChunkedDecoder::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Chunk::Data(d) => {
                    assert!(!d.is_empty());
                    out.extend_from_slice(&d);
                }
                Chunk::NeedMore => {
                    if fed == input.len() {
                        return Err("eof");
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                Chunk::Done => return Ok((out, buf.len() + input.len() - fed)),
            }
        }
    }

    #[test]
    fn table() {
        let ok: &[(&[u8], &[u8], usize)] = &[
            (b"0\r\n\r\n", b"", 0),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 0),
            (
                b"5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\n\r\n",
                b"hello world",
                0,
            ),
            (
                b"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\nNEXT",
                b"0123456789",
                4,
            ),
            (b"3\nabc\n0\n\n", b"abc", 0),
            (b"0000000003\r\nabc\r\n0\r\n\r\n", b"abc", 0),
        ];
        for (input, body, left) in ok {
            for step in 1..=input.len() {
                let (out, rest) = run(input, step).expect("valid chunked body");
                assert_eq!(
                    &out[..],
                    *body,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
                assert_eq!(rest, *left);
            }
        }
        let bad: &[&[u8]] = &[
            b"x\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
        ];
        for input in bad {
            for step in 1..=input.len() {
                assert!(
                    run(input, step).is_err(),
                    "{:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Truncated bodies need more input.
        assert_eq!(run(b"5\r\nhel", 2), Err("eof"));
        // Oversized trailer section.
        let mut big = b"0\r\n".to_vec();
        for _ in 0..100 {
            big.extend_from_slice(b"X-Long-Trailer: 0123456789\r\n");
        }
        big.extend_from_slice(b"\r\n");
        assert_eq!(run(&big, 7), Err("chunked trailer section too large"));
        // Endless size line.
        assert_eq!(run(&[b'1'; 5000], 100), Err("chunk size line too long"));
    }
}
