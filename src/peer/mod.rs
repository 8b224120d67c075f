//! Both halves of the Raft peer RPC between controllers: the client transport that carries
//! the core's messages out ([`client`]: one reused channel and one sender task per peer) and
//! the `RaftService` that steps incoming ones into the raft actor ([`server`]).

pub mod client;
pub mod server;
