//! The clap command tree of `mlcp`. Every flag here is `Option` (or a bool that only turns a
//! behaviour on) so that the config layering in [`super::config`] can tell "not given" from
//! "given": a flag that was not typed never hides a value from the config file or `MLCP_*`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::console::flags::OutputFormat;
use crate::console::flags::{non_negative_f64, unsigned};
pub use crate::tools::bench::BenchArgs;
pub use crate::tools::demo::DemoArgs;

// The after-help texts are laid out by hand within 80 columns (a test checks), so that
// --help never re-wraps an example: a wrapped line would start with a fragment of a comment
// or a command. Comments go on their own line above the command they describe.

const ROOT_AFTER_HELP: &str = "\
Examples:
  # 3 controllers + 3 agents, real matmul, leader killed mid-run
  mlcp demo
  # single-member cluster on 127.0.0.1:50051, data in ./mlcp-data
  mlcp server
  # a worker that runs tasks for it
  mlcp agent --node-id gpu-1 --servers 127.0.0.1:50051
  # a 512x512 matrix multiplication; prints the task when it is done
  mlcp task submit --type matmul --wait \\
      --data '{\"n\":512,\"dtype\":\"f32\",\"iterations\":1,\"seed\":7}'
  mlcp task list --status RUNNING --output json
  mlcp cluster status --server 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051

Configuration is layered: config file (--config, default ./mlcp.toml if
present) < MLCP_* environment < command-line flags. Logs go to stderr; set
RUST_LOG to filter.";

/// `mlcp`: a Raft-replicated ML control plane that hands compute tasks to agents.
#[derive(Debug, Parser)]
#[command(name = "mlcp", version, about, after_help = ROOT_AFTER_HELP)]
pub struct Cli {
    /// TOML config file (tables `[server]`, `[agent]`, `[client]`); default `./mlcp.toml`
    /// when it exists. A file named here that does not exist is an error.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr (env `MLCP_LOG_FORMAT`). The level filter is `RUST_LOG`.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a controller: one Raft member serving clients, agents and peers.
    #[command(after_help = SERVER_AFTER_HELP)]
    Server(ServerArgs),
    /// Run a worker agent that registers, heartbeats, long-polls and executes tasks.
    #[command(after_help = AGENT_AFTER_HELP)]
    Agent(AgentArgs),
    /// Submit, inspect, list and cancel tasks.
    #[command(after_help = TASK_AFTER_HELP)]
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Inspect and drain worker nodes.
    #[command(after_help = NODE_AFTER_HELP)]
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Inspect the controller cluster and move leadership.
    #[command(after_help = CLUSTER_AFTER_HELP)]
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Start a local 3-controller cluster and agents as child processes, run real
    /// matrix-multiplication tasks, kill the leader mid-run and verify every result.
    #[command(after_help = DEMO_AFTER_HELP)]
    Demo(DemoArgs),
    /// Measure submit throughput/latency, end-to-end task rate and leader failover time.
    #[command(after_help = BENCH_AFTER_HELP)]
    Bench(BenchArgs),
    /// Measure how many agents one leader holds heartbeating (zero Raft entries from steady
    /// heartbeats) and the time from an agent's death to its tasks running elsewhere.
    #[command(after_help = BENCH_LIVENESS_AFTER_HELP)]
    BenchLiveness(crate::tools::bench_liveness::BenchLivenessArgs),
}

const SERVER_AFTER_HELP: &str = "\
Examples:
  # single-member cluster on 127.0.0.1:50051 with data in ./mlcp-data
  mlcp server
  # member 2 of a three-machine cluster
  mlcp server --node-id 2 --listen 0.0.0.0:50051 --http-listen 0.0.0.0:8080 \\
      --peers 1=10.0.0.1:50051,2=10.0.0.2:50051,3=10.0.0.3:50051 \\
      --data-dir /var/lib/mlcp

Environment: MLCP_SERVER_<KEY> for every key of the [server] table, e.g.
MLCP_SERVER_NODE_ID=2, MLCP_SERVER_PEERS=1=a:50051,2=b:50051,3=c:50051.
SIGINT or SIGTERM shuts the controller down gracefully.";

/// Flags of `mlcp server` (each also a `[server]` key and an `MLCP_SERVER_*` variable).
#[derive(Debug, Default, Args, serde::Serialize)]
pub struct ServerArgs {
    /// This controller's Raft id (positive integer) [default: 1].
    #[arg(long, value_name = "ID", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    /// gRPC listen address for clients, agents and peers [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Every voter of the initial cluster including this one, `ID=HOST:PORT,…`
    /// [default: just this node at --listen].
    #[arg(long, value_name = "ID=ADDR,…")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peers: Option<String>,
    /// Directory for the Raft log, snapshots and the identity file [default: ./mlcp-data].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address for health, metrics and status; `off` disables it
    /// [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// Cluster name; a data dir written for another cluster is refused [default: mlcp].
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// Length of one Raft tick in milliseconds [default: 50].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_ms: Option<u64>,
    /// Mark a node UNHEALTHY after this long without a heartbeat, in milliseconds
    /// [default: 10000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_stale_after_ms: Option<u64>,
    /// Snapshot and compact the log every this many applied entries [default: 10000].
    #[arg(long, value_name = "ENTRIES", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_every_entries: Option<u64>,
}

const AGENT_AFTER_HELP: &str = "\
Examples:
  mlcp agent --node-id gpu-1 \\
      --servers 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051 \\
      --cloud-provider aws --region us-east-1 --slots 4 \\
      --label gpu=a100 --label pool=train

Environment: MLCP_AGENT_<KEY> for every key of the [agent] table, e.g.
MLCP_AGENT_SERVERS=10.0.0.1:50051,10.0.0.2:50051. Labels in the config file are
a table: [agent.labels] gpu = \"a100\". SIGINT or SIGTERM finishes or hands back
running tasks.";

/// Flags of `mlcp agent` (each also an `[agent]` key and an `MLCP_AGENT_*` variable).
#[derive(Debug, Default, Args, serde::Serialize)]
pub struct AgentArgs {
    /// This node's id, unique in the cluster [default: the host name].
    #[arg(long, value_name = "ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Every controller's gRPC address, `HOST:PORT,…` [default: 127.0.0.1:50051].
    #[arg(long, value_name = "ADDR,…")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<String>,
    /// Address this node advertises (informational) [default: the node id].
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Cloud provider matched by task constraints, e.g. aws, gcp, onprem [default: local].
    #[arg(long, value_name = "P")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_provider: Option<String>,
    /// Region matched by task constraints, e.g. us-east-1 [default: local].
    #[arg(long, value_name = "R")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Concurrent task slots [default: 2].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// A label `KEY=VALUE` matched by task constraints; repeat for more. Added to the
    /// config file's labels.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    #[serde(skip)]
    pub labels: Vec<String>,
    /// Long-poll wait asked of the server, in milliseconds, at most 30000 [default: 10000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_timeout_ms: Option<u64>,
    /// On SIGINT/SIGTERM, how long running tasks may take to finish before they are
    /// stopped and handed back for a retry, in milliseconds [default: 30000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_ms: Option<u64>,
}

/// Flags shared by every client command (each also a `[client]` key and an
/// `MLCP_CLIENT_*` variable).
#[derive(Clone, Debug, Default, Args, serde::Serialize)]
pub struct ClientArgs {
    /// Controllers to ask, `HOST:PORT,…`; any member works, they are tried in order and
    /// leader hints are followed [default: 127.0.0.1:50051].
    #[arg(long = "server", value_name = "ADDR,…")]
    #[serde(skip_serializing_if = "Option::is_none", rename = "servers")]
    pub servers: Option<String>,
    /// Output format [default: table].
    #[arg(long, value_enum, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputFormat>,
    /// Per-request timeout in milliseconds [default: 10000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

const TASK_SUBMIT_AFTER_HELP: &str = "\
Built-in task types:
  matmul  {\"n\": 512, \"dtype\": \"f32\"|\"f64\", \"iterations\": 1, \"seed\": 7}
  sleep   {\"ms\": 1000}
  echo    any JSON (returned as the result)

Examples:
  mlcp task submit --type matmul --wait \\
      --data '{\"n\":256,\"dtype\":\"f64\",\"iterations\":1,\"seed\":1}'
  mlcp task submit --type sleep --data '{\"ms\":5000}' --max-attempts 1 \\
      --priority 10
  mlcp task submit --type echo --data '{\"hello\":1}' --idempotency-key job-42 \\
      --output json";

const TASK_AFTER_HELP: &str = "\
Examples:
  mlcp task submit --type sleep --data '{\"ms\":1000}' --wait
  mlcp task list --status FAILED
  mlcp task get 0190c3e2-7b1a-7c3d-9e4f-1a2b3c4d5e6f
  mlcp task cancel 0190c3e2-7b1a-7c3d-9e4f-1a2b3c4d5e6f --reason \"wrong input\"";

const TASK_GET_AFTER_HELP: &str = "\
Examples:
  mlcp task get 0190c3e2-7b1a-7c3d-9e4f-1a2b3c4d5e6f
  # through the leader: sees every write acknowledged before it
  mlcp task get 0190c3e2-7b1a-7c3d-9e4f-1a2b3c4d5e6f --consistent --output json";

const TASK_LIST_AFTER_HELP: &str = "\
Examples:
  mlcp task list --status COMPLETED --limit 20 --output json
  mlcp task list --status pending";

const TASK_CANCEL_AFTER_HELP: &str = "\
Example:
  mlcp task cancel 0190c3e2-7b1a-7c3d-9e4f-1a2b3c4d5e6f --reason \"superseded\"";

/// `mlcp task …`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task; prints it (or, with --wait, its final state).
    #[command(after_help = TASK_SUBMIT_AFTER_HELP)]
    Submit(Box<TaskSubmitArgs>),
    /// Show one task with its attempts.
    #[command(after_help = TASK_GET_AFTER_HELP)]
    Get {
        /// Task id (a UUID).
        id: String,
        /// Linearizable read through the leader instead of this member's applied state.
        #[arg(long)]
        consistent: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tasks, oldest first.
    #[command(after_help = TASK_LIST_AFTER_HELP)]
    List {
        /// Only tasks in this status: PENDING, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED.
        #[arg(long, value_name = "S")]
        status: Option<String>,
        /// Most tasks to print; 0 means no limit, as with etcdctl's --limit [default: all].
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        limit: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a task; a running attempt is stopped through its agent.
    #[command(after_help = TASK_CANCEL_AFTER_HELP)]
    Cancel {
        /// Task id (a UUID).
        id: String,
        /// Why (recorded in the task's error).
        #[arg(long, default_value = "cancelled by operator")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Flags of `mlcp task submit`.
#[derive(Debug, Args)]
pub struct TaskSubmitArgs {
    /// Executor name, `[a-z0-9_.-]{1,128}` (matmul, sleep, echo, …).
    #[arg(long = "type", value_name = "T")]
    pub task_type: String,
    /// Executor input, a JSON document.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub data: String,
    /// Attempts allowed, 1..=100; 1 = never runs twice for any reason.
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    pub max_attempts: u32,
    /// Higher runs first; negative allowed.
    #[arg(
        long,
        value_name = "P",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,
    /// A retry with the same key returns the task created the first time.
    #[arg(long, value_name = "K")]
    pub idempotency_key: Option<String>,
    /// Per-attempt run timeout in milliseconds; the agent stops the attempt and the leader
    /// requeues it (or fails the task when attempts are exhausted).
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub run_timeout_ms: Option<u64>,
    /// Fail the task if an attempt waits this long for placement once it is due (retry
    /// backoff excluded), timed on the leader's monotonic clock, in milliseconds
    /// [default: never].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub queue_timeout_ms: Option<u64>,
    /// Delay before the second attempt, in milliseconds [server default: 1000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub backoff_initial_ms: Option<u64>,
    /// Longest delay between attempts, in milliseconds [server default: 60000].
    #[arg(long, value_name = "MS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub backoff_max_ms: Option<u64>,
    /// Growth of the delay per attempt: 0 (the server default, 2.0) or 1.0..=1000.0.
    #[arg(long, value_name = "X", allow_negative_numbers = true, value_parser = non_negative_f64)]
    pub backoff_multiplier: Option<f64>,
    /// Fraction of each delay randomised away, 0.0..=1.0 [server default: 0.2].
    #[arg(long, value_name = "F", allow_negative_numbers = true, value_parser = non_negative_f64)]
    pub backoff_jitter: Option<f64>,
    /// Task slots the task occupies on its node [default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    pub slots: Option<u32>,
    /// CPU the task needs, in millicores (1000 = one core).
    #[arg(long, value_name = "MILLIS", allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    pub cpu_millis: Option<u32>,
    /// Memory the task needs, in MiB.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub memory_mb: Option<u64>,
    /// GPUs the task needs.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = unsigned::<u32>)]
    pub gpus: Option<u32>,
    /// Only place on nodes of this cloud provider.
    #[arg(long, value_name = "P")]
    pub cloud_provider: Option<String>,
    /// Only place on nodes in this region.
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Only place on nodes with this label `KEY=VALUE`; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Wait until the task is COMPLETED, FAILED or CANCELLED and print that state; exit 1
    /// unless it COMPLETED.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (with --wait) [default: no limit].
    #[arg(long, value_name = "SECS", requires = "wait", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
    pub wait_timeout_secs: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

const NODE_AFTER_HELP: &str = "\
Examples:
  mlcp node list
  mlcp node drain gpu-7 --deadline 600
  mlcp node drain gpu-7 --undo";

const NODE_LIST_AFTER_HELP: &str = "\
Example:
  mlcp node list --output json --server 10.0.0.1:50051,10.0.0.2:50051";

const NODE_DRAIN_AFTER_HELP: &str = "\
Examples:
  # no new tasks on gpu-7; wait up to 10 minutes for its running tasks to finish
  mlcp node drain gpu-7 --deadline 600
  # gpu-7 takes new tasks again
  mlcp node drain gpu-7 --undo";

/// `mlcp node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List worker nodes with status, load and capacity.
    #[command(after_help = NODE_LIST_AFTER_HELP)]
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop new placements on a node; its running tasks may finish.
    #[command(after_help = NODE_DRAIN_AFTER_HELP)]
    Drain {
        /// Node id.
        id: String,
        /// Wait up to this many seconds for the node's running tasks to finish.
        #[arg(long, value_name = "SECS", allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        deadline: Option<u64>,
        /// Undo a drain: the node takes new placements again.
        #[arg(long)]
        undo: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

const CLUSTER_AFTER_HELP: &str = "\
Examples:
  mlcp cluster status --server 10.0.0.1:50051,10.0.0.2:50051,10.0.0.3:50051
  mlcp cluster transfer-leader 2
  mlcp cluster add-learner 4 10.0.0.4:50051
  mlcp cluster promote 4
  mlcp cluster remove 1";

const CLUSTER_STATUS_AFTER_HELP: &str = "\
Example:
  mlcp cluster status --server 10.0.0.1:50051,10.0.0.2:50051 --output json";

const CLUSTER_TRANSFER_LEADER_AFTER_HELP: &str = "\
Examples:
  # hand leadership to member 2
  mlcp cluster transfer-leader 2
  # to whichever other voter is most up to date
  mlcp cluster transfer-leader 0";

const CLUSTER_ADD_LEARNER_AFTER_HELP: &str = "\
Start the new controller first, with --peers listing the current members and
itself; then add it as a learner and, once it has caught up, promote it:
  mlcp cluster add-learner 4 10.0.0.4:50051
  mlcp cluster promote 4";

const CLUSTER_PROMOTE_AFTER_HELP: &str = "\
Example (after add-learner; cluster status shows its MATCH_INDEX catching up):
  mlcp cluster promote 4";

const CLUSTER_REMOVE_AFTER_HELP: &str = "\
Example (retire member 3; the remaining voters must still make a quorum):
  mlcp cluster remove 3";

/// `mlcp cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, roles, leader, term, commit and applied index.
    #[command(after_help = CLUSTER_STATUS_AFTER_HELP)]
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Hand leadership to another voter (Raft TimeoutNow).
    #[command(after_help = CLUSTER_TRANSFER_LEADER_AFTER_HELP)]
    TransferLeader {
        /// Raft id of the voter to become leader (0 = the most up-to-date other voter).
        #[arg(allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a controller as a non-voting learner; it starts receiving the log.
    #[command(after_help = CLUSTER_ADD_LEARNER_AFTER_HELP)]
    AddLearner {
        /// Raft id of the new member (positive, unused).
        #[arg(allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        id: u64,
        /// Its gRPC address, `HOST:PORT`.
        address: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Promote a caught-up learner to voter.
    #[command(after_help = CLUSTER_PROMOTE_AFTER_HELP)]
    Promote {
        /// Raft id of the learner.
        #[arg(allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a member from the cluster (a removed leader steps down).
    #[command(after_help = CLUSTER_REMOVE_AFTER_HELP)]
    Remove {
        /// Raft id of the member.
        #[arg(allow_negative_numbers = true, value_parser = unsigned::<u64>)]
        id: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

const DEMO_AFTER_HELP: &str = "\
Examples:
  mlcp demo
  # a shorter run that keeps the data dirs and logs
  mlcp demo --tasks 12 --agents 2 --keep-dir

Child processes are this same binary (`mlcp server`, `mlcp agent`) on free
loopback ports; their logs are in the temp dir (kept with --keep-dir). Exit
status 0 only if every task completed and its result verified (Freivalds' check
against inputs regenerated from the seed).";

const BENCH_AFTER_HELP: &str = "\
Examples:
  mlcp bench
  # the submit phase only, against a running cluster
  mlcp bench --server 10.0.0.1:50051 --clients 1,64 --duration-secs 10 \\
      --output json

Without --server the bench starts its own 3-controller cluster (durable redb
storage, as in production) and 4 agents as child processes in a temp dir. With
--server it only runs the submit phase against that cluster (it neither starts
agents nor kills anything).";

const BENCH_LIVENESS_AFTER_HELP: &str = "\
Examples:
  mlcp bench-liveness
  # only the capacity steps, 5 seconds each
  mlcp bench-liveness --phase capacity --steps 500,1000,2000 --window-secs 5";

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse_error(args: &[&str]) -> String {
        let argv = std::iter::once("mlcp").chain(args.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_negative_number_is_refused_by_the_flag_it_was_given_to() {
        let cases: [(&[&str], &str); 9] = [
            (
                &["task", "submit", "--type", "echo", "--max-attempts", "-1"],
                "--max-attempts",
            ),
            (&["task", "list", "--limit", "-1"], "--limit"),
            (&["server", "--node-id", "-1"], "--node-id"),
            (
                &["task", "submit", "--type", "echo", "--gpus", "-1"],
                "--gpus",
            ),
            (&["node", "drain", "a1", "--deadline", "-3"], "--deadline"),
            (
                &[
                    "task",
                    "submit",
                    "--type",
                    "echo",
                    "--backoff-jitter",
                    "-0.1",
                ],
                "--backoff-jitter",
            ),
            (&["task", "list", "--timeout-ms", "-5"], "--timeout-ms"),
            (&["cluster", "remove", "-2"], "<ID>"),
            (&["agent", "--slots", "-4"], "--slots"),
        ];
        for (args, flag) in cases {
            let err = parse_error(args);
            assert!(
                err.contains(flag) && !err.contains("unexpected argument"),
                "{args:?} must be refused naming {flag}: {err}"
            );
            assert!(err.contains("negative"), "{args:?} must say why: {err}");
        }
    }

    /// Every argument that takes a number (it accepts "1" and refuses "x") also takes "-1"
    /// as its value, so that the error is about that argument.
    #[test]
    fn every_numeric_argument_reads_a_leading_minus_as_its_value() {
        use clap::error::ErrorKind;

        fn outcome(cmd: &clap::Command, arg: &clap::Arg, value: &str) -> Option<ErrorKind> {
            let mut argv = vec!["mlcp".to_owned()];
            argv.extend(arg.get_long().map(|long| format!("--{long}")));
            argv.push(value.to_owned());
            cmd.clone()
                .try_get_matches_from(argv)
                .err()
                .map(|e| e.kind())
        }
        fn walk(cmd: &clap::Command, path: &str, bad: &mut Vec<String>) {
            let lenient = cmd.clone().mut_args(|a| a.required(false));
            let refused = |kind: Option<ErrorKind>| {
                matches!(
                    kind,
                    Some(ErrorKind::ValueValidation | ErrorKind::InvalidValue)
                )
            };
            for arg in cmd.get_arguments() {
                if !arg.get_action().takes_values() {
                    continue;
                }
                let numeric =
                    !refused(outcome(&lenient, arg, "1")) && refused(outcome(&lenient, arg, "x"));
                if numeric && outcome(&lenient, arg, "-1") == Some(ErrorKind::UnknownArgument) {
                    bad.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), bad);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut bad = Vec::new();
        walk(&cmd, "mlcp", &mut bad);
        assert!(
            bad.is_empty(),
            "numeric arguments that read -1 as a flag: {bad:?}"
        );
    }

    fn arg_help(path: &[&str], id: &str) -> String {
        let mut cmd = Cli::command();
        for name in path {
            cmd = cmd.find_subcommand(name).expect("subcommand").clone();
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no argument {id}"));
        arg.get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn retry_and_queue_flags_describe_what_the_server_does() {
        let queue = arg_help(&["task", "submit"], "queue_timeout_ms");
        for needle in ["placement", "due", "backoff", "leader", "monotonic"] {
            assert!(queue.contains(needle), "--queue-timeout-ms help: {queue}");
        }
        assert!(!queue.contains("after submission"), "{queue}");
        let multiplier = arg_help(&["task", "submit"], "backoff_multiplier");
        assert!(
            multiplier.contains("0 ") && multiplier.contains("1.0..=1000.0"),
            "--backoff-multiplier help: {multiplier}"
        );
    }

    /// Every command and command group shows an example after its --help.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_name() == "help" {
                return;
            }
            let after = cmd.get_after_help().map(ToString::to_string);
            if !after.is_some_and(|text| text.contains(&format!("{path} "))) {
                missing.push(path.to_owned());
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "mlcp", &mut missing);
        assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    }

    /// After-help texts are laid out to fit 80 columns, so that --help never wraps them:
    /// a wrapped line would start with a fragment of a comment or command.
    #[test]
    fn examples_fit_80_columns() {
        fn walk(cmd: &clap::Command, path: &str, long: &mut Vec<String>) {
            if let Some(after) = cmd.get_after_help() {
                for line in after.to_string().lines() {
                    if line.chars().count() > 80 {
                        long.push(format!("{path}: {line}"));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), long);
            }
        }
        let mut long = Vec::new();
        walk(&Cli::command(), "mlcp", &mut long);
        assert!(
            long.is_empty(),
            "lines over 80 columns:\n{}",
            long.join("\n")
        );

        // And each root example is a command or a comment of its own.
        let root = Cli::command().get_after_help().unwrap().to_string();
        let examples = root
            .split("\n\n")
            .find(|block| block.starts_with("Examples:"))
            .unwrap();
        for line in examples.lines().skip(1) {
            assert!(
                line.starts_with("  mlcp ")
                    || line.starts_with("  # ")
                    || line.starts_with("      "),
                "not a command, comment or continuation: {line:?}"
            );
            assert!(
                !(line.starts_with("  mlcp ") && line.contains(" # ")),
                "comment beside a command: {line:?}"
            );
        }
    }
}
