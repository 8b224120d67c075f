//! Three controllers in this process on loopback, talking Raft to each other over gRPC.
//!
//! What it shows: any member accepts any call — a follower forwards writes, heartbeats and
//! long polls to the leader (one hop, with the leader's answer passed back) — and a long poll
//! waiting on the leader is cancelled with UNAVAILABLE and a leader hint (`x-mlcp-leader`)
//! when leadership moves (docs/failures.md S11). Cluster status asked of a follower shows the
//! leader's member table (roles, match indexes). Waits are polls with deadlines, never sleeps.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mlcp::controller::{ServerHandle, ServerOptions, start_server};
use mlcp::gateway::forward::parse_leader_hint;
use mlcp::proto::cluster_service_client::ClusterServiceClient;
use mlcp::proto::node_service_client::NodeServiceClient;
use mlcp::proto::task_service_client::TaskServiceClient;
use mlcp::proto::{
    GetClusterStatusRequest, HeartbeatRequest, MemberRole, NodeCapacity, PollTaskRequest,
    SubmitTaskRequest, TransferLeaderRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);

fn free_ports(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// The leader every member agrees on.
async fn agreed_leader(addrs: &[SocketAddr]) -> u64 {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for a in addrs {
            let mut c = ClusterServiceClient::new(channel(*a));
            if let Ok(s) = c.get_cluster_status(GetClusterStatusRequest {}).await {
                seen.push(s.into_inner().leader_id);
            }
        }
        if seen.len() == addrs.len() && seen[0] != 0 && seen.iter().all(|l| *l == seen[0]) {
            return seen[0];
        }
        assert!(start.elapsed() < DEADLINE, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn heartbeat(node: &str) -> HeartbeatRequest {
    HeartbeatRequest {
        node_id: node.into(),
        capacity: Some(NodeCapacity {
            slots: 8,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn submit() -> SubmitTaskRequest {
    SubmitTaskRequest {
        task_type: "sleep".into(),
        task_data: r#"{"ms": 1}"#.into(),
        max_attempts: 1,
        ..Default::default()
    }
}

#[test]
fn followers_forward_and_polls_are_redirected_when_leadership_moves() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = free_ports(3);
    let peers: BTreeMap<u64, String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.to_string()))
        .collect();
    let shutdown = CancellationToken::new();
    let servers: Vec<ServerHandle> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let opts = ServerOptions {
                node_id: i as u64 + 1,
                listen: *a,
                peers: peers.clone(),
                http_listen: None,
                data_dir: dir.path().join(format!("c{}", i + 1)),
                tick: Duration::from_millis(10),
                ..ServerOptions::default()
            };
            start_server(opts, shutdown.clone()).expect("controller starts")
        })
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let leader = agreed_leader(&addrs).await;
        let follower = if leader == 1 { 2 } else { 1 };
        let at = |id: u64| addrs[id as usize - 1];

        // Writes and agent calls through a follower reach the leader.
        let mut via_follower = TaskServiceClient::new(channel(at(follower)));
        let t = via_follower
            .submit_task(submit())
            .await
            .expect("forwarded submit");
        let t = t.into_inner().task.unwrap();
        let mut agent = NodeServiceClient::new(channel(at(follower)));
        let hb = agent
            .heartbeat(heartbeat("agent-1"))
            .await
            .expect("forwarded heartbeat");
        assert!(hb.into_inner().registered);
        let start = Instant::now();
        loop {
            let p = agent
                .poll_task(PollTaskRequest {
                    node_id: "agent-1".into(),
                    wait_ms: 2000,
                    free_slots: 0,
                })
                .await
                .expect("forwarded poll")
                .into_inner();
            if p.assignments.iter().any(|a| a.task_id == t.task_id) {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "assignment never reached the follower's poll"
            );
        }

        // Status asked of a follower shows the leader's member table (every role, the match
        // indexes only the leader tracks) but the follower's own id.
        let start = Instant::now();
        loop {
            let s = ClusterServiceClient::new(channel(at(follower)))
                .get_cluster_status(GetClusterStatusRequest {})
                .await
                .expect("status from a follower")
                .into_inner();
            assert_eq!(s.self_id, follower);
            let role_of = |id: u64| s.members.iter().find(|m| m.id == id).unwrap().role;
            let others: Vec<_> = s.members.iter().filter(|m| m.id != leader).collect();
            assert_eq!(s.members.len(), 3, "{s:?}");
            assert_eq!(role_of(leader), MemberRole::Leader as i32, "{s:?}");
            if others
                .iter()
                .all(|m| m.role == MemberRole::Follower as i32 && m.match_index > 0)
            {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "followers' roles and match indexes never shown: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A long poll on the leader is cut short with a redirect when leadership moves.
        let mut on_leader = NodeServiceClient::new(channel(at(leader)));
        let poll = tokio::spawn(async move {
            let mut req = tonic::Request::new(PollTaskRequest {
                node_id: "agent-2".into(),
                wait_ms: 30_000,
                free_slots: 0,
            });
            // Marked as already forwarded, so should it arrive only after the transfer it is
            // refused at once instead of being forwarded to the new leader.
            req.metadata_mut().insert(
                mlcp::gateway::forward::FORWARDED_HEADER,
                "test".parse().unwrap(),
            );
            on_leader.poll_task(req).await
        });
        // Give the poll time to reach the leader and start waiting (bounded; either order
        // ends in UNAVAILABLE, the usual one shows the cancellation).
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(300) && !poll.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut cluster = ClusterServiceClient::new(channel(at(leader)));
        let target = cluster
            .transfer_leader(TransferLeaderRequest {
                target_id: follower,
            })
            .await
            .expect("transfer")
            .into_inner();
        assert_eq!(target.leader.unwrap().leader_id, follower);
        let err = tokio::time::timeout(DEADLINE, poll)
            .await
            .expect("poll cancelled before its 30 s wait")
            .unwrap()
            .expect_err("redirected");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        let new_leader = agreed_leader(&addrs).await;
        assert_ne!(new_leader, leader);
        if let Some((hint, _)) = parse_leader_hint(&err) {
            assert!(
                hint == 0 || hint == new_leader,
                "hint {hint} vs leader {new_leader}"
            );
        }
    });

    shutdown.cancel();
    for s in servers {
        s.join().expect("clean shutdown");
    }
}
