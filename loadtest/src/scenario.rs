//! Scenario files: a TOML file naming a run, so a standard load can be committed and rerun.
//!
//! Every key is optional and mirrors a `run` flag; flags given on the command line win.
//! Unknown keys are rejected so a typo never silently changes the run.
//!
//! ```toml
//! target = "http://127.0.0.1:9100/mcp"
//! compare = "http://127.0.0.1:8080/mcp"
//! scenario = "call"        # call | stream | churn | mixed
//! era = "legacy"           # legacy | modern
//! sessions = 64
//! streams = 0
//! rate = 5000.0            # per target, requests/s; omit with closed_loop = true
//! closed_loop = false
//! duration = "10s"
//! warmup = "2s"
//! tools = 10
//! progress = false
//! timeout = "10s"
//! ```

use std::path::Path;

use serde::Deserialize;

/// The contents of a scenario file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Target URL.
    pub target: Option<String>,
    /// Second target for a comparison.
    pub compare: Option<String>,
    /// `call` | `stream` | `churn` | `mixed`.
    pub scenario: Option<String>,
    /// `legacy` | `modern`.
    pub era: Option<String>,
    /// Calling sessions / churners.
    pub sessions: Option<usize>,
    /// Held streams.
    pub streams: Option<usize>,
    /// Open-loop rate per target.
    pub rate: Option<f64>,
    /// Closed loop instead of a rate.
    pub closed_loop: Option<bool>,
    /// Measured window (`10s`).
    pub duration: Option<String>,
    /// Warm-up (`2s`).
    pub warmup: Option<String>,
    /// Distinct tools to call.
    pub tools: Option<usize>,
    /// Attach progress tokens.
    pub progress: Option<bool>,
    /// Request timeout (`10s`).
    pub timeout: Option<String>,
}

/// Reads and parses a scenario file.
///
/// # Errors
/// A message naming the file and, for syntax or key errors, the line.
pub fn load(path: &Path) -> anyhow::Result<ScenarioFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read scenario file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("invalid scenario file {}: {e}", path.display()))
}

/// Parses scenario TOML.
///
/// # Errors
/// The TOML error text.
pub fn parse(text: &str) -> Result<ScenarioFile, String> {
    let f: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(s) = &f.scenario {
        s.parse::<crate::driver::Scenario>()?;
    }
    if let Some(e) = &f.era {
        e.parse::<crate::client::Era>()?;
    }
    for d in [&f.duration, &f.warmup, &f.timeout].into_iter().flatten() {
        meshgate_duration::parse(d).map_err(|e| e.to_string())?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid() {
        let f = parse("target = \"http://x:1/mcp\"\nsessions = 4\nduration = \"2s\"\n").unwrap();
        assert_eq!(f.sessions, Some(4));
        assert!(parse("sesions = 4").unwrap_err().contains("unknown field"));
        assert!(parse("scenario = \"storm\"")
            .unwrap_err()
            .contains("unknown scenario"));
        assert!(parse("duration = \"2 parsecs\"").is_err());
        assert!(parse("sessions = ").is_err());
    }
}
