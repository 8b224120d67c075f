//! Typed calls over the failover [`Client`] that the CLI, the demo and the benches share.

use tonic::Status;
use tonic::transport::Channel;

use super::{Client, ClientError};
use crate::proto::cluster_service_client::ClusterServiceClient;
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::{
    GetClusterStatusRequest, GetClusterStatusResponse, GetTaskRequest, ListNodesRequest,
    ListTasksRequest, ListTasksResponse, Node, Task, TaskStatus,
};

/// Largest page asked for in one ListTasks (the server caps it too).
const LIST_PAGE_SIZE_MAX: u32 = 1000;

/// Every task (in pages), optionally of one status, at most `limit`; a limit of 0 is no
/// limit (`--limit 0`, as etcdctl reads it), not an empty answer.
pub async fn list_tasks(
    client: &Client,
    status: Option<TaskStatus>,
    limit: Option<u64>,
) -> Result<ListTasksResponse, ClientError> {
    let limit = limit.filter(|&l| l != 0);
    let mut all = ListTasksResponse::default();
    let mut token = String::new();
    loop {
        let remaining = limit.map(|l| l.saturating_sub(all.tasks.len() as u64));
        if remaining == Some(0) {
            break;
        }
        let page_size = remaining.map_or(LIST_PAGE_SIZE_MAX, |r| {
            u32::try_from(r.min(u64::from(LIST_PAGE_SIZE_MAX))).expect("bounded by the max")
        });
        let request = ListTasksRequest {
            status: status.map_or(0, |s| s as i32),
            page_size,
            page_token: token.clone(),
            consistent: false,
        };
        let page = client
            .call(|ch| {
                let request = request.clone();
                async move { TaskServiceClient::new(ch).list_tasks(request).await }
            })
            .await?
            .into_inner();
        all.total_count = page.total_count;
        all.tasks.extend(page.tasks);
        token = page.next_page_token;
        all.next_page_token = token.clone();
        if token.is_empty() {
            break;
        }
    }
    Ok(all)
}

/// GetTask through the failover client.
pub async fn get_task(
    client: &Client,
    task_id: &str,
    consistent: bool,
) -> Result<Task, ClientError> {
    let response = client
        .call(|ch| {
            let request = GetTaskRequest {
                task_id: task_id.to_owned(),
                consistent,
            };
            async move { TaskServiceClient::new(ch).get_task(request).await }
        })
        .await?
        .into_inner();
    response.task.ok_or_else(|| {
        ClientError::Status(Status::internal(format!(
            "the server answered GetTask {task_id} without a task"
        )))
    })
}

/// GetClusterStatus from whichever member `client` reaches first.
pub async fn cluster_status(client: &Client) -> Result<GetClusterStatusResponse, ClientError> {
    Ok(client
        .call(|ch| async move {
            ClusterServiceClient::new(ch)
                .get_cluster_status(GetClusterStatusRequest {})
                .await
        })
        .await?
        .into_inner())
}

/// GetClusterStatus from one specific member (no failover), for tools that compare members.
pub async fn member_status(channel: Channel) -> Result<GetClusterStatusResponse, tonic::Status> {
    Ok(ClusterServiceClient::new(channel)
        .get_cluster_status(GetClusterStatusRequest {})
        .await?
        .into_inner())
}

/// Every registered worker node (ListNodes) through the failover client.
pub async fn list_nodes(client: &Client) -> Result<Vec<Node>, ClientError> {
    Ok(client
        .call(|ch| async move {
            ClusterServiceClient::new(ch)
                .list_nodes(ListNodesRequest { status: 0 })
                .await
        })
        .await?
        .into_inner()
        .nodes)
}

/// Whether a task status is terminal (COMPLETED, FAILED or CANCELLED).
pub fn is_terminal(status: i32) -> bool {
    matches!(
        TaskStatus::try_from(status),
        Ok(TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    )
}
