//! Two small example MCP servers bundled for the quickstart (`meshgate --demo`), so a newcomer
//! can federate something without installing anything: `clock` (tools `now` and `countdown`,
//! the latter streaming progress over SSE) and `notes` (tools `add_note`/`list_notes`, a
//! `note://{title}` resource per note and a `summarize_notes` prompt).
//!
//! They speak legacy Streamable HTTP (2025-03-26 … 2025-11-25) on loopback, each on its own
//! thread, using the same `h1` codec as the hub. They are examples, not part of the request
//! path, and are deliberately simple: JSON via `serde_json::Value`, sessions minted but shared.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use h1::{Method, ServerConn};
use parking_lot::Mutex;
use serde_json::{json, Value};

/// Which example server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Example {
    /// Time tools.
    Clock,
    /// A shared notebook with resources and a prompt.
    Notes,
}

impl Example {
    fn name(self) -> &'static str {
        match self {
            Example::Clock => "clock",
            Example::Notes => "notes",
        }
    }
}

/// Starts an example server on `127.0.0.1:0`; returns its MCP URL.
///
/// # Errors
/// When the socket or thread cannot be created.
pub fn start(example: Example) -> std::io::Result<String> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr: SocketAddr = std_listener.local_addr()?;
    let notes: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    std::thread::Builder::new()
        .name(format!("demo-{}", example.name()))
        .spawn(move || {
            let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build();
            let Ok(mut rt) = rt else { return };
            rt.block_on(async move {
                let Ok(listener) = monoio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let notes = notes.clone();
                    monoio::spawn(async move {
                        let mut conn = ServerConn::new(stream, h1::Limits::default());
                        while let Ok(Some(req)) = conn.next_request().await {
                            if !serve(example, &notes, &mut conn, req).await {
                                break;
                            }
                        }
                    });
                }
            });
        })?;
    Ok(format!("http://{addr}/mcp"))
}

type Conn = ServerConn<monoio::net::TcpStream>;

async fn serve(
    ex: Example,
    notes: &Mutex<Vec<(String, String)>>,
    conn: &mut Conn,
    req: h1::Request,
) -> bool {
    let keep = req.head.keep_alive;
    match req.head.method {
        Method::Post => {}
        Method::Delete => return conn.write_empty(200, &[], keep).await.is_ok() && keep,
        _ => {
            return conn
                .write_empty(405, &[("Allow", b"POST, DELETE")], keep)
                .await
                .is_ok()
                && keep
        }
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&req.body) else {
        let body =
            json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}});
        return conn
            .write_full(
                400,
                &[("Content-Type", b"application/json")],
                body.to_string().as_bytes(),
                keep,
            )
            .await
            .is_ok()
            && keep;
    };
    let Some(id) = msg.get("id").cloned() else {
        // Notifications and responses.
        return conn.write_empty(202, &[], keep).await.is_ok() && keep;
    };
    let method = msg["method"].as_str().unwrap_or("");
    let params = &msg["params"];
    if method == "tools/call" && ex == Example::Clock && params["name"] == "countdown" {
        return countdown(conn, id, params, keep).await;
    }
    let mut sid_header = None;
    let result: Result<Value, (i64, String)> = match method {
        "initialize" => {
            let v = params["protocolVersion"].as_str().unwrap_or("2025-03-26");
            let version = mcp_wire::mcp::legacy_revision(v).unwrap_or(mcp_wire::mcp::V2025_11_25);
            sid_header = Some(crate::session::mint_session_id());
            let caps = match ex {
                Example::Clock => json!({"tools":{}}),
                Example::Notes => json!({"tools":{},"resources":{},"prompts":{}}),
            };
            Ok(
                json!({"protocolVersion":version,"capabilities":caps,"serverInfo":{"name":ex.name(),"version":crate::pipeline::VERSION}}),
            )
        }
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": tools(ex)})),
        "tools/call" => call(ex, notes, params),
        "resources/list" if ex == Example::Notes => {
            let list: Vec<Value> = notes
                .lock()
                .iter()
                .map(|(t, _)| json!({"uri":format!("note://{t}"),"name":t,"mimeType":"text/plain"}))
                .collect();
            Ok(json!({"resources": list}))
        }
        "resources/templates/list" if ex == Example::Notes => Ok(
            json!({"resourceTemplates":[{"uriTemplate":"note://{title}","name":"note","description":"A note by title","mimeType":"text/plain"}]}),
        ),
        "resources/read" if ex == Example::Notes => {
            let uri = params["uri"].as_str().unwrap_or("");
            let title = uri.strip_prefix("note://").unwrap_or("");
            match notes.lock().iter().find(|(t, _)| t == title) {
                Some((_, text)) => {
                    Ok(json!({"contents":[{"uri":uri,"mimeType":"text/plain","text":text}]}))
                }
                None => Err((-32002, format!("no note at {uri}"))),
            }
        }
        "prompts/list" if ex == Example::Notes => Ok(
            json!({"prompts":[{"name":"summarize_notes","description":"Ask the model to summarize every note","arguments":[{"name":"style","description":"e.g. bullet points","required":false}]}]}),
        ),
        "prompts/get" if ex == Example::Notes && params["name"] == "summarize_notes" => {
            let style = params["arguments"]["style"]
                .as_str()
                .unwrap_or("a short paragraph");
            let all: Vec<String> = notes
                .lock()
                .iter()
                .map(|(t, x)| format!("- {t}: {x}"))
                .collect();
            Ok(
                json!({"description":"Summarize the notes","messages":[{"role":"user","content":{"type":"text","text":format!("Summarize these notes as {style}:\n{}", all.join("\n"))}}]}),
            )
        }
        _ => Err((-32601, format!("method {method:?} not found"))),
    };
    let body = match result {
        Ok(r) => json!({"jsonrpc":"2.0","id":id,"result":r}),
        Err((code, message)) => {
            json!({"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message}})
        }
    };
    let text = body.to_string();
    let res = match &sid_header {
        Some(sid) => {
            conn.write_full(
                200,
                &[
                    ("Content-Type", b"application/json"),
                    ("Mcp-Session-Id", sid.as_bytes()),
                ],
                text.as_bytes(),
                keep,
            )
            .await
        }
        None => {
            conn.write_full(
                200,
                &[("Content-Type", b"application/json")],
                text.as_bytes(),
                keep,
            )
            .await
        }
    };
    res.is_ok() && keep
}

fn tools(ex: Example) -> Value {
    match ex {
        Example::Clock => json!([
            {"name":"now","description":"The current UTC time (RFC 3339).","inputSchema":{"type":"object","properties":{},"additionalProperties":false},"annotations":{"readOnlyHint":true}},
            {"name":"countdown","description":"Counts down from n (1-10), one step every 200 ms, reporting progress.","inputSchema":{"type":"object","properties":{"n":{"type":"integer","minimum":1,"maximum":10}},"required":["n"],"additionalProperties":false}}
        ]),
        Example::Notes => json!([
            {"name":"add_note","description":"Stores a note under a title (replaces one with the same title).","inputSchema":{"type":"object","properties":{"title":{"type":"string","pattern":"^[A-Za-z0-9_-]{1,64}$"},"text":{"type":"string","maxLength":4096}},"required":["title","text"],"additionalProperties":false}},
            {"name":"list_notes","description":"Lists the titles of all notes.","inputSchema":{"type":"object","properties":{},"additionalProperties":false},"annotations":{"readOnlyHint":true}}
        ]),
    }
}

fn text_result(text: String, is_error: bool) -> Value {
    json!({"content":[{"type":"text","text":text}],"isError":is_error})
}

fn call(
    ex: Example,
    notes: &Mutex<Vec<(String, String)>>,
    params: &Value,
) -> Result<Value, (i64, String)> {
    let args = &params["arguments"];
    match (ex, params["name"].as_str().unwrap_or("")) {
        (Example::Clock, "now") => Ok(text_result(rfc3339(SystemTime::now()), false)),
        (Example::Notes, "add_note") => {
            let (Some(title), Some(text)) = (args["title"].as_str(), args["text"].as_str()) else {
                return Ok(text_result(
                    "add_note needs string arguments title and text".into(),
                    true,
                ));
            };
            let valid = !title.is_empty()
                && title.len() <= 64
                && title
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Ok(text_result(
                    "title must match ^[A-Za-z0-9_-]{1,64}$".into(),
                    true,
                ));
            }
            let mut n = notes.lock();
            n.retain(|(t, _)| t != title);
            n.push((title.to_string(), text.chars().take(4096).collect()));
            Ok(text_result(format!("saved note://{title}"), false))
        }
        (Example::Notes, "list_notes") => {
            let titles: Vec<String> = notes.lock().iter().map(|(t, _)| t.clone()).collect();
            Ok(text_result(
                if titles.is_empty() {
                    "(no notes yet)".into()
                } else {
                    titles.join("\n")
                },
                false,
            ))
        }
        (_, other) => Err((-32602, format!("unknown tool: {other}"))),
    }
}

/// `countdown`: an SSE answer with a progress notification per step, then the result.
async fn countdown(conn: &mut Conn, id: Value, params: &Value, keep: bool) -> bool {
    let n = params["arguments"]["n"].as_u64().unwrap_or(3).clamp(1, 10);
    let token = params["_meta"]["progressToken"].clone();
    let sse: [(&str, &[u8]); 2] = [
        ("Content-Type", b"text/event-stream"),
        ("Cache-Control", b"no-cache"),
    ];
    if conn.start_stream(200, &sse).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    for i in 0..n {
        monoio::time::sleep(Duration::from_millis(200)).await;
        if !token.is_null() {
            let note = json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":token,"progress":i + 1,"total":n,"message":format!("{} left", n - i - 1)}});
            buf.clear();
            h1::encode_sse_event(
                &mut buf,
                None,
                None,
                Some(note.to_string().as_bytes()),
                None,
            );
            if conn.write_chunk(&buf).await.is_err() {
                return false;
            }
        }
    }
    let done = json!({"jsonrpc":"2.0","id":id,"result":text_result(format!("liftoff after {n} steps"), false)});
    buf.clear();
    h1::encode_sse_event(
        &mut buf,
        None,
        None,
        Some(done.to_string().as_bytes()),
        None,
    );
    conn.write_chunk(&buf).await.is_ok() && conn.finish_stream().await.is_ok() && keep
}

/// Formats a time as RFC 3339 UTC (`2026-11-23T18:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm, public domain description).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29T12:34:56Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59Z"
        );
    }
}
