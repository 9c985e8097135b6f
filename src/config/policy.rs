//! The error policy: the operator's rules for what an upstream error
//! means, checked in order before the built-in classification (the first
//! rule that matches decides; none matching leaves today's behaviour).
//!
//! ```toml
//! [[error_policy]]
//! status = 403
//! body_contains = "not allowed to sample"
//! action = "cooldown 10m"
//! ```
//!
//! A rule matches on `status` (400–599), a piece of the error body
//! (`body_contains`, exact text, or `body_matches`, a regex), or both, and
//! optionally only for one `provider`. Bodies are matched on their first
//! [`BODY_PREFIX`] bytes only; a success's body is never looked at.

use std::time::Duration;

use super::{ConfigError, invalid};

/// How much of an error body rules look at: enough for any provider's
/// error envelope, and a bound on the work a rule costs.
pub const BODY_PREFIX: usize = 16 * 1024;

/// What a matching rule does with the answer and the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// The credential cools for this long (as a rate limit would), and the
    /// request moves on to the next credential.
    Cooldown(Duration),
    /// The credential is disabled until an operator enables it, and the
    /// request moves on.
    Disable,
    /// The request moves on (or tries the same credential again after the
    /// usual pause, when no other is ready); the credential is not blamed.
    Retry,
    /// The answer goes to the client as it is (in the client's wire
    /// format); no retry, no blame.
    Pass,
}

impl ErrorAction {
    /// As written in the config: `cooldown 10m`, `disable`, `retry`, `pass`.
    pub fn describe(&self) -> String {
        match self {
            ErrorAction::Cooldown(d) => format!("cooldown {}", crate::vocab::human(*d)),
            ErrorAction::Disable => "disable".into(),
            ErrorAction::Retry => "retry".into(),
            ErrorAction::Pass => "pass".into(),
        }
    }
}

/// What a rule looks for in the body.
#[derive(Debug, Clone)]
pub enum BodyMatch {
    Contains(String),
    Matches(regex::Regex),
}

/// One `[[error_policy]]` rule, resolved.
#[derive(Debug, Clone)]
pub struct ErrorRule {
    /// Its place in the config, for reasons and logs (`error_policy[2]`).
    pub index: usize,
    /// Index into [`super::Config::providers`]; `None`: every provider.
    pub provider: Option<usize>,
    pub status: Option<u16>,
    pub body: Option<BodyMatch>,
    pub action: ErrorAction,
}

impl ErrorRule {
    /// `error_policy[2] (status 403 → cooldown 10m)`: what a reason or a
    /// log line names the rule by.
    pub fn label(&self) -> String {
        let what = match (self.status, &self.body) {
            (Some(s), Some(_)) => format!("status {s} and body"),
            (Some(s), None) => format!("status {s}"),
            (None, _) => "body".to_string(),
        };
        format!(
            "error_policy[{}] ({what} → {})",
            self.index,
            self.action.describe()
        )
    }

    /// Whether this rule applies to an error `status` from `provider` with
    /// `body` (of which only the first [`BODY_PREFIX`] bytes are read).
    pub fn matches(&self, provider: usize, status: u16, body: &[u8]) -> bool {
        if self.provider.is_some_and(|p| p != provider) {
            return false;
        }
        if self.status.is_some_and(|s| s != status) {
            return false;
        }
        match &self.body {
            None => true,
            Some(m) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(BODY_PREFIX)]);
                match m {
                    BodyMatch::Contains(s) => text.contains(s.as_str()),
                    BodyMatch::Matches(re) => re.is_match(&text),
                }
            }
        }
    }
}

/// The first rule of `rules` that applies to an error (a status of 400 or
/// more) from `provider`, if any.
pub fn first_match<'a>(
    rules: &'a [ErrorRule],
    provider: usize,
    status: u16,
    body: &[u8],
) -> Option<&'a ErrorRule> {
    if status < 400 {
        return None;
    }
    rules.iter().find(|r| r.matches(provider, status, body))
}

/// `[[error_policy]]` as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawErrorRule {
    status: Option<i64>,
    provider: Option<String>,
    body_contains: Option<String>,
    body_matches: Option<String>,
    action: Option<String>,
}

impl RawErrorRule {
    /// The rule at `index`, with `providers` the configured provider names.
    pub(super) fn resolve(
        &self,
        index: usize,
        providers: &[String],
    ) -> Result<ErrorRule, ConfigError> {
        let at = |k: &str| format!("error_policy[{index}].{k}");
        let status = match self.status {
            None => None,
            Some(s @ 400..=599) => Some(s as u16),
            Some(s) => {
                return Err(invalid(
                    at("status"),
                    format!("{s} is not an error status; use one from 400 to 599"),
                ));
            }
        };
        let provider = match self.provider.as_deref() {
            None => None,
            Some(p) => Some(providers.iter().position(|x| x == p).ok_or_else(|| {
                invalid(
                    at("provider"),
                    format!("{p:?} is not one of {}", providers.join(", ")),
                )
            })?),
        };
        let body = match (&self.body_contains, &self.body_matches) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    at("body_matches"),
                    "and body_contains are both set; a rule has one or the other",
                ));
            }
            (Some(s), None) if s.is_empty() => {
                return Err(invalid(at("body_contains"), "is empty"));
            }
            (Some(s), None) => Some(BodyMatch::Contains(s.clone())),
            (None, Some(re)) => Some(BodyMatch::Matches(
                regex::RegexBuilder::new(re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        invalid(
                            at("body_matches"),
                            format!("{re:?} is not a regex: {}", one_line(&e.to_string())),
                        )
                    })?,
            )),
            (None, None) => None,
        };
        if status.is_none() && body.is_none() {
            return Err(invalid(
                format!("error_policy[{index}]"),
                "matches nothing; give it a status, body_contains or body_matches",
            ));
        }
        let action = match self.action.as_deref() {
            None => {
                return Err(invalid(
                    at("action"),
                    "is missing; use \"cooldown 10m\", \"disable\", \"retry\" or \"pass\"",
                ));
            }
            Some(a) => parse_action(a).map_err(|m| invalid(at("action"), m))?,
        };
        Ok(ErrorRule {
            index,
            provider,
            status,
            body,
            action,
        })
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `cooldown 10m` | `disable` | `retry` | `pass`.
fn parse_action(text: &str) -> Result<ErrorAction, String> {
    let mut words = text.split_whitespace();
    let action = match (words.next(), words.next(), words.next()) {
        (Some("disable"), None, _) => ErrorAction::Disable,
        (Some("retry"), None, _) => ErrorAction::Retry,
        (Some("pass"), None, _) => ErrorAction::Pass,
        (Some("cooldown"), Some(d), None) => {
            let d = humantime::parse_duration(d).map_err(|e| {
                format!("{d:?} is not a duration ({e}); write e.g. \"cooldown 10m\"")
            })?;
            if d.is_zero() {
                return Err("a cooldown must be longer than zero".into());
            }
            ErrorAction::Cooldown(d)
        }
        (Some("cooldown"), None, _) => {
            return Err("\"cooldown\" needs a duration, e.g. \"cooldown 10m\"".into());
        }
        _ => {
            return Err(format!(
                "{text:?} is not an action; use \"cooldown 10m\", \"disable\", \"retry\" or \"pass\""
            ));
        }
    };
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_text: &str) -> Result<ErrorRule, String> {
        let raw: RawErrorRule = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        raw.resolve(3, &["openai".into(), "claude".into()])
            .map_err(|e| e.to_string())
    }

    #[test]
    fn actions_parse() {
        let r = rule("status = 403\naction = \"cooldown 10m\"").unwrap();
        assert_eq!(r.action, ErrorAction::Cooldown(Duration::from_secs(600)));
        assert_eq!(r.label(), "error_policy[3] (status 403 → cooldown 10m)");
        for (text, want) in [
            ("disable", ErrorAction::Disable),
            ("retry", ErrorAction::Retry),
            (" pass ", ErrorAction::Pass),
        ] {
            let r = rule(&format!("status = 500\naction = \"{text}\"")).unwrap();
            assert_eq!(r.action, want);
        }
    }

    #[test]
    fn mistakes_name_the_rule_and_key() {
        let cases = [
            (
                "status = 403\naction = \"explode\"",
                "error_policy[3].action: \"explode\" is not an action",
            ),
            (
                "status = 403\naction = \"cooldown soon\"",
                "error_policy[3].action: \"soon\" is not a duration",
            ),
            (
                "status = 403\naction = \"cooldown\"",
                "error_policy[3].action: \"cooldown\" needs a duration",
            ),
            ("status = 403\naction = \"cooldown 0s\"", "longer than zero"),
            ("status = 403", "error_policy[3].action: is missing"),
            (
                "status = 200\naction = \"pass\"",
                "error_policy[3].status: 200 is not an error status",
            ),
            (
                "status = 600\naction = \"pass\"",
                "error_policy[3].status: 600",
            ),
            ("action = \"pass\"", "error_policy[3]: matches nothing"),
            (
                "provider = \"openai\"\naction = \"pass\"",
                "error_policy[3]: matches nothing",
            ),
            (
                "body_matches = \"(unclosed\"\naction = \"pass\"",
                "error_policy[3].body_matches: \"(unclosed\" is not a regex",
            ),
            (
                "body_contains = \"\"\naction = \"pass\"",
                "error_policy[3].body_contains: is empty",
            ),
            (
                "body_contains = \"a\"\nbody_matches = \"b\"\naction = \"pass\"",
                "both set",
            ),
            (
                "status = 403\nprovider = \"nope\"\naction = \"pass\"",
                "error_policy[3].provider: \"nope\" is not one of openai, claude",
            ),
        ];
        for (text, want) in cases {
            let e = rule(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        assert!(
            rule("stauts = 403\naction = \"pass\"")
                .unwrap_err()
                .contains("unknown field")
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = vec![
            rule("status = 403\nprovider = \"claude\"\naction = \"disable\"").unwrap(),
            rule("status = 403\nbody_contains = \"sample\"\naction = \"cooldown 1m\"").unwrap(),
            rule("body_matches = \"(?i)model .* overloaded\"\naction = \"retry\"").unwrap(),
            rule("status = 403\naction = \"pass\"").unwrap(),
        ];
        let pick = |provider, status, body: &str| {
            first_match(&rules, provider, status, body.as_bytes()).map(|r| r.action)
        };
        assert_eq!(pick(1, 403, "anything"), Some(ErrorAction::Disable));
        assert_eq!(
            pick(0, 403, "not allowed to sample"),
            Some(ErrorAction::Cooldown(Duration::from_secs(60)))
        );
        assert_eq!(pick(0, 403, "no"), Some(ErrorAction::Pass));
        assert_eq!(
            pick(0, 503, "The MODEL x is Overloaded"),
            Some(ErrorAction::Retry)
        );
        assert_eq!(pick(0, 500, "fine"), None);
        // Never a success, whatever its body says.
        assert_eq!(pick(0, 200, "model x overloaded"), None);
    }

    #[test]
    fn only_a_prefix_of_the_body_is_read() {
        let r = rule("body_contains = \"needle\"\naction = \"retry\"").unwrap();
        let mut body = vec![b' '; BODY_PREFIX - 6];
        body.extend_from_slice(b"needle");
        assert!(r.matches(0, 500, &body));
        body.insert(0, b' ');
        assert!(!r.matches(0, 500, &body));
    }
}
