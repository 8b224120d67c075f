//! ReadIndex (thesis §6.4) and leadership transfer (thesis §3.10).

use super::*;
use crate::raft::{MessageBody, ProposeError};

/// Thesis §6.4: a leader's read is confirmed by a heartbeat round to a quorum and answered
/// with the commit index at the time of the request.
#[test]
fn leader_read_index_confirmed_by_quorum() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.propose(leader, b"a");
    let commit = net.nodes[&leader].commit();
    net.raw(leader.0).read_index(b"r1".to_vec()).unwrap();
    assert!(net.nodes[&leader].read_states.is_empty());
    net.stabilize();
    assert_eq!(
        net.nodes[&leader].read_states,
        vec![ReadState {
            ctx: b"r1".to_vec(),
            index: commit
        }]
    );
}

/// docs/failures.md C5: a deposed leader that still thinks it leads cannot confirm a read — its
/// heartbeat round never reaches a quorum — so it never answers from stale state.
#[test]
fn deposed_leader_does_not_answer_reads() {
    let mut net = Net::new(3, |c| c.check_quorum = false);
    let old = net.elect();
    net.isolate(old.0);
    net.raw(old.0).read_index(b"stale?".to_vec()).unwrap();
    net.stabilize();
    assert!(net.nodes[&old].read_states.is_empty());
    // The rest elect a new leader and write; the old one rejoins and steps down.
    let others: Vec<NodeId> = net.nodes.keys().copied().filter(|&id| id != old).collect();
    net.raw(others[0].0).campaign();
    net.stabilize();
    let new = net.leader().unwrap();
    assert_ne!(new, old);
    net.propose(new, b"fresh");
    net.heal();
    net.ticks(5);
    assert_eq!(net.nodes[&old].role(), Role::Follower);
    assert!(
        net.nodes[&old].read_states.is_empty(),
        "the old leader never answered"
    );
}

/// docs/failures.md C6: a new leader does not answer ReadIndex before it has committed an entry of
/// its own term (its commit index may lag); the read is answered once the no-op commits.
#[test]
fn new_leader_answers_reads_only_after_committing_in_its_term() {
    let mut net = Net::new(3, |_| {});
    // Hold back every answer to the candidate's AppendEntries so the no-op stays uncommitted.
    net.filter = Some(Box::new(|m: &Message| {
        !matches!(m.body, MessageBody::AppendEntriesResponse { .. })
    }));
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.leader(), Some(n(1)));
    net.raw(1).read_index(b"r".to_vec()).unwrap();
    net.ticks(3); // heartbeats are acknowledged, but there is no commit in this term yet
    assert!(net.nodes[&n(1)].read_states.is_empty());
    net.filter = None;
    net.ticks(3);
    let rs = &net.nodes[&n(1)].read_states;
    assert_eq!(rs.len(), 1);
    assert!(rs[0].index >= LogIndex(1));
}

/// A follower forwards ReadIndex to the leader and relays the answer into its own
/// read states.
#[test]
fn follower_read_index_is_forwarded() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.propose(leader, b"a");
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.raw(f.0).read_index(b"f".to_vec()).unwrap();
    net.stabilize();
    let rs = &net.nodes[&f].read_states;
    assert_eq!(
        rs,
        &vec![ReadState {
            ctx: b"f".to_vec(),
            index: net.nodes[&leader].commit()
        }]
    );
}

/// A single voter answers a read at once (after its current-term commit).
#[test]
fn single_voter_answers_read_immediately() {
    let mut net = Net::new(1, |_| {});
    let l = net.elect();
    net.raw(l.0).read_index(b"x".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.nodes[&l].read_states.len(), 1);
}

/// A follower that knows no leader refuses a read with NotLeader.
#[test]
fn read_without_leader_is_refused() {
    let mut net = Net::new(3, |_| {});
    assert_eq!(
        net.raw(2).read_index(b"x".to_vec()),
        Err(ProposeError::NotLeader { leader: None })
    );
}

/// Thesis §3.10: transfer to a lagging follower — the leader refuses proposals meanwhile,
/// brings the target up to date, sends TimeoutNow, and the target wins at once (voters in
/// their lease still vote because the request is flagged as a transfer).
#[test]
fn leadership_transfer_to_lagging_follower() {
    let mut net = Net::new(3, |_| {});
    let old = net.elect();
    let target = net.nodes.keys().copied().find(|&id| id != old).unwrap();
    net.isolate(target.0);
    for i in 0..5u8 {
        net.propose(old, &[i]);
    }
    net.heal();
    net.raw(old.0).transfer_leader(target).unwrap();
    assert_eq!(
        net.raw(old.0).propose(b"no".to_vec()),
        Err(ProposeError::TransferInProgress)
    );
    net.trace.clear();
    net.stabilize();
    assert!(
        net.trace
            .iter()
            .any(|m| m.body == MessageBody::TimeoutNow && m.to == target)
    );
    assert_eq!(net.leader(), Some(target));
    assert_eq!(net.nodes[&old].role(), Role::Follower);
    net.propose(target, b"after");
    net.ticks(2);
    net.check_agreement();
    assert!(net.nodes.values().all(|n| n.sm.len() == 6));
}

/// Thesis §3.10: a transfer that cannot finish (target unreachable) is abandoned after an
/// election timeout and the leader accepts proposals again.
#[test]
fn transfer_aborts_after_election_timeout() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let target = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(target.0);
    net.raw(leader.0).transfer_leader(target).unwrap();
    assert_eq!(
        net.raw(leader.0).propose(b"x".to_vec()),
        Err(ProposeError::TransferInProgress)
    );
    net.ticks(12);
    assert_eq!(net.leader(), Some(leader));
    assert!(net.raw(leader.0).propose(b"x".to_vec()).is_ok());
}

/// Transfer requests that cannot be served are refused with a typed error.
#[test]
fn transfer_refusals() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    assert!(matches!(
        net.raw(f.0).transfer_leader(leader),
        Err(ProposeError::NotLeader { .. })
    ));
    assert!(matches!(
        net.raw(leader.0).transfer_leader(n(9)),
        Err(ProposeError::ConfChange(_))
    ));
}
