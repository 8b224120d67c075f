//! The peer transport: carries the Raft core's messages to other controllers.
//!
//! Owns one tonic [`Channel`] per peer (lazily connected, reused for every call, with a
//! connect timeout and a request timeout) in a [`PeerChannels`] map that the control shell
//! also uses to forward client calls to the leader, and one sender task per peer fed by a
//! bounded queue. The raft actor hands over each Ready's messages at once
//! ([`Outbox::send`]); they are grouped per peer into one `RaftBatch`, and batches that queue
//! up behind a slow call are merged into the next call.
//!
//! Nothing is retried or queued without bound: when a peer's queue is full, or a call
//! fails, the messages are dropped. Raft tolerates loss (the leader re-sends AppendEntries
//! from its progress, heartbeats repeat, elections time out), and a stale message delivered
//! late is worth less than a fresh one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::actors::raft::Outbox;
use crate::proto::RaftBatch;
use crate::proto::raft_service_client::RaftServiceClient;
use crate::raft::{Message, NodeId};

/// Limits and timeouts of the gRPC transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Longest wait for a TCP/HTTP2 connection to a peer.
    pub connect_timeout: Duration,
    /// Longest wait for one `RaftService.Send` call.
    pub request_timeout: Duration,
    /// Batches (one per Ready) waiting for one peer before new ones are dropped.
    pub queue_batches_max: usize,
    /// Encoded message bytes merged into one call, at most (one message may exceed it alone).
    pub call_bytes_max: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(3),
            queue_batches_max: 256,
            call_bytes_max: 8 << 20,
        }
    }
}

/// The largest `RaftBatch` a controller accepts, in bytes (twice the default call size plus
/// room for one oversized snapshot chunk).
pub const RAFT_BATCH_BYTES_MAX: usize = 64 << 20;

/// Turns `host:port` (or a full URI) into an `http://` URI.
pub fn peer_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[derive(Clone)]
struct PeerChannel {
    address: String,
    channel: Channel,
}

/// Peer id → reusable tonic channel (and its address). Cheap to clone; every clone sees the
/// same map. Channels connect lazily on first use and reconnect by themselves after a failure.
#[derive(Clone)]
pub struct PeerChannels {
    inner: Arc<Mutex<BTreeMap<NodeId, PeerChannel>>>,
    options: TransportOptions,
}

impl PeerChannels {
    /// An empty map whose channels use `options`' timeouts.
    pub fn new(options: TransportOptions) -> PeerChannels {
        PeerChannels {
            inner: Arc::default(),
            options,
        }
    }

    /// The channel to `id`, if its address is known. Must be called inside a tokio runtime
    /// (a new channel spawns its connection task).
    pub fn get(&self, id: NodeId) -> Option<Channel> {
        self.lock().get(&id).map(|p| p.channel.clone())
    }

    /// The gRPC address of `id`, if known.
    pub fn address(&self, id: NodeId) -> Option<String> {
        self.lock().get(&id).map(|p| p.address.clone())
    }

    /// Every known peer and its address, ascending by id.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.lock()
            .iter()
            .map(|(id, p)| (*id, p.address.clone()))
            .collect()
    }

    /// Records `id` at `address`, returning its channel (a new one only if the address is
    /// new or changed). Errors: the address is not a valid URI authority.
    pub fn set(&self, id: NodeId, address: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.lock();
        if let Some(p) = map.get(&id).filter(|p| p.address == address) {
            return Ok(p.channel.clone());
        }
        let channel = Endpoint::from_shared(peer_uri(address))?
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        map.insert(
            id,
            PeerChannel {
                address: address.to_owned(),
                channel: channel.clone(),
            },
        );
        Ok(channel)
    }

    /// Forgets every peer not in `keep`.
    pub fn retain(&self, keep: impl Fn(NodeId) -> bool) {
        self.lock().retain(|id, _| keep(*id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, PeerChannel>> {
        // A poisoned map still holds valid channels; a panic elsewhere must not cut us off.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters of the transport, for metrics.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Successful `RaftService.Send` calls.
    pub calls_ok: AtomicU64,
    /// Failed calls (peer down, timeout, refused); their messages are lost.
    pub calls_failed: AtomicU64,
    /// Messages dropped because the peer's queue was full or its address unknown.
    pub messages_dropped: AtomicU64,
}

struct PeerQueue {
    address: String,
    tx: mpsc::Sender<Vec<Message>>,
    task: JoinHandle<()>,
}

/// The gRPC [`Outbox`]: one bounded queue and sender task per peer over [`PeerChannels`].
pub struct GrpcTransport {
    self_id: NodeId,
    cluster_name: String,
    channels: PeerChannels,
    queues: Mutex<BTreeMap<NodeId, PeerQueue>>,
    options: TransportOptions,
    stats: Arc<TransportStats>,
}

impl GrpcTransport {
    /// A transport sending as `self_id` of `cluster_name` over `channels`.
    pub fn new(self_id: NodeId, cluster_name: String, channels: PeerChannels) -> GrpcTransport {
        let options = channels.options.clone();
        GrpcTransport {
            self_id,
            cluster_name,
            channels,
            queues: Mutex::default(),
            options,
            stats: Arc::default(),
        }
    }

    /// The transport's counters.
    pub fn stats(&self) -> Arc<TransportStats> {
        self.stats.clone()
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, PeerQueue>> {
        self.queues.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_peer(&self, to: NodeId, address: &str) -> Option<PeerQueue> {
        let channel = match self.channels.set(to, address) {
            Ok(c) => c,
            Err(err) => {
                tracing::warn!(peer = %to, address, error = %err, "invalid peer address");
                return None;
            }
        };
        let (tx, rx) = mpsc::channel(self.options.queue_batches_max);
        let sender = PeerSender {
            from: self.self_id,
            to,
            cluster_name: self.cluster_name.clone(),
            client: RaftServiceClient::new(channel)
                .max_encoding_message_size(RAFT_BATCH_BYTES_MAX)
                .max_decoding_message_size(RAFT_BATCH_BYTES_MAX),
            call_bytes_max: self.options.call_bytes_max,
            stats: self.stats.clone(),
        };
        let task = tokio::spawn(sender.run(rx));
        Some(PeerQueue {
            address: address.to_owned(),
            tx,
            task,
        })
    }
}

impl Outbox for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        let mut per_peer: BTreeMap<NodeId, Vec<Message>> = BTreeMap::new();
        for m in messages {
            per_peer.entry(m.to).or_default().push(m);
        }
        let queues = self.queues();
        for (to, batch) in per_peer {
            let n = batch.len() as u64;
            let queued = queues
                .get(&to)
                .is_some_and(|q| q.tx.try_send(batch).is_ok());
            if !queued {
                self.stats.messages_dropped.fetch_add(n, Ordering::Relaxed);
                tracing::trace!(peer = %to, messages = n, "peer queue full or peer unknown; dropped");
            }
        }
    }

    fn set_peers(&self, peers: &BTreeMap<NodeId, String>) {
        let mut queues = self.queues();
        queues.retain(|id, q| {
            let keep = peers.get(id).is_some_and(|a| *a == q.address);
            if !keep {
                q.task.abort();
            }
            keep
        });
        for (id, address) in peers {
            if *id == self.self_id || queues.contains_key(id) {
                continue;
            }
            if let Some(q) = self.start_peer(*id, address) {
                queues.insert(*id, q);
            }
        }
        self.channels.retain(|id| peers.contains_key(&id));
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        for q in self.queues().values() {
            q.task.abort();
        }
    }
}

struct PeerSender {
    from: NodeId,
    to: NodeId,
    cluster_name: String,
    client: RaftServiceClient<Channel>,
    call_bytes_max: usize,
    stats: Arc<TransportStats>,
}

impl PeerSender {
    async fn run(mut self, mut rx: mpsc::Receiver<Vec<Message>>) {
        while let Some(first) = rx.recv().await {
            let mut encoded: Vec<Vec<u8>> = first.iter().map(Message::encode_to_vec).collect();
            let mut bytes: usize = encoded.iter().map(Vec::len).sum();
            while bytes < self.call_bytes_max {
                let Ok(more) = rx.try_recv() else { break };
                for m in &more {
                    let e = m.encode_to_vec();
                    bytes += e.len();
                    encoded.push(e);
                }
            }
            let count = encoded.len() as u64;
            let batch = RaftBatch {
                from: self.from.0,
                cluster_name: self.cluster_name.clone(),
                messages: encoded,
                to: self.to.0,
            };
            match self.client.send(batch).await {
                Ok(_) => {
                    self.stats.calls_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(status) => {
                    self.stats.calls_failed.fetch_add(1, Ordering::Relaxed);
                    // What queued up behind a failed call is stale by now; Raft re-sends.
                    let mut dropped = count;
                    while let Ok(stale) = rx.try_recv() {
                        dropped += stale.len() as u64;
                    }
                    self.stats
                        .messages_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                    tracing::debug!(
                        peer = %self.to, code = ?status.code(), message = status.message(),
                        dropped, "raft send failed"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_uri_adds_a_scheme_only_when_missing() {
        assert_eq!(peer_uri("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(peer_uri("https://c1.example:443"), "https://c1.example:443");
    }

    #[tokio::test]
    async fn peer_channels_reuse_a_channel_until_the_address_changes() {
        let channels = PeerChannels::new(TransportOptions::default());
        channels.set(NodeId(2), "127.0.0.1:1").unwrap();
        channels.set(NodeId(2), "127.0.0.1:1").unwrap();
        assert_eq!(channels.address(NodeId(2)).as_deref(), Some("127.0.0.1:1"));
        channels.set(NodeId(2), "127.0.0.1:2").unwrap();
        assert_eq!(channels.address(NodeId(2)).as_deref(), Some("127.0.0.1:2"));
        channels.retain(|id| id != NodeId(2));
        assert!(channels.get(NodeId(2)).is_none());
    }

    #[tokio::test]
    async fn messages_to_a_dead_peer_are_dropped_not_queued_forever() {
        let channels = PeerChannels::new(TransportOptions {
            connect_timeout: Duration::from_millis(50),
            request_timeout: Duration::from_millis(100),
            queue_batches_max: 2,
            call_bytes_max: 1 << 20,
        });
        let t = GrpcTransport::new(NodeId(1), "test".into(), channels);
        // Port 1 on loopback refuses connections.
        t.set_peers(&[(NodeId(2), "127.0.0.1:1".to_string())].into());
        let msg = || Message {
            from: NodeId(1),
            to: NodeId(2),
            term: crate::raft::Term(1),
            body: crate::raft::MessageBody::TimeoutNow,
        };
        for _ in 0..100 {
            t.send(vec![msg()]);
        }
        let stats = t.stats();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.messages_dropped.load(Ordering::Relaxed) < 100 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "messages neither sent nor dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(stats.calls_ok.load(Ordering::Relaxed), 0);
        // Messages to a peer that is not a member are dropped too.
        t.send(vec![Message {
            to: NodeId(9),
            ..msg()
        }]);
        assert_eq!(stats.messages_dropped.load(Ordering::Relaxed), 101);
    }
}
