//! One controller in this process (`start_server` on loopback port 0, a temp data dir) driven
//! through its real gRPC API by a tonic client playing both the user and a fake agent.
//!
//! What it shows: the task lifecycle end to end (submit → heartbeat registers the node →
//! long poll hands out the assignment → start acknowledged → report committed → COMPLETED),
//! exactly-once reports (an identical retry is OK and marked duplicate), fencing (a report
//! for a superseded attempt or from the wrong node is FAILED_PRECONDITION), the bad inputs
//! of docs/architecture.md#bad-input answered with the right codes, RESOURCE_EXHAUSTED for an oversized message,
//! the HTTP status page, and a clean shutdown. Waits are polls with deadlines, never sleeps.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use mlcp::controller::{ServerOptions, start_server};
use mlcp::proto::cluster_service_client::ClusterServiceClient;
use mlcp::proto::node_service_client::NodeServiceClient;
use mlcp::proto::task_service_client::TaskServiceClient;
use mlcp::proto::{
    AckTaskStartedRequest, AddMemberRequest, GetClusterStatusRequest, GetTaskRequest,
    HeartbeatRequest, ListNodesRequest, ListTasksRequest, NodeCapacity, PollTaskRequest,
    ReportTaskResultRequest, RetryPolicy, RunningAttempt, SubmitTaskRequest, Task, TaskStatus,
    TransferLeaderRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(20);

struct Clients {
    tasks: TaskServiceClient<Channel>,
    nodes: NodeServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
}

async fn connect(addr: std::net::SocketAddr) -> Clients {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    Clients {
        tasks: TaskServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
        nodes: NodeServiceClient::new(channel.clone()),
        cluster: ClusterServiceClient::new(channel),
    }
}

async fn wait_for_leader(c: &mut Clients) -> u64 {
    let start = Instant::now();
    loop {
        if let Ok(s) = c
            .cluster
            .get_cluster_status(GetClusterStatusRequest {})
            .await
        {
            let s = s.into_inner();
            if s.leader_id != 0 && s.leader_id == s.self_id {
                return s.leader_id;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no leader within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(node: &str, running: Vec<RunningAttempt>) -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: node.into(),
        address: "127.0.0.1:7000".into(),
        cloud_provider: "onprem".into(),
        region: "lab".into(),
        capacity: Some(NodeCapacity {
            slots: 4,
            cpu_cores: 2,
            memory_mb: 1024,
            gpus: 0,
        }),
        cpu_usage: 10.0,
        memory_usage: 20.0,
        running,
        ..Default::default()
    }
}

fn submit(data: &str) -> SubmitTaskRequest {
    SubmitTaskRequest {
        task_type: "echo".into(),
        task_data: data.into(),
        max_attempts: 3,
        retry_policy: Some(RetryPolicy {
            initial_backoff_ms: 1,
            max_backoff_ms: 1,
            backoff_multiplier: 1.0,
            jitter: 0.0,
        }),
        ..Default::default()
    }
}

/// Long-poll until an assignment for `task_id` arrives (bounded by `DEADLINE`).
async fn poll_for(c: &mut Clients, node: &str, task_id: &str) -> u32 {
    let start = Instant::now();
    loop {
        let resp = c
            .nodes
            .poll_task(PollTaskRequest {
                node_id: node.into(),
                wait_ms: 2000,
                free_slots: 0,
            })
            .await
            .expect("poll")
            .into_inner();
        if let Some(a) = resp.assignments.iter().find(|a| a.task_id == task_id) {
            return a.attempt;
        }
        assert!(start.elapsed() < DEADLINE, "no assignment for {task_id}");
    }
}

async fn get(c: &mut Clients, task_id: &str) -> Task {
    c.tasks
        .get_task(GetTaskRequest {
            task_id: task_id.into(),
            consistent: true,
        })
        .await
        .expect("get")
        .into_inner()
        .task
        .expect("task")
}

fn report(task_id: &str, attempt: u32, node: &str, success: bool) -> ReportTaskResultRequest {
    ReportTaskResultRequest {
        task_id: task_id.into(),
        attempt,
        node_id: node.into(),
        success,
        result_data: if success {
            r#"{"echo": 1}"#.into()
        } else {
            String::new()
        },
        error: if success {
            String::new()
        } else {
            "flaky".into()
        },
        retryable: !success,
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn single_controller_runs_the_task_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: dir.path().join("data"),
        tick: Duration::from_millis(10),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).expect("controller starts");
    let grpc_addr = server.grpc_addr;
    let http_addr = server.http_addr.unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(grpc_addr).await;
        wait_for_leader(&mut c).await;

        // Submit, then the fake agent registers and picks the task up.
        let task = c
            .tasks
            .submit_task(submit(r#"{"n": 1}"#))
            .await
            .unwrap()
            .into_inner();
        let task = task.task.unwrap();
        assert_eq!(task.status, TaskStatus::Pending as i32);
        let hb = c
            .nodes
            .heartbeat(heartbeat("agent-1", vec![]))
            .await
            .unwrap()
            .into_inner();
        assert!(hb.registered, "first heartbeat registers the node");
        assert!(hb.heartbeat_interval_ms > 0);
        let hb = c
            .nodes
            .heartbeat(heartbeat("agent-1", vec![]))
            .await
            .unwrap()
            .into_inner();
        assert!(!hb.registered, "an unchanged heartbeat writes nothing");

        let attempt = poll_for(&mut c, "agent-1", &task.task_id).await;
        assert_eq!(attempt, 1);
        let ack = c
            .nodes
            .ack_task_started(AckTaskStartedRequest {
                task_id: task.task_id.clone(),
                attempt,
                node_id: "agent-1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ack.proceed);
        assert_eq!(
            get(&mut c, &task.task_id).await.status,
            TaskStatus::Running as i32
        );

        let done = c
            .nodes
            .report_task_result(report(&task.task_id, attempt, "agent-1", true))
            .await
            .unwrap()
            .into_inner();
        assert!(!done.duplicate);
        assert_eq!(done.task.unwrap().status, TaskStatus::Completed as i32);
        let again = c
            .nodes
            .report_task_result(report(&task.task_id, attempt, "agent-1", true))
            .await
            .expect("an identical retried report succeeds")
            .into_inner();
        assert!(again.duplicate);
        let t = get(&mut c, &task.task_id).await;
        assert_eq!(t.status, TaskStatus::Completed as i32);
        assert_eq!(t.result_data, r#"{"echo": 1}"#);

        // Fencing: attempt 1 fails (retryable) and is superseded by attempt 2.
        let t2 = c
            .tasks
            .submit_task(submit(r#"{"n": 2}"#))
            .await
            .unwrap()
            .into_inner();
        let t2 = t2.task.unwrap();
        let a1 = poll_for(&mut c, "agent-1", &t2.task_id).await;
        c.nodes
            .report_task_result(report(&t2.task_id, a1, "agent-1", false))
            .await
            .unwrap();
        let a2 = poll_for(&mut c, "agent-1", &t2.task_id).await;
        assert_eq!(a2, a1 + 1, "attempt numbers only grow");
        let stale = c
            .nodes
            .report_task_result(report(&t2.task_id, a1, "agent-1", true))
            .await
            .expect_err("superseded attempt refused");
        assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
        let wrong = c
            .nodes
            .report_task_result(report(&t2.task_id, a2, "agent-2", true))
            .await
            .expect_err("wrong node refused");
        assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
        // The agent is told to abort the superseded attempt on its next heartbeat.
        let running = vec![
            RunningAttempt {
                task_id: t2.task_id.clone(),
                attempt: a1,
            },
            RunningAttempt {
                task_id: t2.task_id.clone(),
                attempt: a2,
            },
        ];
        let hb = c
            .nodes
            .heartbeat(heartbeat("agent-1", running))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            hb.abort,
            vec![RunningAttempt {
                task_id: t2.task_id.clone(),
                attempt: a1
            }]
        );
        c.nodes
            .report_task_result(report(&t2.task_id, a2, "agent-1", true))
            .await
            .unwrap();
        assert_eq!(
            get(&mut c, &t2.task_id).await.status,
            TaskStatus::Completed as i32
        );

        // Bad input.
        let bad = |r: SubmitTaskRequest| {
            let mut tasks = c.tasks.clone();
            async move { tasks.submit_task(r).await.expect_err("refused") }
        };
        for (req, field) in [
            (
                SubmitTaskRequest {
                    task_type: String::new(),
                    ..submit("{}")
                },
                "task_type",
            ),
            (
                SubmitTaskRequest {
                    task_type: "Bad Type".into(),
                    ..submit("{}")
                },
                "task_type",
            ),
            (submit("{not json"), "task_data"),
            (
                SubmitTaskRequest {
                    max_attempts: 0,
                    ..submit("{}")
                },
                "max_attempts",
            ),
            (
                SubmitTaskRequest {
                    max_attempts: 101,
                    ..submit("{}")
                },
                "max_attempts",
            ),
        ] {
            let e = bad(req).await;
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(field), "{field} not named: {e:?}");
        }
        let e = c
            .tasks
            .get_task(GetTaskRequest {
                task_id: "nope".into(),
                consistent: false,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c
            .tasks
            .get_task(GetTaskRequest {
                task_id: uuid::Uuid::now_v7().to_string(),
                consistent: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .tasks
            .list_tasks(ListTasksRequest {
                status: 99,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c
            .nodes
            .heartbeat(HeartbeatRequest {
                cpu_usage: 150.0,
                ..heartbeat("agent-1", vec![])
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c
            .nodes
            .report_task_result(report(
                &uuid::Uuid::now_v7().to_string(),
                1,
                "agent-1",
                true,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = c
            .nodes
            .report_task_result(ReportTaskResultRequest {
                result_data: "{oops".into(),
                ..report(&t2.task_id, a2, "agent-1", true)
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let huge = format!("\"{}\"", "x".repeat(5 * 1024 * 1024));
        let e = c.tasks.submit_task(submit(&huge)).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

        // Listing with a filter and pages.
        let page = c
            .tasks
            .list_tasks(ListTasksRequest {
                status: TaskStatus::Completed as i32,
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_count, 2);
        assert_eq!(page.tasks.len(), 1);
        assert!(!page.next_page_token.is_empty());
        let rest = c
            .tasks
            .list_tasks(ListTasksRequest {
                status: TaskStatus::Completed as i32,
                page_size: 1,
                page_token: page.next_page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rest.tasks.len(), 1);
        assert_ne!(rest.tasks[0].task_id, page.tasks[0].task_id);
        assert!(rest.next_page_token.is_empty());

        let nodes = c
            .cluster
            .list_nodes(ListNodesRequest { status: 0 })
            .await
            .unwrap();
        let nodes = nodes.into_inner().nodes;
        assert_eq!(nodes.len(), 1);
        assert_eq!(
            nodes[0].cpu_usage, 10.0,
            "live usage comes from the leader's monitor"
        );
    });

    let status = http_get(http_addr, "/status");
    assert!(
        status.starts_with("HTTP/1.0 200") || status.starts_with("HTTP/1.1 200"),
        "{status}"
    );
    assert!(status.contains("\"leader_id\":1"), "{status}");
    assert!(http_get(http_addr, "/healthz").contains("\"status\":\"ok\""));
    let metrics = http_get(http_addr, "/metrics");
    assert!(metrics.contains("mlcp_is_leader 1"), "{metrics}");
    assert!(
        metrics.contains("mlcp_tasks{status=\"COMPLETED\"} 2"),
        "{metrics}"
    );

    shutdown.cancel();
    server.join().expect("clean shutdown");
}

/// docs/failures.md S1/S2 on one controller: an agent that goes silent is declared lost on the
/// leader's monotonic clock, its task is requeued and runs on another agent as attempt 2, the
/// zombie's late report is refused, and when it comes back its heartbeat registers it again
/// and tells it to abort the superseded attempt.
#[test]
fn a_silent_agent_loses_its_task_and_its_late_report_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        tick: Duration::from_millis(10),
        node_stale_after: Duration::from_millis(400),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).expect("controller starts");
    let addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(addr).await;
        wait_for_leader(&mut c).await;
        // Only the zombie is registered when the task is placed.
        c.nodes
            .heartbeat(heartbeat("zombie", vec![]))
            .await
            .unwrap();
        let t = c
            .tasks
            .submit_task(submit(r#"{"n": 3}"#))
            .await
            .unwrap()
            .into_inner();
        let t = t.task.unwrap();
        let a1 = poll_for(&mut c, "zombie", &t.task_id).await;
        c.nodes
            .ack_task_started(AckTaskStartedRequest {
                task_id: t.task_id.clone(),
                attempt: a1,
                node_id: "zombie".into(),
            })
            .await
            .unwrap();

        // The zombie falls silent; a healthy agent keeps heartbeating and polling until the
        // task is requeued and handed to it.
        let start = Instant::now();
        let a2 = loop {
            c.nodes
                .heartbeat(heartbeat("healthy", vec![]))
                .await
                .unwrap();
            let p = c
                .nodes
                .poll_task(PollTaskRequest {
                    node_id: "healthy".into(),
                    wait_ms: 100,
                    free_slots: 0,
                })
                .await
                .unwrap()
                .into_inner();
            if let Some(a) = p.assignments.iter().find(|a| a.task_id == t.task_id) {
                break a.attempt;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "task never requeued to the healthy agent"
            );
        };
        assert_eq!(a2, a1 + 1);
        let nodes = c
            .cluster
            .list_nodes(ListNodesRequest { status: 0 })
            .await
            .unwrap();
        let zombie = nodes
            .into_inner()
            .nodes
            .into_iter()
            .find(|n| n.node_id == "zombie")
            .unwrap();
        assert_eq!(zombie.status, mlcp::proto::NodeStatus::Unhealthy as i32);

        c.nodes
            .report_task_result(report(&t.task_id, a2, "healthy", true))
            .await
            .unwrap();
        let late = c
            .nodes
            .report_task_result(report(&t.task_id, a1, "zombie", true))
            .await
            .expect_err("the zombie's result must not overwrite the real one");
        assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
        let zone = |running| HeartbeatRequest {
            labels: [("zone".to_string(), "z".to_string())].into(),
            ..heartbeat("zombie", running)
        };
        let back = c
            .nodes
            .heartbeat(zone(vec![RunningAttempt {
                task_id: t.task_id.clone(),
                attempt: a1,
            }]))
            .await
            .unwrap()
            .into_inner();
        assert!(
            back.registered,
            "a returning node is registered HEALTHY again"
        );
        assert_eq!(
            back.abort,
            vec![RunningAttempt {
                task_id: t.task_id.clone(),
                attempt: a1
            }]
        );
        let done = get(&mut c, &t.task_id).await;
        assert_eq!(done.status, TaskStatus::Completed as i32);
        assert_eq!(done.assigned_node_id, "healthy");

        // Until it reports the stale attempt gone, the returning node gets nothing new
        // (docs/lifecycle.md#returning-nodes); this task fits only there.
        let only_z = SubmitTaskRequest {
            constraints: Some(mlcp::proto::TaskConstraints {
                labels: [("zone".to_string(), "z".to_string())].into(),
                ..Default::default()
            }),
            ..submit("{}")
        };
        let z = c
            .tasks
            .submit_task(only_z)
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let p = c
            .nodes
            .poll_task(PollTaskRequest {
                node_id: "zombie".into(),
                wait_ms: 300,
                free_slots: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(p.assignments.is_empty(), "held back: {p:?}");
        let clean = c.nodes.heartbeat(zone(vec![])).await.unwrap().into_inner();
        assert!(clean.abort.is_empty());
        assert_eq!(poll_for(&mut c, "zombie", &z.task_id).await, 1);
    });
    shutdown.cancel();
    server.join().expect("clean shutdown");
}

/// docs/lifecycle.md#timeouts, docs/failures.md S8: an agent that keeps heartbeating (so its node stays healthy)
/// but never reports loses the attempt once its run timeout passes on the leader's
/// monotonic clock; the next heartbeat tells it to abort, and the task runs again.
#[test]
fn an_attempt_that_never_reports_is_requeued_after_its_run_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        tick: Duration::from_millis(10),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).expect("controller starts");
    let addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(addr).await;
        wait_for_leader(&mut c).await;
        c.nodes.heartbeat(heartbeat("slow", vec![])).await.unwrap();
        let t = c
            .tasks
            .submit_task(SubmitTaskRequest {
                run_timeout_ms: 200,
                ..submit("{}")
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let a1 = poll_for(&mut c, "slow", &t.task_id).await;
        c.nodes
            .ack_task_started(AckTaskStartedRequest {
                task_id: t.task_id.clone(),
                attempt: a1,
                node_id: "slow".into(),
            })
            .await
            .unwrap();
        let running = vec![RunningAttempt {
            task_id: t.task_id.clone(),
            attempt: a1,
        }];

        // The agent heartbeats, reporting the attempt running, but never reports a result.
        let start = Instant::now();
        let abort = loop {
            let reply = c
                .nodes
                .heartbeat(heartbeat("slow", running.clone()))
                .await
                .unwrap()
                .into_inner();
            if !reply.abort.is_empty() {
                break reply.abort;
            }
            assert!(start.elapsed() < DEADLINE, "attempt {a1} never timed out");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(abort, running, "the timed-out attempt is aborted");
        let requeued = get(&mut c, &t.task_id).await;
        let first = &requeued.attempts[0];
        assert_eq!(first.outcome, TaskStatus::Failed as i32);
        assert!(!first.reported, "the controller ended it: {first:?}");
        // The agent aborts it and says so in its next heartbeat; until then the node is held
        // back from new placements (docs/lifecycle.md#returning-nodes).
        c.nodes.heartbeat(heartbeat("slow", vec![])).await.unwrap();
        assert_eq!(poll_for(&mut c, "slow", &t.task_id).await, a1 + 1);
    });
    shutdown.cancel();
    server.join().expect("clean shutdown");
}

/// Operator controls on one controller: a watch follows a task to its terminal state, a
/// cancel ends a task that can never be placed (and repeating it is harmless), a finished
/// task cannot be cancelled, and a drained node receives no new placements until undrained.
#[test]
fn cancel_watch_and_drain() {
    use mlcp::proto::{CancelTaskRequest, DrainNodeRequest, TaskConstraints, WatchTaskRequest};
    use tokio_stream::StreamExt;

    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        tick: Duration::from_millis(10),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).expect("controller starts");
    let addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = connect(addr).await;
        wait_for_leader(&mut c).await;
        c.nodes
            .heartbeat(heartbeat("agent-d", vec![]))
            .await
            .unwrap();

        // A task no node can take stays PENDING until cancelled; the watch sees it end.
        let nowhere = SubmitTaskRequest {
            constraints: Some(TaskConstraints {
                region: "nowhere".into(),
                ..Default::default()
            }),
            ..submit("{}")
        };
        let t = c
            .tasks
            .submit_task(nowhere)
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let mut watch = c
            .tasks
            .watch_task(WatchTaskRequest {
                task_id: t.task_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = watch.next().await.unwrap().unwrap().task.unwrap();
        assert_eq!(first.status, TaskStatus::Pending as i32);
        let cancel = || CancelTaskRequest {
            task_id: t.task_id.clone(),
            reason: "test".into(),
        };
        let cancelled = c
            .tasks
            .cancel_task(cancel())
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        assert_eq!(cancelled.status, TaskStatus::Cancelled as i32);
        let mut last = first;
        while let Some(update) = watch.next().await {
            last = update.unwrap().task.unwrap();
        }
        assert_eq!(
            last.status,
            TaskStatus::Cancelled as i32,
            "the watch ends after a terminal state"
        );
        c.tasks
            .cancel_task(cancel())
            .await
            .expect("cancelling again succeeds");

        // A completed task cannot be cancelled.
        let done = c
            .tasks
            .submit_task(submit("{}"))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let a = poll_for(&mut c, "agent-d", &done.task_id).await;
        c.nodes
            .report_task_result(report(&done.task_id, a, "agent-d", true))
            .await
            .unwrap();
        let e = c
            .tasks
            .cancel_task(CancelTaskRequest {
                task_id: done.task_id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        let e = c
            .tasks
            .cancel_task(CancelTaskRequest {
                task_id: "bad".into(),
                reason: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);

        // Drain: no new placements on the node until it is undrained.
        let drained = c
            .cluster
            .drain_node(DrainNodeRequest {
                node_id: "agent-d".into(),
                deadline_ms: 0,
                drain: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            drained.node.unwrap().status,
            mlcp::proto::NodeStatus::Draining as i32
        );
        let waiting = c
            .tasks
            .submit_task(submit("{}"))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let p = c
            .nodes
            .poll_task(PollTaskRequest {
                node_id: "agent-d".into(),
                wait_ms: 300,
                free_slots: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            p.assignments.is_empty(),
            "a draining node gets nothing new: {p:?}"
        );
        c.cluster
            .drain_node(DrainNodeRequest {
                node_id: "agent-d".into(),
                deadline_ms: 0,
                drain: false,
            })
            .await
            .unwrap();
        poll_for(&mut c, "agent-d", &waiting.task_id).await;
        let e = c
            .cluster
            .drain_node(DrainNodeRequest {
                node_id: "ghost".into(),
                deadline_ms: 0,
                drain: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    });
    shutdown.cancel();
    server.join().expect("clean shutdown");
}

/// A cleanly stopping agent's last heartbeat (`leaving`) marks its node UNHEALTHY at once and
/// requeues what was placed on it, so nothing new goes to a stopped agent; its next ordinary
/// heartbeat registers it again.
#[test]
fn a_leaving_heartbeat_takes_the_node_out_at_once_and_a_new_one_brings_it_back() {
    with_one_controller(|mut c| async move {
        wait_for_leader(&mut c).await;
        let status_of = |c: &mut Clients| {
            let mut cluster = c.cluster.clone();
            async move {
                let nodes = cluster
                    .list_nodes(ListNodesRequest { status: 0 })
                    .await
                    .unwrap()
                    .into_inner()
                    .nodes;
                nodes
                    .iter()
                    .find(|n| n.node_id == "leaver")
                    .map(|n| n.status)
            }
        };
        c.nodes
            .heartbeat(heartbeat("leaver", vec![]))
            .await
            .unwrap();
        assert_eq!(
            status_of(&mut c).await,
            Some(mlcp::proto::NodeStatus::Healthy as i32)
        );
        // A task lands on it but the agent stops before polling.
        let id = c
            .tasks
            .submit_task(submit(r#"{"x":1}"#))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap()
            .task_id;
        let start = Instant::now();
        while get(&mut c, &id).await.status != TaskStatus::Assigned as i32 {
            assert!(start.elapsed() < DEADLINE, "never assigned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let leaving = HeartbeatRequest {
            leaving: true,
            ..heartbeat("leaver", vec![])
        };
        c.nodes.heartbeat(leaving).await.unwrap();
        // Committed before the answer: no waiting for the stale timeout (10 s).
        assert_eq!(
            status_of(&mut c).await,
            Some(mlcp::proto::NodeStatus::Unhealthy as i32)
        );
        let t = get(&mut c, &id).await;
        assert_eq!(t.status, TaskStatus::Pending as i32, "{t:?}");
        assert_eq!(
            t.backoff_ms, 0,
            "infrastructure loss skips the retry backoff"
        );
        // Back again: registered and healthy, and the task comes to it.
        c.nodes
            .heartbeat(heartbeat("leaver", vec![]))
            .await
            .unwrap();
        assert_eq!(
            status_of(&mut c).await,
            Some(mlcp::proto::NodeStatus::Healthy as i32)
        );
        assert_eq!(poll_for(&mut c, "leaver", &id).await, 2);
    });
}

/// Runs `body` against one fresh single-member controller, then shuts it down cleanly.
fn with_one_controller<F: std::future::Future<Output = ()>>(body: impl FnOnce(Clients) -> F) {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        tick: Duration::from_millis(10),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).expect("controller starts");
    let grpc_addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { body(connect(grpc_addr).await).await });
    shutdown.cancel();
    server.join().expect("clean shutdown");
}

/// The leader's own row in the cluster status shows how far its own log reaches — at least
/// the commit index, which counts the leader's own durable entries — not 0.
#[test]
fn the_leaders_own_status_row_shows_its_own_log() {
    with_one_controller(|mut c| async move {
        let leader = wait_for_leader(&mut c).await;
        let start = Instant::now();
        loop {
            let s = c
                .cluster
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            let own = s.members.iter().find(|m| m.id == leader).expect("own row");
            if own.match_index > 0 && own.match_index >= s.commit_index {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "leader's own match index never reached its commit index: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

/// A leadership transfer to something that cannot lead is refused for what it is —
/// INVALID_ARGUMENT for an id that is not a member, FAILED_PRECONDITION for a learner or when
/// there is no other voter — naming the id and the voters, not UNAVAILABLE (which clients
/// retry elsewhere); a transfer to the current leader is a no-op success.
#[test]
fn transfer_leader_to_a_non_voter_names_the_target_and_the_voters() {
    with_one_controller(|mut c| async move {
        let leader = wait_for_leader(&mut c).await;
        let voters = format!("voters: {leader}");

        // Not a member at all.
        let e = c
            .cluster
            .transfer_leader(TransferLeaderRequest { target_id: 7 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains('7') && e.message().contains(&voters),
            "{e:?}"
        );

        // "Any other voter" when there is none.
        let e = c
            .cluster
            .transfer_leader(TransferLeaderRequest { target_id: 0 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(&voters), "{e:?}");

        // The current leader: nothing to do, and the answer says who leads.
        let same = c
            .cluster
            .transfer_leader(TransferLeaderRequest { target_id: leader })
            .await
            .expect("transfer to the current leader is a no-op")
            .into_inner();
        assert_eq!(same.leader.unwrap().leader_id, leader);

        // A learner: a member, but it cannot lead until promoted. Nothing listens at its
        // address; the single voter commits the change alone.
        let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let learner_addr = spare.local_addr().unwrap().to_string();
        drop(spare);
        c.cluster
            .add_member(AddMemberRequest {
                id: 4,
                address: learner_addr,
            })
            .await
            .expect("add a learner");
        let e = c
            .cluster
            .transfer_leader(TransferLeaderRequest { target_id: 4 })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains('4')
                && e.message().contains("learner")
                && e.message().contains(&voters),
            "{e:?}"
        );
        assert_eq!(wait_for_leader(&mut c).await, leader, "leadership stayed");
    });
}

/// `cluster add-learner 4 notanaddr`: an address that is not HOST:PORT with a port in
/// 1..=65535 is INVALID_ARGUMENT naming the field, and nothing is committed.
#[test]
fn add_member_refuses_an_address_that_is_not_host_port() {
    with_one_controller(|mut c| async move {
        wait_for_leader(&mut c).await;
        for bad in [
            "notanaddr",
            "10.0.0.4:99999",
            "10.0.0.4:0",
            ":50051",
            "h:port",
        ] {
            let e = c
                .cluster
                .add_member(AddMemberRequest {
                    id: 4,
                    address: bad.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
            assert!(
                e.message().contains("address") && e.message().contains(bad),
                "{bad}: {e:?}"
            );
        }
        let s = c
            .cluster
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.members.len(), 1, "nothing was added: {:?}", s.members);
    });
}
