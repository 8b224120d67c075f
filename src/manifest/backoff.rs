//! Retry backoff with deterministic jitter (docs/lifecycle.md#retries-and-backoff). Pure integer/IEEE arithmetic only
//! (no `powf`, no RNG) so every replica computes the same `not_before`.

use crate::proto::RetryPolicy;

use super::{Attempt, TaskId};

/// Delay before the second attempt when the policy leaves it 0, in ms.
pub const INITIAL_BACKOFF_MS_DEFAULT: u64 = 1_000;
/// Upper bound of the delay when the policy leaves it 0, in ms.
pub const MAX_BACKOFF_MS_DEFAULT: u64 = 60_000;
/// Growth per attempt when the policy leaves it 0 (dimensionless).
pub const BACKOFF_MULTIPLIER_DEFAULT: f64 = 2.0;
/// Share of the delay randomised away when the policy's jitter is negative (dimensionless).
pub const JITTER_DEFAULT: f64 = 0.2;

/// The policy with every "use the default" value replaced by the default.
pub fn normalized(policy: Option<&RetryPolicy>) -> RetryPolicy {
    let p = policy.cloned().unwrap_or(RetryPolicy {
        jitter: -1.0,
        ..Default::default()
    });
    let initial = if p.initial_backoff_ms == 0 {
        INITIAL_BACKOFF_MS_DEFAULT
    } else {
        p.initial_backoff_ms
    };
    let max = if p.max_backoff_ms == 0 {
        MAX_BACKOFF_MS_DEFAULT.max(initial)
    } else {
        p.max_backoff_ms
    };
    RetryPolicy {
        initial_backoff_ms: initial,
        max_backoff_ms: max,
        backoff_multiplier: if p.backoff_multiplier == 0.0 {
            BACKOFF_MULTIPLIER_DEFAULT
        } else {
            p.backoff_multiplier
        },
        jitter: if p.jitter < 0.0 {
            JITTER_DEFAULT
        } else {
            p.jitter.min(1.0)
        },
    }
}

/// splitmix64 finaliser: a fixed, well-mixed hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [0, 1) drawn from the task id and attempt: the "random" part of the jitter,
/// identical on every replica.
pub fn jitter_unit(task_id: &TaskId, attempt: Attempt) -> f64 {
    let v = task_id.0.as_u128();
    let h = mix(mix((v as u64) ^ mix((v >> 64) as u64)) ^ u64::from(attempt.0));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Delay before the attempt after `finished` (the attempt that just ended, >= 1), in ms:
/// `min(max, initial * multiplier^(finished-1))`, minus up to `jitter` of itself.
pub fn backoff_ms(policy: &RetryPolicy, task_id: &TaskId, finished: Attempt) -> u64 {
    let p = normalized(Some(policy));
    let cap = p.max_backoff_ms as f64;
    let mut delay = p.initial_backoff_ms as f64;
    for _ in 1..finished.0.max(1) {
        delay *= p.backoff_multiplier;
        if delay >= cap {
            break;
        }
    }
    let delay = delay.min(cap);
    let cut = delay * p.jitter * jitter_unit(task_id, finished);
    (delay - cut).max(0.0).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TaskId {
        TaskId::new_v7(n, [n as u8; 10])
    }

    #[test]
    fn grows_exponentially_and_is_capped_without_jitter() {
        let p = RetryPolicy {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            backoff_multiplier: 2.0,
            jitter: 0.0,
        };
        let t = id(1);
        let got: Vec<u64> = (1..=6).map(|a| backoff_ms(&p, &t, Attempt(a))).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_is_bounded_deterministic_and_varies_by_task() {
        let p = RetryPolicy {
            initial_backoff_ms: 1000,
            max_backoff_ms: 1000,
            backoff_multiplier: 2.0,
            jitter: 0.5,
        };
        let mut distinct = std::collections::BTreeSet::new();
        for n in 0..50 {
            let t = id(n);
            let d = backoff_ms(&p, &t, Attempt(1));
            assert!((500..=1000).contains(&d), "{d}");
            assert_eq!(d, backoff_ms(&p, &t, Attempt(1)));
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "jitter should spread delays");
    }

    #[test]
    fn defaults_fill_zero_fields() {
        let p = normalized(None);
        assert_eq!(p.initial_backoff_ms, INITIAL_BACKOFF_MS_DEFAULT);
        assert_eq!(p.max_backoff_ms, MAX_BACKOFF_MS_DEFAULT);
        assert_eq!(p.backoff_multiplier, BACKOFF_MULTIPLIER_DEFAULT);
        assert_eq!(p.jitter, JITTER_DEFAULT);
    }
}
