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
}

impl UsageView {
    /// Adds one answer at `at_ms` to `today` and `total` (the dashboard,
    /// between snapshots); `today` starts over when the UTC day changes.
    pub fn add(&mut self, usage: Option<Usage>, at_ms: u64) {
        let day = civil_date(at_ms / 86_400_000);
        if day != self.day {
            self.day = day;
            self.today = TokenCounts::default();
        }
        self.today.add(usage);
        self.total.add(usage);
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
