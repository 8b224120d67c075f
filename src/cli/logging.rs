//! Log setup: tracing-subscriber to stderr, filtered by `RUST_LOG`, as text or JSON lines.

use tracing_subscriber::EnvFilter;

use super::args::LogFormat;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset (long
/// running roles log `info`, one-shot client commands only `warn` so stdout/stderr stay quiet).
/// A second call is a no-op (tests and the demo may call it more than once).
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // An already installed subscriber is fine: keep it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `--log-format` if given, else `MLCP_LOG_FORMAT` (`text`/`json`), else text.
pub fn resolve_format(flag: Option<LogFormat>) -> LogFormat {
    flag.unwrap_or_else(|| match std::env::var("MLCP_LOG_FORMAT").as_deref() {
        Ok("json") | Ok("JSON") => LogFormat::Json,
        _ => LogFormat::Text,
    })
}
