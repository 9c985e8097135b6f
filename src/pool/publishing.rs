//! The event bus: subscribing, the gateway's reports (a finished
//! request, a rotation, a notice), and what follows a credential's
//! change (republish, wake waiters and the clock, save, share).

use super::*;

impl PoolHandle {
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.shell.events.subscribe()
    }

    /// Every event but [`Event::Request`]: what changes in the pool, its
    /// providers and the gateway, without a wake-up per finished request.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Event> {
        self.shell.changes.subscribe()
    }

    /// A sender for other parts (the gateway) that publish on the same bus.
    pub fn publish(&self, event: Event) {
        if !matches!(event, Event::Request { .. }) && self.shell.changes.receiver_count() > 0 {
            let _ = self.shell.changes.send(event.clone());
        }
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
        // Said here rather than by the headless log's task, which would
        // otherwise wake for every request (see `subscribe_changes`).
        tracing::debug!(
            "request {} {} {} → {} via {} in {:.0}ms",
            record.id,
            record.model,
            if record.stream { "stream" } else { "plain" },
            record.status,
            record.path.join(" → "),
            record.latency_ms
        );
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pool() -> PoolHandle {
        let toml = "listen = \"127.0.0.1:0\"\n[[provider]]\nname = \"p\"\nkind = \"openai\"\n\
                    base_url = \"http://127.0.0.1:9\"\n[[credential]]\nname = \"a\"\napi_key = \"k-a\"\n";
        let mut config = Config::parse(toml, "t.toml", Path::new("."), &|_| None).unwrap();
        config.state_file = None;
        PoolHandle::new(&config, crate::sim::test_client()).0
    }

    #[test]
    fn the_changes_bus_carries_everything_but_finished_requests() {
        let pool = pool();
        let mut all = pool.subscribe();
        let mut changes = pool.subscribe_changes();
        pool.finish(crate::events::fixtures::request(1, 0, &["a"], 200));
        pool.notice(Level::Info, "hello".into());
        pool.rotation("a", None, "429");
        assert!(matches!(all.try_recv(), Ok(Event::Request { .. })));
        assert!(matches!(all.try_recv(), Ok(Event::Notice { .. })));
        assert!(matches!(all.try_recv(), Ok(Event::Rotation { .. })));
        match changes.try_recv() {
            Ok(Event::Notice { message, .. }) => assert_eq!(message, "hello"),
            other => panic!("expected the notice first, got {other:?}"),
        }
        assert!(matches!(changes.try_recv(), Ok(Event::Rotation { .. })));
        assert!(
            changes.try_recv().is_err(),
            "nothing else on the changes bus"
        );
    }
}
