//! The task-lifecycle simulator (docs/simulator.md#the-lifecycle-simulator; docs/lifecycle.md, "Deterministic
//! simulation"; docs/failures.md S1–S12).
//!
//! Raft cores replicate manifest commands; the leader runs the scheduler and heartbeat
//! monitor cores on its simulated monotonic clock; simulated clients submit tasks with
//! idempotency keys; simulated agents heartbeat, poll, acknowledge, run and report — and
//! crash, pause and wake up as zombies, lose their network and step their clocks, while
//! controllers crash, get partitioned and change leaders.
//!
//! - [`world`] — controllers (the production shell's logic over the same pure cores), the
//!   agent network, one tick per step;
//! - [`agents`] — simulated agents and clients;
//! - [`checker`] — lifecycle invariants, checked on every committed entry and agent event
//!   (the Raft invariants are `crate::checker`'s, checked too).
//!
//! A run: a safety phase of `ticks` ticks with faults drawn from the seed, then a liveness
//! phase that heals everything (controllers restarted, partitions and agent links healed,
//! paused agents woken, crashed agents restarted) and requires every submission to be
//! acknowledged and every task to reach a terminal state within `liveness_ticks`.
//!
//! `cargo run -p simulations --release -- --lifecycle --seed N` replays one run.

pub mod agents;
pub mod checker;
pub mod world;

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::net::Faults;
use crate::{Verdict, exit};
use world::{TICK_MS, World, WorldOptions};

/// Parameters of one lifecycle run, all drawn from the seed.
#[derive(Clone, Debug)]
pub struct Params {
    /// The seed.
    pub seed: u64,
    /// Controllers (3 or 5).
    pub controllers: u64,
    /// Agents.
    pub agents: usize,
    /// Clients.
    pub clients: usize,
    /// Tasks each client submits.
    pub tasks_per_client: u32,
    /// Ticks of the safety phase.
    pub ticks: u64,
    /// Bound on the liveness phase, in ticks.
    pub liveness_ticks: u64,
    /// Peer network drop chance, per mille.
    pub drop_per_mille: u32,
    /// Peer network most delay, in steps.
    pub delay_steps_max: u64,
    /// Agent network drop chance, per mille.
    pub rpc_drop_per_mille: u32,
    /// Per tick, chance in 100,000 of each fault kind below.
    pub controller_crash_per_100k: u32,
    /// Controller isolation (peer partition).
    pub partition_per_100k: u32,
    /// Agent crash.
    pub agent_crash_per_100k: u32,
    /// Agent pause (zombie).
    pub agent_pause_per_100k: u32,
    /// Agent network loss.
    pub agent_net_loss_per_100k: u32,
    /// Clock step (an agent's or a controller's wall clock).
    pub clock_step_per_100k: u32,
    /// Leadership transfer.
    pub transfer_per_100k: u32,
    /// Clean agent stop (SIGTERM, then a leaving heartbeat).
    pub agent_stop_per_100k: u32,
}

impl Params {
    /// Draws every parameter from `seed` (swarm testing: each seed its own fault mix).
    pub fn draw(seed: u64) -> Params {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x6c69_6665_6379_636c);
        let heavy = |r: &mut ChaCha8Rng, max: u32| {
            if r.random_bool(0.25) {
                0
            } else {
                r.random_range(0..=max)
            }
        };
        Params {
            seed,
            controllers: if r.random_bool(0.8) { 3 } else { 5 },
            agents: r.random_range(3..=7),
            clients: r.random_range(1..=3),
            tasks_per_client: r.random_range(5..=15),
            ticks: 3_000,
            liveness_ticks: 3_000,
            drop_per_mille: heavy(&mut r, 30),
            delay_steps_max: r.random_range(1..=3),
            rpc_drop_per_mille: heavy(&mut r, 30),
            controller_crash_per_100k: heavy(&mut r, 150),
            partition_per_100k: heavy(&mut r, 150),
            agent_crash_per_100k: heavy(&mut r, 100),
            agent_pause_per_100k: heavy(&mut r, 150),
            agent_net_loss_per_100k: heavy(&mut r, 150),
            clock_step_per_100k: heavy(&mut r, 200),
            transfer_per_100k: heavy(&mut r, 80),
            agent_stop_per_100k: heavy(&mut r, 80),
        }
    }

    /// `SEED=` and every drawn parameter, one per line.
    pub fn describe(&self) -> String {
        format!(
            "SEED={}\nmode=lifecycle tick_ms={TICK_MS}\ncontrollers={} agents={} clients={} tasks_per_client={}\nticks={} liveness_ticks={}\ndrop_per_mille={} delay_steps_max={} rpc_drop_per_mille={}\ncontroller_crash_per_100k={} partition_per_100k={} agent_crash_per_100k={} agent_pause_per_100k={} agent_net_loss_per_100k={} clock_step_per_100k={} transfer_per_100k={} agent_stop_per_100k={}\n",
            self.seed,
            self.controllers,
            self.agents,
            self.clients,
            self.tasks_per_client,
            self.ticks,
            self.liveness_ticks,
            self.drop_per_mille,
            self.delay_steps_max,
            self.rpc_drop_per_mille,
            self.controller_crash_per_100k,
            self.partition_per_100k,
            self.agent_crash_per_100k,
            self.agent_pause_per_100k,
            self.agent_net_loss_per_100k,
            self.clock_step_per_100k,
            self.transfer_per_100k,
            self.agent_stop_per_100k,
        )
    }

    fn options(&self) -> WorldOptions {
        let mut o = WorldOptions::new(self.agents);
        o.controllers = (1..=self.controllers).collect();
        o.faults = Faults {
            drop_per_mille: self.drop_per_mille,
            duplicate_per_mille: self.drop_per_mille / 2,
            delay_steps_min: 1,
            delay_steps_max: self.delay_steps_max,
            reorder: self.delay_steps_max > 1,
        };
        o.rpc_delay_ticks = (1, self.delay_steps_max);
        o.rpc_drop_per_mille = self.rpc_drop_per_mille;
        o.seed = self.seed;
        o
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Every check passed and every task finished in time.
    Ok,
    /// An invariant broke.
    Safety(String),
    /// The healed world did not finish in time.
    Liveness(String),
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Outcome.
    pub outcome: Outcome,
    /// Trace hash.
    pub trace_hash: u64,
    /// Counters.
    pub summary: String,
}

fn chance(r: &mut ChaCha8Rng, per_100k: u32) -> bool {
    per_100k > 0 && r.random_range(0..100_000) < per_100k
}

/// Draws and injects this tick's faults.
fn inject(w: &mut World, p: &Params) -> Result<(), crate::checker::Violation> {
    let now = w.now;
    let ctrl_ids: Vec<u64> = w.options.controllers.clone();
    let up: Vec<u64> = ctrl_ids
        .iter()
        .copied()
        .filter(|&c| w.controller(c).is_up())
        .collect();
    // Keep a quorum up most of the time so the run makes progress.
    if chance(w.rng(), p.controller_crash_per_100k) && up.len() > ctrl_ids.len() / 2 + 1 {
        let victim = if w.rng().random_bool(0.5) {
            w.leader().unwrap_or(up[0])
        } else {
            up[w.rng().random_range(0..up.len())]
        };
        w.crash_controller(victim)?;
    }
    for &c in &ctrl_ids {
        if !w.controller(c).is_up() && w.rng().random_bool(0.01) {
            w.restart_controller(c)?;
        }
    }
    if chance(w.rng(), p.partition_per_100k) {
        let victim = w
            .leader()
            .unwrap_or(ctrl_ids[w.rng().random_range(0..ctrl_ids.len())]);
        w.isolate_controller(victim);
    }
    if !w.net.blocked.is_empty() && w.rng().random_bool(0.004) {
        w.net.heal();
    }
    if chance(w.rng(), p.transfer_per_100k) {
        let to = ctrl_ids[w.rng().random_range(0..ctrl_ids.len())];
        w.transfer_leader(to);
    }
    let n = w.agents.len();
    for i in 0..n {
        if chance(w.rng(), p.agent_crash_per_100k) && w.agents[i].up {
            let back = now + w.rng().random_range(20..300);
            w.agents[i].crash(back);
            w.stats.agent_crashes += 1;
        }
        if chance(w.rng(), p.agent_pause_per_100k) && w.agents[i].paused_until <= now {
            // Long enough, often, to be declared lost and have the task run elsewhere.
            let until = now + w.rng().random_range(50..400);
            w.agents[i].paused_until = until;
            w.stats.agent_pauses += 1;
        }
        if w.agents[i].paused_until == now {
            w.agents[i].finish_running_now(now);
        }
        if chance(w.rng(), p.agent_net_loss_per_100k) {
            let until = now + w.rng().random_range(20..400);
            w.agents[i].net_down_until = until;
            w.stats.agent_net_losses += 1;
        }
        if chance(w.rng(), p.agent_stop_per_100k) && w.agents[i].up && !w.agents[i].is_stopping() {
            let grace = w.rng().random_range(0..100);
            let back = now + w.rng().random_range(20..300);
            w.agents[i].stop(now, grace, back);
            w.stats.agent_stops += 1;
        }
        if chance(w.rng(), p.clock_step_per_100k) {
            let step: i64 = w.rng().random_range(-3_600_000..3_600_000);
            w.agents[i].clock_offset_ms += step;
            w.stats.clock_steps += 1;
        }
    }
    if chance(w.rng(), p.clock_step_per_100k / 2) {
        let c = ctrl_ids[w.rng().random_range(0..ctrl_ids.len())];
        // A controller's wall clock jumps to within ±10 s of true time. Liveness never reads
        // it; it only dates commands, and backoff ends (`not_before`) are on the proposer's
        // wall clock, so a retry can wait up to the skew between two leaders' clocks (see
        // lifesim-findings.md) — the liveness bound allows for that.
        let offset: i64 = w.rng().random_range(-10_000..=10_000);
        if let Some(ctrl) = w.controllers.get_mut(&mlcp::raft::NodeId(c)) {
            ctrl.wall_offset_ms = offset;
        }
        w.stats.clock_steps += 1;
    }
    Ok(())
}

/// Heals everything: every controller up, links restored, agents woken and restarted.
pub fn heal_all(w: &mut World) -> Result<(), crate::checker::Violation> {
    w.heal();
    let ids: Vec<u64> = w.options.controllers.clone();
    for c in ids {
        w.restart_controller(c)?;
    }
    let now = w.now;
    for a in &mut w.agents {
        if a.paused_until > now {
            a.paused_until = now;
            a.finish_running_now(now);
        }
        if !a.up {
            a.restart_at = now;
        }
    }
    Ok(())
}

fn all_done(w: &World) -> bool {
    w.clients.iter().all(|c| c.done()) && w.checker.unfinished().is_empty()
}

/// Runs one seed: safety phase under faults, then the liveness phase.
pub fn run(p: &Params) -> Report {
    let mut w = World::new(p.options());
    w.add_clients(p.clients, p.tasks_per_client);
    let safety = (|| {
        for _ in 0..p.ticks {
            inject(&mut w, p)?;
            w.step()?;
        }
        heal_all(&mut w)?;
        let done = w.run_until(p.liveness_ticks, all_done)?;
        w.checker.check_final()?;
        Ok::<bool, crate::checker::Violation>(done)
    })();
    let outcome = match safety {
        Err(v) => Outcome::Safety(format!("tick {}: {}", w.now, v.0)),
        Ok(false) => Outcome::Liveness(format!(
            "within {} ticks of healing: clients done={} unfinished tasks={:?}",
            p.liveness_ticks,
            w.clients.iter().filter(|c| c.done()).count(),
            w.checker.unfinished()
        )),
        Ok(true) => Outcome::Ok,
    };
    Report {
        outcome,
        trace_hash: w.trace_hash(),
        summary: w.summary(),
    }
}

/// Runs `p`, turning a panic into [`exit::CRASH`].
pub fn run_seed(p: &Params) -> Verdict {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(p))) {
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Verdict {
                code: exit::CRASH,
                message: format!("crash: {what}"),
                trace_hash: 0,
                summary: String::new(),
            }
        }
        Ok(report) => {
            let (code, message) = match report.outcome {
                Outcome::Ok => (exit::OK, "ok".to_string()),
                Outcome::Safety(v) => (exit::SAFETY, format!("safety violation: {v}")),
                Outcome::Liveness(v) => (exit::LIVENESS, format!("liveness failure: {v}")),
            };
            Verdict {
                code,
                message,
                trace_hash: report.trace_hash,
                summary: report.summary,
            }
        }
    }
}

/// The binary's `--lifecycle` path for one seed: prints `SEED=` and the parameters first,
/// the verdict last, and the reproduce line on failure. Returns the exit code.
pub fn main_one(seed: u64, check_determinism: bool) -> i32 {
    let p = Params::draw(seed);
    print!("{}", p.describe());
    let started = Instant::now();
    let v = run_seed(&p);
    let elapsed = started.elapsed();
    if !v.summary.is_empty() {
        println!("{}", v.summary);
    }
    println!(
        "TRACE={:016x} elapsed_ms={}",
        v.trace_hash,
        elapsed.as_millis()
    );
    let mut code = v.code;
    let mut message = v.message;
    if code == exit::OK && check_determinism {
        let again = run_seed(&p);
        if again.trace_hash != v.trace_hash || again.code != v.code {
            code = exit::SAFETY;
            message = format!(
                "determinism violation: trace {:016x} then {:016x}",
                v.trace_hash, again.trace_hash
            );
        } else {
            println!("determinism: second run has the same trace hash");
        }
    }
    println!("RESULT seed={seed} {message}");
    if code != exit::OK {
        println!("REPRODUCE: cargo run -p simulations --release -- --lifecycle --seed {seed}");
    }
    code
}
