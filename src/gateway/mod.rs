//! tonic services over the actors, and the controller process bootstrap.
//!
//! - [`server`]: [`run_server`] / [`start_server`] bring a controller up (ports, actix system,
//!   replication, control actors, gRPC, HTTP `/healthz`, `/status`, `/metrics`) and down;
//! - [`task_service`], [`node_service`], [`cluster_service`]: the `mlcp.v1` services — each
//!   handler decodes, calls an actor and maps the error;
//! - [`convert`]: request validation (`TryFrom` into commands; `INVALID_ARGUMENT` names the
//!   field);
//! - [`forward`]: the leader view and one-hop forwarding from followers to the leader, with
//!   the `x-mlcp-leader` hint on UNAVAILABLE;
//! - [`context`]: what the services share, and the actor-error → gRPC-status mapping;
//! - [`raft_service`]: the peer-only Raft transport and the replication bootstrap.

pub mod cluster_service;
pub mod context;
pub mod convert;
pub mod forward;
pub mod node_service;
pub mod raft_service;
pub mod server;
pub mod task_service;

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
