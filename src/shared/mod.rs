//! Credential state shared between tokenyard replicas through Redis, so a
//! 429 seen by one replica keeps every replica off that credential, token
//! refreshes are single-flight across the cluster, and a refresh token the
//! provider rotated is never lost or overwritten by an older one.
//!
//! This module is the store only: it reads and writes Redis and reports
//! what other replicas changed. The pool decides what to do with it, and
//! never imports it: it sees the store as its own `pool::store::SharedState`
//! (implemented here), connected with [`connect_boxed`], which the gateway
//! hands it. The values that cross (credential state, [`Change`]s, the
//! [`RefreshLock`]) live in `pool::store` and are re-exported here.
//!
//! Connecting, health and the pool's view of the store are here; the
//! cooldowns, switches, failure counts and ops in `credentials`; the
//! refresh lock and the tokens in `refresh`; session pins in `sessions`.
//!
//! # Layout in Redis
//!
//! `{ns}` is the configured namespace, so several clusters can share one
//! Redis; the braces are part of the key (a Redis Cluster hash tag that
//! keeps one namespace in one slot, which multi-key scripts need).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tokenyard:{ns}:cred:{name}` | hash | everything about one credential (below) |
//! | `tokenyard:{ns}:lock:{name}` | string, TTL = lease | the fencing token of the replica refreshing it |
//! | `tokenyard:{ns}:changes` | pub/sub channel | one JSON message per write, and operator ops |
//! | `tokenyard:{ns}:session:{hash}` | string, TTL = `affinity_ttl` | the credential a session is pinned to (`hash`: 16 hex digits of the session's SHA-256, never the client's id) |
//!
//! Fields of the credential hash:
//!
//! | field | meaning |
//! |---|---|
//! | `cooldown_until_ms` | end of the cooldown, wall-clock unix ms; a write only ever moves it later |
//! | `cooldown_kind` | `rate_limited` or `quota` |
//! | `cooldown_reason` | human text for the dashboard |
//! | `disabled` | `1` if the operator disabled it, `0` otherwise |
//! | `failures` | consecutive failures |
//! | `refresh_token` | the refresh token in use (a secret) |
//! | `refresh_version` | bumped every time `refresh_token` changes; starts at 1 |
//! | `refresh_seed_fp` | [`Secret::fingerprint`] of the configured token that seeded it |
//! | `access_token` | the cached access token (a secret) |
//! | `access_expires_ms` | its expiry, wall-clock unix ms |
//! | `fence` | the last fencing token handed out for the refresh lock (at least the server clock in µs, so it grows even across a Redis that lost its data) |
//!
//! Nothing expires except the lock: the hash holds the only copy of a
//! rotated refresh token, so it must not vanish on its own. Clocks are the
//! replicas' wall clocks (keep them in NTP sync; a skew of a second is a
//! second of extra cooldown or of early retries).
//!
//! # Messages
//!
//! Every write runs in a Lua script that also publishes, on the changes
//! channel, `{"from":ID,"kind":"change","credential":NAME,"field":F}` with
//! `F` one of `cooldown`, `disabled`, `failures`, `tokens`; operator ops go
//! as `{"from":ID,"kind":"op","op":{"op":"rotate"}}` (or `use_next` /
//! `probe` with a `credential`). `ID` is random per [`SharedStore`], and a
//! store drops its own messages. No message ever holds a secret.
//!
//! A background task holds the subscription, pings both connections every
//! [`HEARTBEAT`], reconnects with backoff when either fails, and after any
//! gap sends [`Change::Resync`] (once it is subscribed again and commands
//! work), upon which the pool re-reads everything with [`SharedStore::load`].
//!
//! # Refresh, across replicas
//!
//! 1. [`SharedStore::try_lock_refresh`]: one replica gets a [`RefreshLock`]
//!    with a fencing token; the others wait for a [`Field::Tokens`] change
//!    (or poll [`SharedStore::tokens`]) and use the access token it stores.
//! 2. The holder reads [`SharedStore::tokens`], calls the token endpoint
//!    with that refresh token, and stores the result with
//!    [`SharedStore::store_refresh`], which succeeds only if it still holds
//!    the lock and the refresh token is still the version it read.
//! 3. [`SharedStore::release`].
//!
//! If the store is refused with [`StoreOutcome::FencedOut`] after the
//! provider rotated the refresh token, the new token exists only in the
//! caller's hands: put it back with [`SharedStore::restore_refresh_token`]
//! (at the read version + 1), which writes it only where Redis holds
//! nothing newer. The same call after a [`Change::Resync`] repairs a Redis
//! that restarted empty.
//!
//! Pick a lease longer than the token endpoint's timeout, so a lease only
//! runs out when its holder is stuck or gone.

mod credentials;
mod refresh;
mod scripts;
mod sessions;
mod subscriber;
mod types;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::scripts::Scripts;
use self::wire::{Keys, Message};
use crate::config::SharedSettings;
pub use crate::pool::store::{
    Change, Field, NewTokens, Op, RefreshLock, SharedCooldown, SharedCred, SharedTokens,
    SharedUsage, StoreOutcome,
};
use crate::pool::store::{SharedState, StoreError};
use crate::secret::Secret;
pub use crate::vocab::CooldownKind;

/// How often the background task pings Redis on both connections, which
/// bounds how long a silently dead connection goes unnoticed.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long one command (or one connection attempt) may take before it
/// counts as failed. Short: the pool falls back to its own state rather
/// than wait on Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes buffered per receiver before it lags; a lagging receiver
/// re-reads everything, as after [`Change::Resync`].
const CHANGES_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("state.url {url} {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("state.namespace {namespace:?} {reason}")]
    BadNamespace {
        namespace: String,
        reason: &'static str,
    },
    #[error("cannot connect to Redis at {url}: {source}; is it running and is the password right?")]
    Connect {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis at {url}: {what} failed: {source}")]
    Command {
        url: String,
        what: String,
        source: redis::RedisError,
    },
}

/// Whether the last command and the subscription worked.
#[derive(Debug)]
struct Health {
    commands: AtomicBool,
    subscription: AtomicBool,
}

/// A handle to the shared state. Cheap to clone; the background subscriber
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct SharedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Multiplexed, reconnects by itself on the next command after a
    /// failure. Cloned per command.
    con: ConnectionManager,
    keys: Keys,
    scripts: Scripts,
    /// Tags this store's messages, so its subscriber can skip them.
    id: String,
    /// The URL without its password, for errors and logs.
    url: String,
    namespace: String,
    health: Arc<Health>,
    changes: broadcast::Sender<Change>,
    /// Stops the subscriber when the last handle goes.
    stop: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStore")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .field("healthy", &self.healthy())
            .finish()
    }
}

/// The URL with its password (if any) replaced, safe to print.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Could be anything, a password included: show none of it.
        Err(_) => "(not a URL)".to_string(),
    }
}

/// Whether an error means the connection (not the command) failed.
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl SharedStore {
    /// Connects (commands and subscription), or fails with what went wrong
    /// and where. `password`, when given, wins over one in the URL.
    pub async fn connect(
        url: &str,
        password: Option<&Secret>,
        namespace: &str,
    ) -> Result<SharedStore, SharedError> {
        let shown = redact_url(url);
        wire::check_namespace(namespace).map_err(|reason| SharedError::BadNamespace {
            namespace: namespace.to_string(),
            reason,
        })?;
        let bad = |reason| SharedError::BadUrl {
            url: shown.clone(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|_| bad("is not a URL"))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(bad("must start with redis:// or rediss://"));
        }
        // The crate's own parse error may quote the URL: say it ourselves.
        let mut info = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|_| bad("is not a Redis URL (redis://[user@]host[:port][/db])"))?;
        if let Some(p) = password {
            let settings = info.redis_settings().clone().set_password(p.expose());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(|source| SharedError::Connect {
            url: shown.clone(),
            source,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connect_err = |source| SharedError::Connect {
            url: shown.clone(),
            source,
        };
        let con = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(connect_err)?;
        let keys = Keys::new(namespace);
        // Subscribe before returning, so nothing written after `connect`
        // can be missed.
        let pubsub = subscriber::subscribe(&client, keys.channel())
            .await
            .map_err(connect_err)?;

        let health = Arc::new(Health {
            commands: AtomicBool::new(true),
            subscription: AtomicBool::new(true),
        });
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let id = format!("{:016x}", rand::random::<u64>());
        let stop = CancellationToken::new();
        let task = subscriber::Subscriber {
            client,
            con: con.clone(),
            channel: keys.channel().to_string(),
            id: id.clone(),
            url: shown.clone(),
            health: health.clone(),
            changes: changes.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(task.run(pubsub));
        Ok(SharedStore {
            inner: Arc::new(Inner {
                con,
                keys,
                scripts: Scripts::new(),
                id,
                url: shown,
                namespace: namespace.to_string(),
                health,
                changes,
                stop,
            }),
        })
    }

    /// True while the last command worked and the subscription is up. When
    /// false, changes from other replicas may be missed: the pool should
    /// lean on its own state (and expect a [`Change::Resync`] later).
    pub fn healthy(&self) -> bool {
        self.inner.health.commands.load(Ordering::Relaxed)
            && self.inner.health.subscription.load(Ordering::Relaxed)
    }

    /// The URL, password masked.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// What other replicas change, as it happens. A receiver that lags
    /// (`RecvError::Lagged`) should re-read everything, as on
    /// [`Change::Resync`].
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    fn con(&self) -> ConnectionManager {
        self.inner.con.clone()
    }

    /// Records the command's health and names what failed.
    fn check<T>(
        &self,
        what: impl FnOnce() -> String,
        r: redis::RedisResult<T>,
    ) -> Result<T, SharedError> {
        let ok = match &r {
            Ok(_) => true,
            Err(e) => !is_connection_error(e),
        };
        self.inner.health.commands.store(ok, Ordering::Relaxed);
        r.map_err(|source| SharedError::Command {
            url: self.inner.url.clone(),
            what: what(),
            source,
        })
    }

    fn message(&self, name: &str, field: Field) -> String {
        Message::change(&self.inner.id, name, field)
    }

    /// A round trip on the command connection; updates [`Self::healthy`].
    pub async fn ping(&self) -> Result<(), SharedError> {
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut self.con()).await;
        self.check(|| "PING".to_string(), r).map(|_| ())
    }
}

/// [`SharedStore::connect`] with the `[state]` settings, boxed: the shape
/// the pool takes it in (`pool::StoreConnector`), so the pool shares state
/// without depending on this module. The gateway hands it to the pool.
pub fn connect_boxed(
    settings: &SharedSettings,
) -> BoxFuture<'_, Result<Arc<dyn SharedState>, StoreError>> {
    Box::pin(async move {
        let store = SharedStore::connect(
            &settings.url,
            settings.password.as_ref(),
            &settings.namespace,
        )
        .await?;
        Ok(Arc::new(store) as Arc<dyn SharedState>)
    })
}

/// The store as the pool sees it: the same calls, the errors boxed (their
/// text unchanged).
impl SharedState for SharedStore {
    fn healthy(&self) -> bool {
        SharedStore::healthy(self)
    }

    fn url(&self) -> &str {
        SharedStore::url(self)
    }

    fn namespace(&self) -> &str {
        SharedStore::namespace(self)
    }

    fn changes(&self) -> broadcast::Receiver<Change> {
        SharedStore::changes(self)
    }

    fn load<'a>(
        &'a self,
        names: &'a [&'a str],
    ) -> BoxFuture<'a, Result<HashMap<String, SharedCred>, StoreError>> {
        Box::pin(async move { Ok(SharedStore::load(self, names).await?) })
    }

    fn add_usage<'a>(
        &'a self,
        name: &'a str,
        day: u64,
        minute: u64,
        tokens: u64,
    ) -> BoxFuture<'a, Result<SharedUsage, StoreError>> {
        Box::pin(async move { Ok(SharedStore::add_usage(self, name, day, minute, tokens).await?) })
    }

    fn session_pin<'a>(
        &'a self,
        hex: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move { Ok(SharedStore::session_pin(self, hex).await?) })
    }

    fn set_session_pin<'a>(
        &'a self,
        hex: &'a str,
        credential: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Ok(SharedStore::set_session_pin(self, hex, credential, ttl).await?) })
    }

    fn day_usage<'a>(
        &'a self,
        names: &'a [&'a str],
        day: u64,
    ) -> BoxFuture<'a, Result<HashMap<String, crate::vocab::DayCounts>, StoreError>> {
        Box::pin(async move { Ok(SharedStore::day_usage(self, names, day).await?) })
    }

    fn extend_cooldown<'a>(
        &'a self,
        name: &'a str,
        until_ms: u64,
        kind: CooldownKind,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            Ok(SharedStore::extend_cooldown(self, name, until_ms, kind, reason).await?)
        })
    }

    fn set_disabled<'a>(
        &'a self,
        name: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Ok(SharedStore::set_disabled(self, name, disabled).await?) })
    }

    fn set_failures<'a>(
        &'a self,
        name: &'a str,
        failures: u32,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Ok(SharedStore::set_failures(self, name, failures).await?) })
    }

    fn publish_op<'a>(&'a self, op: &'a Op) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { Ok(SharedStore::publish_op(self, op).await?) })
    }

    fn try_lock_refresh<'a>(
        &'a self,
        name: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Option<RefreshLock>, StoreError>> {
        Box::pin(async move { Ok(SharedStore::try_lock_refresh(self, name, lease).await?) })
    }

    fn tokens<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedTokens>, StoreError>> {
        Box::pin(async move { Ok(SharedStore::tokens(self, name).await?) })
    }

    fn store_refresh<'a>(
        &'a self,
        lock: &'a RefreshLock,
        expected_version: u64,
        new: &'a NewTokens,
    ) -> BoxFuture<'a, Result<StoreOutcome, StoreError>> {
        Box::pin(
            async move { Ok(SharedStore::store_refresh(self, lock, expected_version, new).await?) },
        )
    }

    fn release(&self, lock: RefreshLock) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move { Ok(SharedStore::release(self, lock).await?) })
    }

    fn seed_refresh_token<'a>(
        &'a self,
        name: &'a str,
        token: &'a Secret,
    ) -> BoxFuture<'a, Result<SharedTokens, StoreError>> {
        Box::pin(async move { Ok(SharedStore::seed_refresh_token(self, name, token).await?) })
    }

    fn restore_refresh_token<'a>(
        &'a self,
        name: &'a str,
        token: &'a Secret,
        version: u64,
    ) -> BoxFuture<'a, Result<SharedTokens, StoreError>> {
        Box::pin(async move {
            Ok(SharedStore::restore_refresh_token(self, name, token, version).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_password() {
        assert_eq!(
            redact_url("redis://user:hunter2hunter2@cache:6380/2"),
            "redis://user:***@cache:6380/2"
        );
        assert_eq!(redact_url("rediss://cache"), "rediss://cache");
        assert_eq!(redact_url("::hunter2::"), "(not a URL)");
    }
}
