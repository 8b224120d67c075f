//! The leader's view of each follower's log (§5.3 `nextIndex`/`matchIndex`), with the flow
//! control of etcd-io/raft: a follower is probed one message at a time until its match is
//! found, then entries are pipelined to it within a bound on messages and bytes in flight,
//! or it is sent a snapshot when it needs entries the leader has compacted.

use std::collections::VecDeque;

use super::types::LogIndex;

/// How the leader currently replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Match unknown: at most one AppendEntries in flight, then wait for its answer.
    Probe,
    /// Match known: AppendEntries are pipelined, bounded by the inflight limits.
    Replicate,
    /// The follower needs a snapshot; one chunk at a time is in flight.
    Snapshot,
}

/// A snapshot transfer to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SnapshotSend {
    /// Index of the snapshot being sent.
    pub(crate) index: LogIndex,
    /// Byte offset of the chunk in flight.
    pub(crate) offset: u64,
    /// Ticks since the chunk was last sent (for retransmission).
    pub(crate) ticks_since_send: u64,
}

/// Replication progress of one member (the leader keeps one for itself too).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ProgressState,
    /// In Probe: an AppendEntries was sent and not yet answered.
    pub(crate) probe_sent: bool,
    /// In Replicate: (last index, bytes) of each AppendEntries in flight, oldest first.
    inflights: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    /// Heard from within the current CheckQuorum window (thesis §6.2).
    pub(crate) recent_active: bool,
    pub(crate) learner: bool,
    pub(crate) snapshot: Option<SnapshotSend>,
}

impl Progress {
    /// A fresh progress for a peer whose match is unknown; `next` is the leader's last + 1.
    pub(crate) fn new(next: LogIndex, learner: bool) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index: next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            learner,
            snapshot: None,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.state = state;
        self.probe_sent = false;
        self.inflights.clear();
        self.inflight_bytes = 0;
        self.snapshot = None;
    }

    /// Back to probing from `match + 1` (or after a finished snapshot).
    pub(crate) fn become_probe(&mut self) {
        let after_snapshot = self.snapshot.as_ref().map(|s| s.index.next());
        self.reset_state(ProgressState::Probe);
        self.next_index = self
            .match_index
            .next()
            .max(after_snapshot.unwrap_or(LogIndex(0)));
    }

    /// Start pipelining from `match + 1`.
    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index.next();
    }

    /// Start sending the snapshot at `index` from byte 0.
    pub(crate) fn become_snapshot(&mut self, index: LogIndex) {
        self.reset_state(ProgressState::Snapshot);
        self.snapshot = Some(SnapshotSend {
            index,
            offset: 0,
            ticks_since_send: 0,
        });
    }

    /// The follower holds everything up to `index`. Returns false for a stale answer.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// The follower refused `rejected` (a `prev_log_index`); `hint` is the highest index
    /// that may still match. Returns false if the refusal is stale.
    pub(crate) fn maybe_decr_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index.next();
            return true;
        }
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = rejected.min(hint.next()).max(self.match_index.next());
        self.probe_sent = false;
        true
    }

    /// Records an AppendEntries ending at `last` carrying `bytes` of entries.
    pub(crate) fn on_entries_sent(&mut self, last: LogIndex, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last.next();
                self.inflights.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => unreachable!("raft: entries sent in snapshot state"),
        }
    }

    /// Frees inflight slots for messages acknowledged up to `index`.
    pub(crate) fn free_to(&mut self, index: LogIndex) {
        while let Some(&(last, bytes)) = self.inflights.front() {
            if last > index {
                break;
            }
            self.inflights.pop_front();
            self.inflight_bytes -= bytes;
        }
    }

    /// Frees the oldest inflight slot (a heartbeat answer proves the follower is alive, so a
    /// full window whose acknowledgements were lost must not stall replication forever).
    pub(crate) fn free_first(&mut self) {
        if let Some((_, bytes)) = self.inflights.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// Whether the inflight window is full.
    pub(crate) fn inflights_full(&self, msgs_max: usize, bytes_max: u64) -> bool {
        self.inflights.len() >= msgs_max || self.inflight_bytes >= bytes_max
    }

    /// Whether the leader must wait before sending more AppendEntries.
    pub(crate) fn is_paused(&self, msgs_max: usize, bytes_max: u64) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights_full(msgs_max, bytes_max),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §5.3 flow control: a Replicate window stops at `inflight_msgs_max` messages and at
    /// `inflight_bytes_max` bytes and reopens as acknowledgements free it.
    #[test]
    fn replicate_window_bounds_messages_and_bytes() {
        let mut p = Progress::new(LogIndex(1), false);
        p.become_replicate();
        p.on_entries_sent(LogIndex(1), 10);
        p.on_entries_sent(LogIndex(2), 10);
        assert!(p.is_paused(2, 1000));
        assert!(!p.is_paused(3, 1000));
        assert!(p.is_paused(3, 20));
        p.free_to(LogIndex(1));
        assert!(!p.is_paused(2, 1000));
        assert_eq!(p.next_index, LogIndex(3));
    }

    /// Stale rejections (for an index already matched, or not the one last probed) are
    /// ignored, so a reordered answer cannot move `next` backwards needlessly.
    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(LogIndex(10), false);
        assert!(!p.maybe_decr_to(LogIndex(5), LogIndex(0)));
        assert!(p.maybe_decr_to(LogIndex(9), LogIndex(3)));
        assert_eq!(p.next_index, LogIndex(4));
        p.maybe_update(LogIndex(6));
        p.become_replicate();
        assert!(!p.maybe_decr_to(LogIndex(6), LogIndex(0)));
        assert!(p.maybe_decr_to(LogIndex(8), LogIndex(0)));
        assert_eq!(p.next_index, LogIndex(7));
    }
}
