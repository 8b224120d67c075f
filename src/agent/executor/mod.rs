//! Built-in task executors and the registry that picks one by task type (docs/architecture.md#agent).
//!
//! An executor is synchronous and CPU-bound: the runtime calls it on a blocking thread
//! (`tokio::task::spawn_blocking`) with the task's JSON input and a [`CancelFlag`] it must
//! poll at convenient points (between iterations, every few milliseconds of sleep). It
//! returns the result JSON or an [`ExecError`] that says whether another attempt could
//! succeed (docs/lifecycle.md#retries-and-backoff: an application error and an infrastructure loss are told apart).
//!
//! The registry never lets a task's input crash the agent: an unknown task type is a
//! non-retryable failure and a panic inside an executor is caught and reported as one.

mod basic;
pub mod matmul;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::Value;

pub use basic::{EchoExecutor, SLEEP_MS_MAX, SleepExecutor};
pub use matmul::{MatmulExecutor, VerifyError, verify_matmul};

/// Why a running attempt was asked to stop. The first reason set wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelReason {
    /// The controller told the agent to abort this attempt (superseded, cancelled, or not
    /// this node's any more — fencing, docs/lifecycle.md#attempts-and-fencing). Its outcome no longer matters.
    Aborted,
    /// The attempt ran past its `run_timeout_ms` (docs/lifecycle.md#retries-and-backoff).
    RunTimeout,
    /// The agent is shutting down and the shutdown grace period ran out.
    Shutdown,
}

impl CancelReason {
    fn to_u8(self) -> u8 {
        match self {
            CancelReason::Aborted => 1,
            CancelReason::RunTimeout => 2,
            CancelReason::Shutdown => 3,
        }
    }

    fn from_u8(raw: u8) -> Option<Self> {
        match raw {
            1 => Some(CancelReason::Aborted),
            2 => Some(CancelReason::RunTimeout),
            3 => Some(CancelReason::Shutdown),
            _ => None,
        }
    }
}

/// A cooperative cancellation flag shared between the runtime and one running attempt.
/// Cloning shares the flag. Cheap to poll (one relaxed atomic load).
#[derive(Clone, Debug, Default)]
pub struct CancelFlag {
    reason: Arc<AtomicU8>,
}

impl CancelFlag {
    /// A flag that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the attempt to stop. Only the first call's reason is kept.
    pub fn cancel(&self, reason: CancelReason) {
        let _ =
            self.reason
                .compare_exchange(0, reason.to_u8(), Ordering::AcqRel, Ordering::Acquire);
    }

    /// True once [`CancelFlag::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.reason.load(Ordering::Relaxed) != 0
    }

    /// The reason given by the first [`CancelFlag::cancel`], if any.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_u8(self.reason.load(Ordering::Acquire))
    }
}

/// Why an executor did not produce a result.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExecError {
    /// The task's input is wrong; another attempt would fail the same way.
    #[error("invalid task_data field `{field}`: {reason}")]
    InvalidInput {
        /// The JSON field that is wrong (`task_data` for the document as a whole).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No executor is registered for this task type.
    #[error("unknown task type `{task_type}` (this agent runs: {known})")]
    UnknownTaskType {
        /// The task type asked for.
        task_type: String,
        /// Comma-separated list of the types this agent knows.
        known: String,
    },
    /// The attempt stopped because its [`CancelFlag`] was set.
    #[error("cancelled: {}", describe_cancel(*.0))]
    Cancelled(CancelReason),
    /// The executor panicked; the panic was caught so the agent keeps running.
    #[error("executor panicked: {0}")]
    Panicked(String),
    /// A transient failure inside the executor (e.g. out of memory for this size right now).
    #[error("{0}")]
    Transient(String),
}

fn describe_cancel(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Aborted => "attempt aborted by the controller",
        CancelReason::RunTimeout => "run timeout exceeded",
        CancelReason::Shutdown => "agent shutting down",
    }
}

impl ExecError {
    /// Whether another attempt (possibly on another node) could succeed. Input errors,
    /// unknown types and panics are deterministic in the input, so they are not retryable;
    /// cancellation by timeout or shutdown and transient failures are.
    pub fn retryable(&self) -> bool {
        match self {
            ExecError::InvalidInput { .. }
            | ExecError::UnknownTaskType { .. }
            | ExecError::Panicked(_) => false,
            ExecError::Cancelled(_) | ExecError::Transient(_) => true,
        }
    }

    /// Shorthand for [`ExecError::InvalidInput`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ExecError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

/// One built-in task type. Implementations must be cheap to share across threads.
pub trait Executor: Send + Sync {
    /// Run one attempt on `task_data` (the task's JSON input). Long-running work polls
    /// `cancel` and returns [`ExecError::Cancelled`] soon after it is set.
    fn run(&self, task_data: &Value, cancel: &CancelFlag) -> Result<Value, ExecError>;
}

/// Executors by task type. Iterates in name order so listings are stable.
#[derive(Clone, Default)]
pub struct ExecutorRegistry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
}

impl std::fmt::Debug for ExecutorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorRegistry")
            .field("task_types", &self.task_types())
            .finish()
    }
}

impl ExecutorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in executors: `matmul`, `sleep` and `echo`.
    pub fn builtin() -> Self {
        let mut registry = Self::new();
        registry.register("matmul", MatmulExecutor);
        registry.register("sleep", SleepExecutor);
        registry.register("echo", EchoExecutor);
        registry
    }

    /// Add (or replace) the executor for `task_type`.
    pub fn register(&mut self, task_type: impl Into<String>, executor: impl Executor + 'static) {
        self.executors.insert(task_type.into(), Arc::new(executor));
    }

    /// The registered task types, sorted.
    pub fn task_types(&self) -> Vec<&str> {
        self.executors.keys().map(String::as_str).collect()
    }

    /// Run `task_type` on `task_data`. Never panics: an unknown type and a panic inside the
    /// executor both come back as non-retryable errors.
    pub fn run(
        &self,
        task_type: &str,
        task_data: &Value,
        cancel: &CancelFlag,
    ) -> Result<Value, ExecError> {
        let Some(executor) = self.executors.get(task_type) else {
            return Err(ExecError::UnknownTaskType {
                task_type: task_type.to_owned(),
                known: self.task_types().join(", "),
            });
        };
        // The executor only sees shared references; a panic leaves nothing half-updated
        // that we read afterwards, so asserting unwind safety is sound.
        match catch_unwind(AssertUnwindSafe(|| executor.run(task_data, cancel))) {
            Ok(outcome) => outcome,
            Err(payload) => Err(ExecError::Panicked(panic_message(payload.as_ref()))),
        }
    }

    /// Parse `task_data` (a JSON string as carried by the API) and run it. A string that is
    /// not JSON is a non-retryable [`ExecError::InvalidInput`] on field `task_data`.
    pub fn run_json(
        &self,
        task_type: &str,
        task_data: &str,
        cancel: &CancelFlag,
    ) -> Result<Value, ExecError> {
        let data: Value = if task_data.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(task_data)
                .map_err(|e| ExecError::invalid("task_data", format!("not JSON: {e}")))?
        };
        self.run(task_type, &data, cancel)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Read an unsigned integer field of a JSON object, checking it lies in `range`.
pub(crate) fn u64_field(
    data: &Value,
    field: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ExecError> {
    let object = data
        .as_object()
        .ok_or_else(|| ExecError::invalid("task_data", "must be a JSON object"))?;
    let value = object
        .get(field)
        .ok_or_else(|| ExecError::invalid(field, "missing"))?;
    let number = value.as_u64().ok_or_else(|| {
        ExecError::invalid(
            field,
            format!("must be a non-negative integer, got {value}"),
        )
    })?;
    if !range.contains(&number) {
        return Err(ExecError::invalid(
            field,
            format!(
                "must be in {}..={}, got {number}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Panics;
    impl Executor for Panics {
        fn run(&self, _: &Value, _: &CancelFlag) -> Result<Value, ExecError> {
            panic!("boom on purpose")
        }
    }

    #[test]
    fn unknown_type_is_a_clear_non_retryable_error() {
        let err = ExecutorRegistry::builtin()
            .run("nope", &json!({}), &CancelFlag::new())
            .unwrap_err();
        assert!(!err.retryable());
        let text = err.to_string();
        assert!(text.contains("unknown task type `nope`"), "{text}");
        assert!(text.contains("echo, matmul, sleep"), "{text}");
    }

    #[test]
    fn a_panic_is_caught_and_reported() {
        let mut registry = ExecutorRegistry::new();
        registry.register("panics", Panics);
        let err = registry
            .run("panics", &json!(null), &CancelFlag::new())
            .unwrap_err();
        assert_eq!(err, ExecError::Panicked("boom on purpose".into()));
        assert!(!err.retryable());
    }

    #[test]
    fn task_data_that_is_not_json_names_the_field() {
        let err = ExecutorRegistry::builtin()
            .run_json("echo", "{not json", &CancelFlag::new())
            .unwrap_err();
        assert!(matches!(
            err,
            ExecError::InvalidInput {
                field: "task_data",
                ..
            }
        ));
    }

    #[test]
    fn first_cancel_reason_wins() {
        let flag = CancelFlag::new();
        assert!(!flag.is_cancelled());
        assert_eq!(flag.reason(), None);
        flag.clone().cancel(CancelReason::RunTimeout);
        flag.cancel(CancelReason::Aborted);
        assert!(flag.is_cancelled());
        assert_eq!(flag.reason(), Some(CancelReason::RunTimeout));
    }

    #[test]
    fn retryable_classification() {
        assert!(ExecError::Cancelled(CancelReason::Shutdown).retryable());
        assert!(ExecError::Transient("x".into()).retryable());
        assert!(!ExecError::invalid("n", "bad").retryable());
    }
}
