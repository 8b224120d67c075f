//! `mlcp.v1.TaskService`: submit, read, list, cancel and watch tasks. Handlers decode, call an
//! actor and map the error; writes and consistent reads run on the leader (followers forward).

#![warn(missing_docs)]

use std::pin::Pin;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::actors::manifest::{GetTask, ListTasks};
use crate::gateway::context::Ctx;
use crate::gateway::convert::{
    ValidSubmit, page_size, parse_page_token, parse_status_filter, parse_task_id,
};
use crate::gateway::forward::forward_to_leader;
use crate::proto::internal::{self, command::Kind};
use crate::proto::task_service_client::TaskServiceClient;
use crate::proto::task_service_server::TaskService;
use crate::proto::{
    CancelTaskRequest, CancelTaskResponse, GetTaskRequest, GetTaskResponse, ListTasksRequest,
    ListTasksResponse, SubmitTaskRequest, SubmitTaskResponse, Task, TaskStatus, WatchTaskRequest,
    WatchTaskResponse,
};

/// The TaskService implementation.
#[derive(Clone)]
pub struct TaskSvc {
    ctx: Ctx,
}

impl TaskSvc {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        TaskSvc { ctx }
    }

    async fn get_local(&self, task_id: String) -> Result<Task, Status> {
        self.ctx
            .manifest
            .send(GetTask {
                task_id: task_id.clone(),
            })
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?
            .ok_or_else(|| Status::not_found(format!("task {task_id} not found")))
    }
}

/// A task the command outcome must contain.
fn outcome_task(tasks: Vec<Task>) -> Result<Task, Status> {
    tasks
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal("the manifest returned no task"))
}

fn is_terminal(t: &Task) -> bool {
    [
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ]
    .iter()
    .any(|s| t.status == *s as i32)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchTaskResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for TaskSvc {
    async fn submit_task(
        &self,
        mut req: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        forward_to_leader!(self.ctx, req, TaskServiceClient::submit_task);
        let valid = ValidSubmit::try_from(req.into_inner())?;
        let cmd = valid.into_command(Uuid::now_v7());
        let outcome = self
            .ctx
            .proposer
            .propose(self.ctx.term(), Kind::SubmitTask(cmd))
            .await
            .map_err(|e| self.ctx.propose_status(e))?;
        let deduplicated = outcome.duplicate;
        let task = outcome_task(outcome.tasks)?;
        Ok(Response::new(SubmitTaskResponse {
            task: Some(task),
            deduplicated,
        }))
    }

    async fn get_task(
        &self,
        mut req: Request<GetTaskRequest>,
    ) -> Result<Response<GetTaskResponse>, Status> {
        let task_id = parse_task_id("task_id", &req.get_ref().task_id)?;
        if req.get_ref().consistent {
            forward_to_leader!(self.ctx, req, TaskServiceClient::get_task);
            self.ctx.read_barrier().await?;
        }
        let task = self.get_local(task_id).await?;
        Ok(Response::new(GetTaskResponse { task: Some(task) }))
    }

    async fn list_tasks(
        &self,
        mut req: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let ListTasksRequest {
            status,
            page_size: size,
            page_token,
            consistent,
        } = req.get_ref();
        let status = parse_status_filter(*status)?;
        let after = parse_page_token("page_token", page_token)?;
        let limit = page_size(*size);
        if *consistent {
            forward_to_leader!(self.ctx, req, TaskServiceClient::list_tasks);
            self.ctx.read_barrier().await?;
        }
        let page = self
            .ctx
            .manifest
            .send(ListTasks {
                status,
                after,
                limit,
            })
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?;
        Ok(Response::new(ListTasksResponse {
            tasks: page.tasks,
            next_page_token: page.next_after.map(|id| id.to_string()).unwrap_or_default(),
            total_count: page.total,
        }))
    }

    async fn cancel_task(
        &self,
        mut req: Request<CancelTaskRequest>,
    ) -> Result<Response<CancelTaskResponse>, Status> {
        let task_id = parse_task_id("task_id", &req.get_ref().task_id)?;
        forward_to_leader!(self.ctx, req, TaskServiceClient::cancel_task);
        let CancelTaskRequest { task_id: _, reason } = req.into_inner();
        let outcome = self
            .ctx
            .proposer
            .propose(
                self.ctx.term(),
                Kind::CancelTask(internal::CancelTask { task_id, reason }),
            )
            .await
            .map_err(|e| self.ctx.propose_status(e))?;
        Ok(Response::new(CancelTaskResponse {
            task: Some(outcome_task(outcome.tasks)?),
        }))
    }

    type WatchTaskStream = WatchStream;

    async fn watch_task(
        &self,
        req: Request<WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let WatchTaskRequest { task_id } = req.into_inner();
        let task_id = parse_task_id("task_id", &task_id)?;
        let first = self.get_local(task_id.clone()).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let svc = self.clone();
        let mut applied = self.ctx.applied.clone();
        let shutdown = self.ctx.shutdown.clone();
        tokio::spawn(async move {
            let mut last = first;
            if tx
                .send(Ok(WatchTaskResponse {
                    task: Some(last.clone()),
                }))
                .await
                .is_err()
            {
                return;
            }
            while !is_terminal(&last) {
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("controller is shutting down"))).await;
                        return;
                    }
                }
                let now = match svc.get_local(last.task_id.clone()).await {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if now != last {
                    last = now;
                    if tx
                        .send(Ok(WatchTaskResponse {
                            task: Some(last.clone()),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
