//! `mlcp demo`: the whole product in one command.
//!
//! Starts 3 controllers and `--agents` agents as child processes of this same binary on free
//! loopback ports in a temp dir ([`LocalCluster`]), submits `--tasks` matrix multiplications of
//! mixed sizes (256–1024, f32 and f64), prints progress while they run, SIGKILLs the leader once
//! a third have completed, shows a survivor taking over, waits for every task (with a
//! deadline), verifies each result (Freivalds-style, [`verify_matmul`]) and that it completed
//! exactly once, prints a result table and the cluster status, and cleans up. The cluster guard
//! kills every child and removes the temp dir on every way out: success, error, Ctrl-C
//! (SIGINT/SIGTERM) and panic.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::ToolError;
use crate::agent::verify_matmul;
use crate::client::Client;
use crate::client::api as commands;
use crate::console::flags::unsigned;
use crate::console::out::{out, outln};
use crate::console::signals;
use crate::console::status::render_cluster_status;
use crate::console::table::Table;
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::{SubmitTaskRequest, Task, TaskStatus};
use crate::testkit::local_cluster::{ClusterSpec, LocalCluster, wait_for_healthy_nodes};

/// Flags of `mlcp demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Matrix-multiplication tasks to submit (at least 3).
    #[arg(long, value_name = "N", default_value_t = 24, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub tasks: usize,
    /// Agents to start (at least 1).
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub agents: usize,
    /// Keep the temp dir (data dirs and child logs) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
    /// Give up if not every task is finished after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300, allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub deadline_secs: u64,
}

/// Matrix orders the demo cycles through (mixed sizes, 256–1024).
const SIZES: [u64; 6] = [256, 384, 512, 640, 768, 1024];
/// How often progress is polled.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(300);
/// How long the cluster may take to elect a leader / see agents / elect a new leader.
const STARTUP_WITHIN: Duration = Duration::from_secs(30);

/// Runs the demo; Ctrl-C (or SIGTERM) stops it and still cleans up.
pub async fn run(args: DemoArgs) -> Result<(), ToolError> {
    if args.tasks < 3 {
        return Err(ToolError::Usage("--tasks must be at least 3".into()));
    }
    if args.agents == 0 {
        return Err(ToolError::Usage("--agents must be at least 1".into()));
    }
    let binary = std::env::current_exe().map_err(ToolError::io("finding the mlcp executable"))?;
    let mut cluster = LocalCluster::new(binary, ClusterSpec::default())
        .map_err(ToolError::io("creating the demo's temp dir"))?;
    outln!("mlcp demo: working in {}", cluster.dir().display());
    let outcome = tokio::select! {
        outcome = drive(&mut cluster, &args) => outcome,
        signal = signals::wait_for_signal() => {
            Err(ToolError::Failed(format!("interrupted by {signal}; stopping every child process")))
        }
    };
    if outcome.is_err() {
        print_log_tails(&cluster);
    }
    cluster.kill_all();
    if args.keep_dir {
        cluster.keep_dir();
        outln!("kept {} (data dirs and logs/)", cluster.dir().display());
    }
    drop(cluster);
    outcome
}

fn print_log_tails(cluster: &LocalCluster) {
    for c in &cluster.controllers {
        eprintln!("--- last lines of {}", c.log.display());
        eprintln!("{}", LocalCluster::log_tail(&c.log, 8));
    }
    for a in &cluster.agents {
        eprintln!("--- last lines of {}", a.log.display());
        eprintln!("{}", LocalCluster::log_tail(&a.log, 8));
    }
}

/// The `task_data` of demo task `i` (sizes and dtypes mixed, seed = i + 1). Smaller
/// matrices get more iterations (4 · 1024 / n) so every task does real work (0.5–8.6 GFLOP)
/// and the run lasts long enough to watch.
pub fn demo_task_data(i: usize) -> Value {
    let n = SIZES[i % SIZES.len()];
    let dtype = if (i / SIZES.len()).is_multiple_of(2) {
        "f32"
    } else {
        "f64"
    };
    let iterations = (4 * 1024 / n).max(1);
    json!({ "n": n, "dtype": dtype, "iterations": iterations, "seed": i as u64 + 1 })
}

fn failed(what: impl std::fmt::Display) -> ToolError {
    ToolError::Failed(what.to_string())
}

async fn drive(cluster: &mut LocalCluster, args: &DemoArgs) -> Result<(), ToolError> {
    let started = Instant::now();
    let stamp = move || format!("[{:>6.1}s]", started.elapsed().as_secs_f64());
    start_cluster(cluster, args, &stamp).await?;
    let client = cluster.client(Duration::from_secs(5));
    let mut ids = Vec::with_capacity(args.tasks);
    for i in 0..args.tasks {
        ids.push(submit(&client, i).await?);
    }
    outln!(
        "{} submitted {} matmul tasks (n = 256…1024, f32 and f64)",
        stamp(),
        args.tasks
    );
    let survivors = follow_progress(cluster, args, &stamp).await?;
    let client = cluster.client_for(&survivors, Duration::from_secs(5));
    let mut rows = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let task = commands::get_task(&client, id, true).await?;
        rows.push(DemoRow::of(i, &task));
    }
    out!("\n{}", result_table(&rows).render());
    let status = commands::cluster_status(&client).await?;
    outln!("\n{}", render_cluster_status(&status));
    report_verification(&rows, &stamp, started)
}

/// Starts the controllers, waits for a leader, starts the agents and waits until each is
/// HEALTHY, saying so as it goes.
async fn start_cluster(
    cluster: &mut LocalCluster,
    args: &DemoArgs,
    stamp: &impl Fn() -> String,
) -> Result<(), ToolError> {
    cluster
        .start_controllers()
        .map_err(ToolError::io("starting controllers"))?;
    outln!(
        "{} started 3 controllers: {}",
        stamp(),
        cluster.peers_flag()
    );
    let leader = cluster
        .wait_for_leader(&[0, 1, 2], STARTUP_WITHIN)
        .await
        .map_err(failed)?;
    outln!(
        "{} controller {} is the leader (term {})",
        stamp(),
        leader.status.self_id,
        leader.status.term
    );
    for i in 1..=args.agents {
        cluster
            .start_agent(&format!("agent-{i}"), 1)
            .map_err(ToolError::io("starting an agent"))?;
    }
    let client = cluster.client(Duration::from_secs(5));
    wait_for_healthy_nodes(&client, args.agents, STARTUP_WITHIN)
        .await
        .map_err(failed)?;
    outln!("{} {} agents registered and healthy", stamp(), args.agents);
    Ok(())
}

/// Prints progress until every task is finished, killing the leader once a third have
/// completed; returns the positions of the controllers still running. Fails at the deadline.
async fn follow_progress(
    cluster: &mut LocalCluster,
    args: &DemoArgs,
    stamp: &impl Fn() -> String,
) -> Result<Vec<usize>, ToolError> {
    // A deadline too far for the clock (`--deadline-secs 18446744073709551615`) is none.
    let deadline = Instant::now().checked_add(Duration::from_secs(args.deadline_secs));
    let mut survivors: Vec<usize> = vec![0, 1, 2];
    let mut killed = false;
    let mut last_line = String::new();
    loop {
        let client = cluster.client_for(&survivors, Duration::from_secs(5));
        let tasks = match commands::list_tasks(&client, None, None).await {
            Ok(list) => list.tasks,
            Err(e) => {
                outln!("{} (progress poll failed: {e}; retrying)", stamp());
                Vec::new()
            }
        };
        let counts = count_by_status(&tasks);
        let completed = counts.get("COMPLETED").copied().unwrap_or(0);
        let terminal = tasks
            .iter()
            .filter(|t| commands::is_terminal(t.status))
            .count();
        let line = progress_line(&counts, args.tasks);
        if line != last_line && !tasks.is_empty() {
            outln!("{} {line}", stamp());
            last_line = line;
        }
        if !killed && completed * 3 >= args.tasks {
            survivors = kill_leader(cluster, &survivors, stamp).await?;
            killed = true;
        }
        if tasks.len() >= args.tasks && terminal == tasks.len() {
            return Ok(survivors);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(failed(format!(
                "deadline of {}s passed with {terminal} of {} tasks finished",
                args.deadline_secs, args.tasks
            )));
        }
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    }
}

/// The last lines: every task that did not verify, then the count; an error unless all did.
fn report_verification(
    rows: &[DemoRow],
    stamp: &impl Fn() -> String,
    started: Instant,
) -> Result<(), ToolError> {
    let good = rows.iter().filter(|r| r.verified.is_ok()).count();
    for row in rows.iter().filter(|r| r.verified.is_err()) {
        outln!(
            "task {} NOT verified: {}",
            row.task_id,
            row.verified.as_ref().unwrap_err()
        );
    }
    outln!(
        "{} {good}/{} tasks completed exactly once and verified; elapsed {:.1}s",
        stamp(),
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    if good == rows.len() {
        Ok(())
    } else {
        Err(failed(format!(
            "{} task(s) failed verification",
            rows.len() - good
        )))
    }
}

async fn submit(client: &Client, i: usize) -> Result<String, ToolError> {
    let request = SubmitTaskRequest {
        task_type: "matmul".into(),
        task_data: demo_task_data(i).to_string(),
        max_attempts: 5,
        // Same key on a retry after a failover: the first submission is returned.
        idempotency_key: format!("demo-{i}"),
        ..SubmitTaskRequest::default()
    };
    let response = client
        .call(|ch| {
            let request = request.clone();
            async move { TaskServiceClient::new(ch).submit_task(request).await }
        })
        .await?
        .into_inner();
    response
        .task
        .map(|t| t.task_id)
        .ok_or_else(|| failed("SubmitTask answered without a task"))
}

/// SIGKILLs the current leader among `survivors`, waits for a new one, and returns the new
/// survivor list.
async fn kill_leader(
    cluster: &mut LocalCluster,
    survivors: &[usize],
    stamp: &impl Fn() -> String,
) -> Result<Vec<usize>, ToolError> {
    let old = cluster
        .wait_for_leader(survivors, STARTUP_WITHIN)
        .await
        .map_err(failed)?;
    let old_id = old.status.self_id;
    cluster.kill_controller(old.pos);
    let killed_at = Instant::now();
    outln!(
        "{} a third of the tasks are done: SIGKILL controller {old_id} (the leader, term {})",
        stamp(),
        old.status.term
    );
    let rest: Vec<usize> = survivors
        .iter()
        .copied()
        .filter(|&p| p != old.pos)
        .collect();
    let new = cluster
        .wait_for_leader(&rest, STARTUP_WITHIN)
        .await
        .map_err(failed)?;
    outln!(
        "{} controller {} took over as leader in term {} ({:.2}s after the kill; commit index {})",
        stamp(),
        new.status.self_id,
        new.status.term,
        killed_at.elapsed().as_secs_f64(),
        new.status.commit_index
    );
    Ok(rest)
}

fn count_by_status(tasks: &[Task]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        let name = crate::console::names::task_status(t.status);
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn progress_line(counts: &BTreeMap<String, usize>, total: usize) -> String {
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    format!(
        "completed {:>3}/{total}  running {:>2}  assigned {:>2}  pending {:>3}  failed {}",
        get("COMPLETED"),
        get("RUNNING"),
        get("ASSIGNED"),
        get("PENDING"),
        get("FAILED") + get("CANCELLED"),
    )
}

/// One line of the final table.
struct DemoRow {
    index: usize,
    task_id: String,
    node: String,
    attempt: u32,
    n: String,
    dtype: String,
    seconds: Option<f64>,
    gflops: Option<f64>,
    verified: Result<(), String>,
}

impl DemoRow {
    fn of(index: usize, task: &Task) -> DemoRow {
        let input: Value = serde_json::from_str(&task.task_data).unwrap_or(Value::Null);
        let result: Value = serde_json::from_str(&task.result_data).unwrap_or(Value::Null);
        DemoRow {
            index,
            task_id: task.task_id.clone(),
            node: task.assigned_node_id.clone(),
            attempt: task.attempt,
            n: input.get("n").map_or_else(|| "?".into(), Value::to_string),
            dtype: input
                .get("dtype")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            seconds: result.get("seconds").and_then(Value::as_f64),
            gflops: result.get("gflops").and_then(Value::as_f64),
            verified: verify_task(task, &input, &result),
        }
    }
}

/// COMPLETED, completed by exactly one attempt, and the result checks out against inputs
/// regenerated from the task's seed.
pub fn verify_task(task: &Task, input: &Value, result: &Value) -> Result<(), String> {
    if task.status != TaskStatus::Completed as i32 {
        return Err(format!(
            "status {} ({})",
            crate::console::names::task_status(task.status),
            task.error
        ));
    }
    let completions = task
        .attempts
        .iter()
        .filter(|a| a.outcome == TaskStatus::Completed as i32)
        .count();
    if completions != 1 {
        return Err(format!(
            "{completions} attempts completed (expected exactly 1)"
        ));
    }
    verify_matmul(input, result).map_err(|e| e.to_string())
}

fn result_table(rows: &[DemoRow]) -> Table {
    let mut table = Table::new([
        "#", "TASK", "NODE", "ATTEMPT", "N", "DTYPE", "SECONDS", "GFLOP/S", "VERIFIED",
    ]);
    for r in rows {
        table.row([
            (r.index + 1).to_string(),
            r.task_id.clone(),
            r.node.clone(),
            r.attempt.to_string(),
            r.n.clone(),
            r.dtype.clone(),
            r.seconds.map_or_else(|| "-".into(), |s| format!("{s:.3}")),
            r.gflops.map_or_else(|| "-".into(), |g| format!("{g:.2}")),
            if r.verified.is_ok() {
                "yes".into()
            } else {
                "NO".into()
            },
        ]);
    }
    table
}
