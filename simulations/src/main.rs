//! `simulations` — run the deterministic simulator on one seed or many.
//!
//! ```text
//! cargo run -p simulations --release -- --seed 42          # replay one run bit for bit
//! cargo run -p simulations --release -- --seeds 200        # 200 fresh seeds from OS entropy
//! cargo run -p simulations --release -- --seed 42 --check-determinism
//! ```
//! Exit codes: 0 ok, 2 usage, 10 crash (panic), 20 safety violation, 30 liveness failure.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rand::RngCore;
use simulations::sim::{Overrides, Params};
use simulations::{exit, run_seed};

/// Deterministic simulator for mlcp's Raft core.
#[derive(Parser, Debug)]
#[command(name = "simulations")]
struct Args {
    /// Replay exactly this seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many fresh seeds drawn from OS entropy (stops at the first failure).
    #[arg(long)]
    seeds: Option<u64>,
    /// Ticks of the safety phase (default: the simulator's standard length).
    #[arg(long)]
    ticks: Option<u64>,
    /// Voters in the initial configuration.
    #[arg(long, value_parser = parse_nodes)]
    nodes: Option<u64>,
    /// Run each seed twice and require equal trace hashes.
    #[arg(long)]
    check_determinism: bool,
    /// Simulate the task lifecycle (manifest, scheduler, liveness, agents) instead of the KV.
    #[arg(long)]
    lifecycle: bool,
}

fn parse_nodes(s: &str) -> Result<u64, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("--nodes must be 3 or 5, got {s}")),
    }
}

fn reproduce_command(seed: u64, args: &Args) -> String {
    let mut cmd = format!("cargo run -p simulations --release -- --seed {seed}");
    if let Some(t) = args.ticks {
        cmd.push_str(&format!(" --ticks {t}"));
    }
    if let Some(n) = args.nodes {
        cmd.push_str(&format!(" --nodes {n}"));
    }
    cmd
}

/// Runs one seed, printing its parameters first and its verdict last. Returns the exit code.
fn one(seed: u64, args: &Args) -> i32 {
    if args.lifecycle {
        return simulations::lifecycle::main_one(seed, args.check_determinism);
    }
    let overrides = Overrides {
        ticks: args.ticks,
        nodes: args.nodes,
    };
    let params = Params::draw(seed, &overrides);
    print!("{}", params.describe());
    let started = Instant::now();
    let verdict = run_seed(&params);
    let elapsed = started.elapsed();
    let mut code = verdict.code;
    if !verdict.summary.is_empty() {
        println!("{}", verdict.summary);
    }
    println!(
        "TRACE={:016x} elapsed_ms={}",
        verdict.trace_hash,
        elapsed.as_millis()
    );
    let mut message = verdict.message;
    if code == exit::OK && args.check_determinism {
        let again = run_seed(&params);
        if again.trace_hash != verdict.trace_hash || again.code != verdict.code {
            code = exit::SAFETY;
            message = format!(
                "determinism violation: trace {:016x} then {:016x}",
                verdict.trace_hash, again.trace_hash
            );
        } else {
            println!("determinism: second run has the same trace hash");
        }
    }
    println!("RESULT seed={seed} {message}");
    if code != exit::OK {
        println!("REPRODUCE: {}", reproduce_command(seed, args));
    }
    code
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            return ExitCode::from(code as u8);
        }
    };
    let code = match (args.seed, args.seeds) {
        (Some(seed), _) => one(seed, &args),
        (None, Some(k)) => {
            let mut entropy = rand::rng();
            let mut code = exit::OK;
            let started = Instant::now();
            for i in 0..k {
                let seed = entropy.next_u64();
                code = one(seed, &args);
                if code != exit::OK {
                    println!("failed after {} of {k} seeds", i + 1);
                    break;
                }
            }
            if code == exit::OK {
                println!(
                    "all {k} seeds passed in {} ms",
                    started.elapsed().as_millis()
                );
            }
            code
        }
        (None, None) => {
            eprintln!(
                "usage: simulations (--seed N | --seeds K) [--ticks T] [--nodes 3|5] [--check-determinism]"
            );
            exit::USAGE
        }
    };
    ExitCode::from(code as u8)
}
