//! The agent's event loops (docs/architecture.md#agent, docs/lifecycle.md#attempts-and-fencing): heartbeat, long-poll, run,
//! report, and graceful shutdown. tokio only; the agent does not use actix.
//!
//! ```text
//! run ──► heartbeat loop ── first answer = registered ──► poll loop (one long-poll at a time,
//!          (every interval the        │                   only while a slot is free)
//!           leader hands back)        │                        │ assignment
//!                                     ▼                        ▼
//!                          abort lists from heartbeat   attempt task: AckTaskStarted →
//!                          and poll responses cancel    executor on a blocking thread
//!                          the matching attempt         (run timeout) → ReportTaskResult
//! ```
//!
//! Every call about a task carries `(task_id, attempt)`. An attempt the controllers reject as
//! superseded (FAILED_PRECONDITION / NOT_FOUND) or tell us to abort is dropped without
//! a report: its outcome no longer matters (fencing, docs/lifecycle.md#attempts-and-fencing). Reports are retried with
//! the same content across controllers until one is acknowledged, since a retried identical
//! report is a success (docs/lifecycle.md#exactly-once-outcomes).
//!
//! Shutdown: polling stops at once; running attempts get `shutdown_grace` to finish and
//! report; then they are cancelled and reported as retryable failures ("agent shutting
//! down") so the leader requeues them; heartbeats continue until the end so the leader does
//! not declare the node lost meanwhile. A last heartbeat with `leaving` set then tells the
//! leader to mark the node UNHEALTHY at once, so nothing new is placed on a stopped agent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use serde_json::Value;
use sysinfo::System;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::AgentOptions;
use super::executor::{CancelFlag, CancelReason, ExecError, ExecutorRegistry};
use crate::client::{BadAddress, CallError, Client};
use crate::proto::node_service_client::NodeServiceClient;
use crate::proto::{
    AckTaskStartedRequest, HeartbeatRequest, NodeCapacity, PollTaskRequest,
    ReportTaskResultRequest, RunningAttempt, TaskAssignment,
};

/// Heartbeat interval used until the leader hands one back.
pub const HEARTBEAT_INTERVAL_DEFAULT: Duration = Duration::from_secs(1);
/// Bounds applied to the interval the leader hands back (guards against 0 or absurd values).
const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(50);
const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(60);
/// Longest long-poll the API allows.
pub const POLL_TIMEOUT_MAX: Duration = Duration::from_secs(30);
/// Shortest long-poll the agent asks for, so a zero setting cannot spin.
const POLL_TIMEOUT_MIN: Duration = Duration::from_millis(100);
/// Bound on one unary call (heartbeat, ack, report); a long poll gets its wait on top.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the agent waits, at shutdown, for a controller to take its leaving heartbeat.
pub const LEAVING_TIMEOUT: Duration = Duration::from_secs(3);

/// After the shutdown grace ran out and attempts were cancelled, how long their reports may
/// still be retried before the agent exits anyway.
pub const SHUTDOWN_REPORT_WINDOW: Duration = Duration::from_secs(10);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An option is unusable; nothing was contacted.
    #[error("invalid agent option `{field}`: {reason}")]
    InvalidOption {
        /// The [`AgentOptions`] field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A controller refused the registration heartbeat because of the agent's own settings
    /// (INVALID_ARGUMENT naming a field, PERMISSION_DENIED, UNAUTHENTICATED, UNIMPLEMENTED);
    /// retrying would not help. Other refusals are retried.
    #[error("registration rejected by the cluster ({code:?}): {message}")]
    RegistrationRejected {
        /// The gRPC status code.
        code: Code,
        /// The controller's message.
        message: String,
    },
}

impl From<BadAddress> for AgentError {
    fn from(e: BadAddress) -> Self {
        AgentError::InvalidOption {
            field: "servers",
            reason: e.to_string(),
        }
    }
}

/// `(task_id, attempt)`: the unit of fencing.
type AttemptKey = (String, u32);

/// One attempt this agent holds (from assignment until its report is settled).
struct Held {
    /// Seen by the executor.
    flag: CancelFlag,
    /// Stops the attempt's own ack/report retries when it is aborted.
    abort: CancellationToken,
}

struct Agent {
    opts: AgentOptions,
    controllers: Client,
    registry: Arc<ExecutorRegistry>,
    held: Mutex<BTreeMap<AttemptKey, Held>>,
    slots: Arc<Semaphore>,
    /// Number of attempt tasks alive (spawned and not yet settled).
    in_flight: watch::Sender<usize>,
    /// Fires only when the agent gives up on outstanding acks and reports.
    hard_stop: CancellationToken,
}

/// Run the agent until `shutdown` fires, then drain as the module docs say and return.
///
/// Errors: [`AgentError::InvalidOption`] before anything is contacted;
/// [`AgentError::RegistrationRejected`] if the first heartbeat is refused outright.
/// Unreachable controllers are not an error: the agent keeps failing over with backoff
/// until one answers or `shutdown` fires.
pub async fn run(opts: AgentOptions, shutdown: CancellationToken) -> Result<(), AgentError> {
    validate(&opts)?;
    let controllers = Client::for_agent(&opts.servers)?;
    let agent = Arc::new(Agent {
        slots: Arc::new(Semaphore::new(opts.slots as usize)),
        opts,
        controllers,
        registry: Arc::new(ExecutorRegistry::builtin()),
        held: Mutex::new(BTreeMap::new()),
        in_flight: watch::Sender::new(0),
        hard_stop: CancellationToken::new(),
    });
    tracing::info!(
        node_id = %agent.opts.node_id,
        servers = ?agent.opts.servers,
        slots = agent.opts.slots,
        task_types = ?agent.registry.task_types(),
        "agent starting"
    );

    let heartbeats_stop = CancellationToken::new();
    let (registered_tx, registered_rx) = oneshot::channel();
    let heartbeats = tokio::spawn(heartbeat_loop(
        agent.clone(),
        heartbeats_stop.clone(),
        registered_tx,
    ));

    let registration = tokio::select! {
        _ = shutdown.cancelled() => None,
        outcome = registered_rx => outcome.ok(),
    };
    let registered = matches!(registration, Some(Ok(())));
    let result = match registration {
        Some(Err(e)) => Err(e),
        Some(Ok(())) => {
            poll_loop(&agent, &shutdown).await;
            drain(&agent).await;
            Ok(())
        }
        None => Ok(()),
    };
    heartbeats_stop.cancel();
    let _ = heartbeats.await;
    if registered {
        say_leaving(&agent).await;
    }
    tracing::info!(node_id = %agent.opts.node_id, "agent stopped");
    result
}

fn validate(opts: &AgentOptions) -> Result<(), AgentError> {
    let invalid = |field, reason: &str| {
        Err(AgentError::InvalidOption {
            field,
            reason: reason.to_owned(),
        })
    };
    if opts.node_id.trim().is_empty() {
        return invalid("node_id", "must not be empty");
    }
    if opts.servers.is_empty() {
        return invalid("servers", "at least one controller address is needed");
    }
    if opts.slots == 0 {
        return invalid("slots", "must be at least 1");
    }
    Ok(())
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// CPU and memory figures for heartbeats, from sysinfo.
struct Usage {
    system: System,
}

impl Usage {
    fn new() -> Self {
        let mut system = System::new();
        system.refresh_memory();
        // CPU usage is a difference between two refreshes; prime the first one.
        system.refresh_cpu_usage();
        Self { system }
    }

    fn capacity(&self, slots: u32) -> NodeCapacity {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        NodeCapacity {
            slots,
            cpu_cores: cores as u32,
            memory_mb: self.system.total_memory() / (1024 * 1024),
            gpus: 0,
        }
    }

    /// (CPU percent, memory percent), each clamped to 0..=100 as the API requires.
    fn sample(&mut self) -> (f64, f64) {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let cpu = f64::from(self.system.global_cpu_usage());
        let total = self.system.total_memory();
        let memory = if total == 0 {
            0.0
        } else {
            self.system.used_memory() as f64 / total as f64 * 100.0
        };
        let clamp = |x: f64| {
            if x.is_finite() {
                x.clamp(0.0, 100.0)
            } else {
                0.0
            }
        };
        (clamp(cpu), clamp(memory))
    }
}

impl Agent {
    fn running_list(&self) -> Vec<RunningAttempt> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.keys()
            .map(|(task_id, attempt)| RunningAttempt {
                task_id: task_id.clone(),
                attempt: *attempt,
            })
            .collect()
    }

    /// Cancel the listed attempts this agent holds; unknown ones are ignored.
    fn abort(&self, attempts: &[RunningAttempt]) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for a in attempts {
            if let Some(h) = held.get(&(a.task_id.clone(), a.attempt)) {
                tracing::info!(task_id = %a.task_id, attempt = a.attempt, "controller aborted the attempt");
                h.flag.cancel(CancelReason::Aborted);
                h.abort.cancel();
            }
        }
    }

    fn cancel_all(&self, reason: CancelReason) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for h in held.values() {
            h.flag.cancel(reason);
        }
    }

    /// Take `(task_id, attempt)`; `None` if it is already held (a duplicate delivery).
    fn hold(&self, key: &AttemptKey) -> Option<(CancelFlag, CancellationToken)> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains_key(key) {
            return None;
        }
        let h = Held {
            flag: CancelFlag::new(),
            abort: self.hard_stop.child_token(),
        };
        let out = (h.flag.clone(), h.abort.clone());
        held.insert(key.clone(), h);
        Some(out)
    }

    fn release(&self, key: &AttemptKey) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// The heartbeat the agent sends now (not leaving).
fn heartbeat_request(
    agent: &Agent,
    capacity: NodeCapacity,
    cpu_usage: f64,
    memory_usage: f64,
) -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: agent.opts.node_id.clone(),
        address: agent.opts.address.clone(),
        cloud_provider: agent.opts.cloud_provider.clone(),
        region: agent.opts.region.clone(),
        capacity: Some(capacity),
        labels: agent.opts.labels.clone(),
        cpu_usage,
        memory_usage,
        agent_time: unix_ms_now(),
        running: agent.running_list(),
        leaving: false,
    }
}

/// After a clean shutdown (running attempts finished and reported, or cancelled): one last
/// heartbeat with `leaving` set, so the leader stops placing work here now rather than after
/// the stale timeout. Best effort, bounded by [`LEAVING_TIMEOUT`]; if it is lost the node is
/// declared lost the usual way.
async fn say_leaving(agent: &Agent) {
    let usage = Usage::new();
    let capacity = usage.capacity(agent.opts.slots);
    let request = HeartbeatRequest {
        leaving: true,
        ..heartbeat_request(agent, capacity, 0.0, 0.0)
    };
    let stop = CancellationToken::new();
    let call = agent
        .controllers
        .call_until("Heartbeat", &stop, RPC_TIMEOUT, |ch| {
            let request = request.clone();
            async move {
                NodeServiceClient::new(ch)
                    .heartbeat(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        });
    match tokio::time::timeout(LEAVING_TIMEOUT, call).await {
        Ok(Ok(_)) => tracing::info!("told the controllers this node is leaving"),
        Ok(Err(e)) => {
            tracing::warn!(error = ?e, "could not tell the controllers this node is leaving")
        }
        Err(_) => tracing::warn!("no controller answered the leaving heartbeat in time"),
    }
}

async fn heartbeat_loop(
    agent: Arc<Agent>,
    stop: CancellationToken,
    registered: oneshot::Sender<Result<(), AgentError>>,
) {
    let mut usage = Usage::new();
    let capacity = usage.capacity(agent.opts.slots);
    let mut interval = HEARTBEAT_INTERVAL_DEFAULT;
    let mut registered = Some(registered);
    loop {
        let (cpu_usage, memory_usage) = usage.sample();
        let request = heartbeat_request(&agent, capacity, cpu_usage, memory_usage);
        let outcome = agent
            .controllers
            .call_until("Heartbeat", &stop, RPC_TIMEOUT, |ch| {
                let request = request.clone();
                async move {
                    NodeServiceClient::new(ch)
                        .heartbeat(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        match outcome {
            Ok(response) => {
                if response.heartbeat_interval_ms > 0 {
                    interval = Duration::from_millis(response.heartbeat_interval_ms)
                        .clamp(HEARTBEAT_INTERVAL_MIN, HEARTBEAT_INTERVAL_MAX);
                }
                agent.abort(&response.abort);
                if let Some(leader) = &response.leader {
                    agent.controllers.follow_leader(&leader.leader_address);
                }
                if let Some(tx) = registered.take() {
                    tracing::info!(
                        node_id = %agent.opts.node_id,
                        controller = %agent.controllers.current(),
                        heartbeat_interval_ms = interval.as_millis() as u64,
                        "registered with the cluster"
                    );
                    let _ = tx.send(Ok(()));
                }
            }
            Err(CallError::Cancelled) => return,
            Err(CallError::Rejected(status)) => {
                // Only a refusal of the agent's own settings is final; anything else (a
                // proposal that raced a leader change, say) is retried at the next beat.
                if registered.is_some() && registration_is_refused(status.code()) {
                    if let Some(tx) = registered.take() {
                        let _ = tx.send(Err(AgentError::RegistrationRejected {
                            code: status.code(),
                            message: status.message().to_owned(),
                        }));
                    }
                    return;
                }
                tracing::warn!(code = ?status.code(), message = status.message(), "heartbeat rejected");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Whether a rejected first heartbeat means the agent's settings are unacceptable, so
/// retrying cannot help.
fn registration_is_refused(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
    )
}

/// Long-poll while a slot is free, until `shutdown` fires.
async fn poll_loop(agent: &Arc<Agent>, shutdown: &CancellationToken) {
    let wait = agent
        .opts
        .poll_timeout
        .clamp(POLL_TIMEOUT_MIN, POLL_TIMEOUT_MAX);
    // Paces retries after a definite rejection (a failover error is paced by Controllers).
    let backoff_builder = ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times();
    let mut rejected_backoff = backoff_builder.build();
    // Consecutive polls that came back empty well before their wait (a redirect after a
    // leadership change, or a server that does not long-poll). The first re-poll goes out at
    // once so agents reach a new leader immediately (docs/lifecycle.md#failover); later ones are paced so a
    // misbehaving server is not polled in a tight loop.
    let mut early_empty_streak: u32 = 0;
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            permit = agent.slots.clone().acquire_owned() => permit.expect("the slot semaphore is never closed"),
        };
        let mut permits = vec![first];
        while let Ok(p) = agent.slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        let request = PollTaskRequest {
            node_id: agent.opts.node_id.clone(),
            wait_ms: wait.as_millis() as u64,
            free_slots: permits.len() as u32,
        };
        let polled_at = Instant::now();
        let outcome = agent
            .controllers
            .call_until("PollTask", shutdown, wait + RPC_TIMEOUT, |ch| {
                let mut request = tonic::Request::new(request.clone());
                request.set_timeout(wait + RPC_TIMEOUT);
                async move {
                    NodeServiceClient::new(ch)
                        .poll_task(request)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        match outcome {
            Ok(response) => {
                rejected_backoff = backoff_builder.build();
                agent.abort(&response.abort);
                if let Some(leader) = &response.leader {
                    agent.controllers.follow_leader(&leader.leader_address);
                }
                let mut started = 0;
                for assignment in response.assignments {
                    let permit = permits.pop();
                    if permit.is_none() {
                        tracing::warn!(task_id = %assignment.task_id, "more assignments than free slots; running it anyway");
                    }
                    started += usize::from(start_attempt(agent, assignment, permit));
                }
                // Only duplicates of attempts we already hold (their start is still being
                // acknowledged) count as nothing new.
                let early_empty = started == 0 && polled_at.elapsed() < wait / 2;
                early_empty_streak = if early_empty {
                    early_empty_streak + 1
                } else {
                    0
                };
                let pause = early_empty_pause(early_empty_streak);
                drop(permits);
                if !pause.is_zero() {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            Err(CallError::Cancelled) => return,
            Err(CallError::Rejected(status)) => {
                let delay = rejected_backoff.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(code = ?status.code(), message = status.message(), retry_in_ms = delay.as_millis() as u64, "poll rejected");
                drop(permits);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Pause before re-polling after `streak` consecutive early empty polls: none for the first,
/// then 20 ms doubling up to 1 s.
fn early_empty_pause(streak: u32) -> Duration {
    match streak {
        0 | 1 => Duration::ZERO,
        k => Duration::from_millis(10u64 << (k - 1).min(7)).min(Duration::from_secs(1)),
    }
}

/// Start one attempt in its own task; false if it is a duplicate of one already held.
fn start_attempt(
    agent: &Arc<Agent>,
    assignment: TaskAssignment,
    permit: Option<OwnedSemaphorePermit>,
) -> bool {
    let key = (assignment.task_id.clone(), assignment.attempt);
    let Some((flag, abort)) = agent.hold(&key) else {
        tracing::debug!(task_id = %key.0, attempt = key.1, "assignment already held; ignoring the duplicate");
        return false;
    };
    agent.in_flight.send_modify(|n| *n += 1);
    let guard = AttemptGuard {
        agent: agent.clone(),
        key,
        _permit: permit,
    };
    tokio::spawn(async move {
        run_attempt(&guard.agent, assignment, flag, &abort).await;
        drop(guard);
    });
    true
}

/// Releases an attempt's hold, slot and in-flight count when its task ends, even by panic.
struct AttemptGuard {
    agent: Arc<Agent>,
    key: AttemptKey,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.agent.release(&self.key);
        self.agent.in_flight.send_modify(|n| *n -= 1);
    }
}

/// Ack, execute, report one attempt. Returns when its outcome is settled.
async fn run_attempt(
    agent: &Agent,
    assignment: TaskAssignment,
    flag: CancelFlag,
    abort: &CancellationToken,
) {
    let TaskAssignment {
        task_id,
        attempt,
        task_type,
        task_data,
        run_timeout_ms,
    } = assignment;
    let node_id = agent.opts.node_id.clone();

    let ack = AckTaskStartedRequest {
        task_id: task_id.clone(),
        attempt,
        node_id: node_id.clone(),
    };
    let acked = agent
        .controllers
        .call_until("AckTaskStarted", abort, RPC_TIMEOUT, |ch| {
            let ack = ack.clone();
            async move {
                NodeServiceClient::new(ch)
                    .ack_task_started(ack)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await;
    match acked {
        Ok(response) if response.proceed => {}
        Ok(_) => {
            tracing::info!(%task_id, attempt, "task was cancelled before it started; not running it");
            return;
        }
        Err(CallError::Rejected(status)) => {
            tracing::info!(%task_id, attempt, code = ?status.code(), message = status.message(), "start not acknowledged (superseded); not running it");
            return;
        }
        Err(CallError::Cancelled) => {
            tracing::info!(%task_id, attempt, "attempt aborted before it started");
            return;
        }
    }

    tracing::info!(%task_id, attempt, %task_type, "task started");
    let started = Instant::now();
    let outcome = execute(agent, &task_type, task_data, &flag, run_timeout_ms).await;
    let seconds = started.elapsed().as_secs_f64();
    if flag.reason() == Some(CancelReason::Aborted) {
        tracing::info!(%task_id, attempt, seconds, "task aborted by the controller; its outcome is dropped");
        return;
    }

    let mut report = ReportTaskResultRequest {
        task_id: task_id.clone(),
        attempt,
        node_id,
        ..Default::default()
    };
    match &outcome {
        Ok(value) => {
            report.success = true;
            report.result_data = value.to_string();
        }
        Err(e) => {
            report.error = match e {
                ExecError::Cancelled(CancelReason::RunTimeout) => {
                    format!("run timeout of {run_timeout_ms} ms exceeded")
                }
                other => other.to_string(),
            };
            report.retryable = e.retryable();
        }
    }
    send_report(agent, report, abort, seconds).await;
}

/// Run the executor on a blocking thread, enforcing the run timeout through the cancel flag.
async fn execute(
    agent: &Agent,
    task_type: &str,
    task_data: String,
    flag: &CancelFlag,
    run_timeout_ms: u64,
) -> Result<Value, ExecError> {
    let registry = agent.registry.clone();
    let task_type_owned = task_type.to_owned();
    let thread_flag = flag.clone();
    let mut handle = tokio::task::spawn_blocking(move || {
        registry.run_json(&task_type_owned, &task_data, &thread_flag)
    });
    let joined = if run_timeout_ms == 0 {
        handle.await
    } else {
        tokio::select! {
            joined = &mut handle => joined,
            _ = tokio::time::sleep(Duration::from_millis(run_timeout_ms)) => {
                flag.cancel(CancelReason::RunTimeout);
                handle.await
            }
        }
    };
    // The registry catches panics, so a join error means the thread itself was lost.
    joined.unwrap_or_else(|e| Err(ExecError::Panicked(format!("executor thread failed: {e}"))))
}

/// Send `report` until acknowledged; a definite rejection drops it (the attempt is
/// superseded or the task is gone).
async fn send_report(
    agent: &Agent,
    mut report: ReportTaskResultRequest,
    abort: &CancellationToken,
    seconds: f64,
) {
    loop {
        let outcome = agent
            .controllers
            .call_until("ReportTaskResult", abort, RPC_TIMEOUT, |ch| {
                let report = report.clone();
                async move {
                    NodeServiceClient::new(ch)
                        .report_task_result(report)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await;
        let (task_id, attempt) = (&report.task_id, report.attempt);
        match outcome {
            Ok(response) => {
                tracing::info!(
                    %task_id,
                    attempt,
                    seconds,
                    success = report.success,
                    retryable = report.retryable,
                    error = %report.error,
                    duplicate = response.duplicate,
                    "task finished and reported"
                );
                return;
            }
            Err(CallError::Cancelled) => {
                tracing::warn!(%task_id, attempt, seconds, "gave up reporting the task (aborted or agent stopping)");
                return;
            }
            Err(CallError::Rejected(status))
                if status.code() == Code::ResourceExhausted && report.success =>
            {
                // The result is too big for the API: report that instead of losing the attempt.
                tracing::warn!(%task_id, attempt, bytes = report.result_data.len(), "result too large; reporting a failure");
                report.error = format!(
                    "result_data of {} bytes was refused: {}",
                    report.result_data.len(),
                    status.message()
                );
                report.success = false;
                report.retryable = false;
                report.result_data.clear();
            }
            Err(CallError::Rejected(status)) => {
                tracing::warn!(%task_id, attempt, seconds, code = ?status.code(), message = status.message(), "report rejected; dropping it (attempt superseded or task gone)");
                return;
            }
        }
    }
}

/// Let held attempts finish within the grace period, then cancel and report them.
async fn drain(agent: &Agent) {
    let grace = agent.opts.shutdown_grace;
    let held = agent.running_list().len();
    tracing::info!(
        held,
        grace_ms = grace.as_millis() as u64,
        "shutting down: no new tasks; waiting for running ones"
    );
    tokio::select! {
        _ = all_settled(agent) => return,
        _ = tokio::time::sleep(grace) => {}
    }
    tracing::warn!(
        held = agent.running_list().len(),
        "shutdown grace ran out; cancelling running tasks"
    );
    agent.cancel_all(CancelReason::Shutdown);
    tokio::select! {
        _ = all_settled(agent) => return,
        _ = tokio::time::sleep(SHUTDOWN_REPORT_WINDOW) => {}
    }
    tracing::warn!("reports still unacknowledged; exiting without them");
    agent.hard_stop.cancel();
    all_settled(agent).await;
}

/// Resolves once no attempt task is alive.
async fn all_settled(agent: &Agent) {
    let mut in_flight = agent.in_flight.subscribe();
    // The sender lives in `agent`, so the channel cannot close while we wait.
    let _ = in_flight.wait_for(|n| *n == 0).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_empty_polls_are_paced_after_the_first() {
        assert_eq!(early_empty_pause(0), Duration::ZERO);
        assert_eq!(early_empty_pause(1), Duration::ZERO);
        assert_eq!(early_empty_pause(2), Duration::from_millis(20));
        assert_eq!(early_empty_pause(3), Duration::from_millis(40));
        assert_eq!(early_empty_pause(50), Duration::from_secs(1));
    }
}
