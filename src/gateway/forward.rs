//! Followers forward client and agent calls to the leader (docs/architecture.md#api: "Followers forward
//! client and agent calls to the leader; errors use standard gRPC codes with a leader hint").
//!
//! What this file owns:
//! - [`LeaderView`], the gateway's picture of who leads, kept current by the
//!   [`LeadershipWatcher`] actor (a subscriber of the raft actor's
//!   [`LeadershipChanged`] messages) through a `tokio::sync::watch` channel, so long polls can
//!   be cancelled the moment leadership moves (docs/lifecycle.md#failover, docs/failures.md S11);
//! - [`Router`], which decides per call whether to serve it here or forward it, hands out one
//!   reused channel per peer, and bounds forwarding to a single hop: a forwarded call carries
//!   [`FORWARDED_HEADER`] and is never forwarded again (a follower that receives one answers
//!   UNAVAILABLE with a hint instead, so two controllers with stale views cannot bounce a
//!   call between them forever).
//!
//! A leader hint travels in the `x-mlcp-leader` response metadata as `ID@ADDRESS` (either
//! part may be empty when unknown).

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix::{Actor, Context, Handler};
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::actors::LeadershipChanged;
use crate::raft::{NodeId, Term};

/// Request metadata key set on a forwarded call (value: the forwarding controller's id).
pub const FORWARDED_HEADER: &str = "x-mlcp-forwarded-by";
/// Largest response a follower accepts from the leader for a forwarded call, in bytes (a
/// page of tasks can exceed tonic's 4 MiB default).
pub const FORWARD_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Response metadata key carrying the leader hint, `ID@ADDRESS`.
pub const LEADER_HEADER: &str = "x-mlcp-leader";

/// Who leads, as this controller knows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderView {
    /// True if this controller is the leader.
    pub is_leader: bool,
    /// The known leader (possibly this controller), if any.
    pub leader: Option<NodeId>,
    /// Term of the view.
    pub term: Term,
}

impl From<LeadershipChanged> for LeaderView {
    fn from(m: LeadershipChanged) -> Self {
        LeaderView {
            is_leader: m.is_leader,
            leader: m.leader,
            term: m.term,
        }
    }
}

/// Subscriber of [`LeadershipChanged`] that publishes it on a watch channel for the gateway.
pub struct LeadershipWatcher {
    tx: watch::Sender<LeaderView>,
}

impl LeadershipWatcher {
    /// A watcher publishing on `tx`.
    pub fn new(tx: watch::Sender<LeaderView>) -> Self {
        LeadershipWatcher { tx }
    }
}

impl Actor for LeadershipWatcher {
    type Context = Context<Self>;
}

impl Handler<LeadershipChanged> for LeadershipWatcher {
    type Result = ();
    fn handle(&mut self, msg: LeadershipChanged, _: &mut Context<Self>) {
        self.tx.send_replace(msg.into());
    }
}

/// Where a call should be served.
pub enum Route {
    /// Serve it on this controller.
    Local,
    /// Forward it over this channel (to the leader); the request already carries the hop mark.
    Forward(Channel),
}

/// Where the members are: id → gRPC address (`host:port`). Implemented by the replication
/// shell's peer map (which follows membership changes) and by a plain map in tests.
pub trait AddressBook: Send + Sync + 'static {
    /// The gRPC address of member `id`, if known.
    fn address(&self, id: NodeId) -> Option<String>;
}

impl AddressBook for BTreeMap<NodeId, String> {
    fn address(&self, id: NodeId) -> Option<String> {
        self.get(&id).cloned()
    }
}

/// Decides where calls are served and holds one lazily connected, reused channel per leader
/// it forwards to. These channels are the gateway's own, not the Raft transport's: a
/// forwarded long poll may take 30 s, longer than any Raft request timeout, and tonic caps
/// a call at the channel's timeout.
#[derive(Clone)]
pub struct Router {
    inner: Arc<RouterInner>,
}

struct RouterInner {
    self_id: NodeId,
    self_address: String,
    leader: watch::Receiver<LeaderView>,
    book: Arc<dyn AddressBook>,
    /// Member → (address the channel was made for, channel).
    channels: RwLock<BTreeMap<NodeId, (String, Channel)>>,
    forward_timeout: Duration,
    connect_timeout: Duration,
}

impl Router {
    /// A router for controller `self_id` reachable at `self_address`. Member addresses come
    /// from `book`; a forwarded call times out after `forward_timeout` unless the caller
    /// sets a longer per-call timeout (long polls do).
    pub fn new(
        self_id: NodeId,
        self_address: String,
        leader: watch::Receiver<LeaderView>,
        book: Arc<dyn AddressBook>,
        forward_timeout: Duration,
    ) -> Self {
        Router {
            inner: Arc::new(RouterInner {
                self_id,
                self_address,
                leader,
                book,
                channels: RwLock::new(BTreeMap::new()),
                forward_timeout,
                connect_timeout: Duration::from_secs(1),
            }),
        }
    }

    /// This controller's id.
    pub fn self_id(&self) -> NodeId {
        self.inner.self_id
    }

    /// The current leader view.
    pub fn view(&self) -> LeaderView {
        *self.inner.leader.borrow()
    }

    /// A receiver that changes whenever the leader view does.
    pub fn subscribe(&self) -> watch::Receiver<LeaderView> {
        self.inner.leader.clone()
    }

    /// The gRPC address of member `id` (this controller included), if known.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        if id == self.inner.self_id {
            return Some(self.inner.self_address.clone());
        }
        self.inner.book.address(id)
    }

    /// The leader hint for responses and errors: `(leader id or 0, address or "")`.
    pub fn leader_hint(&self) -> (u64, String) {
        match self.view().leader {
            Some(id) => (id.get(), self.address_of(id).unwrap_or_default()),
            None => (0, String::new()),
        }
    }

    /// The leader hint as the proto message.
    pub fn leader_hint_proto(&self) -> crate::proto::LeaderHint {
        let (leader_id, leader_address) = self.leader_hint();
        crate::proto::LeaderHint {
            leader_id,
            leader_address,
        }
    }

    /// UNAVAILABLE carrying the leader hint in `x-mlcp-leader`.
    pub fn unavailable(&self, why: &str) -> Status {
        let (id, addr) = self.leader_hint();
        unavailable_with_hint(why, id, &addr)
    }

    /// Decide where a call that must run on the leader is served. On a follower with a known
    /// leader, marks `req` as forwarded (with the default forward timeout unless the call
    /// already set one) and returns the leader's channel; a call that was already forwarded
    /// once, or a follower that knows no leader, gets UNAVAILABLE with the best hint.
    pub fn route<T>(&self, req: &mut Request<T>) -> Result<Route, Status> {
        let view = self.view();
        if view.is_leader {
            return Ok(Route::Local);
        }
        if req.metadata().contains_key(FORWARDED_HEADER) {
            return Err(self.unavailable("not the leader (call was already forwarded once)"));
        }
        let Some(leader) = view.leader.filter(|l| *l != self.inner.self_id) else {
            return Err(self.unavailable("no leader is known yet; retry shortly"));
        };
        let channel = self.channel(leader)?;
        let value = MetadataValue::try_from(self.inner.self_id.get().to_string())
            .map_err(|_| Status::internal("forward header"))?;
        req.metadata_mut().insert(FORWARDED_HEADER, value);
        if !req.metadata().contains_key("grpc-timeout") {
            req.set_timeout(self.inner.forward_timeout);
        }
        Ok(Route::Forward(channel))
    }

    /// True if the call arrived as a forward from another controller.
    pub fn was_forwarded<T>(req: &Request<T>) -> bool {
        req.metadata().contains_key(FORWARDED_HEADER)
    }

    /// The reused channel to `peer` (created lazily on first use, replaced if the peer's
    /// address changed; tonic reconnects it as needed).
    pub fn channel(&self, peer: NodeId) -> Result<Channel, Status> {
        let Some(addr) = self.address_of(peer) else {
            return Err(self.unavailable(&format!("leader {peer} has no known address")));
        };
        if let Some((a, ch)) = self
            .inner
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            && *a == addr
        {
            return Ok(ch.clone());
        }
        let uri = if addr.contains("://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Status::internal(format!("bad address {addr:?} for member {peer}: {e}")))?
            .connect_timeout(self.inner.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        self.inner
            .channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer, (addr, channel.clone()));
        Ok(channel)
    }
}

/// UNAVAILABLE with the leader hint `id@addr` in `x-mlcp-leader` (id 0 = unknown).
pub fn unavailable_with_hint(why: &str, leader_id: u64, leader_addr: &str) -> Status {
    let msg = if leader_id == 0 {
        format!("{why} (leader unknown)")
    } else {
        format!("{why} (leader: {leader_id} at {leader_addr})")
    };
    let mut status = Status::unavailable(msg);
    if leader_id != 0 || !leader_addr.is_empty() {
        let hint = if leader_id == 0 {
            format!("@{leader_addr}")
        } else {
            format!("{leader_id}@{leader_addr}")
        };
        if let Ok(v) = MetadataValue::try_from(hint) {
            status.metadata_mut().insert(LEADER_HEADER, v);
        }
    }
    status
}

/// Parse a `x-mlcp-leader` value `ID@ADDRESS` into `(id, address)`; `None` if absent or
/// malformed. Clients use this to go to the leader directly.
pub fn parse_leader_hint(status: &Status) -> Option<(u64, String)> {
    let raw = status.metadata().get(LEADER_HEADER)?.to_str().ok()?;
    let (id, addr) = raw.split_once('@')?;
    let id = if id.is_empty() { 0 } else { id.parse().ok()? };
    Some((id, addr.to_string()))
}

/// Serves the call on the leader: on a follower, `forward_to_leader!(ctx, req,
/// TaskServiceClient::submit_task)` forwards `req` (with its metadata: deadline, forwarded
/// mark) to the leader through the generated client and returns the leader's answer from the
/// enclosing handler; on the leader it does nothing. A second hop, or no known leader, returns
/// UNAVAILABLE with the leader hint ([`Router::route`]).
macro_rules! forward_to_leader {
    ($ctx:expr, $req:ident, $client:ident :: $method:ident) => {
        if let $crate::gateway::forward::Route::Forward(ch) = $ctx.router.route(&mut $req)? {
            return $client::new(ch)
                .max_decoding_message_size($crate::gateway::forward::FORWARD_RESPONSE_BYTES_MAX)
                .$method($req)
                .await;
        }
    };
}
pub(crate) use forward_to_leader;

#[cfg(test)]
mod tests {
    use super::*;

    fn router(view: LeaderView) -> (Router, watch::Sender<LeaderView>) {
        let (tx, rx) = watch::channel(view);
        let addrs = BTreeMap::from([
            (NodeId(1), "127.0.0.1:1".to_string()),
            (NodeId(2), "127.0.0.1:2".to_string()),
        ]);
        let router = Router::new(
            NodeId(1),
            "127.0.0.1:1".into(),
            rx,
            Arc::new(addrs),
            Duration::from_secs(1),
        );
        (router, tx)
    }

    #[test]
    fn leader_serves_locally() {
        let (r, _tx) = router(LeaderView {
            is_leader: true,
            leader: Some(NodeId(1)),
            term: Term(3),
        });
        let mut req = Request::new(());
        assert!(matches!(r.route(&mut req), Ok(Route::Local)));
    }

    #[test]
    fn unknown_leader_is_unavailable_without_hint() {
        let (r, _tx) = router(LeaderView::default());
        let mut req = Request::new(());
        let err = r.route(&mut req).err().expect("must refuse");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(parse_leader_hint(&err), None);
    }

    #[tokio::test]
    async fn follower_forwards_once_and_marks_the_hop() {
        let (r, _tx) = router(LeaderView {
            is_leader: false,
            leader: Some(NodeId(2)),
            term: Term(3),
        });
        let mut req = Request::new(());
        assert!(matches!(r.route(&mut req), Ok(Route::Forward(_))));
        assert!(Router::was_forwarded(&req));
        // The same (already forwarded) call must not be forwarded again.
        let err = r.route(&mut req).err().expect("second hop refused");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(
            parse_leader_hint(&err),
            Some((2, "127.0.0.1:2".to_string()))
        );
    }
}
