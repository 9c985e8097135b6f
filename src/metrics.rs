//! Prometheus metrics for `GET /metrics`, in the OpenMetrics text format.
//!
//! Two kinds of series, kept apart on purpose:
//!
//! - **Counted as it happens** (requests, upstream attempts and 429s,
//!   refresh failures per credential, the latency histograms): the pool
//!   calls [`CredentialSeries::attempt`], [`Metrics::request`] and
//!   [`CredentialSeries::refresh_failed`] on the hot path. Each is an atomic add on a
//!   counter made up front (credentials are indexed, not looked up by name)
//!   or, for requests, one lookup by model name in a cache of the family's
//!   counters; nothing is formatted.
//! - **Read at scrape time** from
//!   [`PoolSnapshot`](crate::events::PoolSnapshot) (credential states,
//!   cooldown remaining, refreshes per credential and the refresh totals):
//!   these are numbers the pool already keeps, so they are encoded straight
//!   from the snapshot rather than mirrored event by event, and agree with
//!   the admin API and the dashboard by construction.
//!
//! Each pool owns its own [`Registry`] (no global recorder), so several
//! gateways in one process — the test suite — never share a series.
//! Labels are credential and provider names, never secrets.
//!
//! Here: the registry and the counted series; the exposition, with the
//! series read from the snapshot, is in `exposition`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::events::RequestRecord;
use crate::vocab::Verdict;

mod exposition;

/// What `GET /metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series name starts with this (and `_`).
const PREFIX: &str = "tokenyard";

/// Histogram buckets in seconds, 1 ms to 10 min in 1-2.5-5 steps: a cached
/// non-stream answer lands in the first few, a long generation in the last.
const LATENCY_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// Distinct `model` label values kept before new ones are counted as
/// [`OTHER_MODEL`]. The model comes from the client, and a provider whose
/// `models` is `*` accepts any: without a cap a client could grow this
/// process's memory and the Prometheus server's series without bound.
const MAX_MODELS: usize = 64;
/// Longer model names are counted as [`OTHER_MODEL`] too.
const MAX_MODEL_LEN: usize = 128;
const OTHER_MODEL: &str = "_other";

/// The labels of a client request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `openai` or `anthropic`: the API the client called.
    format: &'static str,
    model: Arc<str>,
    /// The status the client got (499: it went away mid-stream).
    status: u16,
}

/// The labels of every per-credential series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    credential: Arc<str>,
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    /// Kept apart because a stream's duration is the whole generation,
    /// while a plain answer's is one round trip: mixed, the quantiles of
    /// either would mean nothing.
    stream: bool,
}

/// One credential of the pool, as [`Metrics::new`] needs it.
pub struct CredentialInfo<'a> {
    pub name: &'a str,
    pub provider: &'a str,
    /// Whether it has a refresh token (only those get refresh series).
    pub refreshes: bool,
}

/// The gateway's metrics: the registry and handles to the series that the
/// hot path bumps. One per pool and kept across config reloads, so the
/// global series and those of unchanged credentials count on without a
/// reset; the per-credential handles live in [`CredentialSeries`], one per
/// pool generation.
pub struct Metrics {
    registry: Registry,
    /// The per-credential families; a generation takes its handles from
    /// them ([`Metrics::credentials`]) and a reload drops the series of
    /// credentials that went ([`Metrics::forget`]).
    attempts: Family<CredentialLabels, Counter>,
    upstream_429: Family<CredentialLabels, Counter>,
    refresh_failures: Family<CredentialLabels, Counter>,
    requests: RequestCounters,
    /// Indexed by `stream as usize`.
    duration: [Histogram; 2],
    ttfb: [Histogram; 2],
    client_429: Counter,
    pool_exhausted: Counter,
}

/// One generation's handles to its credentials' series, in the pool's
/// order (a lease's index), so an attempt costs an atomic add and no
/// lookup. Handles of the same labels are the same counter: a credential
/// that a reload left alone keeps counting where it was.
pub struct CredentialSeries {
    attempts: Vec<Counter>,
    upstream_429: Vec<Counter>,
    /// `None` for credentials without a refresh token.
    refresh_failures: Vec<Option<Counter>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// The registry and the global series, with no credential yet (see
    /// [`Metrics::credentials`]).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests finished, by the API the client called (format), model and the status it got",
            requests.clone(),
        );

        let attempts_family = Family::<CredentialLabels, Counter>::default();
        let upstream_429_family = Family::<CredentialLabels, Counter>::default();
        let refresh_failures_family = Family::<CredentialLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Requests sent to providers, by credential (a client request may take several)",
            attempts_family.clone(),
        );
        registry.register(
            "upstream_429",
            "Rate-limit answers from providers (429, quota exhausted, Gemini RESOURCE_EXHAUSTED), by credential",
            upstream_429_family.clone(),
        );
        registry.register(
            "credential_refresh_failures",
            "Failed access-token refreshes, by credential (refresh-token credentials only)",
            refresh_failures_family.clone(),
        );

        let duration_family =
            Family::<StreamLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let ttfb_family =
            Family::<StreamLabel, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        let by_stream = |f: &Family<StreamLabel, Histogram, fn() -> Histogram>| {
            [false, true].map(|stream| f.get_or_create_owned(&StreamLabel { stream }))
        };
        let duration = by_stream(&duration_family);
        let ttfb = by_stream(&ttfb_family);
        registry.register_with_unit(
            "request_duration",
            "Time from a client request's arrival to its last byte (a stream: until it ended)",
            Unit::Seconds,
            duration_family,
        );
        registry.register_with_unit(
            "time_to_first_byte",
            "Time from a client request's arrival until its answer began (requests that got one)",
            Unit::Seconds,
            ttfb_family,
        );

        let client_429 = Counter::default();
        registry.register(
            "client_429",
            "429 answers clients received from the gateway",
            client_429.clone(),
        );
        let pool_exhausted = Counter::default();
        registry.register(
            "pool_exhausted",
            "Client requests answered 429 pool_exhausted: every credential that could serve was rate limited or unavailable",
            pool_exhausted.clone(),
        );

        Metrics {
            registry,
            attempts: attempts_family,
            upstream_429: upstream_429_family,
            refresh_failures: refresh_failures_family,
            requests: RequestCounters::new(requests),
            duration,
            ttfb,
            client_429,
            pool_exhausted,
        }
    }

    /// Handles to the series of `credentials`, in that order. Made now, so
    /// every credential shows 0 from the first scrape and the hot path
    /// indexes instead of hashing names; a credential whose series exist
    /// already gets the same counters back.
    pub fn credentials<'a>(
        &self,
        credentials: impl IntoIterator<Item = CredentialInfo<'a>>,
    ) -> CredentialSeries {
        let (mut attempts, mut upstream_429, mut refresh_failures) = (vec![], vec![], vec![]);
        for c in credentials {
            let labels = CredentialLabels {
                credential: c.name.into(),
                provider: c.provider.into(),
            };
            attempts.push(self.attempts.get_or_create_owned(&labels));
            upstream_429.push(self.upstream_429.get_or_create_owned(&labels));
            refresh_failures.push(
                c.refreshes
                    .then(|| self.refresh_failures.get_or_create_owned(&labels)),
            );
        }
        CredentialSeries {
            attempts,
            upstream_429,
            refresh_failures,
        }
    }

    /// Drops the series of a credential a reload removed (or changed, so
    /// that it starts again from 0). Handles still held by an older
    /// generation keep working; they just no longer show.
    pub fn forget(&self, credential: &str, provider: &str) {
        let labels = CredentialLabels {
            credential: credential.into(),
            provider: provider.into(),
        };
        self.attempts.remove(&labels);
        self.upstream_429.remove(&labels);
        self.refresh_failures.remove(&labels);
    }

    /// One finished client request.
    pub fn request(&self, r: &RequestRecord) {
        self.requests.inc(
            r.format.map_or("unknown", |f| f.as_str()),
            &r.model,
            r.status,
        );
        let stream = usize::from(r.stream);
        self.duration[stream].observe(r.latency_ms / 1000.0);
        if let Some(ttfb) = r.ttfb_ms {
            self.ttfb[stream].observe(ttfb / 1000.0);
        }
        if r.status == 429 {
            self.client_429.inc();
        }
        if r.code.as_deref() == Some("pool_exhausted") {
            self.pool_exhausted.inc();
        }
    }
}

impl CredentialSeries {
    /// One upstream attempt on credential `index` and what it said (called
    /// where the pool counts its own `attempts` and `upstream_429`).
    pub fn attempt(&self, index: usize, verdict: &Verdict) {
        if let Some(c) = self.attempts.get(index) {
            c.inc();
        }
        if matches!(
            verdict,
            Verdict::RateLimited { .. } | Verdict::QuotaExhausted { .. }
        ) && let Some(c) = self.upstream_429.get(index)
        {
            c.inc();
        }
    }

    /// A refresh of credential `index` failed.
    pub fn refresh_failed(&self, index: usize) {
        if let Some(Some(c)) = self.refresh_failures.get(index) {
            c.inc();
        }
    }
}

/// The request counters of the family, by model and then by format and
/// status. A request of a model seen before costs a read lock, one hash
/// of the model's name (foldhash; the family's own map hashes the whole
/// label set with SipHash) and a scan of a few entries; no allocation.
struct RequestCounters {
    family: Family<RequestLabels, Counter>,
    by_model: RwLock<ByModel>,
}

type ByModel = HashMap<Arc<str>, Vec<(&'static str, u16, Counter)>, foldhash::fast::RandomState>;

impl RequestCounters {
    fn new(family: Family<RequestLabels, Counter>) -> Self {
        RequestCounters {
            family,
            by_model: RwLock::default(),
        }
    }

    /// Counts one request of `model` in `format` that ended in `status`.
    fn inc(&self, format: &'static str, model: &str, status: u16) {
        let model = if model.len() > MAX_MODEL_LEN {
            OTHER_MODEL
        } else {
            model
        };
        // Counts on the cached counter, if there is one: under the lock,
        // without taking a handle (two atomics more).
        let bump = |m: &ByModel, model: &str| {
            m.get(model)
                .and_then(|cs| cs.iter().find(|(f, s, _)| *f == format && *s == status))
                .map(|(_, _, c)| c.inc())
                .is_some()
        };
        // A panic elsewhere cannot leave this map half-written: keep going.
        if bump(
            &self.by_model.read().unwrap_or_else(|e| e.into_inner()),
            model,
        ) {
            return;
        }
        let mut m = self.by_model.write().unwrap_or_else(|e| e.into_inner());
        // Past the cap, a model not seen before is counted as the rest.
        let models = m.len() - usize::from(m.contains_key(OTHER_MODEL));
        let model = if m.contains_key(model) || models < MAX_MODELS {
            model
        } else {
            OTHER_MODEL
        };
        if bump(&m, model) {
            return;
        }
        let label: Arc<str> = match m.get_key_value(model) {
            Some((k, _)) => k.clone(),
            None => model.into(),
        };
        let counter = self.family.get_or_create_owned(&RequestLabels {
            format,
            model: label.clone(),
            status,
        });
        counter.inc();
        m.entry(label).or_default().push((format, status, counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Format;
    use crate::events::fixtures;

    /// `name{labels}` → value: every sample line of an exposition.
    fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a sample line has a value");
                (series.to_string(), value.parse().expect("a numeric value"))
            })
            .collect()
    }

    pub(super) fn infos() -> [CredentialInfo<'static>; 2] {
        [
            CredentialInfo {
                name: "team-a",
                provider: "openai",
                refreshes: false,
            },
            CredentialInfo {
                name: "oauth-1",
                provider: "openai",
                refreshes: true,
            },
        ]
    }

    fn metrics() -> Metrics {
        let m = Metrics::new();
        m.credentials(infos());
        m
    }

    fn record(format: Format, stream: bool, status: u16, code: Option<&str>) -> RequestRecord {
        let mut r = fixtures::request(1, fixtures::NOW_MS, &["team-a"], status);
        r.format = Some(format);
        r.stream = stream;
        r.model = "gpt-4o".into();
        r.latency_ms = 1500.0;
        r.ttfb_ms = (status == 200).then_some(20.0);
        r.code = code.map(str::to_string);
        r
    }

    pub(super) fn scrape(m: &Metrics) -> (String, std::collections::BTreeMap<String, f64>) {
        let text = m.encode(fixtures::cooling()).unwrap();
        let s = samples(&text);
        (text, s)
    }

    #[test]
    fn attempts_and_429s_are_counted_per_credential() {
        let m = Metrics::new();
        let c = m.credentials(infos());
        let limited = Verdict::RateLimited {
            own: false,
            wait: std::time::Duration::from_secs(1),
            reason: "429".into(),
        };
        c.attempt(0, &Verdict::Success { hold: None });
        c.attempt(0, &limited);
        c.attempt(
            1,
            &Verdict::QuotaExhausted {
                wait: std::time::Duration::from_secs(1),
                reason: "quota".into(),
            },
        );
        c.attempt(1, &Verdict::Neutral);
        c.attempt(7, &limited); // out of range: ignored, no panic
        let (_, s) = scrape(&m);
        let key = |name: &str, cred: &str| {
            format!("tokenyard_{name}_total{{credential=\"{cred}\",provider=\"openai\"}}")
        };
        assert_eq!(s[&key("upstream_attempts", "team-a")], 2.0);
        assert_eq!(s[&key("upstream_attempts", "oauth-1")], 2.0);
        assert_eq!(s[&key("upstream_429", "team-a")], 1.0);
        assert_eq!(s[&key("upstream_429", "oauth-1")], 1.0);
    }

    #[test]
    fn requests_are_counted_by_format_model_and_status() {
        let m = metrics();
        m.request(&record(Format::OpenAi, false, 200, None));
        m.request(&record(Format::OpenAi, true, 200, None));
        m.request(&record(Format::Anthropic, true, 200, None));
        m.request(&record(Format::OpenAi, false, 429, Some("pool_exhausted")));
        m.request(&record(
            Format::Anthropic,
            false,
            503,
            Some("no_credentials"),
        ));
        let (_, s) = scrape(&m);
        let req = |f: &str, status: u16| {
            s[&format!(
                "tokenyard_requests_total{{format=\"{f}\",model=\"gpt-4o\",status=\"{status}\"}}"
            )]
        };
        assert_eq!(req("openai", 200), 2.0);
        assert_eq!(req("anthropic", 200), 1.0);
        assert_eq!(req("openai", 429), 1.0);
        assert_eq!(req("anthropic", 503), 1.0);
        assert_eq!(s["tokenyard_client_429_total"], 1.0);
        assert_eq!(s["tokenyard_pool_exhausted_total"], 1.0);
        // Every request has a duration; only answered ones a first byte.
        let count = |name: &str, stream: bool| {
            s[&format!("tokenyard_{name}_seconds_count{{stream=\"{stream}\"}}")]
        };
        assert_eq!(count("request_duration", false), 3.0);
        assert_eq!(count("request_duration", true), 2.0);
        assert_eq!(count("time_to_first_byte", false), 1.0);
        assert_eq!(count("time_to_first_byte", true), 2.0);
        // 1.5 s falls in the 2.5 s bucket, not the 1 s one.
        let bucket = |le: &str| {
            s[&format!("tokenyard_request_duration_seconds_bucket{{le=\"{le}\",stream=\"true\"}}")]
        };
        assert_eq!(bucket("1.0"), 0.0);
        assert_eq!(bucket("2.5"), 2.0);
        assert_eq!(bucket("600.0"), 2.0);
        assert_eq!(bucket("+Inf"), 2.0);
    }

    #[test]
    fn model_labels_are_capped() {
        let m = metrics();
        for i in 0..MAX_MODELS + 10 {
            let mut r = record(Format::OpenAi, false, 200, None);
            r.model = format!("model-{i}");
            m.request(&r);
        }
        let mut r = record(Format::OpenAi, false, 200, None);
        r.model = "x".repeat(MAX_MODEL_LEN + 1);
        m.request(&r);
        // A model seen before the cap still gets its own series.
        let mut r = record(Format::OpenAi, false, 200, None);
        r.model = "model-0".into();
        m.request(&r);
        // The rest share one entry of the cache, however many come.
        let cached = m.requests.by_model.read().unwrap();
        assert_eq!(cached.len(), MAX_MODELS + 1);
        assert_eq!(cached[OTHER_MODEL].len(), 1);
        drop(cached);
        let (_, s) = scrape(&m);
        let models: std::collections::HashSet<&str> = s
            .keys()
            .filter_map(|k| k.strip_prefix("tokenyard_requests_total{"))
            .filter_map(|k| k.split("model=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(models.len(), MAX_MODELS + 1);
        assert_eq!(
            s["tokenyard_requests_total{format=\"openai\",model=\"_other\",status=\"200\"}"],
            11.0
        );
        assert_eq!(
            s["tokenyard_requests_total{format=\"openai\",model=\"model-0\",status=\"200\"}"],
            2.0
        );
    }

    #[test]
    fn a_reload_keeps_counting_unchanged_credentials_and_drops_removed_ones() {
        let m = Metrics::new();
        let old = m.credentials(infos());
        old.attempt(0, &Verdict::Neutral);
        old.attempt(1, &Verdict::Neutral);
        // The next generation: team-a stays, oauth-1 goes, team-b comes.
        m.forget("oauth-1", "openai");
        let new = m.credentials([
            CredentialInfo {
                name: "team-b",
                provider: "openai",
                refreshes: false,
            },
            CredentialInfo {
                name: "team-a",
                provider: "openai",
                refreshes: false,
            },
        ]);
        new.attempt(1, &Verdict::Neutral);
        // An attempt that was in flight across the reload lands too.
        old.attempt(0, &Verdict::Neutral);
        let (text, s) = scrape(&m);
        let key = |cred: &str| {
            format!(
                "tokenyard_upstream_attempts_total{{credential=\"{cred}\",provider=\"openai\"}}"
            )
        };
        assert_eq!(s[&key("team-a")], 3.0);
        assert_eq!(s[&key("team-b")], 0.0);
        // (The snapshot's series still name it: the fixture is not reloaded.)
        for series in [
            "upstream_attempts",
            "upstream_429",
            "credential_refresh_failures",
        ] {
            let gone = format!("tokenyard_{series}_total{{credential=\"oauth-1\"");
            assert!(!text.contains(&gone), "{text}");
        }
    }

    #[test]
    fn separate_registries_stay_separate() {
        let (a, b) = (metrics(), metrics());
        a.request(&record(Format::OpenAi, false, 429, Some("pool_exhausted")));
        assert_eq!(scrape(&a).1["tokenyard_client_429_total"], 1.0);
        assert_eq!(scrape(&b).1["tokenyard_client_429_total"], 0.0);
    }
}
