//! Where the dashboard's data comes from and where its commands go: the
//! pool in this process, or a tokenyard elsewhere over its admin API. The
//! rest of the dashboard sees only [`Feed`] messages and
//! [`Source::command`], so it cannot tell the two apart.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use super::feed::Feed;
use super::remote::Remote;
use crate::events::{Command, Event};
use crate::pool::{CommandError, PoolHandle};

/// Bound of the channel between a source's feeder task and the dashboard.
/// When the dashboard falls this far behind, the feeder waits, the pool's
/// broadcast lags, and the feeder answers the lag with a fresh snapshot —
/// the proxy never waits for the dashboard.
pub const FEED_CAPACITY: usize = 4096;

pub enum Source {
    /// The pool of the gateway running in this process.
    Local { pool: PoolHandle, label: String },
    /// A tokenyard instance reached over HTTP (`tokenyard attach`).
    Remote(Remote),
}

impl Source {
    /// What the header shows as "where": the listen address or the URL.
    pub fn label(&self) -> String {
        match self {
            Source::Local { label, .. } => label.clone(),
            Source::Remote(r) => r.label(),
        }
    }

    /// Starts the task that feeds the dashboard until `stop`.
    pub fn spawn_feed(
        &self,
        runtime: &tokio::runtime::Handle,
        stop: CancellationToken,
    ) -> mpsc::Receiver<Feed> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        match self {
            Source::Local { pool, .. } => {
                runtime.spawn(forward_local(pool.clone(), tx, stop));
            }
            Source::Remote(remote) => {
                runtime.spawn(remote.clone().feed(tx, stop));
            }
        }
        rx
    }

    /// Runs an operator command: the same code path as the admin API
    /// (locally `PoolHandle::command`, remotely the admin endpoints).
    /// `Ok` carries the pool's confirmation, `Err` what went wrong.
    pub async fn command(&self, cmd: Command) -> Result<String, String> {
        match self {
            Source::Local { pool, .. } => pool.command(cmd).await.map_err(|e| match e {
                CommandError::UnknownCredential(_) | CommandError::Failed(_) => e.to_string(),
            }),
            Source::Remote(remote) => remote.command(cmd).await,
        }
    }
}

/// How often a busy pool is re-sent whole. Events carry state changes and
/// request totals; per-credential counters (requests, last used, latency)
/// and the next credential change on every request without an event of
/// their own, so a snapshot follows activity at this pace. An idle pool
/// sends nothing.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// The local pool as a feed: a snapshot first, then every event, a fresh
/// snapshot after a lag and every [`SNAPSHOT_EVERY`] while events flow.
/// Subscribes at once, so nothing falls between the subscription and the
/// first snapshot. Ends at `stop`. The local dashboard reads it through a
/// channel; the admin API's event stream is this same feed, serialized.
pub fn local_feed(pool: PoolHandle, stop: CancellationToken) -> impl Stream<Item = Feed> + Send {
    struct Feeder {
        rx: broadcast::Receiver<Event>,
        pool: PoolHandle,
        refresh: Option<tokio::time::Interval>,
        /// Events went out since the last snapshot.
        active: bool,
        stop: CancellationToken,
    }
    let start = Feeder {
        rx: pool.subscribe(),
        pool,
        refresh: None,
        active: false,
        stop,
    };
    futures_util::stream::unfold(start, |mut s| async move {
        let Some(refresh) = s.refresh.as_mut() else {
            let mut refresh = tokio::time::interval(SNAPSHOT_EVERY);
            refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            s.refresh = Some(refresh);
            let first = Feed::Snapshot(s.pool.snapshot());
            return Some((first, s));
        };
        loop {
            tokio::select! {
                biased;
                _ = s.stop.cancelled() => return None,
                e = s.rx.recv() => {
                    let feed = match e {
                        // A reload: the whole pool, as after a lag.
                        Ok(Event::Reloaded { snapshot }) => {
                            s.active = false;
                            Feed::Snapshot(*snapshot)
                        }
                        Ok(event) => {
                            s.active = true;
                            Feed::Event(event)
                        }
                        // A slow reader missed events: the whole pool again.
                        Err(RecvError::Lagged(_)) => {
                            s.active = false;
                            Feed::Snapshot(s.pool.snapshot())
                        }
                        Err(RecvError::Closed) => return None,
                    };
                    return Some((feed, s));
                }
                _ = refresh.tick() => {
                    if std::mem::take(&mut s.active) {
                        let snap = Feed::Snapshot(s.pool.snapshot());
                        return Some((snap, s));
                    }
                }
            }
        }
    })
}

/// Moves the local feed into the dashboard's channel. While the channel is
/// full this waits, the broadcast lags, and the feed answers with a fresh
/// snapshot.
async fn forward_local(pool: PoolHandle, tx: mpsc::Sender<Feed>, stop: CancellationToken) {
    let feed = local_feed(pool, stop);
    tokio::pin!(feed);
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            f = feed.next() => f,
        };
        let Some(f) = next else { return };
        if tx.send(f).await.is_err() {
            return;
        }
    }
}
