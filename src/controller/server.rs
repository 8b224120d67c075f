//! The controller process: binds the ports, starts the actix system, the replication shell,
//! the control actors, the tonic server and the HTTP endpoint, and stops them all when the
//! shutdown token is cancelled.
//!
//! Threads: one controller thread runs an actix system on a multi-threaded tokio runtime.
//! Actors live on the system's arbiter (a `LocalSet` on that thread); the tonic and axum
//! servers are spawned onto the runtime's worker threads and reach the actors through their
//! bounded mailboxes. The log writer has its own thread (see `crate::actors::log_writer`).

#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use actix::{Actor, Addr, Supervisor};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tower::util::MapResponseLayer;

use crate::actors::MonoClock;
use crate::actors::heartbeat_monitor::{HeartbeatMonitorActor, MonitorOptions};
use crate::actors::manifest::{ManifestActor, SetScheduler};
use crate::actors::proposer::Proposer;
use crate::actors::raft::{StartError, StateMachine, StopRaft, SubscribeLeadership};
use crate::actors::scheduler::{SchedulerActor, SchedulerOptions};
use crate::controller::ServerOptions;
use crate::controller::replication::{ReplicationHandle, start_replication};
use crate::gateway::cluster_service::ClusterSvc;
use crate::gateway::context::Ctx;
use crate::gateway::forward::{AddressBook, LeaderView, LeadershipWatcher, Router};
use crate::gateway::node_service::NodeSvc;
use crate::gateway::task_service::TaskSvc;
use crate::peer::client::PeerChannels;
use crate::peer::server::RaftGrpc;
use crate::proto::cluster_service_server::ClusterServiceServer;
use crate::proto::node_service_server::NodeServiceServer;
use crate::proto::raft_service_server::RaftServiceServer;
use crate::proto::task_service_server::TaskServiceServer;
use crate::raft::{LogIndex, NodeId};

/// Largest client or agent message a controller decodes, in bytes (larger ones get
/// RESOURCE_EXHAUSTED; docs/architecture.md#bad-input).
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Largest response a controller encodes, in bytes (a page of 1000 tasks with large payloads
/// may exceed the decode limit).
pub const CLIENT_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default timeout of a call forwarded from a follower to the leader.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the controller did not start or stopped with an error. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The gRPC port could not be bound.
    #[error("cannot listen for gRPC on {addr}: {reason}")]
    GrpcListen {
        /// The address.
        addr: SocketAddr,
        /// Why (e.g. "the port is already in use").
        reason: String,
    },
    /// The HTTP port could not be bound.
    #[error("cannot listen for HTTP on {addr}: {reason}")]
    HttpListen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The replication shell did not start (bad membership options, a data dir of another
    /// node or cluster, an unreadable log, ...).
    #[error("{0}")]
    Replication(#[from] StartError),
    /// The runtime or a thread could not be created.
    #[error("cannot start the controller runtime: {0}")]
    Runtime(std::io::Error),
    /// The gRPC server failed while serving.
    #[error("gRPC server failed: {0}")]
    Serve(String),
    /// The controller thread panicked.
    #[error("the controller thread panicked")]
    Panicked,
}

fn listen_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => "the port is already in use".to_string(),
        std::io::ErrorKind::AddrNotAvailable => "the address is not on this machine".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// A running controller.
pub struct ServerHandle {
    /// Where gRPC is served (the bound address, useful with port 0).
    pub grpc_addr: SocketAddr,
    /// Where HTTP is served, if enabled.
    pub http_addr: Option<SocketAddr>,
    thread: JoinHandle<Result<(), ServerError>>,
}

impl ServerHandle {
    /// Wait for the controller to stop (after its shutdown token is cancelled), blocking
    /// the calling thread.
    pub fn join(self) -> Result<(), ServerError> {
        self.thread.join().unwrap_or(Err(ServerError::Panicked))
    }

    /// [`ServerHandle::join`] for async callers (runs the blocking join on tokio's blocking
    /// pool).
    pub async fn stopped(self) -> Result<(), ServerError> {
        tokio::task::spawn_blocking(move || self.join())
            .await
            .unwrap_or(Err(ServerError::Panicked))
    }
}

/// Start a controller and return once it serves (ports bound, replication started).
///
/// Errors: a port in use (checked before anything else, so nothing is touched), a data dir
/// of another node or cluster, bad membership options, a runtime that cannot start.
pub fn start_server(
    mut opts: ServerOptions,
    shutdown: CancellationToken,
) -> Result<ServerHandle, ServerError> {
    let grpc = std::net::TcpListener::bind(opts.listen).map_err(|e| ServerError::GrpcListen {
        addr: opts.listen,
        reason: listen_reason(&e),
    })?;
    let grpc_addr = grpc.local_addr().map_err(ServerError::Runtime)?;
    grpc.set_nonblocking(true).map_err(ServerError::Runtime)?;
    let http = match opts.http_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr).map_err(|e| ServerError::HttpListen {
                addr,
                reason: listen_reason(&e),
            })?;
            l.set_nonblocking(true).map_err(ServerError::Runtime)?;
            Some(l)
        }
        None => None,
    };
    let http_addr = match &http {
        Some(l) => Some(l.local_addr().map_err(ServerError::Runtime)?),
        None => None,
    };
    // With port 0 the member's own address is only known now.
    opts.listen = grpc_addr;
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name(format!("mlcp-controller-{}", opts.node_id))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("mlcp-worker")
                .build()
                .map_err(ServerError::Runtime)?;
            let system = actix_rt::System::with_tokio_rt(|| runtime);
            system.block_on(controller(opts, grpc, http, shutdown, ready_tx))
        })
        .map_err(ServerError::Runtime)?;
    match ready_rx.recv() {
        Ok(()) => Ok(ServerHandle {
            grpc_addr,
            http_addr,
            thread,
        }),
        // The controller failed before it was ready: its error is the thread's result.
        Err(_) => Err(thread
            .join()
            .unwrap_or(Err(ServerError::Panicked))
            .err()
            .unwrap_or(ServerError::Serve(
                "the controller stopped before it was ready".into(),
            ))),
    }
}

/// Run a controller until `shutdown` is cancelled (blocking the calling thread), then stop
/// gracefully: stop accepting calls, end long polls, finish in-flight calls, stop the
/// replication shell and the actor system.
///
/// Errors: as [`start_server`], or the gRPC server failing while serving.
pub fn run_server(opts: ServerOptions, shutdown: CancellationToken) -> Result<(), ServerError> {
    start_server(opts, shutdown)?.join()
}

impl AddressBook for PeerChannels {
    fn address(&self, id: NodeId) -> Option<String> {
        PeerChannels::address(self, id)
    }
}

/// The control shell of one controller: the actors beside the replication shell.
struct ControlActors {
    manifest: Addr<ManifestActor>,
    monitor: Addr<HeartbeatMonitorActor>,
    proposer: Proposer,
    leader_view: watch::Receiver<LeaderView>,
}

/// Starts the scheduler, the heartbeat monitor and the leadership watcher around `manifest`
/// (all on one [`MonoClock`]) and subscribes them to leadership changes, the manifest actor
/// first so its leader state exists before the others ask for a step.
async fn start_control_actors(
    manifest: Addr<ManifestActor>,
    monitor_opts: MonitorOptions,
    clock: MonoClock,
    repl: &ReplicationHandle,
) -> ControlActors {
    let proposer = Proposer::new(repl.raft.clone().recipient());
    let (m, p) = (manifest.clone(), proposer.clone());
    let scheduler =
        Supervisor::start(move |_| SchedulerActor::new(SchedulerOptions::default(), clock, m, p));
    manifest.do_send(SetScheduler {
        scheduler: scheduler.clone().recipient(),
    });
    let (m, p) = (manifest.clone(), proposer.clone());
    let raft_status = repl.raft.clone().recipient();
    let monitor = Supervisor::start(move |_| {
        HeartbeatMonitorActor::new(monitor_opts, clock, m, p, raft_status)
    });
    let (leader_tx, leader_view) = watch::channel(LeaderView::default());
    let watcher = LeadershipWatcher::new(leader_tx).start();
    for subscriber in [
        manifest.clone().recipient(),
        scheduler.recipient(),
        monitor.clone().recipient(),
        watcher.recipient(),
    ] {
        let _ = repl.raft.send(SubscribeLeadership { subscriber }).await;
    }
    ControlActors {
        manifest,
        monitor,
        proposer,
        leader_view,
    }
}

/// What the gateway services share: the actors, the leader view and the router.
fn gateway_context(
    opts: &ServerOptions,
    repl: &ReplicationHandle,
    actors: ControlActors,
    applied: watch::Receiver<LogIndex>,
    shutdown: &CancellationToken,
) -> Ctx {
    let self_address = repl
        .configured_addresses
        .get(&repl.node_id)
        .cloned()
        .unwrap_or_else(|| opts.listen.to_string());
    let router = Router::new(
        repl.node_id,
        self_address,
        actors.leader_view,
        Arc::new(repl.peers.clone()),
        FORWARD_TIMEOUT,
    );
    Ctx {
        router,
        manifest: actors.manifest,
        proposer: actors.proposer,
        read_barrier: repl.raft.clone().recipient(),
        monitor: actors.monitor,
        raft: repl.raft.clone(),
        applied,
        shutdown: shutdown.clone(),
        cluster_name: opts.cluster_name.clone(),
    }
}

/// The tonic server with every service: clients' and agents' with their message limits, and
/// the peers' `RaftService`. A request over the decode limit is answered RESOURCE_EXHAUSTED
/// (the gRPC convention, docs/architecture.md#bad-input) instead of tonic's OUT_OF_RANGE.
fn grpc_server(
    ctx: Ctx,
    raft_service: RaftServiceServer<RaftGrpc>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> impl Future<Output = Result<(), tonic::transport::Error>> {
    let oversize = MapResponseLayer::new(|mut resp: http::Response<tonic::body::Body>| {
        rewrite_oversize_status(resp.headers_mut());
        resp
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(oversize)
        .add_service(
            TaskServiceServer::new(TaskSvc::new(ctx.clone()))
                .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CLIENT_RESPONSE_BYTES_MAX),
        )
        .add_service(
            NodeServiceServer::new(NodeSvc::new(ctx.clone()))
                .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CLIENT_RESPONSE_BYTES_MAX),
        )
        .add_service(
            ClusterServiceServer::new(ClusterSvc::new(ctx))
                .max_decoding_message_size(CLIENT_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(CLIENT_RESPONSE_BYTES_MAX),
        )
        .add_service(raft_service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown.cancelled_owned())
}

/// One controller from start to stop, on the controller thread's actix system: the manifest
/// actor, the replication shell, the control actors, then the gRPC and HTTP servers until
/// `shutdown` is cancelled.
async fn controller(
    opts: ServerOptions,
    grpc: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    shutdown: CancellationToken,
    ready: std::sync::mpsc::SyncSender<()>,
) -> Result<(), ServerError> {
    let (applied_tx, applied_rx) = watch::channel(LogIndex(0));
    let clock = MonoClock::start();
    let monitor_opts = MonitorOptions::with_stale_after(opts.node_stale_after);
    let liveness = monitor_opts.liveness.clone();
    let manifest = Supervisor::start(move |_| ManifestActor::new(applied_tx, liveness, clock));
    let state_machine = StateMachine {
        apply: manifest.clone().recipient(),
        take_snapshot: manifest.clone().recipient(),
        restore: manifest.clone().recipient(),
    };
    let repl = start_replication(&opts, state_machine).await?;
    let node_id = repl.node_id;
    let actors = start_control_actors(manifest, monitor_opts, clock, &repl).await;
    let ctx = gateway_context(&opts, &repl, actors, applied_rx, &shutdown);

    let listener = tokio::net::TcpListener::from_std(grpc).map_err(ServerError::Runtime)?;
    let raft_service = repl.service.clone();
    let grpc_task = tokio::spawn(grpc_server(
        ctx.clone(),
        raft_service,
        listener,
        shutdown.clone(),
    ));
    let http_task = match http {
        Some(l) => {
            let l = tokio::net::TcpListener::from_std(l).map_err(ServerError::Runtime)?;
            let serve = axum::serve(l, super::http::router(ctx.clone()))
                .with_graceful_shutdown(shutdown.clone().cancelled_owned());
            Some(tokio::spawn(async move { serve.await }))
        }
        None => None,
    };
    tracing::info!(node = %node_id, listen = %opts.listen, "controller serving");
    let _ = ready.send(());

    shutdown.cancelled().await;
    tracing::info!(node = %node_id, "controller stopping");
    let served = grpc_task.await;
    if let Some(h) = http_task {
        let _ = h.await;
    }
    let _ = repl.raft.send(StopRaft).await;
    actix::System::current().stop();
    match served {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Serve(e.to_string())),
        Err(e) => Err(ServerError::Serve(e.to_string())),
    }
}

/// OUT_OF_RANGE (11) carrying tonic's "message length too large" becomes RESOURCE_EXHAUSTED
/// (8). Only a trailers-only response (the status in the headers) can carry it: tonic
/// decodes a unary request before calling the handler.
fn rewrite_oversize_status(headers: &mut http::HeaderMap) {
    let is_out_of_range = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11");
    let too_large = headers.get("grpc-message").is_some_and(|v| {
        let s = String::from_utf8_lossy(v.as_bytes());
        s.contains("too large") || s.contains("too%20large")
    });
    if is_out_of_range && too_large {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_status_is_rewritten_and_nothing_else() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", http::HeaderValue::from_static("11"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("Error,%20decoded%20message%20length%20too%20large"),
        );
        rewrite_oversize_status(&mut h);
        assert_eq!(h.get("grpc-status").unwrap(), "8");

        let mut other = http::HeaderMap::new();
        other.insert("grpc-status", http::HeaderValue::from_static("11"));
        other.insert(
            "grpc-message",
            http::HeaderValue::from_static("page out of range"),
        );
        rewrite_oversize_status(&mut other);
        assert_eq!(other.get("grpc-status").unwrap(), "11");
    }

    #[test]
    fn port_in_use_is_refused_with_a_one_line_reason() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = ServerOptions {
            listen: taken.local_addr().unwrap(),
            data_dir: dir.path().to_path_buf(),
            http_listen: None,
            ..ServerOptions::default()
        };
        let err = start_server(opts, CancellationToken::new())
            .err()
            .expect("must refuse");
        let line = err.to_string();
        assert!(line.contains("already in use"), "{line}");
        assert!(!line.contains('\n'), "{line}");
        // Nothing was written into the data dir.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// `start_server`, retried while the previous controller's log writer thread still holds
    /// the store (the replication shell does not join that thread on stop), up to 10 s.
    fn start_when_store_free(
        opts: ServerOptions,
        token: CancellationToken,
    ) -> Result<ServerHandle, ServerError> {
        let start = std::time::Instant::now();
        loop {
            match start_server(opts.clone(), token.clone()) {
                Err(e)
                    if e.to_string().contains("already open")
                        && start.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    #[test]
    fn a_data_dir_of_another_node_or_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |node_id: u64, cluster: &str| ServerOptions {
            node_id,
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: None,
            data_dir: dir.path().join("data"),
            cluster_name: cluster.into(),
            ..ServerOptions::default()
        };
        let first = CancellationToken::new();
        let h = start_server(opts(1, "alpha"), first.clone()).expect("fresh dir accepted");
        first.cancel();
        h.join().expect("clean stop");
        for (id, cluster) in [(2, "alpha"), (1, "beta")] {
            let err = start_when_store_free(opts(id, cluster), CancellationToken::new())
                .err()
                .expect("must refuse");
            let line = err.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(
                line.contains("belongs to node 1 of cluster 'alpha'"),
                "{line}"
            );
        }
        let again = CancellationToken::new();
        let h = start_when_store_free(opts(1, "alpha"), again.clone()).expect("owner accepted");
        again.cancel();
        h.join().expect("clean stop");
    }
}
