//! `mlcp demo` as a user runs it (docs/architecture.md#tools): a short run finishes with every task verified
//! and exit 0, and leaves nothing behind; Ctrl-C (SIGINT) in the middle stops every child
//! process and removes the temp dir too.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{BIN, POLL, SOON};
use mlcp::testkit::local_cluster::poll_until;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The temp dir named on the demo's first line (`mlcp demo: working in DIR`).
fn working_dir(first_line: &str) -> PathBuf {
    PathBuf::from(
        first_line
            .strip_prefix("mlcp demo: working in ")
            .unwrap_or_else(|| panic!("unexpected first line {first_line:?}")),
    )
}

/// The controllers' gRPC addresses from the `started 3 controllers: 1=A,2=B,3=C` line.
fn controller_addrs(line: &str) -> Vec<String> {
    let list = line.rsplit(": ").next().unwrap();
    list.split(',')
        .map(|p| p.split_once('=').unwrap().1.to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_demo_verifies_every_task_and_cleans_up() {
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(BIN)
            .args(["demo", "--tasks", "6", "--agents", "2"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the demo finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SIGKILL controller"), "{stdout}");
    assert!(stdout.contains("took over as leader"), "{stdout}");
    assert!(
        stdout.contains("6/6 tasks completed exactly once and verified"),
        "{stdout}"
    );
    let dir = working_dir(stdout.lines().next().unwrap());
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_every_child_and_removes_the_temp_dir() {
    let mut demo = tokio::process::Command::new(BIN)
        .args(["demo", "--tasks", "24"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(SOON, lines.next_line())
            .await
            .expect("the demo keeps printing")
            .unwrap()
            .expect("the demo is still running")
    };
    let dir = working_dir(&next().await);
    let addrs = controller_addrs(&next().await);
    // Interrupt once the cluster is up and the agents run tasks.
    loop {
        if next().await.contains("agents registered") {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(demo.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(SOON, demo.wait())
        .await
        .expect("the demo exits after SIGINT")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(!dir.exists(), "{} was left behind", dir.display());
    // No controller answers any more: every child is gone.
    for addr in addrs {
        poll_until("the controller to be gone", SOON, POLL, || async {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(_) => Err(format!("{addr} still accepts connections")),
                Err(_) => Ok(Some(())),
            }
        })
        .await
        .unwrap();
    }
}
