//! `mlcp bench`: the numbers of docs/architecture.md#tools, measured end to end over gRPC.
//!
//! Phases (each against real `mlcp server` processes with durable redb storage):
//! 1. **end to end**: `--echo-tasks` no-op (`echo`) tasks submitted by 64 concurrent clients
//!    and completed by `--agents` agents; rate = tasks / (last completion − first submit).
//! 2. **submit**: for each level of `--clients` concurrent clients, SubmitTask for
//!    `--duration-secs`; throughput and p50/p99 latency (hdrhistogram, microseconds). These
//!    tasks carry a constraint no agent satisfies (`region = "bench-unplaceable"`) so they stay
//!    PENDING and only the write path is measured.
//! 3. **failover**: SIGKILL the leader while a client submits in a loop to the survivors; the
//!    time from the kill to the first successful SubmitTask issued after it.
//!
//! With `--server` only phase 2 runs, against that cluster (nothing is started or killed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::ToolError;
use crate::client::Client;
use crate::client::api as commands;
use crate::console::flags::{OutputFormat, unsigned};
use crate::console::out::{out, outln};
use crate::console::signals;
use crate::console::table::Table;
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::{ListTasksRequest, SubmitTaskRequest, TaskConstraints, TaskStatus};
use crate::testkit::local_cluster::{
    ClusterSpec, LocalCluster, poll_until, wait_for_healthy_nodes,
};

/// Flags of `mlcp bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark an existing cluster (submit phase only) instead of starting one.
    #[arg(long = "server", value_name = "ADDR,…")]
    pub servers: Option<String>,
    /// Concurrent-client levels of the submit phase.
    #[arg(
        long,
        value_name = "N,…",
        default_value = "1,16,64,256",
        value_delimiter = ',',
        allow_negative_numbers = true, value_parser = unsigned::<usize>
    )]
    pub clients: Vec<usize>,
    /// Seconds per submit level.
    #[arg(long, value_name = "SECS", default_value_t = 5, allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub duration_secs: u64,
    /// No-op (echo) tasks for the end-to-end phase.
    #[arg(long, value_name = "N", default_value_t = 5000, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub echo_tasks: usize,
    /// Agents for the end-to-end phase.
    #[arg(long, value_name = "N", default_value_t = 4, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub agents: usize,
    /// Output format [default: table].
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "table")]
    pub output: OutputFormat,
    /// Keep the temp dir (data dirs and child logs) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
}

/// Concurrent submitters in the end-to-end phase.
const E2E_CLIENTS: usize = 64;
/// Most HTTP/2 connections opened per level (clients beyond share them).
const CONNECTIONS_MAX: usize = 64;
/// Region no bench agent has, so submit-phase tasks are never placed.
const UNPLACEABLE_REGION: &str = "bench-unplaceable";
/// Histogram range: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;

/// One submit level's result.
#[derive(Debug)]
struct SubmitLevel {
    clients: usize,
    ok: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Runs the bench; Ctrl-C stops it and still cleans up.
pub async fn run(args: BenchArgs) -> Result<(), ToolError> {
    if args.clients.contains(&0) {
        return Err(ToolError::Usage("--clients levels must be positive".into()));
    }
    tokio::select! {
        outcome = bench(&args) => outcome,
        signal = signals::wait_for_signal() => {
            Err(ToolError::Failed(format!("interrupted by {signal}")))
        }
    }
}

async fn bench(args: &BenchArgs) -> Result<(), ToolError> {
    if let Some(servers) = &args.servers {
        let addrs: Vec<String> = servers.split(',').map(|s| s.trim().to_owned()).collect();
        if let Some(entry) = addrs
            .iter()
            .find(|a| crate::client::peer_authority(a).is_none())
        {
            return Err(ToolError::Usage(format!(
                "--server: entry {entry:?} is not HOST:PORT with a port in 1..=65535"
            )));
        }
        let client = Client::new(addrs, Duration::from_secs(5));
        let leader = leader_address(&client).await?;
        let levels = submit_levels(&leader, args).await?;
        report(args.output, &levels, None, None);
        return Ok(());
    }

    let binary = std::env::current_exe().map_err(ToolError::io("finding the mlcp executable"))?;
    let spec = ClusterSpec {
        child_log_filter: "warn".into(),
        ..ClusterSpec::default()
    };
    let mut cluster =
        LocalCluster::new(binary, spec).map_err(ToolError::io("creating the bench temp dir"))?;
    if args.keep_dir {
        cluster.keep_dir();
    }
    eprintln!("bench: cluster in {}", cluster.dir().display());
    cluster
        .start_controllers()
        .map_err(ToolError::io("starting controllers"))?;
    let leader = cluster
        .wait_for_leader(&[0, 1, 2], Duration::from_secs(30))
        .await
        .map_err(ToolError::Failed)?;
    for i in 1..=args.agents {
        cluster
            .start_agent(&format!("bench-agent-{i}"), 16)
            .map_err(ToolError::io("starting an agent"))?;
    }
    let leader_addr = cluster.controllers[leader.pos].grpc.to_string();
    let client = cluster.client(Duration::from_secs(5));
    wait_for_healthy_nodes(&client, args.agents, Duration::from_secs(30))
        .await
        .map_err(ToolError::Failed)?;

    eprintln!(
        "bench: end-to-end phase ({} echo tasks, {} agents)",
        args.echo_tasks, args.agents
    );
    let e2e = end_to_end(&leader_addr, &client, args.echo_tasks).await?;
    for pos in 0..cluster.agents.len() {
        cluster.stop_agent(pos, Duration::from_secs(5)).await;
    }

    let levels = submit_levels(&leader_addr, args).await?;

    eprintln!("bench: failover phase");
    let failover = failover(&mut cluster).await?;
    report(args.output, &levels, Some(e2e), Some(failover));
    Ok(())
}

async fn leader_address(client: &Client) -> Result<String, ToolError> {
    let status = commands::cluster_status(client).await?;
    if status.leader_address.is_empty() {
        return Err(ToolError::Failed("the cluster has no leader".into()));
    }
    Ok(status.leader_address)
}

async fn connect(addr: &str, n: usize) -> Result<Vec<Channel>, ToolError> {
    let client = Client::new(vec![addr.to_owned()], Duration::from_secs(10));
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        // A fresh Client per channel so each is its own HTTP/2 connection.
        let fresh = Client::new(client.addrs().to_vec(), Duration::from_secs(10));
        channels.push(fresh.channel(addr).await.map_err(ToolError::Failed)?);
    }
    Ok(channels)
}

fn echo_request(region: &str, i: u64) -> SubmitTaskRequest {
    SubmitTaskRequest {
        task_type: "echo".into(),
        task_data: format!("{{\"i\":{i}}}"),
        max_attempts: 3,
        constraints: (!region.is_empty()).then(|| TaskConstraints {
            region: region.to_owned(),
            ..TaskConstraints::default()
        }),
        ..SubmitTaskRequest::default()
    }
}

async fn submit_levels(leader: &str, args: &BenchArgs) -> Result<Vec<SubmitLevel>, ToolError> {
    let mut levels = Vec::new();
    for &clients in &args.clients {
        eprintln!(
            "bench: submit phase, {clients} client(s), {}s",
            args.duration_secs
        );
        levels.push(submit_level(leader, clients, Duration::from_secs(args.duration_secs)).await?);
    }
    Ok(levels)
}

async fn submit_level(
    leader: &str,
    clients: usize,
    duration: Duration,
) -> Result<SubmitLevel, ToolError> {
    let channels = connect(leader, clients.min(CONNECTIONS_MAX)).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // A level too long for the clock (`--duration-secs 18446744073709551615`) has no end.
    let until = started.checked_add(duration);
    let mut workers = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut svc = TaskServiceClient::new(channels[c % channels.len()].clone());
        let counter = counter.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3).expect("valid bounds");
            let mut errors = 0u64;
            while until.is_none_or(|u| Instant::now() < u) {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                match svc.submit_task(echo_request(UNPLACEABLE_REGION, i)).await {
                    Ok(_) => {
                        let us = sent.elapsed().as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
                        hist.record(us.max(1)).expect("within bounds");
                    }
                    Err(_) => errors += 1,
                }
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_max(LATENCY_US_MAX, 3).expect("valid bounds");
    let mut errors = 0;
    for w in workers {
        let (h, e) = w
            .await
            .map_err(|e| ToolError::Failed(format!("bench worker: {e}")))?;
        hist.add(h).expect("same bounds");
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(SubmitLevel {
        clients,
        ok: hist.len(),
        errors,
        seconds,
        p50_ms: hist.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        max_ms: hist.max() as f64 / 1000.0,
    })
}

/// End-to-end result: tasks completed per second.
#[derive(Debug)]
struct EndToEnd {
    tasks: usize,
    seconds: f64,
}

async fn end_to_end(leader: &str, client: &Client, tasks: usize) -> Result<EndToEnd, ToolError> {
    let channels = connect(leader, E2E_CLIENTS.min(CONNECTIONS_MAX)).await?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for c in 0..E2E_CLIENTS {
        let mut svc = TaskServiceClient::new(channels[c % channels.len()].clone());
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= tasks as u64 {
                    return Ok::<(), tonic::Status>(());
                }
                let mut request = echo_request("", i);
                request.idempotency_key = format!("bench-e2e-{i}");
                svc.submit_task(request).await?;
            }
        }));
    }
    for w in workers {
        w.await
            .map_err(|e| ToolError::Failed(format!("bench worker: {e}")))?
            .map_err(ToolError::from)?;
    }
    let submitted = started.elapsed().as_secs_f64();
    eprintln!("bench: {tasks} echo tasks submitted in {submitted:.2}s; waiting for completion");
    poll_until(
        "every echo task to complete",
        Duration::from_secs(600),
        Duration::from_millis(50),
        || async {
            let response = client
                .call(|ch| async move {
                    TaskServiceClient::new(ch)
                        .list_tasks(ListTasksRequest {
                            status: TaskStatus::Completed as i32,
                            page_size: 1,
                            ..ListTasksRequest::default()
                        })
                        .await
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            Ok((response.total_count >= tasks as u64).then_some(()))
        },
    )
    .await
    .map_err(ToolError::Failed)?;
    Ok(EndToEnd {
        tasks,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Failover result: SIGKILL of the leader to the first successful write after it.
#[derive(Debug)]
struct Failover {
    old_leader: u64,
    new_leader: u64,
    ms: f64,
    failed_attempts: u64,
}

async fn failover(cluster: &mut LocalCluster) -> Result<Failover, ToolError> {
    let leader = cluster
        .wait_for_leader(&[0, 1, 2], Duration::from_secs(10))
        .await
        .map_err(ToolError::Failed)?;
    let survivors: Vec<usize> = (0..3).filter(|&p| p != leader.pos).collect();
    // Open connections to the survivors before the kill so connect time is not counted.
    let mut clients = Vec::new();
    for &pos in &survivors {
        let addr = cluster.controllers[pos].grpc.to_string();
        let ch = connect(&addr, 1).await?.remove(0);
        clients.push(TaskServiceClient::new(ch));
    }
    cluster.kill_controller(leader.pos);
    let killed = Instant::now();
    let mut failed_attempts = 0u64;
    let mut i = 0u64;
    let deadline = killed + Duration::from_secs(30);
    let ms = loop {
        if Instant::now() >= deadline {
            return Err(ToolError::Failed(
                "no write succeeded within 30 s of killing the leader".into(),
            ));
        }
        let svc = &mut clients[(i as usize) % survivors.len()];
        i += 1;
        let mut request = echo_request(UNPLACEABLE_REGION, i);
        request.idempotency_key = format!("bench-failover-{i}");
        let call = tokio::time::timeout(Duration::from_millis(500), svc.submit_task(request));
        match call.await {
            Ok(Ok(_)) => break killed.elapsed().as_secs_f64() * 1000.0,
            _ => {
                failed_attempts += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let new = cluster
        .wait_for_leader(&survivors, Duration::from_secs(10))
        .await
        .map_err(ToolError::Failed)?;
    Ok(Failover {
        old_leader: leader.status.self_id,
        new_leader: new.status.self_id,
        ms,
        failed_attempts,
    })
}

fn report(
    output: OutputFormat,
    levels: &[SubmitLevel],
    e2e: Option<EndToEnd>,
    failover: Option<Failover>,
) {
    match output {
        OutputFormat::Json => {
            let value = json!({
                "submit": levels.iter().map(|l| json!({
                    "clients": l.clients,
                    "ok": l.ok,
                    "errors": l.errors,
                    "seconds": l.seconds,
                    "ops_per_sec": l.ok as f64 / l.seconds,
                    "p50_ms": l.p50_ms,
                    "p99_ms": l.p99_ms,
                    "max_ms": l.max_ms,
                })).collect::<Vec<_>>(),
                "end_to_end": e2e.as_ref().map_or(Value::Null, |e| json!({
                    "tasks": e.tasks,
                    "seconds": e.seconds,
                    "tasks_per_sec": e.tasks as f64 / e.seconds,
                })),
                "failover": failover.as_ref().map_or(Value::Null, |f| json!({
                    "old_leader": f.old_leader,
                    "new_leader": f.new_leader,
                    "kill_to_first_write_ms": f.ms,
                    "failed_attempts": f.failed_attempts,
                })),
            });
            outln!(
                "{}",
                serde_json::to_string_pretty(&value).expect("serializable")
            );
        }
        OutputFormat::Table => {
            let mut table = Table::new([
                "SUBMIT CLIENTS",
                "OK",
                "ERRORS",
                "OPS/S",
                "P50 MS",
                "P99 MS",
                "MAX MS",
            ]);
            for l in levels {
                table.row([
                    l.clients.to_string(),
                    l.ok.to_string(),
                    l.errors.to_string(),
                    format!("{:.0}", l.ok as f64 / l.seconds),
                    format!("{:.2}", l.p50_ms),
                    format!("{:.2}", l.p99_ms),
                    format!("{:.2}", l.max_ms),
                ]);
            }
            out!("{}", table.render());
            if let Some(e) = e2e {
                outln!(
                    "end to end: {} echo tasks completed in {:.2}s = {:.0} tasks/s",
                    e.tasks,
                    e.seconds,
                    e.tasks as f64 / e.seconds
                );
            }
            if let Some(f) = failover {
                outln!(
                    "failover: SIGKILL of leader {} to first successful write {:.0} ms (new leader {}, {} failed attempts)",
                    f.old_leader,
                    f.ms,
                    f.new_leader,
                    f.failed_attempts
                );
            }
        }
    }
}
