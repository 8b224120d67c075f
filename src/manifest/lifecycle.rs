//! Task lifecycle transitions (docs/lifecycle.md): submission,
//! assignment as numbered attempts, start acknowledgement, reports with fencing and
//! exactly-once outcomes, requeue with backoff, timeouts and cancellation.
//!
//! Every method validates everything before writing anything, so an `Err` leaves the state
//! unchanged.

use crate::proto::{AttemptRecord, Task, TaskStatus};

use super::command::{
    AssignTasks, AttemptRef, CommandOutcome, ExpireTasks, RequeueReason, Skipped, SubmitTask,
};
use super::{
    Attempt, Manifest, ManifestError, Resources, TaskId, backoff, is_active, is_terminal,
    task_status, validate,
};

fn status_name(s: TaskStatus) -> String {
    s.as_str_name().to_string()
}

fn stale(t: &Task, attempt: Attempt) -> ManifestError {
    ManifestError::StaleAttempt {
        task_id: t.task_id.clone(),
        attempt: attempt.0,
        current_attempt: t.attempt,
        status: status_name(task_status(t)),
    }
}

fn transition(t: &Task, action: &str) -> ManifestError {
    ManifestError::InvalidTransition {
        task_id: t.task_id.clone(),
        status: status_name(task_status(t)),
        action: action.to_string(),
    }
}

fn record_mut(t: &mut Task, attempt: Attempt) -> Option<&mut AttemptRecord> {
    t.attempts.iter_mut().rev().find(|a| a.attempt == attempt.0)
}

fn record(t: &Task, attempt: Attempt) -> Option<&AttemptRecord> {
    t.attempts.iter().rev().find(|a| a.attempt == attempt.0)
}

/// How an in-flight attempt ends.
struct AttemptEnd<'a> {
    outcome: TaskStatus,
    result_data: &'a str,
    error: &'a str,
    retryable: bool,
    reported: bool,
    /// Wait the retry policy's backoff before the next attempt. False for infrastructure
    /// failures (node lost, orphaned): they are not the task's fault, so it is placed again at
    /// once.
    backoff: bool,
}

/// Ends the current in-flight attempt and moves the task on: COMPLETED; or back to PENDING
/// with backoff while attempts remain and the failure is retryable; else FAILED.
/// `max_attempts = 1` therefore never yields a second attempt (docs/failures.md S7). The backoff is
/// recorded as a duration (`backoff_ms`), which the leader times on its monotonic clock;
/// `not_before` is only the proposer-clock estimate shown to users.
fn end_attempt(id: &TaskId, t: &mut Task, end: AttemptEnd<'_>, now: i64) {
    let attempt = Attempt(t.attempt);
    if let Some(r) = record_mut(t, attempt) {
        r.finished_at = now;
        r.outcome = end.outcome as i32;
        r.result_data = end.result_data.to_string();
        r.error = end.error.to_string();
        r.retryable = end.retryable;
        r.reported = end.reported;
    }
    match end.outcome {
        TaskStatus::Completed => {
            t.status = TaskStatus::Completed as i32;
            t.result_data = end.result_data.to_string();
            t.error.clear();
            t.retryable = false;
            t.completed_at = now;
        }
        TaskStatus::Cancelled => {
            t.status = TaskStatus::Cancelled as i32;
            t.error = end.error.to_string();
            t.completed_at = now;
        }
        _ => {
            t.error = end.error.to_string();
            t.retryable = end.retryable;
            if end.retryable && t.attempt < t.max_attempts && !t.cancel_requested {
                let delay = if end.backoff {
                    backoff::backoff_ms(&t.retry_policy.unwrap_or_default(), id, attempt)
                } else {
                    0
                };
                t.status = TaskStatus::Pending as i32;
                t.backoff_ms = delay;
                t.not_before = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
                t.assigned_node_id.clear();
                t.assigned_at = 0;
                t.started_at = 0;
            } else {
                t.status = TaskStatus::Failed as i32;
                t.completed_at = now;
            }
        }
    }
}

impl Manifest {
    /// Adds a submitted task as PENDING (seed `AddTask`). Returns the task and whether the
    /// submission was a duplicate: a known idempotency key returns the task created first
    /// (docs/lifecycle.md#exactly-once-outcomes); the same task id with the same type and data is a replay. Errors:
    /// `InvalidArgument` naming the field; `AlreadyExists` for a reused id with other content.
    pub fn add_task(&mut self, s: &SubmitTask, now: i64) -> Result<(Task, bool), ManifestError> {
        if !s.idempotency_key.is_empty()
            && let Some(existing) = self.task_by_idempotency_key(&s.idempotency_key)
        {
            return Ok((existing.clone(), true));
        }
        let id = validate::validate_task_id("task_id", &s.task_id)?;
        validate::validate_submission(
            &s.task_type,
            &s.task_data,
            s.max_attempts,
            &s.idempotency_key,
            s.retry_policy.as_ref(),
            s.constraints.as_ref(),
            None,
        )?;
        if let Some(existing) = self.tasks.get(&id) {
            return if existing.task_type == s.task_type && existing.task_data == s.task_data {
                Ok((existing.clone(), true))
            } else {
                Err(ManifestError::AlreadyExists {
                    task_id: s.task_id.clone(),
                })
            };
        }
        self.next_submit_seq += 1;
        let task = Task {
            task_id: id.to_string(),
            task_type: s.task_type.clone(),
            status: TaskStatus::Pending as i32,
            task_data: s.task_data.clone(),
            created_at: now,
            max_attempts: if s.max_attempts == 0 {
                validate::MAX_ATTEMPTS_DEFAULT
            } else {
                s.max_attempts
            },
            priority: s.priority,
            constraints: s.constraints.clone(),
            resources: s.resources,
            idempotency_key: s.idempotency_key.clone(),
            retry_policy: Some(backoff::normalized(s.retry_policy.as_ref())),
            run_timeout_ms: s.run_timeout_ms,
            queue_timeout_ms: s.queue_timeout_ms,
            submit_seq: self.next_submit_seq,
            ..Default::default()
        };
        self.insert_task(id, task.clone());
        Ok((task, false))
    }

    /// Checks that `attempt` of task `id` may be placed on `node_id` without writing
    /// anything: the task is PENDING, not cancelled, the attempt is the next number and within
    /// `max_attempts`, and the node is schedulable, matches the constraints and has free
    /// capacity. Retry backoff is not checked here: it is timed by the leader on its monotonic
    /// clock (a proposer's wall clock stepped back would otherwise hold placements for as long
    /// as the step), so the leader's placement is the decision.
    pub fn check_assignment(
        &self,
        id: &TaskId,
        node_id: &str,
        attempt: Attempt,
    ) -> Result<(), ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        if task_status(t) != TaskStatus::Pending || t.cancel_requested {
            return Err(transition(t, "assign"));
        }
        if attempt != Attempt(t.attempt).next() {
            return Err(stale(t, attempt));
        }
        if attempt.0 > t.max_attempts {
            return Err(transition(t, "assign beyond max_attempts"));
        }
        let node = self
            .nodes
            .get(node_id)
            .ok_or_else(|| ManifestError::NodeNotFound {
                node_id: node_id.to_string(),
            })?;
        let not_schedulable = |reason: String| ManifestError::NodeNotSchedulable {
            task_id: t.task_id.clone(),
            node_id: node_id.to_string(),
            reason,
        };
        if !super::nodes::is_schedulable(node) {
            return Err(not_schedulable(format!(
                "node is {}{}",
                super::node_status(node).as_str_name(),
                if node.draining { " (draining)" } else { "" }
            )));
        }
        super::nodes::constraints_match(node, t.constraints.as_ref()).map_err(not_schedulable)?;
        let need = Resources::of_request(t.resources.as_ref());
        if let Some(resource) = self.lacking_resource(node_id, &need) {
            return Err(ManifestError::NoCapacity {
                task_id: t.task_id.clone(),
                node_id: node_id.to_string(),
                resource: resource.to_string(),
            });
        }
        Ok(())
    }

    /// Places `attempt` of a PENDING task on `node_id` (seed `AssignTask`): ASSIGNED, with
    /// a new attempt record. Errors as in [`Manifest::check_assignment`].
    pub fn assign_task(
        &mut self,
        id: &TaskId,
        node_id: &str,
        attempt: Attempt,
        now: i64,
    ) -> Result<Task, ManifestError> {
        self.check_assignment(id, node_id, attempt)?;
        let task = self
            .mutate_task(id, |t| {
                t.attempt = attempt.0;
                t.status = TaskStatus::Assigned as i32;
                t.assigned_node_id = node_id.to_string();
                t.assigned_at = now;
                t.started_at = 0;
                t.attempts.push(AttemptRecord {
                    attempt: attempt.0,
                    node_id: node_id.to_string(),
                    assigned_at: now,
                    ..Default::default()
                });
                t.clone()
            })
            .expect("checked above");
        Ok(task)
    }

    pub(super) fn assign_batch(&mut self, batch: &AssignTasks, now: i64) -> CommandOutcome {
        let mut out = CommandOutcome::default();
        for a in &batch.assignments {
            let result = super::parse_task_id(&a.task_id)
                .and_then(|id| self.assign_task(&id, &a.node_id, Attempt(a.attempt), now));
            match result {
                Ok(t) => out.tasks.push(t),
                Err(error) => out.skipped.push(Skipped {
                    task_id: a.task_id.clone(),
                    node_id: a.node_id.clone(),
                    error,
                }),
            }
        }
        out
    }

    /// Validates that a call about `(id, attempt)` from `node_id` names an attempt that
    /// exists and belongs to that node. Returns the task.
    fn fenced(&self, id: &TaskId, attempt: Attempt, node_id: &str) -> Result<&Task, ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        let Some(r) = record(t, attempt) else {
            return Err(stale(t, attempt));
        };
        if r.node_id != node_id {
            return Err(ManifestError::WrongNode {
                task_id: t.task_id.clone(),
                attempt: attempt.0,
                node_id: node_id.to_string(),
                assigned_node_id: r.node_id.clone(),
            });
        }
        Ok(t)
    }

    /// The agent acknowledged the start of `attempt` (ASSIGNED → RUNNING). Returns the task
    /// and whether this was a repeat (already RUNNING, or already reported). Errors:
    /// `TaskNotFound`; `WrongNode`; `StaleAttempt` if the attempt is superseded or was ended
    /// by the controller (the agent must abort it).
    pub fn start_task(
        &mut self,
        id: &TaskId,
        attempt: Attempt,
        node_id: &str,
        now: i64,
    ) -> Result<(Task, bool), ManifestError> {
        let t = self.fenced(id, attempt, node_id)?;
        let r = record(t, attempt).expect("fenced");
        if r.reported {
            return Ok((t.clone(), true));
        }
        if t.attempt != attempt.0 || !is_active(task_status(t)) {
            return Err(stale(t, attempt));
        }
        if task_status(t) == TaskStatus::Running {
            return Ok((t.clone(), true));
        }
        let task = self
            .mutate_task(id, |t| {
                t.status = TaskStatus::Running as i32;
                t.started_at = now;
                if let Some(r) = record_mut(t, attempt) {
                    r.started_at = now;
                }
                t.clone()
            })
            .expect("exists");
        Ok((task, false))
    }

    /// Shared report path: fencing, then exactly-once (docs/lifecycle.md#exactly-once-outcomes).
    fn report(
        &mut self,
        id: &TaskId,
        attempt: Attempt,
        node_id: &str,
        end: AttemptEnd<'_>,
        now: i64,
    ) -> Result<(Task, bool), ManifestError> {
        let t = self.fenced(id, attempt, node_id)?;
        let r = record(t, attempt).expect("fenced");
        if r.reported {
            let same = r.outcome == end.outcome as i32
                && r.result_data == end.result_data
                && r.error == end.error
                && r.retryable == end.retryable;
            return if same {
                Ok((t.clone(), true))
            } else {
                Err(ManifestError::ConflictingOutcome {
                    task_id: t.task_id.clone(),
                    attempt: attempt.0,
                })
            };
        }
        if t.attempt != attempt.0 || !is_active(task_status(t)) {
            return Err(stale(t, attempt));
        }
        let task = self
            .mutate_task(id, |t| {
                end_attempt(id, t, end, now);
                t.clone()
            })
            .expect("exists");
        Ok((task, false))
    }

    /// The live attempt succeeded (seed `CompleteTask`): COMPLETED with `result_data`.
    /// A retried identical report returns `(task, true)`; a different outcome for a reported
    /// attempt is `ConflictingOutcome`; a superseded or controller-ended attempt is
    /// `StaleAttempt`; another node's attempt is `WrongNode`; unknown task `TaskNotFound`.
    pub fn complete_task(
        &mut self,
        id: &TaskId,
        attempt: Attempt,
        node_id: &str,
        result_data: &str,
        now: i64,
    ) -> Result<(Task, bool), ManifestError> {
        validate::validate_json("result_data", result_data, None, true)?;
        let end = AttemptEnd {
            outcome: TaskStatus::Completed,
            result_data,
            error: "",
            retryable: false,
            reported: true,
            backoff: true,
        };
        self.report(id, attempt, node_id, end, now)
    }

    /// The live attempt failed (seed `FailTask`). Retryable failures go back to PENDING with
    /// backoff while attempts remain; otherwise FAILED. Errors as [`Manifest::complete_task`].
    pub fn fail_task(
        &mut self,
        id: &TaskId,
        attempt: Attempt,
        node_id: &str,
        error: &str,
        retryable: bool,
        now: i64,
    ) -> Result<(Task, bool), ManifestError> {
        let end = AttemptEnd {
            outcome: TaskStatus::Failed,
            result_data: "",
            error,
            retryable,
            reported: true,
            backoff: true,
        };
        self.report(id, attempt, node_id, end, now)
    }

    /// Ends the live `attempt` without a report (node lost, run timeout, orphaned): retried
    /// while attempts remain, after the retry backoff for a run timeout and at once for a lost
    /// node or an orphaned attempt (infrastructure, not the task's fault). `StaleAttempt` if `attempt` is
    /// not the live attempt (already requeued or reported: level-triggered rescans repeat
    /// harmlessly).
    pub fn requeue_attempt(
        &mut self,
        id: &TaskId,
        attempt: Attempt,
        reason: RequeueReason,
        now: i64,
    ) -> Result<Task, ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        if t.attempt != attempt.0 || !is_active(task_status(t)) {
            return Err(stale(t, attempt));
        }
        let error = match reason {
            RequeueReason::NodeLost => format!(
                "attempt {} lost: node {} was declared unhealthy",
                attempt, t.assigned_node_id
            ),
            RequeueReason::RunTimeout => format!(
                "attempt {} exceeded its run timeout of {} ms",
                attempt, t.run_timeout_ms
            ),
            RequeueReason::Orphaned => format!(
                "attempt {} is no longer running on node {}",
                attempt, t.assigned_node_id
            ),
            RequeueReason::Unspecified => format!("attempt {attempt} requeued"),
        };
        let task = self
            .mutate_task(id, |t| {
                let end = AttemptEnd {
                    outcome: TaskStatus::Failed,
                    result_data: "",
                    error: &error,
                    retryable: true,
                    reported: false,
                    backoff: !matches!(reason, RequeueReason::NodeLost | RequeueReason::Orphaned),
                };
                end_attempt(id, t, end, now);
                t.clone()
            })
            .expect("exists");
        Ok(task)
    }

    pub(super) fn requeue_batch(
        &mut self,
        attempts: &[AttemptRef],
        reason: RequeueReason,
        now: i64,
    ) -> CommandOutcome {
        let mut out = CommandOutcome::default();
        for a in attempts {
            let result = super::parse_task_id(&a.task_id)
                .and_then(|id| self.requeue_attempt(&id, Attempt(a.attempt), reason, now));
            match result {
                Ok(t) => out.tasks.push(t),
                Err(error) => out.skipped.push(Skipped {
                    task_id: a.task_id.clone(),
                    node_id: String::new(),
                    error,
                }),
            }
        }
        out
    }

    /// Cancels a task: any non-terminal task becomes CANCELLED and its live attempt (if any)
    /// ends; the agent learns to abort it from `attempts_to_abort`. Cancelling a CANCELLED
    /// task is a duplicate; COMPLETED/FAILED is `InvalidTransition`.
    pub fn cancel_task(
        &mut self,
        id: &TaskId,
        reason: &str,
        now: i64,
    ) -> Result<(Task, bool), ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        match task_status(t) {
            TaskStatus::Cancelled => return Ok((t.clone(), true)),
            s if is_terminal(s) => return Err(transition(t, "cancel")),
            _ => {}
        }
        let error = if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        let task = self
            .mutate_task(id, |t| {
                t.cancel_requested = true;
                if is_active(task_status(t))
                    && let Some(r) = record_mut(t, Attempt(t.attempt))
                {
                    r.finished_at = now;
                    r.outcome = TaskStatus::Cancelled as i32;
                    r.error = error.clone();
                }
                t.status = TaskStatus::Cancelled as i32;
                t.error = error;
                t.completed_at = now;
                t.clone()
            })
            .expect("exists");
        Ok((task, false))
    }

    /// Seed `UpdateTaskStatus`, restricted to the transitions that need no other input:
    /// RUNNING (acknowledge the live attempt on its node), PENDING (requeue the live attempt),
    /// FAILED (fail the live attempt, not retryable) and CANCELLED. ASSIGNED and COMPLETED
    /// need a node / a result: use [`Manifest::assign_task`] / [`Manifest::complete_task`];
    /// asking for them is `InvalidTransition`.
    pub fn update_task_status(
        &mut self,
        id: &TaskId,
        status: TaskStatus,
        now: i64,
    ) -> Result<Task, ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        let (attempt, node) = (Attempt(t.attempt), t.assigned_node_id.clone());
        match status {
            TaskStatus::Running => self.start_task(id, attempt, &node, now).map(|(t, _)| t),
            TaskStatus::Pending => {
                self.requeue_attempt(id, attempt, RequeueReason::Unspecified, now)
            }
            TaskStatus::Failed => self
                .fail_task(id, attempt, &node, "failed by operator", false, now)
                .map(|(t, _)| t),
            TaskStatus::Cancelled => self.cancel_task(id, "", now).map(|(t, _)| t),
            other => Err(transition(
                t,
                &format!("set status {}", other.as_str_name()),
            )),
        }
    }

    pub(super) fn expire_batch(&mut self, e: &ExpireTasks, now: i64) -> CommandOutcome {
        let mut out = self.requeue_batch(&e.run_timed_out, RequeueReason::RunTimeout, now);
        for a in &e.queue_timed_out {
            let result = super::parse_task_id(&a.task_id)
                .and_then(|id| self.expire_queued(&id, Attempt(a.attempt), now));
            match result {
                Ok(t) => out.tasks.push(t),
                Err(error) => out.skipped.push(Skipped {
                    task_id: a.task_id.clone(),
                    node_id: String::new(),
                    error,
                }),
            }
        }
        out
    }

    /// Fails a PENDING task whose queue timeout the leader found passed (timed on its
    /// monotonic clock, [`crate::scheduler::timers::LeaderTimers`]). `attempts` is the task's
    /// attempt count when the leader decided; `StaleAttempt` if the task has moved on since,
    /// `InvalidTransition` if it is not PENDING or has no queue timeout.
    pub fn expire_queued(
        &mut self,
        id: &TaskId,
        attempts: Attempt,
        now: i64,
    ) -> Result<Task, ManifestError> {
        let t = self
            .tasks
            .get(id)
            .ok_or_else(|| ManifestError::TaskNotFound {
                task_id: id.to_string(),
            })?;
        if task_status(t) != TaskStatus::Pending || t.queue_timeout_ms == 0 {
            return Err(transition(t, "expire its queue timeout"));
        }
        if t.attempt != attempts.0 {
            return Err(stale(t, attempts));
        }
        let error = format!(
            "not placed within its queue timeout of {} ms",
            t.queue_timeout_ms
        );
        Ok(self
            .mutate_task(id, |t| {
                t.status = TaskStatus::Failed as i32;
                t.error = error;
                t.retryable = false;
                t.completed_at = now;
                t.clone()
            })
            .expect("exists"))
    }
}
