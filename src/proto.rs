//! The generated `mlcp.v1` protocol: prost messages and tonic clients/servers for
//! `TaskService`, `NodeService`, `ClusterService` and the peer-only `RaftService`
//! (sources in `proto/mlcp/v1/`). This is the only module that includes generated code.
//!
//! Conventions of the API (see `proto/mlcp/v1/types.proto`): timestamps are unix
//! milliseconds (`int64`), durations end in `_ms`, task ids are UUID v7 strings, payloads are
//! JSON strings. Maps are generated as `BTreeMap` so iteration order is deterministic.
//!
//! [`internal`] holds the replicated-state commands, results and snapshot format used by
//! `crate::manifest`; it is not served to clients.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("mlcp.v1");

/// Replicated-state commands (`mlcp.v1.internal`), carried as bytes in Raft entries.
pub mod internal {
    tonic::include_proto!("mlcp.v1.internal");
}

/// The encoded `FileDescriptorSet` of every `.proto` file (for reflection or tooling).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/mlcp_descriptor.bin"));
