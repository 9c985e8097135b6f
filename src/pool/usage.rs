//! What each credential has carried: answers and tokens since start, for
//! the current calendar day (in the pool's usage time zone, UTC by
//! default), and over the last hour (sixty one-minute buckets).
//! Pure: the wall clock (Unix seconds) and the zone are passed in.

use crate::config::Budget;
use crate::vocab::{CooldownKind, DayCounts, TokenCounts, Usage, UsageView, UsageZone};
pub use crate::vocab::{civil_date, compact};

const MINUTES: usize = 60;

/// The first limit of `budget` that counts taken at `unix_ms` have reached
/// (this day's tokens in `zone`, this minute's answers and tokens): when it frees
/// (Unix ms), the kind of hold, and why. The day's limit is looked at
/// first: its hold is the longest. The counts may be this replica's or the
/// whole cluster's.
pub fn budget_reached(
    budget: &Budget,
    zone: &UsageZone,
    day_tokens: u64,
    minute_answers: u64,
    minute_tokens: u64,
    unix_ms: u64,
) -> Option<(u64, CooldownKind, String)> {
    let secs = unix_ms / 1000;
    if let Some(max) = budget.tokens_per_day
        && day_tokens >= max
    {
        return Some((
            zone.next_day_ms(secs),
            CooldownKind::Quota,
            format!(
                "budget: {} tokens/day reached; back at 00:00 {}",
                compact(max),
                zone.name()
            ),
        ));
    }
    let next = secs / 60 + 1;
    let limits = [
        (budget.tokens_per_minute, minute_tokens, "tokens/min"),
        (budget.requests_per_minute, minute_answers, "requests/min"),
    ];
    for (max, used, what) in limits {
        if let Some(max) = max
            && used >= max
        {
            return Some((
                next * 60_000,
                CooldownKind::RateLimited,
                format!(
                    "budget: {} {what} reached; back at {} {}",
                    compact(max),
                    zone.clock(next * 60),
                    zone.name()
                ),
            ));
        }
    }
    None
}

/// [`UsageCounters`] in the state file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedUsage {
    pub total: TokenCounts,
    /// The local day (days since 1970-01-01) that `today` counts.
    pub day: u64,
    pub today: TokenCounts,
    /// (minute since the epoch, its counts), for the last hour.
    #[serde(default)]
    pub minutes: Vec<(u64, TokenCounts)>,
}

#[derive(Debug, Clone, Default)]
pub struct UsageCounters {
    total: TokenCounts,
    /// The local day (days since 1970-01-01) that `today` counts.
    day: u64,
    today: TokenCounts,
    /// Bucket `m % 60` holds minute `m` (minutes since the epoch) while
    /// its stamp says so.
    minutes: Vec<(u64, TokenCounts)>,
    /// With shared state: the cluster's counts for a local day, as last
    /// read from Redis. Not saved: Redis keeps them.
    cluster: Option<(u64, DayCounts)>,
}

impl UsageCounters {
    /// One answer, with the usage its provider reported (if it did).
    pub fn add(&mut self, usage: Option<Usage>, unix_secs: u64, zone: &UsageZone) {
        self.total.add(usage);
        let day = zone.day(unix_secs);
        if day != self.day {
            self.day = day;
            self.today = TokenCounts::default();
        }
        self.today.add(usage);
        if self.minutes.is_empty() {
            self.minutes = vec![(u64::MAX, TokenCounts::default()); MINUTES];
        }
        let minute = unix_secs / 60;
        let slot = &mut self.minutes[(minute % MINUTES as u64) as usize];
        if slot.0 != minute {
            *slot = (minute, TokenCounts::default());
        }
        slot.1.add(usage);
    }

    /// What the state file keeps: the sums and the minutes still counted.
    pub fn saved(&self) -> SavedUsage {
        SavedUsage {
            total: self.total,
            day: self.day,
            today: self.today,
            minutes: self
                .minutes
                .iter()
                .filter(|(stamp, _)| *stamp != u64::MAX)
                .copied()
                .collect(),
        }
    }

    pub fn from_saved(saved: &SavedUsage) -> UsageCounters {
        let mut c = UsageCounters {
            total: saved.total,
            day: saved.day,
            today: saved.today,
            minutes: vec![(u64::MAX, TokenCounts::default()); MINUTES],
            cluster: None,
        };
        for (stamp, counts) in &saved.minutes {
            c.minutes[(stamp % MINUTES as u64) as usize] = (*stamp, *counts);
        }
        c
    }

    /// The first limit of `budget` these counts have reached at `unix_ms`
    /// (see [`budget_reached`]).
    pub fn reached(
        &self,
        budget: &Budget,
        zone: &UsageZone,
        unix_ms: u64,
    ) -> Option<(u64, CooldownKind, String)> {
        if budget.is_empty() {
            return None;
        }
        let secs = unix_ms / 1000;
        let (day, minute) = (zone.day(secs), secs / 60);
        let day_tokens = if self.day == day {
            self.today.total()
        } else {
            0
        };
        let this_minute = self
            .minutes
            .get((minute % MINUTES as u64) as usize)
            .filter(|(stamp, _)| *stamp == minute)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        budget_reached(
            budget,
            zone,
            day_tokens,
            this_minute.answers,
            this_minute.total(),
            unix_ms,
        )
    }

    /// The whole cluster's counts for local day `day`, read from Redis
    /// (never lowered by an older read of the same day).
    pub fn set_cluster_day(&mut self, day: u64, counts: DayCounts) {
        match &mut self.cluster {
            Some((d, c)) if *d == day => {
                c.answers = c.answers.max(counts.answers);
                c.tokens = c.tokens.max(counts.tokens);
            }
            Some((d, _)) if *d > day => {}
            _ => self.cluster = Some((day, counts)),
        }
    }

    /// The local day `today` counts and its tokens (this replica's own).
    pub fn today(&self) -> (u64, u64) {
        (self.day, self.today.total())
    }

    pub fn is_empty(&self) -> bool {
        self.total.answers == 0
    }

    pub fn view(&self, unix_secs: u64, zone: &UsageZone) -> UsageView {
        let day = zone.day(unix_secs);
        let minute = unix_secs / 60;
        let mut last_hour = TokenCounts::default();
        for (stamp, counts) in &self.minutes {
            if *stamp <= minute && minute - stamp < MINUTES as u64 {
                last_hour.merge(counts);
            }
        }
        UsageView {
            total: self.total,
            today: if self.day == day {
                self.today
            } else {
                TokenCounts::default()
            },
            day: civil_date(day),
            last_hour,
            tokens_per_day_budget: None,
            day_ends_ms: zone.next_day_ms(unix_secs),
            cluster_today: self
                .cluster
                .map(|(d, c)| if d == day { c } else { DayCounts::default() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> UsageZone {
        UsageZone::utc()
    }

    fn u(input: u64, output: u64) -> Option<Usage> {
        Some(Usage {
            input,
            output,
            ..Usage::default()
        })
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_426), "2025-12-04");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn today_resets_at_midnight_utc_and_the_hour_rolls_by_minute() {
        let day = 20_426 * 86_400;
        let mut c = UsageCounters::default();
        c.add(u(10, 5), day + 86_400 - 120, &utc()); // 23:58
        c.add(None, day + 86_400 - 60, &utc()); // 23:59, usage unknown
        let v = c.view(day + 86_400 - 1, &utc());
        assert_eq!(v.day, "2025-12-04");
        assert_eq!(
            (v.today.answers, v.today.unknown, v.today.total()),
            (2, 1, 15)
        );
        assert_eq!(v.last_hour.total(), 15);

        c.add(u(1, 1), day + 86_400 + 30, &utc()); // 00:00:30 the next day
        let v = c.view(day + 86_400 + 31, &utc());
        assert_eq!(v.day, "2025-12-05");
        assert_eq!((v.today.answers, v.today.total()), (1, 2));
        assert_eq!(v.last_hour.answers, 3, "the hour spans midnight");
        assert_eq!(v.total.answers, 3);
        assert_eq!(v.total.input, 11);

        // An hour after the last answer the hour is empty; today keeps it.
        let v = c.view(day + 86_400 + 30 + 3600, &utc());
        assert_eq!(v.last_hour, TokenCounts::default());
        assert_eq!(v.today.answers, 1);
    }

    #[test]
    fn budgets_hold_until_their_window_resets() {
        let day = 20_426 * 86_400; // 2025-12-04 00:00 UTC
        let at = |secs: u64| (day + secs) * 1000;
        let mut c = UsageCounters::default();
        let budget = Budget {
            requests_per_minute: Some(3),
            tokens_per_minute: Some(1_000),
            tokens_per_day: Some(1_500),
        };
        c.add(u(100, 100), day + 12 * 3600 + 34 * 60 + 5, &utc());
        c.add(u(100, 100), day + 12 * 3600 + 34 * 60 + 6, &utc());
        assert_eq!(
            c.reached(&budget, &utc(), at(12 * 3600 + 34 * 60 + 7)),
            None
        );
        c.add(u(10, 10), day + 12 * 3600 + 34 * 60 + 8, &utc());
        let (until, kind, why) = c
            .reached(&budget, &utc(), at(12 * 3600 + 34 * 60 + 9))
            .unwrap();
        assert_eq!(until, at(12 * 3600 + 35 * 60));
        assert_eq!(kind, CooldownKind::RateLimited);
        assert_eq!(why, "budget: 3 requests/min reached; back at 12:35 UTC");
        // The next minute is a new window.
        assert_eq!(
            c.reached(&budget, &utc(), at(12 * 3600 + 35 * 60 + 1)),
            None
        );

        c.add(u(600, 500), day + 23 * 3600 + 59 * 60, &utc());
        let (_, kind, why) = c
            .reached(&budget, &utc(), at(23 * 3600 + 59 * 60 + 1))
            .unwrap();
        assert_eq!(kind, CooldownKind::Quota, "the day's limit comes first");
        assert_eq!(why, "budget: 1.5k tokens/day reached; back at 00:00 UTC");
        let (until, _, _) = c
            .reached(&budget, &utc(), at(23 * 3600 + 59 * 60 + 1))
            .unwrap();
        assert_eq!(until, (day + 86_400) * 1000);
        // Midnight: a new day, and that minute's tokens are history.
        assert_eq!(c.reached(&budget, &utc(), at(86_400 + 1)), None);
        assert_eq!(
            c.reached(&Budget::default(), &utc(), at(23 * 3600 + 59 * 60 + 1)),
            None
        );
    }

    #[test]
    fn limits_read_as_people_say_them() {
        assert_eq!(compact(950), "950");
        assert_eq!(compact(100_000), "100k");
        assert_eq!(compact(1_500), "1.5k");
        assert_eq!(compact(1_000_000), "1.0M");
    }

    #[test]
    fn saved_and_restored_counts_are_the_same() {
        let mut c = UsageCounters::default();
        c.add(u(3, 4), 1_000_000, &utc());
        c.add(None, 1_000_100, &utc());
        let back = UsageCounters::from_saved(&c.saved());
        assert_eq!(back.view(1_000_200, &utc()), c.view(1_000_200, &utc()));
        assert_eq!(c.saved().minutes.len(), 2);
        let json = serde_json::to_string(&c.saved()).unwrap();
        let parsed: SavedUsage = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, c.saved());
    }

    #[test]
    fn a_view_on_a_later_day_shows_nothing_today() {
        let mut c = UsageCounters::default();
        c.add(u(3, 4), 1_000_000, &utc());
        let v = c.view(1_000_000 + 2 * 86_400, &utc());
        assert_eq!(v.today, TokenCounts::default());
        assert_eq!(v.total.total(), 7);
    }

    #[test]
    fn the_day_follows_the_configured_zone() {
        // 2026-03-28 23:30 UTC is already 00:30 on the 29th in Berlin (+01:00),
        // the day summer time starts there: 23 hours long.
        let berlin = UsageZone::parse("Europe/Berlin").unwrap();
        let at = 1_774_740_600; // 2026-03-28T23:30:00Z
        assert_eq!(civil_date(berlin.day(at)), "2026-03-29");
        assert_eq!(civil_date(utc().day(at)), "2026-03-28");
        // The 29th ends at 22:00 UTC (00:00 CEST, +02:00): 23 hours after
        // it began at 23:00 UTC on the 28th.
        assert_eq!(
            berlin.next_day_ms(at),
            (1_774_740_600 - 1800 + 23 * 3600) * 1000
        );
        assert_eq!(berlin.clock(at), "00:30");

        let india = UsageZone::parse("+05:30").unwrap();
        assert_eq!(india.name(), "+05:30");
        assert_eq!(india.clock(at), "05:00");
        assert_eq!(civil_date(india.day(at)), "2026-03-29");
        let budget = Budget {
            tokens_per_day: Some(10),
            ..Budget::default()
        };
        let mut c = UsageCounters::default();
        c.add(u(6, 6), at, &india);
        let (until, _, why) = c.reached(&budget, &india, at * 1000).unwrap();
        assert_eq!(why, "budget: 10 tokens/day reached; back at 00:00 +05:30");
        assert_eq!(
            until,
            (at + 19 * 3600) * 1000,
            "midnight in India is 18:30 UTC"
        );
        // The same answers, counted by the UTC day, are another day's.
        assert_eq!(c.view(at, &india).day, "2026-03-29");
        assert_eq!(c.reached(&budget, &utc(), at * 1000), None);
    }

    #[test]
    fn zones_that_are_not_zones_are_refused() {
        for bad in ["Mars/Olympus", "+25:00", "+5:75", "-ab"] {
            let err = UsageZone::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!(UsageZone::parse("utc").unwrap(), utc());
        assert_eq!(UsageZone::parse("-08").unwrap().name(), "-08:00");
    }

    #[test]
    fn the_clusters_day_shows_beside_this_replicas_and_rolls_with_it() {
        let day = 20_426 * 86_400;
        let mut c = UsageCounters::default();
        c.add(u(5, 5), day + 60, &utc());
        assert_eq!(c.view(day + 61, &utc()).cluster_today, None, "unshared");
        let d = |answers, tokens| DayCounts { answers, tokens };
        c.set_cluster_day(20_426, d(3, 30));
        c.set_cluster_day(20_426, d(2, 20)); // an older read: kept out
        c.set_cluster_day(20_425, d(9, 90)); // yesterday's: kept out
        let mut v = c.view(day + 62, &utc());
        assert_eq!(v.cluster_today, Some(d(3, 30)));
        assert_eq!(v.today_tokens(), 30, "the budget goes by the cluster");
        // The dashboard counts on between views, and starts the next day at 0.
        v.add(u(1, 1), (day + 63) * 1000);
        assert_eq!(v.cluster_today, Some(d(4, 32)));
        v.add(u(1, 1), (day + 86_400 + 5) * 1000);
        assert_eq!(
            (v.cluster_today, v.day.as_str()),
            (Some(d(1, 2)), "2025-12-05")
        );
        assert_eq!(
            c.view(day + 86_400 + 5, &utc()).cluster_today,
            Some(d(0, 0))
        );
    }
}
