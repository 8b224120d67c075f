//! A small deterministic model of the leader's control loop driving the three pure cores
//! together — manifest, placement and liveness — against simulated agents that crash, pause
//! (and wake up as zombies), fail tasks and restart. Raft is left out (it is proven by the
//! simulator); this checks that the lifecycle logic itself keeps its promises (docs/simulator.md#the-lifecycle-simulator):
//! no task completed twice, no superseded attempt's result accepted, attempts never exceed
//! `max_attempts`, and every task reaches a terminal state once faults stop.

use std::collections::{BTreeMap, BTreeSet};

use super::timers::LeaderTimers;
use super::{PlacementLimits, place};
use crate::liveness::{Liveness, LivenessConfig};
use crate::manifest::command::{self, AckStarted, Kind, RegisterNode, ReportResult, SubmitTask};
use crate::manifest::{Manifest, ManifestError, TaskId, is_terminal, task_status};
use crate::proto::{NodeCapacity, RunningAttempt, TaskStatus};

const WALL0: i64 = 1_700_000_000_000;
const TICK_MS: u64 = 100;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentState {
    Up,
    Paused { until: u64 },
    Crashed { until: u64 },
}

struct Agent {
    node_id: String,
    state: AgentState,
    /// (task id, attempt) → finish time (ms).
    running: BTreeMap<(String, u32), u64>,
}

struct World {
    rng: Rng,
    now: u64,
    manifest: Manifest,
    liveness: Liveness,
    timers: LeaderTimers,
    agents: Vec<Agent>,
    /// Accepted (non-duplicate) successful reports per task.
    completions: BTreeMap<String, u32>,
    /// Reports refused because their attempt was superseded (zombies, S1).
    stale_reports: usize,
    faults_until: u64,
}

impl World {
    fn wall(&self) -> i64 {
        WALL0 + self.now as i64
    }

    fn apply(&mut self, kind: Kind) -> Result<command::CommandOutcome, ManifestError> {
        let cmd = command::command(self.wall(), 1, kind);
        let bytes = prost::Message::encode_to_vec(&cmd);
        let out = command::decode_result(&self.manifest.apply(&bytes));
        if let Err(e) = self.manifest.check_invariants() {
            panic!("t={} {e}", self.now);
        }
        out
    }

    fn registration(node_id: &str) -> RegisterNode {
        RegisterNode {
            node_id: node_id.into(),
            capacity: Some(NodeCapacity {
                slots: 2,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn step_agent(&mut self, i: usize) {
        let faulty = self.now < self.faults_until;
        match self.agents[i].state {
            AgentState::Crashed { until } if self.now >= until => {
                self.agents[i].state = AgentState::Up;
            }
            AgentState::Paused { until } if self.now >= until => {
                // Wakes up as a zombie: keeps its running attempts.
                self.agents[i].state = AgentState::Up;
            }
            AgentState::Up if faulty && self.rng.chance(3) => {
                let until = self.now + 2_000 + self.rng.below(20_000);
                self.agents[i].state = AgentState::Crashed { until };
                self.agents[i].running.clear();
                return;
            }
            AgentState::Up if faulty && self.rng.chance(3) => {
                let until = self.now + 2_000 + self.rng.below(25_000);
                self.agents[i].state = AgentState::Paused { until };
                return;
            }
            AgentState::Up => {}
            _ => return,
        }
        let node_id = self.agents[i].node_id.clone();
        // Finish what is due first, as an agent waking from a pause would: a zombie's late
        // report must be refused if its attempt was superseded (S1).
        let due: Vec<(String, u32)> = self.agents[i]
            .running
            .iter()
            .filter(|(_, finish)| **finish <= self.now)
            .map(|(k, _)| k.clone())
            .collect();
        for (task_id, attempt) in due {
            self.agents[i].running.remove(&(task_id.clone(), attempt));
            let success = !self.rng.chance(150);
            let result = self.apply(Kind::ReportResult(ReportResult {
                task_id: task_id.clone(),
                attempt,
                node_id: node_id.clone(),
                success,
                result_data: if success { "{}".into() } else { String::new() },
                error: if success {
                    String::new()
                } else {
                    "flaky".into()
                },
                retryable: true,
            }));
            if let Ok(o) = &result {
                // An accepted report must be about the attempt it names (S1): that attempt's
                // record carries it, and it was the task's current attempt.
                let t = &o.tasks[0];
                let rec = t.attempts.iter().find(|r| r.attempt == attempt);
                assert!(
                    rec.is_some_and(|r| r.reported && r.node_id == node_id),
                    "t={} report of {task_id} attempt {attempt} accepted but not recorded",
                    self.now
                );
                assert_eq!(t.attempt, attempt, "superseded attempt's report accepted");
            }
            match result {
                Ok(o) if success && !o.duplicate => {
                    *self.completions.entry(task_id).or_default() += 1;
                }
                Ok(_) => {}
                Err(e) => {
                    assert!(e.requires_abort(), "unexpected report error {e}");
                    self.stale_reports += 1;
                }
            }
        }
        // Heartbeat: registration only if it changes something; abort what is not ours.
        let reg = World::registration(&node_id);
        if self.manifest.registration_changes(&reg) {
            self.apply(Kind::RegisterNode(reg)).unwrap();
        }
        self.liveness
            .observe_heartbeat(&node_id, self.now, self.wall(), 10.0, 10.0, 0);
        let running: Vec<RunningAttempt> = self.agents[i]
            .running
            .keys()
            .map(|(t, a)| RunningAttempt {
                task_id: t.clone(),
                attempt: *a,
            })
            .collect();
        for abort in self.manifest.attempts_to_abort(&node_id, &running) {
            self.agents[i]
                .running
                .remove(&(abort.task_id, abort.attempt));
        }
        // Poll and start new assignments.
        let offered: Vec<(String, u32)> = self
            .manifest
            .assignments_for(&node_id)
            .iter()
            .map(|t| (t.task_id.clone(), t.attempt))
            .collect();
        for (task_id, attempt) in offered {
            if self.agents[i]
                .running
                .contains_key(&(task_id.clone(), attempt))
            {
                continue;
            }
            let ack = self.apply(Kind::AckStarted(AckStarted {
                task_id: task_id.clone(),
                attempt,
                node_id: node_id.clone(),
            }));
            if ack.is_ok() {
                let finish = self.now + 300 + self.rng.below(3_000);
                self.agents[i].running.insert((task_id, attempt), finish);
            }
        }
    }

    fn step_leader(&mut self) {
        let now = self.now;
        let timers = &mut self.timers;
        let batch = place(
            &self.manifest,
            |t| timers.backoff_over(t, now),
            &PlacementLimits::default(),
            &BTreeSet::new(),
        );
        if !batch.assignments.is_empty() {
            self.apply(Kind::AssignTasks(batch)).unwrap();
        }
        let actions = self.liveness.evaluate(self.now, &self.manifest, true);
        for node_id in actions.lost_nodes {
            self.apply(Kind::NodeLost(command::NodeLost { node_id }))
                .unwrap();
        }
        if let Some(r) = actions.requeue {
            self.apply(Kind::RequeueTasks(r)).unwrap();
        }
        let expired = self.timers.expired(&self.manifest, self.now, 1_000);
        if !expired.run_timed_out.is_empty() || !expired.queue_timed_out.is_empty() {
            self.apply(Kind::ExpireTasks(expired)).unwrap();
        }
    }

    fn step(&mut self) {
        for i in 0..self.agents.len() {
            self.step_agent(i);
        }
        self.step_leader();
        self.now += TICK_MS;
    }

    fn all_terminal(&self) -> bool {
        self.manifest
            .all_tasks()
            .iter()
            .all(|t| is_terminal(task_status(t)))
    }
}

fn run_model(seed: u64) -> World {
    let mut w = World {
        rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        now: 0,
        manifest: Manifest::new(),
        liveness: Liveness::new(LivenessConfig {
            stale_after_ms: 3_000,
            leader_grace_ms: 3_000,
            brake_hold_ms: 15_000,
            recovery_declarations_per_sec: 2,
            ..Default::default()
        }),
        timers: LeaderTimers::new(),
        agents: (0..6)
            .map(|i| Agent {
                node_id: format!("agent-{i}"),
                state: AgentState::Up,
                running: BTreeMap::new(),
            })
            .collect(),
        completions: BTreeMap::new(),
        stale_reports: 0,
        faults_until: 120_000,
    };
    w.liveness.become_leader(0);
    for n in 0..60u64 {
        let id = TaskId::new_v7(WALL0 as u64 + n, [n as u8; 10]);
        let submit = SubmitTask {
            task_id: id.to_string(),
            task_type: "sleep".into(),
            task_data: "{}".into(),
            max_attempts: if n % 5 == 0 { 1 } else { 10 },
            run_timeout_ms: 5_000,
            retry_policy: Some(crate::proto::RetryPolicy {
                initial_backoff_ms: 200,
                max_backoff_ms: 2_000,
                backoff_multiplier: 2.0,
                jitter: 0.5,
            }),
            ..Default::default()
        };
        w.apply(Kind::SubmitTask(submit)).unwrap();
    }
    // Safety phase with faults, then a liveness phase with every agent up.
    let bound_ms = w.faults_until + 120_000;
    while w.now < bound_ms {
        w.step();
        if w.now >= w.faults_until && w.all_terminal() {
            break;
        }
    }
    w
}

#[test]
fn lifecycle_model_keeps_its_promises_under_faults() {
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 1..=12 {
        let w = run_model(seed);
        assert!(
            w.all_terminal(),
            "seed {seed}: tasks left {:?}",
            w.manifest.task_counts()
        );
        for (task, n) in &w.completions {
            assert_eq!(*n, 1, "seed {seed}: task {task} completed {n} times");
        }
        for t in w.manifest.all_tasks() {
            assert!(t.attempt <= t.max_attempts, "seed {seed}");
            if t.max_attempts == 1 {
                assert!(
                    t.attempts.len() <= 1,
                    "seed {seed}: max_attempts=1 ran twice"
                );
            }
            if task_status(t) == TaskStatus::Completed {
                assert_eq!(w.completions.get(&t.task_id), Some(&1), "seed {seed}");
            }
        }
        for (status, n) in w.manifest.task_counts() {
            *totals.entry(status.as_str_name()).or_default() += n as usize;
        }
        *totals.entry("stale_reports").or_default() += w.stale_reports;
        *totals.entry("retried").or_default() += w
            .manifest
            .all_tasks()
            .iter()
            .filter(|t| t.attempt > 1)
            .count();
    }
    // The fault mix must actually cause retries and still complete most work.
    assert!(totals["retried"] > 20, "{totals:?}");
    assert!(
        totals["stale_reports"] > 0,
        "zombies must have been fenced: {totals:?}"
    );
    eprintln!("{totals:?}");
    assert!(totals["TASK_STATUS_COMPLETED"] > 12 * 40, "{totals:?}");
}
