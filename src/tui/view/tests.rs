//! Layout snapshots at 80x24 and 160x48. The clock is fixed
//! ([`NOW_MS`]), times render in UTC and the log pane is the placeholder,
//! so every snapshot is stable.

use jiff::tz::TimeZone;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::*;
use crate::events::fixtures::{self, NOW_MS};
use crate::events::{Event, PoolSnapshot};
use crate::tui::Feed;
use crate::tui::keys::Ui;

/// A dashboard that has watched `snap`'s pool for the last 40 s: steady
/// traffic, a burst of upstream 429s, and (if the pool ran dry) client 429s.
fn watched(snap: PoolSnapshot) -> Dashboard {
    let mut d = Dashboard::new("127.0.0.1:8080");
    let start = NOW_MS - 40_000;
    let mut early = snap.clone();
    early.totals = crate::events::Totals {
        requests: snap.totals.requests - 80,
        succeeded: snap.totals.succeeded.saturating_sub(80),
        attempts: snap.totals.attempts - 90,
        upstream_429: snap.totals.upstream_429 - 10,
        client_429: 0,
        ..snap.totals
    };
    d.apply(Feed::Snapshot(early), start);
    let mut totals = d.totals;
    let client_429s = snap.totals.client_429;
    for i in 0..80u64 {
        let at = start + i * 500;
        let (path, up): (&[&str], u64) = match i {
            20..=29 => (&["team-a", "team-b"], 1),
            _ if i % 3 == 0 => (&["oauth-1"], 0),
            _ => (&["team-b"], 0),
        };
        let status = if i >= 80 - client_429s { 429 } else { 200 };
        let r = fixtures::request(i, at, path, status);
        let e = fixtures::request_event(&mut totals, r, up);
        d.apply(Feed::Event(e), at);
    }
    d.apply(Feed::Snapshot(snap), NOW_MS);
    d
}

fn screen(d: &Dashboard, ui: &Ui, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    let cx = Context {
        now_ms: NOW_MS,
        tz: &TimeZone::UTC,
        log: None,
    };
    t.draw(|f| render(f, d, ui, &cx)).unwrap();
    format!("{}", t.backend())
}

fn both(name: &str, d: &Dashboard, ui: &Ui) {
    insta::assert_snapshot!(format!("{name}_80x24"), screen(d, ui, 80, 24));
    insta::assert_snapshot!(format!("{name}_160x48"), screen(d, ui, 160, 48));
}

#[test]
fn healthy_pool() {
    let d = watched(fixtures::healthy());
    both("healthy", &d, &Ui::default());
}

#[test]
fn cooling_with_countdowns() {
    let d = watched(fixtures::cooling());
    let ui = Ui::default();
    both("cooling", &d, &ui);
    // The countdown is live: five seconds later it shows five less.
    let mut t = Terminal::new(TestBackend::new(160, 48)).unwrap();
    let later = Context {
        now_ms: NOW_MS + 5_000,
        tz: &TimeZone::UTC,
        log: None,
    };
    t.draw(|f| render(f, &d, &ui, &later)).unwrap();
    let text = format!("{}", t.backend());
    let row = text.lines().find(|l| l.contains("team-a")).unwrap();
    assert!(row.contains("37s"), "{row}");
    let row = text.lines().find(|l| l.contains("team-b ")).unwrap();
    assert!(row.contains(" 4s "), "8.5 s - 5 s rounds up: {row}");
}

#[test]
fn one_disabled() {
    let mut snap = fixtures::healthy();
    snap.credentials[1].state = crate::events::State::Disabled;
    snap.credentials[1].reason = Some("disabled by the operator".into());
    snap.next = Some("oauth-1".into());
    let d = watched(snap);
    let ui = Ui {
        selected: Some("team-b".into()),
        ..Ui::default()
    };
    both("disabled", &d, &ui);
}

#[test]
fn pool_exhausted() {
    let d = watched(fixtures::exhausted());
    let text = screen(&d, &Ui::default(), 80, 24);
    assert!(text.contains("POOL EXHAUSTED"), "{text}");
    both("exhausted", &d, &Ui::default());
}

#[test]
fn provider_unhealthy() {
    let mut d = watched(fixtures::healthy());
    let line = d.apply(
        Feed::Event(crate::events::Event::Provider {
            provider: crate::events::ProviderView {
                name: "openai".into(),
                healthy: false,
                reason: Some(
                    "3 credentials failed with no good answer between; last: upstream answered 500"
                        .into(),
                ),
                cooling_until_ms: None,
                cooling_reason: None,
                since_ms: Some(NOW_MS - 12_000),
            },
        }),
        NOW_MS,
    );
    let (_, line) = line.expect("a log line");
    assert!(line.contains("provider openai is unhealthy"), "{line}");
    let text = screen(&d, &Ui::default(), 160, 48);
    assert!(text.contains("openai UNHEALTHY  for 12s"), "{text}");
    both("provider_unhealthy", &d, &Ui::default());
}

#[test]
fn help_overlay() {
    let d = watched(fixtures::healthy());
    let ui = Ui {
        help: true,
        ..Ui::default()
    };
    both("help", &d, &ui);
}

#[test]
fn filter_and_disconnected() {
    let mut d = watched(fixtures::cooling());
    d.apply(Feed::Disconnected("connection refused".into()), NOW_MS);
    let ui = Ui {
        filter: "backup".into(),
        filtering: true,
        ..Ui::default()
    };
    let text = screen(&d, &ui, 80, 24);
    assert!(text.contains("disconnected, retrying"), "{text}");
    assert!(text.contains("filter: backup"), "{text}");
    assert!(!text.contains("team-a"), "{text}");
}

#[test]
fn secrets_show_only_masked_and_tiny_terminals_do_not_panic() {
    let mut snap = fixtures::cooling();
    snap.credentials[0].reason = Some("429 from upstream".into());
    let d = watched(snap);
    for (w, h) in [(1, 1), (10, 5), (40, 12), (80, 24), (300, 100)] {
        let _ = screen(&d, &Ui::default(), w, h);
        let _ = screen(
            &d,
            &Ui {
                help: true,
                ..Ui::default()
            },
            w,
            h,
        );
    }
    let _ = Event::Rotation {
        at_ms: 0,
        from: String::new(),
        to: None,
        reason: String::new(),
    };
}
