//! The `mlcp` command line: clap commands ([`args`]), layered configuration ([`config`]:
//! TOML file < `MLCP_*` environment < flags), logging ([`logging`]), the client commands
//! ([`commands`], over [`crate::client`]) with tables ([`crate::console`]) or JSON
//! ([`json`]), and the dispatch to the server, the agent and the tools ([`crate::tools`]).
//!
//! Exit status: 0 on success; 2 for a usage error (clap's own, or a flag value only we can
//! check); 1 for everything else, with one line on stderr (no reachable server names every
//! address tried; a gRPC error prints its code and message).

// Output to stdout goes through `out::write` (the `out!`/`outln!` macros), which ends the
// process quietly when the reader closed the pipe; `println!` would panic instead.
#![deny(clippy::print_stdout)]

pub mod args;
pub mod commands;
pub mod config;
pub mod error;
pub mod json;
pub mod logging;

use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};
use error::CliError;

/// Entry point of the `mlcp` binary: parses the command line (clap prints usage and exits 2 on
/// bad flags), sets up logging, runs the command and maps the outcome to an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Server(_) | Command::Agent(_) => "info",
        Command::Demo(_) | Command::Bench(_) | Command::BenchLiveness(_) => "warn",
        Command::Task { .. } | Command::Node { .. } | Command::Cluster { .. } => "warn",
    };
    logging::init(logging::resolve_format(cli.log_format), default_filter);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::io("starting the tokio runtime"))
}

fn run(cli: Cli) -> Result<(), CliError> {
    let file = cli.config.as_deref();
    match cli.command {
        Command::Server(flags) => {
            let opts = config::server_options(file, &flags)?;
            // The controller runs its own actix system on its own runtime and blocks this
            // thread; a small runtime beside it only turns SIGINT/SIGTERM into the token.
            let signals_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("mlcp-signals")
                .enable_all()
                .build()
                .map_err(CliError::io("starting the signal watcher"))?;
            let shutdown = signals_rt.block_on(async { crate::console::signals::shutdown_token() });
            let outcome = crate::controller::run_server(opts, shutdown);
            signals_rt.shutdown_background();
            outcome.map_err(CliError::from)
        }
        Command::Agent(flags) => {
            let opts = config::agent_options(file, &flags)?;
            tokio_runtime()?.block_on(async move {
                let shutdown = crate::console::signals::shutdown_token();
                run_agent(opts, shutdown).await
            })
        }
        Command::Task { command } => tokio_runtime()?.block_on(commands::task(command, file)),
        Command::Node { command } => tokio_runtime()?.block_on(commands::node(command, file)),
        Command::Cluster { command } => tokio_runtime()?.block_on(commands::cluster(command, file)),
        Command::Demo(args) => tokio_runtime()?
            .block_on(crate::tools::demo::run(args))
            .map_err(CliError::from),
        Command::Bench(args) => tokio_runtime()?
            .block_on(crate::tools::bench::run(args))
            .map_err(CliError::from),
        Command::BenchLiveness(args) => tokio_runtime()?
            .block_on(crate::tools::bench_liveness::run(args))
            .map_err(CliError::from),
    }
}

/// Runs the agent until `shutdown` is cancelled.
async fn run_agent(
    opts: crate::agent::AgentOptions,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), CliError> {
    crate::agent::run(opts, shutdown)
        .await
        .map_err(CliError::from)
}
