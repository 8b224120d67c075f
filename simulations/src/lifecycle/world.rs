//! The lifecycle world: controllers (Raft core + manifest + scheduler + liveness core, on
//! simulated disks and a simulated peer network), simulated agents and clients, and the
//! network between them — one tick ([`TICK_MS`] ms) per [`World::step`].
//!
//! Each controller mirrors the production shell (`src/actors/`) using the SAME pure cores:
//! - the Raft actor: ticks the core, persists each `Ready` (durable before
//!   `persisted_messages` go), applies committed entries to `mlcp::manifest::Manifest`,
//!   answers proposals after apply (an entry of another term at that index means "not
//!   committed"), serves ReadIndex reads, snapshots and compacts;
//! - leadership (`LeadershipChanged`): a new term builds a new `mlcp::leader::LeaderState`
//!   on the controller's monotonic clock (timers, liveness, held-back nodes: the production
//!   manifest actor's); losing it drops the state and answers parked long polls with a
//!   redirect (S11);
//! - the gateway + heartbeat monitor: each heartbeat goes through the production step
//!   `LeaderState::heartbeat` (off the log) and the shell does what it returns: commits a
//!   changed registration, or a `NodeLost` for a leaving agent, before answering; requeues
//!   ORPHANED attempts in the background; answers the interval and the attempts to abort.
//!   PollTask is a ReadIndex read, then a long poll; AckStarted / ReportResult / SubmitTask
//!   are proposals answered once applied;
//! - the scheduler actor: `LeaderState::round` (expiries first, then one `AssignTasks`
//!   batch), one command in flight at a time;
//! - the heartbeat monitor scan: `LeaderState::scan` gated on the Raft core's CheckQuorum
//!   verdict (the production `leader_can_commit`), proposing what it returns.
//!
//! Every proposal carries the controller's wall clock (`now_ms`, which faults may step) and
//! the term it leads in.

use std::collections::{BTreeMap, BTreeSet};

use mlcp::leader::{HeartbeatStep, LeaderState, RoundLimits};
use mlcp::liveness::{HeartbeatIn, LivenessConfig};
use mlcp::manifest::command::{
    self, AckStarted, CommandOutcome, Kind, RegisterNode, ReportResult, SubmitTask,
};
use mlcp::manifest::{Manifest, ManifestError, TaskId};
use mlcp::proto::{RetryPolicy, RunningAttempt, TaskStatus};
use mlcp::raft::{Config, EntryKind, LogIndex, NodeId, RawNode, Role, Snapshot, Term};
use prost::Message as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::agents::{Agent, AgentConfig, AgentEvents, Client};
use super::checker::{Decision, LifecycleChecker};
use crate::checker::{Checker, FNV_OFFSET, Violation, fnv};
use crate::disk::{SimStorage, Write};
use crate::net::{Faults, Network};

/// Simulated milliseconds per tick.
pub const TICK_MS: u64 = 10;
/// The true wall clock at tick 0 (unix ms).
pub const T0_MS: i64 = 1_700_000_000_000;

/// Who sends or receives an agent-facing call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// A controller by Raft id.
    Controller(u64),
    /// An agent by index.
    Agent(usize),
    /// A client by index.
    Client(usize),
}

/// The body of an agent- or client-facing call (the gRPC API, reduced to what matters).
#[derive(Clone, Debug)]
pub enum Body {
    /// NodeService.Heartbeat.
    Heartbeat {
        /// Registration fields.
        registration: RegisterNode,
        /// Attempts the agent holds.
        running: Vec<RunningAttempt>,
        /// The agent's wall clock (shown, never trusted).
        agent_time_ms: i64,
        /// The agent is stopping cleanly: its last heartbeat.
        leaving: bool,
    },
    /// Heartbeat answer.
    HeartbeatReply {
        /// Interval to use, in ms.
        interval_ms: u64,
        /// Attempts to abort.
        abort: Vec<RunningAttempt>,
    },
    /// NodeService.PollTask (long poll).
    Poll {
        /// The polling node.
        node_id: String,
        /// How long to wait for work, in ticks.
        wait_ticks: u64,
    },
    /// Poll answer.
    PollReply {
        /// `(task_id, attempt)` assigned to the node.
        assignments: Vec<(String, u32)>,
        /// Attempts to abort.
        abort: Vec<RunningAttempt>,
    },
    /// NodeService.AckTaskStarted.
    Ack {
        /// Task.
        task_id: String,
        /// Attempt.
        attempt: u32,
        /// Node.
        node_id: String,
    },
    /// NodeService.ReportTaskResult.
    Report(ReportResult),
    /// TaskService.SubmitTask.
    Submit {
        /// Idempotency key.
        key: String,
        /// Attempts allowed.
        max_attempts: u32,
        /// Per-attempt run timeout, ms (0: none).
        run_timeout_ms: u64,
    },
    /// The committed outcome of a proposal (ack, report, submit).
    Outcome(Result<CommandOutcome, ManifestError>),
    /// Not the leader (redirect to `hint`).
    NotLeader {
        /// The leader this controller knows of.
        hint: Option<u64>,
    },
}

/// One call or answer on the agent network.
#[derive(Clone, Debug)]
pub struct Rpc {
    /// Sender.
    pub from: Endpoint,
    /// Receiver.
    pub to: Endpoint,
    /// Request id (the answer repeats it).
    pub req: u64,
    /// Payload.
    pub body: Body,
}

/// Switches that turn off one protection of the simulated shell, to prove a scenario test
/// depends on it (see `simulations/LIFECYCLE_CHECKS.md`). All false in real runs.
#[derive(Clone, Debug, Default)]
pub struct Weakened {
    /// Do not answer parked long polls with a redirect when leadership moves (S11).
    pub keep_polls_on_step_down: bool,
    /// Serve agents' reads from any controller's local state without a ReadIndex (S6): polls
    /// are answered from the local manifest, and a follower answers heartbeats itself (so a
    /// restarting agent believes it registered and polls that follower).
    pub poll_without_read_index: bool,
    /// Pass `leaving: false` to the leader's heartbeat step whatever the agent said, as a
    /// shell that drops the flag would (a cleanly stopped agent's node then waits out the
    /// stale timeout).
    pub drop_leaving_flag: bool,
}

/// Tunables of the world.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// Raft ids of the controllers (all voters).
    pub controllers: Vec<u64>,
    /// Number of agents.
    pub agents: usize,
    /// Agent configuration.
    pub agent: AgentConfig,
    /// Liveness core configuration (all in ms).
    pub liveness: LivenessConfig,
    /// Ticks between heartbeat-monitor scans.
    pub scan_interval_ticks: u64,
    /// Ticks between scheduler rounds.
    pub sched_interval_ticks: u64,
    /// Grace after a run timeout before the leader requeues, in ms.
    pub report_grace_ms: u64,
    /// Peer network faults.
    pub faults: Faults,
    /// Agent network: fewest and most ticks of delay.
    pub rpc_delay_ticks: (u64, u64),
    /// Agent network: chance in 1000 a call or answer is lost.
    pub rpc_drop_per_mille: u32,
    /// Snapshot every this many applied entries.
    pub snapshot_interval_entries: u64,
    /// Protections turned off (tests only).
    pub weakened: Weakened,
    /// Raft CheckQuorum (a leader that hears from no quorum steps down).
    pub check_quorum: bool,
    /// Seed.
    pub seed: u64,
}

impl WorldOptions {
    /// A fault-free world of 3 controllers and `agents` agents: the scenario tests' start.
    pub fn new(agents: usize) -> WorldOptions {
        WorldOptions {
            controllers: vec![1, 2, 3],
            agents,
            agent: AgentConfig::default(),
            liveness: LivenessConfig {
                stale_after_ms: 1_000,
                leader_grace_ms: 1_000,
                heartbeat_interval_min_ms: 200,
                heartbeat_interval_max_ms: 2_000,
                cluster_heartbeats_per_sec_max: 5_000,
                stale_intervals_min: 3,
                mass_failure_fraction: 0.55,
                mass_failure_nodes_min: 3,
                brake_hold_ms: 5_000,
                recovery_declarations_per_sec: 4,
                requeue_batch_max: 64,
                orphan_after_ms: 100 * TICK_MS,
            },
            scan_interval_ticks: 5,
            sched_interval_ticks: 3,
            report_grace_ms: 500,
            faults: Faults {
                delay_steps_min: 1,
                delay_steps_max: 1,
                ..Faults::none()
            },
            rpc_delay_ticks: (1, 1),
            rpc_drop_per_mille: 0,
            snapshot_interval_entries: 64,
            weakened: Weakened::default(),
            check_quorum: true,
            seed: 1,
        }
    }
}

#[derive(Clone, Debug)]
enum Waiter {
    /// Answer `to` with the outcome.
    Reply { to: Endpoint, req: u64 },
    /// Answer a heartbeat once its registration committed.
    Heartbeat {
        to: Endpoint,
        req: u64,
        interval_ms: u64,
        abort: Vec<RunningAttempt>,
    },
}

/// One controller.
pub struct Controller {
    /// Raft id.
    pub id: NodeId,
    /// Its disk (survives crashes).
    pub disk: SimStorage,
    /// The running core; `None` while crashed.
    pub core: Option<RawNode<SimStorage>>,
    /// Its copy of the manifest.
    pub manifest: Manifest,
    /// Applied index.
    pub applied: LogIndex,
    /// The leader-only state (timers, liveness, held-back nodes) while it leads.
    pub leader: Option<LeaderState>,
    /// The term it leads in, as its actors believe.
    pub leading: Option<Term>,
    /// Ticks since (re)start: its monotonic clock.
    pub mono_ticks: u64,
    /// Offset of its wall clock from true time, in ms (clock steps).
    pub wall_offset_ms: i64,
    waiters: BTreeMap<LogIndex, (Term, Waiter)>,
    reads: BTreeMap<u64, Rpc>,
    read_states: Vec<(u64, LogIndex)>,
    parked: Vec<(u64, Rpc)>,
    sched_busy: Option<LogIndex>,
    scan_busy: Option<LogIndex>,
    next_read: u64,
    /// Restarts so far.
    pub restarts: u64,
    /// Last tick it could reach a quorum of voters (ground truth).
    pub quorum_tick: u64,
}

impl Controller {
    /// Monotonic clock, ms.
    pub fn mono_ms(&self) -> u64 {
        self.mono_ticks * TICK_MS
    }

    /// Whether it is running.
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    fn hint(&self) -> Option<u64> {
        self.core
            .as_ref()
            .and_then(|c| c.status().soft.leader)
            .map(|l| l.get())
    }
}

/// Counters reported at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct WorldStats {
    /// Controller crashes.
    pub controller_crashes: u64,
    /// Agent crashes.
    pub agent_crashes: u64,
    /// Agent pauses (zombies).
    pub agent_pauses: u64,
    /// Agent network losses.
    pub agent_net_losses: u64,
    /// Clock steps (agents and controllers).
    pub clock_steps: u64,
    /// Peer partitions.
    pub partitions: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Agent calls sent.
    pub rpcs: u64,
    /// Times the mass-failure brake held a scan.
    pub brake_scans: u64,
    /// Long polls answered with a redirect on leadership change.
    pub polls_redirected: u64,
    /// Assignments handed to an agent that the committed manifest no longer assigns to it
    /// (a read from a stale state, S6).
    pub stale_assignments_served: u64,
    /// Clean agent stops (SIGTERM: finish, then a last heartbeat marked leaving).
    pub agent_stops: u64,
    /// Nodes declared UNHEALTHY on their agent's leaving heartbeat.
    pub leaving_declared: u64,
}

/// The whole simulated world.
pub struct World {
    /// Options.
    pub options: WorldOptions,
    /// Controllers by id.
    pub controllers: BTreeMap<NodeId, Controller>,
    /// Agents by index.
    pub agents: Vec<Agent>,
    /// Clients by index.
    pub clients: Vec<Client>,
    /// Peer network.
    pub net: Network,
    /// Agent network in flight: (deliver at, seq, call).
    rpcs: Vec<(u64, u64, Rpc)>,
    rpc_seq: u64,
    /// Agents whose network is cut from given controllers (agent idx, controller id).
    pub agent_blocked: BTreeSet<(usize, u64)>,
    /// Raft invariants.
    pub raft_checker: Checker,
    /// Lifecycle invariants.
    pub checker: LifecycleChecker,
    /// Current tick.
    pub now: u64,
    /// Counters.
    pub stats: WorldStats,
    rng: ChaCha8Rng,
    trace: u64,
}

impl World {
    /// Builds and starts every controller and agent (no clients).
    pub fn new(options: WorldOptions) -> World {
        let ids: Vec<u64> = options.controllers.clone();
        let mut w = World {
            controllers: BTreeMap::new(),
            agents: (0..options.agents)
                .map(|i| Agent::new(i, options.agent.clone(), ids.clone()))
                .collect(),
            clients: Vec::new(),
            net: Network::new(options.faults.clone()),
            rpcs: Vec::new(),
            rpc_seq: 0,
            agent_blocked: BTreeSet::new(),
            raft_checker: Checker::new(),
            checker: LifecycleChecker::new(),
            now: 0,
            stats: WorldStats::default(),
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            trace: FNV_OFFSET,
            options,
        };
        for &id in &ids {
            let c = Controller {
                id: NodeId(id),
                disk: SimStorage::default(),
                core: None,
                manifest: Manifest::new(),
                applied: LogIndex(0),
                leader: None,
                leading: None,
                mono_ticks: 0,
                wall_offset_ms: 0,
                waiters: BTreeMap::new(),
                reads: BTreeMap::new(),
                read_states: Vec::new(),
                parked: Vec::new(),
                sched_busy: None,
                scan_busy: None,
                next_read: 1,
                restarts: 0,
                quorum_tick: 0,
            };
            w.controllers.insert(NodeId(id), c);
            w.start(NodeId(id));
        }
        w
    }

    /// Adds clients, each submitting `tasks` tasks.
    pub fn add_clients(&mut self, clients: usize, tasks: u32) {
        for i in 0..clients {
            let idx = self.clients.len();
            let _ = i;
            self.clients
                .push(Client::new(idx, tasks, self.options.controllers.clone()));
        }
    }

    fn start(&mut self, id: NodeId) {
        let voters: Vec<NodeId> = self
            .options
            .controllers
            .iter()
            .map(|&v| NodeId(v))
            .collect();
        let mut config = Config::new(id, voters.clone());
        config.initial_voters = voters;
        config.check_quorum = self.options.check_quorum;
        let c = self.controllers.get_mut(&id).expect("known");
        config.seed = self
            .options
            .seed
            .wrapping_mul(31)
            .wrapping_add(id.get() * 1_000_003 + c.restarts);
        let core = RawNode::new(config, c.disk.clone())
            .unwrap_or_else(|e| panic!("controller {id} failed to start from its disk: {e}"));
        let snap = c.disk.durable_snapshot();
        c.manifest = if snap.meta.index.get() == 0 {
            Manifest::new()
        } else {
            Manifest::restore(&snap.data).expect("own snapshot restores")
        };
        c.applied = snap.meta.index;
        c.core = Some(core);
        c.leader = None;
        c.leading = None;
        c.mono_ticks = 0;
        c.waiters.clear();
        c.reads.clear();
        c.read_states.clear();
        c.parked.clear();
        c.sched_busy = None;
        c.scan_busy = None;
    }

    fn trace(&mut self, words: &[u64]) {
        for w in words {
            self.trace = fnv(self.trace, &w.to_le_bytes());
        }
    }

    /// Hash of everything delivered and applied so far (equal for equal seeds).
    pub fn trace_hash(&self) -> u64 {
        self.trace
    }

    /// The world's RNG (the seed's single stream).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// The running controller leading in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.controllers
            .values()
            .filter_map(|c| c.core.as_ref().map(|k| k.status()))
            .filter(|s| s.soft.role == Role::Leader)
            .max_by_key(|s| s.soft.term)
            .map(|s| s.id.get())
    }

    /// The controller `id`.
    pub fn controller(&self, id: u64) -> &Controller {
        &self.controllers[&NodeId(id)]
    }

    /// The agent named `a{idx}`.
    pub fn agent(&mut self, idx: usize) -> &mut Agent {
        &mut self.agents[idx]
    }

    /// Crashes controller `id` (its volatile state, liveness timers included, is gone).
    pub fn crash_controller(&mut self, id: u64) -> Result<(), Violation> {
        let id = NodeId(id);
        self.trace(&[2, self.now, id.get()]);
        let c = self.controllers.get_mut(&id).expect("known");
        if c.core.is_none() {
            return Ok(());
        }
        c.core = None;
        c.leading = None;
        c.disk
            .crash(false)
            .map_err(|e| Violation(format!("controller {id}: {}", e.0)))?;
        self.stats.controller_crashes += 1;
        Ok(())
    }

    /// Restarts controller `id` from its disk.
    pub fn restart_controller(&mut self, id: u64) -> Result<(), Violation> {
        let id = NodeId(id);
        self.trace(&[3, self.now, id.get()]);
        let c = self.controllers.get_mut(&id).expect("known");
        if c.core.is_some() {
            return Ok(());
        }
        c.restarts += 1;
        {
            let d = c.disk.durable();
            self.raft_checker.on_restart(id, &d)?;
        }
        self.start(id);
        Ok(())
    }

    /// Cuts controller `id` off from every other controller (agents still reach it).
    pub fn isolate_controller(&mut self, id: u64) {
        let others: Vec<NodeId> = self
            .options
            .controllers
            .iter()
            .filter(|&&c| c != id)
            .map(|&c| NodeId(c))
            .collect();
        self.net.partition(&[NodeId(id)], &others);
        self.stats.partitions += 1;
    }

    /// Heals every peer partition and agent link.
    pub fn heal(&mut self) {
        self.net.heal();
        self.agent_blocked.clear();
        let now = self.now;
        for a in &mut self.agents {
            a.net_down_until = a.net_down_until.min(now);
        }
    }

    /// Cuts agent `idx` off from controller `ctrl` until healed.
    pub fn block_agent(&mut self, idx: usize, ctrl: u64) {
        self.agent_blocked.insert((idx, ctrl));
    }

    /// Asks the leader to hand leadership to `to` (TimeoutNow).
    pub fn transfer_leader(&mut self, to: u64) {
        if let Some(l) = self.leader()
            && let Some(core) = self
                .controllers
                .get_mut(&NodeId(l))
                .and_then(|c| c.core.as_mut())
        {
            let _ = core.transfer_leader(NodeId(to));
        }
    }

    fn send_rpc(&mut self, rpc: Rpc) {
        self.stats.rpcs += 1;
        let (lo, hi) = self.options.rpc_delay_ticks;
        let drop = self.options.rpc_drop_per_mille > 0
            && self.rng.random_range(0..1000) < self.options.rpc_drop_per_mille;
        if drop {
            return;
        }
        let at = self.now + self.rng.random_range(lo..=hi).max(1);
        self.rpcs.push((at, self.rpc_seq, rpc));
        self.rpc_seq += 1;
    }

    fn link_down(&self, a: Endpoint, b: Endpoint) -> bool {
        let agent_ctrl = match (a, b) {
            (Endpoint::Agent(i), Endpoint::Controller(c))
            | (Endpoint::Controller(c), Endpoint::Agent(i)) => Some((i, c)),
            _ => None,
        };
        match agent_ctrl {
            Some((i, c)) => {
                self.agent_blocked.contains(&(i, c)) || self.agents[i].net_down_until > self.now
            }
            None => false,
        }
    }

    fn deliver_rpcs(&mut self) -> Result<(), Violation> {
        let now = self.now;
        let mut due: Vec<(u64, u64, Rpc)> = Vec::new();
        self.rpcs.retain(|r| {
            if r.0 <= now {
                due.push(r.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|r| (r.0, r.1));
        for (_, _, rpc) in due {
            if self.link_down(rpc.from, rpc.to) {
                continue;
            }
            let to_word = match rpc.to {
                Endpoint::Controller(c) => c,
                Endpoint::Agent(i) => 100 + i as u64,
                Endpoint::Client(i) => 1000 + i as u64,
            };
            self.trace(&[5, now, to_word, rpc.req]);
            match rpc.to {
                Endpoint::Controller(c) => self.handle_call(NodeId(c), rpc)?,
                Endpoint::Agent(i) => self.agents[i].receive(rpc),
                Endpoint::Client(i) => self.clients[i].receive(rpc),
            }
        }
        Ok(())
    }

    fn reply(&mut self, call: &Rpc, body: Body) {
        let rpc = Rpc {
            from: call.to,
            to: call.from,
            req: call.req,
            body,
        };
        self.send_rpc(rpc);
    }

    fn wall_ms(&self, id: NodeId) -> i64 {
        T0_MS + (self.now * TICK_MS) as i64 + self.controllers[&id].wall_offset_ms
    }

    /// Proposes `kind` on controller `id` in the term it leads. `None` if not possible.
    fn propose(&mut self, id: NodeId, kind: Kind) -> Option<(LogIndex, Term)> {
        let wall = self.wall_ms(id);
        let c = self.controllers.get_mut(&id)?;
        let term = c.leading?;
        let core = c.core.as_mut()?;
        let cmd = command::command(wall, term.get(), kind);
        let index = core.propose(cmd.encode_to_vec()).ok()?;
        Some((index, core.status().soft.term))
    }

    fn handle_call(&mut self, id: NodeId, rpc: Rpc) -> Result<(), Violation> {
        let Some(c) = self.controllers.get(&id) else {
            return Ok(());
        };
        if !c.is_up() {
            return Ok(());
        }
        let weakened = self.options.weakened.poll_without_read_index;
        if weakened
            && c.leading.is_none()
            && let Body::Heartbeat {
                registration,
                running,
                ..
            } = &rpc.body
        {
            let body = Body::HeartbeatReply {
                interval_ms: self.options.liveness.heartbeat_interval_min_ms,
                abort: c.manifest.attempts_to_abort(&registration.node_id, running),
            };
            self.reply(&rpc, body);
            return Ok(());
        }
        let local_poll = weakened && matches!(rpc.body, Body::Poll { .. });
        if c.leading.is_none() && !local_poll {
            let hint = c.hint();
            self.reply(&rpc, Body::NotLeader { hint });
            return Ok(());
        }
        match rpc.body.clone() {
            Body::Heartbeat {
                registration,
                running,
                agent_time_ms,
                leaving,
            } => self.on_heartbeat(id, rpc, registration, running, agent_time_ms, leaving)?,
            Body::Poll { node_id, .. } => {
                if self.options.weakened.poll_without_read_index {
                    let c = self.controllers.get_mut(&id).expect("known");
                    let r = c.next_read;
                    c.next_read += 1;
                    c.reads.insert(r, rpc);
                    let applied = c.applied;
                    c.read_states.push((r, applied));
                    let _ = node_id;
                    return Ok(());
                }
                let c = self.controllers.get_mut(&id).expect("known");
                let r = c.next_read;
                c.next_read += 1;
                let core = c.core.as_mut().expect("up");
                if core.read_index(r.to_le_bytes().to_vec()).is_err() {
                    let hint = c.hint();
                    self.reply(&rpc, Body::NotLeader { hint });
                } else {
                    c.reads.insert(r, rpc);
                }
            }
            Body::Ack {
                task_id,
                attempt,
                node_id,
            } => {
                let kind = Kind::AckStarted(AckStarted {
                    task_id,
                    attempt,
                    node_id,
                });
                self.propose_for(id, rpc, kind);
            }
            Body::Report(r) => self.propose_for(id, rpc, Kind::ReportResult(r)),
            Body::Submit {
                key,
                max_attempts,
                run_timeout_ms,
            } => {
                let wall = self.wall_ms(id);
                let random: [u8; 10] = self.rng.random();
                let task_id = TaskId::new_v7(wall as u64, random);
                let kind = Kind::SubmitTask(SubmitTask {
                    task_id: task_id.to_string(),
                    task_type: "sleep".into(),
                    task_data: "{\"ms\":100}".into(),
                    max_attempts,
                    idempotency_key: key,
                    retry_policy: Some(RetryPolicy {
                        initial_backoff_ms: 100,
                        max_backoff_ms: 800,
                        backoff_multiplier: 2.0,
                        jitter: 0.2,
                    }),
                    run_timeout_ms,
                    ..Default::default()
                });
                self.propose_for(id, rpc, kind);
            }
            _ => {}
        }
        Ok(())
    }

    fn propose_for(&mut self, id: NodeId, rpc: Rpc, kind: Kind) {
        match self.propose(id, kind) {
            Some((index, term)) => {
                let w = Waiter::Reply {
                    to: rpc.from,
                    req: rpc.req,
                };
                self.controllers
                    .get_mut(&id)
                    .expect("known")
                    .waiters
                    .insert(index, (term, w));
            }
            None => {
                let hint = self.controllers[&id].hint();
                self.reply(&rpc, Body::NotLeader { hint });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_heartbeat(
        &mut self,
        id: NodeId,
        rpc: Rpc,
        registration: RegisterNode,
        running: Vec<RunningAttempt>,
        agent_time_ms: i64,
        leaving: bool,
    ) -> Result<(), Violation> {
        let wall = self.wall_ms(id);
        let c = self.controllers.get_mut(&id).expect("known");
        let now = c.mono_ms();
        let hb = HeartbeatIn {
            registration: &registration,
            running: &running,
            cpu_usage: 0.0,
            memory_usage: 0.0,
            agent_time_ms,
            leaving: leaving && !self.options.weakened.drop_leaving_flag,
        };
        let Some(leader) = c.leader.as_mut() else {
            let hint = c.hint();
            self.reply(&rpc, Body::NotLeader { hint });
            return Ok(());
        };
        // The production monitor's step, from the same pure core; the shell proposes what it
        // returns, as `HeartbeatMonitorActor` does.
        let HeartbeatStep {
            interval_ms,
            abort,
            commit_before_reply,
            propose_in_background,
            released: _,
        } = leader.heartbeat(&c.manifest, hb, now, wall);
        if let (Some(Kind::NodeLost(lost)), Some(term)) = (&commit_before_reply, c.leading) {
            // Declared on the agent's own word (it is leaving), not by the liveness scan.
            let d = Decision {
                controller: id.get(),
                quorum_ok: true,
            };
            self.checker.note_decision(term.get(), &lost.node_id, d);
            self.stats.leaving_declared += 1;
        }
        if let Some(kind) = propose_in_background {
            let _ = self.propose(id, kind);
        }
        match commit_before_reply {
            Some(kind) => match self.propose(id, kind) {
                Some((index, term)) => {
                    let w = Waiter::Heartbeat {
                        to: rpc.from,
                        req: rpc.req,
                        interval_ms,
                        abort,
                    };
                    self.controllers
                        .get_mut(&id)
                        .expect("known")
                        .waiters
                        .insert(index, (term, w));
                }
                None => {
                    let hint = self.controllers[&id].hint();
                    self.reply(&rpc, Body::NotLeader { hint });
                }
            },
            None => self.reply(&rpc, Body::HeartbeatReply { interval_ms, abort }),
        }
        Ok(())
    }

    /// Runs controller `id`'s shell until it has nothing left to do.
    fn flush(&mut self, id: NodeId) -> Result<(), Violation> {
        for _ in 0..100 {
            let c = self.controllers.get_mut(&id).expect("known");
            let Some(core) = c.core.as_mut() else {
                return Ok(());
            };
            if !core.has_ready() {
                return Ok(());
            }
            let mut rd = core.ready();
            for m in std::mem::take(&mut rd.messages) {
                self.net.send(m, self.now, &mut self.rng);
            }
            let c = self.controllers.get_mut(&id).expect("known");
            if rd.must_sync() {
                c.disk.begin_write(Write {
                    hard_state: rd.hard_state,
                    snapshot: rd.snapshot.clone(),
                    entries: rd.entries.clone(),
                });
                let write = c
                    .disk
                    .complete_write()
                    .map_err(|e| Violation(format!("controller {id}: {}", e.0)))?;
                let d = c.disk.durable();
                if let Err(v) = self.raft_checker.on_durable_write(id, &write, &d) {
                    let st = c.core.as_ref().expect("up").status();
                    // A deposed leader that has not yet noticed (CheckQuorum has up to an
                    // election timeout) appends its own proposals at indexes the new leader
                    // already committed: legal Raft, never committed. `crate::checker` flags
                    // it anyway (reported in lifesim-findings.md); only that case is let by.
                    let stale_leader_append = v.0.starts_with("committed entry overwritten")
                        && st.soft.role == Role::Leader
                        && write.entries.iter().all(|e| e.term == st.soft.term);
                    if !stale_leader_append {
                        return Err(Violation(format!(
                            "{} (controller {id} is {:?} in term {}, leader {:?})",
                            v.0, st.soft.role, st.soft.term, st.soft.leader
                        )));
                    }
                }
            }
            for m in std::mem::take(&mut rd.persisted_messages) {
                self.net.send(m, self.now, &mut self.rng);
            }
            if let Some(snap) = rd.snapshot.take() {
                let c = self.controllers.get_mut(&id).expect("known");
                self.raft_checker
                    .on_snapshot_restore(id, &snap.meta, c.applied)?;
                c.manifest = Manifest::restore(&snap.data)
                    .map_err(|e| Violation(format!("controller {id}: bad snapshot: {e}")))?;
                c.applied = snap.meta.index;
                self.stats.snapshots_installed += 1;
            }
            for entry in std::mem::take(&mut rd.committed_entries) {
                self.raft_checker.on_apply(id, &entry)?;
                self.checker.on_apply(&entry)?;
                self.trace(&[4, id.get(), entry.index.get(), entry.term.get()]);
                let c = self.controllers.get_mut(&id).expect("known");
                if entry.index <= c.applied {
                    continue;
                }
                let response = match entry.kind {
                    EntryKind::Normal if !entry.data.is_empty() => c.manifest.apply(&entry.data),
                    _ => Vec::new(),
                };
                c.applied = entry.index;
                if let Some((term, w)) = c.waiters.remove(&entry.index) {
                    let body_ok = term == entry.term;
                    self.answer(id, w, body_ok, &response);
                }
            }
            let c = self.controllers.get_mut(&id).expect("known");
            for rs in std::mem::take(&mut rd.read_states) {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rs.ctx[..8]);
                c.read_states.push((u64::from_le_bytes(b), rs.index));
            }
            let number = rd.number;
            c.core.as_mut().expect("up").advance(number);
            self.maybe_snapshot(id);
        }
        panic!("controller {id} never stopped producing Ready");
    }

    fn answer(&mut self, id: NodeId, w: Waiter, committed: bool, response: &[u8]) {
        let from = Endpoint::Controller(id.get());
        let hint = self.controllers[&id].hint();
        let (to, req, body) = match w {
            Waiter::Reply { to, req } => {
                let body = if committed {
                    Body::Outcome(command::decode_result(response))
                } else {
                    Body::NotLeader { hint }
                };
                (to, req, body)
            }
            Waiter::Heartbeat {
                to,
                req,
                interval_ms,
                abort,
            } => {
                let body = if committed {
                    Body::HeartbeatReply { interval_ms, abort }
                } else {
                    Body::NotLeader { hint }
                };
                (to, req, body)
            }
        };
        self.send_rpc(Rpc {
            from,
            to,
            req,
            body,
        });
    }

    fn maybe_snapshot(&mut self, id: NodeId) {
        let interval = self.options.snapshot_interval_entries;
        let c = self.controllers.get_mut(&id).expect("known");
        let d = c.disk.durable();
        let (snap_index, last) = (d.snapshot.meta.index, d.last_index());
        if c.applied.get() < snap_index.get() + interval || c.applied > last {
            return;
        }
        let core = c.core.as_mut().expect("up");
        let Ok(meta) = core.snapshot_meta(c.applied) else {
            return;
        };
        c.disk.install_local_snapshot(Snapshot {
            meta,
            data: c.manifest.snapshot(),
        });
        core.on_snapshot_taken(c.applied);
        self.stats.snapshots += 1;
    }

    /// Leadership as the actors see it (`LeadershipChanged`).
    fn track_leadership(&mut self, id: NodeId) {
        let c = self.controllers.get_mut(&id).expect("known");
        let Some(core) = c.core.as_ref() else { return };
        let st = core.status();
        let is_leader = st.soft.role == Role::Leader;
        match (is_leader, c.leading) {
            (true, Some(t)) if t == st.soft.term => {}
            (true, _) => {
                let now = c.mono_ms();
                let config = self.options.liveness.clone();
                c.leader = Some(LeaderState::new(st.soft.term, now, config));
                c.leading = Some(st.soft.term);
                c.sched_busy = None;
                c.scan_busy = None;
            }
            (false, Some(_)) => {
                c.leading = None;
                c.leader = None;
                c.sched_busy = None;
                c.scan_busy = None;
                let hint = st.soft.leader.map(|l| l.get());
                let mut redirect: Vec<Rpc> = c.reads.values().cloned().collect();
                c.reads.clear();
                c.read_states.clear();
                if !self.options.weakened.keep_polls_on_step_down {
                    redirect.extend(c.parked.drain(..).map(|(_, r)| r));
                }
                for r in redirect {
                    self.stats.polls_redirected += 1;
                    self.reply(&r, Body::NotLeader { hint });
                }
            }
            (false, None) => {}
        }
    }

    /// Serves reads whose index is applied and answers parked polls that have work or timed
    /// out.
    fn serve_polls(&mut self, id: NodeId) {
        let now = self.now;
        let c = self.controllers.get_mut(&id).expect("known");
        let applied = c.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut c.read_states)
            .into_iter()
            .partition(|(_, index)| *index <= applied);
        c.read_states = waiting;
        for (r, _) in ready {
            if let Some(rpc) = c.reads.remove(&r) {
                let wait = match &rpc.body {
                    Body::Poll { wait_ticks, .. } => *wait_ticks,
                    _ => 0,
                };
                c.parked.push((now + wait, rpc));
            }
        }
        let parked = std::mem::take(&mut c.parked);
        let mut answers = Vec::new();
        for (deadline, rpc) in parked {
            let Body::Poll { node_id, .. } = &rpc.body else {
                continue;
            };
            let mut assignments = Vec::new();
            let mut abort = Vec::new();
            for t in c.manifest.active_tasks_on(node_id) {
                if t.cancel_requested {
                    abort.push(RunningAttempt {
                        task_id: t.task_id.clone(),
                        attempt: t.attempt,
                    });
                } else if t.status == TaskStatus::Assigned as i32 {
                    assignments.push((t.task_id.clone(), t.attempt));
                }
            }
            if assignments.is_empty() && abort.is_empty() && now < deadline {
                c.parked.push((deadline, rpc));
            } else {
                answers.push((rpc, Body::PollReply { assignments, abort }));
            }
        }
        for (rpc, body) in answers {
            if let (Body::PollReply { assignments, .. }, Body::Poll { node_id, .. }) =
                (&body, &rpc.body)
            {
                for (task, attempt) in assignments {
                    let live = self.checker.reference.lookup_task(task).is_ok_and(|t| {
                        t.attempt == *attempt
                            && t.assigned_node_id == *node_id
                            && t.status == TaskStatus::Assigned as i32
                    });
                    if !live {
                        self.stats.stale_assignments_served += 1;
                    }
                }
            }
            self.reply(&rpc, body);
        }
    }

    fn schedule(&mut self, id: NodeId) {
        let every = self.options.sched_interval_ticks.max(1);
        let limits = RoundLimits {
            report_grace_ms: self.options.report_grace_ms,
            ..RoundLimits::default()
        };
        let c = self.controllers.get_mut(&id).expect("known");
        if !c.mono_ticks.is_multiple_of(every) || c.sched_busy.is_some_and(|i| c.applied < i) {
            return;
        }
        c.sched_busy = None;
        let now = c.mono_ms();
        let Some(leader) = c.leader.as_mut() else {
            return;
        };
        // The production scheduler's round: expiries first, then one placement batch.
        let Some(kind) = leader.round(&c.manifest, now, &limits, true) else {
            return;
        };
        if let Some((i, _)) = self.propose(id, kind) {
            self.controllers.get_mut(&id).expect("known").sched_busy = Some(i);
        }
    }

    fn scan(&mut self, id: NodeId) {
        let every = self.options.scan_interval_ticks.max(1);
        let window = Config::new(id, [id]).election_timeout_ticks_max;
        let now_tick = self.now;
        let c = self.controllers.get_mut(&id).expect("known");
        let Some(term) = c.leading else { return };
        if !c.mono_ticks.is_multiple_of(every) || c.scan_busy.is_some_and(|i| c.applied < i) {
            return;
        }
        c.scan_busy = None;
        let can_commit = c
            .core
            .as_ref()
            .expect("up")
            .status()
            .leader_has_active_quorum();
        let now = c.mono_ms();
        let Some(leader) = c.leader.as_mut() else {
            return;
        };
        let step = leader.scan(&c.manifest, now, can_commit);
        let quorum_ok = now_tick.saturating_sub(c.quorum_tick) <= window;
        if step.brake_engaged {
            self.stats.brake_scans += 1;
        }
        for node_id in step.lost_nodes() {
            self.checker.note_decision(
                term.get(),
                node_id,
                Decision {
                    controller: id.get(),
                    quorum_ok,
                },
            );
        }
        let mut last = None;
        for kind in step.commands {
            last = self.propose(id, kind).map(|p| p.0).or(last);
        }
        self.controllers.get_mut(&id).expect("known").scan_busy = last;
    }

    fn update_quorum_truth(&mut self) {
        let ids: Vec<NodeId> = self.controllers.keys().copied().collect();
        let quorum = ids.len() / 2 + 1;
        for &a in &ids {
            if !self.controllers[&a].is_up() {
                continue;
            }
            let reach = ids
                .iter()
                .filter(|&&b| {
                    a == b
                        || (self.controllers[&b].is_up()
                            && !self.net.blocked.contains(&(a, b))
                            && !self.net.blocked.contains(&(b, a)))
                })
                .count();
            if reach >= quorum {
                self.controllers.get_mut(&a).expect("known").quorum_tick = self.now;
            }
        }
    }

    /// One tick of the whole world; every invariant is checked on the way.
    pub fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        let ids: Vec<NodeId> = self.controllers.keys().copied().collect();
        for &id in &ids {
            let c = self.controllers.get_mut(&id).expect("known");
            if let Some(core) = c.core.as_mut() {
                c.mono_ticks += 1;
                core.tick();
            }
        }
        for msg in self.net.take_due(self.now) {
            self.trace(&[1, self.now, msg.from.get(), msg.to.get(), msg.term.get()]);
            if let Some(core) = self
                .controllers
                .get_mut(&msg.to)
                .and_then(|c| c.core.as_mut())
            {
                core.step(msg);
            }
        }
        for &id in &ids {
            self.flush(id)?;
            self.track_leadership(id);
        }
        self.deliver_rpcs()?;
        for &id in &ids {
            if !self.controllers[&id].is_up() {
                continue;
            }
            self.flush(id)?;
            self.track_leadership(id);
            self.serve_polls(id);
            self.schedule(id);
            self.scan(id);
            self.flush(id)?;
        }
        let mut out = Vec::new();
        let mut ev = AgentEvents::default();
        for i in 0..self.agents.len() {
            self.agents[i].step(self.now, &mut self.rng, &mut out, &mut ev);
        }
        for (task, attempt) in ev.executed {
            let node = self.agent_name_holding(&task, attempt);
            self.checker.on_execute(&task, attempt, &node)?;
        }
        for (task, attempt) in ev.success_acked {
            self.checker.on_success_acked(&task, attempt)?;
        }
        for i in 0..self.clients.len() {
            let acked = self.clients[i].step(self.now, &mut self.rng, &mut out);
            for (key, task) in acked {
                self.checker.on_submit_acked(&key, &task)?;
            }
        }
        for rpc in out {
            self.send_rpc(rpc);
        }
        self.update_quorum_truth();
        for &id in &ids {
            if let Some(core) = self.controllers[&id].core.as_ref() {
                let st = core.status();
                self.raft_checker.observe_status(&st)?;
            }
        }
        Ok(())
    }

    fn agent_name_holding(&self, task: &str, attempt: u32) -> String {
        self.agents
            .iter()
            .find(|a| a.holds(task, attempt))
            .map_or_else(|| "?".into(), |a| a.name.clone())
    }

    /// Runs `ticks` steps.
    pub fn run(&mut self, ticks: u64) -> Result<(), Violation> {
        for _ in 0..ticks {
            self.step()?;
        }
        Ok(())
    }

    /// Runs until `done` holds or `ticks` pass; returns whether it held.
    pub fn run_until(
        &mut self,
        ticks: u64,
        mut done: impl FnMut(&World) -> bool,
    ) -> Result<bool, Violation> {
        for _ in 0..ticks {
            if done(self) {
                return Ok(true);
            }
            self.step()?;
        }
        Ok(done(self))
    }

    /// The committed manifest (the checker's reference).
    pub fn manifest(&self) -> &Manifest {
        &self.checker.reference
    }

    /// Submits a task directly through the leader (scenario tests): runs until committed.
    /// Returns the task id.
    pub fn submit_direct(&mut self, key: &str, max_attempts: u32) -> Result<String, Violation> {
        let client = self.clients.len();
        let mut c = Client::new(client, 0, self.options.controllers.clone());
        c.remaining = 0;
        self.clients.push(c);
        let leader = self.leader().expect("a leader");
        let rpc = Rpc {
            from: Endpoint::Client(client),
            to: Endpoint::Controller(leader),
            req: 1,
            body: Body::Submit {
                key: key.to_string(),
                max_attempts,
                run_timeout_ms: 0,
            },
        };
        self.handle_call(NodeId(leader), rpc)?;
        let key = key.to_string();
        let ok = self.run_until(200, |w| {
            w.manifest().task_by_idempotency_key(&key).is_some()
        })?;
        assert!(ok, "submission {key} did not commit");
        Ok(self
            .manifest()
            .task_by_idempotency_key(&key)
            .expect("committed")
            .task_id
            .clone())
    }

    /// Drops every agent-network message in flight to `to` (a lost reply).
    pub fn drop_rpcs_to(&mut self, to: Endpoint) -> usize {
        let before = self.rpcs.len();
        self.rpcs.retain(|r| r.2.to != to);
        before - self.rpcs.len()
    }

    /// Proposes `kind` on the leader as its shell would (scenario tests).
    pub fn propose_on_leader(&mut self, kind: Kind) -> Option<LogIndex> {
        let l = self.leader()?;
        self.propose(NodeId(l), kind).map(|p| p.0)
    }

    /// One-line counters.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let counts = self.manifest().task_counts();
        format!(
            "tasks={} counts={:?} completions={} nodes_lost={} stale_reports_rejected={} registrations={} ctrl_crashes={} agent_crashes={} pauses={} net_losses={} clock_steps={} partitions={} snapshots={} installed={} rpcs={} brake_scans={} polls_redirected={} agent_stops={} leaving_declared={} checks={}",
            self.manifest().task_count(),
            counts,
            self.checker.completions,
            self.checker.nodes_declared_lost,
            self.checker.stale_reports_rejected,
            self.checker.registrations_changed,
            s.controller_crashes,
            s.agent_crashes,
            s.agent_pauses,
            s.agent_net_losses,
            s.clock_steps,
            s.partitions,
            s.snapshots,
            s.snapshots_installed,
            s.rpcs,
            s.brake_scans,
            s.polls_redirected,
            s.agent_stops,
            s.leaving_declared,
            self.checker.checks + self.raft_checker.checks,
        )
    }
}
