//! The main job end to end with real processes (docs/architecture.md#testing): 3 controllers + 2 agents on
//! loopback run 30 matrix multiplications while the leader is SIGKILLed mid-run.
//!
//! Shows, in order:
//! 1. a follower forwards writes: every task is submitted through a follower only (the first
//!    through the CLI, the rest over gRPC);
//! 2. losing the leader loses nothing: every task ends COMPLETED, by exactly one attempt, with
//!    a result that verifies against inputs regenerated from its seed (Freivalds' check);
//! 3. the killed controller, restarted on its data dir, catches up to the leader's commit index
//!    and holds the same task list;
//! 4. a full-cluster restart (SIGTERM all three, start again) keeps every task and result.
//!
//! No fixed sleeps: every wait polls a condition with a deadline.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    BIN, POLL, SOON, local_tasks, mlcp, request, stderr, stdout, submit, wait_agents_healthy,
};
use mlcp::proto::{Task, TaskStatus};
use mlcp::testkit::local_cluster::{ClusterSpec, LocalCluster, poll_until};
use mlcp::tools::demo::verify_task;
use serde_json::{Value, json};

const TASKS: usize = 30;

/// Small matrices so the run is quick, with enough iterations that tasks are still running
/// when the leader dies.
fn task_data(i: usize) -> Value {
    let sizes = [64u64, 96, 128, 160];
    let dtype = if i.is_multiple_of(2) { "f32" } else { "f64" };
    json!({ "n": sizes[i % sizes.len()], "dtype": dtype, "iterations": 40, "seed": i as u64 + 100 })
}

/// `task_id → (status, attempt, result_data)`: what must survive restarts unchanged.
fn fingerprint(tasks: &[Task]) -> BTreeMap<String, (i32, u32, String)> {
    tasks
        .iter()
        .map(|t| {
            (
                t.task_id.clone(),
                (t.status, t.attempt, t.result_data.clone()),
            )
        })
        .collect()
}

async fn all_completed_at(addr: &str) -> Result<Option<Vec<Task>>, String> {
    let tasks = local_tasks(addr).await?;
    let done = tasks
        .iter()
        .filter(|t| t.status == TaskStatus::Completed as i32)
        .count();
    if tasks.len() == TASKS && done == TASKS {
        Ok(Some(tasks))
    } else {
        Err(format!("{done} of {} completed", tasks.len()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_mid_run_loses_nothing_and_restarts_catch_up() {
    let mut cluster = LocalCluster::new(BIN, ClusterSpec::default()).expect("temp dir and ports");
    cluster.start_controllers().expect("spawn controllers");
    let leader = cluster.wait_for_leader(&[0, 1, 2], SOON).await.unwrap();

    // 1. Writes through a follower only.
    let follower = (0..3).find(|&p| p != leader.pos).unwrap();
    let follower_addr = cluster.controllers[follower].grpc.to_string();
    let out = mlcp(&[
        "task",
        "submit",
        "--type",
        "matmul",
        "--data",
        &task_data(0).to_string(),
        "--idempotency-key",
        "e2e-0",
        "--server",
        &follower_addr,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let submitted: Value = serde_json::from_str(&stdout(&out)).expect("JSON output");
    assert_eq!(submitted["task"]["task_type"], "matmul");
    let mut ids = vec![submitted["task"]["task_id"].as_str().unwrap().to_owned()];
    let via_follower = cluster.client_for(&[follower], Duration::from_secs(5));
    for i in 1..TASKS {
        ids.push(
            submit(
                &via_follower,
                request("matmul", task_data(i), &format!("e2e-{i}")),
            )
            .await,
        );
    }

    // Agents start only now, so every task is still pending and the kill below lands mid-run.
    cluster.start_agent("agent-1", 1).unwrap();
    cluster.start_agent("agent-2", 1).unwrap();
    wait_agents_healthy(&cluster.client(Duration::from_secs(5)), 2).await;

    // 2. SIGKILL the leader once some, but not all, tasks have completed.
    let completed_at_kill = poll_until("a first completion", SOON, POLL, || async {
        let tasks = local_tasks(&follower_addr).await?;
        let done = tasks
            .iter()
            .filter(|t| t.status == TaskStatus::Completed as i32)
            .count();
        Ok((done >= 2).then_some(done))
    })
    .await
    .unwrap();
    assert!(
        completed_at_kill < TASKS,
        "every task finished before the leader could be killed; make the tasks bigger"
    );
    let old = cluster.wait_for_leader(&[0, 1, 2], SOON).await.unwrap();
    cluster.kill_controller(old.pos);
    let survivors: Vec<usize> = (0..3).filter(|&p| p != old.pos).collect();
    let new = cluster.wait_for_leader(&survivors, SOON).await.unwrap();
    assert_ne!(new.status.self_id, old.status.self_id);
    assert!(new.status.term > old.status.term);

    let new_addr = cluster.controllers[new.pos].grpc.to_string();
    let tasks = poll_until(
        "every task to complete",
        Duration::from_secs(180),
        POLL,
        || all_completed_at(&new_addr),
    )
    .await
    .unwrap();
    for task in &tasks {
        let input: Value = serde_json::from_str(&task.task_data).unwrap();
        let result: Value = serde_json::from_str(&task.result_data).unwrap();
        verify_task(task, &input, &result)
            .unwrap_or_else(|e| panic!("task {} not verified: {e}", task.task_id));
    }
    let mut listed: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
    listed.sort();
    ids.sort();
    assert_eq!(listed, ids, "exactly the submitted tasks exist");

    // 3. The killed controller restarts from its data dir and catches up.
    cluster.start_controller(old.pos).unwrap();
    let old_addr = cluster.controllers[old.pos].grpc.to_string();
    let expected = fingerprint(&tasks);
    poll_until(
        "the restarted controller to catch up",
        SOON,
        POLL,
        || async {
            let leader = cluster
                .member_status(new.pos, Duration::from_secs(2))
                .await?;
            let restarted = cluster
                .member_status(old.pos, Duration::from_secs(2))
                .await?;
            let same_index = restarted.commit_index == leader.commit_index
                && restarted.applied_index >= leader.commit_index;
            let same_tasks = fingerprint(&local_tasks(&old_addr).await?) == expected;
            if same_index && same_tasks {
                Ok(Some(()))
            } else {
                Err(format!(
                    "restarted commit {} applied {}, leader commit {}, same tasks {same_tasks}",
                    restarted.commit_index, restarted.applied_index, leader.commit_index
                ))
            }
        },
    )
    .await
    .unwrap();

    // 4. Stop every controller gracefully, start them all again: every task is still there.
    for pos in 0..3 {
        let status = cluster.stop_controller(pos, Duration::from_secs(15)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "controller {} did not shut down cleanly on SIGTERM: {status:?}",
            pos + 1
        );
    }
    cluster.start_controllers().unwrap();
    let leader = cluster.wait_for_leader(&[0, 1, 2], SOON).await.unwrap();
    let leader_addr = cluster.controllers[leader.pos].grpc.to_string();
    let after = poll_until("the tasks after a full restart", SOON, POLL, || {
        all_completed_at(&leader_addr)
    })
    .await
    .unwrap();
    assert_eq!(fingerprint(&after), expected);

    // The CLI's JSON view agrees (proto field names, enum names).
    let out = mlcp(&[
        "task",
        "list",
        "--status",
        "completed",
        "--server",
        &cluster.grpc_addrs().join(","),
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed = listed["tasks"].as_array().unwrap();
    assert_eq!(listed.len(), TASKS);
    assert!(listed.iter().all(|t| t["status"] == "COMPLETED"));
}
