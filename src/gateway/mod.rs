//! The tonic services over the actors that clients and agents call.
//!
//! - [`task_service`], [`node_service`], [`cluster_service`]: the `mlcp.v1` services — each
//!   handler decodes, calls an actor and maps the error;
//! - [`convert`]: request validation (`TryFrom` into commands; `INVALID_ARGUMENT` names the
//!   field);
//! - [`forward`]: the leader view and one-hop forwarding from followers to the leader, with
//!   the `x-mlcp-leader` hint on UNAVAILABLE;
//! - [`context`]: what the services share, and the actor-error → gRPC-status mapping.
//!
//! The peer `RaftService` is [`crate::peer`]; process start-up is [`crate::controller`].

pub mod cluster_service;
pub mod context;
pub mod convert;
pub mod forward;
pub mod node_service;
pub mod task_service;
