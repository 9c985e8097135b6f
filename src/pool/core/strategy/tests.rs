use std::time::Duration;

use tokio::time::Instant;

use super::super::*;
use crate::config::{PoolSettings, Strategy};
use crate::vocab::{Capacity, Usage, UsageZone};

/// `names` in tier 0 (and `backup` in tier 1), all for provider 0.
fn pool(strategy: Strategy, names: &[&str], backup: &[&str]) -> Core {
    let settings = PoolSettings {
        tiers: vec!["primary".into(), "backup".into()],
        strategy,
        ..PoolSettings::default()
    };
    let creds = names
        .iter()
        .map(|n| Cred::new(n.to_string(), 0, 0))
        .chain(backup.iter().map(|n| Cred::new(n.to_string(), 0, 1)))
        .collect();
    Core::new(settings, creds)
}

/// A report seen at t=0 of `left` share, resetting `reset_s` seconds later.
fn report(left: f64, reset_s: Option<u64>) -> Capacity {
    Capacity {
        remaining: None,
        limit: None,
        left,
        resets_at_ms: reset_s.map(|s| s * 1000),
        window: "requests".into(),
        seen_ms: 0,
    }
}

fn picks(core: &mut Core, n: usize, now: Instant) -> Vec<String> {
    (0..n)
        .map(|_| {
            let peeked = core.peek(0, now);
            let i = core.select(0, &[], now).expect("a credential");
            assert_eq!(peeked, Some(i), "peek agrees with select");
            core.release(i);
            core.creds[i].name.clone()
        })
        .collect()
}

#[test]
fn least_used_takes_the_largest_share_left() {
    let now = Instant::now();
    let mut core = pool(Strategy::LeastUsed, &["a", "b", "c"], &[]);
    core.note_capacity(0, report(0.30, Some(60)), now);
    core.note_capacity(1, report(0.90, Some(60)), now);
    core.note_capacity(2, report(0.55, Some(60)), now);
    assert_eq!(picks(&mut core, 3, now), ["b", "b", "b"]);
    // A newer report moves it down.
    core.note_capacity(1, report(0.10, Some(60)), now);
    assert_eq!(picks(&mut core, 1, now), ["c"]);
}

#[test]
fn least_used_counts_no_report_and_a_reset_window_as_full() {
    let now = Instant::now();
    let mut core = pool(Strategy::LeastUsed, &["a", "b"], &[]);
    core.note_capacity(0, report(0.95, Some(60)), now);
    // b has said nothing: full, so it goes first.
    assert_eq!(picks(&mut core, 1, now), ["b"]);
    core.note_capacity(1, report(0.20, Some(5)), now);
    assert_eq!(picks(&mut core, 1, now), ["a"]);
    // b's window has reset since: full again, above a's 95 %.
    assert_eq!(picks(&mut core, 1, now + Duration::from_secs(5)), ["b"]);
}

#[test]
fn least_used_without_reports_goes_by_todays_tokens_then_in_turn() {
    let now = Instant::now();
    let zone = UsageZone::utc();
    let mut core = pool(Strategy::LeastUsed, &["a", "b", "c"], &[]);
    let spend = |core: &mut Core, i: usize, tokens: u64, at: u64| {
        let usage = Usage {
            input: tokens,
            ..Default::default()
        };
        core.creds[i].stats.usage.add(Some(usage), at, &zone);
    };
    let day2 = 2 * 86_400;
    spend(&mut core, 0, 500, day2);
    spend(&mut core, 1, 100, day2);
    spend(&mut core, 2, 300, day2);
    assert_eq!(picks(&mut core, 2, now), ["b", "b"]);
    // Yesterday's tokens are not today's: c spent its 5,000 a day before.
    let mut core = pool(Strategy::LeastUsed, &["a", "b", "c"], &[]);
    spend(&mut core, 0, 500, day2);
    spend(&mut core, 1, 100, day2);
    spend(&mut core, 2, 5_000, day2 - 86_400);
    assert_eq!(picks(&mut core, 1, now), ["c"]);
    // Equal in everything: round-robin.
    let mut core = pool(Strategy::LeastUsed, &["a", "b", "c"], &[]);
    assert_eq!(picks(&mut core, 4, now), ["a", "b", "c", "a"]);
}

#[test]
fn soonest_reset_spends_the_window_that_ends_first() {
    let now = Instant::now();
    let mut core = pool(Strategy::SoonestReset, &["a", "b", "c", "d"], &[]);
    core.note_capacity(0, report(0.9, Some(3600)), now);
    core.note_capacity(1, report(0.1, Some(30)), now);
    core.note_capacity(2, report(0.0, Some(5)), now);
    // d has said nothing: after those it can rank, before the empty c.
    assert_eq!(picks(&mut core, 2, now), ["b", "b"]);
    core.note_capacity(1, report(0.0, Some(30)), now);
    assert_eq!(picks(&mut core, 1, now), ["a"]);
    core.note_capacity(0, report(0.0, Some(3600)), now);
    assert_eq!(picks(&mut core, 1, now), ["d"]);
    // Past c's reset its report says nothing (unknown, in turn with d);
    // b's and a's still say empty.
    let later = now + Duration::from_secs(6);
    assert_eq!(picks(&mut core, 3, later), ["c", "d", "c"]);
}

#[test]
fn soonest_reset_ties_and_unknowns_go_in_turn() {
    let now = Instant::now();
    let mut core = pool(Strategy::SoonestReset, &["a", "b", "c"], &[]);
    assert_eq!(picks(&mut core, 4, now), ["a", "b", "c", "a"]);
    core.note_capacity(0, report(0.5, Some(60)), now);
    core.note_capacity(2, report(0.8, Some(60)), now);
    assert_eq!(picks(&mut core, 3, now), ["c", "a", "c"]);
    // No reset time said: as if unknown.
    let mut core = pool(Strategy::SoonestReset, &["a", "b"], &[]);
    core.note_capacity(0, report(0.5, None), now);
    core.note_capacity(1, report(0.5, Some(600)), now);
    assert_eq!(picks(&mut core, 2, now), ["b", "b"]);
}

#[test]
fn tiers_and_leasability_come_first() {
    let now = Instant::now();
    for strategy in [Strategy::LeastUsed, Strategy::SoonestReset] {
        let mut core = pool(strategy, &["a", "b"], &["z"]);
        core.note_capacity(0, report(0.01, Some(3600)), now);
        core.note_capacity(1, report(0.5, Some(60)), now);
        core.note_capacity(2, report(1.0, Some(1)), now);
        // The backup's full, soon-resetting window does not pull it forward.
        assert_eq!(picks(&mut core, 1, now), ["b"], "{strategy:?}");
        // The best one cooling (or tried) is passed over, never waited for.
        core.hold(
            1,
            now,
            Duration::from_secs(10),
            CooldownKind::RateLimited,
            "test".into(),
        );
        assert_eq!(picks(&mut core, 1, now), ["a"], "{strategy:?}");
        let i = core.select(0, &[0], now).unwrap();
        assert_eq!(core.creds[i].name, "z", "{strategy:?}");
    }
}
