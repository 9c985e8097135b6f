//! Pool state shared with the other replicas through Redis
//! (`[state] backend = "redis"`). The store is handed in: the pool talks to
//! a [`SharedState`] it connects to with the [`StoreConnector`] it was
//! given (the gateway gives the Redis store's, from the `shared` module).
//!
//! What travels, and how:
//! - **Cooldowns** this replica learns (a 429, a quota, a depleted limit)
//!   are written at once (a queue drained by one task, off the request
//!   path); every other replica hears of the write over pub/sub and adopts
//!   the cooldown before its next selection — in about a millisecond on a
//!   LAN. A poll every second covers a missed message. Cooldowns only ever
//!   extend: the stricter wins, here and in Redis.
//! - **Operator actions**: disable and enable are written before the
//!   command answers; rotate, use-next and probe go out as ops that every
//!   replica carries out.
//! - **Tokens**: a refresh takes the cluster-wide refresh lock (with a
//!   fencing token), uses the refresh token Redis holds, and stores the new
//!   access token and any rotated refresh token with compare-and-set;
//!   replicas that find the lock taken wait for the token it stores. So N
//!   replicas make one token-endpoint call per expiry, and a rotated
//!   refresh token is never lost or replaced by an older one.
//! - **Failure counts** are written for operators to read; each replica
//!   decides `failed` from its own attempts.
//!
//! Redis unavailable: every replica keeps serving from its own state,
//! says so (an error in the log and the dashboard's log pane), keeps what
//! it learns, and when Redis is back writes it (cooldowns extend, so the
//! stricter wins; operator flags changed meanwhile are written) and reads
//! everyone else's.
//!
//! The link, its connection and what comes in from the others (the
//! reconcile, the pub/sub listener, the polling fallback) are here; what
//! goes out is in `push`, the refresh over the cluster in `refresh`.

mod push;
mod refresh;
mod sessions;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::push::{PUSH_QUEUE, Push};
pub(super) use self::refresh::Fetched;
use super::store::{Change, Field, Op, SharedCred, SharedState, SharedTokens, StoreConnector};
use super::{PoolHandle, lock};
use crate::config::SharedSettings;
use crate::events::{Level, State, unix_ms};

/// The polling fallback for cooldowns and flags.
const POLL: Duration = Duration::from_secs(1);

/// This replica's link to the cluster.
pub(super) struct Cluster {
    settings: SharedSettings,
    /// How to reach the store ([`PoolHandle::set_store_connector`]): the
    /// pool knows what to ask of shared state, not how Redis is spoken.
    connector: OnceLock<StoreConnector>,
    /// Set once the first connection succeeds.
    store: OnceLock<Arc<dyn SharedState>>,
    push: mpsc::Sender<Push>,
    push_rx: Mutex<Option<mpsc::Receiver<Push>>>,
    /// Credentials whose disabled flag changed here while Redis could not
    /// be written: written when it is back, before reading the others'.
    unsynced_flags: Mutex<HashSet<String>>,
    /// Last health reported, so a change is said once.
    reported_healthy: AtomicBool,
}

impl Cluster {
    pub(super) fn new(settings: SharedSettings) -> Cluster {
        let (push, rx) = mpsc::channel(PUSH_QUEUE);
        Cluster {
            settings,
            connector: OnceLock::new(),
            store: OnceLock::new(),
            push,
            push_rx: Mutex::new(Some(rx)),
            unsynced_flags: Mutex::new(HashSet::new()),
            reported_healthy: AtomicBool::new(false),
        }
    }

    /// The store, when connected and answering.
    fn healthy_store(&self) -> Option<&Arc<dyn SharedState>> {
        self.store.get().filter(|s| s.healthy())
    }
}

fn wall_ms(until: Instant, now: Instant) -> u64 {
    unix_ms(SystemTime::now()) + until.saturating_duration_since(now).as_millis() as u64
}

fn instant_of(until_ms: u64, now: Instant) -> Option<Instant> {
    let now_ms = unix_ms(SystemTime::now());
    (until_ms > now_ms).then(|| now + Duration::from_millis(until_ms - now_ms))
}

impl PoolHandle {
    fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.shell.cluster.as_ref()
    }

    /// Whether shared state is configured, connected and answering. Always
    /// `false` without `[state] backend = "redis"`.
    pub fn shared_healthy(&self) -> bool {
        self.cluster()
            .and_then(|c| c.store.get())
            .is_some_and(|s| s.healthy())
    }

    /// Hands the pool the way to connect to shared state (the gateway
    /// does, with the Redis store's), before [`PoolHandle::start`]. The
    /// first one stays. Only a pool with `[state] backend = "redis"` keeps
    /// it; one started without it serves unshared and says so.
    pub fn set_store_connector(&self, connect: StoreConnector) {
        if let Some(cluster) = self.cluster() {
            let _ = cluster.connector.set(connect);
        }
    }

    /// Spawns the cluster's tasks (with a shared backend configured). The
    /// connector is taken here, so one handed in later is not used.
    pub(super) fn start_cluster(&self, cancel: CancellationToken) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let Some(&connect) = cluster.connector.get() else {
            // Only a pool built outside the gateway gets here. The log,
            // not only the event bus: nobody may be subscribed yet.
            let message = "[state] backend = \"redis\", but this pool was given no way to \
                           connect to it (PoolHandle::set_store_connector before start): \
                           serving with this replica's own state, shared with no other replica"
                .to_string();
            tracing::error!("{message}");
            self.notice(Level::Error, message);
            return;
        };
        tokio::spawn(self.clone().cluster_task(connect, cancel));
    }

    async fn cluster_task(self, connect: StoreConnector, cancel: CancellationToken) {
        let Some(cluster) = self.cluster().cloned() else {
            return;
        };
        let s = &cluster.settings;
        let mut backoff = Duration::from_millis(200);
        let mut said = false;
        let store = loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = connect(s) => r,
            };
            match result {
                Ok(store) => break store,
                Err(e) => {
                    if !said {
                        self.notice(
                            Level::Error,
                            format!("{e}; serving with this replica's own state until it answers"),
                        );
                        said = true;
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let changes = store.changes();
        // What this replica brings (its state file's disabled flags) is
        // written before the cluster's flags are read: a disable is never
        // undone by a Redis that has not heard of it; the stricter wins.
        {
            let generation = self.current();
            let core = lock(&generation.core);
            let mut unsynced = lock(&cluster.unsynced_flags);
            for c in core.creds.iter().filter(|c| c.disabled) {
                unsynced.insert(c.name.clone());
            }
        }
        let _ = cluster.store.set(store.clone());
        cluster.reported_healthy.store(true, Ordering::Release);
        self.reconcile(store.as_ref(), true).await;
        self.notice(
            Level::Info,
            format!(
                "sharing pool state through {} (namespace {})",
                store.url(),
                store.namespace()
            ),
        );
        if let Some(rx) = lock(&cluster.push_rx).take() {
            tokio::spawn(self.clone().pusher(store.clone(), rx, cancel.clone()));
        }
        tokio::spawn(
            self.clone()
                .listener(store.clone(), changes, cancel.clone()),
        );
        // The polling fallback and the health reports.
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = poll.tick() => {}
            }
            let healthy = store.healthy();
            if healthy != cluster.reported_healthy.swap(healthy, Ordering::AcqRel) {
                if healthy {
                    self.notice(
                        Level::Info,
                        format!("Redis at {} answers again; reconciling state", store.url()),
                    );
                } else {
                    self.notice(
                        Level::Error,
                        format!(
                            "Redis at {} is unreachable: serving with this replica's own state; \
                             what it learns meanwhile is written back when Redis returns",
                            store.url()
                        ),
                    );
                }
            }
            if healthy {
                self.pull(store.as_ref()).await;
            }
        }
    }

    /// Applies what other replicas write, as they write it.
    async fn listener(
        self,
        store: Arc<dyn SharedState>,
        mut changes: broadcast::Receiver<Change>,
        cancel: CancellationToken,
    ) {
        loop {
            let change = tokio::select! {
                _ = cancel.cancelled() => return,
                c = changes.recv() => c,
            };
            match change {
                Ok(Change::Credential { name, field }) => match field {
                    Field::Cooldown | Field::Disabled => {
                        if let Ok(found) = store.load(&[name.as_str()]).await {
                            self.apply_shared(&found);
                        }
                    }
                    Field::Tokens => {
                        if let Ok(Some(t)) = store.tokens(&name).await {
                            self.adopt_tokens(&name, &t);
                        }
                    }
                    Field::Failures => {}
                },
                Ok(Change::Op(op)) => self.apply_op(&op),
                Ok(Change::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.reconcile(store.as_ref(), false).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// After connecting (or a gap): write what this replica knows that
    /// Redis may lack, then read everyone's.
    async fn reconcile(&self, store: &dyn SharedState, first: bool) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let generation = self.current();
        let now = Instant::now();
        let mut cooling = Vec::new();
        let mut flags = Vec::new();
        {
            let core = lock(&generation.core);
            let unsynced = lock(&cluster.unsynced_flags);
            for c in &core.creds {
                if let Some(cd) = &c.cooldown
                    && cd.until > now
                {
                    cooling.push((
                        c.name.clone(),
                        wall_ms(cd.until, now),
                        cd.kind,
                        cd.reason.clone(),
                    ));
                }
                if unsynced.contains(&c.name) {
                    flags.push((c.name.clone(), c.disabled));
                }
            }
        }
        for (name, until_ms, kind, reason) in cooling {
            let _ = store.extend_cooldown(&name, until_ms, kind, &reason).await;
        }
        for (name, disabled) in flags {
            if store.set_disabled(&name, disabled).await.is_ok() {
                lock(&cluster.unsynced_flags).remove(&name);
            }
        }
        // Refresh tokens: the first replica to start seeds Redis; a Redis
        // that restarted empty gets ours back. Redis's, when it has one, is
        // the newest and is taken.
        for (i, spec) in generation.specs().iter().enumerate() {
            if !spec.auth.refreshes() {
                continue;
            }
            let Some(local) = generation.tokens[i].refresh_token() else {
                continue;
            };
            match store.seed_refresh_token(&spec.name, &local).await {
                Ok(t) => {
                    if first
                        && let Some(fp) = &t.seed_fingerprint
                        && let crate::config::AuthSpec::Refresh { refresh_token, .. } = &spec.auth
                        && *fp != refresh_token.fingerprint()
                    {
                        self.notice(
                            Level::Warn,
                            format!(
                                "{}: the cluster was seeded with another refresh token than this \
                                 replica's config; using the cluster's",
                                spec.name
                            ),
                        );
                    }
                    self.adopt_tokens(&spec.name, &t);
                }
                Err(e) => self.notice(Level::Warn, e.to_string()),
            }
        }
        self.pull(store).await;
    }

    /// Reads every credential's cooldown and disabled flag from Redis and
    /// applies them (after a reconcile, and every [`POLL`] in case a
    /// message was missed).
    async fn pull(&self, store: &dyn SharedState) {
        let generation = self.current();
        let names: Vec<&str> = generation.specs().iter().map(|s| s.name.as_str()).collect();
        if let Ok(found) = store.load(&names).await {
            self.apply_shared(&found);
        }
        let day = {
            let secs = unix_ms(SystemTime::now()) / 1000;
            lock(&generation.core).settings.usage_zone.day(secs)
        };
        if let Ok(days) = store.day_usage(&names, day).await {
            let mut core = lock(&generation.core);
            for (name, counts) in days {
                if let Some(i) = core.find(&name) {
                    core.creds[i].stats.usage.set_cluster_day(day, counts);
                }
            }
        }
    }

    /// Takes other replicas' cooldowns (when they end later than ours) and
    /// disabled flags into the current generation.
    fn apply_shared(&self, found: &HashMap<String, SharedCred>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let generation = self.current();
        let now = Instant::now();
        let mut changed = Vec::new();
        {
            let mut core = lock(&generation.core);
            let unsynced = lock(&cluster.unsynced_flags);
            for (name, shared) in found {
                let Some(i) = core.find(name) else {
                    continue;
                };
                let before = core.creds[i].state(now);
                if let Some(cd) = &shared.cooldown
                    && let Some(until) = instant_of(cd.until_ms, now)
                {
                    core.adopt_cooldown(i, until, cd.kind, cd.reason.clone(), now);
                }
                // A flag changed here during an outage is ours to write,
                // not theirs to overrule.
                if !unsynced.contains(name) && core.creds[i].disabled != shared.disabled {
                    core.set_disabled(i, shared.disabled);
                }
                let after = core.creds[i].state(now);
                if before != after {
                    changed.push((i, after));
                }
            }
        }
        for (i, after) in changed {
            if after == State::Ready {
                self.shell.ready.notify_one();
            }
            self.publish_credential(&generation, i);
            self.shell.clock.notify_one();
            self.shell.dirty.notify_one();
        }
    }

    /// Takes another replica's newer access token (and refresh token).
    fn adopt_tokens(&self, name: &str, t: &SharedTokens) {
        let generation = self.current();
        let Some(i) = lock(&generation.core).find(name) else {
            return;
        };
        let slot = &generation.tokens[i];
        let mut saved = false;
        if let Some(rt) = &t.refresh_token
            && slot.refresh_token().as_ref() != Some(rt)
        {
            slot.restore_rotated(rt.clone());
            saved = true;
        }
        if let (Some(access), Some(exp_ms)) = (&t.access_token, t.access_expires_ms) {
            slot.adopt_access(access, exp_ms, generation.settings().refresh_skew);
        }
        if saved {
            self.shell.dirty.notify_one();
        }
        self.publish_credential(&generation, i);
    }

    fn apply_op(&self, op: &Op) {
        let generation = self.current();
        let now = Instant::now();
        let mut core = lock(&generation.core);
        match op {
            Op::Rotate => {
                for p in 0..generation.providers().len() {
                    core.rotate(p, now);
                }
            }
            Op::UseNext { credential } => {
                if let Some(i) = core.find(credential) {
                    core.use_next(i);
                }
            }
            Op::Probe { credential } => {
                if let Some(i) = core.find(credential) {
                    core.probe_now(i, now);
                    drop(core);
                    self.shell.clock.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::events::Event;

    #[test]
    fn wall_and_monotonic_times_round_trip() {
        let now = Instant::now();
        let until = now + Duration::from_secs(30);
        let ms = wall_ms(until, now);
        let back = instant_of(ms, now).unwrap();
        assert!(
            back.duration_since(now).abs_diff(Duration::from_secs(30)) < Duration::from_millis(50)
        );
        assert!(instant_of(unix_ms(SystemTime::now()) - 10, now).is_none());
    }

    /// A pool asked for Redis but given no way to reach it (built outside
    /// the gateway) says so, rather than quietly serving alone.
    #[tokio::test]
    async fn a_pool_given_no_store_connector_says_it_serves_unshared() {
        let toml = "listen = \"127.0.0.1:0\"\n\
                    [[provider]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n\
                    [[credential]]\nname = \"a\"\napi_key = \"sk-test-a\"\n";
        let mut config = Config::parse(toml, "t.toml", Path::new("."), &|_| None).unwrap();
        config.state_file = None;
        config.shared = Some(SharedSettings {
            url: "redis://127.0.0.1:9".into(),
            password: None,
            namespace: "t".into(),
        });
        let (pool, _) = PoolHandle::new(&config, reqwest::Client::new());
        let mut events = pool.subscribe();
        let stop = CancellationToken::new();
        pool.start(stop.clone());
        let said = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Event::Notice {
                    level: Level::Error,
                    message,
                    ..
                } = events.recv().await.unwrap()
                {
                    return message;
                }
            }
        })
        .await
        .expect("an error notice");
        stop.cancel();
        assert!(said.contains("set_store_connector"), "{said}");
        assert!(!pool.shared_healthy());
    }
}
