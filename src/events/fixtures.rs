//! Fixed pools for the reducer, snapshot and metrics tests: six
//! credentials in three tiers, a fixed clock, masked secrets.

use super::{
    CredentialKind, CredentialView, Event, PoolSnapshot, ProviderView, RequestRecord, State, Totals,
};

/// 2026-11-26 12:00:00 UTC: the clock every fixture is set against.
pub const NOW_MS: u64 = 1_795_694_400_000;

pub fn cred(name: &str, tier: &str, kind: CredentialKind) -> CredentialView {
    CredentialView {
        name: name.into(),
        provider: "openai".into(),
        tier: tier.into(),
        secret: "…f00d".into(),
        kind,
        state: State::Ready,
        reason: None,
        until_ms: None,
        failures: 0,
        requests: 0,
        successes: 0,
        rate_limited: 0,
        errors: 0,
        refreshes: 0,
        in_flight: 0,
        last_used_ms: None,
        last_latency_ms: None,
        last_status: None,
        token_expires_ms: match kind {
            CredentialKind::RefreshToken => Some(NOW_MS + 45 * 60_000),
            CredentialKind::ApiKey => None,
        },
        last_error: None,
        usage: Default::default(),
        capacity: None,
    }
}

/// A healthy pool that has served a while.
pub fn healthy() -> PoolSnapshot {
    let mut creds = vec![
        cred("team-a", "primary", CredentialKind::ApiKey),
        cred("team-b", "primary", CredentialKind::ApiKey),
        cred("oauth-1", "primary", CredentialKind::RefreshToken),
        cred("backup-1", "backup", CredentialKind::ApiKey),
        cred("backup-2", "backup", CredentialKind::ApiKey),
        cred("fallback-a", "fallback", CredentialKind::ApiKey),
    ];
    for (i, c) in creds.iter_mut().enumerate() {
        let i = i as u64;
        c.requests = [420, 415, 409, 12, 9, 0][i as usize];
        c.successes = c.requests;
        let tokens = [812_000, 640_000, 12_300, 900, 450, 0][i as usize];
        c.usage.today = crate::vocab::TokenCounts {
            answers: c.requests,
            input: tokens * 3 / 4,
            output: tokens - tokens * 3 / 4,
            ..Default::default()
        };
        c.usage.total = c.usage.today;
        c.usage.day = "2026-11-26".into();
        // Days in Europe/Berlin (+01:00 in November): the 26th ends at
        // 23:00 UTC.
        c.usage.day_ends_ms = NOW_MS + 11 * 3_600_000;
        if i < 2 {
            c.usage.tokens_per_day_budget = Some(1_000_000);
        }
        // What the providers last said: 62 % of the requests left for 4
        // minutes, 5 % of the tokens for 30 s, 58 % of a 5-hour window.
        if i < 3 {
            let (remaining, limit, left, reset_s, window) = [
                (Some(62), Some(100), 0.62, 240, "requests"),
                (Some(1_500), Some(30_000), 0.05, 30, "tokens"),
                (None, None, 0.58, 2 * 3600 + 60, "unified-5h"),
            ][i as usize];
            c.capacity = Some(crate::vocab::Capacity {
                remaining,
                limit,
                left,
                resets_at_ms: Some(NOW_MS + reset_s * 1000),
                window: window.into(),
                seen_ms: NOW_MS - 1_000,
            });
        }
        if c.requests > 0 {
            c.last_used_ms = Some(NOW_MS - 1_000 * (i + 1));
            c.last_latency_ms = Some(180.0 + 10.0 * i as f64);
            c.last_status = Some(200);
        }
    }
    PoolSnapshot {
        at_ms: NOW_MS,
        started_ms: NOW_MS - 3_723_000,
        tiers: vec!["primary".into(), "backup".into(), "fallback".into()],
        credentials: creds,
        providers: vec![ProviderView {
            name: "openai".into(),
            healthy: true,
            reason: None,
            cooling_until_ms: None,
            cooling_reason: None,
            since_ms: None,
        }],
        next: Some("team-b".into()),
        totals: Totals {
            requests: 1_265,
            succeeded: 1_265,
            attempts: 1_290,
            upstream_429: 25,
            client_429: 0,
            refreshes: 3,
            refresh_failures: 0,
        },
        clients: Default::default(),
        sessions: 12,
        pinned: [("team-a".to_string(), 7), ("team-b".to_string(), 5)].into(),
    }
}

/// Two primary credentials cooling with live countdowns, one disabled.
pub fn cooling() -> PoolSnapshot {
    let mut snap = healthy();
    let c = &mut snap.credentials;
    c[0].state = State::Cooling;
    c[0].reason = Some("429 retry-after 42s".into());
    c[0].until_ms = Some(NOW_MS + 42_000);
    c[0].rate_limited = 7;
    c[1].state = State::Cooling;
    c[1].reason = Some("429 x-ratelimit-reset-requests 8.5s".into());
    c[1].until_ms = Some(NOW_MS + 8_500);
    c[1].rate_limited = 5;
    c[4].state = State::Disabled;
    c[4].reason = Some("disabled by the operator".into());
    snap.next = Some("oauth-1".into());
    snap
}

/// Nothing can serve: everything cooling, exhausted, failed or disabled.
pub fn exhausted() -> PoolSnapshot {
    let mut snap = cooling();
    let c = &mut snap.credentials;
    c[2].state = State::Cooling;
    c[2].reason = Some("429 retry-after 30s".into());
    c[2].until_ms = Some(NOW_MS + 30_000);
    c[3].state = State::Failed;
    c[3].failures = 3;
    c[3].reason = Some("HTTP 503 from upstream".into());
    c[3].until_ms = Some(NOW_MS + 20_000);
    c[5].state = State::Exhausted;
    c[5].reason = Some("quota exhausted (insufficient_quota)".into());
    c[5].until_ms = Some(NOW_MS + 5 * 60_000);
    snap.next = None;
    snap.totals.client_429 = 4;
    snap.totals.requests += 4;
    snap
}

pub fn request(id: u64, at_ms: u64, path: &[&str], status: u16) -> RequestRecord {
    RequestRecord {
        id,
        at_ms,
        model: if id.is_multiple_of(2) {
            "gpt-4o-mini"
        } else {
            "gpt-4o"
        }
        .into(),
        stream: !id.is_multiple_of(3),
        path: path.iter().map(|s| s.to_string()).collect(),
        attempts: path.len().max(1) as u32,
        status,
        latency_ms: 200.0 + id as f64 * 13.0,
        ttfb_ms: (status == 200).then_some(90.0 + id as f64),
        error: None,
        format: Some(super::Format::OpenAi),
        code: None,
        tokens: None,
        client: None,
    }
}

/// A request event whose totals add one finished request to `base`.
pub fn request_event(base: &mut Totals, record: RequestRecord, upstream_429: u64) -> Event {
    base.requests += 1;
    base.attempts += record.attempts as u64;
    base.upstream_429 += upstream_429;
    if record.status == 200 {
        base.succeeded += 1;
    }
    if record.status == 429 {
        base.client_429 += 1;
    }
    Event::Request {
        request: std::sync::Arc::new(record),
        totals: *base,
    }
}
