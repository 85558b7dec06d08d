//! Snapshot building and publishing. Every change (catalog, policy, kill switch, edge
//! revocation) calls [`Publisher::publish`]: read the whole state from the store, build a
//! [`Snapshot`] with version = newest + 1, seal it (SHA-256 + Ed25519, `meshgate-control-client`'s
//! format), store it, and wake every long-polling hub at once through a `watch` channel (so the
//! kill switch reaches connected hubs in one round trip, no polling delay).
//!
//! Several control planes on one PostgreSQL: the version is the primary key, so two publishers
//! racing for a version retry; each instance also checks the store every second and serves
//! snapshots another instance published.

use std::sync::Arc;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use meshgate_control_client::snapshot::{
    Catalog, Kill, KillScope, KillSwitch, Lifecycle, Revocation, Server, ServerKind, Snapshot,
    Tool, Zone, FORMAT,
};
use meshgate_control_client::verify;
use tokio::sync::{watch, Mutex};

use crate::store::{sql::now_ms, SnapshotRow, Store, StoreError, StoreResult};

/// A published snapshot as served to hubs.
#[derive(Debug, Clone)]
pub struct Published {
    /// Version.
    pub version: u64,
    /// SHA-256 of the snapshot bytes.
    pub sha256: String,
    /// The signed envelope (what hubs receive).
    pub envelope: Bytes,
}

/// The publisher.
pub struct Publisher {
    store: Arc<dyn Store>,
    key: SigningKey,
    tx: watch::Sender<Option<Arc<Published>>>,
    lock: Mutex<()>,
}

impl Publisher {
    /// A publisher signing with `key`; call [`Publisher::init`] before serving.
    pub fn new(store: Arc<dyn Store>, key: SigningKey) -> Self {
        let (tx, _) = watch::channel(None);
        Publisher {
            store,
            key,
            tx,
            lock: Mutex::new(()),
        }
    }

    /// The verifying key hubs trust.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.key.verifying_key()
    }

    /// Loads the newest snapshot, or publishes version 1 on a fresh database.
    pub async fn init(&self) -> StoreResult<()> {
        if !self.refresh().await? {
            self.publish("initial").await?;
        }
        Ok(())
    }

    /// Serves a newer snapshot from the store if another instance published one. `true` if a
    /// snapshot is held afterwards.
    pub async fn refresh(&self) -> StoreResult<bool> {
        let Some(row) = self.store.latest_snapshot().await? else {
            return Ok(false);
        };
        let have = self.current().map(|p| p.version).unwrap_or(0);
        if row.version as u64 > have {
            self.tx.send_replace(Some(Arc::new(Published {
                version: row.version as u64,
                sha256: row.sha256,
                envelope: Bytes::from(row.envelope),
            })));
        }
        Ok(true)
    }

    /// The newest snapshot held.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.tx.subscribe()
    }

    /// Builds, signs, stores and announces a new snapshot.
    pub async fn publish(&self, why: &str) -> StoreResult<Arc<Published>> {
        let _g = self.lock.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let latest = self
                .store
                .latest_snapshot()
                .await?
                .map(|r| r.version)
                .unwrap_or(0);
            let version = (latest + 1) as u64;
            let snap = self.build(version).await?;
            let envelope = verify::seal(&snap, &self.key)
                .map_err(|e| StoreError::Corrupt(format!("seal snapshot: {e}")))?;
            let sha256 = verify::open(envelope.clone(), &self.key.verifying_key())
                .map(|v| v.sha256)
                .map_err(|e| StoreError::Corrupt(format!("own snapshot does not verify: {e}")))?;
            let row = SnapshotRow {
                version: version as i64,
                sha256: sha256.clone(),
                envelope: envelope.to_vec(),
                created_ms: snap.created_ms,
            };
            match self.store.insert_snapshot(&row).await {
                Ok(()) => {
                    let p = Arc::new(Published {
                        version,
                        sha256,
                        envelope,
                    });
                    self.tx.send_replace(Some(p.clone()));
                    tracing::info!(version, reason = why, "snapshot published");
                    return Ok(p);
                }
                Err(StoreError::Conflict(_)) if attempt < 8 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The snapshot of the store's state now.
    pub async fn build(&self, version: u64) -> StoreResult<Snapshot> {
        let s = &self.store;
        let tools = s.tools(None).await?;
        let mut servers = Vec::new();
        for row in s.servers().await? {
            let kind = if row.kind == "edge" {
                ServerKind::Edge
            } else {
                ServerKind::Http
            };
            let tools = tools
                .iter()
                .filter(|t| t.server == row.name)
                // Unapproved tools stay hidden; retired ones are listed so calls can be answered
                // with the replacement.
                .filter(|t| t.approved || t.lifecycle == "retired")
                .map(|t| Tool {
                    name: t.name.clone(),
                    version: t.version.clone(),
                    lifecycle: match t.lifecycle.as_str() {
                        "deprecated" => Lifecycle::Deprecated {
                            sunset: t.sunset.clone().unwrap_or_default(),
                            replacement: t.replacement.clone(),
                        },
                        "retired" => Lifecycle::Retired {
                            replacement: t.replacement.clone(),
                        },
                        _ => Lifecycle::Active,
                    },
                })
                .collect();
            servers.push(Server {
                name: row.name,
                kind,
                zone: row.zone,
                owner: row.owner,
                endpoints: row.endpoints,
                federate: row.federate,
                version: row.version,
                tools,
            });
        }
        let zones = s
            .zones()
            .await?
            .into_iter()
            .map(|z| Zone {
                name: z.name,
                description: z.description,
            })
            .collect();
        let policy = s
            .policy()
            .await?
            .map(|p| p.json)
            .unwrap_or(serde_json::Value::Null);
        let kill = KillSwitch {
            active: s
                .kills()
                .await?
                .into_iter()
                .map(|k| Kill {
                    scope: match k.scope.as_str() {
                        "upstream" => KillScope::Upstream(k.target),
                        "tool" => KillScope::Tool(k.target),
                        _ => KillScope::Global,
                    },
                    reason: k.reason,
                    by: k.by,
                    since_ms: k.since_ms,
                })
                .collect(),
        };
        let mut revoked: Vec<Revocation> = s
            .edges()
            .await?
            .into_iter()
            .filter(|e| e.state == "revoked")
            .map(|e| Revocation {
                edge: e.name,
                serial: None,
                since_ms: e.revoked_ms.unwrap_or(0),
            })
            .collect();
        revoked.sort_by(|a, b| a.edge.cmp(&b.edge));
        Ok(Snapshot {
            format: FORMAT,
            version,
            created_ms: now_ms(),
            catalog: Catalog { zones, servers },
            policy,
            kill,
            revoked,
        })
    }
}
