//! The failover gRPC client over a list of controllers (used by the CLI, the demo, the
//! benches and the test kit): tries each address in order, follows leader
//! hints, and retries while the cluster has no leader, until the request timeout.
//!
//! Every member accepts every call (followers forward to the leader), so the first reachable
//! member usually answers. A member that answers UNAVAILABLE (no leader yet, or it lost its
//! quorum) may name the leader in the response metadata ([`LEADER_METADATA`], `ID@ADDRESS`);
//! that address is tried next.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Why [`Client::call`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No controller answered; names every address tried with the reason it failed.
    #[error("no reachable mlcp server; tried {}", format_tried(.tried))]
    NoServer {
        /// `(address, why it failed)` in the order tried.
        tried: Vec<(String, String)>,
    },
    /// A controller answered with a gRPC error (the last UNAVAILABLE once the timeout
    /// passed, or the first other error).
    #[error("server error {:?}: {}", .0.code(), .0.message())]
    Status(Status),
}

/// `addr (why), addr (why), …` on one line.
pub fn format_tried(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(addr, why)| format!("{addr} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Response metadata key in which a controller names the leader as `ID@ADDRESS` (either part
/// may be empty when unknown); the gateway's `forward::LEADER_HEADER`.
pub const LEADER_METADATA: &str = "x-mlcp-leader";

/// Pause between rounds over all addresses while some member is up but has no leader.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// Turns `host:port` into `http://host:port`; leaves an address with a scheme alone.
pub fn to_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Controllers to ask, with one cached channel per address.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    timeout: Duration,
    channels: Mutex<BTreeMap<String, Channel>>,
}

/// What one attempt against one address came to.
enum Attempt<T> {
    Done(Result<T, Status>),
    /// Nothing listens there (or the connection broke): counts toward "no reachable server".
    Unreachable(String),
    /// A member answered but cannot serve now (no leader); try others, then retry.
    Busy(Status),
}

impl Client {
    /// A client over `addrs` (tried in order). `timeout` bounds each connect and each request,
    /// and the total time spent retrying while the cluster has no leader.
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Client {
        Client {
            addrs,
            timeout,
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    /// The addresses in the order they are tried.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// A connected channel to one address (cached).
    pub async fn channel(&self, addr: &str) -> Result<Channel, String> {
        if let Some(ch) = self.channels.lock().expect("poisoned").get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = Endpoint::from_shared(to_uri(addr))
            .map_err(|e| format!("bad address: {e}"))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| describe_transport(&e))?;
        self.channels
            .lock()
            .expect("poisoned")
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn forget(&self, addr: &str) {
        self.channels.lock().expect("poisoned").remove(addr);
    }

    async fn attempt<T, F, Fut>(&self, addr: &str, call: &mut F) -> Attempt<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let channel = match self.channel(addr).await {
            Ok(ch) => ch,
            Err(why) => return Attempt::Unreachable(why),
        };
        match call(channel).await {
            Err(status) if status.code() == Code::Unavailable && is_transport(&status) => {
                self.forget(addr);
                Attempt::Unreachable(status.message().to_owned())
            }
            Err(status) if status.code() == Code::Unavailable => Attempt::Busy(status),
            other => Attempt::Done(other),
        }
    }

    /// Runs `call` against the controllers until one answers.
    ///
    /// Errors: [`ClientError::NoServer`] naming every address when none could be reached;
    /// [`ClientError::Status`] for the first gRPC error that is not UNAVAILABLE, or the last
    /// UNAVAILABLE once the timeout has passed.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        // A timeout too long for the clock (`--timeout-ms` near u64::MAX) is no deadline.
        let deadline = Instant::now().checked_add(self.timeout);
        loop {
            let mut queue: VecDeque<String> = self.addrs.iter().cloned().collect();
            let mut tried: Vec<(String, String)> = Vec::new();
            let mut last_busy: Option<Status> = None;
            while let Some(addr) = queue.pop_front() {
                if tried.iter().any(|(a, _)| *a == addr) {
                    continue;
                }
                match self.attempt(&addr, &mut call).await {
                    Attempt::Done(result) => return result.map_err(ClientError::Status),
                    Attempt::Unreachable(why) => tried.push((addr, why)),
                    Attempt::Busy(status) => {
                        if let Some(leader) = leader_hint(&status) {
                            queue.push_front(leader);
                        }
                        tried.push((addr, format!("{:?}: {}", status.code(), status.message())));
                        last_busy = Some(status);
                    }
                }
            }
            match last_busy {
                None => return Err(ClientError::NoServer { tried }),
                Some(status) if deadline.is_some_and(|d| Instant::now() + ROUND_PAUSE >= d) => {
                    return Err(ClientError::Status(status));
                }
                Some(_) => tokio::time::sleep(ROUND_PAUSE).await,
            }
        }
    }
}

/// The leader address a controller put in an UNAVAILABLE status, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.rsplit_once('@')
                .map_or(v, |(_, addr)| addr)
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
}

/// Whether an UNAVAILABLE status came from the transport (connection refused or reset)
/// rather than from a controller that answered.
fn is_transport(status: &Status) -> bool {
    use std::error::Error as _;
    status.source().is_some() || status.message().contains("transport error")
}

/// A short reason for a connect failure ("connection refused", "timed out", …).
fn describe_transport(err: &tonic::transport::Error) -> String {
    use std::error::Error as _;
    let mut source: Option<&dyn std::error::Error> = err.source();
    let mut last = err.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_listener_names_every_address_on_one_line() {
        // Bind and drop to get two ports nothing listens on.
        let free = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let (a, b) = (free(), free());
        let client = Client::new(vec![a.clone(), b.clone()], Duration::from_secs(2));
        let err = client
            .call(|_ch| async { Ok::<(), Status>(()) })
            .await
            .unwrap_err();
        let line = err.to_string();
        assert!(matches!(err, ClientError::NoServer { .. }), "{line}");
        assert!(line.contains(&a) && line.contains(&b), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}
