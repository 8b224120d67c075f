//! Deterministic snapshot and restore of the whole manifest: one format-version byte, then
//! the prost-encoded `ManifestState` with tasks, nodes, terms and sessions in key order.

use prost::Message;

use crate::proto::internal::{ManifestState, NodeTerm};

use super::{Manifest, ManifestError, TaskId};

/// Format version written as the first snapshot byte. Restore refuses other versions.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 1;

impl Manifest {
    /// The whole state as bytes. Equal states give equal bytes (ordered maps, no derived
    /// indexes), so replicas can be compared byte for byte.
    pub fn snapshot(&self) -> Vec<u8> {
        let state = ManifestState {
            tasks: self.tasks.values().cloned().collect(),
            nodes: self.nodes.values().cloned().collect(),
            sessions: self.sessions.values().cloned().collect(),
            next_submit_seq: self.next_submit_seq,
            node_status_terms: self
                .node_status_terms
                .iter()
                .map(|(node_id, term)| NodeTerm {
                    node_id: node_id.clone(),
                    term: *term,
                })
                .collect(),
        };
        let mut out = Vec::with_capacity(1 + state.encoded_len());
        out.push(SNAPSHOT_FORMAT_VERSION);
        state.encode(&mut out).expect("Vec grows");
        out
    }

    /// Rebuilds a manifest from [`Manifest::snapshot`] bytes. `Malformed` (naming the
    /// problem) for an empty buffer, an unknown version, undecodable data or a bad task id.
    pub fn restore(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let malformed = |reason: String| ManifestError::Malformed {
            what: "manifest snapshot".into(),
            reason,
        };
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| malformed("empty snapshot".into()))?;
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(malformed(format!(
                "format version {version}, expected {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let state = ManifestState::decode(body).map_err(|e| malformed(e.to_string()))?;
        let mut m = Manifest {
            next_submit_seq: state.next_submit_seq,
            ..Default::default()
        };
        for t in state.tasks {
            let id = TaskId::parse(&t.task_id).map_err(|e| malformed(e.to_string()))?;
            m.tasks.insert(id, t);
        }
        for mut n in state.nodes {
            n.active_tasks = 0;
            m.nodes.insert(n.node_id.clone(), n);
        }
        for s in state.sessions {
            m.sessions.insert(s.client_id.clone(), s);
        }
        for nt in state.node_status_terms {
            m.node_status_terms.insert(nt.node_id, nt.term);
        }
        m.rebuild_indexes();
        Ok(m)
    }
}
