use super::*;
use crate::events::fixtures::{self, NOW_MS};
use crate::events::{CredentialKind, Level};

fn loaded(snap: PoolSnapshot) -> Dashboard {
    let mut d = Dashboard::new("127.0.0.1:8080");
    assert!(d.waiting);
    d.apply(Feed::Snapshot(snap), NOW_MS);
    assert!(!d.waiting);
    d
}

#[test]
fn snapshot_replaces_everything() {
    let mut d = loaded(fixtures::healthy());
    assert_eq!(d.credentials.len(), 6);
    assert_eq!(d.next.as_deref(), Some("team-b"));
    assert_eq!(d.totals.requests, 1_265);
    d.apply(Feed::Snapshot(fixtures::cooling()), NOW_MS + 10);
    assert_eq!(d.credential("team-a").unwrap().state, State::Cooling);
    assert_eq!(d.next.as_deref(), Some("oauth-1"));
}

#[test]
fn credential_events_replace_the_row_and_log_only_state_changes() {
    let mut d = loaded(fixtures::healthy());
    let mut c = d.credential("team-a").unwrap().clone();
    c.requests += 1;
    let line = d.apply(
        Feed::Event(Event::Credential {
            credential: c.clone().into(),
        }),
        NOW_MS,
    );
    assert_eq!(line, None, "a counter update is not worth a log line");
    assert_eq!(d.credential("team-a").unwrap().requests, 421);

    c.state = State::Cooling;
    c.reason = Some("429 retry-after 5s".into());
    c.until_ms = Some(NOW_MS + 5_000);
    let line = d.apply(
        Feed::Event(Event::Credential {
            credential: c.into(),
        }),
        NOW_MS,
    );
    let (level, text) = line.expect("a state change is logged");
    assert_eq!(level, Level::Info);
    assert!(text.contains("team-a is cooling"), "{text}");

    // A credential the dashboard has not seen yet (after a reload) is added.
    let new = fixtures::cred("team-z", "backup", CredentialKind::ApiKey);
    d.apply(
        Feed::Event(Event::Credential {
            credential: new.into(),
        }),
        NOW_MS,
    );
    assert_eq!(d.credentials.len(), 7);
}

#[test]
fn request_events_update_totals_and_the_bounded_ring() {
    let mut d = loaded(fixtures::healthy());
    let mut totals = d.totals;
    for id in 0..(RECENT_REQUESTS as u64 + 10) {
        let r = fixtures::request(id, NOW_MS, &["team-a"], 200);
        d.apply(
            Feed::Event(fixtures::request_event(&mut totals, r, 0)),
            NOW_MS,
        );
    }
    assert_eq!(d.recent.len(), RECENT_REQUESTS, "the ring is bounded");
    assert_eq!(d.recent.front().unwrap().id, 10, "oldest dropped first");
    assert_eq!(d.recent.back().unwrap().id, RECENT_REQUESTS as u64 + 9);
    assert_eq!(d.totals.requests, 1_265 + RECENT_REQUESTS as u64 + 10);
}

#[test]
fn a_request_adds_its_tokens_to_the_answering_credential_until_the_next_view() {
    let mut d = loaded(fixtures::healthy());
    let mut totals = d.totals;
    let before = d.credential("team-b").unwrap().usage.today;
    let mut r = fixtures::request(1, NOW_MS, &["team-a", "team-b"], 200);
    r.tokens = Some(crate::vocab::Usage {
        input: 900,
        output: 100,
        ..Default::default()
    });
    d.apply(
        Feed::Event(fixtures::request_event(&mut totals, r, 1)),
        NOW_MS,
    );
    let after = d.credential("team-b").unwrap().usage.today;
    assert_eq!(after.total(), before.total() + 1_000);
    assert_eq!(after.answers, before.answers + 1);
    assert_eq!(
        d.credential("team-a").unwrap().usage.today.total(),
        812_000,
        "the credential that answered 429 carried nothing"
    );
    // The pool's day ends at local midnight (23:00 UTC in the fixture's
    // zone), not at 00:00 UTC; the next day starts from zero.
    for (id, at_ms, want) in [
        (
            2,
            NOW_MS + 11 * 3_600_000 - 1_000,
            (after.total() + 10, "2026-11-26"),
        ),
        (3, NOW_MS + 11 * 3_600_000 + 1_000, (10, "2026-11-27")),
        (4, NOW_MS + 35 * 3_600_000 + 1_000, (10, "2026-11-28")),
    ] {
        let mut r = fixtures::request(id, at_ms, &["team-b"], 200);
        r.tokens = Some(crate::vocab::Usage {
            input: 5,
            output: 5,
            ..Default::default()
        });
        d.apply(
            Feed::Event(fixtures::request_event(&mut totals, r, 0)),
            at_ms,
        );
        let row = d.credential("team-b").unwrap();
        assert_eq!(
            (row.usage.today.total(), row.usage.day.as_str()),
            want,
            "request {id}"
        );
    }
}

#[test]
fn rates_and_429_history_come_from_the_pools_totals() {
    let mut d = loaded(fixtures::healthy());
    let mut totals = d.totals;
    let start = NOW_MS - NOW_MS % 1000;
    // Ten seconds: 5 requests a second, the fourth second with 3 upstream
    // 429s and the sixth with a client-visible 429.
    for s in 1..=10u64 {
        for k in 0..5u64 {
            let at = start + s * 1000 + k * 100;
            let status = if s == 6 && k == 0 { 429 } else { 200 };
            let up = if s == 4 && k == 0 { 3 } else { 0 };
            let r = fixtures::request(s * 10 + k, at, &["team-a"], status);
            d.apply(Feed::Event(fixtures::request_event(&mut totals, r, up)), at);
        }
    }
    let now = start + 10 * 1000 + 900;
    d.tick(now);
    let b = d.buckets(12, now);
    assert_eq!(b.len(), 12);
    // Oldest first; the last bucket is the current second (s = 10).
    let last = 11;
    assert_eq!(b[last].requests, 5);
    assert_eq!(b[last - 6].upstream_429, 3, "s = 4");
    assert_eq!(b[last - 4].client_429, 1, "s = 6");
    assert_eq!(b.iter().map(|x| x.upstream_429).sum::<u64>(), 3);
    assert_eq!(b.iter().map(|x| x.client_429).sum::<u64>(), 1);
    // The second before the dashboard heard anything is empty.
    assert_eq!(b[0], Bucket::default());

    let (w, secs) = d.window(60, now);
    assert_eq!(w.requests, 50);
    assert_eq!(w.upstream_429, 3);
    assert_eq!(w.client_429, 1);
    assert!((secs - 10.9).abs() < 0.01, "{secs}");
    assert!((d.rate(now) - 50.0 / 10.9).abs() < 0.01);

    // A minute of silence later, the last-60-s figures are back to zero
    // while the totals keep their values.
    let later = now + 70_000;
    d.tick(later);
    let (w, _) = d.window(60, later);
    assert_eq!(w.requests, 0);
    assert_eq!(w.upstream_429, 0);
    assert_eq!(d.totals.upstream_429, 28);
}

#[test]
fn history_is_bounded_and_survives_long_gaps() {
    let mut d = loaded(fixtures::healthy());
    d.tick(NOW_MS + 3 * HISTORY_SECS as u64 * 1000);
    assert_eq!(d.history.len(), HISTORY_SECS);
    for s in 0..2000u64 {
        d.tick(NOW_MS + 4_000_000 + s * 1000);
    }
    assert_eq!(d.history.len(), HISTORY_SECS);
    // Samples stay one per second, so buckets line up.
    let secs: Vec<u64> = d.history.iter().map(|s| s.sec).collect();
    assert!(secs.windows(2).all(|w| w[1] == w[0] + 1));
}

#[test]
fn a_snapshot_after_a_lag_fixes_the_counters() {
    let mut d = loaded(fixtures::healthy());
    // Events were skipped; the resync snapshot carries the pool's numbers.
    let mut snap = fixtures::healthy();
    snap.totals.requests += 500;
    snap.totals.upstream_429 += 40;
    snap.credentials[0].requests += 300;
    d.apply(Feed::Snapshot(snap), NOW_MS + 2_000);
    assert_eq!(d.totals.requests, 1_765);
    assert_eq!(d.credential("team-a").unwrap().requests, 720);
    let (w, _) = d.window(60, NOW_MS + 2_000);
    assert_eq!(w.upstream_429, 40);
}

#[test]
fn countdowns_use_the_passed_in_clock() {
    let d = loaded(fixtures::cooling());
    let a = d.credential("team-a").unwrap();
    assert_eq!(remaining(a.until_ms.unwrap(), NOW_MS), 42_000);
    assert_eq!(remaining(a.until_ms.unwrap(), NOW_MS + 40_000), 2_000);
    assert_eq!(remaining(a.until_ms.unwrap(), NOW_MS + 50_000), 0);
    assert_eq!(effective_state(a, NOW_MS + 41_999), State::Cooling);
    assert_eq!(effective_state(a, NOW_MS + 42_000), State::Ready);
    let disabled = d.credential("backup-2").unwrap();
    assert_eq!(
        effective_state(disabled, NOW_MS + 1_000_000),
        State::Disabled
    );
}

#[test]
fn exhausted_means_no_credential_can_serve_now() {
    assert!(!loaded(fixtures::healthy()).exhausted(NOW_MS));
    assert!(!loaded(fixtures::cooling()).exhausted(NOW_MS));
    let d = loaded(fixtures::exhausted());
    assert!(d.exhausted(NOW_MS));
    // The earliest cooldown (team-b, 8.5 s) ends: no longer exhausted.
    assert!(!d.exhausted(NOW_MS + 8_500));
}

#[test]
fn disconnect_is_logged_once_and_cleared_by_the_next_snapshot() {
    let mut d = loaded(fixtures::healthy());
    let first = d.apply(Feed::Disconnected("connection refused".into()), NOW_MS);
    assert!(first.unwrap().1.contains("connection refused"));
    assert_eq!(
        d.apply(Feed::Disconnected("connection refused".into()), NOW_MS),
        None,
        "one line per outage"
    );
    assert!(d.disconnected.is_some());
    let back = d.apply(Feed::Snapshot(fixtures::healthy()), NOW_MS);
    assert!(back.unwrap().1.starts_with("connected"));
    assert!(d.disconnected.is_none());
}

#[test]
fn rotations_and_notices_become_log_lines() {
    let mut d = loaded(fixtures::healthy());
    let line = d.apply(
        Feed::Event(Event::Rotation {
            at_ms: NOW_MS,
            from: "team-a".into(),
            to: Some("team-b".into()),
            reason: "429 on team-a (retry in 7s)".into(),
        }),
        NOW_MS,
    );
    assert_eq!(
        line.unwrap().1,
        "429 on team-a (retry in 7s) → retrying with team-b"
    );
    assert_eq!(d.rotations, 1);
    let line = d.apply(
        Feed::Event(Event::Notice {
            at_ms: NOW_MS,
            level: Level::Warn,
            message: "oauth-1: refresh failed".into(),
        }),
        NOW_MS,
    );
    assert_eq!(line, Some((Level::Warn, "oauth-1: refresh failed".into())));
}

#[test]
fn a_reload_replaces_the_table_so_removed_rows_go() {
    let mut d = loaded(fixtures::healthy());
    let mut snap = fixtures::healthy();
    snap.credentials.retain(|c| c.name != "team-a");
    snap.credentials
        .push(fixtures::cred("team-z", "primary", CredentialKind::ApiKey));
    let line = d.apply(
        Feed::Event(Event::Reloaded {
            snapshot: Box::new(snap),
        }),
        NOW_MS,
    );
    assert_eq!(line, None, "the reload's notice says what changed");
    assert!(d.credential("team-a").is_none());
    assert!(d.credential("team-z").is_some());
    assert_eq!(d.credentials.len(), 6);
}
