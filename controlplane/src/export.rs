//! Audit export for a SIEM: every record accepted on ingest is queued (bounded; a full queue
//! drops and counts) and sent to each configured sink by one background task:
//!
//! - `syslog+udp://host:port`: RFC 5424, one datagram per record;
//! - `syslog+tcp://host:port`: RFC 5424 with octet-counting framing (RFC 6587), reconnecting;
//! - `otlp+http://host:port/v1/logs` (or `otlp+https://…`): OTLP/HTTP JSON log records, batched.
//!
//! Each message carries the hub, seq, kind, principal, upstream, tool and outcome as structured
//! data / attributes, and the record line itself as the message body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::store::AuditRow;

/// Where to send audit records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// RFC 5424 over UDP.
    SyslogUdp(String),
    /// RFC 5424 over TCP (octet counting).
    SyslogTcp(String),
    /// OTLP/HTTP JSON logs endpoint URL.
    Otlp(String),
}

impl Sink {
    /// Parses `syslog+udp://h:p`, `syslog+tcp://h:p`, `otlp+http(s)://h:p/path`.
    pub fn parse(s: &str) -> Result<Sink, String> {
        if let Some(a) = s.strip_prefix("syslog+udp://") {
            Ok(Sink::SyslogUdp(a.trim_end_matches('/').to_owned()))
        } else if let Some(a) = s.strip_prefix("syslog+tcp://") {
            Ok(Sink::SyslogTcp(a.trim_end_matches('/').to_owned()))
        } else if let Some(u) = s.strip_prefix("otlp+") {
            if u.starts_with("http://") || u.starts_with("https://") {
                Ok(Sink::Otlp(u.to_owned()))
            } else {
                Err(format!("audit export {s:?}: otlp+http:// or otlp+https://"))
            }
        } else {
            Err(format!(
                "audit export {s:?}: expected syslog+udp://, syslog+tcp:// or otlp+http(s)://"
            ))
        }
    }
}

/// The export queue.
#[derive(Debug)]
pub struct Exporter {
    tx: Option<mpsc::Sender<AuditRow>>,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records sent (counted once per sink).
    pub sent: Arc<AtomicU64>,
    /// Send failures.
    pub failed: Arc<AtomicU64>,
}

impl Exporter {
    /// Starts the export task (none when `sinks` is empty).
    pub fn start(sinks: Vec<Sink>, host: String) -> Exporter {
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        if sinks.is_empty() {
            return Exporter {
                tx: None,
                dropped: AtomicU64::new(0),
                sent,
                failed,
            };
        }
        let (tx, rx) = mpsc::channel(10_000);
        tokio::spawn(run(sinks, host, rx, sent.clone(), failed.clone()));
        Exporter {
            tx: Some(tx),
            dropped: AtomicU64::new(0),
            sent,
            failed,
        }
    }

    /// Queues records (never blocks; drops and counts when full).
    pub fn push(&self, rows: &[AuditRow]) {
        let Some(tx) = &self.tx else { return };
        for r in rows {
            if tx.try_send(r.clone()).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn run(
    sinks: Vec<Sink>,
    host: String,
    mut rx: mpsc::Receiver<AuditRow>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let mut tcp: Vec<Option<tokio::net::TcpStream>> = sinks.iter().map(|_| None).collect();
    let udp = tokio::net::UdpSocket::bind("0.0.0.0:0").await.ok();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < 100 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        for (i, sink) in sinks.iter().enumerate() {
            let ok = match sink {
                Sink::SyslogUdp(addr) => match &udp {
                    Some(sock) => {
                        let mut ok = true;
                        for r in &batch {
                            ok &= sock
                                .send_to(syslog_line(r, &host).as_bytes(), addr)
                                .await
                                .is_ok();
                        }
                        ok
                    }
                    None => false,
                },
                Sink::SyslogTcp(addr) => send_tcp(&mut tcp[i], addr, &batch, &host).await,
                Sink::Otlp(url) => send_otlp(url, &batch, &host).await,
            };
            if ok {
                sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            } else {
                failed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::warn!(sink = ?sink, records = batch.len(), "audit export failed");
            }
        }
    }
}

async fn send_tcp(
    conn: &mut Option<tokio::net::TcpStream>,
    addr: &str,
    batch: &[AuditRow],
    host: &str,
) -> bool {
    let mut buf = Vec::new();
    for r in batch {
        let line = syslog_line(r, host);
        buf.extend_from_slice(format!("{} ", line.len()).as_bytes());
        buf.extend_from_slice(line.as_bytes());
    }
    // One reconnect per batch: a peer that closed the previous connection gets a fresh one.
    for _ in 0..2 {
        if conn.is_none() {
            match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => *conn = Some(s),
                _ => return false,
            }
        }
        if let Some(s) = conn.as_mut() {
            if s.write_all(&buf).await.is_ok() && s.flush().await.is_ok() {
                return true;
            }
        }
        *conn = None;
    }
    false
}

async fn send_otlp(url: &str, batch: &[AuditRow], host: &str) -> bool {
    let Ok((base, path)) = crate::auth::split_url(url) else {
        return false;
    };
    let Ok(client) = meshgate_control_client::http::Client::new(&base, None, None) else {
        return false;
    };
    let body = otlp_body(batch, host);
    matches!(
        client
            .request(
                hyper::Method::POST,
                &path,
                Some(bytes::Bytes::from(body.to_string())),
                Duration::from_secs(5),
            )
            .await,
        Ok(r) if r.is_success()
    )
}

fn sd_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn rfc3339(ts_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// One RFC 5424 message (facility local0, severity notice).
pub fn syslog_line(r: &AuditRow, host: &str) -> String {
    let msgid: String = r
        .kind
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    format!(
        "<133>1 {} {} meshgate-control - {} [meshgate@32473 hub=\"{}\" seq=\"{}\" principal=\"{}\" upstream=\"{}\" tool=\"{}\" outcome=\"{}\"] {}",
        rfc3339(r.ts_ms),
        if host.is_empty() { "-" } else { host },
        if msgid.is_empty() { "-".into() } else { msgid },
        sd_escape(&r.hub),
        r.seq,
        sd_escape(&r.principal),
        sd_escape(&r.upstream),
        sd_escape(&r.tool),
        sd_escape(&r.outcome),
        r.line
    )
}

/// The OTLP/HTTP JSON body for a batch.
pub fn otlp_body(batch: &[AuditRow], host: &str) -> serde_json::Value {
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let records: Vec<_> = batch
        .iter()
        .map(|r| {
            json!({
                "timeUnixNano": (i128::from(r.ts_ms) * 1_000_000).to_string(),
                "severityNumber": 9,
                "severityText": "INFO",
                "body": {"stringValue": r.line},
                "attributes": [
                    attr("meshgate.hub", &r.hub),
                    json!({"key": "meshgate.seq", "value": {"intValue": r.seq.to_string()}}),
                    attr("meshgate.kind", &r.kind),
                    attr("meshgate.principal", &r.principal),
                    attr("meshgate.upstream", &r.upstream),
                    attr("meshgate.tool", &r.tool),
                    attr("meshgate.outcome", &r.outcome),
                ],
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [attr("service.name", "meshgate-control"), attr("host.name", host)]},
        "scopeLogs": [{"scope": {"name": "meshgate.audit"}, "logRecords": records}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            hub: "hub-1".into(),
            seq: 7,
            ts_ms: 1_767_225_600_123,
            kind: "call".into(),
            principal: "al\"ice]".into(),
            upstream: "files".into(),
            tool: "read".into(),
            outcome: "ok".into(),
            line: "{\"seq\":7}".into(),
            hash: "h".into(),
        }
    }

    #[test]
    fn rfc5424_shape() {
        let l = syslog_line(&row(), "cp1");
        assert!(
            l.starts_with("<133>1 2026-01-01T00:00:00.123Z cp1 meshgate-control - call [meshgate@32473 hub=\"hub-1\" seq=\"7\" principal=\"al\\\"ice\\]\""),
            "{l}"
        );
        assert!(l.ends_with("] {\"seq\":7}"));
    }

    #[test]
    fn otlp_shape() {
        let b = otlp_body(&[row()], "cp1");
        let rec = &b["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(rec["timeUnixNano"], "1767225600123000000");
        assert_eq!(rec["body"]["stringValue"], "{\"seq\":7}");
    }

    #[test]
    fn sinks_parse() {
        assert_eq!(
            Sink::parse("syslog+udp://127.0.0.1:514").unwrap(),
            Sink::SyslogUdp("127.0.0.1:514".into())
        );
        assert!(matches!(
            Sink::parse("otlp+http://c:4318/v1/logs").unwrap(),
            Sink::Otlp(u) if u == "http://c:4318/v1/logs"
        ));
        assert!(Sink::parse("kafka://x").is_err());
    }
}
