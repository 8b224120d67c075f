//! Newtypes for the manifest's identifiers so a task id, a node id and an attempt number
//! cannot be swapped by accident.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A task id: a UUID v7 chosen by the controller that accepted the submission, so ids sort
/// by creation time (docs/architecture.md#identifiers). Displayed in the hyphenated lowercase form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub Uuid);

impl TaskId {
    /// A fresh UUID v7 for `unix_ms`, with the random bits taken from `random` (the caller's
    /// RNG, so pure callers stay deterministic). Used by proposers, never by `apply`.
    pub fn new_v7(unix_ms: u64, random: [u8; 10]) -> Self {
        TaskId(uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid())
    }

    /// Parses the textual form; the error names the bad input.
    pub fn parse(text: &str) -> Result<Self, TaskIdError> {
        Uuid::parse_str(text).map(TaskId).map_err(|_| TaskIdError {
            text: text.chars().take(64).collect(),
        })
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = TaskIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskId::parse(s)
    }
}

/// A task id that is not a UUID (at most its first 64 characters are kept).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("task_id {text:?} is not a UUID")]
pub struct TaskIdError {
    /// The offending text (truncated).
    pub text: String,
}

/// An attempt number of a task (docs/lifecycle.md#attempts-and-fencing): 1 for the first assignment, +1 for each later
/// one; 0 means "never assigned". Only grows, and fences out superseded attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt after this one.
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
