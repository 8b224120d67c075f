//! Proto ↔ domain conversions for the gateway: every request is checked here, before anything
//! is proposed, and a bad field becomes `INVALID_ARGUMENT` naming it (issue 3 "Bad input").
//!
//! Each conversion destructures the request message fully, so a field added to the proto
//! breaks the build here until it is handled.

use tonic::Status;
use uuid::Uuid;

use crate::manifest::TaskId;

use crate::proto;
use crate::proto::internal;

/// Longest `task_type`, in characters (issue 3).
pub const TASK_TYPE_CHARS_MAX: usize = 128;
/// Largest `task_data` / `result_data` document, in bytes (issue 3: default 1 MiB).
pub const TASK_DATA_BYTES_MAX: usize = 1024 * 1024;
/// Largest `max_attempts` (issue 3).
pub const MAX_ATTEMPTS_MAX: u32 = 100;
/// Longest idempotency key, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// Longest node id, in characters.
pub const NODE_ID_CHARS_MAX: usize = 256;
/// Longest error text kept from a report, in bytes (longer text is cut, not refused).
pub const ERROR_TEXT_BYTES_MAX: usize = 64 * 1024;
/// Default page size of ListTasks (count).
pub const PAGE_SIZE_DEFAULT: usize = 100;
/// Largest page size of ListTasks (count).
pub const PAGE_SIZE_MAX: usize = 1000;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// Check a `task_type`: 1..=128 characters from `[a-z0-9_.-]`.
pub fn validate_task_type(field: &str, task_type: &str) -> Result<(), Status> {
    if task_type.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    let chars = task_type.chars().count();
    if chars > TASK_TYPE_CHARS_MAX {
        return Err(invalid(
            field,
            format!("is {chars} characters long; at most {TASK_TYPE_CHARS_MAX} are allowed"),
        ));
    }
    if let Some(bad) = task_type
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
    {
        return Err(invalid(
            field,
            format!("character {bad:?} is outside [a-z0-9_.-]"),
        ));
    }
    Ok(())
}

/// Check a JSON payload: at most `TASK_DATA_BYTES_MAX` bytes and a well-formed JSON document.
pub fn validate_json(field: &str, data: &str) -> Result<(), Status> {
    if data.len() > TASK_DATA_BYTES_MAX {
        return Err(invalid(
            field,
            format!(
                "is {} bytes; at most {TASK_DATA_BYTES_MAX} bytes are allowed",
                data.len()
            ),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(data)
        .map(|_| ())
        .map_err(|e| invalid(field, format!("is not valid JSON ({e})")))
}

/// Check a task id: a UUID (any version; ours are v7). Returns the canonical hyphenated form.
pub fn parse_task_id(field: &str, id: &str) -> Result<String, Status> {
    if id.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|e| invalid(field, format!("{id:?} is not a UUID ({e})")))
}

/// Check a node id: non-empty, at most `NODE_ID_CHARS_MAX` characters, no control characters.
pub fn validate_node_id(field: &str, id: &str) -> Result<(), Status> {
    if id.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if id.chars().count() > NODE_ID_CHARS_MAX {
        return Err(invalid(
            field,
            format!("is longer than {NODE_ID_CHARS_MAX} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Check an attempt number carried by an agent call (attempts start at 1).
pub fn validate_attempt(field: &str, attempt: u32) -> Result<(), Status> {
    if attempt == 0 {
        return Err(invalid(field, "must be at least 1 (attempts start at 1)"));
    }
    Ok(())
}

/// Check a usage percentage: finite and within 0.0..=100.0.
pub fn validate_percent(field: &str, value: f64) -> Result<(), Status> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(invalid(
            field,
            format!("{value} is outside 0..=100 (percent)"),
        ));
    }
    Ok(())
}

/// A task status filter: `UNSPECIFIED` = all; an unknown number is refused.
pub fn parse_status_filter(field: &str, raw: i32) -> Result<Option<proto::TaskStatus>, Status> {
    match proto::TaskStatus::try_from(raw) {
        Ok(proto::TaskStatus::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(invalid(field, format!("{raw} is not a known task status"))),
    }
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

fn validate_constraints(c: &proto::TaskConstraints) -> Result<(), Status> {
    let proto::TaskConstraints {
        cloud_provider: _,
        region: _,
        labels,
    } = c;
    if labels.keys().any(|k| k.is_empty()) {
        return Err(invalid(
            "constraints.labels",
            "label keys must not be empty",
        ));
    }
    Ok(())
}

fn validate_retry_policy(p: &proto::RetryPolicy) -> Result<(), Status> {
    let proto::RetryPolicy {
        initial_backoff_ms,
        max_backoff_ms,
        backoff_multiplier,
        jitter,
    } = *p;
    if backoff_multiplier.is_nan() || (backoff_multiplier != 0.0 && backoff_multiplier < 1.0) {
        return Err(invalid(
            "retry_policy.backoff_multiplier",
            format!("{backoff_multiplier} must be 0 (default) or at least 1.0"),
        ));
    }
    if !backoff_multiplier.is_finite() {
        return Err(invalid("retry_policy.backoff_multiplier", "must be finite"));
    }
    if jitter.is_nan() || jitter > 1.0 {
        return Err(invalid(
            "retry_policy.jitter",
            format!("{jitter} must be within 0.0..=1.0 (negative = default)"),
        ));
    }
    if max_backoff_ms != 0 && initial_backoff_ms > max_backoff_ms {
        return Err(invalid(
            "retry_policy.initial_backoff_ms",
            format!("{initial_backoff_ms} ms exceeds max_backoff_ms ({max_backoff_ms} ms)"),
        ));
    }
    Ok(())
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

    fn try_from(req: proto::SubmitTaskRequest) -> Result<Self, Status> {
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
        validate_task_type("task_type", &task_type)?;
        validate_json("task_data", &task_data)?;
        if max_attempts == 0 || max_attempts > MAX_ATTEMPTS_MAX {
            return Err(invalid(
                "max_attempts",
                format!("{max_attempts} is outside 1..={MAX_ATTEMPTS_MAX}"),
            ));
        }
        if idempotency_key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX {
            return Err(invalid(
                "idempotency_key",
                format!("is longer than {IDEMPOTENCY_KEY_CHARS_MAX} characters"),
            ));
        }
        if let Some(c) = &constraints {
            validate_constraints(c)?;
        }
        if let Some(p) = &retry_policy {
            validate_retry_policy(p)?;
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

    fn try_from(req: proto::ReportTaskResultRequest) -> Result<Self, Status> {
        let proto::ReportTaskResultRequest {
            task_id,
            attempt,
            node_id,
            success,
            result_data,
            mut error,
            retryable,
        } = req;
        let task_id = parse_task_id("task_id", &task_id)?;
        validate_attempt("attempt", attempt)?;
        validate_node_id("node_id", &node_id)?;
        // A success must carry a result document; a failure may carry one.
        if success || !result_data.is_empty() {
            validate_json("result_data", &result_data)?;
        }
        if error.len() > ERROR_TEXT_BYTES_MAX {
            let mut cut = ERROR_TEXT_BYTES_MAX;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        Ok(ValidReport(internal::ReportResult {
            task_id,
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
        validate_node_id("node_id", &node_id)?;
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
}

impl TryFrom<proto::HeartbeatRequest> for ValidHeartbeat {
    type Error = Status;

    fn try_from(req: proto::HeartbeatRequest) -> Result<Self, Status> {
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
        } = req;
        validate_node_id("node_id", &node_id)?;
        validate_percent("cpu_usage", cpu_usage)?;
        validate_percent("memory_usage", memory_usage)?;
        if labels.keys().any(|k| k.is_empty()) {
            return Err(invalid("labels", "label keys must not be empty"));
        }
        for (i, r) in running.iter().enumerate() {
            let proto::RunningAttempt { task_id, attempt } = r;
            if task_id.is_empty() {
                return Err(invalid(
                    &format!("running[{i}].task_id"),
                    "must not be empty",
                ));
            }
            validate_attempt(&format!("running[{i}].attempt"), *attempt)?;
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
        })
    }
}

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
            err.message().starts_with(&format!("{field}:")),
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
        let id = Uuid::now_v7();
        assert_eq!(
            parse_task_id("task_id", &id.simple().to_string()).unwrap(),
            id.hyphenated().to_string()
        );
    }

    #[test]
    fn status_filters() {
        assert_eq!(parse_status_filter("status", 0).unwrap(), None);
        assert_eq!(
            parse_status_filter("status", 4).unwrap(),
            Some(proto::TaskStatus::Completed)
        );
        assert_invalid(parse_status_filter("status", 99), "status");
        assert_invalid(parse_status_filter("status", -1), "status");
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
