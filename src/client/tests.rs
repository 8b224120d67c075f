use super::*;
use tonic::metadata::MetadataValue;

fn unavailable_with_hint(hint: &str) -> Status {
    let mut status = Status::unavailable("not the leader");
    status
        .metadata_mut()
        .insert(LEADER_METADATA, MetadataValue::try_from(hint).unwrap());
    status
}

/// One real RPC, so a lazily opened channel meets whatever listens at the address.
async fn cluster_status(
    ch: Channel,
) -> Result<tonic::Response<crate::proto::GetClusterStatusResponse>, Status> {
    crate::proto::cluster_service_client::ClusterServiceClient::new(ch)
        .get_cluster_status(crate::proto::GetClusterStatusRequest {})
        .await
}

/// Ports picked free and released: nothing listens there.
fn dead_addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect()
}

#[test]
fn addresses_become_uris() {
    assert_eq!(to_uri("127.0.0.1:1"), "http://127.0.0.1:1");
    assert_eq!(to_uri(" http://h:2/ "), "http://h:2");
    assert_eq!(to_uri("https://h:3"), "https://h:3");
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
fn a_bad_address_is_refused_by_name_for_the_agent() {
    let bad = Client::for_agent(&["bad host:1".to_owned()]).expect_err("refused");
    assert_eq!(bad.address, "bad host:1");
    assert!(bad.reason.contains("not a valid address"), "{bad}");
}

#[tokio::test]
async fn failure_moves_on_and_backs_off_the_dead_address() {
    let c = Client::for_agent(&["a:1".into(), "b:2".into()]).unwrap();
    let (first, _, _, wait) = c.pick();
    assert_eq!((first, wait), (0, Duration::ZERO));
    c.failed(0, None);
    let (next, _, _, wait) = c.pick();
    assert_eq!((next, wait), (1, Duration::ZERO));
    c.failed(1, None);
    // Both in backoff: the caller must wait rather than call a dead address at once.
    let (_, _, _, wait) = c.pick();
    assert!(wait > Duration::ZERO);
    // A success resets that address's backoff.
    c.succeeded(1);
    let (again, _, _, wait) = c.pick();
    assert_eq!((again, wait), (1, Duration::ZERO));
}

#[tokio::test]
async fn a_hint_switches_to_the_leader_even_if_unlisted() {
    let c = Client::for_agent(&["a:1".into()]).unwrap();
    c.failed(0, Some("c:3"));
    assert_eq!(c.current(), "c:3");
    let (index, _, _, wait) = c.pick();
    assert_eq!((index, wait), (1, Duration::ZERO));
    c.follow_leader("a:1");
    // `a` is still in backoff, so a hint in a response does not send us back yet.
    assert_eq!(c.current(), "c:3");
}

#[tokio::test]
async fn no_listener_names_every_address_once_on_one_line() {
    let addrs = dead_addresses(2);
    let client = Client::new(addrs.clone(), Duration::from_secs(5));
    let started = Instant::now();
    let err = client.call(cluster_status).await.unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("connection refused"),
        "names the reason: {line}"
    );
    let ClientError::NoServer { tried } = &err else {
        panic!("expected NoServer, got {line}");
    };
    assert_eq!(
        tried.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>(),
        addrs
    );
    assert!(
        line.contains(&addrs[0]) && line.contains(&addrs[1]),
        "{line}"
    );
    assert!(!line.contains('\n'), "{line}");
    // It gives up once both failed, not at the deadline.
    assert!(started.elapsed() < Duration::from_secs(5), "{line}");
}

#[tokio::test]
async fn a_definite_answer_is_returned_and_a_busy_one_retried_until_the_deadline() {
    let addrs = dead_addresses(1);
    let client = Client::new(addrs, Duration::from_millis(400));
    // A definite answer (INVALID_ARGUMENT) ends the call at once, whatever the address.
    let mut calls = 0;
    let err = client
        .call(|_ch| {
            calls += 1;
            async { Err::<(), _>(Status::invalid_argument("task_type: must not be empty")) }
        })
        .await
        .unwrap_err();
    assert!(matches!(&err, ClientError::Status(s) if s.code() == Code::InvalidArgument));
    assert_eq!(calls, 1);
    // A member that answers UNAVAILABLE (no leader yet) is asked again after its backoff,
    // until the deadline; the last answer is the error.
    let mut calls = 0;
    let err = client
        .call(|_ch| {
            calls += 1;
            async { Err::<(), _>(Status::unavailable("no leader yet")) }
        })
        .await
        .unwrap_err();
    assert!(matches!(&err, ClientError::Status(s) if s.code() == Code::Unavailable));
    assert!(calls > 1, "retried: {calls}");
}

#[tokio::test]
async fn an_agent_call_waits_out_unreachable_controllers_until_cancelled() {
    let client = Client::for_agent(&dead_addresses(2)).unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let err = client
        .call_until(
            "Heartbeat",
            &cancel,
            Duration::from_secs(1),
            |ch| async move {
                crate::proto::node_service_client::NodeServiceClient::new(ch)
                    .heartbeat(crate::proto::HeartbeatRequest::default())
                    .await
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Cancelled), "{err:?}");
}

/// A listener that accepts connections and never answers (a SIGSTOPped controller).
fn hung_address() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

#[tokio::test]
async fn a_hung_address_listed_first_leaves_time_for_the_others() {
    let (_hung, hung) = hung_address();
    let (_other, other) = hung_address();
    let client = Client::new(vec![hung.clone(), other.clone()], Duration::from_secs(6));
    // Each attempt gets half the timeout, so both addresses are tried before the deadline.
    assert_eq!(client.attempt_timeout(), Duration::from_secs(3));
    let err = client.call(cluster_status).await.unwrap_err();
    let ClientError::NoServer { tried } = &err else {
        panic!("expected NoServer, got {err}");
    };
    let addrs: Vec<&str> = tried.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(addrs, [hung.as_str(), other.as_str()], "{err}");
    assert!(
        tried
            .iter()
            .all(|(_, why)| why.starts_with("no answer within")),
        "{err}"
    );
}

#[tokio::test]
async fn an_http_server_that_is_not_mlcp_is_named_and_passed_over() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // An HTTP/2-capable server with no gRPC routes: every call is an HTTP 404.
    tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
    let dead = dead_addresses(1).remove(0);
    let client = Client::new(vec![addr.clone(), dead], Duration::from_secs(4));
    let err = client.call(cluster_status).await.unwrap_err();
    let ClientError::NoServer { tried } = &err else {
        panic!("expected NoServer, got {err}");
    };
    assert_eq!(tried.len(), 2, "both addresses tried: {err}");
    assert!(tried[0].1.starts_with("not an mlcp server"), "{err}");
}
