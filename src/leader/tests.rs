use super::*;
use crate::manifest::command::{AssignTasks, Assignment, RegisterNode, SubmitTask, command};
use crate::proto::{NodeCapacity, TaskStatus};

const T0: i64 = 1_700_000_000_000;
const TASK: &str = "01890a5d-ac96-774b-bcce-b302099a8057";

fn apply(m: &mut Manifest, kind: Kind) {
    m.apply_command(&command(T0, 1, kind)).expect("applies");
}

fn registration(node: &str) -> RegisterNode {
    RegisterNode {
        node_id: node.into(),
        capacity: Some(NodeCapacity {
            slots: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn config() -> LivenessConfig {
    LivenessConfig {
        stale_after_ms: 3_000,
        leader_grace_ms: 3_000,
        orphan_after_ms: 3_000,
        ..LivenessConfig::default()
    }
}

fn beat<'a>(
    reg: &'a RegisterNode,
    running: &'a [RunningAttempt],
    leaving: bool,
) -> HeartbeatIn<'a> {
    HeartbeatIn {
        registration: reg,
        running,
        cpu_usage: 1.0,
        memory_usage: 2.0,
        agent_time_ms: 0,
        leaving,
    }
}

fn attempt(task: &str, attempt: u32) -> RunningAttempt {
    RunningAttempt {
        task_id: task.into(),
        attempt,
    }
}

/// A manifest with node `n1` registered and task TASK submitted (PENDING, never placed).
fn manifest() -> Manifest {
    let mut m = Manifest::new();
    apply(&mut m, Kind::RegisterNode(registration("n1")));
    apply(
        &mut m,
        Kind::SubmitTask(SubmitTask {
            task_id: TASK.into(),
            task_type: "echo".into(),
            task_data: "{}".into(),
            max_attempts: 3,
            ..Default::default()
        }),
    );
    m
}

#[test]
fn an_unknown_or_changed_registration_is_committed_before_the_reply_a_steady_one_writes_nothing() {
    let mut m = Manifest::new();
    let mut leader = LeaderState::new(Term(2), 0, config());
    let reg = registration("n1");
    let step = leader.heartbeat(&m, beat(&reg, &[], false), 10, T0);
    assert_eq!(
        step.commit_before_reply,
        Some(Kind::RegisterNode(reg.clone()))
    );
    assert!(step.registers() && !step.declares_leaving());
    apply(&mut m, Kind::RegisterNode(reg.clone()));
    let step = leader.heartbeat(&m, beat(&reg, &[], false), 20, T0);
    assert_eq!(
        step.commit_before_reply, None,
        "steady heartbeats write nothing"
    );
    let mut more_slots = reg.clone();
    more_slots.capacity = Some(NodeCapacity {
        slots: 8,
        ..Default::default()
    });
    let step = leader.heartbeat(&m, beat(&more_slots, &[], false), 30, T0);
    assert_eq!(
        step.commit_before_reply,
        Some(Kind::RegisterNode(more_slots))
    );
}

#[test]
fn a_leaving_agent_of_an_up_node_is_declared_lost_instead_of_registered() {
    let m = manifest();
    let mut leader = LeaderState::new(Term(2), 0, config());
    let mut changed = registration("n1");
    changed.region = "elsewhere".into();
    let step = leader.heartbeat(&m, beat(&changed, &[], true), 10, T0);
    assert_eq!(
        step.commit_before_reply,
        Some(Kind::NodeLost(NodeLost {
            node_id: "n1".into()
        }))
    );
    assert!(step.declares_leaving() && !step.registers());
    // A leaving agent whose node is not up (never registered) changes nothing.
    let stranger = registration("n9");
    let step = leader.heartbeat(&m, beat(&stranger, &[], true), 20, T0);
    assert_eq!(step.commit_before_reply, None);
}

#[test]
fn a_node_running_an_attempt_not_its_own_is_held_back_until_it_aborts_it() {
    let mut m = manifest();
    let mut leader = LeaderState::new(Term(2), 0, config());
    let assign = leader
        .round(&m, 0, &RoundLimits::default(), true)
        .expect("a free slot");
    apply(&mut m, assign);
    assert_eq!(
        m.lookup_task(TASK).unwrap().status,
        TaskStatus::Assigned as i32
    );
    // The node is declared lost; its attempt 1 is requeued and is no longer its own.
    apply(
        &mut m,
        Kind::NodeLost(NodeLost {
            node_id: "n1".into(),
        }),
    );
    apply(&mut m, Kind::RegisterNode(registration("n1")));
    let reg = registration("n1");
    let stale = [attempt(TASK, 1)];
    let step = leader.heartbeat(&m, beat(&reg, &stale, false), 100, T0);
    assert_eq!(step.abort, stale.to_vec());
    assert!(leader.held_back().contains("n1"));
    assert_eq!(
        leader.round(&m, 100, &RoundLimits::default(), false),
        None,
        "nothing is placed on a held-back node"
    );
    let step = leader.heartbeat(&m, beat(&reg, &[], false), 200, T0);
    assert!(step.released && step.abort.is_empty());
    match leader.round(&m, 200, &RoundLimits::default(), false) {
        Some(Kind::AssignTasks(AssignTasks { assignments })) => assert_eq!(
            assignments,
            vec![Assignment {
                task_id: TASK.into(),
                node_id: "n1".into(),
                attempt: 2,
            }]
        ),
        other => panic!("expected attempt 2 on n1, got {other:?}"),
    }
}

#[test]
fn a_round_expires_before_it_places_and_only_when_asked_to() {
    let mut m = Manifest::new();
    apply(&mut m, Kind::RegisterNode(registration("n1")));
    apply(
        &mut m,
        Kind::SubmitTask(SubmitTask {
            task_id: TASK.into(),
            task_type: "echo".into(),
            task_data: "{}".into(),
            max_attempts: 3,
            run_timeout_ms: 1_000,
            ..Default::default()
        }),
    );
    let limits = RoundLimits {
        report_grace_ms: 500,
        ..RoundLimits::default()
    };
    let mut leader = LeaderState::new(Term(2), 0, config());
    let assign = leader.round(&m, 0, &limits, true).expect("placed");
    apply(&mut m, assign);
    // The run timer starts when this leader first sees the attempt in flight.
    assert_eq!(leader.round(&m, 100, &limits, true), None);
    assert_eq!(leader.round(&m, 1_599, &limits, true), None);
    assert_eq!(
        leader.round(&m, 1_600, &limits, false),
        None,
        "no expiry unless asked"
    );
    match leader.round(&m, 1_600, &limits, true) {
        Some(Kind::ExpireTasks(e)) => {
            assert_eq!(e.run_timed_out.len(), 1);
            assert_eq!(e.run_timed_out[0].attempt, 1);
        }
        other => panic!("expected an expiry, got {other:?}"),
    }
}

#[test]
fn a_new_leadership_trusts_no_heartbeat_of_the_old_one() {
    let m = manifest();
    let reg = registration("n1");
    let mut old = LeaderState::new(Term(2), 0, config());
    old.heartbeat(&m, beat(&reg, &[], false), 5_000, T0);
    assert!(old.liveness().seen("n1").is_some());
    assert!(old.scan(&m, 6_000, true).commands.is_empty());
    // The next leader starts with nothing heard and a full grace period.
    let mut new = LeaderState::new(Term(3), 6_000, config());
    assert!(new.liveness().seen("n1").is_none());
    assert!(new.scan(&m, 8_999, true).commands.is_empty());
    let step = new.scan(&m, 9_000, true);
    assert_eq!(step.lost_nodes().collect::<Vec<_>>(), vec!["n1"]);
    // Without its quorum the same leader decides nothing (docs/failures.md S3).
    let mut cut_off = LeaderState::new(Term(3), 6_000, config());
    assert!(cut_off.scan(&m, 9_000, false).commands.is_empty());
}
