//! Smoke test of `mlcp bench-liveness` (docs/architecture.md#tools): a tiny capacity step against a real
//! 3-controller cluster. It asserts behaviour only — every heartbeat answered, none
//! re-registering, and zero Raft entries appended by steady heartbeats — never timings.

mod common;

use common::{mlcp, stderr, stdout};

#[tokio::test]
async fn steady_heartbeats_are_all_answered_and_append_no_raft_entry() {
    let out = mlcp(&[
        "bench-liveness",
        "--phase",
        "capacity",
        "--steps",
        "20",
        "--agents-max",
        "20",
        "--window-secs",
        "2",
        "--connections",
        "2",
        // Only behaviour is checked here; a loaded CI machine must not fail on latency.
        "--p99-target-ms",
        "60000",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&out)));
    let steps = report["capacity"].as_array().expect("capacity steps");
    assert_eq!(steps.len(), 1, "{report}");
    let step = &steps[0];
    assert_eq!(step["agents"], 20, "{report}");
    assert_eq!(step["errors"], 0, "{report}");
    // 20 agents at the leader's 1 s interval over 2 s: each heartbeats at least once.
    assert!(step["ok"].as_u64().unwrap() >= 20, "{report}");
    assert_eq!(step["registered_in_window"], 0, "{report}");
    assert_eq!(step["entries_appended"], 0, "{report}");
    // The 20 registrations were committed before the window.
    assert!(step["commit_before"].as_u64().unwrap() >= 20, "{report}");
    assert_eq!(step["interval_ms"], 1000, "{report}");
}
