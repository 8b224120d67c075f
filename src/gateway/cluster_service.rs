//! `mlcp.v1.ClusterService`: status, nodes, leadership transfer, membership, snapshots and
//! node drain. Status and snapshots answer for the receiving controller; changes run on the
//! leader (followers forward).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::actors::manifest::{GetLiveReport, GetNode, GetStatus, ListNodes};
use crate::actors::raft::{
    ChangeMembership, GetRaftStatus, MemberChange, SnapshotFailure, TransferLeader, TriggerSnapshot,
};
use crate::gateway::context::Ctx;
use crate::gateway::convert::{parse_node_status_filter, validate_node_id};
use crate::gateway::forward::forward_to_leader;
use crate::gateway::forward::{FORWARD_RESPONSE_BYTES_MAX, Route};
use crate::manifest::command::{Kind, SetNodeStatus};
use crate::proto::cluster_service_client::ClusterServiceClient;
use crate::proto::cluster_service_server::ClusterService;
use crate::proto::{
    AddMemberRequest, AddMemberResponse, DrainNodeRequest, DrainNodeResponse,
    GetClusterStatusRequest, GetClusterStatusResponse, LeaderHint, ListNodesRequest,
    ListNodesResponse, Member, MemberRole, Node, NodeStatus, PromoteMemberRequest,
    PromoteMemberResponse, RemoveMemberRequest, RemoveMemberResponse, Suffrage,
    TakeSnapshotRequest, TakeSnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use crate::raft::{LogIndex, Membership, NodeId, Role};

/// Longest drain wait, in ms.
pub const DRAIN_DEADLINE_MS_MAX: u64 = 3_600_000;

/// How long a follower waits for the leader's member table before answering
/// `GetClusterStatus` alone: status must stay quick when the leader is gone.
pub const STATUS_FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// The ClusterService implementation.
#[derive(Clone)]
pub struct ClusterSvc {
    ctx: Ctx,
}

impl ClusterSvc {
    /// A service over `ctx`.
    pub fn new(ctx: Ctx) -> Self {
        ClusterSvc { ctx }
    }
}

fn role_of(r: Role) -> MemberRole {
    match r {
        Role::Follower => MemberRole::Follower,
        Role::PreCandidate => MemberRole::PreCandidate,
        Role::Candidate => MemberRole::Candidate,
        Role::Leader => MemberRole::Leader,
    }
}

/// The member table. `peers` (the leader's progress of the others) gives each other
/// member's match index; this controller's own row shows `self_durable`, the last index
/// durable in its own log, since `peers` never lists itself and 0 reads as "unknown".
fn members_of(
    membership: &Membership,
    addresses: &BTreeMap<NodeId, String>,
    self_id: NodeId,
    self_role: Role,
    leader: Option<NodeId>,
    peers: &BTreeMap<NodeId, crate::raft::PeerStatus>,
    self_durable: LogIndex,
) -> Vec<Member> {
    membership
        .members()
        .map(|id| {
            let role = if id == self_id {
                role_of(self_role)
            } else if Some(id) == leader {
                MemberRole::Leader
            } else if self_role == Role::Leader && membership.voters.contains(&id) {
                MemberRole::Follower
            } else {
                MemberRole::Unspecified
            };
            let suffrage = if membership.voters.contains(&id) {
                Suffrage::Voter
            } else {
                Suffrage::Learner
            };
            Member {
                id: id.get(),
                address: addresses.get(&id).cloned().unwrap_or_default(),
                role: role as i32,
                suffrage: suffrage as i32,
                match_index: if id == self_id {
                    self_durable.get()
                } else {
                    peers.get(&id).map(|p| p.match_index.get()).unwrap_or(0)
                },
            }
        })
        .collect()
}

/// The status of this controller as `GetClusterStatus` and the HTTP `/status` page show it.
pub async fn cluster_status(ctx: &Ctx) -> Result<GetClusterStatusResponse, Status> {
    let raft = ctx
        .raft
        .send(GetRaftStatus)
        .await
        .map_err(|e| ctx.mailbox_status(e))?;
    let manifest = ctx
        .manifest
        .send(GetStatus)
        .await
        .map_err(|e| ctx.mailbox_status(e))?;
    let monitor = ctx
        .manifest
        .send(GetLiveReport)
        .await
        .map_err(|e| ctx.mailbox_status(e))?;
    let st = &raft.status;
    let mut addresses = raft.addresses.clone();
    if let Some(a) = ctx.router.address_of(st.id) {
        addresses.entry(st.id).or_insert(a);
    }
    Ok(GetClusterStatusResponse {
        self_id: st.id.get(),
        members: members_of(
            &st.membership,
            &addresses,
            st.id,
            st.soft.role,
            st.soft.leader,
            &st.peers,
            raft.durable_index,
        ),
        leader_id: st.soft.leader.map(|l| l.get()).unwrap_or(0),
        leader_address: raft.leader_address.clone().unwrap_or_default(),
        term: st.soft.term.get(),
        commit_index: st.hard.commit.get(),
        applied_index: manifest.applied.get(),
        alerts: monitor.alerts,
        cluster_name: ctx.cluster_name.clone(),
        heartbeat_interval_ms: monitor.heartbeat_interval_ms,
        task_counts: manifest.task_counts,
    })
}

/// Nodes, with the leader's live figures (usage, last heartbeat: off the log, only the leader
/// has them) filled in by the manifest actor.
async fn nodes_with_usage(ctx: &Ctx, status: Option<NodeStatus>) -> Result<Vec<Node>, Status> {
    ctx.manifest
        .send(ListNodes { status })
        .await
        .map_err(|e| ctx.mailbox_status(e))
}

fn snapshot_status(e: SnapshotFailure) -> Status {
    match e {
        SnapshotFailure::Shutdown => Status::unavailable("controller is shutting down"),
        other => Status::internal(other.to_string()),
    }
}

fn member_id(field: &str, id: u64) -> Result<NodeId, Status> {
    if id == 0 {
        return Err(Status::invalid_argument(format!(
            "{field}: must be a positive Raft id"
        )));
    }
    Ok(NodeId(id))
}

/// The voter a `TransferLeader` for `target_id` may go to (`None`: the raft actor picks the
/// most up-to-date other voter), or why not in the caller's terms: an id that is not a
/// member is INVALID_ARGUMENT, a learner or "any other voter" with none is
/// FAILED_PRECONDITION; each names the id and lists the voters. These are answers about the
/// request, not about availability: UNAVAILABLE would send clients retrying at other members.
/// The current leader (`self_id`) passes: the transfer is a no-op.
fn transfer_target(
    membership: &Membership,
    self_id: NodeId,
    target_id: u64,
) -> Result<Option<NodeId>, Status> {
    let voters = membership
        .voters
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if target_id == 0 {
        return if membership.voters.iter().any(|v| *v != self_id) {
            Ok(None)
        } else {
            Err(Status::failed_precondition(format!(
                "target_id: 0 asks for another voter but there is none (voters: {voters})"
            )))
        };
    }
    let target = NodeId(target_id);
    if membership.learners.contains(&target) {
        return Err(Status::failed_precondition(format!(
            "target_id: {target} is a learner, not a voter; promote it first (voters: {voters})"
        )));
    }
    if !membership.voters.contains(&target) {
        return Err(Status::invalid_argument(format!(
            "target_id: {target} is not a member of the cluster (voters: {voters})"
        )));
    }
    Ok(Some(target))
}

impl ClusterSvc {
    async fn change(&self, change: MemberChange) -> Result<Vec<Member>, Status> {
        let ctx = &self.ctx;
        ctx.raft
            .send(ChangeMembership { change })
            .await
            .map_err(|e| ctx.mailbox_status(e))?
            .map_err(|f| ctx.raft_status(&f))?;
        Ok(cluster_status(ctx).await?.members)
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterSvc {
    async fn get_cluster_status(
        &self,
        mut req: Request<GetClusterStatusRequest>,
    ) -> Result<Response<GetClusterStatusResponse>, Status> {
        let mut status = cluster_status(&self.ctx).await?;
        // Only the leader knows every member's role and match index, and only its monitor
        // has the alerts and the heartbeat interval: a follower takes those from the leader
        // but keeps its own id, term and indexes (tools compare members by them). Without a
        // reachable leader it answers alone, roles and matches unknown.
        if let Ok(Route::Forward(ch)) = self.ctx.router.route(&mut req) {
            req.set_timeout(STATUS_FORWARD_TIMEOUT);
            match ClusterServiceClient::new(ch)
                .max_decoding_message_size(FORWARD_RESPONSE_BYTES_MAX)
                .get_cluster_status(req)
                .await
            {
                Ok(resp) => {
                    let leader = resp.into_inner();
                    status.members = leader.members;
                    status.alerts = leader.alerts;
                    status.heartbeat_interval_ms = leader.heartbeat_interval_ms;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding GetClusterStatus failed; answering locally")
                }
            }
        }
        Ok(Response::new(status))
    }

    async fn list_nodes(
        &self,
        mut req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let status = parse_node_status_filter("status", req.get_ref().status)?;
        // The leader has the live figures; without a reachable leader, show what is committed.
        if let Ok(Route::Forward(ch)) = self.ctx.router.route(&mut req) {
            match ClusterServiceClient::new(ch)
                .max_decoding_message_size(FORWARD_RESPONSE_BYTES_MAX)
                .list_nodes(req)
                .await
            {
                Ok(resp) => return Ok(resp),
                Err(e) => {
                    tracing::debug!(error = %e, "forwarding ListNodes failed; answering locally")
                }
            }
        }
        let nodes = nodes_with_usage(&self.ctx, status).await?;
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn transfer_leader(
        &self,
        mut req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        forward_to_leader!(self.ctx, req, ClusterServiceClient::transfer_leader);
        let TransferLeaderRequest { target_id } = req.into_inner();
        let raft = self
            .ctx
            .raft
            .send(GetRaftStatus)
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?;
        let to = transfer_target(&raft.status.membership, raft.status.id, target_id)?;
        let target = self
            .ctx
            .raft
            .send(TransferLeader { to })
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?
            .map_err(|f| self.ctx.raft_status(&f))?;
        Ok(Response::new(TransferLeaderResponse {
            leader: Some(LeaderHint {
                leader_id: target.get(),
                leader_address: self.ctx.router.address_of(target).unwrap_or_default(),
            }),
        }))
    }

    async fn add_member(
        &self,
        mut req: Request<AddMemberRequest>,
    ) -> Result<Response<AddMemberResponse>, Status> {
        forward_to_leader!(self.ctx, req, ClusterServiceClient::add_member);
        let AddMemberRequest { id, address } = req.into_inner();
        let id = member_id("id", id)?;
        if address.trim().is_empty() {
            return Err(Status::invalid_argument("address: must not be empty"));
        }
        // A member address that cannot be dialled would be committed to the configuration
        // and retried forever; refuse it before anything is proposed, as --peers does.
        if super::convert::peer_authority(address.trim()).is_none() {
            return Err(Status::invalid_argument(format!(
                "address: {address:?} is not HOST:PORT with a port in 1..=65535"
            )));
        }
        let members = self
            .change(MemberChange::AddLearner {
                id,
                address: address.trim().to_string(),
            })
            .await?;
        Ok(Response::new(AddMemberResponse { members }))
    }

    async fn promote_member(
        &self,
        mut req: Request<PromoteMemberRequest>,
    ) -> Result<Response<PromoteMemberResponse>, Status> {
        forward_to_leader!(self.ctx, req, ClusterServiceClient::promote_member);
        let PromoteMemberRequest { id } = req.into_inner();
        let members = self
            .change(MemberChange::Promote {
                id: member_id("id", id)?,
            })
            .await?;
        Ok(Response::new(PromoteMemberResponse { members }))
    }

    async fn remove_member(
        &self,
        mut req: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        forward_to_leader!(self.ctx, req, ClusterServiceClient::remove_member);
        let RemoveMemberRequest { id } = req.into_inner();
        let members = self
            .change(MemberChange::Remove {
                id: member_id("id", id)?,
            })
            .await?;
        Ok(Response::new(RemoveMemberResponse { members }))
    }

    async fn take_snapshot(
        &self,
        _req: Request<TakeSnapshotRequest>,
    ) -> Result<Response<TakeSnapshotResponse>, Status> {
        let info = self
            .ctx
            .raft
            .send(TriggerSnapshot)
            .await
            .map_err(|e| self.ctx.mailbox_status(e))?
            .map_err(snapshot_status)?;
        Ok(Response::new(TakeSnapshotResponse {
            index: info.index.get(),
            term: info.term.get(),
            size_bytes: info.size_bytes,
        }))
    }

    async fn drain_node(
        &self,
        mut req: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        validate_node_id(&req.get_ref().node_id)?;
        let deadline_ms = req.get_ref().deadline_ms.min(DRAIN_DEADLINE_MS_MAX);
        if !req.metadata().contains_key("grpc-timeout") {
            req.set_timeout(Duration::from_millis(deadline_ms) + Duration::from_secs(5));
        }
        forward_to_leader!(self.ctx, req, ClusterServiceClient::drain_node);
        let DrainNodeRequest {
            node_id,
            deadline_ms: _,
            drain,
        } = req.into_inner();
        let status = if drain {
            NodeStatus::Draining
        } else {
            NodeStatus::Healthy
        };
        self.ctx
            .proposer
            .propose(
                self.ctx.term(),
                Kind::SetNodeStatus(SetNodeStatus {
                    node_id: node_id.clone(),
                    status: status as i32,
                }),
            )
            .await
            .map_err(|e| self.ctx.propose_status(e))?;
        let until = Instant::now() + Duration::from_millis(deadline_ms);
        let mut applied = self.ctx.applied.clone();
        loop {
            let node = self
                .ctx
                .manifest
                .send(GetNode {
                    node_id: node_id.clone(),
                })
                .await
                .map_err(|e| self.ctx.mailbox_status(e))?
                .ok_or_else(|| Status::not_found(format!("node {node_id:?} not found")))?;
            let remaining = node.active_tasks;
            if !drain || remaining == 0 || Instant::now() >= until {
                return Ok(Response::new(DrainNodeResponse {
                    node: Some(node),
                    remaining_tasks: remaining,
                }));
            }
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = self.ctx.shutdown.cancelled() => {
                    return Err(Status::unavailable("controller is shutting down"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_target_must_be_a_voter() {
        let mut m = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
        m.learners.insert(NodeId(4));
        let me = NodeId(1);
        assert_eq!(transfer_target(&m, me, 2).unwrap(), Some(NodeId(2)));
        assert_eq!(
            transfer_target(&m, me, 1).unwrap(),
            Some(NodeId(1)),
            "self: no-op"
        );
        assert_eq!(transfer_target(&m, me, 0).unwrap(), None, "the actor picks");

        let e = transfer_target(&m, me, 9).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("9") && e.message().contains("voters: 1, 2, 3"));
        let e = transfer_target(&m, me, 4).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("4 is a learner"), "{}", e.message());

        let alone = Membership::with_voters([me]);
        let e = transfer_target(&alone, me, 0).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("voters: 1"), "{}", e.message());
    }
}
