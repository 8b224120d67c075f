//! The command line's own error contract (docs/architecture.md#bad-input, CLI lines), checked by running
//! the real binary: a bad flag prints usage and exits 2; no reachable server prints ONE line
//! naming every address tried and exits 1; `--help` teaches with examples.

mod common;

use std::time::Duration;

use common::{mlcp, request, started_cluster, stderr, stdout, submit};
use mlcp::testkit::local_cluster::{ClusterSpec, free_ports};

#[tokio::test]
async fn a_bad_flag_prints_usage_and_exits_2() {
    let out = mlcp(&["task", "list", "--no-such-flag"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("Usage:"), "{}", stderr(&out));

    // A value clap cannot parse is a usage error too.
    let out = mlcp(&["task", "submit", "--type", "echo", "--max-attempts", "many"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // A missing required flag.
    let out = mlcp(&["task", "submit"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[tokio::test]
async fn no_reachable_server_is_one_line_naming_every_address_and_exit_1() {
    // Ports picked free and released: nothing listens there.
    let ports = free_ports(3).unwrap();
    let servers = ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for args in [
        vec!["task", "list", "--server", &servers],
        vec!["cluster", "status", "--server", &servers],
        vec!["node", "list", "--server", &servers, "--output", "json"],
    ] {
        let out = mlcp(&args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        for port in &ports {
            assert!(err.contains(&port.to_string()), "{args:?}: {err}");
        }
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[tokio::test]
async fn help_teaches_with_examples() {
    let out = mlcp(&["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for needle in ["server", "agent", "task", "demo", "Examples:", "MLCP_"] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let out = mlcp(&["task", "submit", "--help"]).await;
    assert!(stdout(&out).contains("matmul"), "{}", stdout(&out));
}

#[tokio::test]
async fn a_bad_config_value_names_the_key_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mlcp.toml");
    std::fs::write(&file, "[server]\npeers = \"1=a:1,oops\"\n").unwrap();
    let out = mlcp(&["server", "--config", file.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("server.peers"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_list_limit_0_means_no_limit() {
    let cluster = started_cluster(ClusterSpec {
        controllers: 1,
        ..ClusterSpec::default()
    })
    .await;
    let client = cluster.client(Duration::from_secs(10));
    for i in 0..3 {
        submit(
            &client,
            request("echo", serde_json::json!({ "i": i }), &format!("limit-{i}")),
        )
        .await;
    }
    let server = cluster.controllers[0].grpc.to_string();
    let listed = |limit: &'static str| {
        let server = server.clone();
        async move {
            let out = mlcp(&[
                "task", "list", "--limit", limit, "--server", &server, "--output", "json",
            ])
            .await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "--limit {limit}: {}",
                stderr(&out)
            );
            let json: serde_json::Value = serde_json::from_str(&stdout(&out))
                .unwrap_or_else(|e| panic!("--limit {limit}: {e}: {}", stdout(&out)));
            json["tasks"].as_array().map_or(0, Vec::len)
        }
    };
    // 0 is "no limit" (as etcdctl reads --limit 0), not an empty answer.
    assert_eq!(listed("0").await, 3);
    assert_eq!(listed("2").await, 2);

    let out = mlcp(&["task", "list", "--help"]).await;
    assert!(
        stdout(&out).contains("0 means no limit"),
        "--help must say what --limit 0 does:\n{}",
        stdout(&out)
    );
}

/// `mlcp task list | head -1`: the reader leaves before the CLI writes. Like other Unix
/// tools the CLI then ends quietly (status 0, or killed by SIGPIPE = 141 in a shell), not
/// with a panic about a broken pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;

    let cluster = started_cluster(ClusterSpec {
        controllers: 1,
        ..ClusterSpec::default()
    })
    .await;
    let server = cluster.controllers[0].grpc.to_string();
    for args in [
        vec!["task", "list", "--server", &server],
        vec!["cluster", "status", "--server", &server],
        vec!["node", "list", "--server", &server, "--output", "json"],
    ] {
        // A pipe whose read end is already closed: every write to it fails with EPIPE.
        let (reader, writer) = nix::unistd::pipe().expect("pipe");
        drop(reader);
        let child = tokio::process::Command::new(common::BIN)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mlcp");
        let out = tokio::time::timeout(common::SOON, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("mlcp {args:?} did not finish"))
            .expect("wait for mlcp");
        let quiet = out.status.success()
            || out.status.code() == Some(141)
            || out.status.signal() == Some(nix::sys::signal::Signal::SIGPIPE as i32);
        assert!(quiet, "{args:?}: {:?}: {}", out.status, stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}
