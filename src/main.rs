//! The `mlcp` binary: every role (controller, agent, client, demo, bench) is a subcommand of
//! this one executable; see `mlcp --help` and `crate::cli`.

fn main() -> std::process::ExitCode {
    mlcp::cli::main()
}
