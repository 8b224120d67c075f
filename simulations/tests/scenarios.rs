//! Named scenarios C1–C10 of docs/failures.md: each drives the real Raft cores, through the
//! simulator's harness, along the exact sequence that broke another system, with message
//! delivery, crashes and storage steps under the test's control; the safety checker runs
//! after every shell stage, and each test asserts the safe outcome.

use mlcp::raft::{ConfChange, LogIndex, Message, MessageBody, NodeId, Role, Term};
use simulations::cluster::{Cluster, ClusterOptions, Stage, ids};
use simulations::kv::{ApplyOutcome, Command};

fn is_vote(m: &Message) -> bool {
    matches!(
        m.body,
        MessageBody::PreVote { .. }
            | MessageBody::PreVoteResponse { .. }
            | MessageBody::RequestVote { .. }
            | MessageBody::RequestVoteResponse { .. }
    )
}

fn in_group(group: &[u64], m: &Message) -> bool {
    group.contains(&m.from.get()) && group.contains(&m.to.get())
}

fn cmd(client: u64, seq: u64) -> Command {
    Command {
        client,
        seq,
        key: 0,
    }
}

/// Makes `id` leader with votes from `group` only, delivering election messages and nothing
/// else (the new leader's first AppendEntries stay in flight). Others' leader leases are
/// run out by ticking them with their own messages dropped.
fn elect(c: &mut Cluster, id: u64, group: &[u64]) -> Term {
    for _ in 0..20 {
        c.core(id).campaign();
        for _ in 0..100 {
            for &g in group {
                c.flush(NodeId(g)).unwrap();
            }
            if c.deliver_where(|m| is_vote(m) && in_group(group, m)) == 0 {
                break;
            }
        }
        let status = c.status(id).unwrap();
        if status.soft.role == Role::Leader {
            c.drop_where(is_vote);
            return status.soft.term;
        }
        let timeout = c.status(id).map(|_| 40).unwrap();
        for _ in 0..timeout {
            for &g in group.iter().filter(|g| **g != id) {
                c.tick(NodeId(g));
            }
        }
        for &g in group {
            c.flush(NodeId(g)).unwrap();
        }
        c.drop_where(|m| group.contains(&m.from.get()) && m.from.get() != id);
    }
    panic!("node {id} could not be elected by {group:?}");
}

fn durable_term_at(c: &Cluster, id: u64, index: LogIndex) -> Option<Term> {
    c.node(id).disk.durable().term_at(index)
}

/// C1, Raft §5.4.2 / Figure 8: a leader must not commit an entry of an older term by counting
/// replicas. Node 1 (term t1) puts A at index k on {1,2}; node 5 wins term t2 and writes its
/// own entry at k alone; node 1 wins term t3 and copies A to node 3 — A is now on a majority
/// but must stay uncommitted, because node 5 can still win term t4 and overwrite it.
#[test]
fn c1_figure_8_old_term_entry_is_not_committed_by_counting() {
    let mut opts = ClusterOptions::new(&[1, 2, 3, 4, 5]);
    opts.config.append_bytes_max = 41; // one command entry per AppendEntries
    let mut c = Cluster::new(opts);
    let all = [1, 2, 3, 4, 5];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();

    let a = cmd(1, 1);
    let k = c.propose(NodeId(1), a).unwrap();
    c.flush(NodeId(1)).unwrap();
    c.stabilize(&[1, 2]).unwrap();
    c.drop_where(|_| true);
    assert_eq!(
        durable_term_at(&c, 2, k),
        durable_term_at(&c, 1, k),
        "A reached node 2"
    );
    c.crash_keeping(NodeId(1), true).unwrap();

    let t2 = elect(&mut c, 5, &[3, 4, 5]);
    c.flush(NodeId(5)).unwrap();
    c.drop_where(|_| true);
    assert_eq!(
        durable_term_at(&c, 5, k),
        Some(t2),
        "node 5 wrote its own entry at k"
    );
    c.crash_keeping(NodeId(5), true).unwrap();

    c.restart(NodeId(1)).unwrap();
    let t3 = elect(&mut c, 1, &[1, 2, 3]);
    assert!(t3 > t2);
    // Node 3 may see term-t3 AppendEntries only when it must refuse them (a gap before
    // them): then it stores A but never node 1's own term-t3 entry.
    let carries_t3 = |m: &Message| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if entries.iter().any(|e| e.term == t3));
    let prev = |m: &Message| match &m.body {
        MessageBody::AppendEntries { prev_log_index, .. } => *prev_log_index,
        _ => LogIndex(0),
    };
    for _ in 0..500 {
        for id in [1, 2, 3] {
            c.flush(NodeId(id)).unwrap();
        }
        let last3 = c.status(3).unwrap().last_index;
        let deliverable = |m: &Message| {
            in_group(&[1, 2, 3], m) && !(m.to == NodeId(3) && carries_t3(m) && prev(m) <= last3)
        };
        if !c.deliver_first(deliverable) {
            break;
        }
    }
    assert!(
        durable_term_at(&c, 3, k).is_some(),
        "A reached node 3: it is on a majority"
    );
    assert!(
        c.status(1).unwrap().hard.commit < k,
        "A must not commit by counting replicas"
    );

    c.crash_keeping(NodeId(1), true).unwrap();
    c.drop_where(|_| true);
    c.restart(NodeId(5)).unwrap();
    elect(&mut c, 5, &[2, 3, 4, 5]);
    c.stabilize(&[2, 3, 4, 5]).unwrap();
    c.run_ticks(30, 8).unwrap();
    for id in [2, 3, 4, 5] {
        assert_eq!(
            durable_term_at(&c, id, k),
            Some(t2),
            "node {id} holds node 5's entry at k"
        );
    }
    assert!(
        c.take_applied().iter().all(|ap| ap.command != a),
        "A was never applied"
    );
}

/// C2: a vote must be durable before it is sent. Node 2 grants node 1 a vote but crashes
/// before the write lands; had the grant left early, node 1 would lead term t and node 3
/// could win term t too with node 2's second vote.
#[test]
fn c2_vote_is_not_sent_before_it_is_durable() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    c.core(1).campaign();
    let vote_in_flight =
        |c: &Cluster| c.node(2).disk.pending_hard_state().and_then(|h| h.vote) == Some(NodeId(1));
    'outer: for _ in 0..100 {
        c.flush(NodeId(1)).unwrap();
        loop {
            if vote_in_flight(&c) {
                break 'outer;
            }
            if !c.pump(NodeId(2)).unwrap() {
                break;
            }
        }
        if c.deliver_where(|m| in_group(&[1, 2], m)) == 0 {
            break;
        }
    }
    assert!(vote_in_flight(&c), "node 2 is writing its vote for node 1");
    c.deliver_where(|m| m.from == NodeId(2));
    c.flush(NodeId(1)).unwrap();
    let t = c.status(1).unwrap().soft.term;
    assert_ne!(
        c.status(1).unwrap().soft.role,
        Role::Leader,
        "node 1 won with a vote that was not durable"
    );

    c.crash_keeping(NodeId(2), false).unwrap();
    c.restart(NodeId(2)).unwrap();
    c.drop_where(|m| m.from == NodeId(1) || m.to == NodeId(1));
    let t3 = elect(&mut c, 3, &[2, 3]);
    assert!(t3 >= t);
    c.observe_all().unwrap();
    assert_eq!(c.checker.leaders().get(&t3), Some(&NodeId(3)));
}

/// C3: a follower truncates only from the first real conflict. Followers hold C and D (D
/// committed on the leader, but they only know the commit up to B); a delayed duplicate of
/// the AppendEntries that carried C arrives. Truncating from C before checking for a real
/// conflict drops D on both followers; the leader then crashes, and the new leader would lack
/// committed D (the checker's leader-completeness check fires).
#[test]
fn c3_stale_append_does_not_truncate_committed_entries() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    for seq in 1..=2 {
        c.propose(NodeId(1), cmd(1, seq)).unwrap();
        c.stabilize(&all).unwrap();
    }
    let carries_entries = |m: &Message| matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty());
    c.propose(NodeId(1), cmd(1, 3)).unwrap();
    c.flush(NodeId(1)).unwrap();
    let stale: Vec<Message> = c
        .net
        .in_flight()
        .filter(|m| m.from == NodeId(1) && carries_entries(m))
        .cloned()
        .collect();
    assert_eq!(stale.len(), 2, "one AppendEntries carrying C per follower");
    c.deliver_where(|m| m.from == NodeId(1));
    let d = c.propose(NodeId(1), cmd(1, 4)).unwrap();
    c.flush(NodeId(1)).unwrap();
    c.deliver_where(|m| m.from == NodeId(1));
    for id in [2, 3] {
        c.flush(NodeId(id)).unwrap();
    }
    c.deliver_where(|m| m.to == NodeId(1));
    c.flush(NodeId(1)).unwrap();
    assert!(
        c.status(1).unwrap().hard.commit >= d,
        "the leader committed D"
    );
    c.drop_where(|_| true);
    let before = c.node(2).disk.durable();
    for m in stale {
        c.deliver(m);
    }
    for id in [2, 3] {
        c.flush(NodeId(id)).unwrap();
        assert!(c.status(id).unwrap().last_index >= d, "node {id} dropped D");
    }
    assert_eq!(c.node(2).disk.durable().entries, before.entries);
    c.crash_keeping(NodeId(1), true).unwrap();
    c.drop_where(|_| true);
    elect(&mut c, 2, &[2, 3]);
    c.stabilize(&[2, 3]).unwrap();
}

/// C4: an entry is acknowledged only once durable on a quorum. Followers' append
/// acknowledgements must wait for their writes; if both followers crash mid-write the
/// leader has not committed the entry.
#[test]
fn c4_write_is_not_committed_before_quorum_is_durable() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    let x = c.propose(NodeId(1), cmd(1, 1)).unwrap();
    c.flush(NodeId(1)).unwrap();
    c.deliver_where(|m| m.from == NodeId(1));
    for id in [2, 3] {
        assert!(
            c.run_to(id, Stage::Writing(0)).unwrap(),
            "node {id} is writing"
        );
    }
    c.deliver_where(|m| m.to == NodeId(1));
    c.flush(NodeId(1)).unwrap();
    assert!(
        c.status(1).unwrap().hard.commit < x,
        "committed before a quorum made it durable"
    );
    c.crash_keeping(NodeId(2), false).unwrap();
    c.crash_keeping(NodeId(3), false).unwrap();
    c.restart(NodeId(2)).unwrap();
    c.restart(NodeId(3)).unwrap();
    c.run_ticks(40, 8).unwrap();
    assert!(
        c.status(1).unwrap().hard.commit >= x,
        "the leader re-replicates and commits"
    );
}

/// C4, single-node variant: a lone leader applies (and so acknowledges) only after its own
/// write is durable; a crash mid-write loses the entry, never an acknowledged one.
#[test]
fn c4_single_node_applies_only_after_local_durability() {
    let mut c = Cluster::new(ClusterOptions::new(&[1]));
    c.core(1).campaign();
    c.flush(NodeId(1)).unwrap();
    assert_eq!(c.status(1).unwrap().soft.role, Role::Leader);
    let x = c.propose(NodeId(1), cmd(1, 1)).unwrap();
    assert!(c.run_to(1, Stage::Writing(0)).unwrap());
    assert!(
        c.take_applied().is_empty(),
        "nothing applied before the write is durable"
    );
    c.crash_keeping(NodeId(1), false).unwrap();
    c.restart(NodeId(1)).unwrap();
    assert!(
        c.node(1).disk.durable().last_index() < x,
        "the unsynced entry is gone"
    );
    c.run_ticks(60, 8).unwrap();
    assert_eq!(c.status(1).unwrap().soft.role, Role::Leader);
    let y = c.propose(NodeId(1), cmd(1, 1)).unwrap();
    c.run_ticks(3, 8).unwrap();
    let applied = c.take_applied();
    assert!(
        applied
            .iter()
            .any(|a| a.index == y && a.outcome == ApplyOutcome::Applied)
    );
}

fn read_ctx(key: u8, id: u64) -> Vec<u8> {
    let mut ctx = vec![key];
    ctx.extend_from_slice(&id.to_le_bytes());
    ctx
}

/// C5: a deposed leader cut off from the majority must not serve a ReadIndex read from its
/// own (stale) state: the read needs a heartbeat quorum it cannot get.
#[test]
fn c5_deposed_leader_does_not_serve_stale_reads() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    c.drop_where(|_| true);
    c.net.partition(&ids(&[1]), &ids(&[2, 3]));
    elect(&mut c, 2, &[2, 3]);
    let x = cmd(7, 1);
    c.propose(NodeId(2), x).unwrap();
    c.stabilize(&[2, 3]).unwrap();
    assert!(
        c.take_applied()
            .iter()
            .any(|a| a.node == NodeId(2) && a.command == x)
    );
    c.checker.on_ack(7, 1);
    assert_eq!(
        c.status(1).unwrap().soft.role,
        Role::Leader,
        "node 1 still believes it leads"
    );
    let _ = c.core(1).read_index(read_ctx(0, 1));
    c.stabilize(&[1]).unwrap();
    c.run_ticks(10, 8).unwrap();
    for read in c.take_reads() {
        assert_ne!(read.node, NodeId(1), "deposed leader served a read");
        c.checker
            .check_read(read.node, 0, &[(7, 1)], &read.value)
            .unwrap();
    }
    c.net.heal();
    c.run_ticks(40, 8).unwrap();
    assert_ne!(c.status(1).unwrap().soft.role, Role::Leader);
}

/// C6: a new leader whose commit index is stale must not answer ReadIndex before it commits
/// an entry of its own term. Node 2 commits X and crashes before followers learn it; node 1
/// wins with X in its log but its commit index below X.
#[test]
fn c6_new_leader_reads_wait_for_own_term_commit() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 2, &all);
    c.stabilize(&all).unwrap();
    c.run_ticks(3, 8).unwrap();
    let x = cmd(7, 1);
    let xi = c.propose(NodeId(2), x).unwrap();
    c.flush(NodeId(2)).unwrap();
    c.deliver_where(|m| m.from == NodeId(2));
    c.flush(NodeId(1)).unwrap();
    c.flush(NodeId(3)).unwrap();
    c.deliver_where(|m| m.to == NodeId(2));
    c.flush(NodeId(2)).unwrap();
    assert!(
        c.take_applied()
            .iter()
            .any(|a| a.node == NodeId(2) && a.command == x),
        "X committed on node 2"
    );
    c.checker.on_ack(7, 1);
    c.crash_keeping(NodeId(2), true).unwrap();
    c.drop_where(|_| true);

    elect(&mut c, 1, &[1, 3]);
    let leader = c.status(1).unwrap();
    assert!(leader.hard.commit < xi, "node 1's commit index is stale");
    let _ = c.core(1).read_index(read_ctx(0, 1));
    let not_append = |m: &Message| {
        !matches!(
            m.body,
            MessageBody::AppendEntries { .. } | MessageBody::AppendEntriesResponse { .. }
        )
    };
    for _ in 0..100 {
        c.flush(NodeId(1)).unwrap();
        c.flush(NodeId(3)).unwrap();
        if c.deliver_where(|m| not_append(m) && in_group(&[1, 3], m)) == 0 {
            break;
        }
    }
    for read in c.take_reads() {
        c.checker
            .check_read(read.node, 0, &[(7, 1)], &read.value)
            .unwrap();
    }
    c.stabilize(&[1, 3]).unwrap();
    let _ = c.core(1).read_index(read_ctx(0, 2));
    c.stabilize(&[1, 3]).unwrap();
    let reads = c.take_reads();
    for read in &reads {
        c.checker
            .check_read(read.node, 0, &[(7, 1)], &read.value)
            .unwrap();
    }
    assert!(
        !reads.is_empty(),
        "reads are served once the new leader committed in its term"
    );
}

/// C7: a partial partition (node 3 cannot reach the leader but reaches node 2) must not
/// cause term inflation or leader churn (PreVote), and a fully isolated leader steps down
/// (CheckQuorum).
#[test]
fn c7_partial_partition_neither_inflates_terms_nor_keeps_an_isolated_leader() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    for _ in 0..100 {
        c.run_ticks(1, 8).unwrap();
        if c.leader().is_some() {
            break;
        }
    }
    c.run_ticks(10, 8).unwrap();
    let leader = c.leader().expect("a leader");
    let term = c.status(leader.get()).unwrap().soft.term;
    let others: Vec<NodeId> = c.nodes.keys().copied().filter(|&n| n != leader).collect();
    let (cut, bridge) = (others[0], others[1]);
    c.net.partition(&[leader], &[cut]);
    c.run_ticks(300, 8).unwrap();
    for id in [leader, cut, bridge] {
        assert_eq!(
            c.status(id.get()).unwrap().soft.term,
            term,
            "node {id}'s term inflated"
        );
    }
    assert_eq!(c.leader(), Some(leader));
    let x = cmd(1, 1);
    c.propose(leader, x).unwrap();
    c.run_ticks(10, 8).unwrap();
    assert!(
        c.take_applied()
            .iter()
            .any(|a| a.node == bridge && a.command == x)
    );

    c.net.heal();
    c.net.partition(&[leader], &[cut, bridge]);
    c.run_ticks(100, 8).unwrap();
    assert_ne!(
        c.status(leader.get()).unwrap().soft.role,
        Role::Leader,
        "isolated leader kept leading"
    );
    let new_leader = c.leader().expect("the majority elects a leader");
    assert_ne!(new_leader, leader);
}

/// C8: a snapshot never moves the applied index backwards: a lagging node catches up by a
/// chunked InstallSnapshot, applies further, and then receives the same snapshot's chunks
/// again (delayed duplicates); the checker rejects any rollback.
#[test]
fn c8_stale_snapshot_does_not_roll_back() {
    let mut opts = ClusterOptions::new(&[1, 2, 3]);
    opts.snapshot_interval_entries = Some(5);
    opts.config.snapshot_chunk_bytes = 32;
    let mut c = Cluster::new(opts);
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    c.crash_keeping(NodeId(3), true).unwrap();
    for seq in 1..=20 {
        c.propose(NodeId(1), cmd(1, seq)).unwrap();
        c.stabilize(&[1, 2]).unwrap();
    }
    c.run_ticks(3, 8).unwrap();
    assert!(c.stats.snapshots_taken > 0);
    c.restart(NodeId(3)).unwrap();
    let mut stale = Vec::new();
    for _ in 0..60 {
        for id in c.nodes.keys().copied().collect::<Vec<_>>() {
            c.tick(id);
        }
        for _ in 0..200 {
            for id in all {
                c.flush(NodeId(id)).unwrap();
            }
            stale.extend(
                c.net
                    .in_flight()
                    .filter(|m| matches!(m.body, MessageBody::InstallSnapshot { .. }))
                    .cloned(),
            );
            if c.deliver_where(|_| true) == 0 {
                break;
            }
        }
    }
    assert!(
        c.stats.snapshots_installed > 0,
        "node 3 caught up by snapshot"
    );
    assert!(!stale.is_empty());
    for seq in 21..=25 {
        c.propose(NodeId(1), cmd(1, seq)).unwrap();
        c.stabilize(&all).unwrap();
    }
    c.run_ticks(3, 8).unwrap();
    let applied = c.node(3).kv.applied;
    for m in stale {
        c.deliver(m);
        c.stabilize(&all).unwrap();
    }
    assert!(
        c.node(3).kv.applied >= applied,
        "applied index moved backwards"
    );
}

/// C9: a leader that removes itself steps down once the change commits, and never leads
/// again; the rest elect a leader and keep committing.
#[test]
fn c9_removed_leader_steps_down() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    c.core(1)
        .propose_conf_change(ConfChange::RemoveNode(NodeId(1)))
        .unwrap();
    c.stabilize(&all).unwrap();
    c.run_ticks(100, 8).unwrap();
    assert_ne!(c.status(1).unwrap().soft.role, Role::Leader);
    let leader = c.leader().expect("nodes 2 and 3 elect a leader");
    assert_ne!(leader, NodeId(1));
    assert_eq!(
        c.status(leader.get()).unwrap().membership.voters,
        ids(&[2, 3]).into_iter().collect()
    );
    let term_removed = c.status(leader.get()).unwrap().soft.term;
    let x = cmd(1, 1);
    c.propose(leader, x).unwrap();
    c.run_ticks(100, 8).unwrap();
    let applied = c.take_applied();
    for id in [2, 3] {
        assert!(
            applied
                .iter()
                .any(|a| a.node == NodeId(id) && a.command == x),
            "node {id} applied X"
        );
    }
    assert!(
        c.checker
            .leaders()
            .iter()
            .all(|(t, n)| *n != NodeId(1) || *t < term_removed),
        "removed node 1 led again"
    );
}

/// C10: the old leader appends a command and crashes before answering; the client retries on
/// the new leader, so the command is in the log twice. The session table applies it once.
#[test]
fn c10_retried_command_is_applied_once() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    let x = cmd(5, 1);
    let first = c.propose(NodeId(1), x).unwrap();
    c.flush(NodeId(1)).unwrap();
    c.deliver_where(|m| m.from == NodeId(1) && m.to == NodeId(2));
    c.flush(NodeId(2)).unwrap();
    c.drop_where(|_| true);
    c.crash_keeping(NodeId(1), true).unwrap();
    elect(&mut c, 2, &[2, 3]);
    c.stabilize(&[2, 3]).unwrap();
    let retry = c.propose(NodeId(2), x).unwrap();
    assert!(retry > first);
    c.stabilize(&[2, 3]).unwrap();
    c.restart(NodeId(1)).unwrap();
    c.run_ticks(60, 8).unwrap();
    let applied = c.take_applied();
    for id in all {
        let mine: Vec<_> = applied
            .iter()
            .filter(|a| a.node == NodeId(id) && a.command == x)
            .collect();
        let once = mine
            .iter()
            .filter(|a| a.outcome == ApplyOutcome::Applied)
            .count();
        assert_eq!(once, 1, "node {id} applied X {once} times ({mine:?})");
        assert_eq!(mine.len(), 2, "node {id} saw both copies");
        c.checker.check_final(NodeId(id), &c.node(id).kv).unwrap();
    }
}

/// Simulator seed 39: a deposed leader's slow write of its own entry lands after the next
/// leader committed another entry at that index. Node 1 (term t1) proposes A at index k and
/// its write stays in flight; nodes 2 and 3 elect node 2 (term t2), which commits its own
/// entry at k; then node 1's write of A becomes durable. That is legal Raft — node 1's
/// commit index is below k and A is overwritten once node 1 hears from node 2 — so the
/// checker must only flag a conflicting durable entry at or below the writer's own commit.
#[test]
fn deposed_leader_slow_write_below_anothers_commit_is_not_a_violation() {
    let mut c = Cluster::new(ClusterOptions::new(&[1, 2, 3]));
    let all = [1, 2, 3];
    let t1 = elect(&mut c, 1, &all);
    c.stabilize(&all).unwrap();
    let k = c.propose(NodeId(1), cmd(1, 1)).unwrap();
    assert!(
        c.run_to(1, Stage::Writing(0)).unwrap(),
        "node 1 is writing A"
    );
    c.drop_where(|m| m.from == NodeId(1));

    let t2 = elect(&mut c, 2, &[2, 3]);
    assert!(t2 > t1);
    c.stabilize(&[2, 3]).unwrap();
    assert!(c.status(2).unwrap().hard.commit >= k, "node 2 committed k");
    let committed = c.checker.committed_at(k).expect("k is known committed").0;
    assert_eq!(committed, t2);

    assert!(c.run_to(1, Stage::Durable).unwrap(), "node 1's write lands");
    assert_eq!(durable_term_at(&c, 1, k), Some(t1), "node 1 holds A at k");
    assert!(c.status(1).unwrap().hard.commit < k);

    c.stabilize(&all).unwrap();
    c.run_ticks(30, 8).unwrap();
    assert_eq!(
        durable_term_at(&c, 1, k),
        Some(t2),
        "node 1 replaced A with the committed entry"
    );
}
