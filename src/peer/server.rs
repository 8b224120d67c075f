//! The peer-only `RaftService`: receives other controllers' Raft messages.
//!
//! The service decodes a `RaftBatch`, checks that it is meant for this cluster and this
//! member, and steps every message into the raft actor — nothing else.

use actix::Addr;
use tonic::{Request, Response, Status};

use crate::actors::raft::{RaftActor, Step};
use crate::peer::client::RAFT_BATCH_BYTES_MAX;
use crate::proto::raft_service_server::{RaftService, RaftServiceServer};
use crate::proto::{RaftAck, RaftBatch};
use crate::raft::{Message, NodeId};

/// Receives Raft messages from peers and steps them into the local raft actor.
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Addr<RaftActor>,
    self_id: NodeId,
    cluster_name: String,
}

impl RaftGrpc {
    /// A service for member `self_id` of `cluster_name`, feeding `raft`.
    pub fn new(raft: Addr<RaftActor>, self_id: NodeId, cluster_name: String) -> RaftGrpc {
        RaftGrpc {
            raft,
            self_id,
            cluster_name,
        }
    }

    /// The tonic server for this service, accepting batches up to [`RAFT_BATCH_BYTES_MAX`].
    pub fn into_server(self) -> RaftServiceServer<RaftGrpc> {
        RaftServiceServer::new(self)
            .max_decoding_message_size(RAFT_BATCH_BYTES_MAX)
            .max_encoding_message_size(RAFT_BATCH_BYTES_MAX)
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn send(&self, request: Request<RaftBatch>) -> Result<Response<RaftAck>, Status> {
        let RaftBatch {
            from,
            cluster_name,
            messages,
            to,
        } = request.into_inner();
        if cluster_name != self.cluster_name {
            return Err(Status::failed_precondition(format!(
                "cluster_name: batch is for cluster {cluster_name:?} but this controller belongs to {:?}",
                self.cluster_name
            )));
        }
        if to != self.self_id.0 {
            return Err(Status::failed_precondition(format!(
                "to: batch is for member {to} but this controller is member {}",
                self.self_id
            )));
        }
        let mut decoded = Vec::with_capacity(messages.len());
        for (i, bytes) in messages.iter().enumerate() {
            let m = Message::decode(bytes)
                .map_err(|e| Status::invalid_argument(format!("messages[{i}]: {e}")))?;
            if m.from.0 != from || m.to != self.self_id {
                return Err(Status::invalid_argument(format!(
                    "messages[{i}]: from {} to {} does not match the batch (from {from} to {to})",
                    m.from, m.to
                )));
            }
            decoded.push(m);
        }
        let accepted = decoded.len() as u32;
        self.raft
            .send(Step { messages: decoded })
            .await
            .map_err(|e| Status::unavailable(format!("raft actor unavailable: {e}")))?;
        Ok(Response::new(RaftAck { accepted }))
    }
}
