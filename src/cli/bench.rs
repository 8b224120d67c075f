//! `mlcp bench` (placeholder while it is written).
use super::args::BenchArgs;
use super::error::CliError;
/// Runs the bench.
pub async fn run(_args: BenchArgs) -> Result<(), CliError> {
    Err(CliError::Failed("todo".into()))
}
