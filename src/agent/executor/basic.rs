//! The two test executors: `sleep` (occupies a slot for a while, cancellable) and `echo`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{CancelFlag, ExecError, Executor, u64_field};

/// Longest `sleep` accepted, in ms (one day): longer is surely a typo.
pub const SLEEP_MS_MAX: u64 = 86_400_000;

/// How often a sleeping attempt looks at its cancel flag, in ms.
const SLEEP_CANCEL_CHECK_MS: u64 = 5;

/// `sleep` `{ms, fail?}` → `{slept_ms}`: waits `ms` milliseconds (0..=[`SLEEP_MS_MAX`]),
/// checking its cancel flag every few milliseconds. With `"fail": "transient"` the attempt
/// then fails with a retryable error, so retries and backoff can be tried out without a
/// flaky workload (`{"ms": 100, "fail": "transient"}`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SleepExecutor;

impl Executor for SleepExecutor {
    fn run(&self, task_data: &Value, cancel: &CancelFlag) -> Result<Value, ExecError> {
        let ms = u64_field(task_data, "ms", 0..=SLEEP_MS_MAX)?;
        let fail = match task_data.get("fail") {
            None | Some(Value::Null) => false,
            Some(Value::String(s)) if s == "transient" => true,
            Some(other) => {
                return Err(ExecError::invalid(
                    "fail",
                    format!("must be \"transient\" or absent, got {other}"),
                ));
            }
        };
        let started = Instant::now();
        let deadline = started + Duration::from_millis(ms);
        loop {
            if let Some(reason) = cancel.reason() {
                return Err(ExecError::Cancelled(reason));
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let step = (deadline - now).min(Duration::from_millis(SLEEP_CANCEL_CHECK_MS));
            std::thread::sleep(step);
        }
        if fail {
            return Err(ExecError::Transient(format!(
                "failed as asked (\"fail\": \"transient\") after {} ms",
                started.elapsed().as_millis()
            )));
        }
        Ok(json!({ "slept_ms": started.elapsed().as_millis() as u64 }))
    }
}

/// `echo`: returns its input unchanged (any JSON document).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoExecutor;

impl Executor for EchoExecutor {
    fn run(&self, task_data: &Value, _cancel: &CancelFlag) -> Result<Value, ExecError> {
        Ok(task_data.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::executor::CancelReason;

    #[test]
    fn echo_returns_its_input() {
        let input = json!({"a": [1, 2, {"b": null}], "s": "x"});
        assert_eq!(EchoExecutor.run(&input, &CancelFlag::new()).unwrap(), input);
    }

    #[test]
    fn sleep_can_fail_retryably_on_request_and_names_a_bad_fail_value() {
        let err = SleepExecutor
            .run(&json!({"ms": 0, "fail": "transient"}), &CancelFlag::new())
            .unwrap_err();
        assert!(err.retryable(), "{err}");
        let err = SleepExecutor
            .run(&json!({"ms": 0, "fail": "always"}), &CancelFlag::new())
            .unwrap_err();
        assert!(!err.retryable());
        assert!(err.to_string().contains("fail"), "{err}");
    }

    #[test]
    fn sleep_zero_returns() {
        let out = SleepExecutor
            .run(&json!({"ms": 0}), &CancelFlag::new())
            .unwrap();
        assert!(out["slept_ms"].is_u64());
    }

    #[test]
    fn sleep_stops_when_cancelled() {
        let flag = CancelFlag::new();
        let remote = flag.clone();
        let worker =
            std::thread::spawn(move || SleepExecutor.run(&json!({"ms": SLEEP_MS_MAX}), &remote));
        flag.cancel(CancelReason::Aborted);
        // A day-long sleep only returns because the flag was seen.
        assert_eq!(
            worker.join().unwrap(),
            Err(ExecError::Cancelled(CancelReason::Aborted))
        );
    }

    #[test]
    fn sleep_bad_inputs_name_the_field() {
        for (input, field) in [
            (json!({}), "ms"),
            (json!({"ms": -1}), "ms"),
            (json!({"ms": "10"}), "ms"),
            (json!({"ms": SLEEP_MS_MAX + 1}), "ms"),
            (json!([1]), "task_data"),
        ] {
            match SleepExecutor.run(&input, &CancelFlag::new()) {
                Err(ExecError::InvalidInput { field: got, .. }) => {
                    assert_eq!(got, field, "{input}")
                }
                other => panic!("{input}: expected an input error, got {other:?}"),
            }
        }
    }
}
