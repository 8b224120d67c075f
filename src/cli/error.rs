//! Errors of the `mlcp` command line and how each maps to an exit status and one stderr line.

use super::config::ConfigError;

/// Why a command failed. Every variant prints as a single line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Configuration could not be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No controller answered; names every address tried with the reason it failed.
    #[error("no reachable mlcp server; tried {}", crate::client::format_tried(.tried))]
    NoServer {
        /// `(address, why it failed)` in the order tried.
        tried: Vec<(String, String)>,
    },
    /// The controller could not start or failed while serving (port in use, data dir of
    /// another node or cluster, …).
    #[error(transparent)]
    Server(#[from] crate::controller::ServerError),
    /// A tool (demo, bench) failed.
    #[error(transparent)]
    Tool(#[from] crate::tools::ToolError),
    /// The agent could not run (bad option, registration refused).
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
    /// A controller answered with a gRPC error.
    #[error("server error {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message (names the bad field for INVALID_ARGUMENT).
        message: String,
    },
    /// A flag value was malformed in a way clap cannot check (e.g. `--data` not JSON).
    #[error("{0}")]
    Usage(String),
    /// The command ran but its outcome was a failure (e.g. `--wait` saw FAILED).
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
}

impl CliError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
        let what = what.into();
        move |source| CliError::Io { what, source }
    }

    /// The process exit status: 2 for usage errors (as clap uses), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Tool(crate::tools::ToolError::Usage(_)) => 2,
            _ => 1,
        }
    }
}

impl From<crate::client::ClientError> for CliError {
    fn from(e: crate::client::ClientError) -> Self {
        match e {
            crate::client::ClientError::NoServer { tried } => CliError::NoServer { tried },
            crate::client::ClientError::Status(status) => status.into(),
            crate::client::ClientError::Cancelled => CliError::Failed("cancelled".into()),
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        CliError::Status {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
