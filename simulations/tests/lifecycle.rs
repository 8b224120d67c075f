//! Named scenario tests for docs/failures.md S1–S12, each driving the lifecycle simulator's
//! controllers (Raft + manifest + scheduler + liveness cores) and simulated agents through
//! the sequence that broke other systems, and asserting the safe outcome. Every step also
//! runs the Raft and lifecycle checkers, so any invariant break fails the test too.
//! `simulations/LIFECYCLE_CHECKS.md` records which protection each test depends on.

use mlcp::manifest::command::{Kind, SetNodeStatus};
use mlcp::manifest::task_status;
use mlcp::proto::{NodeStatus, TaskStatus};
use simulations::lifecycle::checker::result_for;
use simulations::lifecycle::world::{Endpoint, World, WorldOptions};
use simulations::lifecycle::{Params, run};

/// A world with a leader and every agent registered.
fn started(opts: WorldOptions) -> World {
    let agents = opts.agents;
    let mut w = World::new(opts);
    let ok = w
        .run_until(1_000, |w| {
            w.leader().is_some() && w.manifest().node_count() == agents
        })
        .unwrap();
    assert!(ok, "cluster did not start");
    w
}

fn status(w: &World, id: &str) -> TaskStatus {
    task_status(w.manifest().lookup_task(id).unwrap())
}

fn node_of(w: &World, id: &str) -> String {
    w.manifest()
        .lookup_task(id)
        .unwrap()
        .assigned_node_id
        .clone()
}

fn attempt(w: &World, id: &str) -> u32 {
    w.manifest().lookup_task(id).unwrap().attempt
}

fn agent_idx(name: &str) -> usize {
    name[1..].parse().unwrap()
}

/// Runs until `id` is RUNNING (its start acknowledged) and returns the agent index.
fn until_running(w: &mut World, id: &str) -> usize {
    let id2 = id.to_string();
    let ok = w
        .run_until(500, |w| status(w, &id2) == TaskStatus::Running)
        .unwrap();
    assert!(ok, "task never started");
    agent_idx(&node_of(w, id))
}

/// Agents that never fail on their own and run long enough to be interrupted.
fn steady(agents: usize) -> WorldOptions {
    let mut o = WorldOptions::new(agents);
    o.agent.fail_permanent_per_mille = 0;
    o.agent.fail_retryable_per_mille = 0;
    o.agent.run_ticks_min = 150;
    o.agent.run_ticks_max = 150;
    o
}

/// S1: the worker pauses past the stale timeout, its task is completed elsewhere, then it
/// wakes and reports its old attempt: the report is rejected and the agent aborts it.
#[test]
fn s01_zombie_worker_result_rejected() {
    let mut w = started(steady(3));
    let id = w.submit_direct("s1", 3).unwrap();
    let zombie = until_running(&mut w, &id);
    // Let the start acknowledgement reach the agent: it is executing when it freezes.
    w.run(5).unwrap();
    let now = w.now;
    w.agent(zombie).paused_until = now + 600;
    let id2 = id.clone();
    assert!(
        w.run_until(600, |w| status(w, &id2) == TaskStatus::Completed)
            .unwrap()
    );
    let winner = node_of(&w, &id);
    assert_ne!(winner, format!("a{zombie}"));
    let now = w.now;
    w.agent(zombie).paused_until = now;
    w.agent(zombie).finish_running_now(now);
    w.run(200).unwrap();
    let t = w.manifest().lookup_task(&id).unwrap();
    assert_eq!(task_status(t), TaskStatus::Completed);
    assert_eq!(t.result_data, result_for(&id, t.attempt, &winner));
    assert!(
        !w.agents[zombie].holds(&id, 1),
        "zombie still holds its attempt"
    );
    assert!(
        w.agents[zombie].aborted >= 1,
        "zombie was not told to abort"
    );
}

/// S2: a task is assigned to a node that dies before it ever polls; it must not stay
/// ASSIGNED forever.
#[test]
fn s02_assigned_to_node_that_dies_before_polling() {
    let mut w = started(steady(2));
    // a0 is dead (paused, no polls) from before the assignment.
    let now = w.now;
    w.agent(0).paused_until = now + 5_000;
    w.agent(1).paused_until = now + 5;
    let id = w.submit_direct("s2", 3).unwrap();
    let id2 = id.clone();
    assert!(
        w.run_until(100, |w| status(w, &id2) != TaskStatus::Pending)
            .unwrap()
    );
    assert_eq!(
        node_of(&w, &id),
        "a0",
        "setup: the task went to the dead node"
    );
    assert_eq!(status(&w, &id), TaskStatus::Assigned);
    let id2 = id.clone();
    assert!(
        w.run_until(1_000, |w| status(w, &id2) == TaskStatus::Completed)
            .unwrap(),
        "task stuck in {:?} on {}",
        status(&w, &id),
        node_of(&w, &id)
    );
    assert_eq!(node_of(&w, &id), "a1");
}

/// S3: the leader loses its quorum while agents still reach it (and CheckQuorum is off, so
/// it keeps believing it leads): it must not decide any node status change.
#[test]
fn s03_leader_without_quorum_changes_no_node_status() {
    let mut o = steady(3);
    o.check_quorum = false;
    let mut w = started(o);
    let id = w.submit_direct("s3", 3).unwrap();
    until_running(&mut w, &id);
    let old = w.leader().unwrap();
    w.isolate_controller(old);
    // Agents that fail over to the new leader stop heartbeating the old one.
    w.run(800).unwrap();
    assert_eq!(
        w.checker.decisions_without_quorum(),
        0,
        "a leader without quorum decided node status changes"
    );
}

/// S4: the leader dies and agents take longer than the stale timeout to find the new one
/// (they wait out a call to the dead address); the new leader's grace period keeps them.
#[test]
fn s04_new_leader_grace_period_after_failover() {
    let mut o = steady(2);
    o.liveness.leader_grace_ms = 3_000;
    o.agent.rpc_timeout_ticks = 150;
    let mut w = started(o);
    let id = w.submit_direct("s4", 3).unwrap();
    until_running(&mut w, &id);
    let old = w.leader().unwrap();
    w.crash_controller(old).unwrap();
    w.run(800).unwrap();
    assert_eq!(
        w.checker.nodes_declared_lost, 0,
        "healthy agents declared lost"
    );
    assert_eq!(attempt(&w, &id), 1);
}

/// S5: a result commits but the reply is lost as the leader crashes; the agent's identical
/// retry on the new leader succeeds and the task does not run again.
#[test]
fn s05_retried_identical_report_succeeds() {
    let mut o = steady(2);
    o.agent.run_ticks_min = 30;
    o.agent.run_ticks_max = 30;
    let mut w = started(o);
    let id = w.submit_direct("s5", 3).unwrap();
    let a = until_running(&mut w, &id);
    let id2 = id.clone();
    assert!(
        w.run_until(500, |w| status(w, &id2) == TaskStatus::Completed)
            .unwrap()
    );
    let leader = w.leader().unwrap();
    w.crash_controller(leader).unwrap();
    w.drop_rpcs_to(Endpoint::Agent(a));
    assert!(w.agents[a].holds(&id, 1), "setup: the reply was already in");
    let ok = w.run_until(1_000, |w| !w.agents[a].holds(&id, 1)).unwrap();
    assert!(ok, "report never settled");
    assert_eq!(w.agents[a].aborted, 0, "the identical retry was rejected");
    assert_eq!(w.checker.executions(&id), 1);
    assert_eq!(attempt(&w, &id), 1);
}

/// S6: a restarting agent asks a lagging follower for work; it must not be handed work the
/// committed manifest no longer assigns to it (polls are linearizable on the leader).
#[test]
fn s06_poll_is_linearizable_not_served_by_lagging_follower() {
    let mut w = started(steady(2));
    let id = w.submit_direct("s6", 3).unwrap();
    let leader = w.leader().unwrap();
    let lagging = w
        .options
        .controllers
        .iter()
        .copied()
        .find(|&c| c != leader)
        .unwrap();
    // Cut the follower off once its own copy shows the assignment, so it keeps showing it.
    let id2 = id.clone();
    assert!(
        w.run_until(200, |w| {
            w.controller(lagging)
                .manifest
                .lookup_task(&id2)
                .is_ok_and(|t| task_status(t) == TaskStatus::Assigned)
        })
        .unwrap()
    );
    let a = agent_idx(&node_of(&w, &id));
    w.isolate_controller(lagging);
    let id2 = id.clone();
    assert!(
        w.run_until(800, |w| status(w, &id2) == TaskStatus::Completed)
            .unwrap()
    );
    // The agent restarts and asks the lagging follower first. Served from the follower's
    // stale copy it would run the finished task again; the simulator's checker flags that
    // (a report for a superseded attempt) and `stale_assignments_served` counts it.
    let now = w.now;
    w.agent(a).crash(now + 1);
    w.agent(a).target = lagging;
    w.run(400).unwrap();
    assert_eq!(
        w.stats.stale_assignments_served, 0,
        "an agent was handed work from a stale read"
    );
    assert_eq!(w.checker.executions(&id), 1);
}

/// S7: a task with max_attempts = 1 loses its node and the leader changes; it never runs a
/// second time.
#[test]
fn s07_max_attempts_one_never_runs_twice() {
    let mut w = started(steady(3));
    let id = w.submit_direct("s7", 1).unwrap();
    let a = until_running(&mut w, &id);
    let now = w.now;
    w.agent(a).paused_until = now + 400;
    w.run(250).unwrap();
    let leader = w.leader().unwrap();
    w.crash_controller(leader).unwrap();
    w.run(300).unwrap();
    w.restart_controller(leader).unwrap();
    let now = w.now;
    w.agent(a).paused_until = now;
    w.run(400).unwrap();
    assert_eq!(w.checker.executions(&id), 1, "ran more than once");
    assert_eq!(status(&w, &id), TaskStatus::Failed);
    assert_eq!(attempt(&w, &id), 1);
}

/// S8: agents' clocks jump by an hour both ways and the leader's wall clock steps; nobody
/// alive is declared lost and no running task is requeued — and an agent that really dies is
/// still declared lost (liveness is the leader's monotonic clock, not anybody's wall clock).
#[test]
fn s08_clock_steps_do_not_affect_liveness() {
    let mut w = started(steady(4));
    let id = w.submit_direct("s8", 3).unwrap();
    let runner = until_running(&mut w, &id);
    w.agent(0).clock_offset_ms = 3_600_000;
    w.agent(1).clock_offset_ms = -3_600_000;
    w.agent(2).clock_offset_ms = 86_400_000;
    let leader = w.leader().unwrap();
    w.controllers
        .get_mut(&mlcp::raft::NodeId(leader))
        .unwrap()
        .wall_offset_ms = 3_600_000;
    // One agent that does not hold the task dies for good.
    let dead = (0..4).find(|&a| a != runner).unwrap();
    w.agent(dead).crash(u64::MAX);
    w.run(600).unwrap();
    let lost: Vec<String> = w
        .manifest()
        .all_nodes()
        .into_iter()
        .filter(|n| n.status == NodeStatus::Unhealthy as i32)
        .map(|n| n.node_id)
        .collect();
    assert_eq!(
        lost,
        vec![format!("a{dead}")],
        "only the dead agent is lost"
    );
    assert_eq!(w.checker.nodes_declared_lost, 1);
    assert_eq!(attempt(&w, &id), 1);
    assert_eq!(status(&w, &id), TaskStatus::Completed);
}

/// S9: the control plane is cut off from most agents at once; the brake stops mass
/// declarations while the cut lasts.
#[test]
fn s09_mass_failure_brake() {
    let mut w = started(steady(5));
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(w.submit_direct(&format!("s9-{i}"), 3).unwrap());
    }
    w.run(30).unwrap();
    let ctrls = w.options.controllers.clone();
    for a in 0..4 {
        for &c in &ctrls {
            w.block_agent(a, c);
        }
    }
    w.run(400).unwrap();
    assert!(w.stats.brake_scans > 0, "brake never engaged");
    assert_eq!(
        w.checker.nodes_declared_lost, 0,
        "nodes declared lost en masse"
    );
    w.heal();
    // Once the agents are back the brake releases; the tasks finish, each exactly once
    // (the checkers run on every step).
    let ids2 = ids.clone();
    assert!(
        w.run_until(1_500, |w| ids2
            .iter()
            .all(|id| status(w, id) == TaskStatus::Completed))
            .unwrap()
    );
}

/// S10: the leader crashes after marking a node UNHEALTHY but before requeueing its tasks;
/// the next leader's level-triggered rescan requeues them.
#[test]
fn s10_reassignment_is_level_triggered() {
    let mut o = steady(3);
    o.agent.slots = 4;
    let mut w = started(o);
    let now = w.now;
    w.agent(1).paused_until = now + 10;
    w.agent(2).paused_until = now + 10;
    let a = w.submit_direct("s10-a", 3).unwrap();
    let a2 = a.clone();
    assert!(
        w.run_until(200, |w| status(w, &a2) == TaskStatus::Running)
            .unwrap()
    );
    let victim = node_of(&w, &a);
    let vi = agent_idx(&victim);
    let now = w.now;
    w.agent(vi).paused_until = now + 5_000;
    // Halfway: the node is marked UNHEALTHY, its tasks are not requeued yet.
    w.propose_on_leader(Kind::SetNodeStatus(SetNodeStatus {
        node_id: victim.clone(),
        status: NodeStatus::Unhealthy as i32,
    }))
    .unwrap();
    let v2 = victim.clone();
    assert!(
        w.run_until(50, |w| w
            .manifest()
            .get_node(&v2)
            .is_some_and(|n| n.status == NodeStatus::Unhealthy as i32))
            .unwrap()
    );
    let leader = w.leader().unwrap();
    w.crash_controller(leader).unwrap();
    let a2 = a.clone();
    assert!(
        w.run_until(1_500, |w| status(w, &a2) == TaskStatus::Completed)
            .unwrap(),
        "task left on the unhealthy node: {:?}",
        status(&w, &a)
    );
    assert_ne!(node_of(&w, &a), victim);
}

/// S11: agents long-poll the old leader when leadership moves; their polls are answered
/// with a redirect so a task submitted to the new leader starts quickly.
#[test]
fn s11_long_polls_redirected_on_leader_change() {
    let mut o = steady(2);
    o.agent.poll_wait_ticks = 2_000;
    let mut w = started(o);
    w.run(50).unwrap();
    let old = w.leader().unwrap();
    let to = w
        .options
        .controllers
        .iter()
        .copied()
        .find(|&c| c != old)
        .unwrap();
    w.transfer_leader(to);
    assert!(w.run_until(200, |w| w.leader() == Some(to)).unwrap());
    // The old leader is then cut off from the other controllers (agents still reach it), so
    // a poll left parked there would never see the new assignment and would sit out its
    // whole wait (2,000 ticks).
    w.isolate_controller(old);
    let id = w.submit_direct("s11", 3).unwrap();
    let start = w.now;
    let id2 = id.clone();
    assert!(
        w.run_until(2_000, |w| status(w, &id2) == TaskStatus::Running)
            .unwrap()
    );
    let waited = w.now - start;
    assert!(
        waited < 100,
        "task waited {waited} ticks for an agent (polls not redirected)"
    );
}

/// S12: the whole control plane restarts; every agent reconnects. Re-registering a known
/// node writes nothing, and reconnect attempts are spread out by jittered backoff.
#[test]
fn s12_reconnect_storm_is_cheap_and_spread() {
    let mut w = started(WorldOptions::new(8));
    w.run(100).unwrap();
    let registrations = w.checker.registrations_changed;
    let ctrls = w.options.controllers.clone();
    for &c in &ctrls {
        w.crash_controller(c).unwrap();
    }
    let down_from = w.now;
    w.run(200).unwrap();
    for &c in &ctrls {
        w.restart_controller(c).unwrap();
    }
    w.run(600).unwrap();
    assert_eq!(
        w.checker.registrations_changed, registrations,
        "re-registering known nodes wrote entries"
    );
    assert!(w.leader().is_some());
    // Calls per tick while the controllers were down: jitter spreads the retries.
    let mut per_tick = std::collections::BTreeMap::<u64, usize>::new();
    for a in &w.agents {
        for &t in a
            .sent_at
            .iter()
            .filter(|&&t| t > down_from + 50 && t < down_from + 200)
        {
            *per_tick.entry(t).or_default() += 1;
        }
    }
    let busiest = per_tick.values().copied().max().unwrap_or(0);
    assert!(
        busiest <= 6,
        "{busiest} of 8 agents retried in the same tick"
    );
}

/// About ten fixed seeds of the full swarm run (faults drawn from each seed), each with a
/// safety phase under faults and a liveness phase after healing.
/// A cleanly stopped agent (SIGTERM) says it is leaving in its last heartbeat: the leader
/// declares its node UNHEALTHY on that word, long before the stale timeout, and the attempt it
/// handed back completes elsewhere, once.
fn clean_stop(opts: WorldOptions) -> Result<(), String> {
    let stale_ticks = opts.liveness.stale_after_ms / simulations::lifecycle::world::TICK_MS;
    let mut w = started(opts);
    let id = w.submit_direct("leave", 3).unwrap();
    let a = until_running(&mut w, &id);
    let name = format!("a{a}");
    let now = w.now;
    // A grace shorter than the run: the attempt is still running when the agent leaves.
    w.agent(a).stop(now, 10, now + 100_000);
    let name2 = name.clone();
    let unhealthy = move |w: &World| {
        w.manifest()
            .get_node(&name2)
            .is_some_and(|n| n.status == NodeStatus::Unhealthy as i32)
    };
    if !w.run_until(stale_ticks / 2, &unhealthy).unwrap() {
        return Err(format!(
            "{name} not declared within half the stale timeout ({} ticks) of its leaving heartbeat",
            stale_ticks / 2
        ));
    }
    let id2 = id.clone();
    assert!(
        w.run_until(1_000, |w| status(w, &id2) == TaskStatus::Completed)
            .unwrap()
    );
    assert_ne!(node_of(&w, &id), name, "completed on the node that left");
    assert_eq!(
        w.checker.executions(&id),
        2,
        "once on {name}, once elsewhere"
    );
    assert_eq!(w.stats.leaving_declared, 1);
    Ok(())
}

#[test]
fn clean_stop_declares_the_node_unhealthy_on_the_agents_word() {
    clean_stop(steady(2)).unwrap();
}

/// The same with the shell dropping the `leaving` flag: the node waits out the stale timeout,
/// so the check above bites.
#[test]
fn clean_stop_check_bites_when_the_leaving_flag_is_dropped() {
    let mut o = steady(2);
    o.weakened.drop_leaving_flag = true;
    let err = clean_stop(o).expect_err("the weakened shell must be caught");
    assert!(err.contains("not declared"), "{err}");
}

#[test]
fn fixed_lifecycle_seeds() {
    for seed in [1, 2, 3, 7, 42, 99, 1234, 5678, 31337, 9137792784510063230] {
        let p = Params::draw(seed);
        let report = run(&p);
        assert!(
            matches!(report.outcome, simulations::lifecycle::Outcome::Ok),
            "seed {seed}: {:?}\n{}",
            report.outcome,
            p.describe()
        );
    }
}
