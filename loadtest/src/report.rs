//! Output of a run: the final table (with B/A ratios of every percentile when comparing),
//! the JSON file and the SVG latency-percentile spectrum.
//!
//! The SVG is written by hand: x is the percentile on a log(1/(1−p)) axis (50 %, 90 %, 99 %,
//! 99.9 %, 99.99 %), y is latency in ms, one line per (target, metric).

use std::fmt::Write as _;
use std::path::Path;

use crate::driver::RunReport;
use crate::stats::Summary;

/// Ratio B/A of every reported percentile for one metric.
pub fn ratios(a: &Summary, b: &Summary) -> Vec<(&'static str, f64)> {
    a.percentiles()
        .iter()
        .zip(b.percentiles().iter())
        .map(|((l, x), (_, y))| (*l, if *x > 0.0 { y / x } else { f64::NAN }))
        .collect()
}

/// The final table as text.
pub fn table(rep: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<3} {:<9} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "", "metric", "ok", "ok/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
    );
    let tag = |url: &str| -> &'static str {
        match rep.config.targets.iter().position(|t| t == url) {
            Some(0) if rep.config.targets.len() > 1 => "A",
            Some(1) => "B",
            _ => "",
        }
    };
    for r in &rep.results {
        let _ = writeln!(
            s,
            "{:<3} {:<9} {:>9} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            tag(&r.target),
            r.metric,
            r.ok,
            r.throughput,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.error_total
        );
    }
    if rep.results.iter().any(|r| r.metric == "send_lag") {
        let _ = writeln!(
            s,
            "send_lag = how late the driver sent vs the intended time (part of call latency)"
        );
    }
    for (i, t) in rep.config.targets.iter().enumerate() {
        let name = if rep.config.targets.len() > 1 {
            ["A", "B"][i.min(1)]
        } else {
            "target"
        };
        let _ = writeln!(s, "{name} = {t}");
    }
    for r in &rep.results {
        for (kind, n) in &r.errors {
            let _ = writeln!(s, "  errors {} {}: {kind} × {n}", tag(&r.target), r.metric);
        }
    }
    for (url, errs) in &rep.setup_errors {
        for (kind, n) in errs {
            let _ = writeln!(s, "  setup errors {}: {kind} × {n}", tag(url));
        }
    }
    if rep.config.targets.len() == 2 {
        for metric in ["call", "delivery", "cycle"] {
            let m = rep.metric(metric);
            if m.len() == 2 {
                let parts: Vec<String> = ratios(m[0], m[1])
                    .iter()
                    .map(|(l, v)| format!("{l} {v:.2}×"))
                    .collect();
                let _ = writeln!(s, "ratio B/A {metric}: {}", parts.join("  "));
            }
        }
    }
    s
}

/// Writes the report as pretty JSON.
///
/// # Errors
/// I/O or serialisation failures.
pub fn write_json(rep: &impl serde::Serialize, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(rep)?;
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// Renders the percentile spectrum of `series` (label, summary) as SVG.
pub fn svg(title: &str, series: &[(String, &Summary)]) -> String {
    let (w, h) = (820.0_f64, 480.0_f64);
    let (l, r, t, b) = (70.0, 20.0, 40.0, 60.0);
    let xmax = 5.0_f64; // 99.999 %
    let ymax = series
        .iter()
        .flat_map(|(_, s)| s.spectrum.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(0.001)
        * 1.05;
    let xpos = |pct: f64| {
        let p = (pct / 100.0).min(0.99999);
        let x = (-(1.0 - p).log10()).clamp(0.0, xmax);
        l + x / xmax * (w - l - r)
    };
    let ypos = |ms: f64| h - b - ms / ymax * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15">{}</text>"#,
        l,
        xml(title)
    );
    // Axes and grid.
    for (pct, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = xpos(pct);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            h - b
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            h - b + 16.0
        );
    }
    for i in 0..=5 {
        let v = ymax * f64::from(i) / 5.0;
        let y = ypos(v);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/>"##,
            w - r
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{v:.2}</text>"#,
            l - 6.0,
            y + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (l + w - r) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, (label, sum)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = sum
            .spectrum
            .iter()
            .filter(|(p, _)| *p <= 99.999)
            .map(|(p, v)| format!("{:.1},{:.1}", xpos(*p), ypos(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = t + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{c}"/>"#,
            l + 10.0,
            ly - 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{ly}">{} (p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms)</text>"#,
            l + 28.0,
            xml(label),
            sum.p50_ms,
            sum.p99_ms,
            sum.max_ms
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes the plot of every summary in `rep` (both targets when comparing).
///
/// # Errors
/// I/O failures.
pub fn write_plot(rep: &RunReport, title: &str, path: &Path) -> anyhow::Result<()> {
    let n = rep.config.targets.len();
    let series: Vec<(String, &Summary)> = rep
        .results
        .iter()
        .filter(|s| s.ok > 0 && s.metric != "send_lag")
        .map(|s| {
            let who = match rep.config.targets.iter().position(|t| *t == s.target) {
                Some(i) if n > 1 => format!("{} {}", ["A", "B"][i.min(1)], s.target),
                _ => s.target.clone(),
            };
            (format!("{who} {}", s.metric), s)
        })
        .collect();
    std::fs::write(path, svg(title, &series))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
