//! The agent runtime against fake controllers: an in-process tonic `NodeService` on
//! 127.0.0.1:0 that records every call on a channel and answers from a script the test
//! edits. Each test drives the agent through one behaviour of docs/architecture.md#agent / docs/lifecycle.md and waits
//! for the calls it expects with a deadline (never a fixed sleep).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mlcp::agent::{self, AgentOptions, verify_matmul};
use mlcp::proto::node_service_server::{NodeService, NodeServiceServer};
use mlcp::proto::{
    AckTaskStartedRequest, AckTaskStartedResponse, HeartbeatRequest, HeartbeatResponse, LeaderHint,
    PollTaskRequest, PollTaskResponse, ReportTaskResultRequest, ReportTaskResultResponse,
    RunningAttempt, TaskAssignment,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status};

/// Upper bound for any single expectation; generous for a loaded 2-core CI machine.
const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Event {
    Heartbeat(HeartbeatRequest),
    Poll(PollTaskRequest),
    Ack(AckTaskStartedRequest),
    Report(ReportTaskResultRequest),
}

#[derive(Default)]
struct Script {
    assignments: VecDeque<TaskAssignment>,
    abort_on_heartbeat: Vec<RunningAttempt>,
    abort_on_poll: Vec<RunningAttempt>,
    report_error: Option<Code>,
    /// This many reports fail with UNAVAILABLE (no hint) before reports are accepted.
    reports_unavailable: u32,
    /// If set, heartbeats fail with this code.
    heartbeat_error: Option<Code>,
    /// If set, start acknowledgements fail with this code.
    ack_error: Option<Code>,
    /// If set, every call fails with UNAVAILABLE and this `x-mlcp-leader` hint.
    redirect_to: Option<String>,
}

#[derive(Clone)]
struct Fake {
    events: mpsc::UnboundedSender<Event>,
    script: Arc<Mutex<Script>>,
    wake: Arc<Notify>,
}

impl Fake {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    fn assign(&self, task_id: &str, attempt: u32, task_type: &str, data: Value, timeout_ms: u64) {
        self.script().assignments.push_back(TaskAssignment {
            task_id: task_id.into(),
            attempt,
            task_type: task_type.into(),
            task_data: data.to_string(),
            run_timeout_ms: timeout_ms,
        });
        self.wake.notify_waiters();
    }

    fn redirected(&self) -> Result<(), Status> {
        match &self.script().redirect_to {
            None => Ok(()),
            Some(leader) => {
                let mut status = Status::unavailable("not the leader");
                status.metadata_mut().insert(
                    "x-mlcp-leader",
                    MetadataValue::try_from(format!("2@{leader}")).unwrap(),
                );
                Err(status)
            }
        }
    }

    fn record(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

#[tonic::async_trait]
impl NodeService for Fake {
    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        self.redirected()?;
        self.record(Event::Heartbeat(request.into_inner()));
        if let Some(code) = self.script().heartbeat_error {
            return Err(Status::new(code, "node_id: refused by the fake"));
        }
        let abort = std::mem::take(&mut self.script().abort_on_heartbeat);
        Ok(Response::new(HeartbeatResponse {
            heartbeat_interval_ms: 50,
            abort,
            leader: Some(LeaderHint::default()),
            registered: true,
        }))
    }

    async fn poll_task(
        &self,
        request: Request<PollTaskRequest>,
    ) -> Result<Response<PollTaskResponse>, Status> {
        self.redirected()?;
        let request = request.into_inner();
        self.record(Event::Poll(request.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms);
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, abort): (Vec<_>, _) = {
                let mut script = self.script();
                let take = script.assignments.len().min(request.free_slots as usize);
                let abort = std::mem::take(&mut script.abort_on_poll);
                (script.assignments.drain(..take).collect(), abort)
            };
            if !batch.is_empty() || !abort.is_empty() {
                return Ok(Response::new(PollTaskResponse {
                    assignments: batch,
                    abort,
                    leader: None,
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(PollTaskResponse::default()));
            }
        }
    }

    async fn ack_task_started(
        &self,
        request: Request<AckTaskStartedRequest>,
    ) -> Result<Response<AckTaskStartedResponse>, Status> {
        self.redirected()?;
        self.record(Event::Ack(request.into_inner()));
        if let Some(code) = self.script().ack_error {
            return Err(Status::new(code, "attempt superseded"));
        }
        Ok(Response::new(AckTaskStartedResponse { proceed: true }))
    }

    async fn report_task_result(
        &self,
        request: Request<ReportTaskResultRequest>,
    ) -> Result<Response<ReportTaskResultResponse>, Status> {
        self.redirected()?;
        self.record(Event::Report(request.into_inner()));
        let mut script = self.script();
        if script.reports_unavailable > 0 {
            script.reports_unavailable -= 1;
            return Err(Status::unavailable("leader is busy"));
        }
        match script.report_error {
            Some(code) => Err(Status::new(code, "attempt superseded")),
            None => Ok(Response::new(ReportTaskResultResponse::default())),
        }
    }
}

struct Controller {
    fake: Fake,
    events: mpsc::UnboundedReceiver<Event>,
    /// Every event taken off the channel so far, in order.
    seen: Vec<Event>,
    address: String,
    _server: JoinHandle<()>,
}

impl Controller {
    async fn start() -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let fake = Fake {
            events: tx,
            script: Arc::default(),
            wake: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let service = NodeServiceServer::new(fake.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self {
            fake,
            events,
            seen: Vec::new(),
            address,
            _server: server,
        }
    }

    /// The first event (after those already seen) for which `pick` returns `Some`.
    async fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("fake server gone");
                self.seen.push(event.clone());
                if let Some(found) = pick(&event) {
                    return found;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    async fn report_for(&mut self, task_id: &str) -> ReportTaskResultRequest {
        self.expect(&format!("the report of {task_id}"), |e| match e {
            Event::Report(r) if r.task_id == task_id => Some(r.clone()),
            _ => None,
        })
        .await
    }

    async fn ack_for(&mut self, task_id: &str) -> AckTaskStartedRequest {
        self.expect(&format!("the start ack of {task_id}"), |e| match e {
            Event::Ack(a) if a.task_id == task_id => Some(a.clone()),
            _ => None,
        })
        .await
    }

    /// Wait for a heartbeat whose running list does or does not hold `(task_id, attempt)`.
    /// When waiting for its absence, the first heartbeat is skipped: it may have been built
    /// before the agent took the attempt and only arrived after the last event we saw.
    /// Heartbeats are sequential, so the next one was built after that event.
    async fn heartbeat_where_running(&mut self, task_id: &str, attempt: u32, held: bool) {
        if !held {
            self.expect("a heartbeat", |e| {
                matches!(e, Event::Heartbeat(_)).then_some(())
            })
            .await;
        }
        self.expect("a heartbeat with the expected running list", |e| match e {
            Event::Heartbeat(h) => {
                let has = h
                    .running
                    .iter()
                    .any(|r| r.task_id == task_id && r.attempt == attempt);
                (has == held).then_some(())
            }
            _ => None,
        })
        .await
    }

    fn reports_seen(&self, task_id: &str) -> usize {
        self.seen
            .iter()
            .filter(|e| matches!(e, Event::Report(r) if r.task_id == task_id))
            .count()
    }
}

struct RunningAgent {
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), agent::AgentError>>,
}

impl RunningAgent {
    fn start(opts: AgentOptions) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agent::run(opts, shutdown.clone()));
        Self { shutdown, handle }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("agent did not stop in time")
            .expect("agent task panicked")
            .expect("agent returned an error");
    }
}

fn options(servers: Vec<String>) -> AgentOptions {
    AgentOptions {
        node_id: "worker-1".into(),
        servers,
        address: "10.1.2.3:7000".into(),
        cloud_provider: "aws".into(),
        region: "eu-west-1".into(),
        slots: 2,
        labels: BTreeMap::from([("gpu".to_owned(), "none".to_owned())]),
        poll_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_then_runs_a_matmul_and_reports_a_verifiable_result() {
    let mut controller = Controller::start().await;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    let first = controller
        .expect("the registration heartbeat", |e| match e {
            Event::Heartbeat(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert_eq!(first.node_id, "worker-1");
    assert_eq!(first.address, "10.1.2.3:7000");
    assert_eq!(first.cloud_provider, "aws");
    assert_eq!(first.region, "eu-west-1");
    assert_eq!(first.labels.get("gpu").map(String::as_str), Some("none"));
    let capacity = first.capacity.expect("capacity");
    assert_eq!(capacity.slots, 2);
    assert!(capacity.cpu_cores >= 1);
    assert!(capacity.memory_mb > 0);
    assert!((0.0..=100.0).contains(&first.cpu_usage));
    assert!(first.memory_usage > 0.0 && first.memory_usage <= 100.0);
    assert!(first.agent_time > 0);
    assert!(first.running.is_empty());

    let poll = controller
        .expect("a poll", |e| match e {
            Event::Poll(p) => Some(p.clone()),
            _ => None,
        })
        .await;
    assert_eq!(poll.node_id, "worker-1");
    assert_eq!(poll.free_slots, 2);
    assert_eq!(poll.wait_ms, 5000);

    let data = json!({"n": 96, "dtype": "f32", "iterations": 2, "seed": 11});
    controller
        .fake
        .assign("t-matmul", 1, "matmul", data.clone(), 0);
    let ack = controller.ack_for("t-matmul").await;
    assert_eq!((ack.attempt, ack.node_id.as_str()), (1, "worker-1"));
    let report = controller.report_for("t-matmul").await;
    assert!(report.success, "{}", report.error);
    assert_eq!((report.attempt, report.node_id.as_str()), (1, "worker-1"));
    let result: Value = serde_json::from_str(&report.result_data).unwrap();
    verify_matmul(&data, &result).expect("the reported result verifies");

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_in_a_heartbeat_cancels_the_running_sleep() {
    let mut controller = Controller::start().await;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller
        .fake
        .assign("t-sleep", 3, "sleep", json!({"ms": 600_000}), 0);
    controller.ack_for("t-sleep").await;
    controller.heartbeat_where_running("t-sleep", 3, true).await;
    controller.fake.script().abort_on_heartbeat = vec![RunningAttempt {
        task_id: "t-sleep".into(),
        attempt: 3,
    }];
    // The ten-minute sleep leaves the running list only because it was cancelled...
    controller
        .heartbeat_where_running("t-sleep", 3, false)
        .await;
    // ...and an aborted (superseded) attempt is never reported.
    assert_eq!(controller.reports_seen("t-sleep"), 0);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_over_from_a_dead_address_to_a_live_one() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
        // Dropped here: connections to it are refused.
    };
    let mut live = Controller::start().await;
    let agent = RunningAgent::start(options(vec![dead, live.address.clone()]));

    live.expect("a heartbeat at the live controller", |e| {
        matches!(e, Event::Heartbeat(_)).then_some(())
    })
    .await;
    live.fake.assign("t-echo", 1, "echo", json!({"x": 1}), 0);
    let report = live.report_for("t-echo").await;
    assert!(report.success);
    assert_eq!(
        serde_json::from_str::<Value>(&report.result_data).unwrap(),
        json!({"x": 1})
    );

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_leader_hint_to_a_controller_it_was_not_given() {
    let follower = Controller::start().await;
    let mut leader = Controller::start().await;
    follower.fake.script().redirect_to = Some(leader.address.clone());
    let agent = RunningAgent::start(options(vec![follower.address.clone()]));

    let heartbeat = leader
        .expect("a heartbeat at the hinted leader", |e| match e {
            Event::Heartbeat(h) => Some(h.clone()),
            _ => None,
        })
        .await;
    assert_eq!(heartbeat.node_id, "worker-1");

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_report_is_dropped_not_retried() {
    let mut controller = Controller::start().await;
    controller.fake.script().report_error = Some(Code::FailedPrecondition);
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller.fake.assign("t-old", 1, "echo", json!("hi"), 0);
    controller.report_for("t-old").await;
    // Once the attempt has left the running list the agent has settled it; a retry would
    // have been sent before that.
    controller.heartbeat_where_running("t-old", 1, false).await;
    assert_eq!(controller.reports_seen("t-old"), 1);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_timeout_stops_the_task_and_reports_a_retryable_failure() {
    let mut controller = Controller::start().await;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller
        .fake
        .assign("t-slow", 2, "sleep", json!({"ms": 600_000}), 100);
    let report = controller.report_for("t-slow").await;
    assert!(!report.success);
    assert!(report.retryable);
    assert!(
        report.error.contains("run timeout of 100 ms"),
        "{}",
        report.error
    );

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_input_is_reported_failed_and_the_agent_keeps_working() {
    let mut controller = Controller::start().await;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller.fake.assign("t-unknown", 1, "fft", json!({}), 0);
    let report = controller.report_for("t-unknown").await;
    assert!(!report.success && !report.retryable);
    assert!(
        report.error.contains("unknown task type `fft`"),
        "{}",
        report.error
    );

    controller
        .fake
        .assign("t-bad", 1, "matmul", json!({"n": 0}), 0);
    let report = controller.report_for("t-bad").await;
    assert!(!report.success && !report.retryable);
    assert!(report.error.contains("`n`"), "{}", report.error);

    controller.fake.assign("t-ok", 1, "echo", json!(7), 0);
    assert!(controller.report_for("t-ok").await.success);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_running_tasks_as_retryable_failures() {
    let mut controller = Controller::start().await;
    let mut opts = options(vec![controller.address.clone()]);
    opts.shutdown_grace = Duration::from_millis(100);
    let agent = RunningAgent::start(opts);

    controller
        .fake
        .assign("t-long", 1, "sleep", json!({"ms": 600_000}), 0);
    controller.ack_for("t-long").await;
    agent.shutdown.cancel();
    let report = controller.report_for("t-long").await;
    assert!(!report.success);
    assert!(report.retryable);
    assert!(
        report.error.contains("agent shutting down"),
        "{}",
        report.error
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_refused_by_name() {
    let mut opts = options(vec![]);
    let err = agent::run(opts.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`servers`"), "{err}");
    opts.servers = vec!["127.0.0.1:1".into()];
    opts.slots = 0;
    let err = agent::run(opts, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`slots`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_is_retried_with_the_same_content_until_acknowledged() {
    let mut controller = Controller::start().await;
    controller.fake.script().reports_unavailable = 2;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller
        .fake
        .assign("t-retry", 4, "echo", json!({"k": "v"}), 0);
    let first = controller.report_for("t-retry").await;
    let second = controller.report_for("t-retry").await;
    let third = controller.report_for("t-retry").await;
    assert_eq!(first, second);
    assert_eq!(second, third);
    assert!(third.success && third.attempt == 4);
    controller
        .heartbeat_where_running("t-retry", 4, false)
        .await;
    assert_eq!(controller.reports_seen("t-retry"), 3);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_the_controller_refuses_is_not_run() {
    let mut controller = Controller::start().await;
    controller.fake.script().ack_error = Some(Code::FailedPrecondition);
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller
        .fake
        .assign("t-stale", 1, "sleep", json!({"ms": 600_000}), 0);
    controller.ack_for("t-stale").await;
    // Had the ten-minute sleep started, the attempt would stay in the running list.
    controller
        .heartbeat_where_running("t-stale", 1, false)
        .await;
    assert_eq!(controller.reports_seen("t-stale"), 0);

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_refused_for_bad_settings_stops_the_agent() {
    let controller = Controller::start().await;
    controller.fake.script().heartbeat_error = Some(Code::InvalidArgument);
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));
    let err = tokio::time::timeout(DEADLINE, agent.handle)
        .await
        .expect("agent stops on its own")
        .expect("no panic")
        .unwrap_err();
    assert!(
        err.to_string().contains("node_id: refused by the fake"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_refused_for_a_passing_reason_is_retried() {
    let mut controller = Controller::start().await;
    controller.fake.script().heartbeat_error = Some(Code::FailedPrecondition);
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));
    for _ in 0..2 {
        controller
            .expect("a heartbeat", |e| {
                matches!(e, Event::Heartbeat(_)).then_some(())
            })
            .await;
    }
    controller.fake.script().heartbeat_error = None;
    controller.fake.assign("t-after", 1, "echo", json!(1), 0);
    assert!(controller.report_for("t-after").await.success);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_in_a_poll_response_cancels_the_running_sleep() {
    let mut controller = Controller::start().await;
    let agent = RunningAgent::start(options(vec![controller.address.clone()]));

    controller
        .fake
        .assign("t-polled", 5, "sleep", json!({"ms": 600_000}), 0);
    controller
        .heartbeat_where_running("t-polled", 5, true)
        .await;
    controller.fake.script().abort_on_poll = vec![RunningAttempt {
        task_id: "t-polled".into(),
        attempt: 5,
    }];
    controller.fake.wake.notify_waiters();
    controller
        .heartbeat_where_running("t-polled", 5, false)
        .await;
    assert_eq!(controller.reports_seen("t-polled"), 0);

    agent.stop().await;
}
