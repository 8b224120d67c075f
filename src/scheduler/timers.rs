//! The leader's task timers, all on its **monotonic** clock (docs/lifecycle.md#retries-and-backoff; docs/failures.md S8): retry
//! backoff, queue timeouts and run timeouts.
//!
//! The manifest records durations (`backoff_ms`, `queue_timeout_ms`, `run_timeout_ms`), never
//! deadlines to compare against a wall clock: a leader whose wall clock is stepped forward
//! would otherwise expire queues and attempts early, and one stepped back would hold retries
//! for as long as the step. Instead each timer starts the first time *this* leader sees the
//! task in the state the timer is about (milliseconds passed in by the shell). A new leader
//! starts every timer afresh, which can only lengthen a wait, never shorten it.
//!
//! - **backoff**: a PENDING task may be placed once `backoff_ms` has passed since the leader
//!   first saw it PENDING after its last attempt ([`LeaderTimers::backoff_over`]);
//! - **queue timeout**: it fails if it then waits `queue_timeout_ms` more without being
//!   placed (the backoff does not count against it);
//! - **run timeout**: an in-flight attempt is requeued once `run_timeout_ms` plus a report
//!   grace has passed since the leader first saw it in flight.

use std::collections::BTreeMap;

use crate::manifest::Manifest;
use crate::manifest::command::{AttemptRef, ExpireTasks};
use crate::proto::Task;

/// Per-leader timers. Keys are `(task id, attempt)`: for an in-flight task the live attempt,
/// for a PENDING one the number of attempts so far (0 = never placed), so each wait in the
/// queue and each attempt has its own timer.
#[derive(Clone, Debug, Default)]
pub struct LeaderTimers {
    /// In-flight attempts with a run timeout → first seen in flight (ms).
    running: BTreeMap<(String, u32), u64>,
    /// PENDING tasks with a backoff or a queue timeout → first seen PENDING (ms).
    pending: BTreeMap<(String, u32), u64>,
}

fn key(t: &Task) -> (String, u32) {
    (t.task_id.clone(), t.attempt)
}

impl LeaderTimers {
    /// No timers running.
    pub fn new() -> LeaderTimers {
        LeaderTimers::default()
    }

    /// Forgets everything (on gaining or losing leadership).
    pub fn clear(&mut self) {
        self.running.clear();
        self.pending.clear();
    }

    /// When this leader first saw PENDING task `t`, starting its timer at `now_ms` if this
    /// is the first time. Tasks with neither a backoff nor a queue timeout are not tracked.
    fn pending_since(&mut self, t: &Task, now_ms: u64) -> u64 {
        if t.backoff_ms == 0 && t.queue_timeout_ms == 0 {
            return now_ms;
        }
        *self.pending.entry(key(t)).or_insert(now_ms)
    }

    /// True if PENDING task `t` has waited out its retry backoff at monotonic `now_ms`.
    pub fn backoff_over(&mut self, t: &Task, now_ms: u64) -> bool {
        t.backoff_ms == 0 || now_ms.saturating_sub(self.pending_since(t, now_ms)) >= t.backoff_ms
    }

    /// Syncs the timers with `manifest` at monotonic `now_ms` and returns what has expired:
    /// in-flight attempts past `run_timeout_ms + report_grace_ms` (the agent stops the task
    /// at its timeout and needs time to report) and PENDING tasks past
    /// `backoff_ms + queue_timeout_ms`. Timers of tasks that moved on are dropped.
    pub fn expired(
        &mut self,
        manifest: &Manifest,
        now_ms: u64,
        report_grace_ms: u64,
    ) -> ExpireTasks {
        let mut out = ExpireTasks::default();

        let mut running = BTreeMap::new();
        for node in manifest.all_nodes() {
            for t in manifest.active_tasks_on(&node.node_id) {
                if t.run_timeout_ms == 0 {
                    continue;
                }
                let k = key(t);
                let since = self.running.get(&k).copied().unwrap_or(now_ms);
                if now_ms.saturating_sub(since) >= t.run_timeout_ms.saturating_add(report_grace_ms)
                {
                    out.run_timed_out.push(AttemptRef {
                        task_id: k.0.clone(),
                        attempt: k.1,
                    });
                }
                running.insert(k, since);
            }
        }
        self.running = running;

        let mut pending = BTreeMap::new();
        for k in manifest.pending_keys() {
            let Some(t) = manifest.get_task(&k.task_id) else {
                continue;
            };
            if t.backoff_ms == 0 && t.queue_timeout_ms == 0 {
                continue;
            }
            let since = self.pending_since(t, now_ms);
            let limit = t.backoff_ms.saturating_add(t.queue_timeout_ms);
            if t.queue_timeout_ms > 0 && now_ms.saturating_sub(since) >= limit {
                out.queue_timed_out.push(AttemptRef {
                    task_id: t.task_id.clone(),
                    attempt: t.attempt,
                });
            }
            pending.insert(key(t), since);
        }
        self.pending = pending;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::command::{self, Kind, RegisterNode, ReportResult, SubmitTask};
    use crate::manifest::{Attempt, TaskId};
    use crate::proto::{NodeCapacity, RetryPolicy};

    const T0: i64 = 1_700_000_000_000;

    fn manifest() -> Manifest {
        let mut m = Manifest::new();
        let reg = RegisterNode {
            node_id: "n1".into(),
            capacity: Some(NodeCapacity {
                slots: 4,
                ..Default::default()
            }),
            ..Default::default()
        };
        m.apply_command(&command::command(T0, 1, Kind::RegisterNode(reg)))
            .unwrap();
        m
    }

    fn submit(m: &mut Manifest, n: u8, f: impl FnOnce(&mut SubmitTask)) -> TaskId {
        let id = TaskId::new_v7(T0 as u64 + u64::from(n), [n; 10]);
        let mut s = SubmitTask {
            task_id: id.to_string(),
            task_type: "sleep".into(),
            task_data: "{}".into(),
            ..Default::default()
        };
        f(&mut s);
        m.apply_command(&command::command(T0, 1, Kind::SubmitTask(s)))
            .unwrap();
        id
    }

    #[test]
    fn run_timeouts_use_the_leader_clock_and_restart_on_a_new_leader() {
        let mut m = manifest();
        let id = submit(&mut m, 1, |s| s.run_timeout_ms = 1_000);
        m.assign_task(&id, "n1", Attempt(1), T0).unwrap();
        let mut timers = LeaderTimers::new();
        assert!(timers.expired(&m, 50_000, 200).run_timed_out.is_empty());
        assert!(timers.expired(&m, 51_100, 200).run_timed_out.is_empty());
        let e = timers.expired(&m, 51_200, 200);
        assert_eq!(e.run_timed_out.len(), 1);
        // A new leader starts the clock afresh.
        timers.clear();
        assert!(timers.expired(&m, 90_000, 200).run_timed_out.is_empty());
    }

    #[test]
    fn backoff_is_timed_from_when_the_leader_first_sees_the_task_pending() {
        let mut m = manifest();
        let id = submit(&mut m, 1, |s| {
            s.max_attempts = 3;
            s.retry_policy = Some(RetryPolicy {
                initial_backoff_ms: 1_000,
                max_backoff_ms: 1_000,
                backoff_multiplier: 1.0,
                jitter: 0.0,
            });
        });
        let mut timers = LeaderTimers::new();
        let t = m.get_task(&id).unwrap().clone();
        assert!(timers.backoff_over(&t, 0), "a fresh task is due at once");
        m.assign_task(&id, "n1", Attempt(1), T0).unwrap();
        let report = ReportResult {
            task_id: id.to_string(),
            attempt: 1,
            node_id: "n1".into(),
            success: false,
            error: "boom".into(),
            retryable: true,
            ..Default::default()
        };
        // The proposer's wall clock is an hour ahead: it does not matter.
        m.apply_command(&command::command(
            T0 + 3_600_000,
            1,
            Kind::ReportResult(report),
        ))
        .unwrap();
        let t = m.get_task(&id).unwrap().clone();
        assert_eq!(t.backoff_ms, 1_000);
        assert!(!timers.backoff_over(&t, 5_000));
        assert!(!timers.backoff_over(&t, 5_999));
        assert!(timers.backoff_over(&t, 6_000));
        // A new leader waits the whole backoff again.
        timers.clear();
        assert!(!timers.backoff_over(&t, 7_000));
        assert!(timers.backoff_over(&t, 8_000));
    }

    #[test]
    fn queue_timeout_excludes_the_backoff_and_names_the_attempt_count() {
        let mut m = manifest();
        let id = submit(&mut m, 1, |s| s.queue_timeout_ms = 2_000);
        let mut timers = LeaderTimers::new();
        assert!(timers.expired(&m, 10_000, 0).queue_timed_out.is_empty());
        assert!(timers.expired(&m, 11_999, 0).queue_timed_out.is_empty());
        let e = timers.expired(&m, 12_000, 0);
        assert_eq!(
            e.queue_timed_out,
            vec![AttemptRef {
                task_id: id.to_string(),
                attempt: 0
            }]
        );
        // Placed meanwhile: the timer is dropped and the stale decision is refused on apply.
        m.assign_task(&id, "n1", Attempt(1), T0).unwrap();
        assert!(timers.expired(&m, 13_000, 0).queue_timed_out.is_empty());
        let out = m
            .apply_command(&command::command(T0, 1, Kind::ExpireTasks(e)))
            .unwrap();
        assert!(out.tasks.is_empty());
        assert_eq!(out.skipped.len(), 1);
    }
}
