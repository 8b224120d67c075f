//! `mlcp bench-liveness`: the liveness numbers of docs/architecture.md#tools, measured over gRPC against a
//! local 3-controller cluster (child processes of this executable, durable redb storage).
//!
//! Phases:
//! 1. **capacity**: one tokio runtime simulates N logical agents, each sending a Heartbeat
//!    RPC every interval over a handful of shared HTTP/2 channels to the leader (tonic
//!    multiplexes the streams). N steps upward (`--steps`, capped by `--agents-max`); new
//!    agents register (their first heartbeat commits a `RegisterNode`) before the window, the
//!    commit index is then read from the leader, every agent heartbeats for `--window-secs`,
//!    and the commit index is read again: steady heartbeats must append zero Raft entries.
//!    Each agent honours the interval the leader hands back (it grows with the node count),
//!    so both the configured rate (N per second) and the effective rate are reported.
//!    Latency is the RPC round trip (hdrhistogram, µs); the generator's own lateness (actual
//!    minus scheduled send) is reported too, so an overloaded generator is visible.
//! 2. **failover**: 2 real agents (`mlcp agent`) run long `sleep` tasks; the busier one is
//!    SIGKILLed and GetTask is polled until each of its tasks is RUNNING on the survivor. The
//!    time is split into: kill → node UNHEALTHY (stale timeout minus the time since the last
//!    heartbeat, plus scan granularity; the same committed `NodeLost` requeues the tasks),
//!    → ASSIGNED to the survivor (placement), → RUNNING (the survivor's poll + start ack).
//!
//! No test asserts these timings; `tests/e2e_bench_liveness.rs` runs a tiny capacity step and
//! checks behaviour only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::ToolError;
use crate::client::Client;
use crate::client::api as commands;
use crate::console::flags::{OutputFormat, non_negative_f64, unsigned};
use crate::console::out::{out, outln};
use crate::console::signals;
use crate::console::table::Table;
use crate::proto::node_service_client::NodeServiceClient;
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::{HeartbeatRequest, NodeCapacity, NodeStatus, SubmitTaskRequest, TaskStatus};
use crate::testkit::local_cluster::{
    ClusterSpec, LocalCluster, poll_until, wait_for_healthy_nodes,
};

/// Histogram range: 1 µs to 60 s, 3 significant digits.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Histogram shards (agents record into `agent % SHARDS`), to keep lock contention low.
const SHARDS: usize = 32;
/// Registrations (first heartbeats, each a Raft proposal) in flight at once.
const REGISTRATIONS_IN_FLIGHT_MAX: usize = 256;
/// Per-heartbeat deadline; a slower answer counts as an error.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// The commit index must stay put this long before a window starts (longer than the
/// monitor's 500 ms scan, so pending registrations and interval changes have settled).
const SETTLE_QUIET: Duration = Duration::from_millis(1500);
/// `sleep` task length in the failover phase, in ms (far longer than the measurement).
const SLEEP_TASK_MS: u64 = 600_000;
/// Slots of each real agent in the failover phase.
const FAILOVER_AGENT_SLOTS: u32 = 4;
/// GetTask / ListNodes polling period in the failover phase.
const FAILOVER_POLL: Duration = Duration::from_millis(10);

/// Which phases `mlcp bench-liveness` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LivenessPhase {
    /// Capacity, then failover.
    All,
    /// Only the heartbeat capacity steps.
    Capacity,
    /// Only the agent-death failover measurement.
    Failover,
}

/// Flags of `mlcp bench-liveness`.
#[derive(Debug, Args)]
pub struct BenchLivenessArgs {
    /// Most simulated agents; steps above it are skipped and it is added as the last step.
    #[arg(long, value_name = "N", default_value_t = 10_000, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub agents_max: usize,
    /// Simulated-agent counts to step through (capped by --agents-max).
    #[arg(
        long,
        value_name = "N,…",
        default_value = "500,1000,2000,5000,10000",
        value_delimiter = ',',
        allow_negative_numbers = true, value_parser = unsigned::<usize>
    )]
    pub steps: Vec<usize>,
    /// Seconds of steady heartbeating measured per step.
    #[arg(long, value_name = "SECS", default_value_t = 10, allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub window_secs: u64,
    /// HTTP/2 connections the simulated agents share.
    #[arg(long, value_name = "N", default_value_t = 8, allow_negative_numbers = true, value_parser = unsigned::<usize>)]
    pub connections: usize,
    /// Heartbeat p99 a step must stay under to count as held, in ms.
    #[arg(long, value_name = "MS", default_value_t = 50.0, allow_negative_numbers = true, value_parser = non_negative_f64)]
    pub p99_target_ms: f64,
    /// Stale timeout given to the controllers (`--node-stale-after-ms`) [default: the
    /// server's, 10000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub stale_after_ms: Option<u64>,
    /// Phases to run.
    #[arg(long, value_enum, default_value = "all")]
    pub phase: LivenessPhase,
    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "table")]
    pub output: OutputFormat,
    /// Keep the temp dir (data dirs and child logs) and print its path.
    #[arg(long)]
    pub keep_dir: bool,
}

/// One capacity step's result.
#[derive(Clone, Debug)]
pub struct CapacityStep {
    /// Simulated agents heartbeating.
    pub agents: usize,
    /// Heartbeats answered in the window.
    pub ok: u64,
    /// Heartbeats that failed or timed out in the window.
    pub errors: u64,
    /// Answers in the window that said the heartbeat (re)registered the node.
    pub registered_in_window: u64,
    /// Window length, in seconds.
    pub seconds: f64,
    /// Heartbeat interval the leader handed out during the window, in ms.
    pub interval_ms: u64,
    /// Round-trip latency percentiles, in ms.
    pub p50_ms: f64,
    /// 99th percentile, in ms.
    pub p99_ms: f64,
    /// Slowest, in ms.
    pub max_ms: f64,
    /// 99th percentile of generator lateness (actual − scheduled send), in ms.
    pub lag_p99_ms: f64,
    /// Leader commit index before the window (log index).
    pub commit_before: u64,
    /// Leader commit index after the window (log index).
    pub commit_after: u64,
    /// Leader CPU use during the window, in cores (None if the process was not found).
    pub leader_cpu_cores: Option<f64>,
    /// This (generator) process's CPU use during the window, in cores.
    pub generator_cpu_cores: Option<f64>,
    /// One error message seen, if any.
    pub sample_error: Option<String>,
}

impl CapacityStep {
    /// Heartbeats per second the agents were configured for (one per agent per second).
    pub fn configured_per_sec(&self) -> f64 {
        self.agents as f64
    }

    /// Heartbeats per second actually answered.
    pub fn effective_per_sec(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Raft entries appended during the window (must be 0).
    pub fn entries_appended(&self) -> u64 {
        self.commit_after.saturating_sub(self.commit_before)
    }

    /// Whether the leader held this step: p99 under target, no errors, no entries.
    pub fn held(&self, p99_target_ms: f64) -> bool {
        self.errors == 0 && self.entries_appended() == 0 && self.p99_ms < p99_target_ms
    }
}

/// The failover measurement.
#[derive(Clone, Debug)]
pub struct FailoverTiming {
    /// Tasks the killed agent ran.
    pub tasks: usize,
    /// Time since the victim's last heartbeat (as the leader saw it) at the kill, in ms.
    pub since_last_heartbeat_ms: f64,
    /// Stale timeout in force, in ms.
    pub stale_after_ms: u64,
    /// Kill → the victim listed UNHEALTHY (its tasks requeued by the same entry), in ms.
    pub unhealthy_ms: f64,
    /// Kill → every task ASSIGNED (or later) to the survivor, in ms.
    pub assigned_ms: f64,
    /// Kill → every task RUNNING on the survivor, in ms.
    pub running_ms: f64,
}

/// Runs the bench; Ctrl-C stops it and still cleans up.
pub async fn run(args: BenchLivenessArgs) -> Result<(), ToolError> {
    if args.connections == 0 || args.agents_max == 0 || args.window_secs == 0 {
        return Err(ToolError::Usage(
            "--connections, --agents-max and --window-secs must be positive".into(),
        ));
    }
    tokio::select! {
        outcome = bench(&args) => outcome,
        signal = signals::wait_for_signal() => {
            Err(ToolError::Failed(format!("interrupted by {signal}")))
        }
    }
}

/// The step counts to run: `steps` at most `agents_max`, ascending, ending at `agents_max`.
pub fn step_levels(steps: &[usize], agents_max: usize) -> Vec<usize> {
    let mut levels: Vec<usize> = steps
        .iter()
        .copied()
        .filter(|&n| n > 0 && n <= agents_max)
        .collect();
    levels.push(agents_max);
    levels.sort_unstable();
    levels.dedup();
    levels
}

async fn bench(args: &BenchLivenessArgs) -> Result<(), ToolError> {
    let mut steps = Vec::new();
    let mut failover = None;
    if args.phase != LivenessPhase::Failover {
        let mut cluster = start_cluster(args)?;
        steps = capacity(&cluster, args).await?;
        cluster.kill_all();
    }
    if args.phase != LivenessPhase::Capacity {
        let mut cluster = start_cluster(args)?;
        failover = Some(failover_phase(&mut cluster, args).await?);
    }
    report(args, &steps, failover.as_ref());
    Ok(())
}

fn start_cluster(args: &BenchLivenessArgs) -> Result<LocalCluster, ToolError> {
    let binary = std::env::current_exe().map_err(ToolError::io("finding the mlcp executable"))?;
    let spec = ClusterSpec {
        child_log_filter: "warn".into(),
        node_stale_after_ms: args.stale_after_ms,
        ..ClusterSpec::default()
    };
    let mut cluster =
        LocalCluster::new(binary, spec).map_err(ToolError::io("creating the bench temp dir"))?;
    if args.keep_dir {
        cluster.keep_dir();
    }
    eprintln!("bench-liveness: cluster in {}", cluster.dir().display());
    cluster
        .start_controllers()
        .map_err(ToolError::io("starting controllers"))?;
    Ok(cluster)
}

/// The capacity steps against a started cluster (see the module docs).
pub async fn capacity(
    cluster: &LocalCluster,
    args: &BenchLivenessArgs,
) -> Result<Vec<CapacityStep>, ToolError> {
    let leader = cluster
        .wait_for_leader(&[0, 1, 2], Duration::from_secs(30))
        .await
        .map_err(ToolError::Failed)?;
    let leader_addr = cluster.controllers[leader.pos].grpc.to_string();
    let leader_pid = find_server_pid(&leader_addr);
    let status_client = Client::new(vec![leader_addr.clone()], Duration::from_secs(10));
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        // A fresh Client per channel so each is its own HTTP/2 connection.
        let fresh = Client::new(vec![leader_addr.clone()], Duration::from_secs(10));
        channels.push(
            fresh
                .channel(&leader_addr)
                .await
                .map_err(ToolError::Failed)?,
        );
    }
    let generator = Generator::new(channels);
    let mut results = Vec::new();
    let outcome = async {
        for agents in step_levels(&args.steps, args.agents_max) {
            eprintln!("bench-liveness: registering up to {agents} simulated agents");
            generator.grow_to(agents).await?;
            settle(&status_client).await?;
            eprintln!(
                "bench-liveness: {agents} agents, {}s steady window",
                args.window_secs
            );
            let step = generator
                .window(
                    agents,
                    Duration::from_secs(args.window_secs),
                    &status_client,
                    leader_pid,
                )
                .await?;
            let held = step.held(args.p99_target_ms);
            results.push(step);
            if !held {
                eprintln!("bench-liveness: {agents} agents not held; stopping the steps");
                break;
            }
        }
        Ok::<(), ToolError>(())
    }
    .await;
    generator.stop();
    outcome?;
    Ok(results)
}

/// Waits until the leader's commit index stays put for [`SETTLE_QUIET`] (bounded).
async fn settle(client: &Client) -> Result<(), ToolError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = commands::cluster_status(client).await?.commit_index;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = commands::cluster_status(client).await?.commit_index;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            return Ok(());
        }
    }
    Err(ToolError::Failed(
        "the leader's commit index kept moving for 60 s after registration".into(),
    ))
}

/// Counters and histograms shared by every simulated agent.
struct Shared {
    latency: Vec<Mutex<Histogram<u64>>>,
    lag: Vec<Mutex<Histogram<u64>>>,
    ok: AtomicU64,
    errors: AtomicU64,
    registered: AtomicU64,
    interval_ms: AtomicU64,
    sample_error: Mutex<Option<String>>,
    stop: CancellationToken,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_max(LATENCY_US_MAX, 3).expect("valid bounds")
}

fn record(shard: &Mutex<Histogram<u64>>, d: Duration) {
    let us = (d.as_micros().min(u128::from(LATENCY_US_MAX)) as u64).max(1);
    shard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(us)
        .expect("within bounds");
}

fn merged(shards: &[Mutex<Histogram<u64>>], reset: bool) -> Histogram<u64> {
    let mut all = histogram();
    for shard in shards {
        let mut h = shard.lock().unwrap_or_else(|e| e.into_inner());
        all.add(&*h).expect("same bounds");
        if reset {
            h.reset();
        }
    }
    all
}

/// N logical agents on one runtime over shared channels.
struct Generator {
    channels: Vec<Channel>,
    shared: Arc<Shared>,
    agents: Mutex<usize>,
}

/// The request simulated agent `i` sends (the same every time, so re-registration is a
/// no-op on the leader).
fn heartbeat_request(i: usize) -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: format!("sim-{i:06}"),
        address: format!("sim-{i:06}:0"),
        cloud_provider: "local".into(),
        region: "sim".into(),
        capacity: Some(NodeCapacity {
            slots: 1,
            cpu_cores: 1,
            memory_mb: 1024,
            gpus: 0,
        }),
        cpu_usage: 1.0,
        memory_usage: 1.0,
        ..HeartbeatRequest::default()
    }
}

impl Generator {
    fn new(channels: Vec<Channel>) -> Generator {
        Generator {
            channels,
            shared: Arc::new(Shared {
                latency: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
                lag: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
                ok: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                registered: AtomicU64::new(0),
                interval_ms: AtomicU64::new(1000),
                sample_error: Mutex::new(None),
                stop: CancellationToken::new(),
            }),
            agents: Mutex::new(0),
        }
    }

    fn stop(&self) {
        self.shared.stop.cancel();
    }

    /// Starts agents up to `n`: each registers with its first heartbeat (at most
    /// [`REGISTRATIONS_IN_FLIGHT_MAX`] at once) and then heartbeats steadily. Returns once
    /// every new agent's registration was answered.
    async fn grow_to(&self, n: usize) -> Result<(), ToolError> {
        let from = {
            let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
            let from = *agents;
            *agents = n.max(from);
            from
        };
        let gate = Arc::new(Semaphore::new(REGISTRATIONS_IN_FLIGHT_MAX));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Result<u64, String>>(1024);
        for i in from..n {
            let client = NodeServiceClient::new(self.channels[i % self.channels.len()].clone());
            let shared = self.shared.clone();
            let gate = gate.clone();
            let done = done_tx.clone();
            tokio::spawn(simulated_agent(i, client, shared, gate, done));
        }
        drop(done_tx);
        let mut failures = Vec::new();
        let mut interval_ms = 1000;
        while let Some(outcome) = done_rx.recv().await {
            match outcome {
                Ok(ms) => interval_ms = ms,
                Err(e) => failures.push(e),
            }
        }
        if let Some(first) = failures.first() {
            return Err(ToolError::Failed(format!(
                "{} of {} registrations failed; first: {first}",
                failures.len(),
                n - from
            )));
        }
        self.shared
            .interval_ms
            .store(interval_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Measures one steady window with `agents` agents heartbeating.
    async fn window(
        &self,
        agents: usize,
        length: Duration,
        status: &Client,
        leader_pid: Option<u32>,
    ) -> Result<CapacityStep, ToolError> {
        let s = &self.shared;
        let before = commands::cluster_status(status).await?;
        merged(&s.latency, true);
        merged(&s.lag, true);
        *s.sample_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let (ok0, err0, reg0) = (
            s.ok.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            s.registered.load(Ordering::Relaxed),
        );
        let cpu0 = (leader_pid.and_then(cpu_seconds), cpu_seconds_self());
        let started = Instant::now();
        tokio::time::sleep(length).await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu1 = (leader_pid.and_then(cpu_seconds), cpu_seconds_self());
        let (ok, errors, registered) = (
            s.ok.load(Ordering::Relaxed) - ok0,
            s.errors.load(Ordering::Relaxed) - err0,
            s.registered.load(Ordering::Relaxed) - reg0,
        );
        let latency = merged(&s.latency, false);
        let lag = merged(&s.lag, false);
        let after = commands::cluster_status(status).await?;
        let cores = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / seconds);
        let ms = |us: u64| us as f64 / 1000.0;
        Ok(CapacityStep {
            agents,
            ok,
            errors,
            registered_in_window: registered,
            seconds,
            interval_ms: after.heartbeat_interval_ms,
            p50_ms: ms(latency.value_at_quantile(0.50)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            max_ms: ms(latency.max()),
            lag_p99_ms: ms(lag.value_at_quantile(0.99)),
            commit_before: before.commit_index,
            commit_after: after.commit_index,
            leader_cpu_cores: cores(cpu0.0, cpu1.0),
            generator_cpu_cores: cores(cpu0.1, cpu1.1),
            sample_error: s
                .sample_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        })
    }
}

/// One simulated agent: registers (reporting the outcome on `done`), then heartbeats every
/// interval the leader hands back until the generator stops. Its first steady heartbeat is
/// offset by a fraction of the interval derived from `i`, so the fleet is spread evenly.
async fn simulated_agent(
    i: usize,
    mut client: NodeServiceClient<Channel>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    done: tokio::sync::mpsc::Sender<Result<u64, String>>,
) {
    let request = heartbeat_request(i);
    let first = {
        let _permit = gate.acquire().await.expect("never closed");
        tokio::time::timeout(HEARTBEAT_TIMEOUT * 6, client.heartbeat(request.clone())).await
    };
    let mut interval_ms = match first {
        Ok(Ok(response)) => response.into_inner().heartbeat_interval_ms.max(1),
        Ok(Err(status)) => {
            let _ = done
                .send(Err(format!("{:?}: {}", status.code(), status.message())))
                .await;
            return;
        }
        Err(_) => {
            let _ = done.send(Err("registration timed out".into())).await;
            return;
        }
    };
    let _ = done.send(Ok(interval_ms)).await;
    drop(done);
    let shard = i % SHARDS;
    let offset_ms = interval_ms * ((i as u64).wrapping_mul(7919) % 1000) / 1000;
    let mut next = Instant::now() + Duration::from_millis(offset_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shared.stop.cancelled() => return,
        }
        let sent = Instant::now();
        record(&shared.lag[shard], sent - next);
        match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.heartbeat(request.clone())).await {
            Ok(Ok(response)) => {
                record(&shared.latency[shard], sent.elapsed());
                let response = response.into_inner();
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if response.registered {
                    shared.registered.fetch_add(1, Ordering::Relaxed);
                }
                interval_ms = response.heartbeat_interval_ms.max(1);
            }
            outcome => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                let why = match outcome {
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    _ => "heartbeat timed out".to_owned(),
                };
                shared
                    .sample_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(why);
            }
        }
        // Keep the phase; never burst to catch up after a slow answer.
        next += Duration::from_millis(interval_ms);
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}

/// The pid of the `mlcp server` child listening on `addr` (scans /proc; Linux only).
fn find_server_pid(addr: &str) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_server = args.iter().any(|a| *a == b"server");
        let listens = args
            .windows(2)
            .any(|w| w[0] == b"--listen" && w[1] == addr.as_bytes());
        if is_server && listens {
            return Some(pid);
        }
    }
    None
}

/// User + system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_self() -> Option<f64> {
    cpu_seconds_at("/proc/self/stat")
}

fn cpu_seconds_at(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// The failover measurement (see the module docs).
async fn failover_phase(
    cluster: &mut LocalCluster,
    args: &BenchLivenessArgs,
) -> Result<FailoverTiming, ToolError> {
    let names = ["liveness-a", "liveness-b"];
    start_failover_agents(cluster, &names).await?;
    let client = cluster.client(Duration::from_secs(10));
    eprintln!("bench-liveness: failover phase, {FAILOVER_AGENT_SLOTS} sleep tasks");
    let task_ids = submit_sleep_tasks(&client).await?;
    let placed = wait_all_running(&client, &task_ids).await?;

    // Kill the busier agent: the survivor then has at least as many free slots as it ran.
    let on = |name: &str| placed.iter().filter(|p| p.1 == name).count();
    let (victim_pos, victim, survivor) = if on(names[0]) >= on(names[1]) {
        (0, names[0], names[1])
    } else {
        (1, names[1], names[0])
    };
    let victim_tasks: Vec<(String, u32)> = placed
        .iter()
        .filter(|p| p.1 == victim)
        .map(|p| (p.0.clone(), p.2))
        .collect();
    let last_heartbeat_ms = commands::list_nodes(&client)
        .await?
        .into_iter()
        .find(|n| n.node_id == victim)
        .map(|n| n.last_heartbeat)
        .unwrap_or_default();
    let status = commands::cluster_status(&client).await?;
    let stale_after_ms = args
        .stale_after_ms
        .unwrap_or(10_000)
        .max(3 * status.heartbeat_interval_ms);

    cluster.kill_agent(victim_pos);
    let killed = Instant::now();
    let since_last_heartbeat_ms = (unix_ms_now() - last_heartbeat_ms).max(0) as f64;
    eprintln!(
        "bench-liveness: SIGKILLed {victim} running {} task(s)",
        victim_tasks.len()
    );
    let deadline = killed + Duration::from_millis(stale_after_ms) + Duration::from_secs(60);
    let moved =
        watch_tasks_move(&client, victim, survivor, &victim_tasks, killed, deadline).await?;
    Ok(FailoverTiming {
        tasks: victim_tasks.len(),
        since_last_heartbeat_ms,
        stale_after_ms,
        unhealthy_ms: moved.unhealthy_ms.unwrap_or(moved.running_ms),
        assigned_ms: moved.assigned_ms.unwrap_or(moved.running_ms),
        running_ms: moved.running_ms,
    })
}

/// Starts the failover phase's agents and waits until both are HEALTHY.
async fn start_failover_agents(
    cluster: &mut LocalCluster,
    names: &[&str],
) -> Result<(), ToolError> {
    cluster
        .wait_for_leader(&[0, 1, 2], Duration::from_secs(30))
        .await
        .map_err(ToolError::Failed)?;
    for name in names {
        cluster
            .start_agent(name, FAILOVER_AGENT_SLOTS)
            .map_err(ToolError::io("starting an agent"))?;
    }
    let client = cluster.client(Duration::from_secs(10));
    wait_for_healthy_nodes(&client, names.len(), Duration::from_secs(30))
        .await
        .map_err(ToolError::Failed)
}

/// Submits one sleep task per agent slot; returns their ids.
async fn submit_sleep_tasks(client: &Client) -> Result<Vec<String>, ToolError> {
    let mut task_ids = Vec::new();
    for i in 0..FAILOVER_AGENT_SLOTS {
        let request = SubmitTaskRequest {
            task_type: "sleep".into(),
            task_data: format!("{{\"ms\":{SLEEP_TASK_MS}}}"),
            max_attempts: 3,
            idempotency_key: format!("liveness-failover-{i}"),
            ..SubmitTaskRequest::default()
        };
        let task = client
            .call(|ch| {
                let request = request.clone();
                async move { TaskServiceClient::new(ch).submit_task(request).await }
            })
            .await?
            .into_inner()
            .task
            .ok_or_else(|| ToolError::Failed("SubmitTask answered without a task".into()))?;
        task_ids.push(task.task_id);
    }
    Ok(task_ids)
}

/// Waits until every task is RUNNING; returns `(task id, node, attempt)` for each.
async fn wait_all_running(
    client: &Client,
    task_ids: &[String],
) -> Result<Vec<(String, String, u32)>, ToolError> {
    poll_until(
        "every sleep task RUNNING",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let mut placed = Vec::new();
            for id in task_ids {
                let t = commands::get_task(client, id, false)
                    .await
                    .map_err(|e| e.to_string())?;
                if t.status != TaskStatus::Running as i32 {
                    return Ok(None);
                }
                placed.push((t.task_id, t.assigned_node_id, t.attempt));
            }
            Ok(Some(placed))
        },
    )
    .await
    .map_err(ToolError::Failed)
}

/// When, in ms after the kill, the victim was UNHEALTHY, its tasks were ASSIGNED to the
/// survivor, and all were RUNNING there.
struct Moved {
    unhealthy_ms: Option<f64>,
    assigned_ms: Option<f64>,
    running_ms: f64,
}

/// Polls until every task of `victim` runs as a newer attempt on `survivor`, noting when
/// each milestone was first seen; fails at `deadline`.
async fn watch_tasks_move(
    client: &Client,
    victim: &str,
    survivor: &str,
    victim_tasks: &[(String, u32)],
    killed: Instant,
    deadline: Instant,
) -> Result<Moved, ToolError> {
    let ms_since_kill = || killed.elapsed().as_secs_f64() * 1000.0;
    let mut unhealthy_ms = None;
    let mut assigned_ms = None;
    loop {
        if Instant::now() >= deadline {
            return Err(ToolError::Failed(format!(
                "{victim}'s tasks were not RUNNING on {survivor} within {} ms of the kill",
                ms_since_kill()
            )));
        }
        if unhealthy_ms.is_none() {
            let nodes = commands::list_nodes(client).await?;
            if nodes
                .iter()
                .any(|n| n.node_id == victim && n.status == NodeStatus::Unhealthy as i32)
            {
                unhealthy_ms = Some(ms_since_kill());
            }
        }
        let mut all_assigned = true;
        let mut all_running = true;
        for (id, old_attempt) in victim_tasks {
            let t = commands::get_task(client, id, false).await?;
            let moved = t.attempt > *old_attempt && t.assigned_node_id == survivor;
            all_assigned &= moved
                && (t.status == TaskStatus::Assigned as i32
                    || t.status == TaskStatus::Running as i32);
            all_running &= moved && t.status == TaskStatus::Running as i32;
        }
        if all_assigned && assigned_ms.is_none() {
            assigned_ms = Some(ms_since_kill());
        }
        if all_running {
            return Ok(Moved {
                unhealthy_ms,
                assigned_ms,
                running_ms: ms_since_kill(),
            });
        }
        tokio::time::sleep(FAILOVER_POLL).await;
    }
}

fn step_json(s: &CapacityStep, target: f64) -> Value {
    json!({
        "agents": s.agents,
        "held": s.held(target),
        "configured_heartbeats_per_sec": s.configured_per_sec(),
        "effective_heartbeats_per_sec": s.effective_per_sec(),
        "interval_ms": s.interval_ms,
        "ok": s.ok,
        "errors": s.errors,
        "sample_error": s.sample_error,
        "registered_in_window": s.registered_in_window,
        "seconds": s.seconds,
        "p50_ms": s.p50_ms,
        "p99_ms": s.p99_ms,
        "max_ms": s.max_ms,
        "generator_lag_p99_ms": s.lag_p99_ms,
        "commit_before": s.commit_before,
        "commit_after": s.commit_after,
        "entries_appended": s.entries_appended(),
        "leader_cpu_cores": s.leader_cpu_cores,
        "generator_cpu_cores": s.generator_cpu_cores,
    })
}

fn report(args: &BenchLivenessArgs, steps: &[CapacityStep], failover: Option<&FailoverTiming>) {
    let target = args.p99_target_ms;
    let held_max = steps
        .iter()
        .filter(|s| s.held(target))
        .map(|s| s.agents)
        .max();
    match args.output {
        OutputFormat::Json => {
            let value = json!({
                "p99_target_ms": target,
                "agents_held_max": held_max,
                "capacity": steps.iter().map(|s| step_json(s, target)).collect::<Vec<_>>(),
                "failover": failover.map_or(Value::Null, |f| json!({
                    "tasks": f.tasks,
                    "stale_after_ms": f.stale_after_ms,
                    "since_last_heartbeat_at_kill_ms": f.since_last_heartbeat_ms,
                    "kill_to_unhealthy_and_requeued_ms": f.unhealthy_ms,
                    "kill_to_assigned_ms": f.assigned_ms,
                    "kill_to_running_elsewhere_ms": f.running_ms,
                })),
            });
            outln!(
                "{}",
                serde_json::to_string_pretty(&value).expect("serializable")
            );
        }
        OutputFormat::Table => {
            let mut table = Table::new([
                "AGENTS",
                "INTERVAL MS",
                "CONF HB/S",
                "EFF HB/S",
                "ERRORS",
                "P50 MS",
                "P99 MS",
                "MAX MS",
                "LAG P99 MS",
                "ENTRIES",
                "LEADER CPU",
                "GEN CPU",
                "HELD",
            ]);
            let cores = |c: Option<f64>| c.map_or("-".to_owned(), |c| format!("{c:.2}"));
            for s in steps {
                table.row([
                    s.agents.to_string(),
                    s.interval_ms.to_string(),
                    format!("{:.0}", s.configured_per_sec()),
                    format!("{:.0}", s.effective_per_sec()),
                    s.errors.to_string(),
                    format!("{:.2}", s.p50_ms),
                    format!("{:.2}", s.p99_ms),
                    format!("{:.2}", s.max_ms),
                    format!("{:.2}", s.lag_p99_ms),
                    format!(
                        "{} ({}→{})",
                        s.entries_appended(),
                        s.commit_before,
                        s.commit_after
                    ),
                    cores(s.leader_cpu_cores),
                    cores(s.generator_cpu_cores),
                    if s.held(target) { "yes" } else { "no" }.to_owned(),
                ]);
            }
            if !steps.is_empty() {
                out!("{}", table.render());
                match held_max {
                    Some(n) => outln!("held: {n} agents with heartbeat p99 < {target} ms"),
                    None => outln!("held: no step met heartbeat p99 < {target} ms"),
                }
                for s in steps.iter().filter(|s| s.sample_error.is_some()) {
                    outln!(
                        "{} agents, first error: {}",
                        s.agents,
                        s.sample_error.as_deref().unwrap_or_default()
                    );
                }
            }
            if let Some(f) = failover {
                outln!(
                    "failover: SIGKILL of an agent running {} task(s) to all RUNNING elsewhere: {:.0} ms\n  \
                     kill → UNHEALTHY + requeued: {:.0} ms (stale timeout {} ms, last heartbeat {:.0} ms before the kill, scan every 500 ms)\n  \
                     → ASSIGNED to the survivor: {:.0} ms (placement)\n  \
                     → RUNNING on the survivor: {:.0} ms (its long poll wakes, start ack committed)",
                    f.tasks,
                    f.running_ms,
                    f.unhealthy_ms,
                    f.stale_after_ms,
                    f.since_last_heartbeat_ms,
                    f.assigned_ms - f.unhealthy_ms,
                    f.running_ms - f.assigned_ms,
                );
            }
        }
    }
}

/// This machine's wall clock in unix ms (to age a heartbeat the leader stamped).
fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_levels_are_capped_sorted_and_end_at_the_max() {
        assert_eq!(step_levels(&[500, 1000, 2000], 1500), vec![500, 1000, 1500]);
        assert_eq!(step_levels(&[2000, 500, 0], 2000), vec![500, 2000]);
        assert_eq!(step_levels(&[], 20), vec![20]);
    }

    #[test]
    fn a_step_is_held_only_without_errors_or_entries_and_under_the_target() {
        let step = CapacityStep {
            agents: 10,
            ok: 100,
            errors: 0,
            registered_in_window: 0,
            seconds: 10.0,
            interval_ms: 1000,
            p50_ms: 1.0,
            p99_ms: 5.0,
            max_ms: 9.0,
            lag_p99_ms: 1.0,
            commit_before: 7,
            commit_after: 7,
            leader_cpu_cores: None,
            generator_cpu_cores: None,
            sample_error: None,
        };
        assert!(step.held(50.0));
        assert!(!step.held(4.0));
        assert!(
            !CapacityStep {
                commit_after: 8,
                ..step.clone()
            }
            .held(50.0)
        );
        assert!(!CapacityStep { errors: 1, ..step }.held(50.0));
    }
}
