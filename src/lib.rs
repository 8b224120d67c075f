//! mlcp — an ML control plane: a Raft-replicated task manifest that hands compute tasks to
//! agents on nodes across clouds and regions.
//!
//! Layers (arrows point down only; see `docs/architecture.md`):
//! `cli` → `gateway` → `actors` → (`raft`, `manifest`, `scheduler`, `storage`); `agent` uses
//! only the generated protocol (`proto`).

pub mod actors;
pub mod agent;
pub mod cli;
pub mod client;
pub mod console;
pub mod controller;
pub mod gateway;
pub mod leader;
pub mod liveness;
pub mod manifest;
pub mod peer;
pub mod proto;
pub mod raft;
pub mod scheduler;
pub mod storage;
pub mod testkit;
pub mod tools;
