//! `[pool] strategy`: which of a tier's ready credentials serves next.
//! Round-robin takes them in turn; the others rank them by what their
//! provider last reported of their rate limit ([`Capacity`]), and ties go
//! to round-robin order (the first candidate from the tier's cursor).
//!
//! - `least_used`: the largest share of its window left. A credential
//!   with no report, or whose report's window has reset since, counts as
//!   full (100 % left). Equal shares go to the one that spent fewer
//!   tokens on the latest day the tier's usage counters know (so a
//!   provider that reports nothing is balanced by usage), then
//!   round-robin.
//! - `soonest_reset`: the one whose window resets soonest, of those with
//!   some left; then those it cannot say of (no report, no reset time, or
//!   a window that has reset since); last, those reported empty. Equal
//!   resets (to the millisecond) go round-robin.

use std::cmp::Ordering;

use super::*;
use crate::config::Strategy;
use crate::vocab::Capacity;

/// A credential's latest [`Capacity`], with its reset on the pool's clock.
#[derive(Debug, Clone)]
pub struct SeenCapacity {
    pub report: Capacity,
    /// `report.resets_at_ms` as an [`Instant`] (taken when it was seen).
    pub resets: Option<Instant>,
}

impl SeenCapacity {
    pub fn new(report: Capacity, now: Instant) -> Self {
        let resets = report
            .resets_at_ms
            .map(|at| now + Duration::from_millis(at.saturating_sub(report.seen_ms)));
        SeenCapacity { report, resets }
    }

    /// Still says something: its window has not reset since.
    fn fresh(&self, now: Instant) -> bool {
        self.resets.is_none_or(|at| at > now)
    }

    /// The share left now: full again once the window has reset.
    pub fn left(&self, now: Instant) -> f64 {
        if self.fresh(now) {
            self.report.left
        } else {
            1.0
        }
    }
}

/// How a candidate ranks; smaller is better.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rank {
    class: u8,
    key: f64,
    tokens: u64,
}

impl Rank {
    pub(super) fn cmp(&self, other: &Rank) -> Ordering {
        self.class
            .cmp(&other.class)
            .then(self.key.total_cmp(&other.key))
            .then(self.tokens.cmp(&other.tokens))
    }
}

/// Ranks `c` under `strategy` at `now`; `day` is the latest usage day of
/// the tier (tokens of an older day count as none).
pub(super) fn rank(strategy: Strategy, c: &Cred, now: Instant, day: u64) -> Rank {
    match strategy {
        Strategy::RoundRobin => Rank {
            class: 0,
            key: 0.0,
            tokens: 0,
        },
        Strategy::LeastUsed => {
            let left = c.capacity.as_ref().map_or(1.0, |s| s.left(now));
            let (used_day, tokens) = c.stats.usage.today();
            Rank {
                class: 0,
                key: -left,
                tokens: if used_day == day { tokens } else { 0 },
            }
        }
        Strategy::SoonestReset => {
            let seen = c.capacity.as_ref().filter(|s| s.fresh(now));
            let (class, key) = match seen {
                Some(s) if s.report.left <= 0.0 => (2, 0.0),
                Some(SeenCapacity {
                    resets: Some(at), ..
                }) => (0, at.saturating_duration_since(now).as_millis() as f64),
                _ => (1, 0.0),
            };
            Rank {
                class,
                key,
                tokens: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests;
