//! Task lifecycle with real processes (docs/architecture.md#testing):
//! - a zombie agent (SIGSTOP past the stale timeout, its task finished elsewhere, SIGCONT)
//!   cannot overwrite the outcome: its late report is rejected and the task keeps exactly one
//!   completion, by the other agent;
//! - SIGKILL of an agent mid-task leads to exactly one completion elsewhere;
//! - `mlcp task cancel` stops a running `sleep` task (its slot frees up long before the sleep
//!   would have ended);
//! - a leadership transfer while agents long-poll still delivers a new task within 2 s.
//!
//! The tests in this file run one at a time (they share two cores and rely on timeouts).

mod common;

use std::time::Duration;

use common::{
    POLL, SOON, get, mlcp, request, started_cluster, stderr, stdout, submit, wait_agents_healthy,
    wait_task,
};
use mlcp::proto::{NodeStatus, Task, TaskStatus};
use mlcp::testkit::local_cluster::{ClusterSpec, poll_until};
use serde_json::json;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Stale timeout for these tests: short so the tests are quick, long enough that a healthy
/// agent on a busy 2-core machine is not declared lost.
const STALE_MS: u64 = 3000;

fn spec(controllers: usize) -> ClusterSpec {
    ClusterSpec {
        controllers,
        node_stale_after_ms: Some(STALE_MS),
        agent_poll_timeout_ms: Some(5000),
        ..ClusterSpec::default()
    }
}

fn completions(task: &Task) -> Vec<String> {
    task.attempts
        .iter()
        .filter(|a| a.outcome == TaskStatus::Completed as i32)
        .map(|a| a.node_id.clone())
        .collect()
}

fn running_on(task: &Task) -> bool {
    task.status == TaskStatus::Running as i32 && !task.assigned_node_id.is_empty()
}

fn agent_pos(cluster: &mlcp::testkit::local_cluster::LocalCluster, node_id: &str) -> usize {
    cluster
        .agents
        .iter()
        .position(|a| a.node_id == node_id)
        .unwrap_or_else(|| panic!("no agent {node_id}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_agents_late_report_is_rejected() {
    let _serial = SERIAL.lock().await;
    let mut cluster = started_cluster(spec(1)).await;
    cluster.start_agent("agent-a", 1).unwrap();
    cluster.start_agent("agent-b", 1).unwrap();
    let client = cluster.client(Duration::from_secs(5));
    wait_agents_healthy(&client, 2).await;

    let mut req = request("sleep", json!({ "ms": 2000 }), "zombie-1");
    req.max_attempts = 3;
    let id = submit(&client, req).await;
    let running = wait_task(&client, &id, "the task to run", SOON, running_on).await;
    let zombie = running.assigned_node_id.clone();
    let zombie_pos = agent_pos(&cluster, &zombie);

    cluster.pause_agent(zombie_pos, true); // SIGSTOP: alive but silent.
    let done = wait_task(
        &client,
        &id,
        "completion elsewhere",
        Duration::from_secs(60),
        |t| t.status == TaskStatus::Completed as i32,
    )
    .await;
    assert_eq!(completions(&done).len(), 1);
    assert_ne!(
        completions(&done)[0],
        zombie,
        "completed by the other agent"
    );
    assert!(done.attempt >= 2);

    cluster.pause_agent(zombie_pos, false); // SIGCONT: its sleep is over, it reports late.
    // The zombie comes back (heartbeats again) and holds nothing.
    poll_until("the zombie to be healthy and idle", SOON, POLL, || async {
        let nodes = mlcp::cli::commands::list_nodes(&client)
            .await
            .map_err(|e| e.to_string())?;
        let node = nodes
            .iter()
            .find(|n| n.node_id == zombie)
            .ok_or("zombie not listed")?;
        let back = node.status == NodeStatus::Healthy as i32 && node.active_tasks == 0;
        Ok(back.then_some(()))
    })
    .await
    .unwrap();
    // The zombie learned it lost the attempt: either its late report was rejected, or the
    // controller told it to abort first (heartbeat or poll response).
    let zombie_log = cluster.agents[zombie_pos].log.clone();
    poll_until("the zombie to drop its attempt", SOON, POLL, || async {
        let log = std::fs::read_to_string(&zombie_log).map_err(|e| e.to_string())?;
        let dropped = log.lines().any(|line| {
            line.contains(&id)
                && (line.contains("report rejected")
                    || line.contains("aborted by the controller")
                    || line.contains("controller aborted the attempt"))
        });
        Ok(dropped.then_some(()))
    })
    .await
    .unwrap();
    // Whatever the zombie reported was refused: still one completion, by the other agent, and
    // the zombie's attempt did not turn into a completion.
    let after = get(&client, &id).await.unwrap();
    assert_eq!(after.status, TaskStatus::Completed as i32);
    assert_eq!(completions(&after), completions(&done));
    assert_eq!(after.result_data, done.result_data);
    assert!(
        after
            .attempts
            .iter()
            .filter(|a| a.node_id == zombie)
            .all(|a| a.outcome != TaskStatus::Completed as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_agent_mid_task_completes_exactly_once_elsewhere() {
    let _serial = SERIAL.lock().await;
    let mut cluster = started_cluster(spec(1)).await;
    cluster.start_agent("agent-a", 1).unwrap();
    cluster.start_agent("agent-b", 1).unwrap();
    let client = cluster.client(Duration::from_secs(5));
    wait_agents_healthy(&client, 2).await;

    let mut req = request("sleep", json!({ "ms": 1500 }), "killed-1");
    req.max_attempts = 3;
    let id = submit(&client, req).await;
    let running = wait_task(&client, &id, "the task to run", SOON, running_on).await;
    let victim = running.assigned_node_id.clone();
    let victim_pos = agent_pos(&cluster, &victim);
    cluster.kill_agent(victim_pos);

    let done = wait_task(
        &client,
        &id,
        "completion elsewhere",
        Duration::from_secs(60),
        |t| t.status == TaskStatus::Completed as i32,
    )
    .await;
    assert_eq!(completions(&done).len(), 1, "{:?}", done.attempts);
    assert_ne!(completions(&done)[0], victim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_cancel_stops_a_running_sleep() {
    let _serial = SERIAL.lock().await;
    let mut cluster = started_cluster(spec(1)).await;
    cluster.start_agent("agent-a", 1).unwrap();
    let client = cluster.client(Duration::from_secs(5));
    wait_agents_healthy(&client, 1).await;
    let servers = cluster.grpc_addrs().join(",");

    let id = submit(
        &client,
        request("sleep", json!({ "ms": 120_000 }), "cancel-1"),
    )
    .await;
    wait_task(&client, &id, "the sleep to run", SOON, running_on).await;
    let out = mlcp(&["task", "cancel", &id, "--server", &servers]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    wait_task(&client, &id, "CANCELLED", SOON, |t| {
        t.status == TaskStatus::Cancelled as i32
    })
    .await;

    // The only slot frees up only if the agent really stopped the sleep: an echo task
    // submitted now completes long before the 120 s sleep would have ended.
    let out = mlcp(&[
        "task",
        "submit",
        "--type",
        "echo",
        "--data",
        "{\"after\":\"cancel\"}",
        "--wait",
        "--wait-timeout-secs",
        "25",
        "--server",
        &servers,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let task: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(task["status"], "COMPLETED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leadership_transfer_during_long_polls_delivers_a_new_task_within_2s() {
    let _serial = SERIAL.lock().await;
    let mut cluster = started_cluster(spec(3)).await;
    cluster.start_agent("agent-a", 1).unwrap();
    let client = cluster.client(Duration::from_secs(5));
    wait_agents_healthy(&client, 1).await;
    // One task end to end first, so the agent is known to be in its polling loop.
    let warm = submit(&client, request("echo", json!({ "warm": true }), "warm")).await;
    wait_task(&client, &warm, "the warm-up task", SOON, |t| {
        t.status == TaskStatus::Completed as i32
    })
    .await;

    let old = cluster.wait_for_leader(&[0, 1, 2], SOON).await.unwrap();
    let target = cluster.controllers[(old.pos + 1) % 3].id;
    let out = mlcp(&[
        "cluster",
        "transfer-leader",
        &target.to_string(),
        "--server",
        &cluster.grpc_addrs().join(","),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    poll_until("the transfer", SOON, POLL, || async {
        let leader = cluster.find_leader(&[0, 1, 2]).await?;
        Ok(leader.filter(|l| l.status.self_id == target).map(|_| ()))
    })
    .await
    .unwrap();

    let id = submit(
        &client,
        request("echo", json!({ "after": "transfer" }), "after-transfer"),
    )
    .await;
    wait_task(
        &client,
        &id,
        "delivery within 2 s",
        Duration::from_secs(2),
        |t| t.status == TaskStatus::Completed as i32,
    )
    .await;
}
