//! Access tokens for refreshable credentials: a cache with expiry, and a
//! single-flight refresh so that N requests that need a new token wait on
//! one call to the token endpoint, not N.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::cluster::Fetched;
use super::oauth::{self, RefreshError};
use super::{Generation, PoolHandle, State, lock};
use crate::config::AuthSpec;
use crate::events::Level;
use crate::secret::Secret;

/// How long a token-endpoint call may take.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct TokenSlot {
    /// The single-flight gate: whoever holds it is the one refreshing.
    gate: tokio::sync::Mutex<()>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    /// The access token, when it expires (monotonic, for decisions) and the
    /// same as wall clock (for display).
    access: Option<(Secret, Instant, SystemTime)>,
    /// When to stop using the cached token and refresh: `refresh_skew`
    /// before expiry, or a quarter of its lifetime if that is shorter (a
    /// 30 s token must not be refreshed on every request).
    refresh_at: Option<Instant>,
    /// The refresh token to use next: the configured one, or the one the
    /// provider rotated to.
    refresh_token: Option<Secret>,
    /// Whether `refresh_token` is a rotated one (and so must be persisted).
    rotated: bool,
    /// When the last refresh finished and how. Requests that queued behind
    /// it take its result instead of calling the endpoint again.
    last: Option<(Instant, Result<(), RefreshError>)>,
}

pub(super) enum Mode {
    /// Refresh only if there is no token or it is about to expire.
    IfStale,
    /// The provider refused this token: refresh unless someone already did.
    Replace(Secret),
    /// Operator asked: refresh now.
    Force,
}

impl TokenSlot {
    pub(super) fn new(auth: &AuthSpec) -> Self {
        let refresh_token = match auth {
            AuthSpec::Refresh { refresh_token, .. } => Some(refresh_token.clone()),
            AuthSpec::ApiKey(_) => None,
        };
        TokenSlot {
            gate: tokio::sync::Mutex::new(()),
            cache: Mutex::new(Cache {
                refresh_token,
                ..Default::default()
            }),
        }
    }

    pub(super) fn expiry(&self) -> Option<SystemTime> {
        lock(&self.cache).access.as_ref().map(|(_, _, wall)| *wall)
    }

    pub(super) fn rotated(&self) -> Option<Secret> {
        let c = lock(&self.cache);
        if c.rotated {
            c.refresh_token.clone()
        } else {
            None
        }
    }

    /// The refresh token to use next.
    pub(super) fn refresh_token(&self) -> Option<Secret> {
        lock(&self.cache).refresh_token.clone()
    }

    /// An access token another replica got, expiring at `expires_ms`
    /// (wall clock): kept unless the cached one lasts longer.
    pub(super) fn adopt_access(&self, token: &Secret, expires_ms: u64, skew: Duration) {
        let now_ms = crate::events::unix_ms(SystemTime::now());
        if expires_ms <= now_ms {
            return;
        }
        let left = Duration::from_millis(expires_ms - now_ms);
        let now = Instant::now();
        let mut c = lock(&self.cache);
        if c.access
            .as_ref()
            .is_some_and(|(t, exp, _)| t == token || *exp >= now + left)
        {
            return;
        }
        c.access = Some((token.clone(), now + left, SystemTime::now() + left));
        c.refresh_at = Some(now + left - skew.min(left / 4));
    }

    pub(super) fn restore_rotated(&self, token: Secret) {
        let mut c = lock(&self.cache);
        c.refresh_token = Some(token);
        c.rotated = true;
    }
}

impl PoolHandle {
    /// Credential `i`'s token when it needs no refresh: its API key, or a
    /// cached access token that is not due. `None` sends the caller to
    /// [`PoolHandle::refresh`].
    pub(super) fn ready_token_of(&self, generation: &Arc<Generation>, i: usize) -> Option<Secret> {
        match &generation.specs()[i].auth {
            AuthSpec::ApiKey(key) => Some(key.clone()),
            AuthSpec::Refresh { .. } => fresh(&lock(&generation.tokens[i].cache), Instant::now()),
        }
    }

    /// Returns a usable token for credential `i`, refreshing per `mode`.
    /// With `judge`, a failed refresh is held against the credential
    /// (failure count, or `failed` at once when the endpoint rejects the
    /// refresh token); probes pass `false` and report on their own.
    ///
    /// `generation` is the one the caller leased from; the token slot is
    /// shared with later generations while the credential's auth stays the
    /// same, and what the refresh says about the credential is applied to
    /// the current generation too (see [`PoolHandle::apply`]).
    pub(super) async fn refresh(
        &self,
        generation: &Arc<Generation>,
        i: usize,
        mode: Mode,
        judge: bool,
    ) -> Result<Secret, RefreshError> {
        let spec = &generation.specs()[i];
        let AuthSpec::Refresh {
            token_url,
            client_id,
            client_secret,
            ..
        } = &spec.auth
        else {
            let AuthSpec::ApiKey(key) = &spec.auth else {
                unreachable!()
            };
            return Ok(key.clone());
        };
        let slot = &generation.tokens[i];
        let skew = generation.settings().refresh_skew;

        // Fast path, no gate: a fresh cached token.
        if matches!(mode, Mode::IfStale)
            && let Some(t) = fresh(&lock(&slot.cache), Instant::now())
        {
            return Ok(t);
        }

        let entered = Instant::now();
        let _gate = slot.gate.lock().await;
        let refresh_token =
            {
                let c = lock(&slot.cache);
                let now = Instant::now();
                // Someone refreshed while we queued: share their result.
                if let Some((at, result)) = &c.last
                    && *at >= entered
                {
                    return match result {
                        Ok(()) => c.access.as_ref().map(|(t, _, _)| t.clone()).ok_or_else(|| {
                            RefreshError {
                                message: "token vanished".into(),
                                fatal: false,
                            }
                        }),
                        Err(e) => Err(e.clone()),
                    };
                }
                match &mode {
                    Mode::IfStale => {
                        if let Some(t) = fresh(&c, now) {
                            return Ok(t);
                        }
                    }
                    Mode::Replace(rejected) => {
                        if let Some((t, exp, _)) = &c.access
                            && t != rejected
                            && *exp > now
                        {
                            return Ok(t.clone());
                        }
                    }
                    Mode::Force => {}
                }
                c.refresh_token
                    .clone()
                    .expect("refreshable credential has a refresh token")
            };

        let client = oauth::Client {
            token_url,
            client_id: client_id.as_deref(),
            client_secret: client_secret.as_ref(),
        };
        let http = &self.shell.http;
        let call = |rt: Secret| {
            let client = &client;
            async move { client.refresh(http, &rt, TOKEN_TIMEOUT).await }
        };
        // With replicas, the cluster decides who calls the endpoint; the
        // token the caller holds (or was refused) is never taken back.
        let known = match &mode {
            Mode::Replace(rejected) => Some(rejected.clone()),
            _ => lock(&slot.cache).access.as_ref().map(|(t, _, _)| t.clone()),
        };
        let adopt = !matches!(mode, Mode::Force);
        let result = match self
            .cluster_refresh(&spec.name, &refresh_token, known.as_ref(), adopt, call)
            .await
        {
            Some(r) => r,
            None => client
                .refresh(http, &refresh_token, TOKEN_TIMEOUT)
                .await
                .map(|granted| Fetched {
                    granted,
                    adopted: false,
                }),
        };
        let now = Instant::now();
        match result {
            Ok(Fetched { granted, adopted }) => {
                let rotated = {
                    let mut c = lock(&slot.cache);
                    c.access = Some((
                        granted.access_token.clone(),
                        now + granted.expires_in,
                        SystemTime::now() + granted.expires_in,
                    ));
                    c.refresh_at =
                        Some(now + granted.expires_in - skew.min(granted.expires_in / 4));
                    c.last = Some((now, Ok(())));
                    match granted.refresh_token {
                        Some(new) if new != refresh_token => {
                            c.refresh_token = Some(new);
                            c.rotated = true;
                            true
                        }
                        _ => false,
                    }
                };
                let applied = self.apply(generation, i, |core, i| {
                    let c = &mut core.creds[i];
                    if !adopted {
                        c.stats.refreshes += 1;
                    }
                    if c.failed.is_none() {
                        c.last_error = None;
                    }
                    if !adopted {
                        core.totals.refreshes += 1;
                    }
                });
                let mut note = format!(
                    "{}: access token {} (valid {})",
                    spec.name,
                    if adopted {
                        "taken from another replica"
                    } else {
                        "refreshed"
                    },
                    crate::events::human(granted.expires_in)
                );
                if rotated {
                    // The old refresh token is dead now: the new one must be
                    // on disk before anything else happens.
                    match self.save().await {
                        Ok(()) if self.shell.state_file.is_some() => {
                            note.push_str("; new refresh token saved")
                        }
                        Ok(()) => note.push_str("; new refresh token kept in memory"),
                        Err(e) => self.notice(
                            Level::Error,
                            format!("{}: rotated refresh token NOT saved: {e}", spec.name),
                        ),
                    }
                }
                self.notice(Level::Info, note);
                if let Some((g, j, ())) = applied {
                    self.publish_credential(&g, j);
                }
                Ok(granted.access_token)
            }
            Err(e) => {
                lock(&slot.cache).last = Some((now, Err(e.clone())));
                generation.series.refresh_failed(i);
                let applied = self.apply(generation, i, |core, i| {
                    core.totals.refresh_failures += 1;
                    if !judge {
                        let s = core.creds[i].state(now);
                        (s, s)
                    } else if e.fatal {
                        core.fail(i, e.message.clone(), now)
                    } else {
                        core.refresh_failed(i, &e.message, now)
                    }
                });
                if judge {
                    self.notice(
                        Level::Warn,
                        format!("{}: refresh failed: {}", spec.name, e.message),
                    );
                }
                if let Some((g, j, (before, after))) = applied {
                    self.changed(&g, j, before, after, after == State::Failed);
                }
                Err(e)
            }
        }
    }
}

fn fresh(c: &Cache, now: Instant) -> Option<Secret> {
    match (&c.access, c.refresh_at) {
        (Some((t, _, _)), Some(at)) if now < at => Some(t.clone()),
        _ => None,
    }
}
