//! The Raft state machine proper: roles, terms and votes, replication, commit, snapshots,
//! ReadIndex, leadership transfer and membership. [`super::node::RawNode`] wraps it and turns
//! its outputs into [`super::node::Ready`] values.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::Config;
use super::error::ProposeError;
use super::log::RaftLog;
use super::progress::{Progress, ProgressState};
use super::storage::{Storage, StorageError};
use super::types::{
    ConfChange, ConfChangeError, Entry, EntryKind, HardState, LogIndex, Membership, Message,
    MessageBody, NodeId, ReadState, Role, Snapshot, SnapshotMeta, SoftState, Term,
};

/// Most committed-entry bytes handed out in one Ready (at least one entry is always given).
pub(crate) const COMMITTED_BYTES_PER_READY_MAX: u64 = 32 << 20;

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny deterministic PRNG for election timeouts.
/// The core may not use a global RNG; the seed comes from [`Config::seed`].
#[derive(Clone, Debug, Default)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A pending linearizable read on the leader (thesis §6.4).
#[derive(Debug)]
struct ReadRequest {
    /// Heartbeat round tag (sent as the heartbeat `context`).
    seq: u64,
    /// Commit index when the read arrived: the read point.
    index: LogIndex,
    /// The requester's tag.
    ctx: Vec<u8>,
    /// `None` for a local read, else the follower that forwarded it.
    from: Option<NodeId>,
    /// Voters that acknowledged a heartbeat round at or after this one.
    acks: BTreeSet<NodeId>,
}

/// A snapshot being received chunk by chunk (kept in memory only).
#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    /// The leader sending it, and its term: chunks of another transfer never mix in.
    from: NodeId,
    term: Term,
    data: Vec<u8>,
}

/// One member's Raft state.
pub(crate) struct Raft<S: Storage> {
    pub(crate) id: NodeId,
    pub(crate) cfg: Config,
    pub(crate) log: RaftLog<S>,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) membership: Membership,
    /// Membership in force from each index on, oldest first; the first element is the
    /// configuration at the latest snapshot (or the initial voters at index 0).
    conf_history: Vec<(LogIndex, Membership)>,
    /// Conf change entries in the log that are not yet committed.
    uncommitted_confs: BTreeMap<LogIndex, ConfChange>,
    /// Leader only: progress of every member, including this one.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_timeout: u64,
    rng: SplitMix64,
    pub(crate) transferee: Option<NodeId>,
    reads: VecDeque<ReadRequest>,
    read_seq: u64,
    /// Reads waiting until the leader commits an entry of its term (docs/failures.md C6).
    reads_before_commit: Vec<(Vec<u8>, Option<NodeId>)>,
    /// Leader only: (index, bytes) of uncommitted proposals, for backpressure.
    uncommitted: VecDeque<(LogIndex, u64)>,
    uncommitted_bytes: u64,
    /// Follower: the snapshot being assembled from InstallSnapshot chunks.
    incoming_snapshot: Option<IncomingSnapshot>,
    /// Leader: local snapshots being sent to lagging followers, by index. A transfer
    /// finishes with the snapshot it started with, even if a newer one is taken meanwhile
    /// (restarting would livelock when snapshots are taken faster than a transfer lasts).
    outgoing_snapshots: BTreeMap<LogIndex, Snapshot>,
    pub(crate) msgs: Vec<Message>,
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    /// Term of the last hard state confirmed durable.
    pub(crate) durable_term: Term,
    /// New proposals wait to be sent (batched until the next Ready).
    pub(crate) pending_broadcast: bool,
}

fn invalid(what: String) -> StorageError {
    StorageError::Invalid(format!("raft config: {what}"))
}

impl<S: Storage> Raft<S> {
    pub(crate) fn new(cfg: Config, storage: S) -> Result<Self, StorageError> {
        if cfg.id.0 == 0 {
            return Err(invalid("id must not be 0".into()));
        }
        if cfg.election_timeout_ticks_min == 0
            || cfg.election_timeout_ticks_max <= cfg.election_timeout_ticks_min
        {
            return Err(invalid(format!(
                "election timeout range [{}, {}) ticks is empty",
                cfg.election_timeout_ticks_min, cfg.election_timeout_ticks_max
            )));
        }
        if cfg.heartbeat_interval_ticks == 0
            || cfg.heartbeat_interval_ticks >= cfg.election_timeout_ticks_min
        {
            return Err(invalid(format!(
                "heartbeat interval {} ticks must be in 1..election_timeout_ticks_min ({})",
                cfg.heartbeat_interval_ticks, cfg.election_timeout_ticks_min
            )));
        }
        if cfg.inflight_msgs_max == 0 || cfg.append_bytes_max == 0 || cfg.snapshot_chunk_bytes == 0
        {
            return Err(invalid(
                "inflight_msgs_max, append_bytes_max and snapshot_chunk_bytes must be > 0".into(),
            ));
        }
        let init = storage.initial_state()?;
        let hs = init.hard_state;
        let log = RaftLog::new(storage, hs.commit)?;
        let snapshot_index = log.first_index().prev();
        let base = init
            .snapshot_membership
            .unwrap_or_else(|| Membership::with_voters(cfg.initial_voters.iter().copied()));
        let mut raft = Raft {
            id: cfg.id,
            rng: SplitMix64::new(cfg.seed),
            cfg,
            log,
            term: hs.term,
            vote: hs.vote,
            role: Role::Follower,
            leader: None,
            membership: base.clone(),
            conf_history: vec![(snapshot_index, base)],
            uncommitted_confs: BTreeMap::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: 0,
            transferee: None,
            reads: VecDeque::new(),
            read_seq: 0,
            reads_before_commit: Vec::new(),
            uncommitted: VecDeque::new(),
            uncommitted_bytes: 0,
            incoming_snapshot: None,
            outgoing_snapshots: BTreeMap::new(),
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            durable_term: hs.term,
            pending_broadcast: false,
        };
        raft.replay_conf_changes()?;
        raft.reset_election_timeout();
        Ok(raft)
    }

    /// Rebuilds the membership on restart: every conf entry after the snapshot up to the
    /// durable commit index takes effect; later ones are remembered as uncommitted.
    fn replay_conf_changes(&mut self) -> Result<(), StorageError> {
        let last = self.log.last_index();
        let mut next = self.log.first_index();
        while next <= last {
            let batch = self.log.entries(next, last.next(), 8 << 20)?;
            for e in &batch {
                if e.kind == EntryKind::ConfChange {
                    let cc = decode_conf(e);
                    if e.index <= self.log.committed {
                        self.apply_conf_change(e.index, cc);
                    } else {
                        self.uncommitted_confs.insert(e.index, cc);
                    }
                }
            }
            next = batch.last().map(|e| e.index.next()).unwrap_or(last.next());
        }
        Ok(())
    }

    // ---- small helpers -------------------------------------------------------------------

    pub(crate) fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            leader: self.leader,
            term: self.term,
        }
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Only voters campaign; learners and non-members never do.
    pub(crate) fn promotable(&self) -> bool {
        self.membership.voters.contains(&self.id)
    }

    fn reset_election_timeout(&mut self) {
        let span = self.cfg.election_timeout_ticks_max - self.cfg.election_timeout_ticks_min;
        self.randomized_timeout = self.cfg.election_timeout_ticks_min + self.rng.next_u64() % span;
    }

    /// Whether this node heard from a leader within the minimum election timeout, so it
    /// refuses to help depose it (thesis §4.2.3, §9.6 with CheckQuorum).
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.cfg.election_timeout_ticks_min
    }

    /// Queues a message. A leader whose term is durable may send at once; anything else
    /// (votes, vote requests, append/snapshot acknowledgements, term announcements) waits
    /// until the Ready that carries the state it depends on is durable (docs/failures.md C2).
    fn send(&mut self, to: NodeId, body: MessageBody) {
        let msg = Message {
            from: self.id,
            to,
            term: self.term,
            body,
        };
        self.send_msg(msg);
    }

    fn send_msg(&mut self, msg: Message) {
        if self.role == Role::Leader && self.durable_term == self.term {
            self.msgs.push(msg);
        } else {
            self.persisted_msgs.push(msg);
        }
    }

    fn reset(&mut self, term: Term) {
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_election_timeout();
        self.votes.clear();
        self.progress.clear();
        self.outgoing_snapshots.clear();
        self.transferee = None;
        self.reads.clear();
        self.reads_before_commit.clear();
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
    }

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "raft: leader cannot become pre-candidate"
        );
        // PreVote does not touch term or vote (thesis §9.6).
        self.votes.clear();
        self.leader = None;
        self.election_elapsed = 0;
        self.reset_election_timeout();
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert!(
            self.role != Role::Leader,
            "raft: leader cannot become candidate"
        );
        let term = Term(self.term.0 + 1);
        self.reset(term);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        assert!(
            self.role == Role::Candidate,
            "raft: only a candidate becomes leader"
        );
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let next = self.log.last_index().next();
        let members: Vec<(NodeId, bool)> = self
            .membership
            .voters
            .iter()
            .map(|&id| (id, false))
            .chain(self.membership.learners.iter().map(|&id| (id, true)))
            .collect();
        for (id, learner) in members {
            let mut pr = Progress::new(next, learner);
            if id == self.id {
                pr.match_index = self.log.persisted;
                pr.become_replicate();
                pr.recent_active = true;
            }
            self.progress.insert(id, pr);
        }
        // §8 / thesis §6.4: a no-op of the new term lets earlier entries commit.
        self.append_entry(EntryKind::Normal, Vec::new());
        self.bcast_append();
    }

    /// Appends one entry of the current term on the leader; returns its index.
    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> LogIndex {
        let index = self.log.last_index().next();
        let entry = Entry {
            term: self.term,
            index,
            kind,
            data,
        };
        let size = entry.size_bytes();
        if kind == EntryKind::ConfChange {
            self.uncommitted_confs.insert(index, decode_conf(&entry));
        }
        self.log.append(vec![entry]);
        self.uncommitted.push_back((index, size));
        self.uncommitted_bytes += size;
        index
    }

    // ---- time ----------------------------------------------------------------------------

    pub(crate) fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed += 1;
            if self.election_elapsed >= self.randomized_timeout {
                self.election_elapsed = 0;
                self.campaign(false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_timeout_ticks_min {
            self.election_elapsed = 0;
            if self.cfg.check_quorum && !self.quorum_active() {
                // CheckQuorum (thesis §6.2): a leader cut off from a quorum steps down, so it
                // stops accepting writes and serving reads (docs/failures.md C7).
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            for (&id, pr) in self.progress.iter_mut() {
                pr.recent_active = id == self.id;
            }
            // A transfer that did not finish within an election timeout is abandoned
            // (thesis §3.10).
            self.transferee = None;
        }
        let retransmit_after = self.cfg.election_timeout_ticks_min;
        let mut resend = Vec::new();
        for (&id, pr) in self.progress.iter_mut() {
            if let Some(s) = pr.snapshot.as_mut() {
                s.ticks_since_send += 1;
                if s.ticks_since_send >= retransmit_after {
                    resend.push(id);
                }
            }
        }
        for id in resend {
            self.send_snapshot_chunk(id);
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat(Vec::new());
        }
    }

    pub(crate) fn quorum_active(&self) -> bool {
        let active = self
            .membership
            .voters
            .iter()
            .filter(|id| **id == self.id || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= self.membership.quorum()
    }

    // ---- elections (§5.2, thesis §9.6) ------------------------------------------------------

    /// Starts an election: a PreVote round first unless disabled or this is a transfer.
    pub(crate) fn campaign(&mut self, transfer: bool) {
        if !self.promotable() || self.role == Role::Leader {
            return;
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
            self.request_votes(true, false);
        } else {
            self.become_candidate();
            self.request_votes(false, transfer);
        }
    }

    fn request_votes(&mut self, pre: bool, transfer: bool) {
        // Our own vote counts at once; a single voter wins without asking anyone.
        if self.record_vote(self.id, true, pre) {
            return;
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term();
        let term = if pre {
            Term(self.term.0 + 1)
        } else {
            self.term
        };
        let voters: Vec<NodeId> = self
            .membership
            .voters
            .iter()
            .copied()
            .filter(|&v| v != self.id)
            .collect();
        for to in voters {
            let body = if pre {
                MessageBody::PreVote {
                    last_log_index,
                    last_log_term,
                }
            } else {
                MessageBody::RequestVote {
                    last_log_index,
                    last_log_term,
                    transfer,
                }
            };
            self.send_msg(Message {
                from: self.id,
                to,
                term,
                body,
            });
        }
    }

    /// Counts one (pre-)vote; returns true if the round ended (won or lost).
    fn record_vote(&mut self, from: NodeId, granted: bool, pre: bool) -> bool {
        if !self.membership.voters.contains(&from) {
            return false;
        }
        self.votes.entry(from).or_insert(granted);
        let granted_n = self.votes.values().filter(|g| **g).count();
        let rejected_n = self.votes.len() - granted_n;
        let quorum = self.membership.quorum();
        if granted_n >= quorum {
            if pre {
                self.become_candidate();
                self.request_votes(false, false);
            } else {
                self.become_leader();
            }
            true
        } else if rejected_n > self.membership.voters.len() - quorum {
            let term = self.term;
            self.become_follower(term, None);
            true
        } else {
            false
        }
    }

    fn handle_vote_request(
        &mut self,
        m: &Message,
        pre: bool,
        last_index: LogIndex,
        last_term: Term,
    ) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre && m.term > self.term);
        let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
        if pre {
            // A granted pre-vote carries the term the candidate would use (thesis §9.6).
            let term = if grant { m.term } else { self.term };
            let body = MessageBody::PreVoteResponse { reject: !grant };
            self.send_msg(Message {
                from: self.id,
                to: m.from,
                term,
                body,
            });
        } else {
            if grant {
                self.election_elapsed = 0;
                self.vote = Some(m.from);
            }
            self.send(m.from, MessageBody::RequestVoteResponse { reject: !grant });
        }
    }

    // ---- message dispatch ----------------------------------------------------------------

    pub(crate) fn step(&mut self, m: Message) {
        if m.to != self.id || m.from == self.id {
            return;
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::PreVote { .. }
                | MessageBody::RequestVote {
                    transfer: false, ..
                } if self.in_lease() => {
                    // Heard from a leader recently: do not help depose it, and do not even
                    // raise our term (thesis §4.2.3).
                    return;
                }
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                    if self.cfg.check_quorum || self.cfg.pre_vote =>
                {
                    // Tell a stale leader about the newer term so it steps down; without
                    // this a node whose term rose while partitioned could stay cut off.
                    self.send(
                        m.from,
                        MessageBody::HeartbeatResponse {
                            context: Vec::new(),
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { reject: true });
                }
                _ => {}
            }
            return;
        }
        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(&m, true, last_log_index, last_log_term),
            MessageBody::RequestVote {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(&m, false, last_log_index, last_log_term),
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn step_candidate(&mut self, m: Message) {
        match m.body {
            MessageBody::PreVoteResponse { reject }
                if self.role == Role::PreCandidate && m.term == Term(self.term.0 + 1) =>
            {
                self.record_vote(m.from, !reject, true);
            }
            MessageBody::RequestVoteResponse { reject }
                if self.role == Role::Candidate && m.term == self.term =>
            {
                self.record_vote(m.from, !reject, false);
            }
            MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // §5.2: a candidate that hears from a leader of its term follows it.
                let term = self.term;
                self.become_follower(term, Some(m.from));
                self.step_follower(m);
            }
            MessageBody::TimeoutNow => {}
            MessageBody::ReadIndex { context } => {
                self.send(
                    m.from,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: LogIndex(0),
                        reject: true,
                    },
                );
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) {
        let from = m.from;
        match m.body {
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_append(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            MessageBody::Heartbeat { commit, context } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.commit_to(commit);
                self.send(from, MessageBody::HeartbeatResponse { context });
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => {
                self.election_elapsed = 0;
                self.leader = Some(from);
                self.handle_snapshot_chunk(from, meta, offset, data, done);
            }
            MessageBody::TimeoutNow => {
                // Thesis §3.10: start an election at once, skipping PreVote, with votes
                // flagged so that voters in a lease still answer.
                self.campaign(true);
            }
            MessageBody::ReadIndexResponse {
                context,
                index,
                reject: false,
            } => {
                self.read_states.push(ReadState {
                    ctx: context,
                    index,
                });
            }
            MessageBody::ReadIndex { context } => {
                self.send(
                    from,
                    MessageBody::ReadIndexResponse {
                        context,
                        index: LogIndex(0),
                        reject: true,
                    },
                );
            }
            _ => {}
        }
    }

    fn step_leader(&mut self, m: Message) {
        let from = m.from;
        if let Some(pr) = self.progress.get_mut(&from) {
            pr.recent_active = true;
        }
        match m.body {
            MessageBody::AppendEntriesResponse {
                reject,
                index,
                reject_hint_index,
                reject_hint_term,
            } => self.handle_append_response(
                from,
                reject,
                index,
                reject_hint_index,
                reject_hint_term,
            ),
            MessageBody::HeartbeatResponse { context } => {
                self.handle_heartbeat_response(from, context)
            }
            MessageBody::InstallSnapshotResponse {
                index,
                next_offset,
                reject,
                done,
            } => self.handle_snapshot_response(from, index, next_offset, reject, done),
            MessageBody::ReadIndex { context } => self.leader_read(context, Some(from)),
            _ => {}
        }
    }

    // ---- replication (§5.3) ----------------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        if prev_log_index < self.log.committed {
            // Everything up to our commit index matches any current leader's log.
            let index = self.log.committed;
            self.send(from, append_ok(index));
            return;
        }
        let range = entries
            .first()
            .map(|e| e.index)
            .zip(entries.last().map(|e| e.index));
        let confs: Vec<(LogIndex, ConfChange)> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| (e.index, decode_conf(e)))
            .collect();
        let old_commit = self.log.committed;
        match self
            .log
            .maybe_append(prev_log_index, prev_log_term, leader_commit, entries)
        {
            Some(last_new) => {
                // Within the message's range our log now equals the message; past it, a
                // truncation may have dropped entries.
                if let Some((first, last)) = range {
                    self.uncommitted_confs.retain(|&i, _| i < first || i > last);
                    for (i, cc) in confs {
                        if i > old_commit {
                            self.uncommitted_confs.insert(i, cc);
                        }
                    }
                }
                self.retain_confs_in_log();
                self.on_commit_advanced(old_commit);
                self.send(from, append_ok(last_new));
            }
            None => {
                let hint = self.log.find_conflict_by_term(
                    prev_log_index.min(self.log.last_index()),
                    prev_log_term,
                );
                let body = MessageBody::AppendEntriesResponse {
                    reject: true,
                    index: prev_log_index,
                    reject_hint_index: hint,
                    reject_hint_term: self.log.term_or_zero(hint),
                };
                self.send(from, body);
            }
        }
    }

    /// Drops uncommitted conf records whose entry is no longer in the log (after a
    /// truncation replaced it with another entry).
    fn retain_confs_in_log(&mut self) {
        let last = self.log.last_index();
        self.uncommitted_confs.retain(|&i, _| i <= last);
    }

    fn commit_to(&mut self, index: LogIndex) {
        let old = self.log.committed;
        self.log.commit_to(index.min(self.log.last_index()));
        self.on_commit_advanced(old);
    }

    /// Effects of a commit-index advance: membership changes take effect (our deviation:
    /// on commit, not on append), leader bookkeeping for backpressure and ReadIndex.
    fn on_commit_advanced(&mut self, old: LogIndex) {
        let commit = self.log.committed;
        if commit <= old {
            return;
        }
        while let Some((&i, _)) = self.uncommitted_confs.first_key_value() {
            if i > commit {
                break;
            }
            let (i, cc) = self
                .uncommitted_confs
                .pop_first()
                .expect("checked non-empty");
            self.apply_conf_change(i, cc);
        }
        while let Some(&(i, size)) = self.uncommitted.front() {
            if i > commit {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= size;
        }
        if self.role == Role::Leader && self.committed_in_term() {
            let waiting = std::mem::take(&mut self.reads_before_commit);
            for (ctx, from) in waiting {
                self.leader_read(ctx, from);
            }
        }
    }

    /// Whether the leader has committed an entry of its own term (thesis §6.4, docs/failures.md C6).
    fn committed_in_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: LogIndex,
        hint_index: LogIndex,
        hint_term: Term,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if reject {
            let mut next_probe = hint_index;
            if hint_term.0 > 0 {
                next_probe = self.log.find_conflict_by_term(hint_index, hint_term);
            }
            let pr = self.progress.get_mut(&from).expect("checked above");
            if pr.maybe_decr_to(index, next_probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.send_append(from, false);
            }
            return;
        }
        if !pr.maybe_update(index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot => {
                if pr
                    .snapshot
                    .as_ref()
                    .is_some_and(|s| pr.match_index >= s.index)
                {
                    pr.become_probe();
                    pr.become_replicate();
                }
            }
            ProgressState::Replicate => pr.free_to(index),
        }
        if !self.maybe_commit() {
            while self.send_append(from, false) {}
        }
        if self.role != Role::Leader {
            return;
        }
        if self.transferee == Some(from) {
            let caught_up = self
                .progress
                .get(&from)
                .is_some_and(|p| p.match_index == self.log.last_index());
            if caught_up {
                self.send(from, MessageBody::TimeoutNow);
            }
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, context: Vec<u8>) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate
            && pr.inflights_full(self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max)
        {
            pr.free_first();
        }
        if pr.match_index < self.log.last_index() && pr.state != ProgressState::Snapshot {
            self.send_append(from, true);
        }
        if context.len() == 8 {
            let seq = u64::from_be_bytes(context.try_into().expect("length checked"));
            self.ack_read(from, seq);
        }
    }

    /// Recomputes the commit index from the voters' match indexes (§5.3, §5.4.2): only an
    /// entry of the current term commits by counting replicas (Figure 8, docs/failures.md C1). The
    /// leader's own match is its *durable* last index (docs/failures.md C4).
    fn maybe_commit(&mut self) -> bool {
        let mut changed = false;
        loop {
            if self.role != Role::Leader {
                return changed;
            }
            let mut matched: Vec<LogIndex> = self
                .membership
                .voters
                .iter()
                .map(|id| {
                    self.progress
                        .get(id)
                        .map(|p| p.match_index)
                        .unwrap_or(LogIndex(0))
                })
                .collect();
            if matched.is_empty() {
                return changed;
            }
            matched.sort_unstable_by(|a, b| b.cmp(a));
            let candidate = matched[self.membership.quorum() - 1];
            if candidate <= self.log.committed || self.log.term_or_zero(candidate) != self.term {
                return changed;
            }
            let old = self.log.committed;
            self.log.commit_to(candidate);
            changed = true;
            // Tell followers first, so a leader that removes itself still announces the
            // commit before stepping down (docs/failures.md C9).
            self.bcast_append();
            self.on_commit_advanced(old);
        }
    }

    /// Sends every peer what it lacks (empty AppendEntries carry the commit index).
    pub(crate) fn bcast_append(&mut self) {
        self.pending_broadcast = false;
        let peers: Vec<NodeId> = self
            .progress
            .keys()
            .copied()
            .filter(|&p| p != self.id)
            .collect();
        for to in peers {
            self.send_append(to, true);
            while self.send_append(to, false) {}
        }
    }

    /// Sends one AppendEntries (or a snapshot chunk) to `to` if its window allows. With
    /// `send_if_empty` an AppendEntries without entries is sent too (probe / commit
    /// announcement). Returns true if entries were sent.
    fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(self.cfg.inflight_msgs_max, self.cfg.inflight_bytes_max) {
            return false;
        }
        let next = pr.next_index;
        let prev = next.prev();
        let last = self.log.last_index();
        let fetched = self.log.term(prev).and_then(|t| {
            Ok((
                t,
                self.log
                    .entries(next, last.next(), self.cfg.append_bytes_max)?,
            ))
        });
        let (prev_term, entries) = match fetched {
            Ok(v) => v,
            Err(StorageError::Compacted { .. }) => {
                self.start_snapshot(to);
                return false;
            }
            Err(_) => {
                // `next` past our log (cannot happen while acknowledgements only name
                // indexes we sent): recover by probing from the follower's match.
                self.progress
                    .get_mut(&to)
                    .expect("checked above")
                    .become_probe();
                return false;
            }
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let sent = !entries.is_empty();
        let pr = self.progress.get_mut(&to).expect("checked above");
        if let Some(last_sent) = entries.last() {
            let bytes = entries.iter().map(Entry::size_bytes).sum();
            pr.on_entries_sent(last_sent.index, bytes);
        } else if pr.state == ProgressState::Probe {
            pr.probe_sent = true;
        }
        let body = MessageBody::AppendEntries {
            prev_log_index: prev,
            prev_log_term: prev_term,
            entries,
            leader_commit: self.log.committed,
        };
        self.send(to, body);
        sent
    }

    fn bcast_heartbeat(&mut self, context: Vec<u8>) {
        let peers: Vec<(NodeId, LogIndex)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(&id, p)| (id, p.match_index))
            .collect();
        for (to, matched) in peers {
            let commit = self.log.committed.min(matched);
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    context: context.clone(),
                },
            );
        }
    }

    // ---- snapshots (§7) --------------------------------------------------------------------

    /// Loads the latest local snapshot into the outgoing cache; returns its index.
    fn load_latest_snapshot(&mut self) -> LogIndex {
        let latest = self.log.first_index().prev();
        if !self.outgoing_snapshots.contains_key(&latest) {
            match self.log.storage.snapshot() {
                Ok(snap) => {
                    let index = snap.meta.index;
                    self.outgoing_snapshots.insert(index, snap);
                    return index;
                }
                Err(e) => panic!("raft: cannot read the local snapshot: {e}"),
            }
        }
        latest
    }

    /// Drops cached snapshots no transfer uses any more.
    fn prune_outgoing_snapshots(&mut self) {
        let in_use: BTreeSet<LogIndex> = self
            .progress
            .values()
            .filter_map(|p| p.snapshot.as_ref().map(|s| s.index))
            .collect();
        self.outgoing_snapshots.retain(|i, _| in_use.contains(i));
    }

    fn start_snapshot(&mut self, to: NodeId) {
        let index = self.load_latest_snapshot();
        assert!(
            index.0 > 0,
            "raft: follower {to} needs compacted entries but there is no snapshot"
        );
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(index);
        }
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(index) = self
            .progress
            .get(&to)
            .and_then(|p| p.snapshot.as_ref())
            .map(|s| s.index)
        else {
            return;
        };
        if !self.outgoing_snapshots.contains_key(&index) {
            // Not cached (cannot happen while a transfer uses it): restart with the latest.
            let latest = self.load_latest_snapshot();
            let s = self
                .progress
                .get_mut(&to)
                .and_then(|p| p.snapshot.as_mut())
                .expect("checked above");
            s.index = latest;
            s.offset = 0;
        }
        let s = self
            .progress
            .get_mut(&to)
            .and_then(|p| p.snapshot.as_mut())
            .expect("checked above");
        let snap = &self.outgoing_snapshots[&s.index];
        s.ticks_since_send = 0;
        let len = snap.data.len() as u64;
        let offset = s.offset.min(len);
        let end = (offset + self.cfg.snapshot_chunk_bytes).min(len);
        let data = snap.data[offset as usize..end as usize].to_vec();
        let body = MessageBody::InstallSnapshot {
            meta: snap.meta.clone(),
            offset,
            data,
            done: end == len,
        };
        self.send(to, body);
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        reject: bool,
        done: bool,
    ) {
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let Some(s) = pr.snapshot.as_mut() else {
            return;
        };
        if s.index != index {
            return;
        }
        if done {
            pr.match_index = pr.match_index.max(index);
            pr.become_probe();
            self.prune_outgoing_snapshots();
            self.send_append(from, true);
            return;
        }
        // One chunk in flight: only an answer that moves the transfer (the follower took
        // the chunk, or wants another offset than the one in flight) sends a chunk. A
        // duplicated or reordered answer would otherwise start a second, endless exchange.
        let moves = if reject {
            next_offset != s.offset
        } else {
            next_offset > s.offset
        };
        if !moves {
            return;
        }
        s.offset = next_offset;
        self.send_snapshot_chunk(from);
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) {
        let index = meta.index;
        if index <= self.log.committed {
            // Already installed, or stale (C8): nothing to restore; our committed prefix
            // matches the leader's log up to `index`, so acknowledge it as done.
            self.incoming_snapshot = None;
            let body = MessageBody::InstallSnapshotResponse {
                index,
                next_offset: offset + data.len() as u64,
                reject: false,
                done: true,
            };
            self.send(from, body);
            return;
        }
        // A chunk at offset 0 starts a transfer, unless it repeats the start of the transfer
        // already under way from the same leader in the same term (a duplicate or a
        // retransmission): then the answer below tells the leader where to resume.
        let same_transfer = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|t| t.meta == meta && t.from == from && t.term == self.term);
        if offset == 0 && !same_transfer {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                from,
                term: self.term,
                data: Vec::new(),
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(t) if t.meta == meta && t.from == from && t.term == self.term => {
                t.data.len() as u64
            }
            _ => 0,
        };
        if expected != offset {
            let body = MessageBody::InstallSnapshotResponse {
                index,
                next_offset: expected,
                reject: true,
                done: false,
            };
            self.send(from, body);
            return;
        }
        let buf = &mut self.incoming_snapshot.as_mut().expect("matched above").data;
        buf.extend_from_slice(&data);
        let received = buf.len() as u64;
        if !done {
            let body = MessageBody::InstallSnapshotResponse {
                index,
                next_offset: received,
                reject: false,
                done: false,
            };
            self.send(from, body);
            return;
        }
        let t = self.incoming_snapshot.take().expect("matched above");
        self.restore(Snapshot {
            meta: t.meta,
            data: t.data,
        });
        // Sent only after the Ready carrying the snapshot is durable (persisted_msgs).
        let body = MessageBody::InstallSnapshotResponse {
            index,
            next_offset: received,
            reject: false,
            done: true,
        };
        self.send(from, body);
    }

    /// Installs a snapshot from the leader if it is newer than our commit index. A stale one
    /// is ignored, so the applied index never moves backwards (docs/failures.md C8).
    fn restore(&mut self, snap: Snapshot) -> bool {
        let index = snap.meta.index;
        if index <= self.log.committed {
            return false;
        }
        if self.log.match_term(index, snap.meta.term) {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.commit_to(index);
            return false;
        }
        self.membership = snap.meta.membership.clone();
        self.conf_history = vec![(index, snap.meta.membership.clone())];
        self.uncommitted_confs.clear();
        self.log.restore(snap);
        true
    }

    pub(crate) fn snapshot_meta(&self, index: LogIndex) -> Result<SnapshotMeta, StorageError> {
        if index > self.log.applied {
            return Err(StorageError::Unavailable {
                index,
                last_index: self.log.applied,
            });
        }
        let term = self.log.term(index)?;
        let membership = self
            .conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, m)| m.clone())
            .ok_or(StorageError::Compacted {
                index,
                first_index: self.log.first_index(),
            })?;
        Ok(SnapshotMeta {
            index,
            term,
            membership,
        })
    }

    pub(crate) fn on_snapshot_taken(&mut self, index: LogIndex) {
        if let Some(pos) = self.conf_history.iter().rposition(|(i, _)| *i <= index) {
            self.conf_history.drain(..pos);
        }
        self.prune_outgoing_snapshots();
    }

    // ---- proposals -------------------------------------------------------------------------

    fn check_can_propose(&self) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        Ok(())
    }

    pub(crate) fn propose(
        &mut self,
        kind: EntryKind,
        data: Vec<u8>,
    ) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        let size = data.len() as u64 + 24;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure);
        }
        let index = self.append_entry(kind, data);
        self.pending_broadcast = true;
        Ok(index)
    }

    pub(crate) fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<LogIndex, ProposeError> {
        self.check_can_propose()?;
        // One change at a time (thesis §4.1), and none before this leader has committed an
        // entry of its term (Ongaro, raft-dev 2015: the single-server change bug).
        if !self.uncommitted_confs.is_empty() || !self.committed_in_term() {
            return Err(ProposeError::ConfChangePending);
        }
        self.membership.apply(&change)?;
        if let ConfChange::PromoteLearner(id) = change {
            let matched = self
                .progress
                .get(&id)
                .map(|p| p.match_index)
                .unwrap_or(LogIndex(0));
            if matched.0 + self.cfg.learner_catch_up_entries_max < self.log.last_index().0 {
                return Err(ProposeError::LearnerBehind(id));
            }
        }
        self.propose(EntryKind::ConfChange, change.encode())
    }

    /// Makes a committed conf change take effect.
    fn apply_conf_change(&mut self, index: LogIndex, cc: ConfChange) {
        let next = self
            .membership
            .apply(&cc)
            .unwrap_or_else(|e| panic!("raft: committed conf change at {index} is invalid: {e}"));
        self.membership = next.clone();
        self.conf_history.push((index, next));
        if self.role != Role::Leader {
            return;
        }
        let next_index = self.log.last_index().next();
        for id in self.membership.voters.clone() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, false))
                .learner = false;
        }
        for id in self.membership.learners.clone() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, true))
                .learner = true;
        }
        let members = self.membership.clone();
        self.progress.retain(|id, _| members.contains(*id));
        self.prune_outgoing_snapshots();
        if self
            .transferee
            .is_some_and(|t| !members.voters.contains(&t))
        {
            self.transferee = None;
        }
        if !members.voters.contains(&self.id) {
            // Thesis §4.2.2: a leader removed from the configuration steps down once the
            // change commits (docs/failures.md C9).
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    // ---- ReadIndex (thesis §6.4) -------------------------------------------------------------

    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => {
                self.leader_read(ctx, None);
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { context: ctx });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader: None }),
            },
        }
    }

    fn leader_read(&mut self, ctx: Vec<u8>, from: Option<NodeId>) {
        if !self.committed_in_term() {
            self.reads_before_commit.push((ctx, from));
            return;
        }
        let index = self.log.committed;
        if self.membership.voters.len() == 1 && self.membership.voters.contains(&self.id) {
            self.release_read(ctx, from, index);
            return;
        }
        self.read_seq += 1;
        let seq = self.read_seq;
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.reads.push_back(ReadRequest {
            seq,
            index,
            ctx,
            from,
            acks,
        });
        self.bcast_heartbeat(seq.to_be_bytes().to_vec());
    }

    fn ack_read(&mut self, from: NodeId, seq: u64) {
        if !self.membership.voters.contains(&from) {
            return;
        }
        for r in self.reads.iter_mut() {
            if r.seq > seq {
                break;
            }
            r.acks.insert(from);
        }
        let quorum = self.membership.quorum();
        while let Some(r) = self.reads.front() {
            let confirmed = r
                .acks
                .iter()
                .filter(|id| self.membership.voters.contains(id))
                .count();
            if confirmed < quorum {
                break;
            }
            let r = self.reads.pop_front().expect("checked non-empty");
            self.release_read(r.ctx, r.from, r.index);
        }
    }

    fn release_read(&mut self, ctx: Vec<u8>, from: Option<NodeId>, index: LogIndex) {
        match from {
            None => self.read_states.push(ReadState { ctx, index }),
            Some(to) => self.send(
                to,
                MessageBody::ReadIndexResponse {
                    context: ctx,
                    index,
                    reject: false,
                },
            ),
        }
    }

    // ---- leadership transfer (thesis §3.10) -------------------------------------------------

    pub(crate) fn transfer_leader(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.voters.contains(&to) {
            return Err(ProposeError::ConfChange(ConfChangeError::NotAMember(to)));
        }
        match self.transferee {
            Some(t) if t == to => return Ok(()),
            Some(_) => return Err(ProposeError::TransferInProgress),
            None => {}
        }
        self.transferee = Some(to);
        // The transfer is abandoned if it has not finished within an election timeout.
        self.election_elapsed = 0;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.match_index == self.log.last_index());
        if caught_up {
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    // ---- durability feedback ---------------------------------------------------------------

    /// The leader's own entries up to `persisted` are durable: they now count toward commit.
    pub(crate) fn on_persisted(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted;
        if let Some(pr) = self.progress.get_mut(&self.id) {
            pr.maybe_update(persisted);
        }
        self.maybe_commit();
    }
}

fn append_ok(index: LogIndex) -> MessageBody {
    MessageBody::AppendEntriesResponse {
        reject: false,
        index,
        reject_hint_index: LogIndex(0),
        reject_hint_term: Term(0),
    }
}

/// Decodes the conf change carried by a ConfChange entry; a corrupt one is a bug.
fn decode_conf(e: &Entry) -> ConfChange {
    ConfChange::decode(&e.data)
        .unwrap_or_else(|err| panic!("raft: conf change entry at {} is corrupt: {err}", e.index))
}
