//! The built-in `device` MCP server: read-only tools describing the edge box itself (CPU, memory,
//! disks, load, network interfaces, temperatures), answered in-process from `/proc` and `/sys`.
//!
//! Sits behind [`crate::Surface`] at `/mcp/device`; it has no process and no state beyond the
//! session the surface keeps. Every tool returns `structuredContent` plus the same data as text;
//! bad arguments give a tool error (`isError: true`) with the reason.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use mcp_wire::jsonrpc::code;

/// Protocol revision answered to an `initialize` asking for something we do not speak.
const FALLBACK_REVISION: &str = mcp_wire::mcp::V2025_11_25;

/// The `InitializeResult` for a client that asked for `requested`.
pub fn initialize_result(requested: Option<&str>) -> Value {
    let rev = requested
        .and_then(mcp_wire::mcp::legacy_revision)
        .unwrap_or(FALLBACK_REVISION);
    json!({
        "protocolVersion": rev,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "meshgate-edge-device", "version": env!("CARGO_PKG_VERSION")},
        "instructions": "Read-only facts about the edge box this agent runs on.",
    })
}

fn no_args_schema() -> Value {
    json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
}

/// The tool definitions (`tools/list` result items).
pub fn tools() -> Vec<Value> {
    let ann = json!({"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false, "destructiveHint": false});
    let t = |name: &str, title: &str, desc: &str, schema: Value| json!({"name": name, "title": title, "description": desc, "inputSchema": schema, "annotations": ann});
    vec![
        t(
            "cpu",
            "CPU",
            "CPU model name, number of logical cores, and overall CPU usage in percent (0-100) \
             sampled from /proc/stat over `sample_ms` milliseconds (default 200).",
            json!({
                "type": "object",
                "properties": {"sample_ms": {"type": "integer", "minimum": 50, "maximum": 2000,
                    "description": "Sampling interval in milliseconds (50-2000, default 200)."}},
                "required": [],
                "additionalProperties": false,
            }),
        ),
        t(
            "memory",
            "Memory",
            "Memory and swap totals from /proc/meminfo, in bytes: total, free, available, buffers, \
             cached, swap_total, swap_free, plus used_percent (0-100).",
            no_args_schema(),
        ),
        t(
            "disk",
            "Disk usage",
            "Filesystem capacity per mount point (from /proc/mounts and statvfs), in bytes: \
             total_bytes, free_bytes, available_bytes, used_bytes, plus used_percent (0-100). \
             With `path`, only the filesystem containing that absolute path.",
            json!({
                "type": "object",
                "properties": {"path": {"type": "string", "pattern": "^/", "maxLength": 4096,
                    "description": "Absolute path; report only the filesystem that contains it."}},
                "required": [],
                "additionalProperties": false,
            }),
        ),
        t(
            "load",
            "Load and uptime",
            "System load averages over 1, 5 and 15 minutes (runnable tasks, from /proc/loadavg), \
             running/total task counts, and uptime in seconds (from /proc/uptime).",
            no_args_schema(),
        ),
        t(
            "network_interfaces",
            "Network interfaces",
            "Network interfaces from /sys/class/net: name, operational state (up/down/unknown), \
             MAC address, MTU in bytes, received/transmitted byte counters, and IPv6 addresses \
             (from /proc/net/if_inet6).",
            no_args_schema(),
        ),
        t(
            "temperatures",
            "Temperatures",
            "Temperature sensors in degrees Celsius, from hwmon (/sys/class/hwmon/*/temp*_input) \
             and thermal zones (/sys/class/thermal/thermal_zone*/temp). Empty list when the box \
             exposes none.",
            no_args_schema(),
        ),
    ]
}

/// Handles one request on the device server; returns the response message.
pub async fn handle(msg: &Value) -> Value {
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
    match method {
        "ping" => crate::body::rpc_result(&id, json!({})),
        "tools/list" => crate::body::rpc_result(&id, json!({"tools": tools()})),
        "tools/call" => {
            let Some(name) = params.get("name").and_then(Value::as_str) else {
                return crate::body::rpc_error(
                    Some(&id),
                    code::INVALID_PARAMS,
                    "tools/call needs params.name",
                );
            };
            let args = params
                .get("arguments")
                .cloned()
                .unwrap_or_else(|| json!({}));
            match call_tool(name, &args).await {
                Some(r) => crate::body::rpc_result(&id, r),
                None => crate::body::rpc_error(
                    Some(&id),
                    code::INVALID_PARAMS,
                    format!("unknown tool: {name}"),
                ),
            }
        }
        "logging/setLevel" => crate::body::rpc_result(&id, json!({})),
        m => crate::body::rpc_error(
            Some(&id),
            code::METHOD_NOT_FOUND,
            format!("device server: method not found: {m}"),
        ),
    }
}

fn tool_error(reason: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": reason.into()}], "isError": true})
}

fn tool_ok(v: Value) -> Value {
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    json!({"content": [{"type": "text", "text": text}], "structuredContent": v})
}

/// Checks `args` is an object with only `allowed` keys.
fn check_args<'a>(args: &'a Value, allowed: &[&str]) -> Result<&'a Map<String, Value>, String> {
    let obj = args.as_object().ok_or("arguments must be an object")?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(if allowed.is_empty() {
            format!("unknown argument `{k}`: this tool takes no arguments")
        } else {
            format!("unknown argument `{k}` (allowed: {})", allowed.join(", "))
        });
    }
    Ok(obj)
}

/// Runs a tool; `None` if there is no such tool.
pub async fn call_tool(name: &str, args: &Value) -> Option<Value> {
    let r = match name {
        "cpu" => cpu(args).await,
        "memory" => check_args(args, &[]).and_then(|_| memory()),
        "disk" => disk(args),
        "load" => check_args(args, &[]).and_then(|_| load()),
        "network_interfaces" => check_args(args, &[]).map(|_| network_interfaces()),
        "temperatures" => check_args(args, &[]).map(|_| temperatures()),
        _ => return None,
    };
    Some(match r {
        Ok(v) => tool_ok(v),
        Err(e) => tool_error(format!("{name}: {e}")),
    })
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn cpu_times() -> Option<(u64, u64)> {
    let stat = read("/proc/stat")?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

async fn cpu(args: &Value) -> Result<Value, String> {
    let obj = check_args(args, &["sample_ms"])?;
    let ms = match obj.get("sample_ms") {
        None => 200,
        Some(v) => match v.as_u64() {
            Some(n) if (50..=2000).contains(&n) => n,
            _ => {
                return Err(format!(
                    "`sample_ms` must be an integer between 50 and 2000, got {v}"
                ))
            }
        },
    };
    let info = read("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k.trim(), "model name" | "Hardware" | "Model" | "cpu model")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let a = cpu_times().ok_or("cannot read /proc/stat")?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let b = cpu_times().ok_or("cannot read /proc/stat")?;
    let dt = b.0.saturating_sub(a.0);
    let di = b.1.saturating_sub(a.1);
    let usage = if dt == 0 {
        0.0
    } else {
        100.0 * (dt.saturating_sub(di)) as f64 / dt as f64
    };
    Ok(json!({
        "model": model,
        "cores": cores,
        "usage_percent": (usage * 10.0).round() / 10.0,
        "sample_ms": ms,
    }))
}

fn memory() -> Result<Value, String> {
    let text = read("/proc/meminfo").ok_or("cannot read /proc/meminfo")?;
    let get = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok())?
            })
            .unwrap_or(0)
            * 1024
    };
    let total = get("MemTotal");
    let available = get("MemAvailable");
    let used_pct = if total == 0 {
        0.0
    } else {
        100.0 * (total - available.min(total)) as f64 / total as f64
    };
    Ok(json!({
        "total": total,
        "free": get("MemFree"),
        "available": available,
        "buffers": get("Buffers"),
        "cached": get("Cached"),
        "swap_total": get("SwapTotal"),
        "swap_free": get("SwapFree"),
        "used_percent": (used_pct * 10.0).round() / 10.0,
        "unit": "bytes",
    }))
}

fn unescape_mount(s: &str) -> String {
    // /proc/mounts escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fs_usage(path: &str) -> Option<(u64, u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    let f = s.f_frsize.max(1);
    Some((s.f_blocks * f, s.f_bfree * f, s.f_bavail * f))
}

fn disk(args: &Value) -> Result<Value, String> {
    let obj = check_args(args, &["path"])?;
    let path = match obj.get("path") {
        None => None,
        Some(Value::String(p)) if p.starts_with('/') && p.len() <= 4096 => Some(p.clone()),
        Some(v) => return Err(format!("`path` must be an absolute path string, got {v}")),
    };
    let mounts = read("/proc/mounts").ok_or("cannot read /proc/mounts")?;
    let mut list: Vec<(String, String, String)> = mounts
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let dev = it.next()?;
            let mnt = unescape_mount(it.next()?);
            let fs = it.next()?;
            Some((dev.to_owned(), mnt, fs.to_owned()))
        })
        .collect();
    if let Some(p) = &path {
        let canon = std::fs::canonicalize(p).map_err(|e| format!("`path` {p}: {e}"))?;
        let canon = canon.to_string_lossy().into_owned();
        // The longest mount point that is a prefix of the path (the last one wins for stacks).
        let best = list
            .iter()
            .filter(|(_, m, _)| m == "/" || canon == *m || canon.starts_with(&format!("{m}/")))
            .max_by_key(|(_, m, _)| m.len())
            .cloned();
        list = best.into_iter().collect();
    }
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (dev, mnt, fs) in list {
        let Some((total, free, avail)) = fs_usage(&mnt) else {
            continue;
        };
        if total == 0 && path.is_none() {
            continue; // pseudo filesystems (proc, sysfs, cgroup...)
        }
        if path.is_none() && !seen.insert(mnt.clone()) {
            continue;
        }
        let used = total.saturating_sub(free);
        let denom = used + avail;
        let pct = if denom == 0 {
            0.0
        } else {
            100.0 * used as f64 / denom as f64
        };
        out.push(json!({
            "mount": mnt, "device": dev, "fstype": fs,
            "total_bytes": total, "free_bytes": free, "available_bytes": avail, "used_bytes": used,
            "used_percent": (pct * 10.0).round() / 10.0,
        }));
    }
    Ok(json!({"filesystems": out}))
}

fn load() -> Result<Value, String> {
    let la = read("/proc/loadavg").ok_or("cannot read /proc/loadavg")?;
    let f: Vec<&str> = la.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let (running, total) = f
        .get(3)
        .and_then(|x| x.split_once('/'))
        .map(|(a, b)| (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().unwrap_or(0)))
        .unwrap_or((0, 0));
    let up = read("/proc/uptime")
        .and_then(|u| u.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(json!({
        "load1": num(0), "load5": num(1), "load15": num(2),
        "running_tasks": running, "total_tasks": total,
        "uptime_seconds": up,
    }))
}

fn network_interfaces() -> Value {
    let mut v6: std::collections::HashMap<String, Vec<String>> = Default::default();
    for l in read("/proc/net/if_inet6").unwrap_or_default().lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 6 && f[0].len() == 32 {
            let groups: Vec<String> = (0..8).map(|i| f[0][i * 4..i * 4 + 4].to_owned()).collect();
            let addr = groups.join(":");
            let pretty = addr
                .parse::<std::net::Ipv6Addr>()
                .map(|a| a.to_string())
                .unwrap_or(addr);
            let plen = u8::from_str_radix(f[2], 16).unwrap_or(0);
            v6.entry(f[5].to_owned())
                .or_default()
                .push(format!("{pretty}/{plen}"));
        }
    }
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        let mut names: Vec<String> = dir
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names {
            let base = Path::new("/sys/class/net").join(&n);
            let r = |f: &str| read(base.join(f)).map(|s| s.trim().to_owned());
            let state = r("operstate").unwrap_or_else(|| "unknown".into());
            let flags = r("flags")
                .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                .unwrap_or(0);
            out.push(json!({
                "name": n,
                "state": state,
                "up": flags & 1 == 1,
                "mac": r("address"),
                "mtu": r("mtu").and_then(|m| m.parse::<u64>().ok()),
                "rx_bytes": r("statistics/rx_bytes").and_then(|m| m.parse::<u64>().ok()),
                "tx_bytes": r("statistics/tx_bytes").and_then(|m| m.parse::<u64>().ok()),
                "ipv6_addresses": v6.get(&n).cloned().unwrap_or_default(),
            }));
        }
    }
    json!({"interfaces": out})
}

fn temperatures() -> Value {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/class/hwmon") {
        for e in dir.filter_map(|e| e.ok()) {
            let base = e.path();
            let chip = read(base.join("name"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let Ok(files) = std::fs::read_dir(&base) else {
                continue;
            };
            for f in files.filter_map(|f| f.ok()) {
                let fname = f.file_name().to_string_lossy().into_owned();
                let Some(stem) = fname
                    .strip_prefix("temp")
                    .and_then(|s| s.strip_suffix("_input"))
                else {
                    continue;
                };
                let Some(milli) = read(f.path()).and_then(|s| s.trim().parse::<i64>().ok()) else {
                    continue;
                };
                let label =
                    read(base.join(format!("temp{stem}_label"))).map(|s| s.trim().to_owned());
                out.push(json!({
                    "source": "hwmon", "chip": chip,
                    "sensor": label.unwrap_or_else(|| format!("temp{stem}")),
                    "celsius": milli as f64 / 1000.0,
                }));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir("/sys/class/thermal") {
        for e in dir.filter_map(|e| e.ok()) {
            let n = e.file_name().to_string_lossy().into_owned();
            if !n.starts_with("thermal_zone") {
                continue;
            }
            let Some(milli) =
                read(e.path().join("temp")).and_then(|s| s.trim().parse::<i64>().ok())
            else {
                continue;
            };
            out.push(json!({
                "source": "thermal_zone", "chip": n,
                "sensor": read(e.path().join("type")).map(|s| s.trim().to_owned()).unwrap_or_default(),
                "celsius": milli as f64 / 1000.0,
            }));
        }
    }
    json!({"sensors": out})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn tools_answer_and_reject_bad_args() {
        for t in tools() {
            let name = t["name"].as_str().unwrap();
            assert_eq!(t["inputSchema"]["additionalProperties"], false);
            let r = call_tool(name, &json!({})).await.unwrap();
            assert!(r.get("isError").is_none(), "{name}: {r}");
            assert!(r["structuredContent"].is_object());
            let r = call_tool(name, &json!({"bogus": 1})).await.unwrap();
            assert_eq!(r["isError"], true, "{name}");
        }
        let r = call_tool("disk", &json!({"path": "/"})).await.unwrap();
        assert_eq!(
            r["structuredContent"]["filesystems"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let r = call_tool("disk", &json!({"path": 3})).await.unwrap();
        assert_eq!(r["isError"], true);
        assert!(call_tool("nope", &json!({})).await.is_none());
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
    }
}
