//! Saving the pool to the state file (debounced, from the current
//! generation) and restoring it at start.

use super::*;

impl PoolHandle {
    pub(super) async fn writer_task(self, cancel: CancellationToken) {
        if self.shell.state_file.is_none() {
            return;
        }
        // Usage changes with every answer: it is written at most once a
        // USAGE_SAVE_EVERY, not on each one.
        let mut usage_tick = tokio::time::interval(USAGE_SAVE_EVERY);
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.shell.dirty.notified() => {}
                _ = usage_tick.tick() => {
                    if !self.shell.usage_dirty.load(Ordering::Relaxed) {
                        continue;
                    }
                }
            }
            self.shell.usage_dirty.store(false, Ordering::Relaxed);
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SAVE_DEBOUNCE) => {}
            }
            if let Err(e) = self.save().await {
                self.notice(Level::Error, e.to_string());
            }
        }
    }

    /// Writes the state file now (no-op without one). Always from the
    /// current generation, read after the writer lock is taken, so an older
    /// generation never overwrites newer state (a rotated refresh token
    /// above all).
    pub async fn save(&self) -> Result<(), persist::PersistError> {
        let Some(path) = self.shell.state_file.clone() else {
            return Ok(());
        };
        let _writer = self.shell.writer.lock().await;
        let state = self.state_file_contents();
        tokio::task::spawn_blocking(move || persist::save(&path, &state))
            .await
            .unwrap_or_else(|e| {
                Err(persist::PersistError::Write {
                    path: "state file".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    fn state_file_contents(&self) -> persist::StateFile {
        let generation = self.current();
        let rotated: Vec<Option<Secret>> = generation.tokens.iter().map(|t| t.rotated()).collect();
        let now = Instant::now();
        let wall = SystemTime::now();
        let core = lock(&generation.core);
        let mut file = persist::StateFile {
            version: persist::VERSION,
            saved_at_ms: unix_ms(wall),
            ..Default::default()
        };
        for (i, c) in core.creds.iter().enumerate() {
            let spec = &generation.specs()[i];
            let cooldown =
                c.cooldown
                    .as_ref()
                    .filter(|cd| cd.until > now)
                    .map(|cd| persist::SavedCooldown {
                        until_ms: unix_ms(wall + (cd.until - now)),
                        kind: match cd.kind {
                            CooldownKind::RateLimited => "cooling".into(),
                            CooldownKind::Quota => "exhausted".into(),
                        },
                        reason: cd.reason.clone(),
                    });
            file.credentials.insert(
                spec.name.clone(),
                persist::SavedCredential {
                    fingerprint: spec.auth.identity().fingerprint(),
                    disabled: c.disabled,
                    disabled_reason: c.disabled.then(|| c.disabled_reason.clone()).flatten(),
                    failures: c.failures,
                    failed_reason: c.failed.as_ref().map(|(r, _)| r.clone()),
                    cooldown,
                    refresh_token: rotated[i].as_ref().map(|s| s.expose().to_string()),
                    usage: (!c.stats.usage.is_empty()).then(|| c.stats.usage.saved()),
                },
            );
        }
        file
    }

    /// Applies the state file at startup. Returns lines for the report.
    pub(super) fn restore(&self, path: Option<&std::path::Path>, readonly: bool) -> Vec<String> {
        let mut notes = Vec::new();
        let Some(path) = path else {
            return notes;
        };
        let file = match persist::load(path, !readonly) {
            Ok(persist::Loaded::Missing) => return notes,
            Ok(persist::Loaded::Ok(f)) => f,
            Ok(persist::Loaded::MovedAside { to, why }) => {
                notes.push(format!(
                    "warning: state file {} was unreadable ({why}); moved it to {} and started fresh",
                    path.display(),
                    to.display()
                ));
                return notes;
            }
            Ok(persist::Loaded::Unreadable { why }) => {
                notes.push(format!(
                    "warning: state file {} is unreadable ({why}); serve would move it aside and start fresh",
                    path.display()
                ));
                return notes;
            }
            Err(e) => {
                notes.push(format!("warning: {e}; starting without saved state"));
                return notes;
            }
        };
        let generation = self.current();
        let now = Instant::now();
        let wall_ms = unix_ms(SystemTime::now());
        let mut restored = 0;
        let mut core = lock(&generation.core);
        let max_failures = core.settings.max_failures;
        for (i, spec) in generation.specs().iter().enumerate() {
            let Some(saved) = file.credentials.get(&spec.name) else {
                continue;
            };
            if saved.fingerprint != spec.auth.identity().fingerprint() {
                notes.push(format!(
                    "{}: its secret changed since the state was saved; starting it fresh",
                    spec.name
                ));
                continue;
            }
            restored += 1;
            let c = &mut core.creds[i];
            c.disabled = saved.disabled;
            c.disabled_reason = saved.disabled_reason.clone().filter(|_| saved.disabled);
            c.failures = saved.failures;
            if saved.failed_reason.is_some() || saved.failures >= max_failures {
                let reason = saved
                    .failed_reason
                    .clone()
                    .unwrap_or_else(|| format!("{} consecutive failures", saved.failures));
                // Probe right away: the restart may have fixed it.
                c.failed = Some((reason, now));
            }
            if let Some(cd) = &saved.cooldown
                && cd.until_ms > wall_ms
            {
                c.cooldown = Some(Cooldown {
                    until: now + Duration::from_millis(cd.until_ms - wall_ms),
                    kind: if cd.kind == "exhausted" {
                        CooldownKind::Quota
                    } else {
                        CooldownKind::RateLimited
                    },
                    reason: cd.reason.clone(),
                });
            }
            if let Some(rt) = &saved.refresh_token {
                generation.tokens[i].restore_rotated(Secret::new(rt.as_str()));
            }
            if let Some(usage) = &saved.usage {
                c.stats.usage = usage::UsageCounters::from_saved(usage);
            }
        }
        if restored > 0 {
            notes.push(format!(
                "restored saved state of {restored} credential(s) from {}",
                path.display()
            ));
        }
        notes
    }
}
