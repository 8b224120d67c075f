//! Helpers shared by the multi-process tests (`tests/e2e_*.rs`): the `mlcp` binary under test,
//! running CLI commands, gRPC clients to one controller, and polling with deadlines.
//!
//! The process guard itself is `mlcp::testkit::local_cluster::LocalCluster` (also used by `mlcp
//! demo`): dropping it SIGKILLs every child and removes the temp dir, and on a panic it prints
//! the last lines of every child's log.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::process::Output;
use std::time::Duration;

use mlcp::client::Client;
use mlcp::proto::cluster_service_client::ClusterServiceClient;
use mlcp::proto::node_service_client::NodeServiceClient;
use mlcp::proto::task_service_client::TaskServiceClient;
use mlcp::proto::{
    GetTaskRequest, ListNodesRequest, ListTasksRequest, NodeStatus, SubmitTaskRequest, Task,
};
use mlcp::testkit::local_cluster::{ClusterSpec, LocalCluster, poll_until};
use tonic::transport::Channel;

/// The `mlcp` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_mlcp");

/// Generous bound for anything the cluster should do "soon" (elections, registration,
/// catch-up); polls end as soon as the condition holds.
pub const SOON: Duration = Duration::from_secs(30);
/// How often conditions are re-checked.
pub const POLL: Duration = Duration::from_millis(50);

/// A cluster guard with `spec`, controllers started and a leader elected.
pub async fn started_cluster(spec: ClusterSpec) -> LocalCluster {
    let mut cluster = LocalCluster::new(BIN, spec).expect("temp dir and ports");
    cluster.start_controllers().expect("spawn controllers");
    let all: Vec<usize> = (0..cluster.controllers.len()).collect();
    cluster
        .wait_for_leader(&all, SOON)
        .await
        .expect("a leader is elected");
    cluster
}

/// Runs `mlcp ARGS…` to completion (bounded by [`SOON`]) and returns its output.
pub async fn mlcp(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(SOON, child)
        .await
        .unwrap_or_else(|_| panic!("mlcp {args:?} did not finish within {SOON:?}"))
        .expect("spawn mlcp")
}

/// stdout of a CLI run as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a CLI run as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A connected channel to one address.
pub async fn channel(addr: &str) -> Channel {
    Client::new(vec![addr.to_owned()], Duration::from_secs(10))
        .channel(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// TaskService client bound to one controller (no failover: tests choose whom they ask).
pub async fn tasks_at(addr: &str) -> TaskServiceClient<Channel> {
    TaskServiceClient::new(channel(addr).await)
}

/// NodeService client bound to one controller.
pub async fn nodes_at(addr: &str) -> NodeServiceClient<Channel> {
    NodeServiceClient::new(channel(addr).await)
}

/// ClusterService client bound to one controller.
pub async fn cluster_at(addr: &str) -> ClusterServiceClient<Channel> {
    ClusterServiceClient::new(channel(addr).await)
}

/// Submits a task through the failover client; returns its id.
pub async fn submit(client: &Client, request: SubmitTaskRequest) -> String {
    client
        .call(|ch| {
            let request = request.clone();
            async move { TaskServiceClient::new(ch).submit_task(request).await }
        })
        .await
        .expect("SubmitTask")
        .into_inner()
        .task
        .expect("a task in the response")
        .task_id
}

/// A SubmitTaskRequest of `task_type` with `data` and an idempotency key (so a failover
/// retry cannot create a second task).
pub fn request(task_type: &str, data: serde_json::Value, key: &str) -> SubmitTaskRequest {
    SubmitTaskRequest {
        task_type: task_type.into(),
        task_data: data.to_string(),
        idempotency_key: key.into(),
        max_attempts: 3,
        ..SubmitTaskRequest::default()
    }
}

/// GetTask (linearizable) through the failover client.
pub async fn get(client: &Client, task_id: &str) -> Result<Task, String> {
    client
        .call(|ch| {
            let request = GetTaskRequest {
                task_id: task_id.to_owned(),
                consistent: true,
            };
            async move { TaskServiceClient::new(ch).get_task(request).await }
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .task
        .ok_or_else(|| "no task in GetTask response".to_owned())
}

/// Polls a task until `done(task)` holds; returns it.
pub async fn wait_task(
    client: &Client,
    task_id: &str,
    what: &str,
    within: Duration,
    done: impl Fn(&Task) -> bool,
) -> Task {
    poll_until(what, within, POLL, || async {
        let task = get(client, task_id).await?;
        if done(&task) {
            Ok(Some(task))
        } else {
            Err(format!(
                "status {} attempt {} on {:?}",
                task.status, task.attempt, task.assigned_node_id
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Every task as the controller at `addr` has applied it (its local state, no forwarding).
pub async fn local_tasks(addr: &str) -> Result<Vec<Task>, String> {
    let mut svc = TaskServiceClient::new(
        Client::new(vec![addr.to_owned()], Duration::from_secs(5))
            .channel(addr)
            .await?,
    );
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = svc
            .list_tasks(ListTasksRequest {
                status: 0,
                page_size: 1000,
                page_token: token.clone(),
                consistent: false,
            })
            .await
            .map_err(|s| format!("{addr}: {:?} {}", s.code(), s.message()))?
            .into_inner();
        all.extend(page.tasks);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}

/// Waits until at least `n` nodes are HEALTHY.
pub async fn wait_agents_healthy(client: &Client, n: usize) {
    poll_until("agents to register", SOON, POLL, || async {
        let nodes = client
            .call(|ch| async move {
                ClusterServiceClient::new(ch)
                    .list_nodes(ListNodesRequest { status: 0 })
                    .await
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .nodes;
        let healthy = nodes
            .iter()
            .filter(|node| node.status == NodeStatus::Healthy as i32)
            .count();
        if healthy >= n {
            Ok(Some(()))
        } else {
            Err(format!("{healthy} of {n} healthy"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}
