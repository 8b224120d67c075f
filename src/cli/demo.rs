//! `mlcp demo` (placeholder while it is written).
use super::args::DemoArgs;
use super::error::CliError;
/// Runs the demo.
pub async fn run(_args: DemoArgs) -> Result<(), CliError> {
    Err(CliError::Failed("todo".into()))
}
