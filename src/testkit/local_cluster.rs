//! A local cluster of `mlcp server` and `mlcp agent` CHILD processes on free loopback ports in
//! a temp dir, used by `mlcp demo`, `mlcp bench` and the multi-process tests (`tests/e2e_*`).
//!
//! [`LocalCluster`] is a guard: dropping it (normally, on `?`, or while unwinding from a
//! panic) SIGKILLs and reaps every child it started and removes the temp dir unless asked to
//! keep it. Children also get `PR_SET_PDEATHSIG = SIGKILL`, so they die even if this process
//! is itself SIGKILLed. Each child's stdout and stderr go to `<dir>/logs/<name>.log`.

use std::fs::File;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::client::Client;

/// How the controllers of a [`LocalCluster`] are configured.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Controllers (Raft voters), usually 3.
    pub controllers: usize,
    /// Raft tick length in milliseconds (`--tick-ms`); `None` = the server default.
    pub tick_ms: Option<u64>,
    /// Stale timeout for agents in milliseconds (`--node-stale-after-ms`).
    pub node_stale_after_ms: Option<u64>,
    /// Extra flags appended to every `mlcp server` command line.
    pub extra_server_args: Vec<String>,
    /// Long-poll wait of the agents in milliseconds (`--poll-timeout-ms`).
    pub agent_poll_timeout_ms: Option<u64>,
    /// `RUST_LOG` for the children (default `info`).
    pub child_log_filter: String,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            controllers: 3,
            tick_ms: None,
            node_stale_after_ms: None,
            extra_server_args: Vec::new(),
            agent_poll_timeout_ms: None,
            child_log_filter: "info".into(),
        }
    }
}

/// One controller slot: its fixed id, ports and data dir, and its process when running.
#[derive(Debug)]
pub struct ControllerProc {
    /// Raft id (1-based, equal to its position + 1).
    pub id: u64,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// Log file of the child (appended to across restarts).
    pub log: PathBuf,
    child: Option<Child>,
}

/// One agent process.
#[derive(Debug)]
pub struct AgentProc {
    /// The agent's node id.
    pub node_id: String,
    /// Log file of the child.
    pub log: PathBuf,
    child: Option<Child>,
}

/// The guard over every child process and the temp dir; see the module docs.
#[derive(Debug)]
pub struct LocalCluster {
    binary: PathBuf,
    spec: ClusterSpec,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    /// Controllers by position (id = position + 1).
    pub controllers: Vec<ControllerProc>,
    /// Agents in start order.
    pub agents: Vec<AgentProc>,
}

/// Picks `n` distinct free loopback ports by binding them all at once (then releasing them).
pub fn free_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(TcpListener::local_addr).collect()
}

/// Sends `signal` to a child by pid; an already reaped child is not an error.
fn signal_child(child: &Child, signal: Signal) {
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    let _ = kill(Pid::from_raw(pid), signal);
}

/// SIGKILLs and reaps a child.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl LocalCluster {
    /// Creates the temp dir, picks ports and lays out the controllers; starts nothing.
    /// `binary` is the `mlcp` executable (`std::env::current_exe()` or
    /// `env!("CARGO_BIN_EXE_mlcp")`).
    pub fn new(binary: impl Into<PathBuf>, spec: ClusterSpec) -> std::io::Result<LocalCluster> {
        let dir = tempfile::Builder::new().prefix("mlcp-local-").tempdir()?;
        let dir_path = dir.path().to_owned();
        std::fs::create_dir_all(dir_path.join("logs"))?;
        let ports = free_ports(spec.controllers * 2)?;
        let controllers = (0..spec.controllers)
            .map(|i| {
                let id = i as u64 + 1;
                ControllerProc {
                    id,
                    grpc: ports[2 * i],
                    http: ports[2 * i + 1],
                    data_dir: dir_path.join(format!("controller-{id}")),
                    log: dir_path.join("logs").join(format!("controller-{id}.log")),
                    child: None,
                }
            })
            .collect();
        Ok(LocalCluster {
            binary: binary.into(),
            spec,
            dir: Some(dir),
            dir_path,
            controllers,
            agents: Vec::new(),
        })
    }

    /// The temp dir holding data dirs and logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Keeps the temp dir after the guard is dropped (the processes are still killed).
    pub fn keep_dir(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
    }

    /// gRPC addresses of every controller, by position.
    pub fn grpc_addrs(&self) -> Vec<String> {
        self.controllers
            .iter()
            .map(|c| c.grpc.to_string())
            .collect()
    }

    /// `1=addr,2=addr,…` for `--peers`.
    pub fn peers_flag(&self) -> String {
        self.controllers
            .iter()
            .map(|c| format!("{}={}", c.id, c.grpc))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client over every controller (any member answers).
    pub fn client(&self, timeout: Duration) -> Client {
        Client::new(self.grpc_addrs(), timeout)
    }

    /// A client over the controllers at `positions` only (e.g. the survivors).
    pub fn client_for(&self, positions: &[usize], timeout: Duration) -> Client {
        let addrs = positions
            .iter()
            .map(|&i| self.controllers[i].grpc.to_string())
            .collect();
        Client::new(addrs, timeout)
    }

    fn command(&self, log: &Path) -> std::io::Result<Command> {
        let out = File::options().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.binary);
        cmd.current_dir(&self.dir_path)
            .env("RUST_LOG", &self.spec.child_log_filter)
            .env_remove("MLCP_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is a single async-signal-safe syscall; nothing else
        // runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// Starts (or restarts) the controller at `pos` with its fixed id, ports and data dir.
    pub fn start_controller(&mut self, pos: usize) -> std::io::Result<()> {
        let peers = self.peers_flag();
        let c = &self.controllers[pos];
        assert!(c.child.is_none(), "controller {} is already running", c.id);
        let mut cmd = self.command(&c.log)?;
        cmd.arg("server")
            .args(["--node-id", &c.id.to_string()])
            .args(["--listen", &c.grpc.to_string()])
            .args(["--http-listen", &c.http.to_string()])
            .args(["--peers", &peers])
            .arg("--data-dir")
            .arg(&c.data_dir)
            .args(["--cluster-name", "mlcp-local"]);
        if let Some(ms) = self.spec.tick_ms {
            cmd.args(["--tick-ms", &ms.to_string()]);
        }
        if let Some(ms) = self.spec.node_stale_after_ms {
            cmd.args(["--node-stale-after-ms", &ms.to_string()]);
        }
        cmd.args(&self.spec.extra_server_args);
        let child = cmd.spawn()?;
        self.controllers[pos].child = Some(child);
        Ok(())
    }

    /// Starts every controller that is not running.
    pub fn start_controllers(&mut self) -> std::io::Result<()> {
        for pos in 0..self.controllers.len() {
            if self.controllers[pos].child.is_none() {
                self.start_controller(pos)?;
            }
        }
        Ok(())
    }

    /// Starts an agent named `node_id` with `slots` task slots pointed at every controller;
    /// returns its position in [`LocalCluster::agents`].
    pub fn start_agent(&mut self, node_id: &str, slots: u32) -> std::io::Result<usize> {
        let log = self
            .dir_path
            .join("logs")
            .join(format!("agent-{node_id}.log"));
        let mut cmd = self.command(&log)?;
        cmd.arg("agent")
            .args(["--node-id", node_id])
            .args(["--servers", &self.grpc_addrs().join(",")])
            .args(["--slots", &slots.to_string()])
            .args(["--cloud-provider", "local", "--region", "loopback"]);
        if let Some(ms) = self.spec.agent_poll_timeout_ms {
            cmd.args(["--poll-timeout-ms", &ms.to_string()]);
        }
        let child = cmd.spawn()?;
        self.agents.push(AgentProc {
            node_id: node_id.to_owned(),
            log,
            child: Some(child),
        });
        Ok(self.agents.len() - 1)
    }

    /// Whether the controller at `pos` has a live process (reaps it if it exited).
    pub fn controller_running(&mut self, pos: usize) -> bool {
        running(&mut self.controllers[pos].child)
    }

    /// Whether the agent at `pos` has a live process (reaps it if it exited).
    pub fn agent_running(&mut self, pos: usize) -> bool {
        running(&mut self.agents[pos].child)
    }

    /// SIGKILLs the controller at `pos` (a crash: nothing is flushed) and reaps it.
    pub fn kill_controller(&mut self, pos: usize) {
        if let Some(mut child) = self.controllers[pos].child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERMs the controller at `pos` and waits up to `grace` for it to exit, then SIGKILLs.
    /// Returns its exit status (None if it had to be killed).
    pub async fn stop_controller(&mut self, pos: usize, grace: Duration) -> Option<ExitStatus> {
        let child = self.controllers[pos].child.take()?;
        terminate(child, grace).await
    }

    /// SIGKILLs the agent at `pos` and reaps it.
    pub fn kill_agent(&mut self, pos: usize) {
        if let Some(mut child) = self.agents[pos].child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERMs the agent at `pos`, waiting up to `grace` before SIGKILL.
    pub async fn stop_agent(&mut self, pos: usize, grace: Duration) -> Option<ExitStatus> {
        let child = self.agents[pos].child.take()?;
        terminate(child, grace).await
    }

    /// Sends SIGSTOP (`pause = true`) or SIGCONT to the agent at `pos` (zombie tests).
    pub fn pause_agent(&mut self, pos: usize, pause: bool) {
        if let Some(child) = &self.agents[pos].child {
            signal_child(
                child,
                if pause {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                },
            );
        }
    }

    /// The last `lines` lines of a log file (for failure messages).
    pub fn log_tail(path: &Path, lines: usize) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILLs and reaps every child (the guard does this on drop too).
    pub fn kill_all(&mut self) {
        for agent in &mut self.agents {
            if let Some(mut child) = agent.child.take() {
                kill_and_reap(&mut child);
            }
        }
        for controller in &mut self.controllers {
            if let Some(mut child) = controller.child.take() {
                kill_and_reap(&mut child);
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking() {
            // A failing test: show what the children said last.
            for log in self
                .controllers
                .iter()
                .map(|c| &c.log)
                .chain(self.agents.iter().map(|a| &a.log))
            {
                eprintln!(
                    "--- last lines of {}\n{}",
                    log.display(),
                    LocalCluster::log_tail(log, 30)
                );
            }
        }
        // `self.dir` (if not kept) removes the temp dir when it drops right after this.
    }
}

fn running(slot: &mut Option<Child>) -> bool {
    match slot {
        Some(child) => match child.try_wait() {
            Ok(None) => true,
            _ => {
                *slot = None;
                false
            }
        },
        None => false,
    }
}

async fn terminate(mut child: Child, grace: Duration) -> Option<ExitStatus> {
    signal_child(&child, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill_and_reap(&mut child);
    None
}

/// Calls `probe` every `every` until it returns `Some`, or fails after `within` with an error
/// naming `what` and the last observation `probe` reported through `Err`.
///
/// Used instead of fixed sleeps: the wait ends as soon as the condition holds.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let deadline = Instant::now() + within;
    let mut last = String::from("never probed");
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(why) => last = why,
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out after {within:?} waiting for {what}; last: {last}"
            ));
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls through `client` until at least `n` nodes are HEALTHY; fails after `within`,
/// naming how many were.
pub async fn wait_for_healthy_nodes(
    client: &Client,
    n: usize,
    within: Duration,
) -> Result<(), String> {
    poll_until(
        &format!("{n} HEALTHY nodes"),
        within,
        Duration::from_millis(50),
        || async {
            let nodes = crate::client::api::list_nodes(client)
                .await
                .map_err(|e| e.to_string())?;
            let healthy = nodes
                .iter()
                .filter(|node| node.status == crate::proto::NodeStatus::Healthy as i32)
                .count();
            if healthy >= n {
                Ok(Some(()))
            } else {
                Err(format!("{healthy} of {n} nodes healthy"))
            }
        },
    )
    .await
}

/// What one controller said about the cluster.
#[derive(Clone, Debug)]
pub struct LeaderView {
    /// Position of the leader in [`LocalCluster::controllers`].
    pub pos: usize,
    /// The leader's own status answer (its term, commit index, members…).
    pub status: crate::proto::GetClusterStatusResponse,
}

impl LocalCluster {
    /// GetClusterStatus from the controller at `pos` only.
    pub async fn member_status(
        &self,
        pos: usize,
        timeout: Duration,
    ) -> Result<crate::proto::GetClusterStatusResponse, String> {
        let addr = self.controllers[pos].grpc.to_string();
        let client = Client::new(vec![addr.clone()], timeout);
        let channel = client.channel(&addr).await?;
        let mut cluster = crate::proto::cluster_service_client::ClusterServiceClient::new(channel);
        let status = cluster.get_cluster_status(crate::proto::GetClusterStatusRequest {});
        tokio::time::timeout(timeout, status)
            .await
            .map_err(|_| format!("{addr}: GetClusterStatus timed out"))?
            .map(tonic::Response::into_inner)
            .map_err(|s| format!("{addr}: {:?} {}", s.code(), s.message()))
    }

    /// The current leader as confirmed by the leader itself (its own status says
    /// `self_id == leader_id`), among the controllers at `candidates`.
    pub async fn find_leader(&self, candidates: &[usize]) -> Result<Option<LeaderView>, String> {
        let mut seen = Vec::new();
        for &pos in candidates {
            match self.member_status(pos, Duration::from_secs(1)).await {
                Ok(status) if status.leader_id != 0 && status.self_id == status.leader_id => {
                    return Ok(Some(LeaderView { pos, status }));
                }
                Ok(status) => seen.push(format!(
                    "{} says leader {} term {}",
                    status.self_id, status.leader_id, status.term
                )),
                Err(e) => seen.push(e),
            }
        }
        Err(seen.join("; "))
    }

    /// Waits up to `within` for a leader among `candidates` (see [`LocalCluster::find_leader`]).
    pub async fn wait_for_leader(
        &self,
        candidates: &[usize],
        within: Duration,
    ) -> Result<LeaderView, String> {
        poll_until("a leader", within, Duration::from_millis(50), || {
            self.find_leader(candidates)
        })
        .await
    }

    /// Positions of the controllers whose process is running.
    pub fn running_controllers(&mut self) -> Vec<usize> {
        (0..self.controllers.len())
            .filter(|&pos| self.controller_running(pos))
            .collect()
    }
}
