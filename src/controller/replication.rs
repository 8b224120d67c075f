//! [`start_replication`]: brings up this controller's replication shell — storage, the raft
//! actor, the peer transport and the `RaftService` ([`crate::peer`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::Addr;

use crate::actors::raft::{
    RaftActor, RaftActorOptions, RaftParts, StartError, StateMachine, start_raft_actor,
};
use crate::controller::ServerOptions;
use crate::peer::client::{GrpcTransport, PeerChannels, TransportOptions, TransportStats};
use crate::peer::server::RaftGrpc;
use crate::proto::raft_service_server::RaftServiceServer;
use crate::raft::{Config, NodeId};
use crate::storage::RedbStore;

/// What [`start_replication`] brought up.
pub struct ReplicationHandle {
    /// The raft actor: send it `Propose`, `ReadBarrier`, `GetRaftStatus`, `TransferLeader`,
    /// `ChangeMembership`, `TriggerSnapshot`, `SubscribeLeadership`.
    pub raft: Addr<RaftActor>,
    /// This controller's Raft id.
    pub node_id: NodeId,
    /// Reusable channels to the other members (also usable to forward client calls to the
    /// leader; the raft actor keeps the map in step with the membership).
    pub peers: PeerChannels,
    /// The `RaftService` to add to the controller's tonic server.
    pub service: RaftServiceServer<RaftGrpc>,
    /// Peer transport counters.
    pub transport_stats: Arc<TransportStats>,
    /// Member addresses as configured (id → `host:port`), including this controller.
    pub configured_addresses: BTreeMap<NodeId, String>,
}

/// Members and addresses of the initial cluster from `opts`: `peers`, or this node alone at
/// `listen` when `peers` is empty.
///
/// Errors: node id 0, `peers` not listing this node, an empty address.
pub fn initial_members(opts: &ServerOptions) -> Result<BTreeMap<NodeId, String>, StartError> {
    if opts.node_id == 0 {
        return Err(StartError::NodeIdZero);
    }
    if opts.peers.is_empty() {
        return Ok([(NodeId(opts.node_id), opts.listen.to_string())].into());
    }
    if !opts.peers.contains_key(&opts.node_id) {
        return Err(StartError::NotInPeers {
            node_id: opts.node_id,
            peers: opts.peers.keys().copied().collect(),
        });
    }
    if let Some((id, _)) = opts
        .peers
        .iter()
        .find(|(id, a)| **id == 0 || a.trim().is_empty())
    {
        return Err(if *id == 0 {
            StartError::NodeIdZero
        } else {
            StartError::EmptyPeerAddress { id: *id }
        });
    }
    Ok(opts
        .peers
        .iter()
        .map(|(id, a)| (NodeId(*id), a.trim().to_owned()))
        .collect())
}

/// Name of the side file in which data dirs written before the identity record kept the
/// bootstrap voters (`mlcp-bootstrap-voters v1 <id>,<id>,…`); read once, folded into the
/// identity record, then removed (docs/storage.md "Identity").
pub const LEGACY_BOOTSTRAP_VOTERS_FILE: &str = "bootstrap-voters";

/// Records the initial voters in the data dir's identity record on its first start, and on
/// every later start refuses a different set.
///
/// The core derives its configuration from the initial voters until the first snapshot
/// records it, so restarting a member with another `--peers` would give it a configuration
/// the rest of the cluster never agreed to — it could elect itself leader of a one-node
/// "cluster" while the others keep theirs (two leaders in one term). Membership changes go
/// through the log (`mlcp cluster add-learner/promote/remove`), never through flags.
///
/// Errors: [`StartError::BootstrapVotersChanged`] naming both sets;
/// [`StartError::BootstrapVotersFile`] for an unreadable legacy side file; a storage error.
pub fn check_bootstrap_voters(store: &RedbStore, voters: &[NodeId]) -> Result<(), StartError> {
    let legacy = read_legacy_voters(store.dir())?;
    let stored = match store.bootstrap_voters()? {
        Some(v) => Some(v),
        None => legacy.clone(),
    };
    if let Some(stored) = &stored
        && stored.as_slice() != voters
    {
        return Err(StartError::BootstrapVotersChanged {
            dir: store.dir().to_path_buf(),
            stored: stored.iter().map(|v| v.get()).collect(),
            configured: voters.iter().map(|v| v.get()).collect(),
        });
    }
    if store.bootstrap_voters()?.is_none() {
        store.record_bootstrap_voters(voters)?;
    }
    if legacy.is_some() {
        let path = store.dir().join(LEGACY_BOOTSTRAP_VOTERS_FILE);
        let io = |e: std::io::Error| StartError::BootstrapVotersFile {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::remove_file(&path).map_err(io)?;
        std::fs::File::open(store.dir())
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

/// The voters in a legacy `bootstrap-voters` side file, if there is one.
fn read_legacy_voters(dir: &std::path::Path) -> Result<Option<Vec<NodeId>>, StartError> {
    let path = dir.join(LEGACY_BOOTSTRAP_VOTERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StartError::BootstrapVotersFile {
                path,
                reason: e.to_string(),
            });
        }
    };
    text.trim()
        .strip_prefix("mlcp-bootstrap-voters v1 ")
        .and_then(|ids| {
            ids.split(',')
                .map(|id| id.trim().parse::<u64>().ok().map(NodeId))
                .collect::<Option<Vec<NodeId>>>()
        })
        .map(Some)
        .ok_or_else(|| StartError::BootstrapVotersFile {
            path,
            reason: format!("unreadable record {:?}", text.trim()),
        })
}

/// How this controller enters the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bootstrap {
    /// It is one of the initial voters, `ServerOptions::peers` (the default).
    #[default]
    InitialMember,
    /// It joins a running cluster: `ServerOptions::peers` lists the cluster's initial voters
    /// plus this controller (for its own address); it starts as a non-member that waits for
    /// the leader to add it (`ChangeMembership::AddLearner`) and so never campaigns before.
    Join,
}

/// [`start_replication_with`] for an initial member.
///
/// Errors: see [`StartError`]; each displays as one line naming what was wrong.
pub async fn start_replication(
    opts: &ServerOptions,
    state_machine: StateMachine,
) -> Result<ReplicationHandle, StartError> {
    start_replication_with(opts, state_machine, Bootstrap::InitialMember).await
}

/// Brings up this controller's replication shell and returns its handles:
///
/// 1. checks the membership options ([`initial_members`]);
/// 2. opens the durable log in `opts.data_dir` ([`crate::storage::open_data_dir`]), refusing
///    a dir recorded for another node id or cluster with a one-line reason;
/// 3. restores the latest snapshot into `state_machine`, starts the log writer thread, the
///    peer transport and the raft actor (election timeout 10–20 ticks, heartbeat every 2
///    ticks, a tick every `opts.tick`, election seed from OS randomness).
///
/// Call it inside the running actix system, after the state-machine actor is started (its
/// recipients are in `state_machine`) and before serving gRPC; then add
/// [`ReplicationHandle::service`] to the tonic server and subscribe the leader-only actors
/// with `SubscribeLeadership`.
///
/// Errors: see [`StartError`]; each displays as one line naming what was wrong.
pub async fn start_replication_with(
    opts: &ServerOptions,
    state_machine: StateMachine,
    bootstrap: Bootstrap,
) -> Result<ReplicationHandle, StartError> {
    let members = initial_members(opts)?;
    let node_id = NodeId(opts.node_id);
    if bootstrap == Bootstrap::Join && members.len() < 2 {
        return Err(StartError::JoinWithoutPeers);
    }
    let store = crate::storage::open_data_dir(&opts.data_dir, &opts.cluster_name, node_id)
        .map_err(|source| StartError::DataDir {
            dir: opts.data_dir.clone(),
            source,
        })?;
    let voters: Vec<NodeId> = members
        .keys()
        .copied()
        .filter(|id| match bootstrap {
            Bootstrap::InitialMember => true,
            Bootstrap::Join => *id != node_id,
        })
        .collect();
    check_bootstrap_voters(&store, &voters)?;
    let mut config = Config::new(node_id, voters);
    config.seed = rand::random();
    let peers = PeerChannels::new(TransportOptions::default());
    let transport = Arc::new(GrpcTransport::new(
        node_id,
        opts.cluster_name.clone(),
        peers.clone(),
    ));
    let transport_stats = transport.stats();
    let options = RaftActorOptions {
        tick: opts.tick,
        snapshot_every_entries: opts.snapshot_every_entries,
        ..RaftActorOptions::default()
    };
    let raft = start_raft_actor(RaftParts {
        config,
        store: Arc::new(store),
        outbox: transport,
        state_machine,
        addresses: members.clone(),
        options,
    })
    .await?;
    let service = RaftGrpc::new(raft.clone(), node_id, opts.cluster_name.clone()).into_server();
    Ok(ReplicationHandle {
        raft,
        node_id,
        peers,
        service,
        transport_stats,
        configured_addresses: members,
    })
}

#[cfg(test)]
mod bootstrap_voters_tests {
    use super::*;

    fn open(dir: &std::path::Path) -> RedbStore {
        crate::storage::open_data_dir(dir, "mlcp", NodeId(1)).unwrap()
    }

    /// A data dir remembers the voters it was bootstrapped with; restarting it with another
    /// `--peers` (found by a user: it elected a second leader in the same term) is refused,
    /// naming both sets, and nothing is rewritten.
    #[test]
    fn a_data_dir_refuses_other_initial_voters() {
        let dir = tempfile::tempdir().unwrap();
        let three = [NodeId(1), NodeId(2), NodeId(3)];
        check_bootstrap_voters(&open(dir.path()), &three).unwrap();
        let store = open(dir.path());
        assert_eq!(store.bootstrap_voters().unwrap(), Some(three.to_vec()));
        check_bootstrap_voters(&store, &three).unwrap();
        let err = check_bootstrap_voters(&store, &[NodeId(1)]).unwrap_err();
        match &err {
            StartError::BootstrapVotersChanged {
                stored, configured, ..
            } => {
                assert_eq!(stored, &vec![1, 2, 3]);
                assert_eq!(configured, &vec![1]);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("--peers"), "{err}");
        check_bootstrap_voters(&store, &three).unwrap();
    }

    /// A dir from before the identity kept the voters: the side file is read, folded into
    /// the identity record and removed; a different `--peers` is still refused.
    #[test]
    fn a_legacy_side_file_is_folded_into_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let side = dir.path().join(LEGACY_BOOTSTRAP_VOTERS_FILE);
        std::fs::write(&side, "mlcp-bootstrap-voters v1 1,2,3\n").unwrap();
        let store = open(dir.path());
        let err = check_bootstrap_voters(&store, &[NodeId(1)]).unwrap_err();
        assert!(
            matches!(err, StartError::BootstrapVotersChanged { .. }),
            "{err}"
        );
        assert!(side.exists(), "nothing changes on a refusal");
        let three = [NodeId(1), NodeId(2), NodeId(3)];
        check_bootstrap_voters(&store, &three).unwrap();
        assert!(!side.exists());
        assert_eq!(store.bootstrap_voters().unwrap(), Some(three.to_vec()));
    }

    /// A damaged side file is an error naming the file, never silently replaced.
    #[test]
    fn a_damaged_legacy_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        std::fs::write(dir.path().join(LEGACY_BOOTSTRAP_VOTERS_FILE), "garbage").unwrap();
        let err = check_bootstrap_voters(&store, &[NodeId(1)]).unwrap_err();
        assert!(
            err.to_string().contains(LEGACY_BOOTSTRAP_VOTERS_FILE),
            "{err}"
        );
    }
}
