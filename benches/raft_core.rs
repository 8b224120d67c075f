//! Entries committed per second by a 3-member cluster of Raft cores driven in memory: no
//! network, no disk (storage is the in-memory `MemStorage`, whose "persist" is a memcpy). This measures the
//! core's own cost per entry — replication, flow control, commit and Ready handling.
//!
//! Run: `cargo bench --bench raft_core` (optionally `-- ENTRIES PAYLOAD_BYTES BATCH`).

use std::collections::VecDeque;
use std::time::Instant;

use mlcp::raft::{Config, EntryKind, Message, NodeId, ProposeError, RawNode, Role};
use mlcp::storage::MemStorage;

type MemLog = std::sync::Arc<MemStorage>;

struct Member {
    raw: RawNode<MemLog>,
    log: MemLog,
    applied_commands: u64,
}

/// Handles every pending Ready of every member; returns whether anything happened.
fn pump(members: &mut [Member], wire: &mut VecDeque<Message>) -> bool {
    let mut moved = false;
    for m in members.iter_mut() {
        while m.raw.has_ready() {
            moved = true;
            let rd = m.raw.ready();
            m.log.persist(&rd);
            wire.extend(rd.messages);
            wire.extend(rd.persisted_messages);
            m.applied_commands += rd
                .committed_entries
                .iter()
                .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
                .count() as u64;
            m.raw.advance(rd.number);
        }
    }
    while let Some(msg) = wire.pop_front() {
        moved = true;
        members[(msg.to.0 - 1) as usize].raw.step(msg);
    }
    moved
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(1_000_000);
    let payload_bytes = args.get(1).copied().unwrap_or(128) as usize;
    let batch = args.get(2).copied().unwrap_or(1024);

    let voters = [NodeId(1), NodeId(2), NodeId(3)];
    let mut members: Vec<Member> = voters
        .iter()
        .map(|&id| {
            let log = MemLog::default();
            let mut cfg = Config::new(id, voters);
            cfg.append_bytes_max = 1 << 20;
            let raw = RawNode::new(cfg, log.clone()).expect("valid config");
            Member {
                raw,
                log,
                applied_commands: 0,
            }
        })
        .collect();
    let mut wire = VecDeque::new();
    members[0].raw.campaign();
    for _ in 0..100 {
        if !pump(&mut members, &mut wire) {
            break;
        }
    }
    assert_eq!(members[0].raw.status().soft.role, Role::Leader);

    let payload = vec![0xA5u8; payload_bytes];
    let start = Instant::now();
    let mut proposed = 0u64;
    let mut rounds = 0u64;
    while members.iter().map(|m| m.applied_commands).min().unwrap() < total {
        let mut in_batch = 0;
        while proposed < total && in_batch < batch {
            match members[0].raw.propose(payload.clone()) {
                Ok(_) => {
                    proposed += 1;
                    in_batch += 1;
                }
                Err(ProposeError::Backpressure) => break,
                Err(e) => panic!("propose failed: {e}"),
            }
        }
        pump(&mut members, &mut wire);
        rounds += 1;
        assert!(rounds < 100 * total + 1000, "no progress");
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    println!(
        "raft_core: 3 members in memory, {total} entries of {payload_bytes} B, proposals batched \
         {batch} per Ready"
    );
    println!(
        "raft_core: committed and applied on all members in {secs:.3} s = {rate:.0} entries/s \
         ({:.1} MB/s of payload), {rounds} rounds",
        rate * payload_bytes as f64 / 1e6
    );
}
