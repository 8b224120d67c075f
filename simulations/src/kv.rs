//! The replicated state machine the simulator drives: a small key-value store whose values are
//! append-only lists of client tokens, plus a session table (docs/failures.md C10).
//!
//! Values are lists rather than overwrites so that a command applied twice is *visible*: the
//! token appears twice in its key. The session table keeps, per client, the highest sequence
//! number applied; a command whose sequence number is not above it is a duplicate (a client
//! retry) and changes nothing. Clients in the simulator have one command outstanding at a
//! time, so "highest applied" is the whole session state.

use std::collections::BTreeMap;

use mlcp::raft::LogIndex;

/// Identity of a simulated client.
pub type ClientId = u64;

/// A write: append `(client, seq)` to `key`. Encoded as 17 bytes: client (u64 LE), seq (u64 LE),
/// key (u8). An empty entry is a leader's no-op and is not a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Command {
    /// Who sent it.
    pub client: ClientId,
    /// The client's sequence number, from 1, growing by one per acknowledged command.
    pub seq: u64,
    /// Which key to append to (small, so clients collide on keys).
    pub key: u8,
}

/// Length of an encoded [`Command`] in bytes.
pub const COMMAND_BYTES: usize = 17;

impl Command {
    /// The wire form carried in a Raft entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(COMMAND_BYTES);
        out.extend_from_slice(&self.client.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.push(self.key);
        out
    }

    /// Parses an entry payload. Errors: a payload that is not exactly [`COMMAND_BYTES`] long.
    pub fn decode(data: &[u8]) -> Result<Command, KvError> {
        if data.len() != COMMAND_BYTES {
            return Err(KvError::BadCommand { len: data.len() });
        }
        let client = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
        Ok(Command {
            client,
            seq,
            key: data[16],
        })
    }
}

/// Why the state machine refused input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// An entry payload of the wrong length.
    BadCommand {
        /// Its length in bytes.
        len: usize,
    },
    /// A snapshot payload that does not parse.
    BadSnapshot {
        /// What was wrong.
        reason: &'static str,
    },
    /// Entries applied out of order: `index` is not `applied + 1`.
    ApplyGap {
        /// Last applied index.
        applied: LogIndex,
        /// Index offered.
        index: LogIndex,
    },
    /// The session table failed: the token is already in its key (applied twice).
    AppliedTwice {
        /// The command.
        command: Command,
    },
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::BadCommand { len } => write!(f, "entry payload of {len} bytes is no command"),
            KvError::BadSnapshot { reason } => write!(f, "snapshot payload invalid: {reason}"),
            KvError::ApplyGap { applied, index } => {
                write!(
                    f,
                    "apply gap: applied index {applied}, offered index {index}"
                )
            }
            KvError::AppliedTwice { command } => write!(f, "command {command:?} applied twice"),
        }
    }
}

/// What applying one command did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The token was appended.
    Applied,
    /// The session table recognised a retry; nothing changed.
    Duplicate,
}

/// The state machine of one node. Volatile: rebuilt from the snapshot on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    /// Last applied log index (entries of every kind count).
    pub applied: LogIndex,
    /// key → tokens `(client, seq)` in apply order.
    pub data: BTreeMap<u8, Vec<(ClientId, u64)>>,
    /// client → highest sequence number applied.
    pub sessions: BTreeMap<ClientId, u64>,
}

impl Kv {
    /// Records that `index` was applied without a command (no-op or membership change).
    /// Errors: `index` is not `applied + 1`.
    pub fn skip(&mut self, index: LogIndex) -> Result<(), KvError> {
        self.check_next(index)?;
        self.applied = index;
        Ok(())
    }

    /// Applies the command at `index`. Errors: an apply gap, or a token already present.
    pub fn apply(&mut self, index: LogIndex, cmd: Command) -> Result<ApplyOutcome, KvError> {
        self.check_next(index)?;
        self.applied = index;
        let last = self.sessions.get(&cmd.client).copied().unwrap_or(0);
        if cmd.seq <= last {
            return Ok(ApplyOutcome::Duplicate);
        }
        let list = self.data.entry(cmd.key).or_default();
        if list.contains(&(cmd.client, cmd.seq)) {
            return Err(KvError::AppliedTwice { command: cmd });
        }
        list.push((cmd.client, cmd.seq));
        self.sessions.insert(cmd.client, cmd.seq);
        Ok(ApplyOutcome::Applied)
    }

    fn check_next(&self, index: LogIndex) -> Result<(), KvError> {
        if index != self.applied.next() {
            return Err(KvError::ApplyGap {
                applied: self.applied,
                index,
            });
        }
        Ok(())
    }

    /// Serializes the whole state (little-endian u64 counts and values).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |out: &mut Vec<u8>, v: u64| out.extend_from_slice(&v.to_le_bytes());
        put(&mut out, self.applied.get());
        put(&mut out, self.data.len() as u64);
        for (key, tokens) in &self.data {
            put(&mut out, u64::from(*key));
            put(&mut out, tokens.len() as u64);
            for (client, seq) in tokens {
                put(&mut out, *client);
                put(&mut out, *seq);
            }
        }
        put(&mut out, self.sessions.len() as u64);
        for (client, seq) in &self.sessions {
            put(&mut out, *client);
            put(&mut out, *seq);
        }
        out
    }

    /// Parses [`Kv::encode`]'s output. An empty payload is the empty state (no snapshot yet).
    pub fn decode(bytes: &[u8]) -> Result<Kv, KvError> {
        if bytes.is_empty() {
            return Ok(Kv::default());
        }
        let mut words = bytes.chunks_exact(8);
        if !words.remainder().is_empty() {
            return Err(KvError::BadSnapshot {
                reason: "length is not a multiple of 8",
            });
        }
        let mut next = || {
            words
                .next()
                .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
                .ok_or(KvError::BadSnapshot {
                    reason: "truncated",
                })
        };
        let mut kv = Kv {
            applied: LogIndex(next()?),
            ..Kv::default()
        };
        for _ in 0..next()? {
            let key = u8::try_from(next()?).map_err(|_| KvError::BadSnapshot { reason: "key" })?;
            let count = next()?;
            let mut tokens = Vec::new();
            for _ in 0..count {
                tokens.push((next()?, next()?));
            }
            kv.data.insert(key, tokens);
        }
        for _ in 0..next()? {
            let client = next()?;
            kv.sessions.insert(client, next()?);
        }
        Ok(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_applied_once() {
        let mut kv = Kv::default();
        let cmd = Command {
            client: 7,
            seq: 1,
            key: 2,
        };
        assert_eq!(kv.apply(LogIndex(1), cmd), Ok(ApplyOutcome::Applied));
        assert_eq!(kv.apply(LogIndex(2), cmd), Ok(ApplyOutcome::Duplicate));
        assert_eq!(kv.data[&2], vec![(7, 1)]);
        assert_eq!(
            kv.apply(LogIndex(4), cmd),
            Err(KvError::ApplyGap {
                applied: LogIndex(2),
                index: LogIndex(4)
            })
        );
    }

    #[test]
    fn snapshot_round_trips() {
        let mut kv = Kv::default();
        kv.apply(
            LogIndex(1),
            Command {
                client: 1,
                seq: 1,
                key: 0,
            },
        )
        .unwrap();
        kv.skip(LogIndex(2)).unwrap();
        kv.apply(
            LogIndex(3),
            Command {
                client: 2,
                seq: 1,
                key: 3,
            },
        )
        .unwrap();
        assert_eq!(Kv::decode(&kv.encode()), Ok(kv));
        assert_eq!(
            Command::decode(
                &Command {
                    client: 9,
                    seq: 4,
                    key: 1
                }
                .encode()
            )
            .unwrap()
            .seq,
            4
        );
    }
}
