//! The `meshgate-control` command line: `serve` runs the control plane; every other command is a
//! client of its admin API (`--url`, `--token`, `--ca`, or env `MESHGATE_CONTROL_URL`,
//! `MESHGATE_CONTROL_TOKEN`, `MESHGATE_CONTROL_CA`) and prints the JSON answer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::json;

use crate::auth::OidcConfig;
use crate::export::Sink;
use crate::server::ServeConfig;

/// meshgate control plane.
#[derive(Parser, Debug)]
#[command(
    name = "meshgate-control",
    version,
    about = "meshgate control plane: catalog, policy, snapshots, kill switch, edges, approvals, audit"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Debug, Clone)]
struct Conn {
    /// Control plane URL.
    #[arg(
        long,
        env = "MESHGATE_CONTROL_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    url: String,
    /// API key or OIDC token.
    #[arg(
        long,
        env = "MESHGATE_CONTROL_TOKEN",
        global = true,
        hide_env_values = true
    )]
    token: Option<String>,
    /// CA certificate (PEM) for an https URL.
    #[arg(long, env = "MESHGATE_CONTROL_CA", global = true)]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the control plane.
    Serve(Box<ServeArgs>),
    /// Servers, tools and zones.
    Catalog {
        #[command(subcommand)]
        cmd: CatalogCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The policy document.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Held calls.
    Approvals {
        #[command(subcommand)]
        cmd: ApprovalsCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The kill switch.
    Kill {
        #[command(subcommand)]
        cmd: KillCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// The audit store.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Edge enrollment.
    Edge {
        #[command(subcommand)]
        cmd: EdgeCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
        #[command(flatten)]
        conn: Conn,
    },
    /// Snapshots and hubs.
    Snapshot {
        #[command(flatten)]
        conn: Conn,
    },
    /// Hubs: their reports and watch state.
    Hubs {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Listen address (plain HTTP only on loopback; else --tls-cert/--tls-key).
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Data directory (SQLite file, keys, edge CA).
    #[arg(long, default_value = "meshgate-control-data")]
    data: PathBuf,
    /// Database URL: sqlite://PATH (default <data>/control.db) or postgres://user:pw@host/db.
    #[arg(long, env = "MESHGATE_CONTROL_DB", hide_env_values = true)]
    db: Option<String>,
    /// Snapshot signing key file (Ed25519 PKCS#8 PEM; created if missing). Default: the
    /// database keyring, shared by every replica on one database.
    #[arg(long)]
    signing_key: Option<PathBuf>,
    /// Edge CA certificate file (created with its key if both are missing). Default: the
    /// database keyring.
    #[arg(long)]
    edge_ca: Option<PathBuf>,
    /// Edge CA key.
    #[arg(long)]
    edge_ca_key: Option<PathBuf>,
    /// Bootstrap admin key file (created if missing).
    #[arg(long)]
    bootstrap_key_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy or mesh).
    #[arg(long)]
    allow_plain_http: bool,
    /// OIDC issuer (`iss`) whose bearer tokens are accepted.
    #[arg(long)]
    oidc_issuer: Option<String>,
    /// Expected audience (`aud`).
    #[arg(long, default_value = "meshgate-control")]
    oidc_audience: String,
    /// JWKS URL of the issuer.
    #[arg(long)]
    oidc_jwks: Option<String>,
    /// CA (PEM) for an https JWKS URL.
    #[arg(long)]
    oidc_jwks_ca: Option<PathBuf>,
    /// Claim holding roles (dotted path).
    #[arg(long, default_value = "roles")]
    oidc_role_claim: String,
    /// Prefix of role values (e.g. `meshgate-` for `meshgate-admin`).
    #[arg(long, default_value = "")]
    oidc_role_prefix: String,
    /// Claim holding approval groups.
    #[arg(long, default_value = "groups")]
    oidc_groups_claim: String,
    /// Audit export: syslog+udp://H:P, syslog+tcp://H:P, otlp+http://H:P/v1/logs (repeatable).
    #[arg(long = "audit-export")]
    audit_export: Vec<String>,
    /// Directory of the built web console (default: next to the binary, or the source tree's).
    #[arg(long)]
    console: Option<PathBuf>,
    /// Default wait before a held call is denied.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    approval_timeout: Duration,
    /// Lifetime of edge certificates.
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    edge_cert_ttl: Duration,
    /// Renewal window before an edge certificate expires.
    #[arg(long, default_value = "10d", value_parser = parse_duration)]
    edge_renew_before: Duration,
    /// Lifetime of an enrollment token.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    enroll_token_ttl: Duration,
}

#[derive(Subcommand, Debug)]
enum CatalogCmd {
    /// Servers with their tools.
    List,
    /// One server.
    Show { name: String },
    /// Create or replace a server from a JSON/YAML file (`kind`, `zone`, `owner`, `endpoints`, `federate`, `version`).
    Put {
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a server.
    Rm { name: String },
    /// Declare a tool (approved).
    Tool {
        server: String,
        tool: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Approve a reported tool (or `--no` to hide it again).
    Approve {
        server: String,
        tool: String,
        #[arg(long)]
        no: bool,
    },
    /// Deprecate a tool.
    Deprecate {
        server: String,
        tool: String,
        #[arg(long)]
        sunset: String,
        #[arg(long)]
        replacement: Option<String>,
    },
    /// Retire a tool.
    Retire {
        server: String,
        tool: String,
        #[arg(long)]
        replacement: Option<String>,
    },
    /// Make a tool active again.
    Activate { server: String, tool: String },
    /// Create or update a zone.
    Zone {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCmd {
    /// Apply a policy file (YAML or JSON).
    Apply { file: PathBuf },
    /// Show the applied policy.
    Show,
}

#[derive(Subcommand, Debug)]
enum ApprovalsCmd {
    /// The queue (default: pending).
    List {
        #[arg(long, default_value = "pending")]
        state: String,
    },
    /// Approve a held call.
    Approve {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Reject a held call.
    Reject {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
enum KillCmd {
    /// Active kills.
    List,
    /// Stop every tool call on every hub.
    Global {
        #[arg(long, default_value = "")]
        reason: String,
        /// Lift it instead.
        #[arg(long)]
        lift: bool,
    },
    /// Stop every tool of one upstream.
    Upstream {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        lift: bool,
    },
    /// Stop one tool: UPSTREAM/TOOL.
    Tool {
        target: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long)]
        lift: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Re-verify every hub's stored chain; exit 1 if any is broken.
    Verify,
    /// Recent records.
    List {
        #[arg(long)]
        hub: Option<String>,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Subcommand, Debug)]
enum EdgeCmd {
    /// Issue a one-time enrollment token for NAME (printed on stdout).
    Enroll { name: String },
    /// Revoke an edge (hubs drop it on the next snapshot).
    Revoke { name: String },
    /// Edges and their certificates.
    List,
    /// Print the edge CA certificate.
    Ca,
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Create a key (printed once).
    Create {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// List keys.
    List,
    /// Delete a key.
    Rm { id: String },
}

/// Parses `250ms`, `10s`, `5m`, `2h`, `30d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected e.g. 250ms, 10s, 5m, 2h, 30d"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => return Err(format!("duration {s:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_millis(ms))
}

fn default_console() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("console")));
    let source = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/console/dist"));
    [beside, Some(source)]
        .into_iter()
        .flatten()
        .find(|d| d.join("index.html").exists())
}

/// Runs the CLI.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve(*a).await,
            Cmd::Catalog { cmd, conn } => catalog(cmd, &conn).await,
            Cmd::Policy { cmd, conn } => match cmd {
                PolicyCmd::Apply { file } => {
                    let text =
                        std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
                    call(&conn, Method::PUT, "/v1/policy", Some(Bytes::from(text))).await
                }
                PolicyCmd::Show => call(&conn, Method::GET, "/v1/policy", None).await,
            },
            Cmd::Approvals { cmd, conn } => match cmd {
                ApprovalsCmd::List { state } => {
                    let q = if state == "all" {
                        String::new()
                    } else {
                        format!("?state={state}")
                    };
                    call(&conn, Method::GET, &format!("/v1/approvals{q}"), None).await
                }
                ApprovalsCmd::Approve { id, comment } => decide(&conn, &id, true, &comment).await,
                ApprovalsCmd::Reject { id, comment } => decide(&conn, &id, false, &comment).await,
            },
            Cmd::Kill { cmd, conn } => {
                let (scope, target, reason, lift) = match cmd {
                    KillCmd::List => return call(&conn, Method::GET, "/v1/kill", None).await,
                    KillCmd::Global { reason, lift } => ("global", String::new(), reason, lift),
                    KillCmd::Upstream { name, reason, lift } => ("upstream", name, reason, lift),
                    KillCmd::Tool {
                        target,
                        reason,
                        lift,
                    } => ("tool", target, reason, lift),
                };
                let (path, body) = if lift {
                    ("/v1/kill/lift", json!({"scope": scope, "target": target}))
                } else {
                    (
                        "/v1/kill",
                        json!({"scope": scope, "target": target, "reason": reason}),
                    )
                };
                call(
                    &conn,
                    Method::POST,
                    path,
                    Some(Bytes::from(body.to_string())),
                )
                .await
            }
            Cmd::Audit { cmd, conn } => match cmd {
                AuditCmd::Verify => {
                    let v = request(&conn, Method::GET, "/v1/audit/verify", None).await?;
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    if v["ok"] != json!(true) {
                        anyhow::bail!("audit verification failed");
                    }
                    Ok(())
                }
                AuditCmd::List {
                    hub,
                    principal,
                    tool,
                    limit,
                } => {
                    let mut q = format!("?limit={limit}");
                    for (k, v) in [("hub", hub), ("principal", principal), ("tool", tool)] {
                        if let Some(v) = v {
                            q.push_str(&format!("&{k}={v}"));
                        }
                    }
                    call(&conn, Method::GET, &format!("/v1/audit{q}"), None).await
                }
            },
            Cmd::Edge { cmd, conn } => match cmd {
                EdgeCmd::Enroll { name } => {
                    let v = request(
                        &conn,
                        Method::POST,
                        &format!("/v1/edges/{name}/enroll"),
                        None,
                    )
                    .await?;
                    eprintln!(
                        "one-time enrollment token for {name} (expires at {} ms):",
                        v["expires_ms"]
                    );
                    println!("{}", v["token"].as_str().unwrap_or_default());
                    Ok(())
                }
                EdgeCmd::Revoke { name } => {
                    call(
                        &conn,
                        Method::POST,
                        &format!("/v1/edges/{name}/revoke"),
                        None,
                    )
                    .await
                }
                EdgeCmd::List => call(&conn, Method::GET, "/v1/edges", None).await,
                EdgeCmd::Ca => {
                    let c = client(&conn)?;
                    let r = c.get("/v1/edges/ca", Duration::from_secs(30)).await?;
                    print!("{}", r.text());
                    Ok(())
                }
            },
            Cmd::Keys { cmd, conn } => match cmd {
                KeysCmd::Create { name, role, groups } => {
                    let body = json!({"name": name, "role": role, "groups": groups});
                    call(
                        &conn,
                        Method::POST,
                        "/v1/keys",
                        Some(Bytes::from(body.to_string())),
                    )
                    .await
                }
                KeysCmd::List => call(&conn, Method::GET, "/v1/keys", None).await,
                KeysCmd::Rm { id } => {
                    call(&conn, Method::DELETE, &format!("/v1/keys/{id}"), None).await
                }
            },
            Cmd::Snapshot { conn } => {
                let c = client(&conn)?;
                let r = c
                    .get("/v1/snapshots/latest", Duration::from_secs(30))
                    .await?;
                if !r.is_success() {
                    anyhow::bail!("HTTP {}: {}", r.status, r.text());
                }
                let v: serde_json::Value = serde_json::from_slice(&r.body)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                Ok(())
            }
            Cmd::Hubs { conn } => call(&conn, Method::GET, "/v1/hubs", None).await,
        }
    })
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let mut cfg = ServeConfig::new(a.listen, a.data);
    cfg.db = a.db;
    cfg.signing_key = a.signing_key;
    cfg.edge_ca = a.edge_ca;
    cfg.edge_ca_key = a.edge_ca_key;
    cfg.bootstrap_key_file = a.bootstrap_key_file;
    cfg.bootstrap_key = std::env::var("MESHGATE_CONTROL_ADMIN_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    cfg.tls_cert = a.tls_cert;
    cfg.tls_key = a.tls_key;
    cfg.allow_plain_http = a.allow_plain_http;
    cfg.oidc = match (a.oidc_issuer, a.oidc_jwks) {
        (Some(issuer), Some(jwks_url)) => Some(OidcConfig {
            issuer,
            audience: a.oidc_audience,
            jwks_url,
            jwks_ca: a
                .oidc_jwks_ca
                .map(|p| std::fs::read(&p).with_context(|| format!("read {}", p.display())))
                .transpose()?,
            role_claim: a.oidc_role_claim,
            role_prefix: a.oidc_role_prefix,
            groups_claim: a.oidc_groups_claim,
        }),
        (None, None) => None,
        _ => anyhow::bail!("--oidc-issuer and --oidc-jwks go together"),
    };
    cfg.audit_export = a
        .audit_export
        .iter()
        .map(|s| Sink::parse(s))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    cfg.settings.console_dir = a.console.or_else(default_console);
    cfg.settings.approval_timeout = a.approval_timeout;
    cfg.settings.edge_cert_ttl = a.edge_cert_ttl;
    cfg.settings.renew_before = a.edge_renew_before;
    cfg.settings.enroll_token_ttl = a.enroll_token_ttl;
    crate::server::serve(cfg).await
}

fn client(conn: &Conn) -> anyhow::Result<meshgate_control_client::http::Client> {
    let ca = conn
        .ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    Ok(meshgate_control_client::http::Client::new(
        &conn.url,
        ca.as_deref(),
        conn.token.clone(),
    )?)
}

async fn request(
    conn: &Conn,
    method: Method,
    path: &str,
    body: Option<Bytes>,
) -> anyhow::Result<serde_json::Value> {
    let c = client(conn)?;
    let r = c
        .request(method, path, body, Duration::from_secs(60))
        .await?;
    if r.status == 204 {
        return Ok(json!({"ok": true}));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|_| json!({"error": r.text()}));
    if !r.is_success() {
        anyhow::bail!(
            "HTTP {}: {}",
            r.status,
            v["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        );
    }
    Ok(v)
}

async fn call(conn: &Conn, method: Method, path: &str, body: Option<Bytes>) -> anyhow::Result<()> {
    let v = request(conn, method, path, body).await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

async fn decide(conn: &Conn, id: &str, approve: bool, comment: &str) -> anyhow::Result<()> {
    let body = json!({"approve": approve, "comment": comment});
    call(
        conn,
        Method::POST,
        &format!("/v1/approvals/{id}/decision"),
        Some(Bytes::from(body.to_string())),
    )
    .await
}

async fn catalog(cmd: CatalogCmd, conn: &Conn) -> anyhow::Result<()> {
    let post = |v: serde_json::Value| Some(Bytes::from(v.to_string()));
    match cmd {
        CatalogCmd::List => call(conn, Method::GET, "/v1/servers", None).await,
        CatalogCmd::Show { name } => {
            call(conn, Method::GET, &format!("/v1/servers/{name}"), None).await
        }
        CatalogCmd::Put { name, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let v: serde_json::Value =
                yaml_serde::from_str(&text).with_context(|| format!("parse {}", file.display()))?;
            call(conn, Method::PUT, &format!("/v1/servers/{name}"), post(v)).await
        }
        CatalogCmd::Rm { name } => {
            call(conn, Method::DELETE, &format!("/v1/servers/{name}"), None).await
        }
        CatalogCmd::Tool {
            server,
            tool,
            version,
        } => {
            call(
                conn,
                Method::PUT,
                &format!("/v1/servers/{server}/tools/{tool}"),
                post(json!({"version": version})),
            )
            .await
        }
        CatalogCmd::Approve { server, tool, no } => {
            call(
                conn,
                Method::POST,
                &format!("/v1/servers/{server}/tools/{tool}/approve"),
                post(json!({"approved": !no})),
            )
            .await
        }
        CatalogCmd::Deprecate {
            server,
            tool,
            sunset,
            replacement,
        } => {
            call(
                conn,
                Method::POST,
                &format!("/v1/servers/{server}/tools/{tool}/lifecycle"),
                post(json!({"state": "deprecated", "sunset": sunset, "replacement": replacement})),
            )
            .await
        }
        CatalogCmd::Retire {
            server,
            tool,
            replacement,
        } => {
            call(
                conn,
                Method::POST,
                &format!("/v1/servers/{server}/tools/{tool}/lifecycle"),
                post(json!({"state": "retired", "replacement": replacement})),
            )
            .await
        }
        CatalogCmd::Activate { server, tool } => {
            call(
                conn,
                Method::POST,
                &format!("/v1/servers/{server}/tools/{tool}/lifecycle"),
                post(json!({"state": "active"})),
            )
            .await
        }
        CatalogCmd::Zone { name, description } => {
            call(
                conn,
                Method::PUT,
                &format!("/v1/zones/{name}"),
                post(json!({"description": description})),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "meshgate-control",
            "kill",
            "tool",
            "files/rm",
            "--reason",
            "x",
        ])
        .unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Kill {
                cmd: KillCmd::Tool { .. },
                ..
            }
        ));
    }
}
