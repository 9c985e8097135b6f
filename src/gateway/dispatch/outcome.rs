//! What an upstream error means for the attempt: the operator's error
//! policy first (the first `[[error_policy]]` rule of the request's config
//! that matches decides), then the built-in classification of the
//! [`Outcome`] (cool and move on, refresh, count a failure, disable on a
//! 402, or hand the client an error that is the request's own).

use crate::config::policy::{ErrorAction, ErrorRule, first_match};

use super::*;

/// What an error answer (`status` ≥ 400, with `body`) means for this
/// attempt: the first error-policy rule that matches decides; with none,
/// the built-in `outcome` does (see [`outcome_step`]). `answer` builds
/// the client's copy of the upstream answer, in the client's format.
/// `key_spent`: the answer said the key's own limit is spent (so a 429 is
/// the key's, never the provider's).
#[allow(clippy::too_many_arguments)]
pub(super) async fn error_step(
    ctx: &mut Ctx<'_>,
    lease: &Lease,
    t0: Instant,
    outcome: Outcome,
    status: u16,
    body: &[u8],
    key_spent: bool,
    answer: impl FnOnce(StatusCode) -> Response,
) -> Step {
    // The rules of the config the request was routed in (a reload's new
    // rules apply from the next request on).
    let req = ctx.req;
    let rules = &req.generation.config().error_policy;
    match first_match(rules, req.provider, status, body) {
        Some(rule) => policy_step(ctx, lease, t0, rule, status, answer),
        None => outcome_step(ctx, lease, t0, outcome, status, key_spent, answer).await,
    }
}

fn policy_step(
    ctx: &mut Ctx<'_>,
    lease: &Lease,
    t0: Instant,
    rule: &ErrorRule,
    status: u16,
    answer: impl FnOnce(StatusCode) -> Response,
) -> Step {
    let pool = &ctx.state.pool;
    let name = lease.name();
    let label = rule.label();
    let reason = format!("{status} matched {label}");
    let record = |verdict: Verdict| pool.record(lease, &verdict, Some(status), t0.elapsed());
    match rule.action {
        ErrorAction::Cooldown(wait) => {
            record(Verdict::Held {
                wait,
                reason: reason.clone(),
            });
            // Kept out by its cooldown, like a rate-limited credential: when
            // every one is, the client hears when the first comes back.
            Step::Next {
                failure: Failure::RateLimited,
                note: format!("{reason} on {name} (cooling {})", human(wait)),
            }
        }
        ErrorAction::Disable => {
            record(Verdict::Disabled {
                reason: reason.clone(),
            });
            Step::Next {
                failure: Failure::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!(
                        "the upstream answered {status} for credential {name}; {label} disabled it"
                    ),
                    transient: false,
                },
                note: format!("{reason} on {name} (disabled)"),
            }
        }
        ErrorAction::Retry => {
            record(Verdict::Neutral);
            Step::Next {
                failure: Failure::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!(
                        "the upstream answered {status} for credential {name} ({label})"
                    ),
                    // Tried again after the usual pause once no other
                    // credential is ready, within `pool.max_attempts`.
                    transient: true,
                },
                note: format!("{reason} on {name} (retry)"),
            }
        }
        ErrorAction::Pass => {
            record(Verdict::Neutral);
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Step::Answer(answer(code), Some(ctx.started.elapsed()))
        }
    }
}

/// What a response that is not a success means for this attempt: move on
/// (after cooling or blaming the credential as the outcome says), refresh,
/// or hand the client `answer(status)` — an error that is the request's own.
async fn outcome_step(
    ctx: &mut Ctx<'_>,
    lease: &Lease,
    t0: Instant,
    outcome: Outcome,
    status: u16,
    key_spent: bool,
    answer: impl FnOnce(StatusCode) -> Response,
) -> Step {
    let pool = &ctx.state.pool;
    let name = lease.name();
    let mut verdict = outcome.verdict();
    if let Verdict::RateLimited { own, .. } = &mut verdict {
        *own = key_spent;
    }
    match outcome {
        Outcome::RateLimited { wait, .. } | Outcome::QuotaExhausted { wait, .. } => {
            pool.record(lease, &verdict, Some(status), t0.elapsed());
            let what = if matches!(outcome, Outcome::QuotaExhausted { .. }) {
                "quota exhausted"
            } else {
                "429"
            };
            Step::Next {
                failure: Failure::RateLimited,
                note: format!("{what} on {name} (retry in {})", human(wait)),
            }
        }
        Outcome::Unauthorized => Step::Unauthorized,
        Outcome::PaymentRequired => {
            pool.record(lease, &verdict, Some(status), t0.elapsed());
            Step::Next {
                failure: Failure::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!(
                        "the provider wants payment for credential {name} (402); it is disabled"
                    ),
                    transient: false,
                },
                note: format!("402 on {name} (payment required; disabled)"),
            }
        }
        Outcome::ServerError { status: s } => {
            pool.record(lease, &verdict, Some(s), t0.elapsed());
            Step::Next {
                failure: Failure::Upstream {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("the upstream answered {s} for credential {name}"),
                    // 501: the provider does not do this at all.
                    transient: s != 501,
                },
                note: format!("{s} on {name}"),
            }
        }
        Outcome::Overloaded => {
            pool.record(lease, &verdict, Some(status), t0.elapsed());
            // The provider as a whole is struggling: back off a little more
            // with every attempt before the next credential asks.
            let pause =
                Duration::from_millis(100 * u64::from(ctx.record.attempts)).min(OVERLOAD_PAUSE_MAX);
            tokio::time::sleep(pause).await;
            Step::Next {
                failure: Failure::Upstream {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!("the provider is overloaded ({status} on {name})"),
                    transient: true,
                },
                note: format!("{status} overloaded on {name}"),
            }
        }
        Outcome::ClientError { .. } | Outcome::Ok { .. } => {
            pool.record(lease, &verdict, Some(status), t0.elapsed());
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Step::Answer(answer(code), Some(ctx.started.elapsed()))
        }
    }
}
