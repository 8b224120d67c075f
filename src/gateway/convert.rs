//! Proto ↔ domain conversions for the gateway: every request is checked here, before anything
//! is proposed, and a bad field becomes `INVALID_ARGUMENT` naming it (docs/architecture.md#bad-input).
//!
//! Each conversion destructures the request message fully, so a field added to the proto
//! breaks the build here until it is handled.

#![warn(missing_docs)]

use tonic::Status;
use uuid::Uuid;

use crate::manifest::validate::{self, Limits};
use crate::manifest::{ManifestError, TaskId};
use crate::proto;
use crate::proto::internal;

pub use crate::manifest::validate::{
    IDEMPOTENCY_KEY_CHARS_MAX, MAX_ATTEMPTS_MAX, NODE_ID_CHARS_MAX, TASK_TYPE_CHARS_MAX,
};

/// Largest `task_data` / `result_data` document, in bytes (docs/architecture.md#bad-input: default 1 MiB).
pub const TASK_DATA_BYTES_MAX: usize = validate::TASK_DATA_BYTES_MAX_DEFAULT;
/// Longest error text kept from a report, in bytes (longer text is cut, not refused).
pub const ERROR_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Default page size of ListTasks (count).
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Largest page size of ListTasks (count).
pub const PAGE_SIZE_MAX: usize = 1000;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid {field}: {why}"))
}

/// The manifest's validation error (which names the field) as `INVALID_ARGUMENT`.
fn refused(e: ManifestError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Check a task id: a UUID (ours are v7). Returns the canonical hyphenated form.
pub fn parse_task_id(field: &str, id: &str) -> Result<String, Status> {
    if id.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    validate::validate_task_id(field, id)
        .map(|t| t.to_string())
        .map_err(refused)
}

/// Check a node id: non-empty, at most `NODE_ID_CHARS_MAX` characters, no control characters.
pub fn validate_node_id(id: &str) -> Result<(), Status> {
    validate::validate_node_id(id).map_err(refused)
}

/// Check an attempt number carried by an agent call (attempts start at 1).
pub fn validate_attempt(field: &str, attempt: u32) -> Result<(), Status> {
    if attempt == 0 {
        return Err(invalid(field, "must be at least 1 (attempts start at 1)"));
    }
    Ok(())
}

/// A task status filter: `UNSPECIFIED` = all; an unknown number is refused.
pub fn parse_status_filter(raw: i32) -> Result<Option<proto::TaskStatus>, Status> {
    validate::validate_status_filter(raw).map_err(refused)
}

/// A node status filter: `UNSPECIFIED` = all; an unknown number is refused.
pub fn parse_node_status_filter(
    field: &str,
    raw: i32,
) -> Result<Option<proto::NodeStatus>, Status> {
    match proto::NodeStatus::try_from(raw) {
        Ok(proto::NodeStatus::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(invalid(field, format!("{raw} is not a known node status"))),
    }
}

/// A checked SubmitTask, ready to become a `SubmitTask` command once the proposer has chosen
/// the id.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSubmit(internal::SubmitTask);

impl ValidSubmit {
    /// The command with the proposer-chosen `task_id` (a UUID v7) filled in.
    pub fn into_command(self, task_id: Uuid) -> internal::SubmitTask {
        internal::SubmitTask {
            task_id: task_id.hyphenated().to_string(),
            ..self.0
        }
    }
}

impl TryFrom<proto::SubmitTaskRequest> for ValidSubmit {
    type Error = Status;

    /// The manifest's rules (task type, JSON and its size, attempts, key, retry policy,
    /// labels), plus docs/architecture.md#bad-input, `max_attempts` 0 is refused rather than defaulted, because a
    /// client that forgot the field should hear about it.
    fn try_from(req: proto::SubmitTaskRequest) -> Result<Self, Status> {
        validate::validate_submit_request(&req, &Limits::default()).map_err(refused)?;
        let proto::SubmitTaskRequest {
            task_type,
            task_data,
            max_attempts,
            priority,
            constraints,
            resources,
            idempotency_key,
            retry_policy,
            run_timeout_ms,
            queue_timeout_ms,
        } = req;
        if max_attempts == 0 {
            return Err(invalid(
                "max_attempts",
                format!("0 is outside 1..={MAX_ATTEMPTS_MAX}"),
            ));
        }
        Ok(ValidSubmit(internal::SubmitTask {
            task_id: String::new(),
            task_type,
            task_data,
            max_attempts,
            priority,
            constraints,
            resources,
            idempotency_key,
            retry_policy,
            run_timeout_ms,
            queue_timeout_ms,
        }))
    }
}

/// A checked ReportTaskResult.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidReport(pub internal::ReportResult);

impl TryFrom<proto::ReportTaskResultRequest> for ValidReport {
    type Error = Status;

    fn try_from(mut req: proto::ReportTaskResultRequest) -> Result<Self, Status> {
        if req.error.len() > ERROR_TEXT_BYTES_MAX {
            let mut cut = ERROR_TEXT_BYTES_MAX;
            while !req.error.is_char_boundary(cut) {
                cut -= 1;
            }
            req.error.truncate(cut);
        }
        validate::validate_report(&req, &Limits::default()).map_err(refused)?;
        if !req.success && !req.result_data.is_empty() {
            validate::validate_json(
                "result_data",
                &req.result_data,
                Some(TASK_DATA_BYTES_MAX),
                true,
            )
            .map_err(refused)?;
        }
        let proto::ReportTaskResultRequest {
            task_id,
            attempt,
            node_id,
            success,
            result_data,
            error,
            retryable,
        } = req;
        Ok(ValidReport(internal::ReportResult {
            task_id: parse_task_id("task_id", &task_id)?,
            attempt,
            node_id,
            success,
            result_data,
            error,
            retryable,
        }))
    }
}

/// A checked AckTaskStarted.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidAck(pub internal::AckStarted);

impl TryFrom<proto::AckTaskStartedRequest> for ValidAck {
    type Error = Status;

    fn try_from(req: proto::AckTaskStartedRequest) -> Result<Self, Status> {
        let proto::AckTaskStartedRequest {
            task_id,
            attempt,
            node_id,
        } = req;
        let task_id = parse_task_id("task_id", &task_id)?;
        validate_attempt("attempt", attempt)?;
        validate_node_id(&node_id)?;
        Ok(ValidAck(internal::AckStarted {
            task_id,
            attempt,
            node_id,
        }))
    }
}

/// A checked Heartbeat: the registration part (proposed only when it changed) and the live
/// part (kept in the leader's memory, never logged).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidHeartbeat {
    /// Registration as the agent advertises it.
    pub registration: internal::RegisterNode,
    /// CPU usage, percent 0..=100.
    pub cpu_usage: f64,
    /// Memory usage, percent 0..=100.
    pub memory_usage: f64,
    /// Agent wall clock (unix ms); shown, never trusted.
    pub agent_time_ms: i64,
    /// Attempts the agent runs now, `(task_id, attempt)`.
    pub running: Vec<proto::RunningAttempt>,
    /// The agent is shutting down cleanly (its last heartbeat).
    pub leaving: bool,
}

impl TryFrom<proto::HeartbeatRequest> for ValidHeartbeat {
    type Error = Status;

    fn try_from(req: proto::HeartbeatRequest) -> Result<Self, Status> {
        validate::validate_heartbeat(&req).map_err(refused)?;
        let proto::HeartbeatRequest {
            node_id,
            address,
            cloud_provider,
            region,
            capacity,
            labels,
            cpu_usage,
            memory_usage,
            agent_time,
            running,
            leaving,
        } = req;
        for (i, r) in running.iter().enumerate() {
            validate_attempt(&format!("running[{i}].attempt"), r.attempt)?;
        }
        Ok(ValidHeartbeat {
            registration: internal::RegisterNode {
                node_id,
                address,
                cloud_provider,
                region,
                capacity,
                labels,
            },
            cpu_usage,
            memory_usage,
            agent_time_ms: agent_time,
            running,
            leaving,
        })
    }
}

pub use crate::client::peer_authority;

/// Page size of a list call: 0 = default, capped at the maximum.
pub fn page_size(raw: u32) -> usize {
    match raw as usize {
        0 => PAGE_SIZE_DEFAULT,
        n => n.min(PAGE_SIZE_MAX),
    }
}

/// A ListTasks page token: the id of the last task of the previous page. Empty = first page.
pub fn parse_page_token(field: &str, token: &str) -> Result<Option<TaskId>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    TaskId::parse(token).map(Some).map_err(|_| {
        invalid(
            field,
            format!("{token:?} is not a token from a previous page"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn submit() -> proto::SubmitTaskRequest {
        proto::SubmitTaskRequest {
            task_type: "matmul".into(),
            task_data: r#"{"n": 256}"#.into(),
            max_attempts: 3,
            ..Default::default()
        }
    }

    fn assert_invalid<T: std::fmt::Debug>(r: Result<T, Status>, field: &str) {
        let err = r.expect_err("must be refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().starts_with(&format!("invalid {field}:")),
            "{field} not named: {err:?}"
        );
    }

    #[test]
    fn good_submit_is_accepted() {
        let v = ValidSubmit::try_from(submit()).unwrap();
        let id = Uuid::now_v7();
        let cmd = v.into_command(id);
        assert_eq!(cmd.task_id, id.hyphenated().to_string());
        assert_eq!(cmd.task_type, "matmul");
    }

    #[test]
    fn submit_task_type_bad_inputs() {
        for bad in ["", "MatMul", "mat mul", "matmul!", "ü"] {
            assert_invalid(
                ValidSubmit::try_from(proto::SubmitTaskRequest {
                    task_type: bad.into(),
                    ..submit()
                }),
                "task_type",
            );
        }
        let long = "a".repeat(TASK_TYPE_CHARS_MAX + 1);
        assert_invalid(
            ValidSubmit::try_from(proto::SubmitTaskRequest {
                task_type: long,
                ..submit()
            }),
            "task_type",
        );
        let ok = "a.b-c_9".repeat(18); // 126 characters
        assert!(
            ValidSubmit::try_from(proto::SubmitTaskRequest {
                task_type: ok,
                ..submit()
            })
            .is_ok()
        );
    }

    #[test]
    fn submit_task_data_bad_inputs() {
        for bad in ["", "{", "not json", "{\"a\": }"] {
            assert_invalid(
                ValidSubmit::try_from(proto::SubmitTaskRequest {
                    task_data: bad.into(),
                    ..submit()
                }),
                "task_data",
            );
        }
        let big = format!("\"{}\"", "x".repeat(TASK_DATA_BYTES_MAX));
        assert_invalid(
            ValidSubmit::try_from(proto::SubmitTaskRequest {
                task_data: big,
                ..submit()
            }),
            "task_data",
        );
    }

    #[test]
    fn submit_max_attempts_bad_inputs() {
        for bad in [0, MAX_ATTEMPTS_MAX + 1, u32::MAX] {
            assert_invalid(
                ValidSubmit::try_from(proto::SubmitTaskRequest {
                    max_attempts: bad,
                    ..submit()
                }),
                "max_attempts",
            );
        }
        for ok in [1, MAX_ATTEMPTS_MAX] {
            assert!(
                ValidSubmit::try_from(proto::SubmitTaskRequest {
                    max_attempts: ok,
                    ..submit()
                })
                .is_ok()
            );
        }
    }

    #[test]
    fn submit_retry_policy_and_key_bad_inputs() {
        let policy = |p: proto::RetryPolicy| proto::SubmitTaskRequest {
            retry_policy: Some(p),
            ..submit()
        };
        assert_invalid(
            ValidSubmit::try_from(policy(proto::RetryPolicy {
                backoff_multiplier: 0.5,
                ..Default::default()
            })),
            "retry_policy.backoff_multiplier",
        );
        assert_invalid(
            ValidSubmit::try_from(policy(proto::RetryPolicy {
                jitter: 1.5,
                ..Default::default()
            })),
            "retry_policy.jitter",
        );
        assert_invalid(
            ValidSubmit::try_from(proto::SubmitTaskRequest {
                idempotency_key: "k".repeat(IDEMPOTENCY_KEY_CHARS_MAX + 1),
                ..submit()
            }),
            "idempotency_key",
        );
    }

    #[test]
    fn task_ids_must_be_uuids() {
        assert_invalid(parse_task_id("task_id", ""), "task_id");
        assert_invalid(parse_task_id("task_id", "not-a-uuid"), "task_id");
        assert_invalid(parse_task_id("running.task_id", "x"), "running.task_id");
        let id = Uuid::now_v7();
        assert_eq!(
            parse_task_id("task_id", &id.simple().to_string()).unwrap(),
            id.hyphenated().to_string()
        );
    }

    #[test]
    fn status_filters() {
        assert_eq!(parse_status_filter(0).unwrap(), None);
        assert_eq!(
            parse_status_filter(4).unwrap(),
            Some(proto::TaskStatus::Completed)
        );
        assert_invalid(parse_status_filter(99), "status");
        assert_invalid(parse_status_filter(-1), "status");
        assert_invalid(parse_node_status_filter("status", 42), "status");
    }

    fn heartbeat() -> proto::HeartbeatRequest {
        proto::HeartbeatRequest {
            node_id: "n1".into(),
            cpu_usage: 12.5,
            memory_usage: 40.0,
            ..Default::default()
        }
    }

    #[test]
    fn heartbeat_bad_inputs() {
        assert_invalid(
            ValidHeartbeat::try_from(proto::HeartbeatRequest {
                node_id: String::new(),
                ..heartbeat()
            }),
            "node_id",
        );
        for bad in [-0.1, 100.5, f64::NAN, f64::INFINITY] {
            assert_invalid(
                ValidHeartbeat::try_from(proto::HeartbeatRequest {
                    cpu_usage: bad,
                    ..heartbeat()
                }),
                "cpu_usage",
            );
            assert_invalid(
                ValidHeartbeat::try_from(proto::HeartbeatRequest {
                    memory_usage: bad,
                    ..heartbeat()
                }),
                "memory_usage",
            );
        }
        for ok in [0.0, 100.0] {
            assert!(
                ValidHeartbeat::try_from(proto::HeartbeatRequest {
                    cpu_usage: ok,
                    memory_usage: ok,
                    ..heartbeat()
                })
                .is_ok()
            );
        }
    }

    fn report() -> proto::ReportTaskResultRequest {
        proto::ReportTaskResultRequest {
            task_id: Uuid::now_v7().to_string(),
            attempt: 1,
            node_id: "n1".into(),
            success: true,
            result_data: r#"{"ok": true}"#.into(),
            ..Default::default()
        }
    }

    #[test]
    fn report_bad_inputs() {
        assert!(ValidReport::try_from(report()).is_ok());
        assert_invalid(
            ValidReport::try_from(proto::ReportTaskResultRequest {
                result_data: "{oops".into(),
                ..report()
            }),
            "result_data",
        );
        assert_invalid(
            ValidReport::try_from(proto::ReportTaskResultRequest {
                task_id: "x".into(),
                ..report()
            }),
            "task_id",
        );
        assert_invalid(
            ValidReport::try_from(proto::ReportTaskResultRequest {
                attempt: 0,
                ..report()
            }),
            "attempt",
        );
        assert_invalid(
            ValidReport::try_from(proto::ReportTaskResultRequest {
                node_id: String::new(),
                ..report()
            }),
            "node_id",
        );
        // A failure needs no result document.
        assert!(
            ValidReport::try_from(proto::ReportTaskResultRequest {
                success: false,
                result_data: String::new(),
                error: "boom".into(),
                ..report()
            })
            .is_ok()
        );
    }

    #[test]
    fn page_tokens_and_sizes() {
        assert_eq!(page_size(0), PAGE_SIZE_DEFAULT);
        assert_eq!(page_size(5), 5);
        assert_eq!(page_size(1_000_000), PAGE_SIZE_MAX);
        assert_eq!(parse_page_token("page_token", "").unwrap(), None);
        let id = Uuid::now_v7();
        assert_eq!(
            parse_page_token("page_token", &id.to_string()).unwrap(),
            Some(TaskId(id))
        );
        assert_invalid(parse_page_token("page_token", "abc"), "page_token");
    }
}
