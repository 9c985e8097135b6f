//! What each credential has carried: answers and tokens since start, for
//! the current UTC day, and over the last hour (sixty one-minute buckets).
//! Pure: the wall clock (Unix seconds) is passed in.

use crate::config::Budget;
use crate::vocab::{CooldownKind, TokenCounts, Usage, UsageView};
pub use crate::vocab::{civil_date, compact};

const MINUTES: usize = 60;

/// The first limit of `budget` that counts taken at `unix_ms` have reached
/// (this UTC day's tokens, this minute's answers and tokens): when it frees
/// (Unix ms), the kind of hold, and why. The day's limit is looked at
/// first: its hold is the longest. The counts may be this replica's or the
/// whole cluster's.
pub fn budget_reached(
    budget: &Budget,
    day_tokens: u64,
    minute_answers: u64,
    minute_tokens: u64,
    unix_ms: u64,
) -> Option<(u64, CooldownKind, String)> {
    let secs = unix_ms / 1000;
    let (day, minute) = (secs / 86_400, secs / 60);
    if let Some(max) = budget.tokens_per_day
        && day_tokens >= max
    {
        return Some((
            (day + 1) * 86_400_000,
            CooldownKind::Quota,
            format!(
                "budget: {} tokens/day reached; back at 00:00 UTC",
                compact(max)
            ),
        ));
    }
    let next = minute + 1;
    let back = format!("back at {:02}:{:02} UTC", next % 1440 / 60, next % 60);
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
                format!("budget: {} {what} reached; {back}", compact(max)),
            ));
        }
    }
    None
}

/// [`UsageCounters`] in the state file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedUsage {
    pub total: TokenCounts,
    /// Days since the Unix epoch that `today` counts.
    pub day: u64,
    pub today: TokenCounts,
    /// (minute since the epoch, its counts), for the last hour.
    #[serde(default)]
    pub minutes: Vec<(u64, TokenCounts)>,
}

#[derive(Debug, Clone, Default)]
pub struct UsageCounters {
    total: TokenCounts,
    /// Days since the Unix epoch (UTC) that `today` counts.
    day: u64,
    today: TokenCounts,
    /// Bucket `m % 60` holds minute `m` (minutes since the epoch) while
    /// its stamp says so.
    minutes: Vec<(u64, TokenCounts)>,
}

impl UsageCounters {
    /// One answer, with the usage its provider reported (if it did).
    pub fn add(&mut self, usage: Option<Usage>, unix_secs: u64) {
        self.total.add(usage);
        let day = unix_secs / 86_400;
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
        };
        for (stamp, counts) in &saved.minutes {
            c.minutes[(stamp % MINUTES as u64) as usize] = (*stamp, *counts);
        }
        c
    }

    /// The first limit of `budget` these counts have reached at `unix_ms`
    /// (see [`budget_reached`]).
    pub fn reached(&self, budget: &Budget, unix_ms: u64) -> Option<(u64, CooldownKind, String)> {
        let secs = unix_ms / 1000;
        let (day, minute) = (secs / 86_400, secs / 60);
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
            day_tokens,
            this_minute.answers,
            this_minute.total(),
            unix_ms,
        )
    }

    pub fn is_empty(&self) -> bool {
        self.total.answers == 0
    }

    pub fn view(&self, unix_secs: u64) -> UsageView {
        let day = unix_secs / 86_400;
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        c.add(u(10, 5), day + 86_400 - 120); // 23:58
        c.add(None, day + 86_400 - 60); // 23:59, usage unknown
        let v = c.view(day + 86_400 - 1);
        assert_eq!(v.day, "2025-12-04");
        assert_eq!(
            (v.today.answers, v.today.unknown, v.today.total()),
            (2, 1, 15)
        );
        assert_eq!(v.last_hour.total(), 15);

        c.add(u(1, 1), day + 86_400 + 30); // 00:00:30 the next day
        let v = c.view(day + 86_400 + 31);
        assert_eq!(v.day, "2025-12-05");
        assert_eq!((v.today.answers, v.today.total()), (1, 2));
        assert_eq!(v.last_hour.answers, 3, "the hour spans midnight");
        assert_eq!(v.total.answers, 3);
        assert_eq!(v.total.input, 11);

        // An hour after the last answer the hour is empty; today keeps it.
        let v = c.view(day + 86_400 + 30 + 3600);
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
        c.add(u(100, 100), day + 12 * 3600 + 34 * 60 + 5);
        c.add(u(100, 100), day + 12 * 3600 + 34 * 60 + 6);
        assert_eq!(c.reached(&budget, at(12 * 3600 + 34 * 60 + 7)), None);
        c.add(u(10, 10), day + 12 * 3600 + 34 * 60 + 8);
        let (until, kind, why) = c.reached(&budget, at(12 * 3600 + 34 * 60 + 9)).unwrap();
        assert_eq!(until, at(12 * 3600 + 35 * 60));
        assert_eq!(kind, CooldownKind::RateLimited);
        assert_eq!(why, "budget: 3 requests/min reached; back at 12:35 UTC");
        // The next minute is a new window.
        assert_eq!(c.reached(&budget, at(12 * 3600 + 35 * 60 + 1)), None);

        c.add(u(600, 500), day + 23 * 3600 + 59 * 60);
        let (_, kind, why) = c.reached(&budget, at(23 * 3600 + 59 * 60 + 1)).unwrap();
        assert_eq!(kind, CooldownKind::Quota, "the day's limit comes first");
        assert_eq!(why, "budget: 1.5k tokens/day reached; back at 00:00 UTC");
        let (until, _, _) = c.reached(&budget, at(23 * 3600 + 59 * 60 + 1)).unwrap();
        assert_eq!(until, (day + 86_400) * 1000);
        // Midnight: a new day, and that minute's tokens are history.
        assert_eq!(c.reached(&budget, at(86_400 + 1)), None);
        assert_eq!(
            c.reached(&Budget::default(), at(23 * 3600 + 59 * 60 + 1)),
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
        c.add(u(3, 4), 1_000_000);
        c.add(None, 1_000_100);
        let back = UsageCounters::from_saved(&c.saved());
        assert_eq!(back.view(1_000_200), c.view(1_000_200));
        assert_eq!(c.saved().minutes.len(), 2);
        let json = serde_json::to_string(&c.saved()).unwrap();
        let parsed: SavedUsage = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed, c.saved());
    }

    #[test]
    fn a_view_on_a_later_day_shows_nothing_today() {
        let mut c = UsageCounters::default();
        c.add(u(3, 4), 1_000_000);
        let v = c.view(1_000_000 + 2 * 86_400);
        assert_eq!(v.today, TokenCounts::default());
        assert_eq!(v.total.total(), 7);
    }
}
