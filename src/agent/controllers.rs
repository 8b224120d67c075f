//! Which controller the agent talks to, and failing over between them (docs/architecture.md#agent, docs/lifecycle.md#failover).
//!
//! The agent knows every controller's address. Any member accepts agent calls (followers
//! forward to the leader), so the agent sticks to one address while it answers and moves on
//! only when a call fails in a way another member could fix: UNAVAILABLE, a timeout, a broken
//! connection. It then goes to the leader named by the error's `x-mlcp-leader` hint
//! (`ID@ADDRESS`) if there is one, else to the next address in the list.
//!
//! Each address has its own jittered exponential backoff (`backon`): an address that failed
//! is not contacted again until its backoff expires, and its delay doubles (50 ms up to 5 s,
//! plus up to 100 % jitter) with each consecutive failure and resets on a success. So a dead
//! controller is never hammered, while a live one is used at once. When every address is in
//! backoff the caller waits for the earliest to expire.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};

use crate::proto::node_service_client::NodeServiceClient;

/// Response metadata key of a leader hint, `ID@ADDRESS` (either part may be empty).
pub const LEADER_HINT_HEADER: &str = "x-mlcp-leader";

/// How long opening a TCP + HTTP/2 connection to a controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First backoff delay of an address after a failure (before jitter).
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Largest backoff delay of an address (before jitter).
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most addresses kept: the configured ones plus leaders learned from hints.
const TARGETS_MAX: usize = 32;

/// Why an address in `servers` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("controller address `{address}` is not a valid URI: {reason}")]
pub struct BadAddress {
    /// The address as given.
    pub address: String,
    /// Why it does not parse.
    pub reason: String,
}

/// How a call through [`Controllers::call`] ended without a response.
#[derive(Debug)]
pub enum CallError {
    /// A controller answered with an error that no other controller would answer
    /// differently (FAILED_PRECONDITION, NOT_FOUND, INVALID_ARGUMENT, …).
    Rejected(Status),
    /// The cancellation token fired first.
    Cancelled,
}

struct Target {
    /// Normalized URI, `scheme://host:port`.
    uri: String,
    client: NodeServiceClient<Channel>,
    /// Backoff of the current run of consecutive failures (`None` after a success).
    backoff: Option<ExponentialBackoff>,
    /// Not to be contacted before this instant.
    retry_at: Option<Instant>,
}

struct State {
    targets: Vec<Target>,
    current: usize,
}

/// The controllers one agent knows, the one it currently uses and each one's backoff.
pub struct Controllers {
    state: Mutex<State>,
}

/// `host:port` → `http://host:port`; a URI with a scheme is kept; trailing `/` dropped.
pub fn normalize_address(address: &str) -> String {
    let trimmed = address.trim().trim_end_matches('/');
    if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    }
}

fn make_target(address: &str) -> Result<Target, BadAddress> {
    let uri = normalize_address(address);
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| BadAddress {
            address: address.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // Notice a controller that vanished without closing the connection (SIGKILL of
        // the host, a partition) within seconds rather than the TCP timeout.
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(Target {
        uri,
        client: NodeServiceClient::new(endpoint.connect_lazy()),
        backoff: None,
        retry_at: None,
    })
}

/// The leader address in a status's `x-mlcp-leader` metadata, if any.
pub fn leader_hint(status: &Status) -> Option<String> {
    let value = status.metadata().get(LEADER_HINT_HEADER)?.to_str().ok()?;
    let address = value.split_once('@').map_or(value, |(_, a)| a).trim();
    (!address.is_empty()).then(|| address.to_owned())
}

/// Whether another attempt (maybe at another controller) could get a different answer.
fn is_failover(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
    )
}

fn new_backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .without_max_times()
        .build()
}

impl Controllers {
    /// Controllers at `servers` (each `host:port` or a URI), used in this order. Connections
    /// are opened lazily, so an address that is down now does not fail here.
    pub fn new(servers: &[String]) -> Result<Self, BadAddress> {
        let targets = servers
            .iter()
            .map(|s| make_target(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            state: Mutex::new(State {
                targets,
                current: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The normalized URI currently in use.
    pub fn current_uri(&self) -> String {
        let state = self.lock();
        state.targets[state.current].uri.clone()
    }

    /// The address to call now: the current one unless it is in backoff, else the next one
    /// in rotation that is not, else the one whose backoff ends first together with how long
    /// to wait for it.
    fn pick(&self) -> (usize, NodeServiceClient<Channel>, Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        let len = state.targets.len();
        let ready = (0..len)
            .map(|step| (state.current + step) % len)
            .find(|&i| state.targets[i].retry_at.is_none_or(|at| at <= now));
        let (index, wait) = match ready {
            Some(i) => (i, Duration::ZERO),
            None => {
                let (i, at) = state
                    .targets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| t.retry_at.map(|at| (i, at)))
                    .min_by_key(|&(_, at)| at)
                    .expect("every target is in backoff");
                (i, at.saturating_duration_since(now))
            }
        };
        state.current = index;
        (index, state.targets[index].client.clone(), wait)
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
        let hinted = hint.and_then(|h| Self::find_or_add(&mut state, h));
        match hinted {
            Some(j) if j != index => state.current = j,
            _ if state.current == index => state.current = (index + 1) % state.targets.len(),
            _ => {}
        }
    }

    fn find_or_add(state: &mut State, address: &str) -> Option<usize> {
        let uri = normalize_address(address);
        if let Some(i) = state.targets.iter().position(|t| t.uri == uri) {
            return Some(i);
        }
        if state.targets.len() >= TARGETS_MAX {
            return None;
        }
        let target = make_target(address).ok()?;
        state.targets.push(target);
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
        if let Some(j) = Self::find_or_add(&mut state, address)
            && state.targets[j].retry_at.is_none_or(|at| at <= now)
            && j != state.current
        {
            tracing::info!(leader = %state.targets[j].uri, "following the leader hint");
            state.current = j;
        }
    }

    /// Call `rpc` (named `what` in logs) on the current controller, failing over with
    /// backoff until it answers, a controller rejects the call, or `cancel` fires. Each try
    /// is bounded by `timeout`.
    pub async fn call<T, F, Fut>(
        &self,
        what: &'static str,
        cancel: &CancellationToken,
        timeout: Duration,
        mut rpc: F,
    ) -> Result<T, CallError>
    where
        F: FnMut(NodeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        loop {
            let (index, client, wait) = self.pick();
            if !wait.is_zero() {
                tokio::select! {
                    _ = cancel.cancelled() => return Err(CallError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return Err(CallError::Cancelled),
                outcome = tokio::time::timeout(timeout, rpc(client)) => outcome,
            };
            match outcome {
                Ok(Ok(response)) => {
                    self.succeeded(index);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if is_failover(&status) => {
                    let hint = leader_hint(&status);
                    tracing::warn!(
                        rpc = what,
                        controller = %self.uri_of(index),
                        code = ?status.code(),
                        message = status.message(),
                        leader_hint = hint.as_deref().unwrap_or(""),
                        "controller call failed; failing over"
                    );
                    self.failed(index, hint.as_deref());
                }
                Ok(Err(status)) => {
                    // The controller is alive and gave a definite answer.
                    self.succeeded(index);
                    return Err(CallError::Rejected(status));
                }
                Err(_elapsed) => {
                    tracing::warn!(
                        rpc = what,
                        controller = %self.uri_of(index),
                        timeout_ms = timeout.as_millis() as u64,
                        "controller call timed out; failing over"
                    );
                    self.failed(index, None);
                }
            }
        }
    }

    fn uri_of(&self, index: usize) -> String {
        self.lock().targets[index].uri.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn unavailable_with_hint(hint: &str) -> Status {
        let mut status = Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_HINT_HEADER, MetadataValue::try_from(hint).unwrap());
        status
    }

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(normalize_address("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(normalize_address(" http://h:2/ "), "http://h:2");
        assert_eq!(normalize_address("https://h:3"), "https://h:3");
    }

    #[test]
    fn leader_hint_parses_id_at_address() {
        assert_eq!(
            leader_hint(&unavailable_with_hint("2@10.0.0.2:50051")).as_deref(),
            Some("10.0.0.2:50051")
        );
        assert_eq!(leader_hint(&unavailable_with_hint("2@")), None);
        assert_eq!(leader_hint(&Status::unavailable("x")), None);
    }

    #[test]
    fn a_bad_address_is_refused_by_name() {
        let err = Controllers::new(&["bad host:1".to_owned()])
            .err()
            .expect("refused");
        assert_eq!(err.address, "bad host:1");
    }

    #[tokio::test]
    async fn failure_moves_on_and_backs_off_the_dead_address() {
        let c = Controllers::new(&["a:1".into(), "b:2".into()]).unwrap();
        let (first, _, wait) = c.pick();
        assert_eq!((first, wait), (0, Duration::ZERO));
        c.failed(0, None);
        let (next, _, wait) = c.pick();
        assert_eq!((next, wait), (1, Duration::ZERO));
        c.failed(1, None);
        // Both in backoff: the caller must wait rather than call a dead address at once.
        let (_, _, wait) = c.pick();
        assert!(wait > Duration::ZERO);
        // A success resets that address's backoff.
        c.succeeded(1);
        let (again, _, wait) = c.pick();
        assert_eq!((again, wait), (1, Duration::ZERO));
    }

    #[tokio::test]
    async fn a_hint_switches_to_the_leader_even_if_unlisted() {
        let c = Controllers::new(&["a:1".into()]).unwrap();
        c.failed(0, Some("c:3"));
        assert_eq!(c.current_uri(), "http://c:3");
        let (index, _, wait) = c.pick();
        assert_eq!((index, wait), (1, Duration::ZERO));
        c.follow_leader("a:1");
        // `a` is still in backoff, so a hint in a response does not send us back yet.
        assert_eq!(c.current_uri(), "http://c:3");
    }
}
