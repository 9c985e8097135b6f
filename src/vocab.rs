//! The words every layer shares and none owns: the client wire [`Format`],
//! what an upstream answer means for a credential ([`Verdict`], and the
//! [`CooldownKind`] it may start), and how durations are read and written.
//! A leaf: it imports nothing from the crate, so the pool, the upstream
//! adapters, the metrics, the Redis store and the gateway all use it
//! without using each other.

use std::time::Duration;

/// The wire format a client speaks (and, for HTTP providers, an upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OpenAI's Chat Completions (and the other OpenAI routes: embeddings).
    OpenAi,
    Anthropic,
    /// OpenAI's Responses API. Its errors have OpenAI's shape; its streams
    /// have their own events.
    Responses,
}

impl Format {
    /// `openai`, `anthropic` or `responses`, as in request records and
    /// metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Responses => "responses",
        }
    }

    /// Whether error bodies look the same in both formats (OpenAI's
    /// `{"error":{…}}` serves Chat Completions and Responses alike).
    pub fn errors_like(self, other: Format) -> bool {
        (self == Format::Anthropic) == (other == Format::Anthropic)
    }
}

/// Why a credential is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CooldownKind {
    /// A 429 with (or without) a retry hint, or a success that said the
    /// remaining count hit zero. Recovers by itself.
    RateLimited,
    /// Quota gone (`insufficient_quota`). Recovers by itself, much later.
    Quota,
}

/// What one upstream attempt said about the credential it used.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx. `hold` keeps the key out of rotation until a depleted limit
    /// resets, before it ever answers 429.
    Success {
        hold: Option<(Duration, String)>,
    },
    RateLimited {
        wait: Duration,
        reason: String,
        /// The answer said this key's own limit is spent (a remaining
        /// count of 0). Only a 429 that does not may be the provider's
        /// own (see the pool's provider-wide 429).
        own: bool,
    },
    QuotaExhausted {
        wait: Duration,
        reason: String,
    },
    /// 401 that a refresh could not (or cannot) fix: the key is bad.
    Unauthorized {
        reason: String,
    },
    /// 5xx, connection error, timeout: counts towards `max_failures`.
    Failure {
        reason: String,
    },
    /// A response that says nothing about the key (another 4xx, or one an
    /// error-policy rule says to retry or pass without blame).
    Neutral,
    /// An answer the operator's error policy says to cool the key for
    /// (`reason` names the rule): a cooldown like a rate limit's, but not
    /// counted as one.
    Held {
        wait: Duration,
        reason: String,
    },
    /// An answer that takes the key out until an operator enables it
    /// again: a 402 (the account wants paying), or a rule of the error
    /// policy that says so.
    Disabled {
        reason: String,
    },
}

/// Formats a duration the way logs and reports show a wait: `12s`, `1m30s`, `850ms`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64().round() as u64;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) if s == 0 => format!("{m}m"),
        (0, _) => format!("{m}m{s}s"),
        _ if m == 0 && s == 0 => format!("{h}h"),
        _ => format!("{h}h{m}m"),
    }
}

/// Parses `--duration` style values.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_400)), "12s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(3660)), "1h1m");
    }

    #[test]
    fn durations_parse_or_say_what_is_wrong() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("\"soon\" is not a duration")
        );
    }
}

/// The tokens one answer used, as its provider reported them, in one
/// shape for every provider. `input` counts every token the model read,
/// cached or not (OpenAI's `prompt_tokens`; Anthropic's `input_tokens`
/// plus both cache counts; Gemini's `promptTokenCount`); `cache_read` and
/// `cache_write` say how many of those came from or went into a prompt
/// cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// Answers and tokens added up over some span (since start, a day, an
/// hour). `unknown` counts answers whose usage never came (a stream cut
/// before its usage, a provider that reports none): their tokens are not
/// in the sums, rather than pretended to be zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenCounts {
    pub answers: u64,
    pub unknown: u64,
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

impl TokenCounts {
    pub fn add(&mut self, usage: Option<Usage>) {
        self.answers += 1;
        match usage {
            Some(u) => {
                self.input += u.input;
                self.output += u.output;
                self.cache_read += u.cache_read;
                self.cache_write += u.cache_write;
            }
            None => self.unknown += 1,
        }
    }

    pub fn merge(&mut self, other: &TokenCounts) {
        self.answers += other.answers;
        self.unknown += other.unknown;
        self.input += other.input;
        self.output += other.output;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }

    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// The time zone whose calendar days the usage counters and the daily
/// budgets follow: UTC unless `[pool] usage_time_zone` names another.
/// Minutes are the same in every zone that matters (whole-minute offsets).
#[derive(Debug, Clone)]
pub struct UsageZone {
    tz: jiff::tz::TimeZone,
    name: String,
}

impl PartialEq for UsageZone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Default for UsageZone {
    fn default() -> Self {
        UsageZone::utc()
    }
}

impl UsageZone {
    pub fn utc() -> UsageZone {
        UsageZone {
            tz: jiff::tz::TimeZone::UTC,
            name: "UTC".into(),
        }
    }

    /// `UTC`, an IANA name (`Europe/Berlin`, from the system's time zone
    /// database) or a fixed offset (`+05:30`, `-08:00`, `+02`).
    pub fn parse(text: &str) -> Result<UsageZone, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("utc") || text == "Z" {
            return Ok(UsageZone::utc());
        }
        if let Some(sign) = text.chars().next().filter(|c| *c == '+' || *c == '-') {
            let bad = || {
                format!(
                    "{text:?} is not a UTC offset: write it as +HH:MM or -HH:MM, e.g. \"+05:30\""
                )
            };
            let (h, m) = text[1..].split_once(':').unwrap_or((&text[1..], "0"));
            let (h, m): (i32, i32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if !(0..=18).contains(&h) || !(0..60).contains(&m) {
                return Err(bad());
            }
            let secs = (h * 3600 + m * 60) * if sign == '-' { -1 } else { 1 };
            let offset = jiff::tz::Offset::from_seconds(secs).map_err(|_| bad())?;
            return Ok(UsageZone {
                tz: jiff::tz::TimeZone::fixed(offset),
                name: format!("{sign}{h:02}:{m:02}"),
            });
        }
        match jiff::tz::TimeZone::get(text) {
            Ok(tz) => Ok(UsageZone {
                tz,
                name: text.to_string(),
            }),
            Err(_) => Err(format!(
                "{text:?} is not a time zone this machine knows: use an IANA name such as \"Europe/Berlin\" \
                 (from the system's tzdata) or a fixed offset such as \"+02:00\""
            )),
        }
    }

    /// `UTC`, `Europe/Berlin`, `+05:30`: as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn offset_secs(&self, unix_secs: u64) -> i64 {
        let at = jiff::Timestamp::from_second(unix_secs as i64).unwrap_or(jiff::Timestamp::MAX);
        i64::from(self.tz.to_offset(at).seconds())
    }

    /// The local calendar day at `unix_secs`, in days since 1970-01-01
    /// (name it with [`civil_date`]).
    pub fn day(&self, unix_secs: u64) -> u64 {
        (unix_secs as i64 + self.offset_secs(unix_secs))
            .div_euclid(86_400)
            .max(0) as u64
    }

    /// When the local day after the one at `unix_secs` begins (Unix ms):
    /// 24 hours after the last midnight, or 23 or 25 across a DST change.
    pub fn next_day_ms(&self, unix_secs: u64) -> u64 {
        let day = self.day(unix_secs) + 1;
        let date = jiff::Timestamp::from_second(day as i64 * 86_400)
            .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date());
        date.and_then(|d| d.to_zoned(self.tz.clone()))
            .map(|z| z.timestamp().as_millisecond().max(0) as u64)
            .unwrap_or_else(|_| {
                ((day as i64 * 86_400 - self.offset_secs(unix_secs)).max(0) as u64) * 1000
            })
    }

    /// `HH:MM`, local, at `unix_secs`.
    pub fn clock(&self, unix_secs: u64) -> String {
        let local = (unix_secs as i64 + self.offset_secs(unix_secs)).rem_euclid(86_400);
        format!("{:02}:{:02}", local / 3600, local / 60 % 60)
    }
}

/// One credential's usage as the admin API and the dashboard show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageView {
    /// Since this gateway started.
    pub total: TokenCounts,
    /// The current calendar day (UTC), named in `day`.
    pub today: TokenCounts,
    /// `YYYY-MM-DD`.
    pub day: String,
    /// The last 60 minutes, by the minute.
    pub last_hour: TokenCounts,
    /// The operator's daily token budget for this credential, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day_budget: Option<u64>,
    /// When `today` starts over (Unix ms): the next midnight in the
    /// pool's usage time zone. 0: unknown (counted by the UTC day).
    #[serde(default)]
    pub day_ends_ms: u64,
    /// With shared state: today's counts of every replica together, as
    /// Redis held them at most a second ago (the daily budget reads these).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_today: Option<DayCounts>,
}

/// A day's answers and tokens (input plus output), summed over replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DayCounts {
    pub answers: u64,
    pub tokens: u64,
}

impl UsageView {
    /// The day's tokens the budget goes by: the cluster's when shared.
    pub fn today_tokens(&self) -> u64 {
        self.cluster_today
            .map_or_else(|| self.today.total(), |c| c.tokens)
    }
}

impl UsageView {
    /// Adds one answer at `at_ms` to `today` and `total` (the dashboard,
    /// between snapshots); `today` starts over when the day ends.
    pub fn add(&mut self, usage: Option<Usage>, at_ms: u64) {
        if self.day_ends_ms == 0 {
            let day = civil_date(at_ms / 86_400_000);
            if day != self.day {
                self.day = day;
                self.today = TokenCounts::default();
            }
        } else if at_ms >= self.day_ends_ms {
            // The next view brings the exact end; a DST day is an hour off
            // until then.
            let days = (at_ms - self.day_ends_ms) / 86_400_000 + 1;
            self.day = match self.day.parse::<jiff::civil::Date>() {
                Ok(d) => d
                    .checked_add(jiff::Span::new().days(days as i64))
                    .map_or_else(|_| civil_date(at_ms / 86_400_000), |d| d.to_string()),
                Err(_) => civil_date(at_ms / 86_400_000),
            };
            self.day_ends_ms += days * 86_400_000;
            self.today = TokenCounts::default();
            self.cluster_today = self.cluster_today.map(|_| DayCounts::default());
        }
        self.today.add(usage);
        self.total.add(usage);
        if let Some(c) = &mut self.cluster_today {
            c.answers += 1;
            c.tokens += usage.map_or(0, |u| u.total());
        }
    }
}

/// `950`, `100k`, `1.5M`: a limit as people say it.
pub fn compact(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 if n.is_multiple_of(1_000) => format!("{}k", n / 1_000),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (proleptic Gregorian).
pub fn civil_date(days: u64) -> String {
    // Howard Hinnant's days-to-civil, shifted so the era starts in March.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What a provider last said about a credential's rate limit: its most
/// constraining window (the one with the smallest share left), read from
/// OpenAI's `x-ratelimit-*`, Anthropic's `anthropic-ratelimit-*` or the
/// `anthropic-ratelimit-unified-*` windows of its subscription (OAuth)
/// accounts. The pool keeps the latest one per credential; the admin API
/// and the dashboard show it, and `[pool] strategy` may choose by it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    /// Count left in the window (requests or tokens); `None` for the
    /// unified windows, which report only a share used.
    pub remaining: Option<u64>,
    /// The window's size, in the same unit.
    pub limit: Option<u64>,
    /// Share of the window left, 0.0 to 1.0: `remaining / limit`, or
    /// `1 - utilization`.
    pub left: f64,
    /// When the window starts over (Unix ms), if the provider said.
    pub resets_at_ms: Option<u64>,
    /// Which window: `requests`, `tokens`, `input-tokens`,
    /// `output-tokens`, `unified-5h`, `unified-7d`, …
    pub window: String,
    /// When the answer that said it came (Unix ms).
    pub seen_ms: u64,
}

impl Capacity {
    /// Past its reset the window is full again, whatever it said.
    pub fn left_at(&self, now_ms: u64) -> f64 {
        match self.resets_at_ms {
            Some(at) if at <= now_ms => 1.0,
            _ => self.left,
        }
    }
}
