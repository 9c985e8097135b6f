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

mod scripts;
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::scripts::Scripts;
use self::types::{TokensReply, parse_cred, tokens_from};
use self::wire::{Keys, Message, field};
use crate::config::SharedSettings;
pub use crate::pool::store::{
    Change, Field, NewTokens, Op, RefreshLock, SharedCooldown, SharedCred, SharedTokens,
    StoreOutcome,
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

    /// Everything stored about each credential; a credential Redis knows
    /// nothing of comes back as the default (ready, no tokens).
    pub async fn load(&self, names: &[&str]) -> Result<HashMap<String, SharedCred>, SharedError> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.inner.keys.cred(name));
        }
        let r: redis::RedisResult<Vec<HashMap<String, String>>> =
            pipe.query_async(&mut self.con()).await;
        let hashes = self.check(|| format!("reading {} credential(s)", names.len()), r)?;
        Ok(names
            .iter()
            .zip(hashes)
            .map(|(name, h)| (name.to_string(), parse_cred(&h)))
            .collect())
    }

    /// Moves the cooldown of `name` to end at `until_ms` (wall-clock unix
    /// ms), unless the stored one already ends as late or later. Returns
    /// whether it was written (and so published).
    pub async fn extend_cooldown(
        &self,
        name: &str,
        until_ms: u64,
        kind: CooldownKind,
        reason: &str,
    ) -> Result<bool, SharedError> {
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .extend_cooldown
            .key(self.inner.keys.cred(name))
            .arg(until_ms)
            .arg(wire::kind_str(kind))
            .arg(reason)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Cooldown))
            .invoke_async(&mut self.con())
            .await;
        Ok(self.check(|| format!("extending the cooldown of {name:?}"), r)? == 1)
    }

    /// The operator's switch. Publishes only if it changed.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<(), SharedError> {
        let value = if disabled { "1" } else { "0" };
        self.set_field(name, field::DISABLED, value, Field::Disabled)
            .await
    }

    /// The consecutive-failure count (last writer wins). Publishes only if
    /// it changed.
    pub async fn set_failures(&self, name: &str, failures: u32) -> Result<(), SharedError> {
        self.set_field(
            name,
            field::FAILURES,
            &failures.to_string(),
            Field::Failures,
        )
        .await
    }

    async fn set_field(
        &self,
        name: &str,
        hash_field: &str,
        value: &str,
        field: Field,
    ) -> Result<(), SharedError> {
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .set_field
            .key(self.inner.keys.cred(name))
            .arg(hash_field)
            .arg(value)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, field))
            .invoke_async(&mut self.con())
            .await;
        self.check(|| format!("setting {hash_field} of {name:?}"), r)
            .map(|_| ())
    }

    /// Sends an operator op to every other replica.
    pub async fn publish_op(&self, op: &Op) -> Result<(), SharedError> {
        let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
            .arg(self.inner.keys.channel())
            .arg(Message::op(&self.inner.id, op))
            .query_async(&mut self.con())
            .await;
        self.check(|| format!("publishing {op:?}"), r).map(|_| ())
    }

    /// Takes the refresh lock of `name` for `lease`, or `None` if another
    /// holder (on any replica) has it.
    pub async fn try_lock_refresh(
        &self,
        name: &str,
        lease: Duration,
    ) -> Result<Option<RefreshLock>, SharedError> {
        let lease_ms = lease.as_millis().max(1) as u64;
        let taken_at = Instant::now();
        // The script answers the fence as a string (it outgrows Lua's
        // integer printing) or 0.
        let r: redis::RedisResult<redis::Value> = self
            .inner
            .scripts
            .acquire
            .key(self.inner.keys.lock(name))
            .key(self.inner.keys.cred(name))
            .arg(lease_ms)
            .invoke_async(&mut self.con())
            .await;
        let reply = self.check(|| format!("taking the refresh lock of {name:?}"), r)?;
        let fence = match reply {
            redis::Value::Int(n) => n.max(0) as u64,
            redis::Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        };
        Ok((fence > 0).then(|| RefreshLock::new(name.to_string(), fence, taken_at + lease)))
    }

    /// The stored tokens of `name`, or `None` if it has none at all.
    pub async fn tokens(&self, name: &str) -> Result<Option<SharedTokens>, SharedError> {
        let r: redis::RedisResult<Vec<Option<String>>> = redis::cmd("HMGET")
            .arg(self.inner.keys.cred(name))
            .arg(&[
                field::REFRESH_TOKEN,
                field::REFRESH_VERSION,
                field::ACCESS_TOKEN,
                field::ACCESS_EXPIRES,
                field::REFRESH_SEED_FP,
            ])
            .query_async(&mut self.con())
            .await;
        let mut f = self
            .check(|| format!("reading the tokens of {name:?}"), r)?
            .into_iter();
        let mut next = || f.next().flatten();
        let tokens = tokens_from(next(), next(), next(), next(), next());
        let empty = tokens.refresh_token.is_none() && tokens.access_token.is_none();
        Ok((!empty).then_some(tokens))
    }

    /// Stores a refresh's result: only if `lock` still holds the refresh
    /// lock and the refresh token is still at `expected_version` (what
    /// [`SharedStore::tokens`] said before the refresh). A rotated refresh
    /// token becomes version + 1. An older refresh token can never replace
    /// a newer one.
    pub async fn store_refresh(
        &self,
        lock: &RefreshLock,
        expected_version: u64,
        new: &NewTokens,
    ) -> Result<StoreOutcome, SharedError> {
        let name = lock.name();
        let r: redis::RedisResult<(i64, u64)> = self
            .inner
            .scripts
            .store_refresh
            .key(self.inner.keys.cred(name))
            .key(self.inner.keys.lock(name))
            .arg(lock.fence())
            .arg(expected_version)
            .arg(new.access_token.expose())
            .arg(new.expires_ms)
            .arg(new.refresh_token.as_ref().map_or("", Secret::expose))
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (status, version) =
            self.check(|| format!("storing the refreshed tokens of {name:?}"), r)?;
        Ok(match status {
            1 => StoreOutcome::Stored { version },
            -1 => StoreOutcome::FencedOut,
            _ => StoreOutcome::Superseded { version },
        })
    }

    /// Gives the lock back, if `lock` still holds it (a lease that ran out
    /// may belong to someone else by now). Returns whether it did.
    pub async fn release(&self, lock: RefreshLock) -> Result<bool, SharedError> {
        let name = lock.name();
        let r: redis::RedisResult<i64> = self
            .inner
            .scripts
            .release
            .key(self.inner.keys.lock(name))
            .arg(lock.fence())
            .invoke_async(&mut self.con())
            .await;
        Ok(self.check(|| format!("releasing the refresh lock of {name:?}"), r)? == 1)
    }

    /// Writes the configured refresh token of `name` only if Redis holds
    /// none yet (the first replica to start wins), and returns what Redis
    /// holds afterwards. A replica that loses keeps using Redis's token:
    /// it may be a rotated successor of its own.
    pub async fn seed_refresh_token(
        &self,
        name: &str,
        token: &Secret,
    ) -> Result<SharedTokens, SharedError> {
        let r: redis::RedisResult<TokensReply> = self
            .inner
            .scripts
            .seed
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(token.fingerprint())
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (_, rt, version, at, exp, fp) =
            self.check(|| format!("seeding the refresh token of {name:?}"), r)?;
        Ok(tokens_from(rt, version, at, exp, fp))
    }

    /// Puts back a refresh token this replica holds at `version` (from
    /// [`SharedStore::tokens`] or [`StoreOutcome::Stored`], plus one for a
    /// token rotated by a refresh whose store was refused), but only if
    /// Redis holds an older version or none: after Redis lost its data, or
    /// a [`StoreOutcome::FencedOut`] refresh whose rotated token would
    /// otherwise exist nowhere else. Returns what Redis holds afterwards.
    pub async fn restore_refresh_token(
        &self,
        name: &str,
        token: &Secret,
        version: u64,
    ) -> Result<SharedTokens, SharedError> {
        let r: redis::RedisResult<TokensReply> = self
            .inner
            .scripts
            .restore
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(version)
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        let (_, rt, version, at, exp, fp) =
            self.check(|| format!("restoring the refresh token of {name:?}"), r)?;
        Ok(tokens_from(rt, version, at, exp, fp))
    }

    /// Puts `token` in as the refresh token of `name` whatever is stored
    /// (an operator's explicit choice, e.g. after the stored one was
    /// revoked), as a new version, and drops the cached access token.
    /// Returns the new version.
    pub async fn replace_refresh_token(
        &self,
        name: &str,
        token: &Secret,
    ) -> Result<u64, SharedError> {
        let r: redis::RedisResult<u64> = self
            .inner
            .scripts
            .replace
            .key(self.inner.keys.cred(name))
            .arg(token.expose())
            .arg(token.fingerprint())
            .arg(self.inner.keys.channel())
            .arg(self.message(name, Field::Tokens))
            .invoke_async(&mut self.con())
            .await;
        self.check(|| format!("replacing the refresh token of {name:?}"), r)
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
