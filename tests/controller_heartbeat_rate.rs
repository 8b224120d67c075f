//! How many heartbeats one controller answers per second (the question of docs/architecture.md#tools, measured
//! in-process over loopback gRPC). Ignored by default: run with
//! `cargo test --release --test controller_heartbeat_rate -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mlcp::controller::{ServerOptions, start_server};
use mlcp::proto::cluster_service_client::ClusterServiceClient;
use mlcp::proto::node_service_client::NodeServiceClient;
use mlcp::proto::{GetClusterStatusRequest, HeartbeatRequest, NodeCapacity};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

#[test]
#[ignore = "measurement, not a check"]
fn heartbeats_per_second() {
    let nodes: usize = std::env::var("MLCP_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let clients: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        // Registering every node takes a while; none may go stale meanwhile.
        node_stale_after: Duration::from_secs(600),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).unwrap();
    let addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut cl = ClusterServiceClient::new(ch.clone());
        let start = Instant::now();
        while cl
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .map(|s| s.into_inner().leader_id)
            .unwrap_or(0)
            == 0
        {
            assert!(start.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let hb = |i: usize| HeartbeatRequest {
            node_id: format!("node-{i:05}"),
            capacity: Some(NodeCapacity {
                slots: 4,
                ..Default::default()
            }),
            cpu_usage: 5.0,
            memory_usage: 5.0,
            ..Default::default()
        };
        // Register every node first (these write), then measure steady heartbeats (no writes).
        let mut c = NodeServiceClient::new(ch.clone());
        for i in 0..nodes {
            c.heartbeat(hb(i)).await.unwrap();
        }
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        let begin = Instant::now();
        let rounds = 3;
        let mut tasks = Vec::new();
        for k in 0..clients {
            let mut c = NodeServiceClient::new(ch.clone());
            let lat = lat.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    for i in (k..nodes).step_by(clients) {
                        let t = Instant::now();
                        let r = c.heartbeat(hb(i)).await.unwrap().into_inner();
                        assert!(!r.registered);
                        lat.lock().unwrap().push(t.elapsed());
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = begin.elapsed().as_secs_f64();
        let mut l = lat.lock().unwrap().clone();
        l.sort();
        let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
        println!(
            "nodes={nodes} clients={clients} heartbeats={} rate={:.0}/s p50={:?} p99={:?}",
            l.len(),
            l.len() as f64 / secs,
            p(0.5),
            p(0.99)
        );
    });
    shutdown.cancel();
    server.join().unwrap();
}

/// SubmitTask throughput and latency on one durable controller at 64 concurrent clients
/// (the shape of docs/architecture.md#tools, in-process). Ignored by default.
#[test]
#[ignore = "measurement, not a check"]
fn submits_per_second() {
    use mlcp::proto::SubmitTaskRequest;
    use mlcp::proto::task_service_client::TaskServiceClient;
    let per_client: usize = 200;
    let clients: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: None,
        data_dir: dir.path().join("data"),
        ..ServerOptions::default()
    };
    let shutdown = CancellationToken::new();
    let server = start_server(opts, shutdown.clone()).unwrap();
    let addr = server.grpc_addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let ch = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let mut cl = ClusterServiceClient::new(ch.clone());
        let start = Instant::now();
        while cl
            .get_cluster_status(GetClusterStatusRequest {})
            .await
            .map(|s| s.into_inner().leader_id)
            .unwrap_or(0)
            == 0
        {
            assert!(start.elapsed() < Duration::from_secs(20));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let lat = Arc::new(std::sync::Mutex::new(Vec::new()));
        let begin = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut c = TaskServiceClient::new(ch.clone());
            let lat = lat.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..per_client {
                    let t = Instant::now();
                    c.submit_task(SubmitTaskRequest {
                        task_type: "noop".into(),
                        task_data: "{}".into(),
                        max_attempts: 1,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                    lat.lock().unwrap().push(t.elapsed());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let secs = begin.elapsed().as_secs_f64();
        let mut l = lat.lock().unwrap().clone();
        l.sort();
        let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)];
        println!(
            "clients={clients} submits={} rate={:.0}/s p50={:?} p99={:?}",
            l.len(),
            l.len() as f64 / secs,
            p(0.5),
            p(0.99)
        );
    });
    shutdown.cancel();
    server.join().unwrap();
}
