//! `mlcp.v1.NodeService`: the agent API. Every call runs on the leader (followers forward):
//! heartbeats feed the leader's in-memory liveness tracker, polls must see the latest
//! committed assignments (linearizable, docs/failures.md S6), and acknowledgements and reports are
//! commands answered only once committed (docs/lifecycle.md#exactly-once-outcomes).

#![warn(missing_docs)]

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::actors::heartbeat_monitor::Heartbeat;
use crate::actors::manifest::PollWork;
use crate::gateway::context::Ctx;
use crate::gateway::convert::{ValidAck, ValidHeartbeat, ValidReport, validate_node_id};
use crate::gateway::forward::forward_to_leader;
use crate::proto::internal::command::Kind;
use crate::proto::node_service_client::NodeServiceClient;
use crate::proto::node_service_server::NodeService;
use crate::proto::{
    AckTaskStartedRequest, AckTaskStartedResponse, HeartbeatRequest, HeartbeatResponse,
    PollTaskRequest, PollTaskResponse, ReportTaskResultRequest, ReportTaskResultResponse,
    TaskStatus,
};

/// Longest long poll, in ms (docs/architecture.md#bad-input: "waits up to a client-given deadline, at most 30 s").
pub const POLL_WAIT_MS_MAX: u64 = 30_000;
/// Extra time a forwarded poll gets beyond its wait, for the hop and the answer.
const POLL_FORWARD_MARGIN: Duration = Duration::from_secs(5);

/// The NodeService implementation.
#[derive(Clone)]
pub struct NodeSvc {
    ctx: Ctx,
}

impl NodeSvc {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        NodeSvc { ctx }
    }
}

#[tonic::async_trait]
impl NodeService for NodeSvc {
    async fn heartbeat(
        &self,
        mut req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        forward_to_leader!(self.ctx, req, NodeServiceClient::heartbeat);
        let hb = ValidHeartbeat::try_from(req.into_inner())?;
        let reply = self
            .ctx
            .monitor
            .send(Heartbeat {
                registration: hb.registration,
                cpu_usage: hb.cpu_usage,
                memory_usage: hb.memory_usage,
                agent_time_ms: hb.agent_time_ms,
                running: hb.running,
                leaving: hb.leaving,
            })
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?
            .map_err(|e| self.ctx.propose_status(e))?;
        Ok(Response::new(HeartbeatResponse {
            heartbeat_interval_ms: reply.interval_ms,
            abort: reply.abort,
            leader: Some(self.ctx.router.leader_hint_proto()),
            registered: reply.registered,
        }))
    }

    async fn poll_task(
        &self,
        mut req: Request<PollTaskRequest>,
    ) -> Result<Response<PollTaskResponse>, Status> {
        validate_node_id(&req.get_ref().node_id)?;
        let wait = Duration::from_millis(req.get_ref().wait_ms.min(POLL_WAIT_MS_MAX));
        if !req.metadata().contains_key("grpc-timeout") {
            req.set_timeout(wait + POLL_FORWARD_MARGIN);
        }
        forward_to_leader!(self.ctx, req, NodeServiceClient::poll_task);
        let PollTaskRequest {
            node_id,
            wait_ms: _,
            free_slots,
        } = req.into_inner();
        let deadline = Instant::now() + wait;
        let mut leader = self.ctx.router.subscribe();
        leader.borrow_and_update();
        // Linearizable: the first read sees everything committed before the poll arrived.
        self.ctx.read_barrier().await?;
        loop {
            let mut work = self
                .ctx
                .manifest
                .send(PollWork {
                    node_id: node_id.clone(),
                    limit: free_slots as usize,
                })
                .await
                .map_err(|e| self.ctx.mailbox_status(e))?;
            if !work.assignments.is_empty() || !work.abort.is_empty() {
                return Ok(Response::new(PollTaskResponse {
                    assignments: work.assignments,
                    abort: work.abort,
                    leader: Some(self.ctx.router.leader_hint_proto()),
                }));
            }
            tokio::select! {
                changed = work.changed.changed() => {
                    if changed.is_err() {
                        return Err(self.ctx.router.unavailable("controller is shutting down"));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = leader.changed() => {
                    if !self.ctx.router.view().is_leader {
                        // docs/failures.md S11: send the agent to the new leader at once.
                        return Err(self.ctx.router.unavailable("leadership moved; poll the new leader"));
                    }
                }
                _ = self.ctx.shutdown.cancelled() => {
                    return Err(self.ctx.router.unavailable("controller is shutting down"));
                }
            }
        }
        Ok(Response::new(PollTaskResponse {
            assignments: Vec::new(),
            abort: Vec::new(),
            leader: Some(self.ctx.router.leader_hint_proto()),
        }))
    }

    async fn ack_task_started(
        &self,
        mut req: Request<AckTaskStartedRequest>,
    ) -> Result<Response<AckTaskStartedResponse>, Status> {
        forward_to_leader!(self.ctx, req, NodeServiceClient::ack_task_started);
        let ValidAck(ack) = ValidAck::try_from(req.into_inner())?;
        let outcome = self
            .ctx
            .proposer
            .propose(self.ctx.term(), Kind::AckStarted(ack))
            .await
            .map_err(|e| self.ctx.propose_status(e))?;
        let proceed = outcome
            .task()
            .is_some_and(|t| t.status == TaskStatus::Running as i32 && !t.cancel_requested);
        Ok(Response::new(AckTaskStartedResponse { proceed }))
    }

    async fn report_task_result(
        &self,
        mut req: Request<ReportTaskResultRequest>,
    ) -> Result<Response<ReportTaskResultResponse>, Status> {
        forward_to_leader!(self.ctx, req, NodeServiceClient::report_task_result);
        let ValidReport(report) = ValidReport::try_from(req.into_inner())?;
        let outcome = self
            .ctx
            .proposer
            .propose(self.ctx.term(), Kind::ReportResult(report))
            .await
            .map_err(|e| self.ctx.propose_status(e))?;
        let duplicate = outcome.duplicate;
        let task = outcome.tasks.into_iter().next();
        Ok(Response::new(ReportTaskResultResponse { task, duplicate }))
    }
}
