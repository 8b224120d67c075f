//! The controller process (`mlcp server`): start-up and shutdown, the actor graph, the gRPC
//! servers ([`server`]), the HTTP endpoints ([`http`]), and the replication shell's bootstrap
//! ([`replication`]).

pub mod http;
pub mod replication;
pub mod server;

pub use server::{ServerError, ServerHandle, run_server, start_server};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `mlcp server` needs; the CLI fills it from flags, `MLCP_*` env and the config file.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// This controller's Raft id (a positive integer).
    pub node_id: u64,
    /// gRPC listen address (clients, agents and peers), default `127.0.0.1:50051`.
    pub listen: SocketAddr,
    /// Every voter of the initial cluster, by id, including this one: id → gRPC address.
    /// Empty means a single-member cluster of this node at `listen`.
    pub peers: BTreeMap<u64, String>,
    /// Directory holding the Raft log, snapshots and the identity file.
    pub data_dir: PathBuf,
    /// HTTP listen address for health and status (`None` disables it).
    pub http_listen: Option<SocketAddr>,
    /// Name of the cluster; a data dir written for another cluster is refused.
    pub cluster_name: String,
    /// Length of one Raft tick.
    pub tick: Duration,
    /// A node with no heartbeat for this long (leader's monotonic clock) is marked UNHEALTHY.
    pub node_stale_after: Duration,
    /// Take a snapshot and compact the log every this many applied entries.
    pub snapshot_every_entries: u64,
}

impl Default for ServerOptions {
    /// The embedded default: a single-member cluster of node 1 on `127.0.0.1:50051` (HTTP on
    /// `127.0.0.1:8080`) with data in `./mlcp-data`.
    fn default() -> Self {
        ServerOptions {
            node_id: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            peers: BTreeMap::new(),
            data_dir: PathBuf::from("./mlcp-data"),
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            cluster_name: "mlcp".to_string(),
            tick: Duration::from_millis(50),
            node_stale_after: Duration::from_secs(10),
            snapshot_every_entries: 10_000,
        }
    }
}
