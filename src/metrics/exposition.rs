//! The exposition: the registry's counted series, then the series read
//! from a [`PoolSnapshot`] at scrape time, then `# EOF`.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::{Metrics, PREFIX};
use crate::events::{CredentialKind, PoolSnapshot, State};

impl Metrics {
    /// The whole exposition: the counted series, then those read from
    /// `snapshot`, then `# EOF`.
    pub fn encode(&self, snapshot: PoolSnapshot) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        encode_registry(&mut out, &self.registry)?;
        let mut live = Registry::with_prefix(PREFIX);
        live.register_collector(Box::new(PoolSeries(snapshot)));
        encode_registry(&mut out, &live)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// The series read from one pool snapshot at scrape time.
#[derive(Debug)]
struct PoolSeries(PoolSnapshot);

impl Collector for PoolSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snap = &self.0;
        let creds = &snap.credentials;

        // One series per credential and state, 1 for the current one. A
        // single series with a `state` label would vanish and reappear under
        // another label set on every change, which breaks `rate`, alerts
        // (`{state="failed"} == 1`) and graphs; five stable series also let
        // `sum by (state)` count the pool.
        let mut m = encoder.encode_descriptor(
            "credential_state",
            "1 for the state the credential is in (ready, cooling, exhausted, failed, disabled), 0 for the others.",
            None,
            MetricType::Gauge,
        )?;
        for c in creds {
            for s in State::ALL {
                let labels = [
                    ("credential", c.name.as_str()),
                    ("provider", c.provider.as_str()),
                    ("state", s.as_str()),
                ];
                ConstGauge::new(i64::from(c.state == s)).encode(m.encode_family(&labels)?)?;
            }
        }

        // 0 while the provider's keys fail alike with no good answer
        // between (an outage: no key is marked failed for it).
        let mut m = encoder.encode_descriptor(
            "provider_healthy",
            "1 while the provider answers, 0 while its credentials fail alike with no good answer between.",
            None,
            MetricType::Gauge,
        )?;
        for p in &snap.providers {
            let labels = [("provider", p.name.as_str())];
            ConstGauge::new(i64::from(p.healthy)).encode(m.encode_family(&labels)?)?;
        }

        // Session affinity: conversations kept on one credential here.
        let m = encoder.encode_descriptor(
            "sessions",
            "Sessions this replica keeps on one credential (session affinity), live within pool.affinity_ttl.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(snap.sessions).unwrap_or(i64::MAX)).encode(m)?;

        let unit = Unit::Seconds;
        let mut m = encoder.encode_descriptor(
            "credential_cooldown_remaining",
            "Until a cooling or exhausted credential is back by itself; 0 in any other state.",
            Some(&unit),
            MetricType::Gauge,
        )?;
        for c in creds {
            let remaining = match (c.state, c.until_ms) {
                (State::Cooling | State::Exhausted, Some(until)) => {
                    until.saturating_sub(snap.at_ms) as f64 / 1000.0
                }
                _ => 0.0,
            };
            let labels = [
                ("credential", c.name.as_str()),
                ("provider", c.provider.as_str()),
            ];
            ConstGauge::new(remaining).encode(m.encode_family(&labels)?)?;
        }

        // Tokens since this gateway started (the state file carries them
        // over a restart), by credential and direction.
        let mut m = encoder.encode_descriptor(
            "credential_tokens",
            "Tokens the provider reported for this credential's answers, by direction (input, output; cache_read and cache_write are parts of input).",
            None,
            MetricType::Counter,
        )?;
        for c in creds {
            let t = &c.usage.total;
            for (direction, n) in [
                ("input", t.input),
                ("output", t.output),
                ("cache_read", t.cache_read),
                ("cache_write", t.cache_write),
            ] {
                let labels = [
                    ("credential", c.name.as_str()),
                    ("provider", c.provider.as_str()),
                    ("direction", direction),
                ];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "client_tokens",
            "Tokens of the answers each client key (masked) received, by direction.",
            None,
            MetricType::Counter,
        )?;
        for (client, t) in &snap.clients {
            for (direction, n) in [("input", t.input), ("output", t.output)] {
                let labels = [("client", client.as_str()), ("direction", direction)];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "credential_answers",
            "Answers counted for usage, by whether the provider reported their tokens (known) or not (unknown: a stream cut before its usage).",
            None,
            MetricType::Counter,
        )?;
        for c in creds {
            let t = &c.usage.total;
            for (tokens, n) in [("known", t.answers - t.unknown), ("unknown", t.unknown)] {
                let labels = [
                    ("credential", c.name.as_str()),
                    ("provider", c.provider.as_str()),
                    ("tokens", tokens),
                ];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }

        let mut m = encoder.encode_descriptor(
            "credential_refreshes",
            "Successful access-token refreshes, by credential (refresh-token credentials only).",
            None,
            MetricType::Counter,
        )?;
        for c in creds
            .iter()
            .filter(|c| c.kind == CredentialKind::RefreshToken)
        {
            let labels = [
                ("credential", c.name.as_str()),
                ("provider", c.provider.as_str()),
            ];
            ConstCounter::new(c.refreshes).encode(m.encode_family(&labels)?)?;
        }

        let totals = [
            (
                "refreshes",
                "Successful access-token refreshes, all credentials.",
                snap.totals.refreshes,
            ),
            (
                "refresh_failures",
                "Failed access-token refreshes, all credentials.",
                snap.totals.refresh_failures,
            ),
        ];
        for (name, help, value) in totals {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::Metrics;
    use crate::metrics::tests::{infos, scrape};

    #[test]
    fn state_cooldown_and_refresh_series_come_from_the_snapshot() {
        let m = Metrics::new();
        let c = m.credentials(infos());
        c.refresh_failed(1);
        c.refresh_failed(0); // a static key: no series
        let (text, s) = scrape(&m);
        let state = |cred: &str, state: &str| {
            s[&format!(
                "tokenyard_credential_state{{credential=\"{cred}\",provider=\"openai\",state=\"{state}\"}}"
            )]
        };
        // fixtures::cooling: team-a cooling 42 s, backup-2 disabled.
        assert_eq!(state("team-a", "cooling"), 1.0);
        assert_eq!(state("team-a", "ready"), 0.0);
        assert_eq!(state("backup-2", "disabled"), 1.0);
        assert_eq!(state("oauth-1", "ready"), 1.0);
        let per_state: f64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("tokenyard_credential_state{"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(per_state, 6.0, "exactly one state per credential");
        let cooldown = |cred: &str| {
            s[&format!(
                "tokenyard_credential_cooldown_remaining_seconds{{credential=\"{cred}\",provider=\"openai\"}}"
            )]
        };
        assert_eq!(s["tokenyard_provider_healthy{provider=\"openai\"}"], 1.0);
        assert_eq!(cooldown("team-a"), 42.0);
        assert_eq!(cooldown("team-b"), 8.5);
        assert_eq!(cooldown("oauth-1"), 0.0);
        assert_eq!(cooldown("backup-2"), 0.0);
        assert_eq!(s["tokenyard_refreshes_total"], 3.0);
        assert_eq!(s["tokenyard_refresh_failures_total"], 0.0);
        assert_eq!(
            s["tokenyard_credential_refreshes_total{credential=\"oauth-1\",provider=\"openai\"}"],
            0.0
        );
        assert!(!text.contains("tokenyard_credential_refreshes_total{credential=\"team-a\""));
        assert_eq!(
            s["tokenyard_credential_refresh_failures_total{credential=\"oauth-1\",provider=\"openai\"}"],
            1.0
        );
        assert!(!text.contains("refresh_failures_total{credential=\"team-a\""));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        // Masked secrets are in the snapshot; none reaches the exposition.
        assert!(!text.contains("f00d"));
    }
}
