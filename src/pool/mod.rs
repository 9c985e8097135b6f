//! The credential pool: the state machine in [`core`] behind a mutex, plus
//! everything that needs I/O — access-token refresh (one in flight per
//! credential), the clock that ends cooldowns, the half-open probes, the
//! state file, and the event channel.
//!
//! The credentials come in generations: a config reload (see [`reload`])
//! builds the next [`Generation`] and swaps it in behind the same
//! [`PoolHandle`]. Leases keep the generation they came from, so requests
//! in flight finish where they started, and what they report lands on the
//! current generation too when their credential was carried over.
//!
//! Locks here are `std` mutexes held for microseconds and never across an
//! `.await`; the one async mutex per credential is the single-flight gate
//! for token refresh and is meant to be held while the refresh runs.
//!
//! Here: the handle, its generations and how they are built and started.
//! [`PoolHandle`]'s other methods live with their idea: taking a credential
//! in `leasing`, what an attempt reports in `recording`, the event bus in
//! `publishing`, operator commands in `commands`, the clock and probes in
//! `probes`, the state file in `saving`, the dashboard's view in
//! `snapshot`, the link to other replicas in `cluster`.

mod cluster;
mod commands;
pub mod core;
mod leasing;
pub mod oauth;
pub mod persist;
mod probes;
mod publishing;
mod recording;
pub mod reload;
mod saving;
pub mod sessions;
mod snapshot;
pub mod store;
mod tokens;
pub mod usage;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::core::{Cooldown, Core, Cred};
pub use self::core::{CooldownKind, Unavailable, Verdict};
pub use self::leasing::Lease;
pub use self::probes::Prober;
pub use self::reload::ReloadSummary;
pub use self::sessions::SessionKey;
use self::snapshot::{provider_view, view};
pub use self::store::StoreConnector;
use self::tokens::TokenSlot;
use crate::config::{AuthSpec, Config, CredentialSpec, PoolSettings, Provider};
use crate::events::{
    Command, CredentialKind, CredentialView, Event, Level, PoolSnapshot, ProviderView,
    RequestRecord, State, human, unix_ms,
};
use crate::metrics::{CredentialInfo, CredentialSeries, Metrics};
use crate::secret::Secret;

/// Events buffered per subscriber before it lags. A lagging subscriber
/// resyncs from [`PoolHandle::snapshot`]; the proxy never waits for it.
pub const EVENT_CAPACITY: usize = 4096;

/// How long a probe or an operator-requested refresh may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// State-file writes are batched this long after a change.
const SAVE_DEBOUNCE: Duration = Duration::from_millis(100);
/// How often new usage alone is written to the state file (a `kill -9`
/// loses at most this much of it).
const USAGE_SAVE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no credential named {0:?}")]
    UnknownCredential(String),
    #[error("{0}")]
    Failed(String),
}

/// A cheap, cloneable handle to the pool. Stays valid across config
/// reloads: it holds the [`Shell`] (what outlives a config) and reaches the
/// credentials through the shell's current [`Generation`].
#[derive(Clone)]
pub struct PoolHandle {
    shell: Arc<Shell>,
}

/// What lives as long as the process, whatever the config says.
struct Shell {
    /// The credentials as the config last loaded says. Replaced whole by a
    /// reload; every method takes it once at its start and works on that.
    current: RwLock<Arc<Generation>>,
    events: broadcast::Sender<Event>,
    /// The same events less the finished requests: for subscribers that
    /// have nothing to do per request (the headless log), so a request
    /// does not wake them.
    changes: broadcast::Sender<Event>,
    /// Wakes requests waiting (`max_wait`) for a credential to come back.
    ready: Notify,
    /// Wakes the clock task when a deadline moved (or the generation did).
    clock: Notify,
    /// Asks the writer task to save soon.
    dirty: Notify,
    /// Usage changed since the last save.
    usage_dirty: std::sync::atomic::AtomicBool,
    /// Answers and tokens by client key (masked), since start.
    clients: Mutex<std::collections::BTreeMap<String, crate::vocab::TokenCounts>>,
    /// Serializes state-file writes; the state is read after taking it, so
    /// the newest state is always the last one written.
    writer: tokio::sync::Mutex<()>,
    http: reqwest::Client,
    /// The half-open probe's request, handed over by the gateway
    /// ([`PoolHandle::set_prober`]): the upstream adapters know how to ask
    /// each kind of provider, and the pool does not depend on them.
    prober: OnceLock<Prober>,
    state_file: Option<PathBuf>,
    started: SystemTime,
    request_ids: AtomicU64,
    /// This pool's Prometheus series (one registry per pool, so gateways
    /// in one process stay apart); bumped by `record` and `finish`. Kept
    /// across reloads so counters run on.
    metrics: Metrics,
    /// Hands out credential lineage ids (see [`Generation::lineage`]).
    lineage: AtomicU64,
    /// Numbers generations, for logs and tests.
    generations: AtomicU64,
    /// One reload at a time: each builds on the generation before it.
    reloading: Mutex<()>,
    /// The link to the other replicas (`[state] backend = "redis"`).
    cluster: Option<Arc<cluster::Cluster>>,
    /// Session affinity's pins, by credential name: they outlive a reload
    /// (a credential it leaves alone keeps its sessions).
    sessions: Mutex<sessions::Sessions>,
}

/// The pool as one config made it: the credentials, their state, their
/// tokens. A reload builds the next one and swaps it in; the old one lives
/// on only as long as leases taken from it (in-flight requests finish on
/// the generation they started in) and is marked retired.
pub struct Generation {
    number: u64,
    config: Arc<Config>,
    core: Mutex<Core>,
    /// Per credential, same order as `config.credentials`: an id kept by a
    /// credential for as long as reloads leave it unchanged. How a verdict
    /// on a lease of a retired generation finds the same credential in the
    /// current one.
    lineage: Vec<u64>,
    /// One per credential. Shared with the next generation when the
    /// credential's auth is unchanged, so the single-flight refresh, the
    /// cached access token and a rotated refresh token are the very same
    /// object on both sides of a reload.
    tokens: Vec<Arc<TokenSlot>>,
    /// This generation's handles to the per-credential series.
    series: CredentialSeries,
    /// Set (under `core`'s lock) when a reload replaced this generation:
    /// from then on nothing new is leased from it, and what its leases
    /// report is applied to the current generation too.
    retired: AtomicBool,
}

impl Generation {
    /// The config this generation was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }
    pub fn settings(&self) -> &PoolSettings {
        &self.config.pool
    }
    pub fn providers(&self) -> &[Provider] {
        &self.config.providers
    }
    /// Counts reloads: 1 for the generation the pool started with.
    pub fn number(&self) -> u64 {
        self.number
    }
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }
    fn specs(&self) -> &[CredentialSpec] {
        &self.config.credentials
    }
    fn find_lineage(&self, id: u64) -> Option<usize> {
        self.lineage.iter().position(|&l| l == id)
    }
    /// The index here of `provider` of generation `from`: the same index
    /// when `from` is this generation, else the provider of the same name
    /// and kind (a request converted for one kind cannot go to another).
    fn follow(self: &Arc<Self>, from: &Arc<Generation>, provider: usize) -> Option<usize> {
        if Arc::ptr_eq(self, from) {
            return Some(provider);
        }
        let p = from.providers().get(provider)?;
        self.providers()
            .iter()
            .position(|q| q.name == p.name && q.kind == p.kind)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PoolHandle {
    /// Builds the pool from the config and restores the state file. Returns
    /// the handle and what restoring found, for the startup report.
    pub fn new(config: &Config, http: reqwest::Client) -> (PoolHandle, Vec<String>) {
        Self::build(config, http, false)
    }

    /// Like [`PoolHandle::new`], but never writes: a broken state file is
    /// reported, not moved, and [`PoolHandle::save`] does nothing. For
    /// `tokenyard check`.
    pub fn new_readonly(config: &Config, http: reqwest::Client) -> (PoolHandle, Vec<String>) {
        Self::build(config, http, true)
    }

    fn build(config: &Config, http: reqwest::Client, readonly: bool) -> (PoolHandle, Vec<String>) {
        let creds = config
            .credentials
            .iter()
            .map(|c| {
                let mut cred = Cred::new(c.name.clone(), c.provider, c.tier);
                cred.budget = c.budget;
                cred
            })
            .collect();
        let core = Core::new(config.pool.clone(), creds);
        let tokens = config
            .credentials
            .iter()
            .map(|c| Arc::new(TokenSlot::new(&c.auth)))
            .collect();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (changes, _) = broadcast::channel(EVENT_CAPACITY);
        let metrics = Metrics::new();
        let series = metrics.credentials(credential_infos(config));
        let n = config.credentials.len() as u64;
        let generation = Generation {
            number: 1,
            config: Arc::new(config.clone()),
            core: Mutex::new(core),
            lineage: (0..n).collect(),
            tokens,
            series,
            retired: AtomicBool::new(false),
        };
        let shell = Shell {
            current: RwLock::new(Arc::new(generation)),
            events,
            changes,
            ready: Notify::new(),
            clock: Notify::new(),
            dirty: Notify::new(),
            usage_dirty: std::sync::atomic::AtomicBool::new(false),
            clients: Mutex::default(),
            writer: tokio::sync::Mutex::new(()),
            http,
            prober: OnceLock::new(),
            state_file: if readonly {
                None
            } else {
                config.state_file.clone()
            },
            started: SystemTime::now(),
            request_ids: AtomicU64::new(1),
            metrics,
            lineage: AtomicU64::new(n),
            generations: AtomicU64::new(1),
            reloading: Mutex::new(()),
            sessions: Mutex::new(sessions::Sessions::new(
                config.pool.affinity.ttl,
                config.pool.affinity.max_sessions,
            )),
            cluster: if readonly {
                None
            } else {
                config
                    .shared
                    .clone()
                    .map(|s| Arc::new(cluster::Cluster::new(s)))
            },
        };
        let pool = PoolHandle {
            shell: Arc::new(shell),
        };
        let notes = pool.restore(config.state_file.as_deref(), readonly);
        (pool, notes)
    }

    /// The generation serving now. Hold it for the length of one piece of
    /// work (a request's routing, a snapshot), not longer.
    pub fn current(&self) -> Arc<Generation> {
        self.shell
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The config of the current generation.
    pub fn config(&self) -> Arc<Config> {
        self.current().config.clone()
    }

    /// Runs `f` on the current generation's core, locked; if a reload
    /// retired that generation before the lock was taken, on the next one.
    fn with_current<R>(&self, mut f: impl FnMut(&Arc<Generation>, &mut Core) -> R) -> R {
        loop {
            let generation = self.current();
            let mut core = lock(&generation.core);
            if generation.is_retired() {
                continue;
            }
            return f(&generation, &mut core);
        }
    }

    /// Runs `f` on credential `i` of `generation`. When that generation is
    /// retired, runs it again on the same credential in the current one, if
    /// a reload carried it over unchanged: a verdict, a refresh result or an
    /// in-flight release that lands mid-reload is never lost. Returns where
    /// the change now counts (the current generation's copy), with `f`'s
    /// result there; `None` when the credential is gone.
    fn apply<R>(
        &self,
        generation: &Arc<Generation>,
        i: usize,
        mut f: impl FnMut(&mut Core, usize) -> R,
    ) -> Option<(Arc<Generation>, usize, R)> {
        {
            let mut core = lock(&generation.core);
            let r = f(&mut core, i);
            // Read under the lock a reload retires it under: if not retired
            // now, the reload has yet to copy this credential, change and all.
            if !generation.is_retired() {
                return Some((generation.clone(), i, r));
            }
        }
        let id = generation.lineage[i];
        self.with_current(|current, core| {
            current
                .find_lineage(id)
                .map(|j| (current.clone(), j, f(core, j)))
        })
    }

    /// Spawns the clock (cooldown ends, probes) and the state writer. Both
    /// stop when `cancel` fires; call [`PoolHandle::save`] after that for
    /// the final write.
    pub fn start(&self, cancel: CancellationToken) {
        tokio::spawn(self.clone().clock_task(cancel.clone()));
        self.start_cluster(cancel.clone());
        tokio::spawn(self.clone().writer_task(cancel));
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.shell.http
    }

    /// This pool's Prometheus series (`GET /metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.shell.metrics
    }

    pub fn next_request_id(&self) -> u64 {
        self.shell.request_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Test and tooling access to one credential's state.
    pub fn state_of(&self, name: &str) -> Option<State> {
        let generation = self.current();
        let core = lock(&generation.core);
        core.find(name).map(|i| core.creds[i].state(Instant::now()))
    }
}

/// What the metrics need of each credential of `config`.
fn credential_infos(config: &Config) -> impl Iterator<Item = CredentialInfo<'_>> {
    config.credentials.iter().map(|c| CredentialInfo {
        name: &c.name,
        provider: &config.providers[c.provider].name,
        refreshes: c.auth.refreshes(),
    })
}
