//! Deterministic simulator for mlcp's Raft core (docs/simulator.md#the-raft-simulator, docs/architecture.md).
//!
//! One seed reproduces one run bit for bit: every draw comes from a ChaCha8 stream seeded by
//! it, maps iterate in key order, and the cores under test take their randomness from their
//! `Config::seed`. The pieces:
//! - [`disk`] — a simulated disk behind `mlcp::raft::Storage` that loses unsynced writes;
//! - [`net`] — a network that drops, delays, duplicates, reorders and partitions;
//! - [`kv`] — the replicated key-value state machine with a client session table;
//! - [`cluster`] — the harness that carries out each core's `Ready` one storage step at a
//!   time, so crashes land between any two steps (also used by the scenario tests);
//! - [`checker`] — the safety invariants, checked after every step;
//! - [`sim`] — swarm runs: parameters drawn from the seed, a safety phase under faults, then
//!   a liveness phase on a healed cluster.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod kv;
pub mod lifecycle;
pub mod net;
pub mod sim;

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Process exit codes of the simulator binary.
pub mod exit {
    /// Every run passed.
    pub const OK: i32 = 0;
    /// Bad command line.
    pub const USAGE: i32 = 2;
    /// A panic inside a core (or the harness).
    pub const CRASH: i32 = 10;
    /// A safety invariant broke.
    pub const SAFETY: i32 = 20;
    /// The healed cluster made no progress within the bound.
    pub const LIVENESS: i32 = 30;
}

/// The verdict of one seed, with the trace hash when the run finished.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Exit code (see [`exit`]).
    pub code: i32,
    /// What happened, one line.
    pub message: String,
    /// Trace hash (0 if the run panicked).
    pub trace_hash: u64,
    /// Run counters (empty if the run panicked).
    pub summary: String,
}

/// Runs `params`, turning a panic into [`exit::CRASH`].
pub fn run_seed(params: &sim::Params) -> Verdict {
    match catch_unwind(AssertUnwindSafe(|| sim::run(params))) {
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Verdict {
                code: exit::CRASH,
                message: format!("crash: {what}"),
                trace_hash: 0,
                summary: String::new(),
            }
        }
        Ok(report) => {
            let (code, message) = match report.outcome {
                sim::Outcome::Ok => (exit::OK, "ok".to_string()),
                sim::Outcome::Safety(v) => (exit::SAFETY, format!("safety violation: {v}")),
                sim::Outcome::Liveness(why) => (exit::LIVENESS, format!("liveness failure: {why}")),
            };
            Verdict {
                code,
                message,
                trace_hash: report.trace_hash,
                summary: report.summary,
            }
        }
    }
}
