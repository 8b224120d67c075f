//! The one failover gRPC client over a list of controllers, used by the CLI, the agent, the
//! demo, the benches and the test kit (docs/architecture.md#client).
//!
//! Every member accepts every call (followers forward to the leader), so the client sticks
//! to one address while it answers and moves on only when a call fails in a way another
//! member could fix: UNAVAILABLE, a timeout, a broken connection. It then goes to the leader
//! named by the error's [`LEADER_METADATA`] hint (`ID@ADDRESS`) if there is one — adding that
//! address if it was not listed — else to the next address in the list.
//!
//! Each address has its own jittered exponential backoff (`backon`): an address that failed
//! is not contacted again until its backoff expires; its delay doubles (50 ms up to 5 s, plus
//! up to 100 % jitter) with each consecutive failure and resets on a success. A dead
//! controller is never hammered, a live one is used at once; when every address is in
//! backoff the caller waits for the earliest.
//!
//! How long a call keeps trying is the caller's choice ([`Patience`]): the CLI gives up at
//! its deadline, and at once when no address answers at all (naming each with its reason);
//! the agent keeps trying until it is told to stop.

pub mod api;

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Response metadata key in which a controller names the leader as `ID@ADDRESS` (either part
/// may be empty when unknown); the gateway's `forward::LEADER_HEADER`.
pub const LEADER_METADATA: &str = "x-mlcp-leader";

/// How long opening a TCP + HTTP/2 connection to a controller may take, at most.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First backoff delay of an address after a failure (before jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest backoff delay of an address (before jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most addresses kept: the configured ones plus leaders learned from hints.
const TARGETS_MAX: usize = 32;

/// Why a call through [`Client`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No controller answered; names every address tried with the reason it failed.
    #[error("no reachable mlcp server; tried {}", format_tried(.tried))]
    NoServer {
        /// `(address, why it failed)`, each address once, in the order first tried.
        tried: Vec<(String, String)>,
    },
    /// A controller answered with a gRPC error no other member would answer differently
    /// (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, …), or the last UNAVAILABLE once
    /// the call's deadline passed.
    #[error("server error {:?}: {}", .0.code(), .0.message())]
    Status(Status),
    /// The caller's cancellation token fired first.
    #[error("cancelled")]
    Cancelled,
}

/// An address that is not a valid `host:port` or URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("controller address `{address}` is not a valid URI: {reason}")]
pub struct BadAddress {
    /// The address as given.
    pub address: String,
    /// Why it does not parse.
    pub reason: String,
}

/// How a call through [`Client::call_until`] ended without an answer.
#[derive(Debug)]
pub enum CallError {
    /// A controller answered with an error that no other controller would answer
    /// differently (FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT, …).
    Rejected(Status),
    /// The cancellation token fired first.
    Cancelled,
}

/// `addr (why), addr (why), …` on one line.
pub fn format_tried(tried: &[(String, String)]) -> String {
    tried
        .iter()
        .map(|(addr, why)| format!("{addr} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How long one [`Client::call_with`] keeps trying.
#[derive(Clone, Copy, Debug)]
pub struct Patience<'a> {
    /// Bound on each attempt (connect included).
    pub attempt_timeout: Duration,
    /// Give up once this passes (`None`: no deadline).
    pub deadline: Option<Instant>,
    /// Give up with [`ClientError::NoServer`] once every address has failed without any
    /// answering (the CLI); otherwise keep waiting out the backoffs (the agent).
    pub give_up_when_unreachable: bool,
    /// Give up with [`ClientError::Cancelled`] when this fires.
    pub cancel: Option<&'a CancellationToken>,
    /// Log each failover at WARN (a long-running process whose operator wants to know it is
    /// cut off) rather than DEBUG (a command that reports one line when it gives up).
    pub log_failovers: bool,
}

struct Target {
    /// The address as given or learned (`host:port` or a URI).
    address: String,
    /// Lazily connected channel, or why the address is unusable.
    channel: Result<Channel, String>,
    /// Backoff of the current run of consecutive failures (`None` after a success).
    backoff: Option<ExponentialBackoff>,
    /// Not to be contacted before this instant.
    retry_at: Option<Instant>,
}

struct State {
    targets: Vec<Target>,
    current: usize,
}

/// The controllers a process knows, the one it uses now and each one's backoff. Cheap to
/// share behind an `Arc`; safe to call from many tasks at once.
pub struct Client {
    /// Bound on a whole [`Client::call`] and on each of its attempts.
    timeout: Duration,
    connect_timeout: Duration,
    keep_alive: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.addrs())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `host:port` → `http://host:port`; a URI with a scheme is kept; trailing `/` dropped.
pub fn to_uri(address: &str) -> String {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    }
}

fn endpoint(
    address: &str,
    connect_timeout: Duration,
    keep_alive: bool,
) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(to_uri(address))
        .map_err(|e| format!("not a valid address: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    Ok(if keep_alive {
        // Notice a controller that vanished without closing the connection (SIGKILL of the
        // host, a partition) within seconds rather than the TCP timeout.
        endpoint
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
    } else {
        endpoint
    })
}

/// `host:port` of a peer address (`HOST:PORT`, `[IPV6]:PORT`, or either after `http://` or
/// `https://`), the host lower-cased so that two spellings of one address compare equal;
/// `None` unless the port is a number in 1..=65535 and the host is non-empty. Shared by the
/// CLI's `--peers`/`--server` checks and `ClusterService.AddMember`, so that
/// `cluster add-learner` accepts exactly what `--peers` does.
pub fn peer_authority(addr: &str) -> Option<String> {
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':')?;
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|&p| p != 0)?;
    let bracketed = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if host.is_empty() || host.contains(['/', '@', ' ']) || (host.contains(':') && !bracketed) {
        return None;
    }
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// The leader address a controller put in an UNAVAILABLE status, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_METADATA)?.to_str().ok()?;
    let address = value.rsplit_once('@').map_or(value, |(_, a)| a).trim();
    (!address.is_empty()).then(|| address.to_owned())
}

/// Whether the peer is not a gRPC server at all: an HTTP server answers without a
/// `grpc-status` (tonic maps the HTTP status to a gRPC code), a non-HTTP/2 one breaks the
/// framing.
fn is_not_grpc(status: &Status) -> bool {
    let m = status.message();
    m.contains("grpc-status header missing")
        || m.contains("frame with invalid size")
        || m.contains("h2 protocol error")
        || m.contains("invalid HTTP")
}

/// Whether another attempt (maybe at another controller) could get a different answer.
fn is_failover(status: &Status) -> bool {
    is_not_grpc(status)
        || matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::Aborted
                | Code::Internal
        )
}

/// Whether a failover status came from the connection (refused, reset, not HTTP/2, not
/// gRPC, no answer) rather than from a controller that answered.
fn is_unreachable(status: &Status) -> bool {
    use std::error::Error as _;
    status.code() != Code::Unavailable
        || status.source().is_some()
        || status.message().contains("transport error")
}

/// Why an attempt failed, in stable words: `connection refused`, `no answer within 2.0 s`,
/// `not an mlcp server (…)`, or the code and message of a controller that answered.
fn reason(status: &Status) -> String {
    use std::error::Error as _;
    if is_not_grpc(status) {
        return format!("not an mlcp server ({})", status.message());
    }
    if status.code() == Code::Unavailable && !is_unreachable(status) {
        return format!("{:?}: {}", status.code(), status.message());
    }
    let mut last = status.message().to_owned();
    let mut source: Option<&dyn std::error::Error> = status.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    if last.contains("Connection refused") {
        return "connection refused".to_owned();
    }
    last
}

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .without_max_times()
        .build()
}

/// What one call saw so far, for its final error.
#[derive(Default)]
struct Attempts {
    tried: Vec<(String, String)>,
    unreachable: Vec<usize>,
    busy: Option<Status>,
}

impl Attempts {
    fn note(&mut self, address: &str, why: String) {
        match self.tried.iter_mut().find(|(a, _)| a == address) {
            Some(entry) => entry.1 = why,
            None => self.tried.push((address.to_owned(), why)),
        }
    }

    fn give_up(self) -> ClientError {
        match self.busy {
            Some(status) => ClientError::Status(status),
            None => ClientError::NoServer { tried: self.tried },
        }
    }
}

impl Client {
    /// A client over `addrs` (tried in order) for a command-line call: `timeout` bounds the
    /// whole call, each attempt gets a share of it (so a hung controller cannot use it all),
    /// and a call gives up at once when no address answers.
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Client {
        Client::build(&addrs, timeout, timeout, false)
    }

    /// A client over `addrs` for a long-running process (the agent): connections are kept
    /// alive with HTTP/2 pings so a vanished controller is noticed within seconds; calls go
    /// through [`Client::call_until`].
    ///
    /// Errors: [`BadAddress`] for the first address that is not a valid `host:port` or URI.
    pub fn for_agent(addrs: &[String]) -> Result<Client, BadAddress> {
        let client = Client::build(addrs, CONNECT_TIMEOUT, CONNECT_TIMEOUT, true);
        let bad = client.lock().targets.iter().find_map(|t| {
            t.channel.as_ref().err().map(|reason| BadAddress {
                address: t.address.clone(),
                reason: reason.clone(),
            })
        });
        match bad {
            Some(bad) => Err(bad),
            None => Ok(client),
        }
    }

    fn build(
        addrs: &[String],
        timeout: Duration,
        connect_timeout: Duration,
        keep_alive: bool,
    ) -> Client {
        let targets = addrs
            .iter()
            .map(|a| Target {
                address: a.clone(),
                channel: endpoint(a, connect_timeout, keep_alive).map(|e| e.connect_lazy()),
                backoff: None,
                retry_at: None,
            })
            .collect();
        Client {
            timeout,
            connect_timeout,
            keep_alive,
            state: Mutex::new(State {
                targets,
                current: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The addresses known, configured ones first, then leaders learned from hints.
    pub fn addrs(&self) -> Vec<String> {
        self.lock()
            .targets
            .iter()
            .map(|t| t.address.clone())
            .collect()
    }

    /// The address in use now.
    pub fn current(&self) -> String {
        let state = self.lock();
        state
            .targets
            .get(state.current)
            .map(|t| t.address.clone())
            .unwrap_or_default()
    }

    /// The bound on one attempt of [`Client::call`]: the timeout shared out over the known
    /// addresses (at least [`CONNECT_TIMEOUT`], at most the whole timeout), so that a hung
    /// controller listed first leaves time to ask the others.
    fn attempt_timeout(&self) -> Duration {
        let addrs = u32::try_from(self.lock().targets.len().max(1)).unwrap_or(u32::MAX);
        (self.timeout / addrs)
            .max(CONNECT_TIMEOUT)
            .min(self.timeout)
    }

    /// A connected channel to exactly `addr` (not failed over): for asking one member about
    /// itself.
    ///
    /// Errors: the address is invalid or no connection opened within the timeout.
    pub async fn channel(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = endpoint(addr, self.timeout, self.keep_alive)?.timeout(self.timeout);
        endpoint.connect().await.map_err(|e| {
            use std::error::Error as _;
            let mut last = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                last = s.to_string();
                source = s.source();
            }
            last
        })
    }

    /// Runs `call` against the controllers until one answers, within the client's timeout;
    /// gives up at once when no address answers at all.
    ///
    /// Errors: [`ClientError::NoServer`] naming every address when none could be reached;
    /// [`ClientError::Status`] for the first gRPC error another member would not answer
    /// differently, or the last UNAVAILABLE once the timeout has passed.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let patience = Patience {
            attempt_timeout: self.attempt_timeout(),
            // A timeout too long for the clock (`--timeout-ms` near u64::MAX) is no deadline.
            deadline: Instant::now().checked_add(self.timeout),
            give_up_when_unreachable: true,
            cancel: None,
            log_failovers: false,
        };
        self.call_with("call", patience, call).await
    }

    /// Runs `call` (named `what` in logs) until a controller answers, a controller rejects
    /// it, or `cancel` fires; each attempt is bounded by `attempt_timeout`. Unreachable
    /// controllers are waited out with backoff, never given up on.
    ///
    /// Errors: [`CallError::Rejected`] for an answer no other member would change;
    /// [`CallError::Cancelled`].
    pub async fn call_until<T, F, Fut>(
        &self,
        what: &'static str,
        cancel: &CancellationToken,
        attempt_timeout: Duration,
        call: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let patience = Patience {
            attempt_timeout,
            deadline: None,
            give_up_when_unreachable: false,
            cancel: Some(cancel),
            log_failovers: true,
        };
        match self.call_with(what, patience, call).await {
            Ok(answer) => Ok(answer),
            Err(ClientError::Status(status)) => Err(CallError::Rejected(status)),
            // Without a deadline and without giving up on unreachable addresses, the call
            // ends only with an answer or the token.
            Err(ClientError::Cancelled | ClientError::NoServer { .. }) => Err(CallError::Cancelled),
        }
    }

    /// Runs `call` with the given [`Patience`]. See the module docs for the failover rules.
    pub async fn call_with<T, F, Fut>(
        &self,
        what: &'static str,
        patience: Patience<'_>,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut seen = Attempts::default();
        let never = CancellationToken::new();
        let cancel = patience.cancel.unwrap_or(&never);
        loop {
            let (index, address, channel, wait) = self.pick();
            let now = Instant::now();
            let remaining = patience.deadline.map(|d| d.saturating_duration_since(now));
            if remaining.is_some_and(|r| r.is_zero() || r < wait) {
                return Err(seen.give_up());
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(ClientError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let channel = match channel {
                Ok(ch) => ch,
                Err(why) => {
                    seen.note(&address, why);
                    seen.unreachable.push(index);
                    self.failed(index, None);
                    if patience.give_up_when_unreachable && self.all_failed(&seen.unreachable) {
                        return Err(seen.give_up());
                    }
                    continue;
                }
            };
            let limit = remaining.map_or(patience.attempt_timeout, |r| {
                r.min(patience.attempt_timeout)
            });
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return Err(ClientError::Cancelled),
                outcome = tokio::time::timeout(limit, call(channel)) => outcome,
            };
            let status = match outcome {
                Ok(Ok(answer)) => {
                    self.succeeded(index);
                    return Ok(answer);
                }
                Ok(Err(status)) if !is_failover(&status) => {
                    // The controller is alive and gave a definite answer.
                    self.succeeded(index);
                    return Err(ClientError::Status(status));
                }
                Ok(Err(status)) => status,
                Err(_elapsed) => {
                    Status::deadline_exceeded(format!("no answer within {} ms", limit.as_millis()))
                }
            };
            let hint = leader_hint(&status);
            if patience.log_failovers {
                tracing::warn!(
                    rpc = what,
                    controller = %address,
                    code = ?status.code(),
                    message = status.message(),
                    leader_hint = hint.as_deref().unwrap_or(""),
                    "controller call failed; failing over"
                );
            } else {
                tracing::debug!(
                    rpc = what,
                    controller = %address,
                    code = ?status.code(),
                    message = status.message(),
                    "controller call failed; failing over"
                );
            }
            seen.note(&address, reason(&status));
            if is_unreachable(&status) {
                seen.unreachable.push(index);
            } else {
                seen.busy = Some(status);
            }
            self.failed(index, hint.as_deref());
            if patience.give_up_when_unreachable
                && seen.busy.is_none()
                && self.all_failed(&seen.unreachable)
            {
                return Err(seen.give_up());
            }
        }
    }

    /// Whether every known address is among `failed`.
    fn all_failed(&self, failed: &[usize]) -> bool {
        let len = self.lock().targets.len();
        (0..len).all(|i| failed.contains(&i))
    }

    /// The address to call now: the current one unless it is in backoff, else the next one
    /// in rotation that is not, else the one whose backoff ends first together with how long
    /// to wait for it.
    fn pick(&self) -> (usize, String, Result<Channel, String>, Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        let len = state.targets.len();
        let ready = (0..len)
            .map(|step| (state.current + step) % len)
            .find(|&i| state.targets[i].retry_at.is_none_or(|at| at <= now));
        let (index, wait) = match ready {
            Some(i) => (i, Duration::ZERO),
            None => state
                .targets
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.retry_at.map(|at| (i, at.saturating_duration_since(now))))
                .min_by_key(|&(_, wait)| wait)
                .unwrap_or((0, Duration::ZERO)),
        };
        state.current = index;
        let target = &state.targets[index];
        (index, target.address.clone(), target.channel.clone(), wait)
    }

    fn succeeded(&self, index: usize) {
        let mut state = self.lock();
        let target = &mut state.targets[index];
        target.backoff = None;
        target.retry_at = None;
    }

    fn failed(&self, index: usize, hint: Option<&str>) {
        let now = Instant::now();
        let mut state = self.lock();
        let target = &mut state.targets[index];
        // Concurrent calls (heartbeat, poll, reports) failing on the same address count once.
        if target.retry_at.is_none_or(|at| at <= now) {
            let delay = target
                .backoff
                .get_or_insert_with(new_backoff)
                .next()
                .unwrap_or(BACKOFF_MAX);
            target.retry_at = Some(now + delay);
        }
        let hinted = hint.and_then(|h| self.find_or_add(&mut state, h));
        match hinted {
            Some(j) if j != index => state.current = j,
            _ if state.current == index => state.current = (index + 1) % state.targets.len(),
            _ => {}
        }
    }

    fn find_or_add(&self, state: &mut State, address: &str) -> Option<usize> {
        let uri = to_uri(address);
        if let Some(i) = state.targets.iter().position(|t| to_uri(&t.address) == uri) {
            return Some(i);
        }
        if state.targets.len() >= TARGETS_MAX {
            return None;
        }
        let channel = endpoint(address, self.connect_timeout, self.keep_alive)
            .ok()?
            .connect_lazy();
        state.targets.push(Target {
            address: address.trim().to_owned(),
            channel: Ok(channel),
            backoff: None,
            retry_at: None,
        });
        Some(state.targets.len() - 1)
    }

    /// Switch to the leader named in a successful response (saves the follower's forwarding
    /// hop), unless that address is in backoff.
    pub fn follow_leader(&self, address: &str) {
        if address.trim().is_empty() {
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        if let Some(j) = self.find_or_add(&mut state, address)
            && state.targets[j].retry_at.is_none_or(|at| at <= now)
            && j != state.current
        {
            tracing::info!(leader = %state.targets[j].address, "following the leader hint");
            state.current = j;
        }
    }
}

#[cfg(test)]
mod tests;
