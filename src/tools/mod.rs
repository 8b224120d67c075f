//! The tools built into `mlcp`: the demo ([`demo`]) and the benchmarks ([`bench`],
//! [`bench_liveness`]). Each starts a local cluster of child processes
//! ([`crate::testkit::local_cluster`]) or drives one it is pointed at, through the failover
//! client ([`crate::client`]).

// Output to stdout goes through `console::out::write` (the `out!`/`outln!` macros).
#![deny(clippy::print_stdout)]

pub mod bench;
pub mod bench_liveness;
pub mod demo;

use crate::client::ClientError;

/// Why a tool failed. Every variant prints as a single line.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A flag value only the tool can check (printed with usage status 2).
    #[error("{0}")]
    Usage(String),
    /// The tool ran but its outcome was a failure (a task did not verify, no leader, …).
    #[error("{0}")]
    Failed(String),
    /// The process could not do something locally (spawn a child, create a temp dir, …).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A call to the cluster failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ToolError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ToolError {
        let what = what.into();
        move |source| ToolError::Io { what, source }
    }
}

impl From<tonic::Status> for ToolError {
    fn from(status: tonic::Status) -> Self {
        ToolError::Client(ClientError::Status(status))
    }
}
