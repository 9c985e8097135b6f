//! Where the dashboard's data comes from and where its commands go: the
//! pool in this process, or a tokenyard elsewhere over its admin API. The
//! rest of the dashboard sees only [`Feed`] messages and
//! [`Source::command`], so it cannot tell the two apart.

use std::time::Duration;

use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use super::remote::Remote;
use crate::events::{Command, Event, PoolSnapshot};
use crate::pool::{CommandError, PoolHandle};

/// Bound of the channel between a source's feeder task and the dashboard.
/// When the dashboard falls this far behind, the feeder waits, the pool's
/// broadcast lags, and the feeder answers the lag with a fresh snapshot —
/// the proxy never waits for the dashboard.
pub const FEED_CAPACITY: usize = 4096;

/// One message from a source to the dashboard.
#[derive(Debug, Clone)]
pub enum Feed {
    /// The whole pool. Replaces what the dashboard had: sent first, after a
    /// lag and after every (re)connect.
    Snapshot(PoolSnapshot),
    Event(Event),
    /// The connection to a remote instance is gone; the dashboard says
    /// "disconnected, retrying" until the next `Snapshot`.
    Disconnected(String),
}

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
                runtime.spawn(feed_local(pool.clone(), tx, stop));
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

/// Feeds `tx` from the local pool until `stop` or until `tx` closes: a
/// snapshot first, then every event, a fresh snapshot after a lag and
/// every [`SNAPSHOT_EVERY`] while events flow. The admin API's event
/// stream is this same feed, serialized.
pub async fn feed_local(pool: PoolHandle, tx: mpsc::Sender<Feed>, stop: CancellationToken) {
    // Subscribe before taking the snapshot so nothing falls between them.
    let mut rx = pool.subscribe();
    if tx.send(Feed::Snapshot(pool.snapshot())).await.is_err() {
        return;
    }
    let mut refresh = tokio::time::interval(SNAPSHOT_EVERY);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut active = false;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => match e {
                Ok(event) => {
                    active = true;
                    Feed::Event(event)
                }
                Err(RecvError::Lagged(_)) => {
                    active = false;
                    Feed::Snapshot(pool.snapshot())
                }
                Err(RecvError::Closed) => return,
            },
            _ = refresh.tick() => {
                if !std::mem::take(&mut active) {
                    continue;
                }
                Feed::Snapshot(pool.snapshot())
            }
        };
        let sent = tokio::select! {
            _ = stop.cancelled() => return,
            r = tx.send(msg) => r,
        };
        if sent.is_err() {
            return;
        }
    }
}
