//! Hot reload of the config file: on `POST /admin/reload`, on SIGHUP (see
//! `cli`), and when the file's content changes (polled). A config that does
//! not load is refused with its error and the running one keeps serving; one
//! that does becomes the pool's next generation (see `pool::reload`), and
//! requests in flight finish on the one they started with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::AppState;
use crate::config::{Config, ConfigError, WatchedFile, content_hash};
use crate::events::Level;
use crate::pool::ReloadSummary;

/// How often the watcher reads the config file and its `file:` secrets.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Where a gateway's config comes from, for reloading it.
#[derive(Debug, Clone)]
pub struct ReloadFrom {
    pub path: PathBuf,
    /// `--listen` from the command line: it overrides every loaded
    /// config's `listen`, as it did at start.
    pub listen_override: Option<SocketAddr>,
    /// Poll the file and reload when its content changes.
    pub watch: bool,
}

/// The reload machinery of one gateway.
pub struct Reloader {
    from: ReloadFrom,
    /// What the process started with and cannot change while it runs: a
    /// new config's values for these are reported, not applied.
    fixed: Fixed,
    /// Hash of the file content the last reload read (or the start): the
    /// watcher reloads when the file differs, and a broken file is refused
    /// once, not every second.
    seen: Mutex<Option<u64>>,
    /// The running config's `file:` secrets and the content it read: the
    /// watcher reloads when one changes. An entry takes the new content's
    /// hash as soon as the watcher sees it, so a secret file that breaks
    /// the config is refused once, not every second.
    seen_secrets: Mutex<Vec<WatchedFile>>,
    /// One reload at a time (the watcher, SIGHUP and the admin API may
    /// all ask at once).
    gate: tokio::sync::Mutex<()>,
}

struct Fixed {
    listen: SocketAddr,
    state_file: Option<PathBuf>,
    max_concurrency: u32,
    connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "this gateway was not started from a config file (the environment quick start or a \
         built-in config); there is nothing to reload"
    )]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Reloader {
    /// `config` is the one the gateway starts with (after overrides).
    pub fn new(from: ReloadFrom, config: &Config) -> Reloader {
        // The content the running config came from, as far as we can tell:
        // the file now (it was read a moment ago).
        let seen = std::fs::read(&from.path).ok().map(|b| content_hash(&b));
        Reloader {
            fixed: Fixed {
                listen: config.listen,
                state_file: config.state_file.clone(),
                max_concurrency: config.gateway.max_concurrency,
                connect_timeout: config.gateway.connect_timeout,
            },
            from,
            seen: Mutex::new(seen),
            seen_secrets: Mutex::new(config.secret_files.clone()),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.from.path
    }

    fn set_seen(&self, hash: u64) {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
    }

    fn seen(&self) -> Option<u64> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn secrets(&self) -> std::sync::MutexGuard<'_, Vec<WatchedFile>> {
        self.seen_secrets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a `file:` secret of the running config changed since it was
    /// read (a file that cannot be read now is skipped, like the config
    /// file). Marks what it found as seen.
    async fn secret_changed(&self) -> bool {
        let watched = self.secrets().clone();
        let mut changed = false;
        for file in watched {
            let Ok(bytes) = tokio::fs::read(&file.path).await else {
                continue;
            };
            let hash = content_hash(&bytes);
            if hash != file.hash {
                changed = true;
                if let Some(entry) = self.secrets().iter_mut().find(|f| f.path == file.path) {
                    entry.hash = hash;
                }
            }
        }
        changed
    }

    /// Reads and validates the file, and keeps what cannot change from the
    /// running config. Returns the config to swap in and the settings that
    /// need a restart.
    async fn load(&self) -> Result<(Config, Vec<String>), ConfigError> {
        let path = &self.from.path;
        let read_error = |source| ConfigError::Read {
            file: path.display().to_string(),
            source,
        };
        let bytes = tokio::fs::read(path).await.map_err(read_error)?;
        self.set_seen(content_hash(&bytes));
        let text = String::from_utf8(bytes)
            .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&text, &path.display().to_string(), base, &|k| {
            std::env::var(k).ok()
        })?;
        if let Some(listen) = self.from.listen_override {
            config.listen = listen;
        }
        let fixed = &self.fixed;
        let mut restart = Vec::new();
        if config.listen != fixed.listen {
            restart.push(format!("listen ({} → {})", fixed.listen, config.listen));
            config.listen = fixed.listen;
        }
        if config.state_file != fixed.state_file {
            restart.push("state_file".to_string());
            config.state_file = fixed.state_file.clone();
        }
        if config.gateway.max_concurrency != fixed.max_concurrency {
            restart.push(format!(
                "gateway.max_concurrency ({} → {})",
                fixed.max_concurrency, config.gateway.max_concurrency
            ));
            config.gateway.max_concurrency = fixed.max_concurrency;
        }
        if config.gateway.connect_timeout != fixed.connect_timeout {
            restart.push("gateway.connect_timeout".to_string());
            config.gateway.connect_timeout = fixed.connect_timeout;
        }
        // Checked against the address actually served: dropping the client
        // keys of a public listener is refused like at start.
        config.check_exposure()?;
        *self.secrets() = config.secret_files.clone();
        Ok((config, restart))
    }
}

/// Reloads the config file of the gateway behind `state`. `trigger` says
/// what asked ("SIGHUP", "admin API", "file change") in the notice every
/// reload publishes, accepted or refused.
pub async fn reload(state: &AppState, trigger: &str) -> Result<ReloadSummary, ReloadError> {
    let Some(reloader) = &state.reload else {
        return Err(ReloadError::NoFile);
    };
    let _one = reloader.gate.lock().await;
    match reloader.load().await {
        Ok((config, restart_needed)) => {
            let mut summary = state.pool.reload(config);
            summary.restart_needed = restart_needed;
            let current = state.pool.current();
            state.gemini.retain(current.providers());
            state.pool.notice(
                Level::Info,
                format!(
                    "config reloaded ({trigger}) from {}: {}",
                    reloader.path().display(),
                    summary.line()
                ),
            );
            for note in &summary.notes {
                state.pool.notice(Level::Info, note.clone());
            }
            if !summary.restart_needed.is_empty() {
                state.pool.notice(
                    Level::Warn,
                    format!(
                        "changed in the config but kept until a restart: {}",
                        summary.restart_needed.join(", ")
                    ),
                );
            }
            Ok(summary)
        }
        Err(e) => {
            state.pool.notice(
                Level::Error,
                format!("config reload ({trigger}) refused, the running config stays: {e}"),
            );
            Err(e.into())
        }
    }
}

/// Polls the config file and its `file:` secrets every [`WATCH_EVERY`] and
/// reloads when one's content changed. A file that cannot be read for a moment (an editor replacing
/// it) is skipped until it can.
pub async fn watch(state: std::sync::Arc<AppState>, stop: CancellationToken) {
    let Some(reloader) = &state.reload else {
        return;
    };
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(bytes) = tokio::fs::read(reloader.path()).await else {
            continue;
        };
        // The outcome is in the notice `reload` publishes.
        if reloader.seen() != Some(content_hash(&bytes)) {
            let _ = reload(&state, "file change").await;
        } else if reloader.secret_changed().await {
            let _ = reload(&state, "secret file change").await;
        }
    }
}
