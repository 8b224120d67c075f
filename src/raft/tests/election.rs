//! Leader election (§5.2), PreVote (thesis §9.6), CheckQuorum (thesis §6.2) and durable votes.

use super::*;
use crate::raft::{HardState, MessageBody};

fn single(tweak: impl Fn(&mut Config)) -> (RawNode<MemLog>, MemLog) {
    let mut cfg = test_config(1, &[1]);
    tweak(&mut cfg);
    let log = mem_log();
    (RawNode::new(cfg, log.clone()).unwrap(), log)
}

/// §5.2 + docs/failures.md C4: a single voter elects itself, but its no-op commits only after the
/// Ready that carried it was persisted (advance), never before.
#[test]
fn single_voter_commits_only_after_local_persist() {
    let (mut raw, log) = single(|_| {});
    raw.campaign();
    let rd = raw.ready();
    assert_eq!(rd.soft_state.unwrap().role, Role::Leader);
    assert_eq!(
        rd.hard_state.unwrap(),
        HardState {
            term: Term(1),
            vote: Some(n(1)),
            commit: LogIndex(0)
        }
    );
    assert_eq!(rd.entries.len(), 1, "the new leader's no-op");
    assert!(rd.entries[0].data.is_empty());
    assert!(
        rd.committed_entries.is_empty(),
        "nothing commits before the write is durable"
    );
    log.persist(&rd);
    raw.advance(rd.number);
    assert!(raw.has_ready());
    let rd = raw.ready();
    assert_eq!(rd.hard_state.unwrap().commit, LogIndex(1));
    assert_eq!(rd.committed_entries.len(), 1);
    log.persist(&rd);
    raw.advance(rd.number);
    let idx = raw.propose(b"x".to_vec()).unwrap();
    let rd = raw.ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.committed_entries.is_empty());
    log.persist(&rd);
    raw.advance(rd.number);
    let rd = raw.ready();
    assert_eq!(rd.committed_entries.last().unwrap().index, idx);
}

/// Election timeouts are drawn from `[min, max)` by a PRNG seeded from `Config::seed`: the
/// same seed gives the same timeout, different seeds spread out (§5.2 randomized timeouts).
#[test]
fn election_timeout_is_seeded_and_in_range() {
    let fire_tick = |seed: u64| {
        let (mut raw, _) = single(|c| {
            c.seed = seed;
            c.pre_vote = false;
        });
        for t in 1..=100u64 {
            raw.tick();
            if raw.status().soft.role != Role::Follower {
                return t;
            }
        }
        panic!("never campaigned");
    };
    let mut seen = BTreeSet::new();
    for seed in 0..20 {
        let t = fire_tick(seed);
        assert!((10..20).contains(&t), "timeout {t} outside [10, 20)");
        assert_eq!(t, fire_tick(seed), "same seed, same timeout");
        seen.insert(t);
    }
    assert!(
        seen.len() > 3,
        "timeouts should vary with the seed: {seen:?}"
    );
}

/// §5.2: 3- and 5-member clusters elect exactly one leader that all others follow.
#[test]
fn elects_one_leader_in_3_and_5() {
    for size in [3, 5] {
        let mut net = Net::new(size, |_| {});
        let leader = net.elect();
        net.ticks(5);
        assert_eq!(net.leader(), Some(leader));
        let term = net.nodes[&leader].term();
        for node in net.nodes.values() {
            assert_eq!(node.term(), term);
            assert_eq!(node.raw.status().soft.leader, Some(leader));
        }
        let leaders = net
            .nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .count();
        assert_eq!(leaders, 1);
    }
}

/// docs/failures.md C2: a vote leaves only in `persisted_messages`, in the same Ready as the hard
/// state that records it, so it is sent only after the vote is durable.
#[test]
fn vote_is_sent_only_after_it_is_durable() {
    let log = mem_log();
    let mut raw = RawNode::new(test_config(2, &[1, 2, 3]), log).unwrap();
    raw.step(Message {
        from: n(1),
        to: n(2),
        term: Term(5),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            transfer: false,
        },
    });
    let rd = raw.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.unwrap().vote, Some(n(1)));
    assert_eq!(rd.hard_state.unwrap().term, Term(5));
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { reject: false }
    ));
}

/// The candidate's own RequestVotes also wait for its term and self-vote to be durable,
/// otherwise a crash could let it vote again in the same term (docs/failures.md C2).
#[test]
fn request_vote_waits_for_durable_term() {
    let log = mem_log();
    let mut cfg = test_config(1, &[1, 2, 3]);
    cfg.pre_vote = false;
    let mut raw = RawNode::new(cfg, log).unwrap();
    raw.campaign();
    let rd = raw.ready();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.persisted_messages.len(), 2);
    assert_eq!(rd.hard_state.unwrap().vote, Some(n(1)));
}

/// Thesis §9.6 (PreVote) and docs/failures.md C7: a partitioned follower keeps timing out but does
/// not raise its term, so when it rejoins it does not depose the healthy leader.
#[test]
fn prevote_keeps_partitioned_node_from_inflating_term() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let term = net.nodes[&leader].term();
    let lonely = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(lonely.0);
    net.ticks(200);
    assert_eq!(
        net.nodes[&lonely].term(),
        term,
        "PreVote must not raise the term"
    );
    net.heal();
    net.ticks(30);
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.nodes[&leader].term(), term);
}

/// Without PreVote the same partition does inflate the term (the control for the test above).
#[test]
fn without_prevote_partitioned_node_inflates_term() {
    let mut net = Net::new(3, |c| c.pre_vote = false);
    let leader = net.elect();
    let term = net.nodes[&leader].term();
    let lonely = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(lonely.0);
    net.ticks(100);
    assert!(net.nodes[&lonely].term() > term);
}

/// Thesis §6.2 (CheckQuorum) and docs/failures.md C7: a leader cut off from its quorum steps down
/// within an election timeout, and the majority side elects a new leader.
#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut net = Net::new(3, |_| {});
    let old = net.elect();
    net.isolate(old.0);
    net.ticks(25);
    assert_eq!(net.nodes[&old].role(), Role::Follower);
    let new = net.leader().expect("majority elects a new leader");
    assert_ne!(new, old);
    net.heal();
    net.ticks(10);
    assert_eq!(net.leader(), Some(new));
    assert_eq!(net.nodes[&old].raw.status().soft.leader, Some(new));
}

/// Thesis §4.2.3: a follower that heard from a leader within the election timeout ignores a
/// RequestVote of a higher term — unless it is a leadership transfer (thesis §3.10).
#[test]
fn vote_refused_within_leader_lease_unless_transfer() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    let follower = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let other = net
        .nodes
        .keys()
        .copied()
        .find(|&id| id != leader && id != follower)
        .unwrap();
    let term = net.nodes[&follower].term();
    let last = net.nodes[&leader].raw.status().last_index;
    let request = |transfer| Message {
        from: other,
        to: follower,
        term: Term(term.0 + 1),
        body: MessageBody::RequestVote {
            last_log_index: last,
            last_log_term: term,
            transfer,
        },
    };
    let raw = net.raw(follower.0);
    let vote_before = raw.status().hard.vote;
    raw.step(request(false));
    assert_eq!(
        raw.status().soft.term,
        term,
        "ignored entirely inside the lease"
    );
    assert_eq!(raw.status().hard.vote, vote_before);
    raw.step(request(true));
    let st = raw.status();
    assert_eq!(st.soft.term, Term(term.0 + 1));
    assert_eq!(st.hard.vote, Some(other));
}

/// §5.4.1: a vote is refused to a candidate whose log is less up to date.
#[test]
fn vote_refused_to_stale_log() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.propose(leader, b"a");
    let follower = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.ticks(30); // leave the lease behind: no more messages are delivered below
    let raw = net.raw(follower.0);
    let term = raw.status().soft.term;
    raw.step(Message {
        from: n(9),
        to: follower,
        term: Term(term.0 + 5),
        body: MessageBody::RequestVote {
            last_log_index: LogIndex(1),
            last_log_term: term,
            transfer: true,
        },
    });
    let rd = raw.ready();
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::RequestVoteResponse { reject: true }
    ));
}

/// Learners never campaign, however long they go without a leader (thesis §4.2.1).
#[test]
fn learner_never_campaigns() {
    let log = mem_log();
    let mut raw = RawNode::new(test_config(4, &[1, 2, 3]), log).unwrap();
    for _ in 0..200 {
        raw.tick();
    }
    raw.campaign();
    assert_eq!(raw.status().soft.role, Role::Follower);
    assert!(!raw.has_ready() || raw.ready().persisted_messages.is_empty());
}

/// Bad configs are refused with an error naming what is wrong.
#[test]
fn bad_config_is_refused() {
    let mut cfg = test_config(1, &[1]);
    cfg.election_timeout_ticks_max = cfg.election_timeout_ticks_min;
    let err = RawNode::new(cfg, mem_log()).err().unwrap();
    assert!(err.to_string().contains("election timeout"), "{err}");
    let cfg = test_config(0, &[1]);
    assert!(
        RawNode::new(cfg, mem_log())
            .err()
            .unwrap()
            .to_string()
            .contains("id")
    );
}
