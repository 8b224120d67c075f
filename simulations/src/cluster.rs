//! The cluster harness: N Raft cores, each with a simulated disk, a state machine and a
//! shell that carries out its `Ready` one storage step at a time, joined by the simulated
//! network.
//!
//! The shell runs the `Ready` contract of `mlcp::raft::Ready` as separate stages, so a crash
//! can land between any two of them:
//!
//! ```text
//! ready() + send `messages` → write in flight (slow disk: several steps) → write durable
//!   → send `persisted_messages` → restore snapshot, apply entries, serve reads → advance()
//!   → maybe take a local snapshot and compact
//! ```
//!
//! Both the swarm runs (`crate::sim`) and the scenario tests drive it: tests pick which
//! messages to deliver ([`Cluster::deliver_where`]), run a node's shell to a given stage
//! ([`Cluster::run_to`]) and crash it there.

use std::collections::BTreeMap;

use mlcp::raft::{
    Config, EntryKind, LogIndex, Message, MessageBody, NodeId, RawNode, Ready, Snapshot, Status,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::{Checker, FNV_OFFSET, Violation, fnv};
use crate::disk::{SimStorage, Write};
use crate::kv::{ApplyOutcome, ClientId, Command, Kv};
use crate::net::{Faults, Network};

/// Where a node's shell is in carrying out its current `Ready`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// `messages` sent; the write is in flight for this many more steps.
    Writing(u64),
    /// The write is durable; `persisted_messages` not yet sent.
    Durable,
    /// `persisted_messages` sent; committed entries not yet applied.
    Sent,
    /// Entries applied and reads served; `advance` not yet called.
    Applied,
}

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Voters of the initial configuration.
    pub voters: Vec<NodeId>,
    /// Extra nodes started outside the configuration (to be added as learners).
    pub spares: Vec<NodeId>,
    /// Core configuration; `id`, `initial_voters` and `seed` are set per node.
    pub config: Config,
    /// Network faults.
    pub faults: Faults,
    /// Most extra steps one write stays in flight (0: durable on the next step).
    pub disk_steps_max: u64,
    /// Take a local snapshot once this many entries are applied past the last one.
    pub snapshot_interval_entries: Option<u64>,
    /// Seed for every draw the harness makes.
    pub seed: u64,
}

impl ClusterOptions {
    /// A fault-free cluster of `voters` with the core's default configuration and snapshots
    /// off — the starting point of scenario tests.
    pub fn new(voters: &[u64]) -> ClusterOptions {
        let voters: Vec<NodeId> = voters.iter().map(|&v| NodeId(v)).collect();
        ClusterOptions {
            config: Config::new(voters[0], voters.clone()),
            voters,
            spares: Vec::new(),
            faults: Faults::none(),
            disk_steps_max: 0,
            snapshot_interval_entries: None,
            seed: 1,
        }
    }
}

/// A command a node applied (the client with that command may be acknowledged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The node that applied it.
    pub node: NodeId,
    /// Log index.
    pub index: LogIndex,
    /// The command.
    pub command: Command,
    /// Whether it changed the state or was a recognised retry.
    pub outcome: ApplyOutcome,
}

/// A linearizable read a node could serve: its read index is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedRead {
    /// The node serving it.
    pub node: NodeId,
    /// The read's tag, as passed to `read_index`.
    pub ctx: Vec<u8>,
    /// The read index.
    pub index: LogIndex,
    /// The value of the key named by `ctx[0]` (empty ctx: key 0).
    pub value: Vec<(ClientId, u64)>,
}

/// One simulated server.
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its disk (survives crashes).
    pub disk: SimStorage,
    /// The running core; `None` while crashed.
    pub core: Option<RawNode<SimStorage>>,
    /// The state machine (volatile; rebuilt from the snapshot on restart).
    pub kv: Kv,
    inflight: Option<(Ready, Stage)>,
    pending_reads: Vec<(Vec<u8>, LogIndex)>,
    /// Times this node was restarted.
    pub restarts: u64,
}

impl Node {
    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The stage of the Ready being carried out, if any.
    pub fn stage(&self) -> Option<Stage> {
        self.inflight.as_ref().map(|(_, s)| *s)
    }
}

/// Counters reported at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Crashes injected.
    pub crashes: u64,
    /// Crashes that hit a write in flight.
    pub crashes_mid_write: u64,
    /// Restarts.
    pub restarts: u64,
    /// Local snapshots taken (followed by log compaction).
    pub snapshots_taken: u64,
    /// Snapshots received from a leader and restored.
    pub snapshots_installed: u64,
    /// Membership-change entries applied (counted once per index).
    pub conf_changes: u64,
    /// Durable writes completed.
    pub writes: u64,
    /// Highest commit index applied anywhere.
    pub applied_max: LogIndex,
}

/// The whole simulated cluster.
pub struct Cluster {
    /// Nodes by id (voters and spares).
    pub nodes: BTreeMap<NodeId, Node>,
    /// The network.
    pub net: Network,
    /// The invariant checker.
    pub checker: Checker,
    /// Counters.
    pub stats: Stats,
    /// Current step.
    pub now: u64,
    /// Commands applied since the last [`Cluster::take_applied`].
    applied: Vec<Applied>,
    /// Reads served since the last [`Cluster::take_reads`].
    reads: Vec<ServedRead>,
    options: ClusterOptions,
    rng: ChaCha8Rng,
    trace: u64,
    conf_change_indexes: std::collections::BTreeSet<LogIndex>,
    /// Print every delivery to stderr (set by the `SIM_DEBUG` environment variable).
    pub debug: bool,
}

/// Shorthand for a list of node ids.
pub fn ids(raw: &[u64]) -> Vec<NodeId> {
    raw.iter().map(|&i| NodeId(i)).collect()
}

fn body_kind(body: &MessageBody) -> u8 {
    match body {
        MessageBody::PreVote { .. } => 1,
        MessageBody::PreVoteResponse { .. } => 2,
        MessageBody::RequestVote { .. } => 3,
        MessageBody::RequestVoteResponse { .. } => 4,
        MessageBody::AppendEntries { .. } => 5,
        MessageBody::AppendEntriesResponse { .. } => 6,
        MessageBody::Heartbeat { .. } => 7,
        MessageBody::HeartbeatResponse { .. } => 8,
        MessageBody::InstallSnapshot { .. } => 9,
        MessageBody::InstallSnapshotResponse { .. } => 10,
        MessageBody::TimeoutNow => 11,
        MessageBody::ReadIndex { .. } => 12,
        MessageBody::ReadIndexResponse { .. } => 13,
    }
}

impl Cluster {
    /// Builds and starts every node. Errors: a core that refuses to start.
    pub fn new(options: ClusterOptions) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            net: Network::new(options.faults.clone()),
            checker: Checker::new(),
            stats: Stats::default(),
            now: 0,
            applied: Vec::new(),
            reads: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            options,
            trace: FNV_OFFSET,
            conf_change_indexes: Default::default(),
            debug: std::env::var_os("SIM_DEBUG").is_some(),
        };
        let all: Vec<NodeId> = cluster
            .options
            .voters
            .iter()
            .chain(&cluster.options.spares)
            .copied()
            .collect();
        for id in all {
            let node = Node {
                id,
                disk: SimStorage::default(),
                core: None,
                kv: Kv::default(),
                inflight: None,
                pending_reads: Vec::new(),
                restarts: 0,
            };
            cluster.nodes.insert(id, node);
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: NodeId) {
        let mut config = self.options.config.clone();
        config.id = id;
        config.initial_voters = self.options.voters.clone();
        config.seed = self
            .options
            .seed
            .wrapping_mul(31)
            .wrapping_add(id.get() * 1_000_003 + self.nodes[&id].restarts);
        let node = self.nodes.get_mut(&id).expect("known node");
        let core = RawNode::new(config, node.disk.clone())
            .unwrap_or_else(|e| panic!("node {id} failed to start from its disk: {e}"));
        let snapshot_data = node.disk.durable_snapshot().data;
        node.kv = Kv::decode(&snapshot_data).expect("own snapshot decodes");
        node.core = Some(core);
        node.inflight = None;
        node.pending_reads.clear();
    }

    fn trace(&mut self, words: &[u64]) {
        for w in words {
            self.trace = fnv(self.trace, &w.to_le_bytes());
        }
    }

    /// Hash of everything that happened so far (messages delivered, entries applied,
    /// crashes): equal for equal seeds.
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// The node `id`. Panics on an unknown id.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&NodeId(id)]
    }

    /// The running core of `id`. Panics if it is down.
    pub fn core(&mut self, id: u64) -> &mut RawNode<SimStorage> {
        self.nodes
            .get_mut(&NodeId(id))
            .and_then(|n| n.core.as_mut())
            .expect("node is up")
    }

    /// `status()` of `id`, if it is up.
    pub fn status(&self, id: u64) -> Option<Status> {
        self.nodes[&NodeId(id)].core.as_ref().map(|c| c.status())
    }

    /// The running node that leads in the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.core.as_ref().map(|c| c.status()))
            .filter(|s| s.soft.role == mlcp::raft::Role::Leader)
            .max_by_key(|s| s.soft.term)
            .map(|s| s.id)
    }

    /// Draws from the harness's RNG (so callers stay on the seed's single stream).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// One tick of logical time for node `id`, if it is up.
    pub fn tick(&mut self, id: NodeId) {
        if let Some(core) = self.nodes.get_mut(&id).and_then(|n| n.core.as_mut()) {
            core.tick();
        }
    }

    /// Hands `msg` to its receiver if it is up (otherwise it is lost).
    pub fn deliver(&mut self, msg: Message) {
        if self.debug {
            let text = format!("{:?}", msg.body);
            let cut: String = text.chars().take(160).collect();
            eprintln!(
                "step {} deliver {}->{} t{} {cut}",
                self.now, msg.from, msg.to, msg.term
            );
        }
        self.trace(&[
            1,
            self.now,
            msg.from.get(),
            msg.to.get(),
            msg.term.get(),
            u64::from(body_kind(&msg.body)),
        ]);
        if let Some(core) = self.nodes.get_mut(&msg.to).and_then(|n| n.core.as_mut()) {
            core.step(msg);
        }
    }

    /// Delivers every message due at the current step.
    pub fn deliver_due(&mut self) {
        for msg in self.net.take_due(self.now) {
            self.deliver(msg);
        }
    }

    /// Delivers (in send order) every in-flight message `pick` selects; returns how many.
    pub fn deliver_where(&mut self, pick: impl FnMut(&Message) -> bool) -> usize {
        let msgs = self.net.take_where(pick);
        let n = msgs.len();
        for msg in msgs {
            self.deliver(msg);
        }
        n
    }

    /// Delivers the first in-flight message (in send order) that `pick` selects; returns
    /// whether there was one. For tests that decide message by message.
    pub fn deliver_first(&mut self, mut pick: impl FnMut(&Message) -> bool) -> bool {
        let mut found = false;
        let msgs = self.net.take_where(|m| {
            if !found && pick(m) {
                found = true;
                return true;
            }
            false
        });
        for msg in msgs {
            self.deliver(msg);
        }
        found
    }

    /// Drops every in-flight message `pick` selects; returns how many.
    pub fn drop_where(&mut self, pick: impl FnMut(&Message) -> bool) -> usize {
        self.net.take_where(pick).len()
    }

    /// Takes the commands applied since the last call.
    pub fn take_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.applied)
    }

    /// Takes the reads served since the last call.
    pub fn take_reads(&mut self) -> Vec<ServedRead> {
        std::mem::take(&mut self.reads)
    }

    /// Power loss on `id`: the core and state machine are gone, a write in flight is lost or
    /// (drawn) survives whole. Returns whether a write was in flight.
    pub fn crash(&mut self, id: NodeId) -> Result<bool, Violation> {
        let keep = self.rng.random_bool(0.5);
        self.crash_keeping(id, keep)
    }

    /// [`Cluster::crash`] with the fate of the write in flight chosen by the caller.
    pub fn crash_keeping(&mut self, id: NodeId, keep_pending: bool) -> Result<bool, Violation> {
        self.trace(&[2, self.now, id.get(), u64::from(keep_pending)]);
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.core.is_none() {
            return Ok(false);
        }
        let mid_write = matches!(node.stage(), Some(Stage::Writing(_)));
        node.core = None;
        node.inflight = None;
        node.pending_reads.clear();
        self.stats.crashes += 1;
        self.stats.crashes_mid_write += u64::from(mid_write);
        let kept = node
            .disk
            .crash(keep_pending)
            .map_err(|e| Violation(format!("node {id}: {}", e.0)))?;
        if let Some(write) = kept {
            let durable = node.disk.durable();
            self.checker.on_durable_write(id, &write, &durable)?;
        }
        Ok(mid_write)
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        self.trace(&[3, self.now, id.get()]);
        let node = self.nodes.get_mut(&id).expect("known node");
        if node.core.is_some() {
            return Ok(());
        }
        node.restarts += 1;
        self.stats.restarts += 1;
        {
            let durable = node.disk.durable();
            self.checker.on_restart(id, &durable)?;
        }
        self.start(id);
        self.observe(id)
    }

    /// Proposes a command on `id`.
    pub fn propose(
        &mut self,
        id: NodeId,
        command: Command,
    ) -> Result<LogIndex, mlcp::raft::ProposeError> {
        let core = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.core.as_mut())
            .expect("node is up");
        core.propose(command.encode())
    }

    /// Runs node `id`'s shell one stage. Returns whether anything happened.
    pub fn pump(&mut self, id: NodeId) -> Result<bool, Violation> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some(core) = node.core.as_mut() else {
            return Ok(false);
        };
        let Some((mut rd, stage)) = node.inflight.take() else {
            if !core.has_ready() {
                return Ok(false);
            }
            let mut rd = core.ready();
            let stage = if rd.must_sync() {
                node.disk.begin_write(Write {
                    hard_state: rd.hard_state,
                    snapshot: rd.snapshot.clone(),
                    entries: rd.entries.clone(),
                });
                Stage::Writing(self.rng.random_range(0..=self.options.disk_steps_max))
            } else {
                Stage::Durable
            };
            let messages = std::mem::take(&mut rd.messages);
            node.inflight = Some((rd, stage));
            for m in messages {
                self.net.send(m, self.now, &mut self.rng);
            }
            return Ok(true);
        };
        match stage {
            Stage::Writing(n) if n > 0 => node.inflight = Some((rd, Stage::Writing(n - 1))),
            Stage::Writing(_) => {
                let write = node
                    .disk
                    .complete_write()
                    .map_err(|e| Violation(format!("node {id}: {}", e.0)))?;
                self.stats.writes += 1;
                {
                    let durable = node.disk.durable();
                    self.checker.on_durable_write(id, &write, &durable)?;
                }
                node.inflight = Some((rd, Stage::Durable));
            }
            Stage::Durable => {
                let messages = std::mem::take(&mut rd.persisted_messages);
                node.inflight = Some((rd, Stage::Sent));
                for m in messages {
                    self.net.send(m, self.now, &mut self.rng);
                }
            }
            Stage::Sent => {
                self.apply_ready(id, &mut rd)?;
                self.nodes.get_mut(&id).expect("known").inflight = Some((rd, Stage::Applied));
            }
            Stage::Applied => {
                core.advance(rd.number);
                self.maybe_snapshot(id)?;
            }
        }
        Ok(true)
    }

    fn apply_ready(&mut self, id: NodeId, rd: &mut Ready) -> Result<(), Violation> {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(snapshot) = rd.snapshot.take() {
            self.checker
                .on_snapshot_restore(id, &snapshot.meta, node.kv.applied)?;
            let kv =
                Kv::decode(&snapshot.data).map_err(|e| Violation(format!("node {id}: {e}")))?;
            if kv.applied != snapshot.meta.index {
                return Err(Violation(format!(
                    "node {id} got a snapshot whose data is at index {} but whose meta says {}",
                    kv.applied, snapshot.meta.index
                )));
            }
            node.kv = kv;
            self.stats.snapshots_installed += 1;
        }
        let mut traces = Vec::new();
        for entry in std::mem::take(&mut rd.committed_entries) {
            self.checker.on_apply(id, &entry)?;
            traces.push([4, id.get(), entry.index.get(), entry.term.get()]);
            self.stats.applied_max = self.stats.applied_max.max(entry.index);
            let kv_err = |e| Violation(format!("node {id} at index {}: {e}", entry.index));
            match entry.kind {
                EntryKind::Normal if entry.data.is_empty() => {
                    node.kv.skip(entry.index).map_err(kv_err)?
                }
                EntryKind::Normal => {
                    let command = Command::decode(&entry.data).map_err(kv_err)?;
                    let outcome = node.kv.apply(entry.index, command).map_err(kv_err)?;
                    self.applied.push(Applied {
                        node: id,
                        index: entry.index,
                        command,
                        outcome,
                    });
                }
                EntryKind::ConfChange => {
                    node.kv.skip(entry.index).map_err(kv_err)?;
                    if self.conf_change_indexes.insert(entry.index) {
                        self.stats.conf_changes += 1;
                    }
                }
            }
        }
        node.pending_reads.extend(
            std::mem::take(&mut rd.read_states)
                .into_iter()
                .map(|r| (r.ctx, r.index)),
        );
        let applied = node.kv.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut node.pending_reads)
            .into_iter()
            .partition(|(_, index)| *index <= applied);
        node.pending_reads = waiting;
        for (ctx, index) in ready {
            let key = ctx.first().copied().unwrap_or(0);
            let value = node.kv.data.get(&key).cloned().unwrap_or_default();
            self.reads.push(ServedRead {
                node: id,
                ctx,
                index,
                value,
            });
        }
        for t in traces {
            self.trace(&t);
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(interval) = self.options.snapshot_interval_entries else {
            return Ok(());
        };
        let node = self.nodes.get_mut(&id).expect("known node");
        let applied = node.kv.applied;
        let (snap_index, last) = {
            let d = node.disk.durable();
            (d.snapshot.meta.index, d.last_index())
        };
        if applied < LogIndex(snap_index.get() + interval) {
            return Ok(());
        }
        if applied > last {
            return Err(Violation(format!(
                "node {id} applied index {applied} beyond its durable log (last {last})"
            )));
        }
        let core = node.core.as_mut().expect("up");
        let meta = match core.snapshot_meta(applied) {
            Ok(meta) => meta,
            // The core already holds a newer snapshot from the leader that the shell has not
            // been handed yet: it will replace this state anyway.
            Err(mlcp::raft::StorageError::Compacted { .. }) => return Ok(()),
            Err(e) => {
                return Err(Violation(format!(
                    "node {id}: snapshot_meta({applied}) failed: {e}"
                )));
            }
        };
        if meta.index != applied {
            return Err(Violation(format!(
                "node {id}: snapshot_meta({applied}) returned index {}",
                meta.index
            )));
        }
        node.disk.install_local_snapshot(Snapshot {
            meta,
            data: node.kv.encode(),
        });
        core.on_snapshot_taken(applied);
        self.stats.snapshots_taken += 1;
        Ok(())
    }

    /// Runs `id`'s shell until its Ready is at `stage` (taking a new Ready if none is in
    /// flight). Returns false if there was nothing to do.
    pub fn run_to(&mut self, id: u64, stage: Stage) -> Result<bool, Violation> {
        let id = NodeId(id);
        for _ in 0..16 {
            let current = self.nodes[&id].stage();
            let at = match (current, stage) {
                (Some(Stage::Writing(_)), Stage::Writing(_)) => true,
                (Some(c), s) => c == s,
                (None, _) => false,
            };
            if at {
                return Ok(true);
            }
            if !self.pump(id)? {
                return Ok(false);
            }
            self.observe(id)?;
        }
        Ok(false)
    }

    /// Runs `id`'s shell until nothing is left to do (bounded).
    pub fn flush(&mut self, id: NodeId) -> Result<(), Violation> {
        for _ in 0..1000 {
            if !self.pump(id)? {
                return Ok(());
            }
            self.observe(id)?;
        }
        panic!("node {id} never stopped producing Ready");
    }

    /// Checks node `id`'s status.
    pub fn observe(&mut self, id: NodeId) -> Result<(), Violation> {
        if let Some(core) = self.nodes[&id].core.as_ref() {
            let status = core.status();
            self.checker.observe_status(&status)?;
        }
        Ok(())
    }

    /// Checks every running node's status.
    pub fn observe_all(&mut self) -> Result<(), Violation> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.observe(id)?;
        }
        Ok(())
    }

    /// Flushes every node and delivers every in-flight message between nodes of `group`
    /// until nothing moves (no ticks, so nothing new starts). Messages to or from nodes
    /// outside `group` stay in flight. Returns the number of messages delivered.
    pub fn stabilize(&mut self, group: &[u64]) -> Result<usize, Violation> {
        let group = ids(group);
        let mut delivered = 0;
        for _ in 0..10_000 {
            for &id in &group {
                self.flush(id)?;
            }
            let n = self.deliver_where(|m| group.contains(&m.from) && group.contains(&m.to));
            if n == 0 {
                return Ok(delivered);
            }
            delivered += n;
        }
        panic!("cluster never became quiet");
    }

    /// Runs `ticks` ticks of logical time: each ticks every running node, then runs
    /// `steps_per_tick` network and shell steps (messages honour `net.blocked`).
    pub fn run_ticks(&mut self, ticks: u64, steps_per_tick: u64) -> Result<(), Violation> {
        for _ in 0..ticks {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.tick(id);
            }
            for _ in 0..steps_per_tick {
                self.step()?;
            }
        }
        Ok(())
    }

    /// One simulated step of a swarm run: deliver what is due, run every shell one stage,
    /// check every invariant. Ticks are the caller's.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        self.deliver_due();
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.pump(id)?;
        }
        self.observe_all()
    }
}
