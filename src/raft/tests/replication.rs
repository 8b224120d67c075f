//! Log replication (§5.3), the commit rule (§5.4.2, Figure 8), conflict handling and flow
//! control.

use super::*;
use crate::raft::MessageBody;

fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: data.to_vec(),
    }
}

fn append(
    from: u64,
    to: u64,
    term: u64,
    prev: (u64, u64),
    entries: Vec<Entry>,
    commit: u64,
) -> Message {
    Message {
        from: n(from),
        to: n(to),
        term: Term(term),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(prev.0),
            prev_log_term: Term(prev.1),
            entries,
            leader_commit: LogIndex(commit),
        },
    }
}

/// A follower with `entries` already durable.
fn follower_with(entries: Vec<Entry>, term: u64) -> (RawNode<MemLog>, MemLog) {
    let log: MemLog = std::sync::Arc::new(
        crate::storage::MemStorage::from_parts(None, entries, Default::default()).unwrap(),
    );
    let mut raw = RawNode::new(test_config(2, &[1, 2, 3]), log.clone()).unwrap();
    raw.step(append(1, 2, term, (0, 0), vec![], 0));
    let rd = raw.ready();
    log.persist(&rd);
    raw.advance(rd.number);
    (raw, log)
}

fn response_index(m: &Message) -> (bool, LogIndex) {
    match m.body {
        MessageBody::AppendEntriesResponse { reject, index, .. } => (reject, index),
        ref b => panic!("expected AppendEntriesResponse, got {b:?}"),
    }
}

/// §5.3: entries proposed on the leader reach every member and are applied in the same
/// order everywhere, in 3- and 5-member clusters.
#[test]
fn replicates_and_applies_everywhere() {
    for size in [3, 5] {
        let mut net = Net::new(size, |_| {});
        let leader = net.elect();
        for i in 0..20u8 {
            net.propose(leader, &[i]);
        }
        net.ticks(3);
        for node in net.nodes.values() {
            let cmds: Vec<u8> = node.sm.iter().map(|(_, d)| d[0]).collect();
            assert_eq!(cmds, (0..20).collect::<Vec<_>>(), "node {}", node.cfg.id);
        }
        net.check_agreement();
    }
}

/// docs/failures.md C3 (§5.3 "if an existing entry conflicts"): a duplicate or stale AppendEntries
/// whose entries all match never truncates the longer log; the answer names only the
/// entries the message covered.
#[test]
fn stale_append_never_truncates() {
    let entries: Vec<Entry> = (1..=5).map(|i| entry(i, 1, b"v")).collect();
    let (mut raw, log) = follower_with(entries.clone(), 1);
    raw.step(append(1, 2, 1, (1, 1), entries[1..3].to_vec(), 0));
    let rd = raw.ready();
    assert!(
        rd.entries.is_empty(),
        "nothing to write for matching entries"
    );
    assert_eq!(
        response_index(&rd.persisted_messages[0]),
        (false, LogIndex(3))
    );
    log.persist(&rd);
    raw.advance(rd.number);
    assert_eq!(log.all_entries(), entries);
}

/// §5.3 and docs/failures.md C3: on a real conflict (same index, different term) the follower
/// truncates from the first conflicting entry and appends in ONE Ready write.
#[test]
fn conflict_truncates_and_appends_in_one_write() {
    let entries: Vec<Entry> = (1..=4).map(|i| entry(i, 1, b"old")).collect();
    let (mut raw, log) = follower_with(entries.clone(), 1);
    let new = vec![
        entry(2, 1, b"old"),
        entry(3, 2, b"new"),
        entry(4, 2, b"new"),
    ];
    raw.step(append(1, 2, 2, (1, 1), new, 0));
    let rd = raw.ready();
    assert_eq!(
        rd.entries.iter().map(|e| e.index.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(rd.entries.iter().all(|e| e.term == Term(2)));
    log.persist(&rd);
    raw.advance(rd.number);
    let stored = log.all_entries();
    assert_eq!(stored.len(), 4);
    assert_eq!(
        stored[1], entries[1],
        "the matching entry before the conflict is kept"
    );
    assert_eq!(stored[2].term, Term(2));
}

/// §5.3 optimization: a rejection carries a hint (the last index whose term is at most the
/// leader's `prev_log_term`) so the leader skips a whole term per round trip.
#[test]
fn rejection_carries_fast_backoff_hint() {
    let mut entries: Vec<Entry> = (1..=3).map(|i| entry(i, 1, b"a")).collect();
    entries.extend((4..=50).map(|i| entry(i, 3, b"b")));
    let (mut raw, _log) = follower_with(entries, 3);
    raw.step(append(1, 2, 4, (100, 2), vec![], 0));
    let rd = raw.ready();
    match rd.persisted_messages[0].body {
        MessageBody::AppendEntriesResponse {
            reject,
            index,
            reject_hint_index,
            reject_hint_term,
        } => {
            assert!(reject);
            assert_eq!(index, LogIndex(100));
            assert_eq!(reject_hint_index, LogIndex(3), "skips all of term 3");
            assert_eq!(reject_hint_term, Term(1));
        }
        ref b => panic!("{b:?}"),
    }
}

/// Fast back-off end to end: a follower with a long divergent suffix is repaired in a few
/// rejections rather than one per entry.
#[test]
fn divergent_follower_repaired_in_few_round_trips() {
    let mut net = Net::new(3, |c| c.append_bytes_max = 256);
    let leader = net.elect();
    for i in 0..5u8 {
        net.propose(leader, &[i]);
    }
    // Cut one follower off and give the old leader 60 entries nobody else gets.
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(leader.0);
    for i in 0..60u8 {
        let _ = net.raw(leader.0).propose(vec![100 + i]);
    }
    net.stabilize();
    net.ticks(40);
    let new = net.leader().unwrap();
    assert_ne!(new, leader);
    for i in 0..30u8 {
        net.propose(new, &[200 + i]);
    }
    net.trace.clear();
    net.heal();
    net.ticks(5);
    let rejects = net
        .trace
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                MessageBody::AppendEntriesResponse { reject: true, .. }
            )
        })
        .count();
    assert!(
        rejects <= 3,
        "{rejects} rejections for a 60-entry divergent suffix"
    );
    net.check_agreement();
    let _ = f;
    let lens: BTreeSet<usize> = net.nodes.values().map(|n| n.sm.len()).collect();
    assert_eq!(lens.len(), 1, "all state machines equal length: {lens:?}");
}

/// Pipelining with flow control: in Replicate state at most `inflight_msgs_max`
/// AppendEntries are outstanding to a follower that does not answer.
#[test]
fn inflight_window_bounds_pipelining() {
    let mut net = Net::new(3, |c| {
        c.inflight_msgs_max = 3;
        c.append_bytes_max = 1; // one entry per message
    });
    let leader = net.elect();
    net.propose(leader, b"warm");
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    // Drop every answer from f so its window never frees.
    net.filter = Some(Box::new(move |m: &Message| m.from != f));
    net.trace.clear();
    for i in 0..10u8 {
        net.raw(leader.0).propose(vec![i]).unwrap();
    }
    net.stabilize();
    let sent = net
        .trace
        .iter()
        .filter(|m| m.to == f && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty()))
        .count();
    assert_eq!(sent, 3);
    assert_eq!(net.raw(leader.0).peer_state(f), Some("replicate"));
}

/// Batching: proposals made between two Readies travel in one AppendEntries per follower.
#[test]
fn proposals_between_readies_are_batched() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.trace.clear();
    for i in 0..50u8 {
        net.raw(leader.0).propose(vec![i]).unwrap();
    }
    net.stabilize();
    let appends: Vec<usize> = net
        .trace
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::AppendEntries { entries, .. } if !entries.is_empty() => {
                Some(entries.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(appends, vec![50, 50]);
}

/// Campaigns on `id` until it leads (a PreVote round may first learn a higher term).
fn campaign_until_leader(net: &mut Net, id: u64) {
    for _ in 0..5 {
        net.raw(id).campaign();
        net.stabilize();
        if net.leader() == Some(n(id)) {
            return;
        }
    }
    panic!("node {id} could not win an election");
}

/// The exact Figure 8 sequence (§5.4.2, docs/failures.md C1). An entry of an old term that sits on
/// a majority must not be committed by counting replicas, because a later leader may still
/// overwrite it — which is then exactly what happens, without any node having applied it.
#[test]
fn figure_8_old_term_entry_is_not_committed_by_counting() {
    let mut net = Net::new(5, |c| {
        c.check_quorum = false;
        c.append_bytes_max = 1; // one entry per AppendEntries, to control what arrives
    });
    // (a) S1 leads; the no-op at index 1 commits everywhere.
    net.raw(1).campaign();
    net.stabilize();
    assert_eq!(net.leader(), Some(n(1)));
    // S1 replicates X at index 2 to S2 only, then crashes.
    for id in [3, 4, 5] {
        net.isolate(id);
    }
    net.propose(n(1), b"X");
    assert_eq!(net.node(2).entries().len(), 2);
    net.heal();
    net.isolate(1);
    net.isolate(2);
    // (b) S5 is elected by S3, S4 and itself and appends its no-op at index 2, then crashes
    // before replicating it.
    net.filter = Some(Box::new(|m: &Message| {
        !matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    net.restart(n(1)); // S1 crashed
    campaign_until_leader(&mut net, 5);
    let s5_term = net.node(5).term();
    assert_eq!(net.node(5).raw.status().last_index, LogIndex(2));
    net.isolate(5);
    net.restart(n(5)); // S5 crashed
    net.filter = None;
    // (c) S1 restarts and is elected by S2, S3, S4; it replicates its old-term entry X to S3
    // (X is now on S1, S2, S3: a majority) and its new no-op (index 3) to S2 only.
    net.heal();
    net.isolate(5);
    net.isolate(4);
    // The leader's first probe to S3 carries index 3 after index 2, which S3 lacks, so S3
    // refuses it; every later message carrying index 3 to S3 is lost.
    let probes = std::rc::Rc::new(std::cell::Cell::new(0));
    net.filter = Some(Box::new(move |m: &Message| {
        let carries_3 = matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.iter().any(|e| e.index == LogIndex(3)));
        if m.to != n(3) || !carries_3 {
            return true;
        }
        probes.set(probes.get() + 1);
        probes.get() == 1
    }));
    campaign_until_leader(&mut net, 1);
    assert!(net.node(1).term() > s5_term);
    assert_eq!(
        net.node(3).entries()[1].data,
        b"X".to_vec(),
        "X is on a majority"
    );
    assert_eq!(net.node(2).entries().len(), 3);
    assert_eq!(
        net.node(1).commit(),
        LogIndex(1),
        "X (old term) must not commit by counting"
    );
    // (d) S1 crashes; S5 is elected by S3, S4 (its last term beats theirs) and overwrites X.
    net.filter = None;
    net.heal();
    net.isolate(1);
    net.isolate(2);
    net.restart(n(1)); // S1 crashed
    campaign_until_leader(&mut net, 5);
    net.stabilize();
    assert!(net.node(3).commit() >= LogIndex(2));
    assert_ne!(
        net.node(3).entries()[1].data,
        b"X".to_vec(),
        "X was overwritten"
    );
    // Everyone converges; nobody ever applied X.
    net.heal();
    net.ticks(40);
    for node in net.nodes.values() {
        assert!(
            node.sm.iter().all(|(_, d)| d != b"X"),
            "node {} applied X",
            node.cfg.id
        );
    }
    net.check_agreement();
}

/// §5.4.2: a new leader commits earlier-term entries only indirectly, through the no-op of
/// its own term (here: X from the old term commits once the no-op does).
#[test]
fn new_leader_commits_old_entries_through_its_noop() {
    let mut net = Net::new(3, |_| {});
    let l1 = net.elect();
    let others: Vec<NodeId> = net.nodes.keys().copied().filter(|&id| id != l1).collect();
    net.isolate(others[1].0);
    // X reaches one follower, but the leader crashes before learning it is replicated.
    net.filter = Some(Box::new(move |m: &Message| m.to != l1));
    net.raw(l1.0).propose(b"X".to_vec()).unwrap();
    net.stabilize();
    net.filter = None;
    net.heal();
    net.isolate(l1.0);
    net.ticks(40);
    let l2 = net.leader().unwrap();
    assert_eq!(l2, others[0]);
    net.ticks(2);
    assert!(net.nodes[&l2].sm.iter().any(|(_, d)| d == b"X"));
}

/// The Ready split (DESIGN "The Raft core"): the leader's AppendEntries may leave before its
/// own write (`messages`), the follower's acknowledgement only after its write
/// (`persisted_messages`, docs/failures.md C4).
#[test]
fn leader_appends_go_at_once_follower_acks_after_persist() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.raw(leader.0).propose(b"x".to_vec()).unwrap();
    let rd = net.raw(leader.0).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.persisted_messages.is_empty());
    assert_eq!(rd.messages.len(), 2);
    assert!(
        rd.messages
            .iter()
            .all(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
    );
    let to = rd.messages[0].to;
    let msg = rd.messages[0].clone();
    net.nodes[&leader].log.persist(&rd);
    net.raw(leader.0).advance(rd.number);
    net.raw(to.0).step(msg);
    let rd = net.raw(to.0).ready();
    assert_eq!(rd.entries.len(), 1);
    assert!(rd.messages.is_empty());
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::AppendEntriesResponse { reject: false, .. }
    ));
}
