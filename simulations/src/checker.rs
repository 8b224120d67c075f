//! Safety invariants, checked after every simulator step. Lives apart from the code it checks:
//! it sees the cores only through their `status()`, the writes that reached the simulated
//! disk, and the entries the shell applied.
//!
//! Invariants (Raft paper §5.2–§5.4, Figure 3; thesis §3.6):
//! - **Election safety:** at most one leader per term.
//! - **Log matching:** two durable entries with the same index and term have the same
//!   content and the same term before them (by induction, identical prefixes).
//! - **Leader completeness:** an entry committed while every node's term was at most `t` is in
//!   the log of every leader of a term after `t` — checked on the leader's `last_index` when it
//!   takes office, and on the durable prefix before the first entry it writes.
//! - **State-machine safety:** every node applies the same entry at each index.
//! - **Committed entries are never lost or changed:** a durable entry at or below its node's
//!   commit index matches what was committed there; a restarted node's log covers its commit index.
//! - **Monotonic term, vote and commit:** a node's durable term and commit never decrease, a
//!   durable vote never changes within a term (docs/failures.md C2), and a running node's term and
//!   commit never go below what it had durable or already showed in this life.
//! - **Snapshots never roll back** applied state (docs/failures.md C8).
//! - **Exactly once:** acknowledged commands are applied once (the state machine reports a
//!   second application; [`Checker::check_final`] looks at the end state).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mlcp::raft::{Entry, EntryKind, LogIndex, NodeId, Role, SnapshotMeta, Status, Term};

use crate::disk::{Durable, Write};
use crate::kv::{ClientId, Kv};

/// A broken safety invariant: what broke, with the node, index and term involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

/// 64-bit FNV-1a over an entry's kind and payload: its identity for comparisons.
pub fn entry_hash(entry: &Entry) -> u64 {
    let kind = match entry.kind {
        EntryKind::Normal => 1u8,
        EntryKind::ConfChange => 2u8,
    };
    fnv(fnv(FNV_OFFSET, &[kind]), &entry.data)
}

/// FNV-1a offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Folds `bytes` into the FNV-1a hash `h`.
pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Clone, Debug, Default)]
struct NodeSeen {
    /// Durable hard state after the last completed write.
    durable_term: Term,
    durable_vote: Option<NodeId>,
    durable_commit: LogIndex,
    /// What the running core showed in its current life.
    live_term: Term,
    live_commit: LogIndex,
    /// Durable entries through this index have been entered into the committed map.
    committed_recorded: LogIndex,
    /// Terms this node has been seen leading in (leader completeness checked once each).
    led: BTreeSet<Term>,
}

/// The invariant checker. Feed it every event; each method returns the first violation.
#[derive(Debug, Default)]
pub struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    nodes: BTreeMap<NodeId, NodeSeen>,
    /// `(index, term)` → (content hash, term of the entry before).
    entry_ids: BTreeMap<(LogIndex, Term), (u64, Term)>,
    /// Committed entries: index → (term, content hash when known).
    committed: BTreeMap<LogIndex, (Term, Option<u64>)>,
    /// Highest commit index any node has shown, and steps of it: `(upto, max term then)`.
    commit_steps: Vec<(LogIndex, Term)>,
    max_term_seen: Term,
    /// Smallest index checked so far, per term, for leader completeness of durable entries.
    completeness_checked: BTreeMap<Term, LogIndex>,
    /// Acknowledged client commands.
    pub acked: BTreeSet<(ClientId, u64)>,
    /// Count of safety checks run (reported in run statistics).
    pub checks: u64,
}

impl Checker {
    /// A checker that has seen nothing.
    pub fn new() -> Checker {
        Checker::default()
    }

    fn max_commit_seen(&self) -> LogIndex {
        self.commit_steps.last().map_or(LogIndex(0), |s| s.0)
    }

    /// Highest index known committed while every term was below `term`.
    fn committed_before(&self, term: Term) -> LogIndex {
        self.commit_steps
            .iter()
            .filter(|(_, t)| *t < term)
            .map(|s| s.0)
            .max()
            .unwrap_or_default()
    }

    /// Records `(index, term, hash)` as committed, or checks it against what was.
    fn commit_entry(
        &mut self,
        who: &str,
        index: LogIndex,
        term: Term,
        hash: Option<u64>,
    ) -> Result<(), Violation> {
        match self.committed.get_mut(&index) {
            None => {
                self.committed.insert(index, (term, hash));
            }
            Some((t, h)) => {
                if *t != term {
                    violation!(
                        "committed entry changed: {who} has term {term} at index {index}, committed term {t}"
                    );
                }
                match (*h, hash) {
                    (Some(a), Some(b)) if a != b => violation!(
                        "committed entry changed: {who} has other content at index {index} term {term}"
                    ),
                    (None, Some(_)) => *h = hash,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// After every step, for each running node: election safety, monotonic term and commit,
    /// leader completeness on taking office.
    pub fn observe_status(&mut self, status: &Status) -> Result<(), Violation> {
        self.checks += 1;
        let id = status.id;
        let term = status.soft.term;
        let commit = status.hard.commit;
        self.max_term_seen = self.max_term_seen.max(term);
        let seen = self.nodes.entry(id).or_default();
        if term < seen.live_term {
            violation!(
                "node {id} term went backwards: {} then {term}",
                seen.live_term
            );
        }
        if term < seen.durable_term {
            violation!(
                "node {id} runs in term {term} below its durable term {}",
                seen.durable_term
            );
        }
        if commit < seen.live_commit {
            violation!(
                "node {id} commit index went backwards: {} then {commit}",
                seen.live_commit
            );
        }
        if commit < seen.durable_commit {
            violation!(
                "node {id} commit index {commit} is below its durable commit {}",
                seen.durable_commit
            );
        }
        seen.live_term = term;
        seen.live_commit = commit;
        let new_leader = status.soft.role == Role::Leader && seen.led.insert(term);
        if commit > self.max_commit_seen() {
            let max_term = self.max_term_seen;
            self.commit_steps.push((commit, max_term));
        }
        if status.soft.role == Role::Leader {
            match self.leaders.get(&term) {
                Some(&other) if other != id => {
                    violation!("two leaders in term {term}: node {other} and node {id}")
                }
                _ => {
                    self.leaders.insert(term, id);
                }
            }
        }
        if new_leader {
            let needed = self.committed_before(term);
            if status.last_index < needed {
                violation!(
                    "leader completeness: node {id} leads term {term} with last index {} but index {needed} was committed before",
                    status.last_index
                );
            }
        }
        Ok(())
    }

    /// A write reached node `id`'s disk (`after` is the durable state now).
    pub fn on_durable_write(
        &mut self,
        id: NodeId,
        write: &Write,
        after: &Durable,
    ) -> Result<(), Violation> {
        self.checks += 1;
        let seen = self.nodes.entry(id).or_default().clone();
        if let Some(hs) = write.hard_state {
            if hs.term < seen.durable_term {
                violation!(
                    "node {id} durable term went backwards: {} then {}",
                    seen.durable_term,
                    hs.term
                );
            }
            if hs.term == seen.durable_term
                && seen.durable_vote.is_some()
                && hs.vote != seen.durable_vote
            {
                violation!(
                    "node {id} changed its durable vote in term {}: {:?} then {:?}",
                    hs.term,
                    seen.durable_vote,
                    hs.vote
                );
            }
            if hs.commit < seen.durable_commit {
                violation!(
                    "node {id} durable commit went backwards: {} then {}",
                    seen.durable_commit,
                    hs.commit
                );
            }
        }
        if let Some(snap) = &write.snapshot {
            self.commit_entry(
                &format!("snapshot of node {id}"),
                snap.meta.index,
                snap.meta.term,
                None,
            )?;
        }
        for entry in &write.entries {
            let Some(prev_term) = after.term_at(entry.index.prev()) else {
                continue;
            };
            if after.entry(entry.index).map(|e| e.term) != Some(entry.term) {
                continue; // compacted under a snapshot
            }
            let hash = entry_hash(entry);
            match self.entry_ids.get(&(entry.index, entry.term)) {
                None => {
                    self.entry_ids
                        .insert((entry.index, entry.term), (hash, prev_term));
                }
                Some(&(h, p)) => {
                    if h != hash {
                        violation!(
                            "log matching: node {id} has other content at index {} term {}",
                            entry.index,
                            entry.term
                        );
                    }
                    if p != prev_term {
                        violation!(
                            "log matching: node {id} has term {prev_term} before index {} term {}, another log has term {p}",
                            entry.index,
                            entry.term
                        );
                    }
                }
            }
            // Only at or below this node's own commit index: a deposed leader (or its
            // follower) that has not yet heard of the newer term may legally write an
            // entry of its old term at an index another quorum already committed; it is
            // replaced when the node hears from the new leader, before it commits there.
            if entry.index <= after.hard_state.commit
                && let Some((t, h)) = self.committed.get(&entry.index).copied()
                && (t != entry.term || h.is_some_and(|h| h != hash))
            {
                violation!(
                    "committed entry overwritten: node {id} wrote term {} at index {}, committed term {t}",
                    entry.term,
                    entry.index
                );
            }
        }
        if after.last_index() < after.hard_state.commit {
            violation!(
                "node {id}'s durable log ends at {} below its durable commit index {}: committed entries truncated",
                after.last_index(),
                after.hard_state.commit
            );
        }
        self.check_durable_completeness(id, write, after)?;
        let seen = self.nodes.get_mut(&id).expect("inserted above");
        seen.durable_term = after.hard_state.term;
        seen.durable_vote = after.hard_state.vote;
        seen.durable_commit = after.hard_state.commit;
        self.record_committed_prefix(id, after)
    }

    /// Leader completeness on durable logs: the prefix before the first entry of term `t` is
    /// the log its leader had when elected, so it must hold everything committed before `t`.
    fn check_durable_completeness(
        &mut self,
        id: NodeId,
        write: &Write,
        after: &Durable,
    ) -> Result<(), Violation> {
        let mut firsts: BTreeMap<Term, LogIndex> = BTreeMap::new();
        for e in &write.entries {
            firsts.entry(e.term).or_insert(e.index);
        }
        for (term, first) in firsts {
            if self
                .completeness_checked
                .get(&term)
                .is_some_and(|&j| j <= first)
            {
                continue;
            }
            self.completeness_checked.insert(term, first);
            let needed = self.committed_before(term);
            if needed >= first {
                violation!(
                    "leader completeness: node {id} holds the first entry of term {term} at index {first}, but index {needed} was committed before term {term}"
                );
            }
            let (from, to) = (after.first_index(), first.min(needed.next()));
            if from >= to {
                continue;
            }
            for (&index, &(t, h)) in self.committed.range(from..to) {
                match after.entry(index) {
                    Some(e) if e.term == t && h.is_none_or(|h| h == entry_hash(e)) => {}
                    other => violation!(
                        "leader completeness: node {id}'s log before term {term} lacks committed index {index} (term {t}), has {:?}",
                        other.map(|e| e.term)
                    ),
                }
            }
        }
        Ok(())
    }

    fn record_committed_prefix(&mut self, id: NodeId, d: &Durable) -> Result<(), Violation> {
        let seen = self.nodes.get(&id).expect("node seen");
        let from = seen.committed_recorded.next().max(d.first_index());
        let upto = d.hard_state.commit.min(d.last_index());
        let mut index = from;
        while index <= upto {
            let e = d.entry(index).expect("contiguous durable log");
            self.commit_entry(
                &format!("node {id}'s durable log"),
                index,
                e.term,
                Some(entry_hash(e)),
            )?;
            index = index.next();
        }
        let seen = self.nodes.get_mut(&id).expect("node seen");
        seen.committed_recorded = seen.committed_recorded.max(upto);
        Ok(())
    }

    /// Node `id` restarts from `d`: its log must still hold everything through its commit.
    pub fn on_restart(&mut self, id: NodeId, d: &Durable) -> Result<(), Violation> {
        if d.last_index() < d.hard_state.commit {
            violation!(
                "node {id} restarted with commit index {} but its log ends at {}: committed entries lost",
                d.hard_state.commit,
                d.last_index()
            );
        }
        let seen = self.nodes.entry(id).or_default();
        seen.live_term = Term(0);
        seen.live_commit = LogIndex(0);
        seen.committed_recorded = LogIndex(0);
        self.record_committed_prefix(id, d)
    }

    /// Node `id` applied `entry` (state-machine safety).
    pub fn on_apply(&mut self, id: NodeId, entry: &Entry) -> Result<(), Violation> {
        self.checks += 1;
        let hash = entry_hash(entry);
        if let Some(&(t, h)) = self.committed.get(&entry.index)
            && (t != entry.term || h.is_some_and(|h| h != hash))
        {
            violation!(
                "state-machine safety: node {id} applied term {} at index {}, but term {t} was applied or committed there",
                entry.term,
                entry.index
            );
        }
        self.commit_entry(
            &format!("node {id}'s apply"),
            entry.index,
            entry.term,
            Some(hash),
        )
    }

    /// Node `id` restores its state machine from a received snapshot while at `applied`.
    pub fn on_snapshot_restore(
        &mut self,
        id: NodeId,
        meta: &SnapshotMeta,
        applied: LogIndex,
    ) -> Result<(), Violation> {
        if meta.index < applied {
            violation!(
                "node {id} restored a snapshot at index {} after applying {applied}: applied state rolled back",
                meta.index
            );
        }
        self.commit_entry(
            &format!("snapshot restored on node {id}"),
            meta.index,
            meta.term,
            None,
        )
    }

    /// A client was told its command succeeded.
    pub fn on_ack(&mut self, client: ClientId, seq: u64) {
        self.acked.insert((client, seq));
    }

    /// A linearizable read of `key` returned `value`; `required` were acknowledged before the
    /// read was issued and so must be in it (docs/failures.md C5, C6).
    pub fn check_read(
        &mut self,
        node: NodeId,
        key: u8,
        required: &[(ClientId, u64)],
        value: &[(ClientId, u64)],
    ) -> Result<(), Violation> {
        for token in required {
            if !value.contains(token) {
                violation!(
                    "stale read: node {node} served key {key} without acknowledged command {token:?} ({} tokens, {} required)",
                    value.len(),
                    required.len()
                );
            }
        }
        Ok(())
    }

    /// End of run: every acknowledged command is in `kv` exactly once.
    pub fn check_final(&self, node: NodeId, kv: &Kv) -> Result<(), Violation> {
        let mut counts: BTreeMap<(ClientId, u64), usize> = BTreeMap::new();
        for tokens in kv.data.values() {
            for t in tokens {
                *counts.entry(*t).or_default() += 1;
            }
        }
        for (token, n) in &counts {
            if *n > 1 {
                violation!("command {token:?} applied {n} times on node {node}");
            }
        }
        for token in &self.acked {
            if !counts.contains_key(token) {
                violation!("acknowledged command {token:?} is missing from node {node}'s state");
            }
        }
        Ok(())
    }

    /// The leaders seen so far, per term.
    pub fn leaders(&self) -> &BTreeMap<Term, NodeId> {
        &self.leaders
    }

    /// Entries known committed.
    pub fn committed_len(&self) -> usize {
        self.committed.len()
    }

    /// The committed `(term, hash)` at `index`, if known.
    pub fn committed_at(&self, index: LogIndex) -> Option<(Term, Option<u64>)> {
        self.committed.get(&index).copied()
    }
}
