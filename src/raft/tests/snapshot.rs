//! Snapshots and log compaction (§7, Figure 13; thesis §5), chunked InstallSnapshot.

use super::*;
use crate::raft::{ConfChange, HardState, Membership, MessageBody, SnapshotMeta, Storage};

/// §7: a follower that needs entries the leader has compacted receives the leader's
/// snapshot in `snapshot_chunk_bytes` chunks (one in flight at a time), restores it, and then
/// catches up on the entries after it.
#[test]
fn lagging_follower_catches_up_from_chunked_snapshot() {
    let mut net = Net::new(3, |c| c.snapshot_chunk_bytes = 16);
    let leader = net.elect();
    let lagger = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(lagger.0);
    for i in 0..20u8 {
        net.propose(leader, &[i; 4]);
    }
    let snap_index = net.take_snapshot(leader);
    assert!(net.nodes[&leader].log.first_index().unwrap() > LogIndex(2));
    for i in 20..25u8 {
        net.propose(leader, &[i; 4]);
    }
    net.trace.clear();
    net.heal();
    net.ticks(3);
    let chunks: Vec<(u64, bool)> = net
        .trace
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { offset, done, .. } if m.to == lagger => {
                Some((*offset, *done))
            }
            _ => None,
        })
        .collect();
    assert!(
        chunks.len() > 3,
        "snapshot sent in several chunks: {chunks:?}"
    );
    assert!(
        chunks.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets grow: {chunks:?}"
    );
    assert!(chunks.last().unwrap().1, "last chunk is marked done");
    let l = &net.nodes[&lagger];
    assert_eq!(l.log.snapshot().unwrap().meta.index, snap_index);
    assert_eq!(
        l.sm, net.nodes[&leader].sm,
        "same state machine after catch-up"
    );
    net.check_agreement();
}

/// A lost chunk is retransmitted (after an election timeout without an answer) and the
/// follower answers an unexpected offset with the offset it wants, so the transfer resumes.
#[test]
fn lost_snapshot_chunk_is_retransmitted() {
    let mut net = Net::new(3, |c| c.snapshot_chunk_bytes = 8);
    let leader = net.elect();
    let lagger = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(lagger.0);
    for i in 0..10u8 {
        net.propose(leader, &[i; 4]);
    }
    net.take_snapshot(leader);
    let dropped = std::rc::Rc::new(std::cell::Cell::new(false));
    let d = dropped.clone();
    net.filter = Some(Box::new(move |m: &Message| {
        let second = matches!(m.body, MessageBody::InstallSnapshot { offset: 8, .. });
        if second && !d.get() {
            d.set(true);
            return false;
        }
        true
    }));
    net.heal();
    net.ticks(30);
    assert!(dropped.get());
    assert_eq!(net.nodes[&lagger].sm, net.nodes[&leader].sm);
}

/// Liveness (simulator seed 9796127466775547395): lost acknowledgements of a snapshot
/// transfer, a chunk's and the final one's, must not stall it. The leader retransmits the
/// chunk in flight after an election timeout; the follower answers a chunk it already holds
/// with the offset it wants next (or, once restored, with `done`), and the transfer finishes.
#[test]
fn lost_snapshot_acks_do_not_stall_the_transfer() {
    let mut net = Net::new(3, |c| c.snapshot_chunk_bytes = 8);
    let leader = net.elect();
    let lagger = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    net.isolate(lagger.0);
    for i in 0..10u8 {
        net.propose(leader, &[i; 4]);
    }
    let snap_index = net.take_snapshot(leader);
    let dropped = std::rc::Rc::new(std::cell::Cell::new((false, false)));
    let d = dropped.clone();
    net.filter = Some(Box::new(move |m: &Message| {
        let (chunk_ack, done_ack) = d.get();
        match m.body {
            MessageBody::InstallSnapshotResponse {
                done: false,
                reject: false,
                next_offset: 16,
                ..
            } if !chunk_ack => {
                d.set((true, done_ack));
                false
            }
            MessageBody::InstallSnapshotResponse { done: true, .. } if !done_ack => {
                d.set((chunk_ack, true));
                false
            }
            _ => true,
        }
    }));
    net.heal();
    net.ticks(60);
    assert_eq!(
        dropped.get(),
        (true, true),
        "both acknowledgements were dropped"
    );
    let l = &net.nodes[&lagger];
    assert_eq!(l.log.snapshot().unwrap().meta.index, snap_index);
    assert_eq!(l.sm, net.nodes[&leader].sm);
    let status = net.raw(leader.0).status();
    assert_eq!(
        status.peers[&lagger].match_index, status.last_index,
        "the leader knows the follower caught up"
    );
    net.check_agreement();
}

/// docs/failures.md C8: a snapshot at or below the follower's commit index is acknowledged but
/// ignored — nothing to persist, and the applied index does not move backwards.
#[test]
fn stale_snapshot_is_acknowledged_and_ignored() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    for i in 0..5u8 {
        net.propose(leader, &[i]);
    }
    net.ticks(2);
    let f = net.nodes.keys().copied().find(|&id| id != leader).unwrap();
    let applied = net.nodes[&f].applied;
    let term = net.nodes[&f].term();
    let raw = net.raw(f.0);
    raw.step(Message {
        from: leader,
        to: f,
        term,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: LogIndex(2),
                term,
                membership: Membership::with_voters([n(1), n(2), n(3)]),
            },
            offset: 0,
            data: b"old state".to_vec(),
            done: true,
        },
    });
    let rd = raw.ready();
    assert!(rd.snapshot.is_none());
    assert!(rd.entries.is_empty());
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::InstallSnapshotResponse {
            done: true,
            reject: false,
            ..
        }
    ));
    raw.advance(rd.number);
    assert_eq!(raw.status().applied, applied);
}

/// A newer snapshot is handed out in `Ready::snapshot`, replaces the log, and moves the
/// commit and applied index forward to it; the acknowledgement waits for the persist.
#[test]
fn newer_snapshot_is_restored() {
    let log = mem_log();
    let mut raw = RawNode::new(test_config(2, &[1, 2, 3]), log.clone()).unwrap();
    let meta = SnapshotMeta {
        index: LogIndex(50),
        term: Term(3),
        membership: Membership::with_voters([n(1), n(2), n(3)]),
    };
    let chunk = |offset: u64, data: &[u8], done| Message {
        from: n(1),
        to: n(2),
        term: Term(3),
        body: MessageBody::InstallSnapshot {
            meta: meta.clone(),
            offset,
            data: data.to_vec(),
            done,
        },
    };
    raw.step(chunk(0, b"abc", false));
    raw.step(chunk(7, b"zzz", false)); // wrong offset: refused, resume at 3
    raw.step(chunk(3, b"def", true));
    let rd = raw.ready();
    let snap = rd.snapshot.clone().expect("snapshot to restore");
    assert_eq!(snap.data, b"abcdef");
    assert_eq!(snap.meta, meta);
    assert_eq!(rd.hard_state.unwrap().commit, LogIndex(50));
    assert!(rd.messages.is_empty());
    let answers: Vec<&MessageBody> = rd.persisted_messages.iter().map(|m| &m.body).collect();
    assert!(matches!(
        answers[1],
        MessageBody::InstallSnapshotResponse {
            reject: true,
            next_offset: 3,
            ..
        }
    ));
    assert!(matches!(
        answers[2],
        MessageBody::InstallSnapshotResponse {
            done: true,
            next_offset: 6,
            ..
        }
    ));
    log.persist(&rd);
    raw.advance(rd.number);
    let st = raw.status();
    assert_eq!(st.applied, LogIndex(50));
    assert_eq!(st.last_index, LogIndex(50));
    assert_eq!(log.first_index().unwrap(), LogIndex(51));
}

/// `snapshot_meta` reports the term at the index and the membership in force there, from a
/// short history of committed membership changes (thesis §4.1 with commit-time changes).
#[test]
fn snapshot_meta_reports_membership_at_index() {
    let mut net = Net::new(3, |_| {});
    let leader = net.elect();
    net.propose(leader, b"a");
    let before = net.nodes[&leader].applied;
    net.raw(leader.0)
        .propose_conf_change(ConfChange::AddLearner(n(4)))
        .unwrap();
    net.stabilize();
    net.propose(leader, b"b");
    let after = net.nodes[&leader].applied;
    let raw = &net.nodes[&leader].raw;
    let m_before = raw.snapshot_meta(before).unwrap();
    assert!(m_before.membership.learners.is_empty());
    let m_after = raw.snapshot_meta(after).unwrap();
    assert_eq!(m_after.membership.learners, [n(4)].into());
    assert_eq!(m_after.term, net.nodes[&leader].term());
    assert!(
        raw.snapshot_meta(LogIndex(after.0 + 100)).is_err(),
        "not applied yet"
    );
}

/// Restart (thesis §4.1, our commit-time rule): membership = snapshot membership + every
/// conf entry up to the durable commit index; an uncommitted conf entry is not in force.
#[test]
fn restart_rebuilds_membership_from_snapshot_and_log() {
    let voters = Membership::with_voters([n(1), n(2), n(3)]);
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(5),
            term: Term(1),
            membership: voters,
        },
        data: vec![],
    };
    let cc = |c: ConfChange, i: u64| Entry {
        term: Term(2),
        index: LogIndex(i),
        kind: EntryKind::ConfChange,
        data: c.encode(),
    };
    let entries = vec![
        cc(ConfChange::AddLearner(n(4)), 6),
        cc(ConfChange::PromoteLearner(n(4)), 7),
    ];
    let hard_state = HardState {
        term: Term(2),
        vote: None,
        commit: LogIndex(6),
    };
    let log = crate::storage::MemStorage::from_parts(Some(snapshot), entries, hard_state).unwrap();
    let raw = RawNode::new(test_config(1, &[1]), log).unwrap();
    let m = raw.status().membership;
    assert_eq!(m.voters, [n(1), n(2), n(3)].into());
    assert_eq!(
        m.learners,
        [n(4)].into(),
        "index 7 (promote) is not committed"
    );
    assert_eq!(raw.status().applied, LogIndex(5));
}
