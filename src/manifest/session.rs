//! The client session table (Raft thesis §6.3; docs/failures.md C10): each client's recent
//! `(sequence → reply)` window, so a command retried after a leader change is applied once.
//! Replies are stored compactly (task and node ids only) and filled from the current state
//! when replayed. Sessions idle longest are evicted first once the table is full.

use prost::Message;

use crate::proto::internal::{ClientSession, CommandResult, SessionRecord, SessionReply};
use crate::proto::{Node, Task};

use super::command::{CommandOutcome, from_proto_result, to_proto_result};
use super::{Manifest, ManifestError, TaskId};

/// Replies kept per client (count). A client may have this many commands in flight.
pub const SESSION_REPLIES_MAX: usize = 256;
/// Sessions kept (count); the least recently used is evicted beyond it.
pub const SESSIONS_MAX: usize = 4_096;

pub(super) enum SessionCheck {
    Fresh,
    Replay(Box<CommandResult>),
    Expired,
}

impl Manifest {
    pub(super) fn check_session(&self, s: &ClientSession) -> SessionCheck {
        let Some(rec) = self.sessions.get(&s.client_id) else {
            return SessionCheck::Fresh;
        };
        if let Ok(i) = rec
            .replies
            .binary_search_by_key(&s.sequence, |r| r.sequence)
        {
            return SessionCheck::Replay(Box::new(
                rec.replies[i].result.clone().unwrap_or_default(),
            ));
        }
        if s.sequence <= rec.forgotten_through {
            return SessionCheck::Expired;
        }
        SessionCheck::Fresh
    }

    pub(super) fn record_session(
        &mut self,
        s: &ClientSession,
        now: i64,
        result: &Result<CommandOutcome, ManifestError>,
    ) {
        let mut compact = to_proto_result(result);
        for t in &mut compact.tasks {
            *t = Task {
                task_id: std::mem::take(&mut t.task_id),
                ..Default::default()
            };
        }
        if let Some(n) = &mut compact.node {
            *n = Node {
                node_id: std::mem::take(&mut n.node_id),
                ..Default::default()
            };
        }
        let rec = self
            .sessions
            .entry(s.client_id.clone())
            .or_insert_with(|| SessionRecord {
                client_id: s.client_id.clone(),
                ..Default::default()
            });
        self.session_lru
            .remove(&(rec.last_used_ms, s.client_id.clone()));
        // `now` may step backwards between leaders; keep the table's order monotone.
        rec.last_used_ms = rec.last_used_ms.max(now);
        let pos = rec
            .replies
            .binary_search_by_key(&s.sequence, |r| r.sequence)
            .unwrap_or_else(|p| p);
        rec.replies.insert(
            pos,
            SessionReply {
                sequence: s.sequence,
                result: Some(compact),
            },
        );
        if rec.replies.len() > SESSION_REPLIES_MAX {
            let dropped = rec.replies.remove(0);
            rec.forgotten_through = rec.forgotten_through.max(dropped.sequence);
        }
        let key = (rec.last_used_ms, s.client_id.clone());
        self.session_lru.insert(key);
        while self.sessions.len() > SESSIONS_MAX {
            let Some((_, client)) = self.session_lru.pop_first() else {
                break;
            };
            self.sessions.remove(&client);
        }
    }

    /// A recorded reply with current task and node values, marked as a duplicate.
    pub(super) fn replay(&self, r: &CommandResult) -> Result<CommandOutcome, ManifestError> {
        let mut out = from_proto_result(r)?;
        for t in &mut out.tasks {
            if let Some(current) = TaskId::parse(&t.task_id)
                .ok()
                .and_then(|id| self.get_task(&id))
            {
                *t = current.clone();
            }
        }
        if let Some(n) = &mut out.node
            && let Some(current) = self.get_node(&n.node_id)
        {
            *n = current;
        }
        out.duplicate = true;
        Ok(out)
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Approximate encoded size of the session table, in bytes (for metrics).
    pub fn session_bytes(&self) -> usize {
        self.sessions.values().map(Message::encoded_len).sum()
    }
}
