//! Whole-cluster behaviour: leader loss in 3 and 5 members, restarts, determinism, and a
//! randomized sweep (partitions, message loss, restarts, snapshots) checking the safety
//! properties of §5.2/§5.4 after every step.

use std::cell::Cell;
use std::rc::Rc;

use super::*;
use crate::raft::ConfChange;
use crate::raft::core::SplitMix64;

/// §5.2/§5.3: when the leader is cut off, a 5-member cluster elects another, keeps
/// committing, and the old leader catches up (and its uncommitted writes vanish) on return.
#[test]
fn five_members_survive_leader_isolation() {
    let mut net = Net::new(5, |_| {});
    let old = net.elect();
    for i in 0..10u8 {
        net.propose(old, &[i]);
    }
    net.isolate(old.0);
    let _ = net.raw(old.0).propose(b"lost".to_vec());
    net.stabilize();
    net.ticks(40);
    let new = net.leader().unwrap();
    assert_ne!(new, old);
    for i in 10..20u8 {
        net.propose(new, &[i]);
    }
    net.heal();
    net.ticks(5);
    for node in net.nodes.values() {
        let cmds: Vec<u8> = node.sm.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(cmds, (0..20).collect::<Vec<_>>(), "node {}", node.cfg.id);
    }
}

/// A member restarted from its storage rebuilds term, vote and log and catches up.
#[test]
fn restarted_member_catches_up() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    for i in 0..5u8 {
        net.propose(leader, &[i]);
    }
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.take_snapshot(f);
    net.restart(f);
    for i in 5..10u8 {
        net.propose(leader, &[i]);
    }
    net.ticks(3);
    assert_eq!(net.nodes[&f].sm, net.nodes[&leader].sm);
    assert_eq!(net.nodes[&f].term(), net.nodes[&leader].term());
}

fn scripted_run() -> Vec<Message> {
    let mut net = Net::new(5, |_| {});
    let l = net.elect();
    for i in 0..10u8 {
        net.propose(l, &[i]);
    }
    net.isolate(l.0);
    net.ticks(40);
    net.heal();
    net.ticks(10);
    net.trace
}

/// Determinism: the same inputs give the same message trace bit for bit (no clocks, no
/// global RNG, no hash-order iteration reaching outputs).
#[test]
fn same_inputs_same_trace() {
    assert_eq!(scripted_run(), scripted_run());
}

/// Randomized sweep over seeds: message loss, partitions, restarts, snapshots and client
/// proposals, checking after every step that (1) at most one leader is seen per term
/// (election safety, §5.2), (2) no two members applied different commands at one index
/// (state-machine safety, §5.4.3), (3) commit indexes never go backwards; and at the end,
/// after healing, that every member converges (liveness).
#[test]
fn randomized_safety_sweep() {
    let mut conf_changes = 0;
    for seed in 0..100u64 {
        conf_changes += run_chaos(seed);
    }
    assert!(
        conf_changes > 50,
        "only {conf_changes} membership changes were accepted"
    );
}

fn run_chaos(seed: u64) -> u32 {
    let mut conf_changes = 0;
    let size = if seed.is_multiple_of(2) { 3 } else { 5 };
    let mut net = Net::new(size, |c| {
        c.seed ^= seed.wrapping_mul(0x9E37_79B9);
        c.snapshot_chunk_bytes = 32;
        c.append_bytes_max = 128;
        c.inflight_msgs_max = 4;
    });
    // An extra process that joins as a learner, gets promoted and removed at random.
    let extra = size + 1;
    let voters: Vec<u64> = (1..=size).collect();
    let mut cfg = test_config(extra, &voters);
    cfg.snapshot_chunk_bytes = 32;
    net.add_node(cfg);
    let rng = Rc::new(Cell::new(SplitMix64::new(seed)));
    let draw = {
        let rng = rng.clone();
        move |n: u64| {
            let mut r = rng.take();
            let v = r.next_u64() % n;
            rng.set(r);
            v
        }
    };
    let drop_pct = draw(20);
    let d2 = draw.clone();
    net.filter = Some(Box::new(move |_| d2(100) >= drop_pct));
    let mut leaders: BTreeMap<Term, NodeId> = BTreeMap::new();
    let mut commits: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    let mut proposed = 0u32;
    for step in 0..300 {
        match draw(20) {
            0 => {
                let id = 1 + draw(size);
                net.isolate(id);
            }
            1 | 2 => net.heal(),
            3 => {
                let id = NodeId(1 + draw(size));
                net.restart(id);
            }
            10 => {
                if let Some(l) = net.leader() {
                    let m = net.nodes[&l].raw.status().membership;
                    let x = n(extra);
                    let cc = if m.learners.contains(&x) {
                        ConfChange::PromoteLearner(x)
                    } else if m.voters.contains(&x) {
                        ConfChange::RemoveNode(x)
                    } else {
                        ConfChange::AddLearner(x)
                    };
                    if net.raw(l.0).propose_conf_change(cc).is_ok() {
                        conf_changes += 1;
                    }
                }
            }
            4 => {
                let id = NodeId(1 + draw(size));
                if net.nodes[&id].applied.0 > 0 {
                    net.take_snapshot(id);
                }
            }
            5..=9 => {
                if let Some(l) = net.leader() {
                    proposed += 1;
                    let _ = net
                        .raw(l.0)
                        .propose(format!("{seed}-{proposed}").into_bytes());
                }
            }
            _ => {}
        }
        net.tick();
        for node in net.nodes.values() {
            let st = node.raw.status();
            if st.soft.role == Role::Leader {
                let prev = leaders.insert(st.soft.term, node.cfg.id);
                assert!(
                    prev.is_none() || prev == Some(node.cfg.id),
                    "seed {seed} step {step}: two leaders in term {}",
                    st.soft.term
                );
            }
            let c = commits.entry(node.cfg.id).or_default();
            assert!(
                st.hard.commit >= *c,
                "seed {seed}: commit went backwards on {}",
                node.cfg.id
            );
            *c = st.hard.commit;
        }
        net.check_agreement();
    }
    // Liveness: heal everything, stop dropping, and everyone converges.
    net.filter = None;
    net.heal();
    net.ticks(100);
    let l = net
        .leader()
        .unwrap_or_else(|| panic!("seed {seed}: no leader after healing"));
    net.propose(l, b"final");
    net.ticks(20);
    let want = net.nodes[&l].sm.clone();
    let members = net.nodes[&l].raw.status().membership;
    for node in net.nodes.values().filter(|nd| members.contains(nd.cfg.id)) {
        assert_eq!(
            node.sm, want,
            "seed {seed}: node {} did not converge",
            node.cfg.id
        );
    }
    conf_changes
}
