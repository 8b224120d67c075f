//! Placement tests: order, least-loaded choice, constraints, capacity, backoff, bounds, and
//! determinism.

use std::collections::BTreeSet;

use super::*;
use crate::manifest::command::{self, Kind, RegisterNode, SubmitTask};
use crate::proto::{NodeCapacity, NodeStatus, ResourceRequest, TaskConstraints};

const T0: i64 = 1_700_000_000_000;

fn tid(n: u64) -> TaskId {
    TaskId::new_v7(T0 as u64 + n, [n as u8; 10])
}

fn register(m: &mut Manifest, node: &str, slots: u32, region: &str, gpus: u32) {
    let reg = RegisterNode {
        node_id: node.into(),
        region: region.into(),
        cloud_provider: "aws".into(),
        capacity: Some(NodeCapacity {
            slots,
            cpu_cores: 4,
            memory_mb: 8192,
            gpus,
        }),
        ..Default::default()
    };
    m.apply_command(&command::command(T0, 1, Kind::RegisterNode(reg)))
        .unwrap();
}

fn submit_with(m: &mut Manifest, n: u64, f: impl FnOnce(&mut SubmitTask)) {
    let mut s = SubmitTask {
        task_id: tid(n).to_string(),
        task_type: "echo".into(),
        task_data: "{}".into(),
        ..Default::default()
    };
    f(&mut s);
    m.apply_command(&command::command(T0, 1, Kind::SubmitTask(s)))
        .unwrap();
}

fn apply(m: &mut Manifest, batch: &AssignTasks) {
    let out = m
        .apply_command(&command::command(
            T0 + 1,
            1,
            Kind::AssignTasks(batch.clone()),
        ))
        .unwrap();
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn spreads_over_least_loaded_nodes_with_ties_by_id() {
    let mut m = Manifest::new();
    register(&mut m, "b", 2, "r1", 0);
    register(&mut m, "a", 2, "r1", 0);
    for n in 1..=5 {
        submit_with(&mut m, n, |_| {});
    }
    let batch = place(&m, |_| true, &PlacementLimits::default(), &none());
    let nodes: Vec<&str> = batch
        .assignments
        .iter()
        .map(|a| a.node_id.as_str())
        .collect();
    assert_eq!(
        nodes,
        vec!["a", "b", "a", "b"],
        "4 slots in all; the 5th waits"
    );
    assert!(batch.assignments.iter().all(|a| a.attempt == 1));
    apply(&mut m, &batch);
    assert!(
        place(&m, |_| true, &PlacementLimits::default(), &none())
            .assignments
            .is_empty()
    );
}

#[test]
fn higher_priority_first_then_submission_order() {
    let mut m = Manifest::new();
    register(&mut m, "a", 1, "r1", 0);
    submit_with(&mut m, 1, |_| {});
    submit_with(&mut m, 2, |s| s.priority = 10);
    submit_with(&mut m, 3, |s| s.priority = 10);
    let batch = place(&m, |_| true, &PlacementLimits::default(), &none());
    assert_eq!(batch.assignments.len(), 1);
    assert_eq!(batch.assignments[0].task_id, tid(2).to_string());
}

#[test]
fn constraints_and_resources_are_respected() {
    let mut m = Manifest::new();
    register(&mut m, "eu", 4, "eu-west-1", 0);
    register(&mut m, "us-gpu", 4, "us-east-1", 1);
    submit_with(&mut m, 1, |s| {
        s.constraints = Some(TaskConstraints {
            region: "us-east-1".into(),
            ..Default::default()
        })
    });
    submit_with(&mut m, 2, |s| {
        s.resources = Some(ResourceRequest {
            gpus: 1,
            ..Default::default()
        })
    });
    submit_with(&mut m, 3, |s| {
        s.resources = Some(ResourceRequest {
            memory_mb: 100_000,
            ..Default::default()
        })
    });
    submit_with(&mut m, 4, |s| {
        s.constraints = Some(TaskConstraints {
            labels: [("disk".to_string(), "ssd".to_string())].into(),
            ..Default::default()
        })
    });
    let batch = place(&m, |_| true, &PlacementLimits::default(), &none());
    let got: Vec<(String, String)> = batch
        .assignments
        .iter()
        .map(|a| (a.task_id.clone(), a.node_id.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (tid(1).to_string(), "us-gpu".to_string()),
            (tid(2).to_string(), "us-gpu".to_string()),
        ],
        "task 3 needs too much memory, task 4 a label nobody has"
    );
    apply(&mut m, &batch);
    // The GPU is taken now: a second GPU task waits.
    submit_with(&mut m, 5, |s| {
        s.resources = Some(ResourceRequest {
            gpus: 1,
            ..Default::default()
        })
    });
    assert!(
        place(&m, |_| true, &PlacementLimits::default(), &none())
            .assignments
            .is_empty()
    );
}

#[test]
fn unhealthy_draining_and_held_back_nodes_get_nothing() {
    let mut m = Manifest::new();
    register(&mut m, "a", 4, "r", 0);
    register(&mut m, "b", 4, "r", 0);
    register(&mut m, "c", 4, "r", 0);
    for n in 1..=3 {
        submit_with(&mut m, n, |_| {});
    }
    m.mark_node_unhealthy("a", T0, 1).unwrap();
    m.set_node_status("b", NodeStatus::Draining, T0, 1).unwrap();
    let held: BTreeSet<String> = ["c".to_string()].into();
    assert!(
        place(&m, |_| true, &PlacementLimits::default(), &held)
            .assignments
            .is_empty()
    );
    let batch = place(&m, |_| true, &PlacementLimits::default(), &none());
    assert!(batch.assignments.iter().all(|a| a.node_id == "c"));
    assert_eq!(batch.assignments.len(), 3);
}

#[test]
fn backoff_delays_placement_on_the_leader_clock() {
    let mut m = Manifest::new();
    register(&mut m, "a", 4, "r", 0);
    submit_with(&mut m, 1, |_| {});
    let b = place(&m, |_| true, &PlacementLimits::default(), &none());
    apply(&mut m, &b);
    m.fail_task(&tid(1), crate::manifest::Attempt(1), "a", "x", true, T0 + 2)
        .unwrap();
    let backoff = m.get_task(&tid(1)).unwrap().backoff_ms;
    assert!(backoff > 0);
    let mut timers = super::timers::LeaderTimers::new();
    let mut at = |now: u64| {
        place(
            &m,
            |t| timers.backoff_over(t, now),
            &PlacementLimits::default(),
            &none(),
        )
    };
    assert!(at(10_000).assignments.is_empty());
    assert!(at(10_000 + backoff - 1).assignments.is_empty());
    let b = at(10_000 + backoff);
    assert_eq!(b.assignments.len(), 1);
    assert_eq!(b.assignments[0].attempt, 2);
}

#[test]
fn batches_are_bounded_and_deterministic() {
    let mut m = Manifest::new();
    for i in 0..10 {
        register(&mut m, &format!("n{i}"), 8, "r", 0);
    }
    for n in 1..=100 {
        submit_with(&mut m, n, |s| s.priority = (n % 3) as i32);
    }
    let limits = PlacementLimits {
        batch_assignments_max: 16,
        pending_scanned_max: 1000,
    };
    let a = place(&m, |_| true, &limits, &none());
    let b = place(&m.clone(), |_| true, &limits, &none());
    assert_eq!(a, b);
    assert_eq!(a.assignments.len(), 16);
    let per_node: std::collections::BTreeMap<&str, usize> =
        a.assignments.iter().fold(Default::default(), |mut acc, x| {
            *acc.entry(x.node_id.as_str()).or_default() += 1;
            acc
        });
    assert!(per_node.values().all(|c| *c <= 2), "{per_node:?}");
    assert_eq!(batch_task_ids(&a).len(), 16);
}

/// Cost of one placement round and one liveness evaluation with 5,000 nodes and 20,000
/// pending tasks. Run: `cargo test --release --lib -- --ignored
/// scheduler::tests::placement_and_liveness_cost --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn placement_and_liveness_cost() {
    let mut m = Manifest::new();
    for i in 0..5_000 {
        register(&mut m, &format!("node-{i:05}"), 4, "r", 0);
    }
    for n in 0..20_000u64 {
        let id = TaskId::new_v7(
            T0 as u64 + n,
            (n as u128).to_le_bytes()[..10].try_into().unwrap(),
        );
        m.add_task(
            &SubmitTask {
                task_id: id.to_string(),
                task_type: "echo".into(),
                task_data: "{}".into(),
                ..Default::default()
            },
            T0,
        )
        .unwrap();
    }
    let limits = PlacementLimits::default();
    let start = std::time::Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        let b = place(&m, |_| true, &limits, &none());
        assert_eq!(b.assignments.len(), limits.batch_assignments_max);
    }
    let place_ms = start.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let mut l = crate::liveness::Liveness::new(crate::liveness::LivenessConfig::default());
    l.become_leader(0);
    for n in m.all_nodes() {
        l.observe_heartbeat(&n.node_id, 1, T0, 1.0, 1.0, 0);
    }
    let start = std::time::Instant::now();
    for i in 0..rounds {
        let a = l.evaluate(2 + i, &m, true);
        assert!(a.lost_nodes.is_empty());
    }
    let eval_ms = start.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let start = std::time::Instant::now();
    let beats = 100_000u64;
    for i in 0..beats {
        let node = format!("node-{:05}", i % 5_000);
        let reg = RegisterNode {
            node_id: node.clone(),
            region: "r".into(),
            cloud_provider: "aws".into(),
            capacity: Some(NodeCapacity {
                slots: 4,
                cpu_cores: 4,
                memory_mb: 8192,
                gpus: 0,
            }),
            ..Default::default()
        };
        assert!(!m.registration_changes(&reg));
        l.observe_heartbeat(&node, 3 + i, T0, 1.0, 1.0, 0);
    }
    let beat_us = start.elapsed().as_secs_f64() * 1e6 / beats as f64;
    eprintln!(
        "5000 nodes, 20000 pending: place() {place_ms:.2} ms/round (256 assignments); \
         liveness evaluate {eval_ms:.2} ms; heartbeat check+observe {beat_us:.2} us"
    );
}
