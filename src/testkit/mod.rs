//! What tests, `mlcp demo` and the benches share to run a cluster: a local cluster of child
//! processes ([`local_cluster`]: free loopback ports, a temp dir, logs, SIGKILL on drop).

pub mod local_cluster;

pub use local_cluster::{
    ClusterSpec, LocalCluster, free_ports, poll_until, wait_for_healthy_nodes,
};
