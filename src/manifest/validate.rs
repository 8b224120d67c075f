//! Input validation shared by the gateway (before proposing) and `apply` (defence in depth).
//! Each error names the proto field that was wrong (docs/architecture.md#bad-input).

use std::collections::BTreeMap;

use crate::proto;

use super::error::ManifestError;

/// Longest accepted `task_type`, in characters.
pub const TASK_TYPE_CHARS_MAX: usize = 128;
/// Default cap on `task_data` / `result_data`, in bytes (1 MiB).
pub const TASK_DATA_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Highest accepted `max_attempts` (count).
pub const MAX_ATTEMPTS_MAX: u32 = 100;
/// `max_attempts` used when a submission leaves it 0 (count).
pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;
/// Longest accepted idempotency key, in characters.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 128;
/// Longest accepted node id, in characters.
pub const NODE_ID_CHARS_MAX: usize = 256;

/// Limits that may differ per deployment. Only the gateway enforces the size limits (so
/// controllers with different settings never disagree inside `apply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `task_data` / `result_data`, in bytes.
    pub task_data_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            task_data_bytes_max: TASK_DATA_BYTES_MAX_DEFAULT,
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ManifestError {
    ManifestError::InvalidArgument {
        field: field.to_string(),
        message: message.into(),
    }
}

/// `task_type`: 1..=128 characters from `[a-z0-9_.-]`.
pub fn validate_task_type(task_type: &str) -> Result<(), ManifestError> {
    if task_type.is_empty() {
        return Err(invalid("task_type", "must not be empty"));
    }
    let chars = task_type.chars().count();
    if chars > TASK_TYPE_CHARS_MAX {
        return Err(invalid(
            "task_type",
            format!("is {chars} characters; at most {TASK_TYPE_CHARS_MAX} allowed"),
        ));
    }
    if let Some(bad) = task_type
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid(
            "task_type",
            format!("contains {bad:?}; only [a-z0-9_.-] allowed"),
        ));
    }
    Ok(())
}

/// A JSON payload field (`task_data`, `result_data`): valid JSON, at most `bytes_max` bytes.
/// An empty string is accepted as "no payload" only when `allow_empty`.
pub fn validate_json(
    field: &str,
    text: &str,
    bytes_max: Option<usize>,
    allow_empty: bool,
) -> Result<(), ManifestError> {
    if let Some(max) = bytes_max
        && text.len() > max
    {
        return Err(invalid(
            field,
            format!("is {} bytes; at most {max} allowed", text.len()),
        ));
    }
    if text.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(invalid(
                field,
                "must be a JSON document, got an empty string",
            ))
        };
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| invalid(field, format!("is not valid JSON: {e}")))
}

/// `max_attempts`: 0 (server default) or 1..=100.
pub fn validate_max_attempts(max_attempts: u32) -> Result<(), ManifestError> {
    if max_attempts > MAX_ATTEMPTS_MAX {
        return Err(invalid(
            "max_attempts",
            format!("is {max_attempts}; must be 1..={MAX_ATTEMPTS_MAX}"),
        ));
    }
    Ok(())
}

/// A retry policy: non-negative finite multiplier (0 = default, else >= 1), jitter <= 1,
/// initial <= max when both are set.
pub fn validate_retry_policy(policy: &proto::RetryPolicy) -> Result<(), ManifestError> {
    let m = policy.backoff_multiplier;
    if !m.is_finite() || (m != 0.0 && m < 1.0) || m > 1000.0 {
        return Err(invalid(
            "retry_policy.backoff_multiplier",
            format!("is {m}; must be 0 (default) or 1.0..=1000.0"),
        ));
    }
    let j = policy.jitter;
    if !j.is_finite() || j > 1.0 {
        return Err(invalid(
            "retry_policy.jitter",
            format!("is {j}; must be at most 1.0 (negative = default)"),
        ));
    }
    if policy.initial_backoff_ms > 0
        && policy.max_backoff_ms > 0
        && policy.initial_backoff_ms > policy.max_backoff_ms
    {
        return Err(invalid(
            "retry_policy.initial_backoff_ms",
            format!(
                "is {} ms, above max_backoff_ms {} ms",
                policy.initial_backoff_ms, policy.max_backoff_ms
            ),
        ));
    }
    Ok(())
}

fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), ManifestError> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(invalid(field, "has an empty label key"));
        }
        if k.len() > 256 || v.len() > 1024 {
            return Err(invalid(field, format!("label {k:?} is too long")));
        }
    }
    Ok(())
}

/// A whole submission (the fields of `SubmitTaskRequest`). Size limits apply only when
/// `limits` is given (the gateway); `apply` checks the rest.
pub fn validate_submission(
    task_type: &str,
    task_data: &str,
    max_attempts: u32,
    idempotency_key: &str,
    retry_policy: Option<&proto::RetryPolicy>,
    constraints: Option<&proto::TaskConstraints>,
    limits: Option<&Limits>,
) -> Result<(), ManifestError> {
    validate_task_type(task_type)?;
    validate_json(
        "task_data",
        task_data,
        limits.map(|l| l.task_data_bytes_max),
        false,
    )?;
    validate_max_attempts(max_attempts)?;
    if idempotency_key.chars().count() > IDEMPOTENCY_KEY_CHARS_MAX {
        return Err(invalid(
            "idempotency_key",
            format!("is longer than {IDEMPOTENCY_KEY_CHARS_MAX} characters"),
        ));
    }
    if let Some(p) = retry_policy {
        validate_retry_policy(p)?;
    }
    if let Some(c) = constraints {
        validate_labels("constraints.labels", &c.labels)?;
    }
    Ok(())
}

/// A `SubmitTaskRequest` as received by the gateway.
pub fn validate_submit_request(
    req: &proto::SubmitTaskRequest,
    limits: &Limits,
) -> Result<(), ManifestError> {
    validate_submission(
        &req.task_type,
        &req.task_data,
        req.max_attempts,
        &req.idempotency_key,
        req.retry_policy.as_ref(),
        req.constraints.as_ref(),
        Some(limits),
    )
}

/// A node id: non-empty, at most 256 characters, no control characters.
pub fn validate_node_id(node_id: &str) -> Result<(), ManifestError> {
    if node_id.is_empty() {
        return Err(invalid("node_id", "must not be empty"));
    }
    if node_id.chars().count() > NODE_ID_CHARS_MAX {
        return Err(invalid(
            "node_id",
            format!("is longer than {NODE_ID_CHARS_MAX} characters"),
        ));
    }
    if node_id.chars().any(char::is_control) {
        return Err(invalid("node_id", "contains a control character"));
    }
    Ok(())
}

/// A usage percentage (`cpu_usage`, `memory_usage`): finite, 0.0..=100.0.
pub fn validate_percent(field: &str, value: f64) -> Result<(), ManifestError> {
    if !value.is_finite() || !(0.0..=100.0).contains(&value) {
        return Err(invalid(
            field,
            format!("is {value}; must be 0.0..=100.0 percent"),
        ));
    }
    Ok(())
}

/// A `HeartbeatRequest`: node id and usage ranges.
pub fn validate_heartbeat(req: &proto::HeartbeatRequest) -> Result<(), ManifestError> {
    validate_node_id(&req.node_id)?;
    validate_percent("cpu_usage", req.cpu_usage)?;
    validate_percent("memory_usage", req.memory_usage)?;
    validate_labels("labels", &req.labels)?;
    for r in &req.running {
        validate_task_id("running.task_id", &r.task_id)?;
    }
    Ok(())
}

/// A task id field: must parse as a UUID.
pub fn validate_task_id(field: &str, task_id: &str) -> Result<super::TaskId, ManifestError> {
    super::TaskId::parse(task_id).map_err(|e| invalid(field, e.to_string()))
}

/// A `ReportTaskResultRequest`: ids, attempt >= 1, `result_data` JSON when successful.
pub fn validate_report(
    req: &proto::ReportTaskResultRequest,
    limits: &Limits,
) -> Result<(), ManifestError> {
    validate_task_id("task_id", &req.task_id)?;
    validate_node_id(&req.node_id)?;
    if req.attempt == 0 {
        return Err(invalid("attempt", "must be at least 1"));
    }
    if req.success {
        validate_json(
            "result_data",
            &req.result_data,
            Some(limits.task_data_bytes_max),
            true,
        )?;
    } else if req.error.len() > limits.task_data_bytes_max {
        return Err(invalid("error", "is too long"));
    }
    Ok(())
}

/// A `ListTasksRequest.status` value: a known `TaskStatus` (0 = all).
pub fn validate_status_filter(status: i32) -> Result<Option<proto::TaskStatus>, ManifestError> {
    match proto::TaskStatus::try_from(status) {
        Ok(proto::TaskStatus::Unspecified) => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(_) => Err(invalid("status", format!("{status} is not a TaskStatus"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ManifestError) -> String {
        match e {
            ManifestError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn task_type_rules() {
        assert!(validate_task_type("matmul").is_ok());
        assert!(validate_task_type("a.b-c_9").is_ok());
        assert_eq!(field_of(validate_task_type("").unwrap_err()), "task_type");
        assert!(validate_task_type(&"a".repeat(128)).is_ok());
        assert!(validate_task_type(&"a".repeat(129)).is_err());
        assert!(validate_task_type("MatMul").is_err());
        assert!(validate_task_type("mat mul").is_err());
    }

    #[test]
    fn json_rules() {
        assert!(validate_json("task_data", "{\"n\":1}", Some(100), false).is_ok());
        assert_eq!(
            field_of(validate_json("task_data", "{", Some(100), false).unwrap_err()),
            "task_data"
        );
        assert!(validate_json("task_data", "", None, false).is_err());
        assert!(validate_json("result_data", "", None, true).is_ok());
        let big = format!("\"{}\"", "x".repeat(200));
        assert!(validate_json("task_data", &big, Some(100), false).is_err());
        assert!(validate_json("task_data", &big, None, false).is_ok());
    }

    #[test]
    fn max_attempts_and_usage_rules() {
        assert!(validate_max_attempts(0).is_ok());
        assert!(validate_max_attempts(100).is_ok());
        assert_eq!(
            field_of(validate_max_attempts(101).unwrap_err()),
            "max_attempts"
        );
        assert!(validate_percent("cpu_usage", 100.0).is_ok());
        assert_eq!(
            field_of(validate_percent("cpu_usage", -0.1).unwrap_err()),
            "cpu_usage"
        );
        assert!(validate_percent("memory_usage", f64::NAN).is_err());
        assert!(validate_node_id("").is_err());
        assert_eq!(field_of(validate_status_filter(99).unwrap_err()), "status");
        assert_eq!(validate_status_filter(0).unwrap(), None);
    }

    #[test]
    fn retry_policy_rules() {
        let mut p = proto::RetryPolicy::default();
        assert!(validate_retry_policy(&p).is_ok());
        p.backoff_multiplier = 0.5;
        assert!(validate_retry_policy(&p).is_err());
        p.backoff_multiplier = 2.0;
        p.jitter = 1.5;
        assert!(validate_retry_policy(&p).is_err());
        p.jitter = 0.1;
        p.initial_backoff_ms = 10;
        p.max_backoff_ms = 5;
        assert_eq!(
            field_of(validate_retry_policy(&p).unwrap_err()),
            "retry_policy.initial_backoff_ms"
        );
    }
}
