//! Unit and cluster tests of the core. `Net` is a deterministic in-memory cluster: no
//! threads, no clocks; messages are delivered in FIFO order, links can be cut, and a filter
//! can drop chosen messages to replay exact sequences (Figure 8, C1).

mod cluster;
mod election;
mod membership;
mod read_transfer;
mod replication;
mod snapshot;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    Config, Entry, EntryKind, LogIndex, Message, NodeId, RawNode, ReadState, Role, Snapshot, Term,
};

/// The tests' store: the one in-memory store (`crate::storage::MemStorage`), shared between
/// a core and its test driver.
pub type MemLog = std::sync::Arc<crate::storage::MemStorage>;

/// An empty [`MemLog`].
pub fn mem_log() -> MemLog {
    MemLog::default()
}

/// One simulated member: its core, its storage, and its state machine (the list of applied
/// command payloads).
pub(crate) struct Node {
    pub raw: RawNode<MemLog>,
    pub log: MemLog,
    pub cfg: Config,
    /// Applied commands, in order, each with its index.
    pub sm: Vec<(LogIndex, Vec<u8>)>,
    pub applied: LogIndex,
    pub read_states: Vec<ReadState>,
    pub up: bool,
}

pub(crate) type Filter = Box<dyn Fn(&Message) -> bool>;

/// A deterministic cluster.
pub(crate) struct Net {
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: VecDeque<Message>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Returns false for messages to drop.
    pub filter: Option<Filter>,
    /// Every message delivered, for determinism and shape checks.
    pub trace: Vec<Message>,
}

pub(crate) fn n(id: u64) -> NodeId {
    NodeId(id)
}

pub(crate) fn test_config(id: u64, voters: &[u64]) -> Config {
    let mut c = Config::new(NodeId(id), voters.iter().map(|&v| NodeId(v)));
    c.seed = id * 7919;
    c
}

#[allow(dead_code)]
/// Encodes a state machine (a list of applied commands) as snapshot data.
fn encode_sm(sm: &[(LogIndex, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, d) in sm {
        out.extend_from_slice(&i.0.to_be_bytes());
        out.extend_from_slice(&(d.len() as u32).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn decode_sm(mut b: &[u8]) -> Vec<(LogIndex, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let i = u64::from_be_bytes(b[..8].try_into().unwrap());
        let len = u32::from_be_bytes(b[8..12].try_into().unwrap()) as usize;
        out.push((LogIndex(i), b[12..12 + len].to_vec()));
        b = &b[12 + len..];
    }
    out
}

#[allow(dead_code)]
impl Net {
    /// A cluster of voters `1..=size`, each config adjusted by `tweak`.
    pub fn new(size: u64, tweak: impl Fn(&mut Config)) -> Net {
        let voters: Vec<u64> = (1..=size).collect();
        let mut net = Net {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            filter: None,
            trace: Vec::new(),
        };
        for id in 1..=size {
            let mut cfg = test_config(id, &voters);
            tweak(&mut cfg);
            net.add_node(cfg);
        }
        net
    }

    /// Adds a member with empty storage (a new learner, say).
    pub fn add_node(&mut self, cfg: Config) {
        let log = mem_log();
        let raw = RawNode::new(cfg.clone(), log.clone()).expect("valid config");
        let node = Node {
            raw,
            log,
            cfg,
            sm: Vec::new(),
            applied: LogIndex(0),
            read_states: Vec::new(),
            up: true,
        };
        self.nodes.insert(node.cfg.id, node);
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    pub fn raw(&mut self, id: u64) -> &mut RawNode<MemLog> {
        &mut self.nodes.get_mut(&NodeId(id)).unwrap().raw
    }

    /// Handles one Ready of `id` as a shell would; returns whether there was one.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).unwrap();
        if !node.up || !node.raw.has_ready() {
            return false;
        }
        let rd = node.raw.ready();
        node.log.persist(&rd);
        let mut out: Vec<Message> = rd.messages.clone();
        out.extend(rd.persisted_messages.iter().cloned());
        if let Some(s) = &rd.snapshot {
            assert!(
                s.meta.index > node.applied,
                "snapshot would move applied backwards"
            );
            node.sm = decode_sm(&s.data);
            node.applied = s.meta.index;
        }
        for e in &rd.committed_entries {
            assert_eq!(
                e.index,
                node.applied.next(),
                "node {id}: committed entries out of order"
            );
            node.applied = e.index;
            if e.kind == EntryKind::Normal && !e.data.is_empty() {
                node.sm.push((e.index, e.data.clone()));
            }
        }
        node.read_states.extend(rd.read_states.iter().cloned());
        node.raw.advance(rd.number);
        self.queue.extend(out);
        true
    }

    /// Delivers queued messages and processes Readies until nothing moves (bounded).
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let mut moved = false;
            for id in ids {
                moved |= self.process_ready(id);
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                self.deliver(m);
            }
            if !moved {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    fn deliver(&mut self, m: Message) {
        if self.cut.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(f) = &self.filter
            && !f(&m)
        {
            return;
        }
        let Some(node) = self.nodes.get_mut(&m.to) else {
            return;
        };
        if !node.up {
            return;
        }
        self.trace.push(m.clone());
        node.raw.step(m);
    }

    /// Ticks every live node once, then stabilizes.
    pub fn tick(&mut self) {
        for node in self.nodes.values_mut() {
            if node.up {
                node.raw.tick();
            }
        }
        self.stabilize();
    }

    pub fn ticks(&mut self, count: usize) {
        for _ in 0..count {
            self.tick();
        }
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != NodeId(id) {
                self.cut.insert((NodeId(id), other));
                self.cut.insert((other, NodeId(id)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The live leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.up && n.raw.status().soft.role == Role::Leader)
            .max_by_key(|n| n.raw.status().soft.term)
            .map(|n| n.cfg.id)
    }

    /// Ticks until a leader exists (bounded), returning it.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..1000 {
            if let Some(l) = self.leader() {
                return l;
            }
            self.tick();
        }
        panic!("no leader elected");
    }

    /// Proposes on `id` and stabilizes; returns the index.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> LogIndex {
        let idx = self
            .nodes
            .get_mut(&id)
            .unwrap()
            .raw
            .propose(data.to_vec())
            .expect("propose");
        self.stabilize();
        idx
    }

    /// Takes a snapshot of `id`'s state machine at its applied index and compacts its log.
    pub fn take_snapshot(&mut self, id: NodeId) -> LogIndex {
        let node = self.nodes.get_mut(&id).unwrap();
        let index = node.applied;
        if index
            <= super::Storage::snapshot(&*node.log)
                .expect("in memory")
                .meta
                .index
        {
            // Already covered by the stored snapshot (one received from the leader, say).
            return index;
        }
        let meta = node.raw.snapshot_meta(index).expect("snapshot meta");
        crate::storage::LogStore::compact(
            &*node.log,
            Snapshot {
                meta,
                data: encode_sm(&node.sm),
            },
        )
        .expect("the applied index is stored");
        node.raw.on_snapshot_taken(index);
        index
    }

    /// Crashes `id` (loses nothing: the in-memory store persists at once) and restarts it
    /// from storage.
    pub fn restart(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).unwrap();
        let snap = node.log_snapshot();
        node.raw = RawNode::new(node.cfg.clone(), node.log.clone()).expect("restart");
        node.sm = decode_sm(&snap.data);
        node.applied = snap.meta.index;
        node.read_states.clear();
    }

    /// Checks state-machine safety: every pair of nodes agrees on the commands applied at
    /// each index both have applied.
    pub fn check_agreement(&self) {
        let mut seen: BTreeMap<LogIndex, (NodeId, Vec<u8>)> = BTreeMap::new();
        for node in self.nodes.values() {
            for (i, d) in &node.sm {
                if let Some((other, od)) = seen.get(i) {
                    assert_eq!(
                        od, d,
                        "nodes {other} and {} applied different commands at {i}",
                        node.cfg.id
                    );
                } else {
                    seen.insert(*i, (node.cfg.id, d.clone()));
                }
            }
        }
    }
}

#[allow(dead_code)]
impl Node {
    fn log_snapshot(&self) -> Snapshot {
        use crate::raft::Storage;
        self.log.snapshot().unwrap()
    }

    pub fn commit(&self) -> LogIndex {
        self.raw.status().hard.commit
    }

    pub fn term(&self) -> Term {
        self.raw.status().soft.term
    }

    pub fn role(&self) -> Role {
        self.raw.status().soft.role
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.log.all_entries()
    }
}
