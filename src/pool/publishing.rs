//! The event bus: subscribing, the gateway's reports (a finished
//! request, a rotation, a notice), and what follows a credential's
//! change (republish, wake waiters and the clock, save, share).

use super::*;

impl PoolHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shell.events.subscribe()
    }

    /// A sender for other parts (the gateway) that publish on the same bus.
    pub fn publish(&self, event: Event) {
        let _ = self.shell.events.send(event);
    }

    /// Publishes a finished client request and counts it.
    pub fn finish(&self, record: RequestRecord) {
        let totals = self.with_current(|_, core| {
            core.totals.requests += 1;
            if (200..300).contains(&record.status) {
                core.totals.succeeded += 1;
            }
            if record.status == 429 {
                core.totals.client_429 += 1;
            }
            core.totals
        });
        if let Some(client) = &record.client
            && (200..300).contains(&record.status)
        {
            lock(&self.shell.clients)
                .entry(client.clone())
                .or_default()
                .add(record.tokens);
        }
        self.shell.metrics.request(&record);
        self.publish(Event::Request {
            request: Arc::new(record),
            totals,
        });
    }

    /// A request moved on from `from` (to `to`, if anything was left).
    pub fn rotation(&self, from: &str, to: Option<&str>, reason: &str) {
        self.publish(Event::Rotation {
            at_ms: unix_ms(SystemTime::now()),
            from: from.to_string(),
            to: to.map(str::to_string),
            reason: reason.to_string(),
        });
    }

    /// Publishes a line for the operator (the dashboard's log pane, the
    /// headless log).
    pub fn notice(&self, level: Level, message: String) {
        self.publish(Event::Notice {
            at_ms: unix_ms(SystemTime::now()),
            level,
            message,
        });
    }

    /// After any change to credential `i` of `generation`: tell
    /// subscribers, wake waiters and the clock, schedule a save. Changes to
    /// a retired generation are not published (nobody shows it).
    pub(super) fn changed(
        &self,
        generation: &Generation,
        i: usize,
        before: State,
        after: State,
        persist_anyway: bool,
    ) {
        if after == State::Ready {
            // One waiting request gets the chance; if it succeeds, its
            // success wakes the next (see the dispatcher).
            self.shell.ready.notify_one();
        }
        if generation.is_retired() {
            return;
        }
        if before != after {
            self.publish_credential(generation, i);
            self.shell.clock.notify_one();
        }
        if before != after || persist_anyway {
            self.shell.dirty.notify_one();
            self.share_change(generation, i, persist_anyway);
        }
    }

    pub(super) fn publish_credential(&self, generation: &Generation, i: usize) {
        if self.shell.events.receiver_count() == 0 || generation.is_retired() {
            return;
        }
        let expiry = generation.tokens[i].expiry();
        let view = {
            let core = lock(&generation.core);
            view(
                generation,
                &core,
                i,
                expiry,
                Instant::now(),
                SystemTime::now(),
            )
        };
        self.publish(Event::Credential {
            credential: Arc::new(view),
        });
    }
}
