//! Table tests for the SSE decoder and encoder.

use super::*;

fn ev(id: Option<&str>, event: Option<&str>, data: Option<&str>, retry: Option<u64>) -> SseEvent {
    SseEvent {
        id: id.map(str::to_owned),
        event: event.map(str::to_owned),
        data: data.unwrap_or("").to_owned(),
        has_data: data.is_some(),
        retry,
    }
}

/// Decode `input` pushed in one piece, then split at every byte boundary (two pieces), then
/// byte by byte; every way must give the same events.
fn decode_all_ways(input: &[u8]) -> Vec<SseEvent> {
    let whole = decode_pieces(&[input]);
    for cut in 0..=input.len() {
        let split = decode_pieces(&[&input[..cut], &input[cut..]]);
        assert_eq!(
            split,
            whole,
            "cut at {cut} of {:?}",
            String::from_utf8_lossy(input)
        );
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode_pieces(&bytes), whole, "byte by byte");
    whole
}

fn decode_pieces(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for p in pieces {
        d.push(p);
        while let Some(e) = d.next_event() {
            out.push(e);
        }
    }
    out
}

#[test]
fn decoder_table() {
    let cases: Vec<(&[u8], Vec<SseEvent>)> = vec![
        (
            b"data: hello\n\n",
            vec![ev(None, None, Some("hello"), None)],
        ),
        (
            b"data: a\ndata: b\n\n",
            vec![ev(None, None, Some("a\nb"), None)],
        ),
        (
            b"data: a\r\ndata: b\r\n\r\n",
            vec![ev(None, None, Some("a\nb"), None)],
        ),
        (
            b"data: a\rdata: b\r\r",
            vec![ev(None, None, Some("a\nb"), None)],
        ),
        (
            b"data: a\r\n\ndata: b\n\r\n",
            vec![
                ev(None, None, Some("a"), None),
                ev(None, None, Some("b"), None),
            ],
        ),
        (
            b"\xEF\xBB\xBFdata: bom\n\n",
            vec![ev(None, None, Some("bom"), None)],
        ),
        // Only a leading BOM is stripped.
        (
            b"data: x\n\n\xEF\xBB\xBFdata: y\n\n",
            vec![ev(None, None, Some("x"), None)],
        ),
        (
            b"id: x\ndata:\n\n",
            vec![ev(Some("x"), None, Some(""), None)],
        ),
        (b"id: 7\n\n", vec![ev(Some("7"), None, None, None)]),
        (b"retry: 1500\n\n", vec![ev(None, None, None, Some(1500))]),
        (b"retry: 15x\n\n", vec![]),
        (
            b"id: 1\nretry: 10\n\n",
            vec![ev(Some("1"), None, None, Some(10))],
        ),
        (b": comment\n: another\n\n", vec![]),
        (
            b": c\ndata: d\n: c\n\n",
            vec![ev(None, None, Some("d"), None)],
        ),
        (
            b"event: message\ndata: {\"a\":1}\nid: 42\n\n",
            vec![ev(Some("42"), Some("message"), Some("{\"a\":1}"), None)],
        ),
        (b"data\n\n", vec![ev(None, None, Some(""), None)]),
        (
            b"data:no-space\n\n",
            vec![ev(None, None, Some("no-space"), None)],
        ),
        (
            b"data:  two spaces\n\n",
            vec![ev(None, None, Some(" two spaces"), None)],
        ),
        (
            b"data: a:b: c\n\n",
            vec![ev(None, None, Some("a:b: c"), None)],
        ),
        (b"data: \n\n", vec![ev(None, None, Some(""), None)]),
        (b"data:\ndata:\n\n", vec![ev(None, None, Some("\n"), None)]),
        (b"unknown: field\n\n", vec![]),
        (
            b"id: a\0b\ndata: x\n\n",
            vec![ev(None, None, Some("x"), None)],
        ),
        (
            b"\n\n\ndata: after blanks\n\n",
            vec![ev(None, None, Some("after blanks"), None)],
        ),
        // An unterminated block is not dispatched.
        (b"data: pending\n", vec![]),
        (b"data: pending", vec![]),
        (
            b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n",
            vec![
                ev(Some("1"), None, Some("a"), None),
                ev(Some("2"), None, Some("b"), None),
            ],
        ),
        // Fields do not leak from one block into the next.
        (
            b"event: e\ndata: a\n\ndata: b\n\n",
            vec![
                ev(None, Some("e"), Some("a"), None),
                ev(None, None, Some("b"), None),
            ],
        ),
        (
            "data: héllo ✓\n\n".as_bytes(),
            vec![ev(None, None, Some("héllo ✓"), None)],
        ),
    ];
    for (input, want) in cases {
        assert_eq!(
            decode_all_ways(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn decoder_compacts_long_streams() {
    let mut d = SseDecoder::new();
    let mut n = 0;
    for i in 0..10_000 {
        let mut frame = Vec::new();
        encode_sse_event(
            &mut frame,
            None,
            None,
            Some(format!("event {i}").as_bytes()),
            None,
        );
        d.push(&frame);
        while let Some(e) = d.next_event() {
            assert_eq!(e.data, format!("event {n}"));
            n += 1;
        }
    }
    assert_eq!(n, 10_000);
    assert!(d.buf.capacity() < 64 * 1024, "consumed bytes are dropped");
    assert_eq!(d.buffered(), 0);
}

#[test]
fn encoder_table() {
    type Case<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a [u8]>,
        Option<u64>,
        &'a [u8],
    );
    let cases: &[Case<'_>] = &[
        (None, None, Some(b"hello"), None, b"data: hello\n\n"),
        (Some("x"), None, Some(b""), None, b"id: x\ndata:\n\n"),
        (None, None, None, Some(3000), b"retry: 3000\n\n"),
        (
            Some("1"),
            Some("message"),
            Some(b"a\nb"),
            None,
            b"id: 1\nevent: message\ndata: a\ndata: b\n\n",
        ),
        (
            None,
            None,
            Some(b"a\r\nb\rc\n"),
            None,
            b"data: a\ndata: b\ndata: c\ndata:\n\n",
        ),
        (
            Some("bad\nid"),
            Some("ev\r"),
            None,
            None,
            b"id: badid\nevent: ev\n\n",
        ),
        (None, None, Some(b" lead"), None, b"data:  lead\n\n"),
    ];
    for (id, event, data, retry, want) in cases {
        let mut out = Vec::new();
        encode_sse_event(&mut out, *id, *event, *data, *retry);
        assert_eq!(out, *want, "{:?}", String::from_utf8_lossy(want));
    }
}

#[test]
fn encode_then_decode_round_trips() {
    let datas: &[&str] = &[
        "",
        "x",
        "a\nb",
        "trailing\n",
        "\nleading",
        " spaced ",
        "{\"jsonrpc\":\"2.0\"}",
    ];
    for data in datas {
        let mut out = Vec::new();
        encode_sse_event(
            &mut out,
            Some("id-1"),
            Some("message"),
            Some(data.as_bytes()),
            Some(5),
        );
        let got = decode_all_ways(&out);
        assert_eq!(
            got,
            vec![ev(Some("id-1"), Some("message"), Some(data), Some(5))]
        );
    }
}

#[test]
fn keepalive_is_a_comment() {
    assert_eq!(decode_all_ways(SSE_KEEPALIVE), vec![]);
    let mut both = SSE_KEEPALIVE.to_vec();
    both.extend_from_slice(b"data: x\n\n");
    assert_eq!(
        decode_all_ways(&both),
        vec![ev(None, None, Some("x"), None)]
    );
}
