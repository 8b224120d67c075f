//! The worker agent (`mlcp agent`): registers through its first heartbeat, heartbeats with
//! real CPU/memory usage, long-polls for tasks, runs them with built-in executors and reports.
//!
//! - [`run`] is the whole agent (see [`runtime`] for the loops and the shutdown sequence);
//! - [`executor`] holds the built-in executors (`matmul`, `sleep`, `echo`) and
//!   [`verify_matmul`], which checks a `matmul` result in O(n²);
//! - the controllers are reached through the shared failover client, [`crate::client`].

pub mod executor;
pub mod runtime;

use std::collections::BTreeMap;
use std::time::Duration;

pub use executor::matmul::verify_matmul;
pub use runtime::{AgentError, run};

/// Everything `mlcp agent` needs; the CLI fills it from flags, `MLCP_*` env and the config file.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// This node's id (the seed's `node_id`), unique in the cluster.
    pub node_id: String,
    /// Every controller's gRPC address (`host:port` or `http://host:port`).
    pub servers: Vec<String>,
    /// Address other parties can reach this node at (informational, the seed's `address`).
    pub address: String,
    /// Cloud provider name, e.g. `aws`, `gcp`, `onprem`.
    pub cloud_provider: String,
    /// Region name, e.g. `us-east-1`.
    pub region: String,
    /// Concurrent task slots.
    pub slots: u32,
    /// Free-form labels matched by task constraints.
    pub labels: BTreeMap<String, String>,
    /// Long-poll deadline asked of the server (at most 30 s).
    pub poll_timeout: Duration,
    /// On shutdown, how long running tasks may take to finish before they are cancelled and
    /// handed back as retryable failures (default [`AgentOptions::SHUTDOWN_GRACE_DEFAULT`]).
    pub shutdown_grace: Duration,
}

impl AgentOptions {
    /// Default [`AgentOptions::shutdown_grace`]: 30 s.
    pub const SHUTDOWN_GRACE_DEFAULT: Duration = Duration::from_secs(30);
    /// Default [`AgentOptions::poll_timeout`]: 10 s.
    pub const POLL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
}

impl Default for AgentOptions {
    /// Node `agent` with 2 slots talking to a local controller on 127.0.0.1:50051.
    fn default() -> Self {
        Self {
            node_id: "agent".into(),
            servers: vec!["127.0.0.1:50051".into()],
            address: String::new(),
            cloud_provider: "local".into(),
            region: "local".into(),
            slots: 2,
            labels: BTreeMap::new(),
            poll_timeout: Self::POLL_TIMEOUT_DEFAULT,
            shutdown_grace: Self::SHUTDOWN_GRACE_DEFAULT,
        }
    }
}
