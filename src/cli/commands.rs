//! The client commands (`mlcp task …`, `mlcp node …`, `mlcp cluster …`): build the request,
//! send it through the failover [`Client`], print the answer as a table or as JSON.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::args::{
    ClientArgs, ClusterCommand, NodeCommand, OutputFormat, TaskCommand, TaskSubmitArgs,
};
use super::config::{self, ClientConfig};
use super::error::CliError;
use super::json;
pub use crate::client::api::{cluster_status, get_task, is_terminal, list_nodes, list_tasks};
use crate::client::{Client, ClientError};
use crate::console::out::{out, outln};
use crate::console::status::{member_table, render_cluster_status};
use crate::console::table::{Table, span, truncate, unix_ms};
use crate::proto::cluster_service_client::ClusterServiceClient;
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::{
    AddMemberRequest, CancelTaskRequest, DrainNodeRequest, GetTaskRequest, ListNodesRequest, Node,
    PromoteMemberRequest, RemoveMemberRequest, ResourceRequest, RetryPolicy, SubmitTaskRequest,
    Task, TaskConstraints, TaskStatus, TransferLeaderRequest,
};

/// How often `task submit --wait` polls the task.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Longest `task submit --wait` reads a task it just submitted as "not visible yet" when
/// the read answers NOT_FOUND (a linearizable read should see it at once).
const NOT_VISIBLE_GRACE: Duration = Duration::from_secs(30);

fn setup(file: Option<&Path>, args: &ClientArgs) -> Result<(Client, ClientConfig), CliError> {
    let cfg = config::client_config(file, args)?;
    Ok((Client::new(cfg.servers.clone(), cfg.timeout), cfg))
}

fn print_json(value: &Value) {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("a serde_json::Value always serializes")
    );
}

/// Parses a status name as the CLI accepts it: `completed`, `COMPLETED` or
/// `TASK_STATUS_COMPLETED`.
pub fn parse_task_status(text: &str) -> Result<TaskStatus, CliError> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("TASK_STATUS_") {
        upper
    } else {
        format!("TASK_STATUS_{upper}")
    };
    TaskStatus::from_str_name(&full)
        .filter(|s| *s != TaskStatus::Unspecified)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "--status {text:?} is not one of PENDING, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED"
            ))
        })
}

fn status_name(status: i32) -> String {
    match json::task_status(status) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn node_status_name(status: i32) -> String {
    match json::node_status(status) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Runs `mlcp task …`.
pub async fn task(command: TaskCommand, file: Option<&Path>) -> Result<(), CliError> {
    match command {
        TaskCommand::Submit(args) => submit(*args, file).await,
        TaskCommand::Get {
            id,
            consistent,
            client,
        } => {
            let (client, cfg) = setup(file, &client)?;
            let response = client
                .call(|ch| {
                    let request = GetTaskRequest {
                        task_id: id.clone(),
                        consistent,
                    };
                    async move { TaskServiceClient::new(ch).get_task(request).await }
                })
                .await?
                .into_inner();
            match cfg.output {
                OutputFormat::Json => print_json(&json::get_task_response(&response)),
                OutputFormat::Table => print_task_detail(response.task.as_ref()),
            }
            Ok(())
        }
        TaskCommand::List {
            status,
            limit,
            client,
        } => {
            let status = status.as_deref().map(parse_task_status).transpose()?;
            let (client, cfg) = setup(file, &client)?;
            let response = list_tasks(&client, status, limit).await?;
            match cfg.output {
                OutputFormat::Json => print_json(&json::list_tasks_response(&response)),
                OutputFormat::Table => {
                    out!("{}", task_table(&response.tasks).render());
                    outln!(
                        "{} of {} task(s)",
                        response.tasks.len(),
                        response.total_count
                    );
                }
            }
            Ok(())
        }
        TaskCommand::Cancel { id, reason, client } => {
            let (client, cfg) = setup(file, &client)?;
            let response = client
                .call(|ch| {
                    let request = CancelTaskRequest {
                        task_id: id.clone(),
                        reason: reason.clone(),
                    };
                    async move { TaskServiceClient::new(ch).cancel_task(request).await }
                })
                .await?
                .into_inner();
            match cfg.output {
                OutputFormat::Json => print_json(&json::cancel_task_response(&response)),
                OutputFormat::Table => print_task_detail(response.task.as_ref()),
            }
            Ok(())
        }
    }
}

/// The retry policy asked for on the command line; `None` (server defaults) when no flag is set.
/// Unset fields stay at their "server default" encodings (0, or a negative jitter).
fn retry_policy(args: &TaskSubmitArgs) -> Option<RetryPolicy> {
    let any = args.backoff_initial_ms.is_some()
        || args.backoff_max_ms.is_some()
        || args.backoff_multiplier.is_some()
        || args.backoff_jitter.is_some();
    any.then(|| RetryPolicy {
        initial_backoff_ms: args.backoff_initial_ms.unwrap_or(0),
        max_backoff_ms: args.backoff_max_ms.unwrap_or(0),
        backoff_multiplier: args.backoff_multiplier.unwrap_or(0.0),
        jitter: args.backoff_jitter.unwrap_or(-1.0),
    })
}

/// The resources asked for on the command line; `None` (server defaults) when no flag is set.
fn resource_request(args: &TaskSubmitArgs) -> Option<ResourceRequest> {
    let any = args.slots.is_some()
        || args.cpu_millis.is_some()
        || args.memory_mb.is_some()
        || args.gpus.is_some();
    any.then(|| ResourceRequest {
        slots: args.slots.unwrap_or(0),
        cpu_millis: args.cpu_millis.unwrap_or(0),
        memory_mb: args.memory_mb.unwrap_or(0),
        gpus: args.gpus.unwrap_or(0),
    })
}

async fn submit(args: TaskSubmitArgs, file: Option<&Path>) -> Result<(), CliError> {
    let (client, cfg) = setup(file, &args.client)?;
    let labels = config::parse_labels(&args.labels).map_err(|e| CliError::Usage(e.to_string()))?;
    let constraints = (args.cloud_provider.is_some()
        || args.region.is_some()
        || !labels.is_empty())
    .then(|| TaskConstraints {
        cloud_provider: args.cloud_provider.clone().unwrap_or_default(),
        region: args.region.clone().unwrap_or_default(),
        labels,
    });
    // A key of our own makes the failover retry below safe: a submission that reached the
    // leader before its answer was lost is returned, not duplicated.
    let idempotency_key = args
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::now_v7()));
    let request = SubmitTaskRequest {
        task_type: args.task_type.clone(),
        task_data: args.data.clone(),
        max_attempts: args.max_attempts,
        priority: args.priority,
        constraints,
        resources: resource_request(&args),
        idempotency_key,
        retry_policy: retry_policy(&args),
        run_timeout_ms: args.run_timeout_ms.unwrap_or(0),
        queue_timeout_ms: args.queue_timeout_ms.unwrap_or(0),
    };
    let response = client
        .call(|ch| {
            let request = request.clone();
            async move { TaskServiceClient::new(ch).submit_task(request).await }
        })
        .await?
        .into_inner();
    if !args.wait {
        match cfg.output {
            OutputFormat::Json => print_json(&json::submit_task_response(&response)),
            OutputFormat::Table => print_task_detail(response.task.as_ref()),
        }
        return Ok(());
    }
    let task_id = response
        .task
        .as_ref()
        .map(|t| t.task_id.clone())
        .ok_or_else(|| CliError::Failed("the server answered without a task".into()))?;
    let done = wait_for_terminal(
        &client,
        &task_id,
        args.wait_timeout_secs.map(Duration::from_secs),
    )
    .await?;
    match cfg.output {
        OutputFormat::Json => print_json(&json::task(&done)),
        OutputFormat::Table => print_task_detail(Some(&done)),
    }
    if done.status == TaskStatus::Completed as i32 {
        Ok(())
    } else {
        Err(CliError::Failed(format!(
            "task {task_id} ended {}: {}",
            status_name(done.status),
            done.error
        )))
    }
}

/// Polls a task until it is terminal (or `within` passes).
///
/// Every read is linearizable (`consistent`, through the leader): the task was just
/// submitted, and a member's own applied state may not have it yet. A NOT_FOUND before the
/// task was first seen still means "not visible yet" (the read landed before the submission
/// applied there), not "no such task"; it is retried until the wait's deadline, at most
/// [`NOT_VISIBLE_GRACE`], and then reported.
pub async fn wait_for_terminal(
    client: &Client,
    task_id: &str,
    within: Option<Duration>,
) -> Result<Task, CliError> {
    let started = tokio::time::Instant::now();
    // A wait too long for the clock to represent (`--wait-timeout-secs 18446744073709551615`)
    // is no deadline at all.
    let deadline = within.and_then(|w| started.checked_add(w));
    let invisible_until = deadline.map_or(started + NOT_VISIBLE_GRACE, |d| {
        d.min(started + NOT_VISIBLE_GRACE)
    });
    let mut seen = false;
    loop {
        let task = match get_task(client, task_id, true).await {
            Ok(task) => task,
            Err(ClientError::Status(s))
                if s.code() == tonic::Code::NotFound
                    && !seen
                    && tokio::time::Instant::now() < invisible_until =>
            {
                tokio::time::sleep(WAIT_POLL_INTERVAL).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        seen = true;
        if is_terminal(task.status) {
            return Ok(task);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CliError::Failed(format!(
                "task {task_id} still {} when the wait timed out",
                status_name(task.status)
            )));
        }
        tokio::time::sleep(WAIT_POLL_INTERVAL).await;
    }
}

/// The task table of `task list`.
pub fn task_table(tasks: &[Task]) -> Table {
    let mut table = Table::new([
        "TASK_ID", "TYPE", "STATUS", "NODE", "ATTEMPT", "CREATED", "RAN", "ERROR",
    ]);
    for t in tasks {
        table.row([
            t.task_id.clone(),
            t.task_type.clone(),
            status_name(t.status),
            if t.assigned_node_id.is_empty() {
                "-".into()
            } else {
                t.assigned_node_id.clone()
            },
            format!("{}/{}", t.attempt, t.max_attempts),
            unix_ms(t.created_at),
            span(t.started_at, t.completed_at),
            truncate(&t.error, 40),
        ]);
    }
    table
}

fn print_task_detail(task: Option<&Task>) {
    let Some(t) = task else {
        outln!("(no task in the response)");
        return;
    };
    let mut table = Table::new(["FIELD", "VALUE"]);
    let constraints = t.constraints.as_ref().map_or_else(String::new, |c| {
        let mut parts = Vec::new();
        if !c.cloud_provider.is_empty() {
            parts.push(format!("cloud_provider={}", c.cloud_provider));
        }
        if !c.region.is_empty() {
            parts.push(format!("region={}", c.region));
        }
        parts.extend(c.labels.iter().map(|(k, v)| format!("{k}={v}")));
        parts.join(" ")
    });
    let rows: [(&str, String); 14] = [
        ("task_id", t.task_id.clone()),
        ("task_type", t.task_type.clone()),
        ("status", status_name(t.status)),
        ("assigned_node_id", t.assigned_node_id.clone()),
        ("attempt", format!("{} of {}", t.attempt, t.max_attempts)),
        ("priority", t.priority.to_string()),
        ("constraints", constraints),
        ("created_at", unix_ms(t.created_at)),
        ("started_at", unix_ms(t.started_at)),
        ("completed_at", unix_ms(t.completed_at)),
        ("task_data", truncate(&t.task_data, 200)),
        ("result_data", truncate(&t.result_data, 200)),
        ("error", t.error.clone()),
        ("idempotency_key", t.idempotency_key.clone()),
    ];
    for (field, value) in rows {
        table.row([field.to_owned(), value]);
    }
    out!("{}", table.render());
    if !t.attempts.is_empty() {
        let mut attempts = Table::new(["ATTEMPT", "NODE", "ASSIGNED", "RAN", "OUTCOME", "ERROR"]);
        for a in &t.attempts {
            attempts.row([
                a.attempt.to_string(),
                a.node_id.clone(),
                unix_ms(a.assigned_at),
                span(a.started_at, a.finished_at),
                status_name(a.outcome),
                truncate(&a.error, 40),
            ]);
        }
        outln!();
        out!("{}", attempts.render());
    }
}

/// Runs `mlcp node …`.
pub async fn node(command: NodeCommand, file: Option<&Path>) -> Result<(), CliError> {
    match command {
        NodeCommand::List { client } => {
            let (client, cfg) = setup(file, &client)?;
            let response = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .list_nodes(ListNodesRequest { status: 0 })
                        .await
                })
                .await?
                .into_inner();
            match cfg.output {
                OutputFormat::Json => print_json(&json::list_nodes_response(&response)),
                OutputFormat::Table => out!("{}", node_table(&response.nodes).render()),
            }
            Ok(())
        }
        NodeCommand::Drain {
            id,
            deadline,
            undo,
            client,
        } => {
            let (client, cfg) = setup(file, &client)?;
            let deadline_ms = deadline.map_or(0, |s| s.saturating_mul(1000));
            let response = client
                .call(|ch| {
                    let request = DrainNodeRequest {
                        node_id: id.clone(),
                        deadline_ms,
                        drain: !undo,
                    };
                    async move { ClusterServiceClient::new(ch).drain_node(request).await }
                })
                .await?
                .into_inner();
            match cfg.output {
                OutputFormat::Json => print_json(&json::drain_node_response(&response)),
                OutputFormat::Table => {
                    out!("{}", node_table(response.node.as_slice()).render());
                    outln!("{} task(s) still running on {id}", response.remaining_tasks);
                }
            }
            Ok(())
        }
    }
}

/// The node table of `node list`.
pub fn node_table(nodes: &[Node]) -> Table {
    let mut table = Table::new([
        "NODE_ID",
        "STATUS",
        "CLOUD",
        "REGION",
        "ACTIVE",
        "SLOTS",
        "CPU%",
        "MEM%",
        "LAST_HEARTBEAT",
        "LABELS",
    ]);
    for n in nodes {
        let status = if n.draining && n.status != crate::proto::NodeStatus::Draining as i32 {
            format!("{} (draining)", node_status_name(n.status))
        } else {
            node_status_name(n.status)
        };
        table.row([
            n.node_id.clone(),
            status,
            n.cloud_provider.clone(),
            n.region.clone(),
            n.active_tasks.to_string(),
            n.capacity
                .as_ref()
                .map_or_else(|| "-".into(), |c| c.slots.to_string()),
            format!("{:.1}", n.cpu_usage),
            format!("{:.1}", n.memory_usage),
            unix_ms(n.last_heartbeat),
            n.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    table
}

/// Runs `mlcp cluster …`.
pub async fn cluster(command: ClusterCommand, file: Option<&Path>) -> Result<(), CliError> {
    match command {
        ClusterCommand::Status { client } => {
            let (client, cfg) = setup(file, &client)?;
            let status = cluster_status(&client).await?;
            match cfg.output {
                OutputFormat::Json => print_json(&json::cluster_status_response(&status)),
                OutputFormat::Table => out!("{}", render_cluster_status(&status)),
            }
            Ok(())
        }
        ClusterCommand::TransferLeader { id, client } => {
            let (client, cfg) = setup(file, &client)?;
            let response = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .transfer_leader(TransferLeaderRequest { target_id: id })
                        .await
                })
                .await?
                .into_inner();
            match cfg.output {
                OutputFormat::Json => print_json(&json::transfer_leader_response(&response)),
                OutputFormat::Table => {
                    let leader = response.leader.unwrap_or_default();
                    outln!(
                        "leader is now {} at {}",
                        leader.leader_id,
                        leader.leader_address
                    );
                }
            }
            Ok(())
        }
        ClusterCommand::AddLearner {
            id,
            address,
            client,
        } => {
            let (client, cfg) = setup(file, &client)?;
            let members = client
                .call(|ch| {
                    let request = AddMemberRequest {
                        id,
                        address: address.clone(),
                    };
                    async move { ClusterServiceClient::new(ch).add_member(request).await }
                })
                .await?
                .into_inner()
                .members;
            print_members(&members, cfg.output);
            Ok(())
        }
        ClusterCommand::Promote { id, client } => {
            let (client, cfg) = setup(file, &client)?;
            let members = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .promote_member(PromoteMemberRequest { id })
                        .await
                })
                .await?
                .into_inner()
                .members;
            print_members(&members, cfg.output);
            Ok(())
        }
        ClusterCommand::Remove { id, client } => {
            let (client, cfg) = setup(file, &client)?;
            let members = client
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .remove_member(RemoveMemberRequest { id })
                        .await
                })
                .await?
                .into_inner()
                .members;
            print_members(&members, cfg.output);
            Ok(())
        }
    }
}

fn print_members(members: &[crate::proto::Member], output: OutputFormat) {
    match output {
        OutputFormat::Json => print_json(&json::members_response(members)),
        OutputFormat::Table => out!("{}", member_table(members, 0).render()),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::proto::task_service_server::{TaskService, TaskServiceServer};
    use crate::proto::{
        CancelTaskResponse, GetTaskResponse, ListTasksRequest, ListTasksResponse,
        SubmitTaskResponse, WatchTaskRequest, WatchTaskResponse,
    };

    /// A member that lags: its own applied state (a non-consistent read) does not have the
    /// task, and even a consistent read misses it the first `invisible_reads` times (the
    /// submission committed, not yet visible where the read lands).
    #[derive(Clone)]
    struct LaggingMember {
        invisible_reads: u32,
        consistent_reads: Arc<AtomicU32>,
    }

    type WatchStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchTaskResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl TaskService for LaggingMember {
        async fn submit_task(
            &self,
            _: Request<SubmitTaskRequest>,
        ) -> Result<Response<SubmitTaskResponse>, Status> {
            Err(Status::unimplemented("submit"))
        }

        async fn get_task(
            &self,
            req: Request<GetTaskRequest>,
        ) -> Result<Response<GetTaskResponse>, Status> {
            let req = req.into_inner();
            let missing = || Status::not_found(format!("task {} not found", req.task_id));
            if !req.consistent {
                return Err(missing());
            }
            if self.consistent_reads.fetch_add(1, Ordering::SeqCst) < self.invisible_reads {
                return Err(missing());
            }
            Ok(Response::new(GetTaskResponse {
                task: Some(Task {
                    task_id: req.task_id,
                    status: TaskStatus::Completed as i32,
                    ..Task::default()
                }),
            }))
        }

        async fn list_tasks(
            &self,
            _: Request<ListTasksRequest>,
        ) -> Result<Response<ListTasksResponse>, Status> {
            Err(Status::unimplemented("list"))
        }

        async fn cancel_task(
            &self,
            _: Request<CancelTaskRequest>,
        ) -> Result<Response<CancelTaskResponse>, Status> {
            Err(Status::unimplemented("cancel"))
        }

        type WatchTaskStream = WatchStream;

        async fn watch_task(
            &self,
            _: Request<WatchTaskRequest>,
        ) -> Result<Response<Self::WatchTaskStream>, Status> {
            Err(Status::unimplemented("watch"))
        }
    }

    /// Serves `member` on a loopback port for the rest of the test; returns a client of it.
    async fn serve(member: LaggingMember) -> Client {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TaskServiceServer::new(member))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Client::new(vec![addr.to_string()], Duration::from_secs(5))
    }

    const TASK_ID: &str = "01890000-0000-7000-8000-000000000001";

    #[tokio::test]
    async fn wait_reads_consistently_and_rides_out_a_task_not_yet_visible() {
        let member = LaggingMember {
            invisible_reads: 2,
            consistent_reads: Arc::default(),
        };
        let reads = member.consistent_reads.clone();
        let client = serve(member).await;
        let done = tokio::time::timeout(
            Duration::from_secs(20),
            wait_for_terminal(&client, TASK_ID, Some(Duration::from_secs(10))),
        )
        .await
        .expect("the wait ends")
        .expect("a task not visible yet is waited for, not reported missing");
        assert_eq!(done.status, TaskStatus::Completed as i32);
        assert_eq!(reads.load(Ordering::SeqCst), 3, "every read was consistent");
    }

    #[tokio::test]
    async fn a_task_that_never_shows_up_fails_the_wait_at_its_deadline() {
        let client = serve(LaggingMember {
            invisible_reads: u32::MAX,
            consistent_reads: Arc::default(),
        })
        .await;
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            wait_for_terminal(&client, TASK_ID, Some(Duration::from_millis(600))),
        )
        .await
        .expect("the wait ends at its deadline")
        .unwrap_err()
        .to_string();
        assert!(err.contains("not found") && err.contains(TASK_ID), "{err}");
    }

    #[tokio::test]
    async fn a_wait_timeout_too_large_for_the_clock_is_no_deadline_not_a_panic() {
        // Nothing listens here: the wait ends with "no reachable server" instead of
        // overflowing `Instant + Duration` first.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap().to_string();
        drop(free);
        let client = Client::new(vec![addr], Duration::from_secs(2));
        let err = wait_for_terminal(&client, TASK_ID, Some(Duration::from_secs(u64::MAX)))
            .await
            .unwrap_err();
        assert!(matches!(err, CliError::NoServer { .. }), "{err}");
    }
}
