//! `text/event-stream` framing on the streaming path: `h1::encode_sse_event` for the hub's
//! downstream events and `h1::SseDecoder` for upstream streams.
//!
//! - `encode/200B`, `encode/4KiB`: one `message` event with an id, written into a reused
//!   per-connection buffer (single-line JSON, the common case).
//! - `decode_100_events/whole`: push a buffer of 100 events at once, drain every event.
//! - `decode_100_events/segments_1460`: the same bytes pushed in 1460-byte pieces (one TCP
//!   segment each), draining after every push as the relay does.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};

/// A single-line JSON-RPC message of about `target` bytes.
fn json_message(target: usize) -> Vec<u8> {
    let head =
        br#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":""#;
    let tail = br#""}}"#;
    let fill = target.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(target);
    out.extend_from_slice(head);
    out.extend((0..fill).map(|i| b"abcdefghij klmnopqrstuvwxyz"[i % 27]));
    out.extend_from_slice(tail);
    out
}

/// 100 encoded events, alternating small and medium payloads, as an upstream would send.
fn event_stream() -> Vec<u8> {
    let small = json_message(200);
    let medium = json_message(1200);
    let mut out = Vec::new();
    for i in 0..100 {
        let data = if i % 2 == 0 { &small } else { &medium };
        let id = format!("stream-1/{i}");
        h1::encode_sse_event(&mut out, Some(&id), Some("message"), Some(data), None);
    }
    out
}

/// Decodes every event in `pieces`, draining after each push; returns the event count.
fn decode<'a>(pieces: impl Iterator<Item = &'a [u8]>) -> usize {
    let mut dec = h1::SseDecoder::new();
    let mut n = 0;
    for piece in pieces {
        dec.push(piece);
        while let Some(ev) = dec.next_event() {
            black_box(&ev);
            n += 1;
        }
    }
    n
}

fn bench_sse(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_framing");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50);

    let mut out = Vec::with_capacity(8192);
    for (label, size) in [("200B", 200), ("4KiB", 4096)] {
        let msg = json_message(size);
        group.throughput(Throughput::Bytes(msg.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode", label), &msg, |b, msg| {
            b.iter(|| {
                out.clear();
                h1::encode_sse_event(
                    &mut out,
                    Some("stream-1/42"),
                    Some("message"),
                    Some(black_box(msg)),
                    None,
                );
                black_box(out.len())
            })
        });
    }

    let stream = event_stream();
    assert_eq!(decode(std::iter::once(stream.as_slice())), 100);
    assert_eq!(decode(stream.chunks(1460)), 100);
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function(BenchmarkId::new("decode_100_events", "whole"), |b| {
        b.iter(|| decode(std::iter::once(black_box(stream.as_slice()))))
    });
    group.bench_function(
        BenchmarkId::new("decode_100_events", "segments_1460"),
        |b| b.iter(|| decode(black_box(stream.as_slice()).chunks(1460))),
    );
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_sse(&mut c);
    c.final_summary();
}
