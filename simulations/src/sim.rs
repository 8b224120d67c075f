//! One swarm-testing run: parameters drawn from the seed, a safety phase under faults, then a
//! liveness phase on a healed cluster (TigerBeetle VOPR style; see STYLE.md).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mlcp::raft::{ConfChange, Config, NodeId, ProposeError};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checker::Violation;
use crate::cluster::{Cluster, ClusterOptions};
use crate::kv::{ClientId, Command};
use crate::net::Faults;

/// Every parameter of a run, drawn from its seed (and the command-line overrides).
#[derive(Clone, Debug)]
pub struct Params {
    /// The seed.
    pub seed: u64,
    /// Voters in the initial configuration (3 or 5); one spare node more is started.
    pub nodes: u64,
    /// Ticks of the safety phase.
    pub ticks: u64,
    /// Simulator steps per tick (message and disk latencies are in steps).
    pub steps_per_tick: u64,
    /// Network faults.
    pub faults: Faults,
    /// Whether this run is in the high-churn regime (frequent short crashes and partitions).
    pub churn: bool,
    /// Most extra steps a disk write stays in flight.
    pub disk_steps_max: u64,
    /// Chance in 1000, per tick, that one running node crashes.
    pub crash_per_mille: u32,
    /// Ticks a crashed node stays down, at most.
    pub down_ticks_max: u64,
    /// Chance in 1000, per tick, that a partition starts (if none is in force).
    pub partition_per_mille: u32,
    /// Ticks a partition lasts, at most.
    pub partition_ticks_max: u64,
    /// Chance in 1000 that a partition is one-way rather than symmetric.
    pub one_way_per_mille: u32,
    /// Simulated clients.
    pub clients: u64,
    /// Chance in 1000, per tick, that an idle client issues a command.
    pub client_per_mille: u32,
    /// Chance in 1000 that a client operation is a linearizable read, not a write.
    pub read_per_mille: u32,
    /// Ticks a client waits before retrying elsewhere.
    pub client_timeout_ticks: u64,
    /// A membership change is attempted every this many ticks.
    pub conf_change_every_ticks: u64,
    /// Chance in 1000, per tick, of a leadership transfer request.
    pub transfer_per_mille: u32,
    /// Local snapshot every this many applied entries.
    pub snapshot_interval_entries: u64,
    /// The core's configuration (timeouts, batching and flow-control limits).
    pub config: Config,
}

/// What the command line may pin.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--ticks`.
    pub ticks: Option<u64>,
    /// `--nodes`.
    pub nodes: Option<u64>,
}

/// Default length of the safety phase in ticks (sized so a release build runs a seed in well
/// under a second and still sees crashes, partitions, snapshots and membership changes).
pub const TICKS_DEFAULT: u64 = 10_000;

/// More messages than this in flight at once is a message storm: the run fails as a
/// liveness failure rather than grinding on.
pub const IN_FLIGHT_MSGS_MAX: usize = 20_000;

impl Params {
    /// Draws every parameter from `seed` (swarm testing: each fault may be off entirely).
    pub fn draw(seed: u64, overrides: &Overrides) -> Params {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
        let on = |rng: &mut ChaCha8Rng, p: f64| rng.random_bool(p);
        let nodes = overrides
            .nodes
            .unwrap_or(if rng.random_bool(0.5) { 3 } else { 5 });
        // Swarm regime: about a third of the runs churn leaders hard (frequent short crashes
        // and partitions, one entry per AppendEntries), which is what exposes commit-rule and
        // truncation bugs; the rest run longer stretches of calm between faults.
        let churn = on(&mut rng, 0.35);
        let steps_per_tick = rng.random_range(2..=6);
        let delay_steps_min = rng.random_range(0..=2);
        let faults = Faults {
            drop_per_mille: if on(&mut rng, 0.6) {
                rng.random_range(1..=150)
            } else {
                0
            },
            duplicate_per_mille: if on(&mut rng, 0.4) {
                rng.random_range(1..=100)
            } else {
                0
            },
            delay_steps_min,
            delay_steps_max: delay_steps_min + rng.random_range(0..=steps_per_tick * 3),
            reorder: on(&mut rng, 0.5),
        };
        let mut config = Config::new(NodeId(1), Vec::new());
        config.election_timeout_ticks_min = rng.random_range(8..=15);
        config.election_timeout_ticks_max =
            config.election_timeout_ticks_min + rng.random_range(5..=15);
        config.heartbeat_interval_ticks = rng.random_range(1..=3);
        config.append_bytes_max = if churn {
            rng.random_range(41..=80)
        } else {
            rng.random_range(41..=400)
        };
        config.inflight_msgs_max = rng.random_range(1..=8);
        config.inflight_bytes_max = rng.random_range(400..=4000);
        config.snapshot_chunk_bytes = rng.random_range(512..=8192);
        config.learner_catch_up_entries_max = rng.random_range(5..=50);
        Params {
            seed,
            nodes,
            ticks: overrides.ticks.unwrap_or(TICKS_DEFAULT),
            steps_per_tick,
            faults,
            disk_steps_max: if on(&mut rng, 0.6) {
                rng.random_range(1..=3 * steps_per_tick)
            } else {
                0
            },
            crash_per_mille: if churn {
                rng.random_range(30..=150)
            } else if on(&mut rng, 0.8) {
                rng.random_range(2..=25)
            } else {
                0
            },
            down_ticks_max: if churn {
                rng.random_range(2..=30)
            } else {
                rng.random_range(5..=80)
            },
            partition_per_mille: if churn {
                rng.random_range(20..=100)
            } else if on(&mut rng, 0.7) {
                rng.random_range(2..=25)
            } else {
                0
            },
            partition_ticks_max: if churn {
                rng.random_range(3..=40)
            } else {
                rng.random_range(10..=150)
            },
            churn,
            one_way_per_mille: rng.random_range(0..=1000),
            clients: rng.random_range(1..=4),
            client_per_mille: rng.random_range(100..=900),
            read_per_mille: rng.random_range(0..=300),
            client_timeout_ticks: rng.random_range(20..=60),
            conf_change_every_ticks: rng.random_range(40..=200),
            transfer_per_mille: if on(&mut rng, 0.5) {
                rng.random_range(1..=10)
            } else {
                0
            },
            snapshot_interval_entries: rng.random_range(10..=60),
            config,
        }
    }

    /// Upper bound, in ticks, for the liveness phase: enough for several elections (with
    /// PreVote, and a CheckQuorum step-down), for crashed nodes to catch up by snapshot, and
    /// for clients to retry a few times.
    pub fn liveness_ticks_max(&self) -> u64 {
        20 * self.config.election_timeout_ticks_max + 4 * self.client_timeout_ticks + 200
    }

    /// The parameters as `name=value` lines, seed first.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let f = &self.faults;
        let c = &self.config;
        let _ = writeln!(s, "SEED={}", self.seed);
        let _ = writeln!(
            s,
            "nodes={} spare_nodes=1 ticks={} steps_per_tick={} churn={}",
            self.nodes, self.ticks, self.steps_per_tick, self.churn
        );
        let _ = writeln!(
            s,
            "drop_per_mille={} duplicate_per_mille={} delay_steps={}..={} reorder={}",
            f.drop_per_mille,
            f.duplicate_per_mille,
            f.delay_steps_min,
            f.delay_steps_max,
            f.reorder
        );
        let _ = writeln!(
            s,
            "disk_steps_max={} crash_per_mille={} down_ticks_max={} partition_per_mille={} partition_ticks_max={} one_way_per_mille={}",
            self.disk_steps_max,
            self.crash_per_mille,
            self.down_ticks_max,
            self.partition_per_mille,
            self.partition_ticks_max,
            self.one_way_per_mille
        );
        let _ = writeln!(
            s,
            "clients={} client_per_mille={} read_per_mille={} client_timeout_ticks={} conf_change_every_ticks={} transfer_per_mille={} snapshot_interval_entries={}",
            self.clients,
            self.client_per_mille,
            self.read_per_mille,
            self.client_timeout_ticks,
            self.conf_change_every_ticks,
            self.transfer_per_mille,
            self.snapshot_interval_entries
        );
        let _ = writeln!(
            s,
            "election_timeout_ticks={}..{} heartbeat_interval_ticks={} append_bytes_max={} inflight_msgs_max={} inflight_bytes_max={} snapshot_chunk_bytes={} learner_catch_up_entries_max={}",
            c.election_timeout_ticks_min,
            c.election_timeout_ticks_max,
            c.heartbeat_interval_ticks,
            c.append_bytes_max,
            c.inflight_msgs_max,
            c.inflight_bytes_max,
            c.snapshot_chunk_bytes,
            c.learner_catch_up_entries_max
        );
        let _ = writeln!(s, "liveness_ticks_max={}", self.liveness_ticks_max());
        s
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both phases passed.
    Ok,
    /// An invariant broke.
    Safety(Violation),
    /// The healed cluster did not finish within the bound.
    Liveness(String),
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Hash of the run's trace (equal for equal seeds).
    pub trace_hash: u64,
    /// One line of counters.
    pub summary: String,
}

#[derive(Clone, Debug)]
enum Op {
    Write(Command),
    Read {
        key: u8,
        id: u64,
        required: Vec<(ClientId, u64)>,
    },
}

#[derive(Clone, Debug)]
struct Client {
    id: ClientId,
    /// Sequence number of the last acknowledged write.
    acked_seq: u64,
    /// Node the client talks to.
    target: NodeId,
    op: Option<Op>,
    /// Whether the current attempt was accepted by `target` (then wait, else retry soon).
    accepted: bool,
    deadline_tick: u64,
    retries: u64,
}

/// Runs one seed: safety phase, then liveness phase.
pub fn run(params: &Params) -> Report {
    let mut sim = Sim::new(params);
    let outcome = match sim.safety_phase() {
        Err(Failure::Safety(v)) => Outcome::Safety(v),
        Err(Failure::Liveness(why)) => Outcome::Liveness(why),
        Ok(()) => match sim.liveness_phase() {
            Err(Failure::Safety(v)) => Outcome::Safety(v),
            Err(Failure::Liveness(why)) => Outcome::Liveness(why),
            Ok(()) => Outcome::Ok,
        },
    };
    Report {
        outcome,
        trace_hash: sim.cluster.trace_hash(),
        summary: sim.summary(),
    }
}

enum Failure {
    Safety(Violation),
    Liveness(String),
}

impl From<Violation> for Failure {
    fn from(v: Violation) -> Self {
        Failure::Safety(v)
    }
}

struct Sim<'a> {
    p: &'a Params,
    cluster: Cluster,
    rng: ChaCha8Rng,
    tick: u64,
    clients: Vec<Client>,
    down_until: BTreeMap<NodeId, u64>,
    partition_until: Option<u64>,
    partitions: u64,
    next_read_id: u64,
    /// key → acknowledged tokens in acknowledgement order.
    acked_by_key: BTreeMap<u8, Vec<(ClientId, u64)>>,
    reads_served: u64,
    transfers: u64,
    conf_proposed: u64,
}

impl<'a> Sim<'a> {
    fn new(p: &'a Params) -> Sim<'a> {
        let voters: Vec<NodeId> = (1..=p.nodes).map(NodeId).collect();
        let options = ClusterOptions {
            voters: voters.clone(),
            spares: vec![NodeId(p.nodes + 1)],
            config: p.config.clone(),
            faults: p.faults.clone(),
            disk_steps_max: p.disk_steps_max,
            snapshot_interval_entries: Some(p.snapshot_interval_entries),
            seed: p.seed,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let clients = (1..=p.clients)
            .map(|id| Client {
                id,
                acked_seq: 0,
                target: *voters.choose(&mut rng).expect("voters"),
                op: None,
                accepted: false,
                deadline_tick: 0,
                retries: 0,
            })
            .collect();
        Sim {
            p,
            cluster: Cluster::new(options),
            rng,
            tick: 0,
            clients,
            down_until: BTreeMap::new(),
            partition_until: None,
            partitions: 0,
            next_read_id: 0,
            acked_by_key: BTreeMap::new(),
            reads_served: 0,
            transfers: 0,
            conf_proposed: 0,
        }
    }

    fn node_ids(&self) -> Vec<NodeId> {
        self.cluster.nodes.keys().copied().collect()
    }

    fn safety_phase(&mut self) -> Result<(), Failure> {
        for _ in 0..self.p.ticks {
            self.tick_once(true)?;
        }
        Ok(())
    }

    fn tick_once(&mut self, faults: bool) -> Result<(), Failure> {
        self.tick += 1;
        for id in self.node_ids() {
            self.cluster.tick(id);
        }
        // A crash lands on a random step of the tick, so it can hit a shell at any stage of
        // its Ready (before the write, mid-write, before persisted messages, after apply).
        let mut crash_at_step = None;
        if faults {
            if self.p.crash_per_mille > 0 && self.rng.random_range(0..1000) < self.p.crash_per_mille
            {
                crash_at_step = Some(self.rng.random_range(0..self.p.steps_per_tick));
            }
            self.inject_partitions();
            self.drive_membership();
            self.maybe_transfer();
        }
        self.restart_due()?;
        self.drive_clients(faults);
        for step in 0..self.p.steps_per_tick {
            if crash_at_step == Some(step) {
                self.crash_random_node()?;
            }
            self.cluster.step()?;
            self.settle_clients()?;
        }
        if self.cluster.net.len() > IN_FLIGHT_MSGS_MAX {
            return Err(Failure::Liveness(format!(
                "message storm: {} messages in flight at tick {} (bound {IN_FLIGHT_MSGS_MAX})",
                self.cluster.net.len(),
                self.tick
            )));
        }
        Ok(())
    }

    fn crash_random_node(&mut self) -> Result<(), Violation> {
        let up: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|id| self.cluster.nodes[id].is_up())
            .collect();
        if let Some(&victim) = up.choose(&mut self.rng) {
            self.cluster.crash(victim)?;
            let down = self.rng.random_range(1..=self.p.down_ticks_max);
            self.down_until.insert(victim, self.tick + down);
        }
        Ok(())
    }

    fn inject_partitions(&mut self) {
        if let Some(until) = self.partition_until
            && self.tick >= until
        {
            self.cluster.net.heal();
            self.partition_until = None;
        }
        if self.partition_until.is_none()
            && self.p.partition_per_mille > 0
            && self.rng.random_range(0..1000) < self.p.partition_per_mille
        {
            self.start_partition();
        }
    }

    fn start_partition(&mut self) {
        let mut all = self.node_ids();
        // Fisher-Yates with the run's RNG keeps the choice on the seed.
        for i in (1..all.len()).rev() {
            let j = self.rng.random_range(0..=i);
            all.swap(i, j);
        }
        let cut = self.rng.random_range(1..all.len());
        let (a, b) = all.split_at(cut);
        if self.rng.random_range(0..1000) < self.p.one_way_per_mille {
            // One-way: `a` cannot reach `b`, but hears from it (docs/failures.md C7).
            for &x in a {
                for &y in b {
                    self.cluster.net.blocked.insert((x, y));
                }
            }
        } else {
            self.cluster.net.partition(a, b);
        }
        self.partitions += 1;
        let ticks = self.rng.random_range(1..=self.p.partition_ticks_max);
        self.partition_until = Some(self.tick + ticks);
    }

    fn restart_due(&mut self) -> Result<(), Violation> {
        let due: Vec<NodeId> = self
            .down_until
            .iter()
            .filter(|(_, until)| **until <= self.tick)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.down_until.remove(&id);
            self.cluster.restart(id)?;
        }
        Ok(())
    }

    /// Cycles the configuration: add the node outside it as a learner, promote it, remove a
    /// random voter (possibly the leader, docs/failures.md C9), and so on.
    fn drive_membership(&mut self) {
        if !self.tick.is_multiple_of(self.p.conf_change_every_ticks) {
            return;
        }
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let status = self.cluster.status(leader.get()).expect("leader is up");
        let m = &status.membership;
        let change = if let Some(&learner) = m.learners.iter().next() {
            ConfChange::PromoteLearner(learner)
        } else if m.voters.len() as u64 > self.p.nodes {
            let voters: Vec<NodeId> = m.voters.iter().copied().collect();
            ConfChange::RemoveNode(*voters.choose(&mut self.rng).expect("voters"))
        } else if let Some(&outsider) = self.cluster.nodes.keys().find(|id| !m.contains(**id)) {
            ConfChange::AddLearner(outsider)
        } else {
            return;
        };
        if self
            .cluster
            .core(leader.get())
            .propose_conf_change(change)
            .is_ok()
        {
            self.conf_proposed += 1;
        }
    }

    fn maybe_transfer(&mut self) {
        if self.p.transfer_per_mille == 0
            || self.rng.random_range(0..1000) >= self.p.transfer_per_mille
        {
            return;
        }
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        let voters: Vec<NodeId> = self
            .cluster
            .status(leader.get())
            .expect("up")
            .membership
            .voters
            .iter()
            .copied()
            .filter(|v| *v != leader)
            .collect();
        if let Some(&to) = voters.choose(&mut self.rng)
            && self.cluster.core(leader.get()).transfer_leader(to).is_ok()
        {
            self.transfers += 1;
        }
    }

    fn drive_clients(&mut self, new_ops: bool) {
        let nodes = self.node_ids();
        for i in 0..self.clients.len() {
            let mut c = self.clients[i].clone();
            if c.op.is_none() {
                if !new_ops || self.rng.random_range(0..1000) >= self.p.client_per_mille {
                    continue;
                }
                let key = self.rng.random_range(0..4u8);
                c.op = Some(if self.rng.random_range(0..1000) < self.p.read_per_mille {
                    self.next_read_id += 1;
                    let required = self.acked_by_key.get(&key).cloned().unwrap_or_default();
                    Op::Read {
                        key,
                        id: self.next_read_id,
                        required,
                    }
                } else {
                    Op::Write(Command {
                        client: c.id,
                        seq: c.acked_seq + 1,
                        key,
                    })
                });
                c.accepted = false;
                c.retries = 0;
            } else if c.accepted && self.tick < c.deadline_tick {
                continue;
            } else if c.accepted {
                // Timed out: try another node (its proposal may still commit; the session
                // table makes the retry harmless).
                c.target = *nodes.choose(&mut self.rng).expect("nodes");
                c.accepted = false;
                c.retries += 1;
                if matches!(c.op, Some(Op::Read { .. })) && !new_ops {
                    c.op = None; // reads need not finish once the run is winding down
                    self.clients[i] = c;
                    continue;
                }
            }
            self.submit(&mut c, &nodes);
            self.clients[i] = c;
        }
    }

    fn submit(&mut self, c: &mut Client, nodes: &[NodeId]) {
        let Some(core) = self
            .cluster
            .nodes
            .get_mut(&c.target)
            .and_then(|n| n.core.as_mut())
        else {
            c.target = *nodes.choose(&mut self.rng).expect("nodes");
            return;
        };
        let result = match c.op.as_ref().expect("op") {
            Op::Write(cmd) => core.propose(cmd.encode()).map(|_| ()),
            Op::Read { key, id, .. } => {
                let mut ctx = vec![*key];
                ctx.extend_from_slice(&id.to_le_bytes());
                core.read_index(ctx)
            }
        };
        match result {
            Ok(()) => {
                c.accepted = true;
                c.deadline_tick = self.tick + self.p.client_timeout_ticks;
            }
            Err(ProposeError::NotLeader { leader: Some(l) })
                if self.cluster.nodes.contains_key(&l) =>
            {
                c.target = l
            }
            Err(_) => c.target = *nodes.choose(&mut self.rng).expect("nodes"),
        }
    }

    /// Acknowledges writes applied on the node the client talks to, and checks served reads.
    fn settle_clients(&mut self) -> Result<(), Violation> {
        for applied in self.cluster.take_applied() {
            let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| c.id == applied.command.client)
            else {
                continue;
            };
            let waiting = matches!(&c.op, Some(Op::Write(cmd)) if *cmd == applied.command);
            if waiting && c.target == applied.node {
                c.op = None;
                c.acked_seq = applied.command.seq;
                self.cluster.checker.on_ack(c.id, applied.command.seq);
                self.acked_by_key
                    .entry(applied.command.key)
                    .or_default()
                    .push((c.id, applied.command.seq));
            }
        }
        for read in self.cluster.take_reads() {
            if read.ctx.len() != 9 {
                continue;
            }
            let id = u64::from_le_bytes(read.ctx[1..9].try_into().expect("8 bytes"));
            let Some(c) = self
                .clients
                .iter_mut()
                .find(|c| matches!(&c.op, Some(Op::Read { id: r, .. }) if *r == id))
            else {
                continue;
            };
            if c.target != read.node {
                continue;
            }
            let Some(Op::Read { key, required, .. }) = c.op.take() else {
                unreachable!()
            };
            self.reads_served += 1;
            self.cluster
                .checker
                .check_read(read.node, key, &required, &read.value)?;
        }
        Ok(())
    }

    /// Heals the network, restarts every node, stops new work; then requires a leader, every
    /// pending write acknowledged, and every member applied to the leader's commit index.
    fn liveness_phase(&mut self) -> Result<(), Failure> {
        self.cluster.net.heal();
        self.cluster.net.faults.drop_per_mille = 0;
        self.partition_until = None;
        for id in self.node_ids() {
            self.down_until.remove(&id);
            self.cluster.restart(id)?;
        }
        let bound = self.p.liveness_ticks_max();
        for _ in 0..bound {
            self.tick_once(false)?;
            if self.converged() {
                return self.final_checks();
            }
        }
        let pending: Vec<String> = self
            .clients
            .iter()
            .filter(|c| c.op.is_some())
            .map(|c| format!("client {} ({:?}, {} retries)", c.id, c.op, c.retries))
            .collect();
        let leader = self.cluster.leader();
        let applied: Vec<String> = self
            .cluster
            .nodes
            .values()
            .filter_map(|n| n.core.as_ref().map(|c| c.status()))
            .map(|s| {
                format!(
                    "{}:{:?}/t{}/c{}/a{}",
                    s.id, s.soft.role, s.soft.term, s.hard.commit, s.applied
                )
            })
            .collect();
        let (membership, peers) = leader
            .and_then(|l| self.cluster.status(l.get()))
            .map(|s| {
                let peers: Vec<String> = s
                    .peers
                    .iter()
                    .map(|(id, p)| {
                        format!(
                            "{id}:m{}/n{}/{}",
                            p.match_index,
                            p.next_index,
                            if p.recent_active {
                                "active"
                            } else {
                                "inactive"
                            }
                        )
                    })
                    .collect();
                (
                    format!(
                        "voters {:?} learners {:?}",
                        s.membership.voters, s.membership.learners
                    ),
                    peers.join(" "),
                )
            })
            .unwrap_or_default();
        Err(Failure::Liveness(format!(
            "not converged within {bound} ticks after healing: leader {leader:?} ({membership}; peers {peers}), pending [{}], nodes [{}]",
            pending.join(", "),
            applied.join(" ")
        )))
    }

    fn converged(&self) -> bool {
        if self.clients.iter().any(|c| c.op.is_some()) {
            return false;
        }
        let Some(leader) = self.cluster.leader() else {
            return false;
        };
        let status = self.cluster.status(leader.get()).expect("up");
        let commit = status.hard.commit;
        // A just-elected leader may not yet know what an earlier leader committed (it learns
        // on committing an entry of its own term, §5.4.2); final checks against its commit
        // would then miss acknowledged commands (seed 753).
        let behind = self.cluster.nodes.values().any(|n| {
            n.core
                .as_ref()
                .is_some_and(|c| c.status().hard.commit > commit)
        });
        !behind
            && status.membership.members().all(|id| {
                let n = &self.cluster.nodes[&id];
                n.kv.applied >= commit
            })
            && self.cluster.nodes[&leader].kv.applied >= commit
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        let leader = self.cluster.leader().expect("converged has a leader");
        let status = self.cluster.status(leader.get()).expect("up");
        for id in status.membership.members() {
            self.cluster
                .checker
                .check_final(id, &self.cluster.nodes[&id].kv)?;
        }
        let reference = &self.cluster.nodes[&leader].kv;
        for id in status.membership.members() {
            let kv = &self.cluster.nodes[&id].kv;
            if kv.applied == reference.applied && kv.data != reference.data {
                return Err(Failure::Safety(Violation(format!(
                    "node {id} and leader {leader} applied index {} but hold different states",
                    kv.applied
                ))));
            }
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let s = &self.cluster.stats;
        let acked: u64 = self.clients.iter().map(|c| c.acked_seq).sum();
        format!(
            "ticks={} steps={} acked_writes={} reads_served={} applied_max={} leaders={} crashes={} crashes_mid_write={} restarts={} partitions={} snapshots_taken={} snapshots_installed={} conf_changes_applied={} conf_changes_proposed={} transfers={} writes={} msgs_sent={} msgs_dropped={} msgs_duplicated={} checks={}",
            self.tick,
            self.cluster.now,
            acked,
            self.reads_served,
            s.applied_max,
            self.cluster.checker.leaders().len(),
            s.crashes,
            s.crashes_mid_write,
            s.restarts,
            self.partitions,
            s.snapshots_taken,
            s.snapshots_installed,
            s.conf_changes,
            self.conf_proposed,
            self.transfers,
            s.writes,
            self.cluster.net.sent,
            self.cluster.net.dropped,
            self.cluster.net.duplicated,
            self.cluster.checker.checks,
        )
    }
}
