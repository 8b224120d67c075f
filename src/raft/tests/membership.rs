//! Single-server membership changes (thesis §4.1), learners (thesis §4.2.1), removing the
//! leader (thesis §4.2.2, docs/failures.md C9).

use super::*;
use crate::raft::{ConfChange, ConfChangeError, MessageBody, ProposeError};

/// Adds node `id` to the net as a fresh learner process (same bootstrap voters).
fn start_learner(net: &mut Net, id: u64, voters: &[u64]) {
    let cfg = test_config(id, voters);
    net.add_node(cfg);
}

/// Thesis §4.2.1 + §4.1: add a learner, let it catch up, promote it; a promotion while it
/// lags is refused with LearnerBehind. The promoted member then counts toward quorum.
#[test]
fn add_learner_then_promote() {
    let mut net = Net::new(3, |c| c.learner_catch_up_entries_max = 5);
    let leader = net.elect();
    start_learner(&mut net, 4, &[1, 2, 3]);
    net.isolate(4);
    net.raw(leader.0)
        .propose_conf_change(ConfChange::AddLearner(n(4)))
        .unwrap();
    net.stabilize();
    assert_eq!(
        net.nodes[&leader].raw.status().membership.learners,
        [n(4)].into()
    );
    for i in 0..20u8 {
        net.propose(leader, &[i]);
    }
    assert_eq!(
        net.raw(leader.0)
            .propose_conf_change(ConfChange::PromoteLearner(n(4))),
        Err(ProposeError::LearnerBehind(n(4)))
    );
    net.heal();
    net.ticks(3);
    assert_eq!(net.node(4).sm.len(), 20, "the learner caught up");
    assert_eq!(net.node(4).role(), Role::Follower);
    net.raw(leader.0)
        .propose_conf_change(ConfChange::PromoteLearner(n(4)))
        .unwrap();
    net.stabilize();
    net.ticks(2);
    for node in net.nodes.values() {
        assert_eq!(
            node.raw.status().membership.voters,
            [n(1), n(2), n(3), n(4)].into(),
            "node {}",
            node.cfg.id
        );
    }
    // Four voters: quorum is 3. With two voters cut off nothing commits; with one it does.
    let others: Vec<NodeId> = net
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    net.isolate(others[0].0);
    net.isolate(others[1].0);
    let c = net.nodes[&leader].commit();
    let _ = net.raw(leader.0).propose(b"needs 3 of 4".to_vec());
    net.stabilize();
    assert_eq!(net.nodes[&leader].commit(), c);
    net.heal();
    net.isolate(others[0].0);
    net.ticks(2);
    assert!(net.nodes[&leader].commit() > c);
}

/// Thesis §4.1: one change at a time — a second change is refused while the first is
/// uncommitted; invalid changes are refused with the reason.
#[test]
fn one_conf_change_at_a_time() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let others: Vec<NodeId> = net
        .nodes
        .keys()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    net.isolate(others[0].0);
    net.isolate(others[1].0);
    net.raw(leader.0)
        .propose_conf_change(ConfChange::AddLearner(n(4)))
        .unwrap();
    net.stabilize();
    assert_eq!(
        net.raw(leader.0)
            .propose_conf_change(ConfChange::AddLearner(n(5))),
        Err(ProposeError::ConfChangePending)
    );
    net.heal();
    net.ticks(2);
    assert_eq!(
        net.raw(leader.0)
            .propose_conf_change(ConfChange::AddLearner(n(4))),
        Err(ProposeError::ConfChange(ConfChangeError::AlreadyMember(n(
            4
        ))))
    );
    assert_eq!(
        net.raw(leader.0)
            .propose_conf_change(ConfChange::PromoteLearner(n(2))),
        Err(ProposeError::ConfChange(ConfChangeError::NotALearner(n(2))))
    );
    assert!(
        net.raw(leader.0)
            .propose_conf_change(ConfChange::AddLearner(n(5)))
            .is_ok()
    );
}

/// Ongaro's 2015 single-server fix: a new leader refuses conf changes until it has
/// committed an entry of its own term.
#[test]
fn no_conf_change_before_commit_in_term() {
    let mut net = Net::new(3, |_| {});
    net.filter = Some(Box::new(|m: &Message| {
        !matches!(m.body, MessageBody::AppendEntriesResponse { .. })
    }));
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.leader(), Some(n(1)));
    assert_eq!(
        net.raw(1).propose_conf_change(ConfChange::AddLearner(n(4))),
        Err(ProposeError::ConfChangePending)
    );
    net.filter = None;
    net.ticks(2);
    assert!(
        net.raw(1)
            .propose_conf_change(ConfChange::AddLearner(n(4)))
            .is_ok()
    );
}

/// docs/failures.md C9 (thesis §4.2.2): a leader that removes itself keeps leading only until the
/// removal commits, then steps down and never campaigns again; the others elect a leader
/// among themselves and keep committing.
#[test]
fn removed_leader_steps_down_and_stays_out() {
    let mut net = Net::new(3, |_| {});
    let old = net.elect();
    net.propose(old, b"a");
    net.raw(old.0)
        .propose_conf_change(ConfChange::RemoveNode(old))
        .unwrap();
    net.stabilize();
    assert_eq!(
        net.nodes[&old].role(),
        Role::Follower,
        "stepped down once the removal committed"
    );
    net.ticks(60);
    let new = net.leader().expect("the remaining two elect a leader");
    assert_ne!(new, old);
    assert_ne!(net.nodes[&old].role(), Role::Leader);
    for node in net.nodes.values().filter(|nd| nd.cfg.id != old) {
        assert_eq!(node.raw.status().membership.voters.len(), 2);
    }
    net.propose(new, b"b");
    net.ticks(2);
    let survivors: Vec<&Node> = net.nodes.values().filter(|nd| nd.cfg.id != old).collect();
    assert!(survivors.iter().all(|nd| nd.sm.len() == 2));
    // The removed node's term never disrupts the survivors (it does not campaign).
    let term = net.nodes[&new].term();
    net.ticks(60);
    assert_eq!(net.nodes[&new].term(), term);
    assert_eq!(net.leader(), Some(new));
}

/// Removing a follower: the cluster keeps working with the rest; the removed member gets
/// no more entries.
#[test]
fn remove_follower() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let gone = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.raw(leader.0)
        .propose_conf_change(ConfChange::RemoveNode(gone))
        .unwrap();
    net.stabilize();
    net.ticks(2);
    let applied_gone = net.nodes[&gone].sm.len();
    net.propose(leader, b"x");
    net.ticks(2);
    assert_eq!(net.nodes[&gone].sm.len(), applied_gone);
    assert_eq!(net.nodes[&leader].sm.len(), applied_gone + 1);
    assert!(
        net.nodes[&leader]
            .raw
            .status()
            .peers
            .keys()
            .all(|&p| p != gone)
    );
}
