//! The simulated network: every message the cores send waits here until the harness delivers
//! or drops it.
//!
//! In swarm runs, [`Network::send`] draws a delivery step from the fault parameters (drop,
//! delay, duplication, reordering) and partitions block directed links; scenario tests use a
//! [`Faults::none`] network and pick messages by hand with [`Network::take_where`].

use std::collections::BTreeSet;

use mlcp::raft::{Message, NodeId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Network fault parameters, drawn per seed.
#[derive(Clone, Debug)]
pub struct Faults {
    /// Chance in 1000 that a message is lost.
    pub drop_per_mille: u32,
    /// Chance in 1000 that a message is delivered twice.
    pub duplicate_per_mille: u32,
    /// Fewest steps between send and delivery.
    pub delay_steps_min: u64,
    /// Most steps between send and delivery (inclusive).
    pub delay_steps_max: u64,
    /// If false, each directed link delivers in send order (FIFO, like one TCP stream).
    pub reorder: bool,
}

impl Faults {
    /// A perfect network: no loss, no duplicates, delivered on the next step, in order.
    pub fn none() -> Faults {
        Faults {
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            delay_steps_min: 0,
            delay_steps_max: 0,
            reorder: false,
        }
    }
}

/// A message on the wire.
#[derive(Clone, Debug)]
pub struct InFlight {
    /// Step at which it may be delivered.
    pub deliver_at: u64,
    /// Send order (ties broken by it, so delivery order is deterministic).
    pub seq: u64,
    /// The message.
    pub msg: Message,
}

/// Messages in flight plus the link state.
#[derive(Debug)]
pub struct Network {
    /// Fault parameters in force.
    pub faults: Faults,
    /// Directed links `(from, to)` that lose everything (partitions, one-way included).
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    in_flight: Vec<InFlight>,
    /// Latest delivery step scheduled per directed link (for FIFO links).
    link_last: std::collections::BTreeMap<(NodeId, NodeId), u64>,
    next_seq: u64,
    /// Messages sent, dropped and duplicated so far.
    pub sent: u64,
    /// Messages lost to drops or blocked links.
    pub dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
}

impl Network {
    /// An empty network with `faults`.
    pub fn new(faults: Faults) -> Network {
        Network {
            faults,
            blocked: BTreeSet::new(),
            in_flight: Vec::new(),
            link_last: std::collections::BTreeMap::new(),
            next_seq: 0,
            sent: 0,
            dropped: 0,
            duplicated: 0,
        }
    }

    /// Puts `msg` on the wire at step `now`, applying drop, delay and duplication.
    pub fn send(&mut self, msg: Message, now: u64, rng: &mut ChaCha8Rng) {
        self.sent += 1;
        if self.blocked.contains(&(msg.from, msg.to))
            || self.chance(self.faults.drop_per_mille, rng)
        {
            self.dropped += 1;
            return;
        }
        if self.chance(self.faults.duplicate_per_mille, rng) {
            self.duplicated += 1;
            let at = self.delivery_step(&msg, now, rng);
            self.push(msg.clone(), at);
        }
        let at = self.delivery_step(&msg, now, rng);
        self.push(msg, at);
    }

    fn chance(&self, per_mille: u32, rng: &mut ChaCha8Rng) -> bool {
        per_mille > 0 && rng.random_range(0..1000) < per_mille
    }

    fn delivery_step(&mut self, msg: &Message, now: u64, rng: &mut ChaCha8Rng) -> u64 {
        let f = &self.faults;
        let mut at = now + rng.random_range(f.delay_steps_min..=f.delay_steps_max);
        if !f.reorder {
            let last = self.link_last.entry((msg.from, msg.to)).or_insert(0);
            at = at.max(*last);
            *last = at;
        }
        at
    }

    fn push(&mut self, msg: Message, deliver_at: u64) {
        self.in_flight.push(InFlight {
            deliver_at,
            seq: self.next_seq,
            msg,
        });
        self.next_seq += 1;
    }

    /// Removes and returns the messages due at `now`, in (step, send order); messages on a
    /// link blocked since they were sent are dropped.
    pub fn take_due(&mut self, now: u64) -> Vec<Message> {
        let mut due: Vec<InFlight> = Vec::new();
        self.in_flight.retain(|m| {
            if m.deliver_at <= now {
                due.push(m.clone());
                false
            } else {
                true
            }
        });
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        let before = due.len();
        let out: Vec<Message> = due
            .into_iter()
            .map(|m| m.msg)
            .filter(|m| !self.blocked.contains(&(m.from, m.to)))
            .collect();
        self.dropped += (before - out.len()) as u64;
        out
    }

    /// Removes and returns, in send order, every message for which `pick` is true.
    pub fn take_where(&mut self, mut pick: impl FnMut(&Message) -> bool) -> Vec<Message> {
        let mut taken = Vec::new();
        self.in_flight.retain(|m| {
            if pick(&m.msg) {
                taken.push(m.msg.clone());
                false
            } else {
                true
            }
        });
        taken
    }

    /// Number of messages in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether no message is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Messages in flight, in send order.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.in_flight.iter().map(|m| &m.msg)
    }

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }
}
