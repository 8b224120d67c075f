//! Every bad input of the bad-input list (docs/architecture.md#bad-input) gets its gRPC code and a message naming the field, and
//! nothing is written; shown against a real single-member controller, over gRPC (a fake
//! agent plays the agent side so the test controls attempts) and through the CLI.
//! The server's own refusals (port in use, data dir of another node or cluster) are checked by
//! starting `mlcp server` and reading its exit status and last stderr line.

mod common;

use std::time::Duration;

use common::{BIN, POLL, SOON, mlcp, nodes_at, started_cluster, stderr, tasks_at};
use mlcp::proto::{
    CancelTaskRequest, GetTaskRequest, HeartbeatRequest, ListTasksRequest, NodeCapacity,
    PollTaskRequest, ReportTaskResultRequest, SubmitTaskRequest, TaskAssignment,
};
use mlcp::testkit::local_cluster::{ClusterSpec, free_ports, poll_until};
use tonic::Code;

fn single() -> ClusterSpec {
    ClusterSpec {
        controllers: 1,
        ..ClusterSpec::default()
    }
}

fn heartbeat(node_id: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: node_id.into(),
        address: format!("{node_id}.test"),
        cloud_provider: "test".into(),
        region: "test".into(),
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

fn echo() -> SubmitTaskRequest {
    SubmitTaskRequest {
        task_type: "echo".into(),
        task_data: "{\"x\":1}".into(),
        max_attempts: 3,
        ..SubmitTaskRequest::default()
    }
}

/// Asserts `result` failed with `code` and a message naming `field`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    field: &str,
    case: &str,
) {
    let status = result.expect_err(case);
    assert_eq!(status.code(), code, "{case}: {}", status.message());
    assert!(
        status.message().contains(field),
        "{case}: message {:?} does not name {field:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_code_and_nothing_is_written() {
    let cluster = started_cluster(single()).await;
    let addr = cluster.controllers[0].grpc.to_string();
    let mut tasks = tasks_at(&addr).await;
    let mut nodes = nodes_at(&addr).await;

    // SubmitTask.
    let cases: Vec<(&str, SubmitTaskRequest, Code, &str)> = vec![
        (
            "empty task_type",
            SubmitTaskRequest {
                task_type: String::new(),
                ..echo()
            },
            Code::InvalidArgument,
            "task_type",
        ),
        (
            "129-character task_type",
            SubmitTaskRequest {
                task_type: "a".repeat(129),
                ..echo()
            },
            Code::InvalidArgument,
            "task_type",
        ),
        (
            "task_type outside [a-z0-9_.-]",
            SubmitTaskRequest {
                task_type: "Mat Mul!".into(),
                ..echo()
            },
            Code::InvalidArgument,
            "task_type",
        ),
        (
            "task_data not JSON",
            SubmitTaskRequest {
                task_data: "{not json".into(),
                ..echo()
            },
            Code::InvalidArgument,
            "task_data",
        ),
        (
            "task_data over 1 MiB",
            SubmitTaskRequest {
                task_data: format!("\"{}\"", "a".repeat(1024 * 1024)),
                ..echo()
            },
            Code::InvalidArgument,
            "task_data",
        ),
        (
            "max_attempts 0",
            SubmitTaskRequest {
                max_attempts: 0,
                ..echo()
            },
            Code::InvalidArgument,
            "max_attempts",
        ),
        (
            "max_attempts over 100",
            SubmitTaskRequest {
                max_attempts: 101,
                ..echo()
            },
            Code::InvalidArgument,
            "max_attempts",
        ),
    ];
    for (case, request, code, field) in cases {
        assert_refused(tasks.submit_task(request).await, code, field, case);
    }
    // A message over the transport limit (4 MiB) never reaches validation.
    let huge = SubmitTaskRequest {
        task_data: format!("\"{}\"", "a".repeat(5 * 1024 * 1024)),
        ..echo()
    };
    let status = tasks
        .submit_task(huge)
        .await
        .expect_err("oversized message");
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );

    // Nothing was written.
    let listed = tasks
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_count, 0, "a refused submission wrote a task");

    // GetTask / CancelTask / ListTasks.
    let unknown = uuid::Uuid::now_v7().to_string();
    let get = |id: &str| GetTaskRequest {
        task_id: id.into(),
        consistent: false,
    };
    assert_refused(
        tasks.get_task(get("not-a-uuid")).await,
        Code::InvalidArgument,
        "task_id",
        "GetTask malformed id",
    );
    assert_eq!(
        tasks.get_task(get(&unknown)).await.unwrap_err().code(),
        Code::NotFound
    );
    let cancel = |id: &str| CancelTaskRequest {
        task_id: id.into(),
        reason: "test".into(),
    };
    assert_refused(
        tasks.cancel_task(cancel("12345")).await,
        Code::InvalidArgument,
        "task_id",
        "CancelTask malformed id",
    );
    assert_eq!(
        tasks
            .cancel_task(cancel(&unknown))
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    assert_refused(
        tasks
            .list_tasks(ListTasksRequest {
                status: 99,
                ..ListTasksRequest::default()
            })
            .await,
        Code::InvalidArgument,
        "status",
        "ListTasks unknown status",
    );

    // Heartbeat.
    assert_refused(
        nodes.heartbeat(heartbeat("")).await,
        Code::InvalidArgument,
        "node_id",
        "empty node id",
    );
    assert_refused(
        nodes
            .heartbeat(HeartbeatRequest {
                cpu_usage: 150.0,
                ..heartbeat("fake-1")
            })
            .await,
        Code::InvalidArgument,
        "cpu_usage",
        "cpu over 100%",
    );
    assert_refused(
        nodes
            .heartbeat(HeartbeatRequest {
                memory_usage: -1.0,
                ..heartbeat("fake-1")
            })
            .await,
        Code::InvalidArgument,
        "memory_usage",
        "memory below 0%",
    );

    // ReportTaskResult: register two fake agents, get an assignment for fake-1.
    nodes
        .heartbeat(heartbeat("fake-1"))
        .await
        .expect("register fake-1");
    nodes
        .heartbeat(heartbeat("fake-2"))
        .await
        .expect("register fake-2");
    let task_id = tasks
        .submit_task(echo())
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .task_id;
    let assignment: TaskAssignment = poll_until("an assignment for fake-1", SOON, POLL, || {
        let mut nodes = nodes.clone();
        async move {
            // Keep fake-1 alive while waiting.
            nodes
                .heartbeat(heartbeat("fake-1"))
                .await
                .map_err(|s| s.to_string())?;
            let polled = nodes
                .poll_task(PollTaskRequest {
                    node_id: "fake-1".into(),
                    wait_ms: 1000,
                    free_slots: 1,
                })
                .await
                .map_err(|s| s.to_string())?
                .into_inner();
            Ok(polled.assignments.into_iter().next())
        }
    })
    .await
    .unwrap();
    assert_eq!(assignment.task_id, task_id);
    let report = ReportTaskResultRequest {
        task_id: task_id.clone(),
        attempt: assignment.attempt,
        node_id: "fake-1".into(),
        success: true,
        result_data: "{\"x\":1}".into(),
        ..ReportTaskResultRequest::default()
    };
    assert_eq!(
        nodes
            .report_task_result(ReportTaskResultRequest {
                task_id: unknown.clone(),
                ..report.clone()
            })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound,
        "report for an unknown task"
    );
    let wrong_node = nodes
        .report_task_result(ReportTaskResultRequest {
            node_id: "fake-2".into(),
            ..report.clone()
        })
        .await;
    assert_eq!(
        wrong_node.unwrap_err().code(),
        Code::FailedPrecondition,
        "report from the wrong node"
    );
    let wrong_attempt = nodes
        .report_task_result(ReportTaskResultRequest {
            attempt: assignment.attempt + 1,
            ..report.clone()
        })
        .await;
    assert_eq!(
        wrong_attempt.unwrap_err().code(),
        Code::FailedPrecondition,
        "report for another attempt"
    );
    assert_refused(
        nodes
            .report_task_result(ReportTaskResultRequest {
                result_data: "not json".into(),
                ..report.clone()
            })
            .await,
        Code::InvalidArgument,
        "result_data",
        "result_data not JSON",
    );

    // The right report succeeds; an identical retry is a success; a different outcome is not.
    let first = nodes
        .report_task_result(report.clone())
        .await
        .expect("valid report")
        .into_inner();
    assert!(!first.duplicate);
    let again = nodes
        .report_task_result(report.clone())
        .await
        .expect("retried report")
        .into_inner();
    assert!(
        again.duplicate,
        "an identical retry is acknowledged as a duplicate"
    );
    let flipped = nodes
        .report_task_result(ReportTaskResultRequest {
            success: false,
            result_data: String::new(),
            error: "changed my mind".into(),
            ..report.clone()
        })
        .await;
    assert_eq!(
        flipped.unwrap_err().code(),
        Code::FailedPrecondition,
        "a different outcome"
    );

    // The CLI surfaces the code and the message, exit 1.
    let out = mlcp(&["task", "get", "not-a-uuid", "--server", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("InvalidArgument") && stderr(&out).contains("task_id"),
        "{}",
        stderr(&out)
    );
    let out = mlcp(&["task", "submit", "--type", "Bad Type", "--server", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("task_type"), "{}", stderr(&out));
    let out = mlcp(&["task", "cancel", &unknown, "--server", &addr]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
}

/// The last line the process wrote to stderr that starts with `error:`.
fn error_line(out: &std::process::Output) -> String {
    stderr(out)
        .lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_a_port_in_use_and_a_foreign_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();

    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = mlcp(&[
        "server",
        "--listen",
        &port,
        "--http-listen",
        "off",
        "--data-dir",
        data_arg,
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
    let line = error_line(&out);
    assert!(
        line.contains(&port),
        "error line does not name {port}: {line:?}\n{}",
        stderr(&out)
    );
    drop(taken);

    // A data dir written by node 1 of cluster "alpha"…
    let addr = free_ports(1).unwrap()[0].to_string();
    let mut first = tokio::process::Command::new(BIN)
        .args([
            "server",
            "--node-id",
            "1",
            "--cluster-name",
            "alpha",
            "--http-listen",
            "off",
        ])
        .args(["--listen", &addr, "--data-dir", data_arg])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let probe = mlcp::client::Client::new(vec![addr.clone()], Duration::from_secs(2));
    poll_until("the first server to serve", SOON, POLL, || async {
        mlcp::cli::commands::cluster_status(&probe)
            .await
            .map(|s| (s.leader_id == 1).then_some(()))
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(first.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(SOON, first.wait())
        .await
        .unwrap()
        .unwrap();

    // …is refused by node 2, and by another cluster name, each with a one-line reason.
    let out = mlcp(&[
        "server",
        "--node-id",
        "2",
        "--peers",
        &format!("2={addr}"),
        "--cluster-name",
        "alpha",
        "--http-listen",
        "off",
        "--listen",
        &addr,
        "--data-dir",
        data_arg,
    ])
    .await;
    assert_ne!(
        out.status.code(),
        Some(0),
        "node 2 started on node 1's data dir"
    );
    assert!(!error_line(&out).is_empty(), "{}", stderr(&out));
    let out = mlcp(&[
        "server",
        "--node-id",
        "1",
        "--cluster-name",
        "beta",
        "--http-listen",
        "off",
        "--listen",
        &addr,
        "--data-dir",
        data_arg,
    ])
    .await;
    assert_ne!(
        out.status.code(),
        Some(0),
        "cluster beta started on alpha's data dir"
    );
    assert!(
        error_line(&out).contains("alpha") || error_line(&out).contains("beta"),
        "{}",
        stderr(&out)
    );
}
