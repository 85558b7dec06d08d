//! Startup preflight: before serving, the hub asks every reachable upstream for its tools and
//! prompts once (a short-lived hub session) and refuses to start when two upstreams would expose
//! the same name, naming both sides. This makes a collision a configuration error instead of a
//! surprise at request time (where the merge still hides the later one and logs it, for
//! upstreams that were unreachable at start or changed later).
//!
//! Each upstream is asked on its first replica (replicas serve the same tools).
//!
//! Only needed when names are not prefixed (`separator: none`) with two or more upstreams, or to
//! report exposed names that break MCP's 1–128 `[A-Za-z0-9_.-]` rule.

use std::collections::HashMap;
use std::time::Duration;

use crate::catalog::fetch_list;
use crate::config::Snapshot;
use crate::federation::ListKind;
use crate::hub::lifecycle::handshake;
use crate::upstream::{self, Pool};

/// A problem found at startup.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PreflightError(pub String);

/// Lists every reachable upstream once and checks the exposed names.
///
/// # Errors
/// A [`PreflightError`] naming both upstreams of the first collision found.
pub fn check_names(snap: &Snapshot) -> Result<(), PreflightError> {
    if snap.separator.is_some() || snap.upstreams.len() < 2 {
        return Ok(());
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .map_err(|e| PreflightError(format!("preflight runtime: {e}")))?;
    rt.block_on(async {
        let pool = Pool::new(snap.upstreams.len());
        for kind in [ListKind::Tools, ListKind::Prompts] {
            let mut owner: HashMap<String, usize> = HashMap::new();
            for up in &snap.upstreams {
                let names = match names_of(&pool, up, kind).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(upstream = %up.name, error = %e, "preflight: upstream not reachable; its names are checked when it answers");
                        continue;
                    }
                };
                for name in names {
                    if let Some(first) = owner.get(&name) {
                        return Err(PreflightError(format!(
                            "{} name collision: {name:?} is exposed by both upstreams[{first}] '{}' and upstreams[{}] '{}'; set a separator (e.g. \"__\") or rename one",
                            kind.field(),
                            snap.upstreams[*first].name,
                            up.index,
                            up.name
                        )));
                    }
                    owner.insert(name, up.index);
                }
            }
        }
        Ok(())
    })
}

async fn names_of(
    pool: &Pool,
    up: &crate::config::Upstream,
    kind: ListKind,
) -> Result<Vec<String>, String> {
    let info = r#"{"name":"meshgate-preflight","version":"0.1.0"}"#;
    let us = monoio::time::timeout(
        Duration::from_secs(5),
        handshake(pool, up, 0, "{}", info, 0),
    )
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let names = if us.has_capability(kind.capability()) {
        let env = crate::hub::lifecycle::envelope("{}", info);
        fetch_list(pool, up, &us, kind, Some(&env))
            .await
            .map_err(|e| e.to_string())?
            .0
            .into_iter()
            .map(|i| i.key.to_string())
            .collect()
    } else {
        Vec::new()
    };
    upstream::delete(pool, up, &us).await;
    Ok(names)
}
