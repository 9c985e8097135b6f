//! Operator commands (disable, enable, next, rotate, refresh, probe),
//! from the admin API and the dashboard alike.

use super::store::Op;
use super::*;

impl PoolHandle {
    /// Runs an operator command. The admin API and the dashboard both come
    /// here, so an action means the same wherever it is taken.
    pub async fn command(&self, cmd: Command) -> Result<String, CommandError> {
        let generation = self.current();
        let find = |name: &str| {
            lock(&generation.core)
                .find(name)
                .ok_or_else(|| CommandError::UnknownCredential(name.chars().take(64).collect()))
        };
        let now = Instant::now();
        let message = match &cmd {
            Command::Disable(name) => {
                let i = find(name)?;
                if let Some((g, j, (before, after))) = self.apply(&generation, i, |core, i| {
                    let before = core.creds[i].state(now);
                    core.set_disabled(i, true);
                    (before, core.creds[i].state(now))
                }) {
                    self.changed(&g, j, before, after, true);
                }
                format!("disabled {name}")
            }
            Command::Enable(name) => {
                let i = find(name)?;
                let mut after = State::Ready;
                if let Some((g, j, (before, a))) = self.apply(&generation, i, |core, i| {
                    let before = core.creds[i].state(now);
                    core.set_disabled(i, false);
                    core.probe_now(i, now);
                    (before, core.creds[i].state(now))
                }) {
                    after = a;
                    self.changed(&g, j, before, after, true);
                }
                self.shell.clock.notify_one();
                match after {
                    State::Ready => format!("enabled {name}"),
                    other => format!(
                        "enabled {name} (still {}; it comes back by itself)",
                        other.as_str()
                    ),
                }
            }
            Command::Refresh(name) => {
                let i = find(name)?;
                if generation.specs()[i].auth.refreshes() {
                    match self
                        .refresh(&generation, i, tokens::Mode::Force, true)
                        .await
                    {
                        Ok(_) => {
                            // A refresh that works proves the token endpoint;
                            // give a failed credential its probe now.
                            let now = Instant::now();
                            self.apply(&generation, i, |core, i| core.probe_now(i, now));
                            self.shell.clock.notify_one();
                            format!("refreshed the access token of {name}")
                        }
                        Err(e) => {
                            return Err(CommandError::Failed(format!(
                                "refresh of {name} failed: {}",
                                e.message
                            )));
                        }
                    }
                } else {
                    self.probe_command(&generation, i, name, false).await?
                }
            }
            Command::Probe(name) => {
                let i = find(name)?;
                self.probe_command(&generation, i, name, true).await?
            }
            Command::UseNext(name) => {
                let i = find(name)?;
                let state = {
                    let mut core = lock(&generation.core);
                    core.use_next(i);
                    core.creds[i].state(now)
                };
                self.publish_credential(&generation, i);
                match state {
                    State::Ready => format!("{name} will serve the next request"),
                    other => format!(
                        "{name} will serve the next request once it is ready (now {})",
                        other.as_str()
                    ),
                }
            }
            Command::Rotate => {
                let next = {
                    let mut core = lock(&generation.core);
                    let mut next = None;
                    for p in 0..generation.providers().len() {
                        let n = core.rotate(p, now);
                        if p == 0 {
                            next = n.map(|i| core.creds[i].name.clone());
                        }
                    }
                    next
                };
                match next {
                    Some(n) => format!("rotated; next is {n}"),
                    None => "rotated; no credential is ready".to_string(),
                }
            }
        };
        // Every replica does what this one's operator did.
        match &cmd {
            Command::Disable(name) => self.share_disabled(name, true).await,
            Command::Enable(name) => self.share_disabled(name, false).await,
            Command::Rotate => self.share_op(Op::Rotate).await,
            Command::UseNext(name) => {
                self.share_op(Op::UseNext {
                    credential: name.clone(),
                })
                .await
            }
            Command::Probe(name) => {
                self.share_op(Op::Probe {
                    credential: name.clone(),
                })
                .await
            }
            Command::Refresh(_) => {}
        }
        // An acknowledged operator action survives a crash the moment after:
        // write it now rather than after the writer's debounce.
        if matches!(cmd, Command::Disable(_) | Command::Enable(_))
            && let Err(e) = self.save().await
        {
            self.notice(Level::Error, e.to_string());
        }
        self.notice(Level::Info, format!("operator: {message}"));
        Ok(message)
    }

    /// An operator's probe: optionally forget the consecutive failures
    /// first, then one probe now, inline, so the answer says how it went.
    async fn probe_command(
        &self,
        generation: &Arc<Generation>,
        i: usize,
        name: &str,
        clear_failures: bool,
    ) -> Result<String, CommandError> {
        let cleared = {
            let mut core = lock(&generation.core);
            if core.creds[i].probing {
                return Err(CommandError::Failed(format!(
                    "a probe of {name} is already running"
                )));
            }
            core.creds[i].probing = true;
            let cleared = std::mem::take(&mut core.creds[i].failures);
            if !clear_failures {
                core.creds[i].failures = cleared;
            }
            cleared
        };
        let prefix = if clear_failures && cleared > 0 {
            format!("cleared {cleared} failure(s) of {name}; ")
        } else {
            String::new()
        };
        match self.run_probe(generation, i).await {
            Ok(()) => Ok(format!("{prefix}probed {name}: it answers")),
            Err(e) => Err(CommandError::Failed(format!(
                "{prefix}probe of {name} failed: {e}"
            ))),
        }
    }
}
