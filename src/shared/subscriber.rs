//! The background task that holds the pub/sub subscription: it turns
//! messages into [`Change`]s, pings both connections every [`HEARTBEAT`],
//! and after losing either reconnects with backoff and sends
//! [`Change::Resync`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::wire::Message;
use super::{COMMAND_TIMEOUT, Change, HEARTBEAT, Health, is_connection_error};

/// Reconnect backoff: doubles from the first to the last, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A fresh pub/sub connection subscribed to `channel`, within
/// [`COMMAND_TIMEOUT`] for each step.
pub(super) async fn subscribe(client: &redis::Client, channel: &str) -> redis::RedisResult<PubSub> {
    let mut pubsub = timeout(COMMAND_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| timed_out("connecting for pub/sub"))??;
    timeout(COMMAND_TIMEOUT, pubsub.subscribe(channel))
        .await
        .map_err(|_| timed_out("SUBSCRIBE"))??;
    Ok(pubsub)
}

fn timed_out(what: &'static str) -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, what).into()
}

pub(super) struct Subscriber {
    pub client: redis::Client,
    /// The store's command connection, pinged with the heartbeat so that
    /// `healthy()` is true only when commands work too, and so that the
    /// manager notices a dead connection (it reconnects on a failure).
    pub con: ConnectionManager,
    pub channel: String,
    pub id: String,
    pub url: String,
    pub health: Arc<Health>,
    pub changes: broadcast::Sender<Change>,
    pub stop: CancellationToken,
}

/// Why listening ended.
enum Ended {
    Stopped,
    Lost(String),
}

impl Subscriber {
    pub(super) async fn run(self, first: PubSub) {
        let mut pubsub = Some(first);
        let mut backoff = BACKOFF_MIN;
        loop {
            let current = match pubsub.take() {
                Some(p) => p,
                None => {
                    let attempt = tokio::select! {
                        _ = self.stop.cancelled() => return,
                        r = subscribe(&self.client, &self.channel) => r,
                    };
                    match attempt {
                        Ok(p) => {
                            // Resync only once commands work too, so the
                            // re-read it triggers can succeed.
                            if !self.commands_back().await {
                                drop(p);
                                if !self.pause(&mut backoff).await {
                                    return;
                                }
                                continue;
                            }
                            backoff = BACKOFF_MIN;
                            self.health.subscription.store(true, Ordering::Relaxed);
                            tracing::info!(url = %self.url, "shared state: Redis is back; resyncing");
                            let _ = self.changes.send(Change::Resync);
                            p
                        }
                        Err(e) => {
                            tracing::debug!(url = %self.url, "shared state: reconnect failed: {e}");
                            if !self.pause(&mut backoff).await {
                                return;
                            }
                            continue;
                        }
                    }
                }
            };
            match self.listen(current).await {
                Ended::Stopped => return,
                Ended::Lost(why) => {
                    self.health.subscription.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        url = %self.url,
                        "shared state: lost the Redis subscription ({why}); reconnecting"
                    );
                    if !self.pause(&mut backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Forwards messages until the connection fails or the store is gone.
    async fn listen(&self, pubsub: PubSub) -> Ended {
        let (mut sink, mut stream) = pubsub.split();
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beat.tick().await;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stopped,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Ended::Lost("connection closed".into());
                    };
                    if let Some(change) = Message::decode(msg.get_payload_bytes(), &self.id) {
                        let _ = self.changes.send(change);
                    }
                }
                _ = beat.tick() => {
                    match timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Ended::Lost(e.to_string()),
                        Err(_) => return Ended::Lost("ping timed out".into()),
                    }
                    self.ping_commands().await;
                }
            }
        }
    }

    /// One PING on the command connection, recorded in the health.
    async fn ping_commands(&self) -> bool {
        let mut con = self.con.clone();
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
        let ok = match &r {
            Ok(_) => true,
            Err(e) => !is_connection_error(e),
        };
        self.health.commands.store(ok, Ordering::Relaxed);
        ok
    }

    /// Pings commands a few times: the manager's first command after an
    /// outage may fail on the old connection and only then reconnect.
    async fn commands_back(&self) -> bool {
        for _ in 0..5 {
            if self.ping_commands().await {
                return true;
            }
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(BACKOFF_MIN) => {}
            }
        }
        false
    }

    /// Sleeps the backoff (with jitter) and doubles it; false if stopped.
    async fn pause(&self, backoff: &mut Duration) -> bool {
        let ms = backoff.as_millis() as u64;
        let wait = Duration::from_millis(ms / 2 + rand::random::<u64>() % (ms / 2 + 1));
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}
