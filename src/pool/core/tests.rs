use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn settings(tiers: &[&str]) -> PoolSettings {
    PoolSettings {
        tiers: tiers.iter().map(|t| t.to_string()).collect(),
        max_failures: 3,
        probe_interval: Duration::from_secs(30),
        ..PoolSettings::default()
    }
}

/// A pool of `(name, tier)` credentials, all for provider 0.
fn pool(tiers: &[&str], creds: &[(&str, usize)]) -> Core {
    Core::new(
        settings(tiers),
        creds
            .iter()
            .map(|(n, t)| Cred::new(n.to_string(), 0, *t))
            .collect(),
    )
}

fn names(core: &mut Core, n: usize, now: Instant) -> Vec<String> {
    (0..n)
        .map(|_| {
            let i = core.select(0, &[], now).expect("a credential");
            core.release(i);
            core.creds[i].name.clone()
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A 429 that says the key's own limit is spent.
fn rate_limited(s: u64) -> Verdict {
    Verdict::RateLimited {
        own: true,
        wait: secs(s),
        reason: "429".into(),
    }
}

/// A 429 that says nothing of the key's own limit (only a retry hint).
fn bare_429(s: u64) -> Verdict {
    Verdict::RateLimited {
        own: false,
        wait: secs(s),
        reason: "429".into(),
    }
}

#[test]
fn round_robin_within_the_first_tier() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0), ("k3", 0)]);
    assert_eq!(names(&mut p, 6, now), ["k1", "k2", "k3", "k1", "k2", "k3"]);
}

#[test]
fn later_tiers_only_when_earlier_ones_cannot_serve() {
    let now = Instant::now();
    let mut p = pool(
        &["primary", "backup", "fallback"],
        &[("p1", 0), ("b1", 1), ("b2", 1), ("f1", 2)],
    );
    assert_eq!(names(&mut p, 3, now), ["p1", "p1", "p1"]);
    p.record(0, &rate_limited(10), now);
    assert_eq!(names(&mut p, 4, now), ["b1", "b2", "b1", "b2"]);
    p.record(1, &rate_limited(10), now);
    p.record(
        2,
        &Verdict::QuotaExhausted {
            wait: secs(3600),
            reason: "quota".into(),
        },
        now,
    );
    assert_eq!(names(&mut p, 2, now), ["f1", "f1"]);
    // The primary comes back by itself once its hint has passed.
    let later = now + secs(10);
    assert_eq!(p.creds[0].state(later), State::Ready);
    assert_eq!(names(&mut p, 1, later), ["p1"]);
}

#[test]
fn cooling_is_never_chosen_before_its_hint_expires() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &rate_limited(12), now);
    for s in 0..12 {
        let t = now + secs(s);
        assert_eq!(p.creds[0].state(t), State::Cooling);
        assert_eq!(names(&mut p, 2, t), ["k2", "k2"]);
    }
    assert_eq!(p.creds[0].state(now + secs(12)), State::Ready);
}

#[test]
fn a_shorter_hint_never_shortens_a_cooldown() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0)]);
    p.record(0, &rate_limited(60), now);
    p.record(0, &rate_limited(5), now + secs(1));
    assert_eq!(p.creds[0].state(now + secs(30)), State::Cooling);
    // A hold from a late success does not shorten it either.
    p.record(
        0,
        &Verdict::Success {
            hold: Some((secs(1), "held".into())),
        },
        now + secs(2),
    );
    assert_eq!(p.creds[0].state(now + secs(59)), State::Cooling);
    assert_eq!(p.creds[0].state(now + secs(60)), State::Ready);
}

#[test]
fn depleted_success_holds_the_key() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(
        0,
        &Verdict::Success {
            hold: Some((Duration::from_millis(1500), "remaining 0".into())),
        },
        now,
    );
    assert_eq!(p.creds[0].state(now), State::Cooling);
    assert_eq!(p.creds[0].stats.successes, 1);
    assert_eq!(
        p.creds[0].state(now + Duration::from_millis(1500)),
        State::Ready
    );
}

#[test]
fn failures_count_then_fail_then_probe_brings_back() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    let fail = Verdict::Failure {
        reason: "upstream answered 503".into(),
    };
    p.record(0, &fail, now);
    p.record(0, &fail, now);
    assert_eq!(p.creds[0].state(now), State::Ready);
    // A success in between resets the count.
    p.record(0, &Verdict::Success { hold: None }, now);
    assert_eq!(p.creds[0].failures, 0);
    for _ in 0..3 {
        p.record(0, &fail, now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
    assert_eq!(names(&mut p, 2, now), ["k2", "k2"]);
    // Probe is due after probe_interval, one at a time.
    assert!(p.due_probes(now + secs(29)).is_empty());
    assert_eq!(p.due_probes(now + secs(30)), vec![0]);
    assert!(p.due_probes(now + secs(31)).is_empty(), "already probing");
    let (before, after) = p.probe_done(0, Err("probe: 503".into()), now + secs(31));
    assert_eq!((before, after), (State::Failed, State::Failed));
    assert!(p.due_probes(now + secs(60)).is_empty());
    assert_eq!(p.due_probes(now + secs(61)), vec![0]);
    let (_, after) = p.probe_done(0, Ok(()), now + secs(62));
    assert_eq!(after, State::Ready);
    assert_eq!(p.creds[0].failures, 0);
}

fn failure(status: u16) -> Verdict {
    Verdict::Failure {
        reason: format!("upstream answered {status}"),
    }
}

#[test]
fn a_key_that_fails_while_its_siblings_answer_is_the_keys_fault() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    for _ in 0..3 {
        p.record(0, &failure(500), now);
        p.record(1, &Verdict::Success { hold: None }, now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
    assert_eq!(p.provider_down(0), None);
    // Another key failing once after that does not blame the provider:
    // k1's run saw the provider answer.
    p.record(1, &failure(500), now);
    assert_eq!(p.provider_down(0), None);
    assert_eq!(p.creds[0].state(now), State::Failed);
}

#[test]
fn a_run_of_failures_among_many_answers_is_not_a_broken_key() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0)]);
    for _ in 0..20 {
        p.record(0, &Verdict::Success { hold: None }, now);
    }
    // Three in a row after twenty good answers: bad luck at a few percent
    // of errors, not a broken key.
    for _ in 0..3 {
        p.record(0, &failure(500), now);
    }
    assert_eq!(p.creds[0].state(now), State::Ready);
    assert_eq!(p.creds[0].failures, 3);
    // If it keeps failing, it goes once half of its last 16 answers are
    // failures: at the eighth.
    for _ in 0..4 {
        p.record(0, &failure(500), now);
    }
    assert_eq!(p.creds[0].state(now), State::Ready);
    p.record(0, &failure(500), now);
    assert_eq!(p.creds[0].state(now), State::Failed);
    assert_eq!(p.creds[0].failures, 8);
}

#[test]
fn keys_failing_alike_with_no_answer_between_mark_the_provider_down() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0), ("k3", 0)]);
    // k1 alone first (the others cooling, say): it goes failed.
    for _ in 0..3 {
        p.record(0, &failure(500), now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
    assert_eq!(p.provider_down(0), None);
    // Then k2 fails alike with nothing answering between: an outage. k1 is
    // back, and no key goes failed however long it lasts.
    for _ in 0..2 {
        p.record(1, &failure(502), now);
    }
    assert_eq!(p.provider_down(0), None, "k2 has not reached max_failures");
    p.record(1, &failure(502), now);
    let why = p.provider_down(0).expect("the provider is down");
    assert!(why.starts_with("2 credentials failed"), "{why}");
    assert!(why.contains("502"), "{why}");
    for _ in 0..10 {
        for i in 0..3 {
            p.record(i, &failure(500), now);
        }
    }
    for i in 0..3 {
        assert_eq!(p.creds[i].state(now), State::Ready, "{}", p.creds[i].name);
    }
    assert!(p.creds[2].failures >= 10, "the count still rises");
    assert_eq!(p.creds[2].stats.errors, 10);
    // One good answer anywhere: the provider is up and every key of the
    // outage starts over.
    p.record(2, &rate_limited(1), now);
    assert_eq!(p.provider_down(0), None);
    for i in 0..3 {
        assert_eq!(p.creds[i].failures, 0, "{}", p.creds[i].name);
    }
    // A key that fails on its own after that goes failed as usual.
    p.record(1, &Verdict::Success { hold: None }, now);
    for _ in 0..3 {
        p.record(0, &failure(500), now);
        p.record(1, &Verdict::Success { hold: None }, now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
}

#[test]
fn a_single_key_provider_fails_its_key() {
    let now = Instant::now();
    let mut p = Core::new(
        settings(&["a"]),
        vec![
            Cred::new("only".into(), 0, 0),
            Cred::new("elsewhere".into(), 1, 0),
        ],
    );
    // A failure at another provider is not this one's.
    p.record(1, &failure(500), now);
    for _ in 0..3 {
        p.record(0, &failure(500), now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
    assert_eq!(p.provider_down(0), None);
    assert_eq!(p.provider_down(1), None);
}

#[test]
fn a_refresh_failure_says_nothing_about_the_provider() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    for _ in 0..3 {
        p.refresh_failed(0, "token endpoint answered 503", now);
    }
    assert_eq!(p.creds[0].state(now), State::Failed);
    for _ in 0..3 {
        p.record(1, &failure(500), now);
    }
    assert_eq!(p.creds[1].state(now), State::Failed);
    assert_eq!(p.provider_down(0), None);
}

#[test]
fn unauthorized_fails_at_once() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0)]);
    let (b, a) = p.record(
        0,
        &Verdict::Unauthorized {
            reason: "401".into(),
        },
        now,
    );
    assert_eq!((b, a), (State::Ready, State::Failed));
}

#[test]
fn client_errors_are_not_the_keys_fault() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0)]);
    for _ in 0..10 {
        p.record(0, &Verdict::Neutral, now);
    }
    assert_eq!(p.creds[0].state(now), State::Ready);
    assert_eq!(p.creds[0].failures, 0);
}

#[test]
fn disabled_only_comes_back_by_the_operator_and_keeps_its_cooldown() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &rate_limited(20), now);
    p.set_disabled(0, true);
    assert_eq!(p.creds[0].state(now + secs(3600)), State::Disabled);
    assert_eq!(p.expire(now + secs(25)), Vec::<usize>::new());
    p.set_disabled(0, false);
    assert_eq!(p.creds[0].state(now + secs(25)), State::Ready);

    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &rate_limited(20), now);
    p.set_disabled(0, true);
    p.set_disabled(0, false);
    assert_eq!(
        p.creds[0].state(now + secs(5)),
        State::Cooling,
        "enable keeps the hint"
    );
}

#[test]
fn unavailable_reports_the_earliest_recovery() {
    let now = Instant::now();
    let mut p = pool(&["a", "b"], &[("k1", 0), ("k2", 1), ("k3", 1)]);
    p.record(0, &rate_limited(30), now);
    p.record(1, &rate_limited(7), now);
    p.set_disabled(2, true);
    let u = p.select(0, &[], now).unwrap_err();
    assert_eq!(u.retry_at, Some(now + secs(7)));
    assert!(!u.tried_ready);
    // All disabled: no recovery without the operator.
    let mut p = pool(&["a"], &[("k1", 0)]);
    p.set_disabled(0, true);
    assert_eq!(p.select(0, &[], now).unwrap_err().retry_at, None);
}

#[test]
fn tried_credentials_are_skipped() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    let first = p.select(0, &[], now).unwrap();
    let second = p.select(0, &[first], now).unwrap();
    assert_ne!(first, second);
    let u = p.select(0, &[first, second], now).unwrap_err();
    assert!(u.tried_ready);
}

#[test]
fn use_next_and_rotate() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0), ("k3", 0)]);
    p.use_next(2);
    assert_eq!(p.peek(0, now), Some(2));
    assert_eq!(names(&mut p, 2, now), ["k3", "k1"]);
    // Rotate skips the credential that would have served next.
    assert_eq!(p.peek(0, now), Some(1));
    assert_eq!(p.rotate(0, now), Some(2));
    assert_eq!(names(&mut p, 1, now), ["k3"]);
    // A use-next pick that is cooling waits until it can serve.
    p.record(0, &rate_limited(5), now);
    p.use_next(0);
    assert_eq!(names(&mut p, 1, now), ["k2"]);
    assert_eq!(names(&mut p, 1, now + secs(5)), ["k1"]);
}

#[test]
fn expire_and_next_deadline() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    assert_eq!(p.next_deadline(), None);
    p.record(0, &rate_limited(5), now);
    p.record(1, &rate_limited(9), now);
    assert_eq!(p.next_deadline(), Some(now + secs(5)));
    assert_eq!(p.expire(now + secs(5)), vec![0]);
    assert_eq!(p.next_deadline(), Some(now + secs(9)));
    assert!(p.creds[0].cooldown.is_none());
}

#[test]
fn counters() {
    let now = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0)]);
    let i = p.select(0, &[], now).unwrap();
    assert_eq!(p.creds[i].in_flight, 1);
    p.record(i, &rate_limited(1), now);
    p.release(i);
    assert_eq!(p.creds[i].in_flight, 0);
    assert_eq!(p.creds[i].stats.requests, 1);
    assert_eq!(p.creds[i].stats.rate_limited, 1);
    assert_eq!(p.totals.upstream_429, 1);
}

#[test]
fn a_429_on_every_key_within_a_second_cools_the_provider_not_the_keys() {
    let t = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0), ("k3", 0)]);
    // k3 had a cooldown of its own that ended; it is kept as it was.
    p.record(0, &bare_429(30), t);
    assert_eq!(p.creds[0].state(t), State::Cooling);
    let t2 = t + Duration::from_millis(300);
    p.record(1, &bare_429(2), t2);
    assert_eq!(p.provider_cooling(0, t2), None, "k3 has not answered 429");
    let t3 = t + Duration::from_millis(900);
    p.record(2, &bare_429(40), t3);
    // The set is complete: the provider cools for the shortest wait (2 s),
    // and every key is back as it was before its 429.
    assert_eq!(p.provider_cooling(0, t3), Some(t3 + secs(2)));
    for c in &p.creds {
        assert_eq!(c.state(t3), State::Ready, "{}", c.name);
        assert!(c.cooldown.is_none(), "{}", c.name);
        assert_eq!(c.stats.rate_limited, 1);
    }
    let why = &p.health(0).unwrap().cooling.as_ref().unwrap().0;
    assert!(
        why.starts_with("provider-wide 429: all 3 credentials"),
        "{why}"
    );
    // Nothing is leased meanwhile; the client hears when it ends.
    let u = p.select(0, &[], t3).unwrap_err();
    assert_eq!(u.retry_at, Some(t3 + secs(2)));
    assert!(u.limited);
    assert_eq!(p.next_deadline(), Some(t3 + secs(2)));
    // A 429 that was on its way belongs to it: the key stays ready.
    p.record(0, &bare_429(30), t3 + Duration::from_millis(100));
    assert!(p.creds[0].cooldown.is_none());
    // Then the provider serves again.
    let later = t3 + secs(2);
    assert_eq!(p.expire_providers(later), [0]);
    assert!(p.select(0, &[], later).is_ok());
}

#[test]
fn the_provider_cools_between_half_a_second_and_five() {
    let t = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &bare_429(60), t);
    p.record(1, &bare_429(90), t);
    assert_eq!(p.provider_cooling(0, t), Some(t + PROVIDER_WIDE_MAX));
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    let quick = Verdict::RateLimited {
        own: false,
        wait: Duration::from_millis(10),
        reason: "429".into(),
    };
    p.record(0, &quick, t);
    p.record(1, &quick, t);
    assert_eq!(p.provider_cooling(0, t), Some(t + PROVIDER_WIDE_MIN));
}

#[test]
fn keys_limited_apart_or_alone_keep_their_hints() {
    let t = Instant::now();
    // More than a second apart: each key's own limit.
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &bare_429(30), t);
    p.record(1, &bare_429(30), t + Duration::from_millis(1100));
    assert_eq!(p.provider_cooling(0, t + secs(1)), None);
    assert_eq!(p.creds[0].state(t + secs(2)), State::Cooling);
    assert_eq!(p.creds[1].state(t + secs(2)), State::Cooling);
    // A 429 that says the key's own limit is spent is the key's.
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &rate_limited(30), t);
    p.record(1, &bare_429(30), t);
    assert_eq!(p.provider_cooling(0, t), None);
    assert_eq!(p.creds[0].state(t), State::Cooling);
    assert_eq!(p.creds[1].state(t), State::Cooling);
    // One key: its 429 is its own.
    let mut p = pool(&["a"], &[("k1", 0)]);
    p.record(0, &bare_429(30), t);
    assert_eq!(p.creds[0].state(t), State::Cooling);
    // A disabled key does not have to answer 429 for the set.
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0), ("k3", 0)]);
    p.set_disabled(2, true);
    p.record(0, &bare_429(30), t);
    p.record(1, &bare_429(30), t);
    assert!(p.provider_cooling(0, t).is_some());
}

#[test]
fn a_provider_wide_429_again_soon_after_is_taken_at_its_word() {
    let t = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    p.record(0, &bare_429(30), t);
    p.record(1, &bare_429(30), t);
    let end = p.provider_cooling(0, t).unwrap();
    p.expire_providers(end);
    p.record(0, &bare_429(30), end);
    p.record(1, &bare_429(30), end);
    assert_eq!(p.provider_cooling(0, end), None);
    assert_eq!(p.creds[0].state(end), State::Cooling);
    assert_eq!(p.creds[1].state(end), State::Cooling);
    // Long after, it is brief again.
    let much_later = end + PROVIDER_WIDE_RECUR + secs(31);
    p.expire(much_later);
    p.record(0, &bare_429(30), much_later);
    p.record(1, &bare_429(30), much_later);
    assert!(p.provider_cooling(0, much_later).is_some());
}

#[test]
fn policy_verdicts_cool_or_disable_with_their_reason() {
    let t = Instant::now();
    let mut p = pool(&["a"], &[("k1", 0), ("k2", 0)]);
    let (b, a) = p.record(
        0,
        &Verdict::Held {
            wait: secs(600),
            reason: "403 matched error_policy[0]".into(),
        },
        t,
    );
    assert_eq!((b, a), (State::Ready, State::Cooling));
    assert_eq!(
        p.creds[0].cooldown.as_ref().unwrap().reason,
        "403 matched error_policy[0]"
    );
    assert_eq!(p.creds[0].stats.rate_limited, 0);
    assert_eq!(p.creds[0].failures, 0);
    let (b, a) = p.record(
        1,
        &Verdict::Disabled {
            reason: "402 payment required".into(),
        },
        t,
    );
    assert_eq!((b, a), (State::Ready, State::Disabled));
    assert_eq!(
        p.creds[1].disabled_reason.as_deref(),
        Some("402 payment required")
    );
    // Only the operator brings it back; then it is the operator's switch.
    assert_eq!(p.creds[1].state(t + secs(3600)), State::Disabled);
    p.set_disabled(1, false);
    assert_eq!(p.creds[1].state(t), State::Ready);
    assert_eq!(p.creds[1].disabled_reason, None);
}

#[test]
fn a_session_pin_holds_within_the_first_ready_tier_only() {
    let now = Instant::now();
    let mut core = pool(&["main", "backup"], &[("a", 0), ("b", 0), ("z", 1)]);
    // The pin wins over round-robin, and leaves the cursor alone.
    assert_eq!(core.select_pinned(0, &[], Some(1), now), Ok(1));
    assert_eq!(core.select_pinned(0, &[], Some(1), now), Ok(1));
    assert_eq!(core.select(0, &[], now), Ok(0));
    // Tried by this request: moved, and why.
    assert_eq!(core.select_pinned(0, &[1], Some(1), now), Ok(0));
    assert_eq!(
        core.pin_skipped(1, 0, &[1], now).as_deref(),
        Some("failed on this request")
    );
    // A pin on the fallback tier gives way once the first tier is ready.
    assert_eq!(core.select_pinned(0, &[], Some(2), now), Ok(1));
    assert_eq!(
        core.pin_skipped(2, 0, &[], now).as_deref(),
        Some("tier main is ready again")
    );
    // Cooling: moved.
    core.record(
        1,
        &Verdict::RateLimited {
            wait: Duration::from_secs(5),
            reason: "429".into(),
            own: true,
        },
        now,
    );
    assert_ne!(core.select_pinned(0, &[], Some(1), now), Ok(1));
    assert_eq!(core.pin_skipped(1, 0, &[], now).as_deref(), Some("cooling"));
    // Only at its concurrency cap: served elsewhere, the pin stays.
    let mut core = pool(&["main"], &[("a", 0), ("b", 0)]);
    core.settings.max_in_flight = 1;
    assert_eq!(core.select_pinned(0, &[], Some(0), now), Ok(0));
    assert_eq!(core.select_pinned(0, &[], Some(0), now), Ok(1));
    assert_eq!(core.pin_skipped(0, 0, &[], now), None);
}
