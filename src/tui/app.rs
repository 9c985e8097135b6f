//! The dashboard's own thread: owns the terminal, drains the feed, reads
//! keys, draws at most 30 frames a second. The proxy runs on the tokio
//! runtime's threads and never waits for this one: commands are spawned
//! onto the runtime, events arrive through a bounded channel.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{self, Event as TermEvent};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use jiff::tz::TimeZone;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_util::sync::CancellationToken;
use tui_logger::{TuiWidgetEvent, TuiWidgetState};

use super::keys::{self, Effect, LOG_LEVELS, LogPage, Ui};
use super::source::{Feed, Source};
use super::state::Dashboard;
use super::view::{self, Context};
use crate::events::{Level, unix_ms};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(33);
/// Redraw at least this often with nothing new, for countdowns and the log
/// pane.
const IDLE_REDRAW: Duration = Duration::from_millis(250);

/// How the dashboard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The operator pressed `q` or Ctrl-C.
    Quit,
    /// `stop` was cancelled (SIGTERM, SIGINT, the demo's end).
    Stopped,
    /// The feed ended (the local pool went away).
    FeedClosed,
}

/// Panics seen on other threads while the dashboard owns the terminal.
static PANICS: AtomicU64 = AtomicU64::new(0);
/// The thread that owns the terminal: only its panic restores the screen.
static TERMINAL_THREAD: Mutex<Option<ThreadId>> = Mutex::new(None);
static HOOK: OnceLock<()> = OnceLock::new();

/// Panic hook for the whole process, installed once. While the dashboard is
/// up, a panic on its own thread restores the terminal before the message
/// is printed; a panic anywhere else (a proxy task) is logged to the log
/// pane and counted in the header instead of being written over the
/// screen. With no dashboard up, panics print as usual.
fn install_panic_hook() {
    HOOK.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let owner = *TERMINAL_THREAD.lock().unwrap_or_else(|e| e.into_inner());
            match owner {
                Some(id) if id == std::thread::current().id() => {
                    restore_terminal();
                    previous(info);
                }
                Some(_) => {
                    PANICS.fetch_add(1, Ordering::Relaxed);
                    let thread = std::thread::current();
                    tracing::error!(
                        "panic in thread {}: {info}",
                        thread.name().unwrap_or("unnamed")
                    );
                }
                None => previous(info),
            }
        }));
    });
}

fn restore_terminal() {
    let _ = crossterm::terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
}

/// Owns the terminal while alive; restores it on drop, which runs on
/// every way out of [`run`], unwinding included.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        install_panic_hook();
        *TERMINAL_THREAD.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::thread::current().id());
        crossterm::terminal::enable_raw_mode()?;
        let mut out = io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, cursor::Hide) {
            restore_terminal();
            return Err(e);
        }
        let terminal = match Terminal::new(CrosstermBackend::new(out)) {
            Ok(t) => t,
            Err(e) => {
                restore_terminal();
                return Err(e);
            }
        };
        Ok(TerminalGuard { terminal })
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
        *TERMINAL_THREAD.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Runs the dashboard on the calling thread until the operator quits or
/// `stop` is cancelled. The terminal is restored before this returns.
pub fn run(
    source: Arc<Source>,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
) -> io::Result<Exit> {
    let feed_stop = stop.child_token();
    let mut feed = source.spawn_feed(&runtime, feed_stop.clone());
    let result = {
        let mut guard = TerminalGuard::enter()?;
        let mut app = App {
            dashboard: Dashboard::new(source.label()),
            ui: Ui::default(),
            log: log_state(2),
            tz: TimeZone::system(),
        };
        app.run(&mut guard.terminal, &mut feed, &source, &runtime, &stop)
    };
    feed_stop.cancel();
    result
}

fn log_state(level: usize) -> TuiWidgetState {
    TuiWidgetState::new().set_default_display_level(LOG_LEVELS[level])
}

struct App {
    dashboard: Dashboard,
    ui: Ui,
    log: TuiWidgetState,
    tz: TimeZone,
}

impl App {
    fn run(
        &mut self,
        terminal: &mut Terminal<CrosstermBackend<Stdout>>,
        feed: &mut tokio::sync::mpsc::Receiver<Feed>,
        source: &Arc<Source>,
        runtime: &tokio::runtime::Handle,
        stop: &CancellationToken,
    ) -> io::Result<Exit> {
        let mut last_draw: Option<Instant> = None;
        let mut dirty = true;
        loop {
            if stop.is_cancelled() {
                return Ok(Exit::Stopped);
            }
            // Wait for a key at most one frame: the feed is checked at
            // least that often (a keyboard poll cannot wait on the channel
            // too), so events show within a frame and the frame cap holds.
            let since = last_draw.map(|t| t.elapsed()).unwrap_or(IDLE_REDRAW);
            let wait = if dirty {
                FRAME.saturating_sub(since)
            } else {
                FRAME
            };
            // Take every input event that is waiting, then draw once.
            let mut ready = event::poll(wait)?;
            while ready {
                let input = event::read()?;
                if self.input(input, source, runtime) {
                    return Ok(Exit::Quit);
                }
                dirty = true;
                ready = event::poll(Duration::ZERO)?;
            }
            // Drain everything the source sent, then draw once.
            let now_ms = unix_ms(SystemTime::now());
            loop {
                match feed.try_recv() {
                    Ok(msg) => {
                        dirty = true;
                        if let Some((level, line)) = self.dashboard.apply(msg, now_ms) {
                            log_line(level, &line);
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(Exit::FeedClosed),
                }
            }
            let since = last_draw.map(|t| t.elapsed()).unwrap_or(IDLE_REDRAW);
            if (dirty && since >= FRAME) || since >= IDLE_REDRAW {
                self.dashboard.tick(now_ms);
                self.dashboard.panics = PANICS.load(Ordering::Relaxed);
                let cx = Context {
                    now_ms,
                    tz: &self.tz,
                    log: Some(&self.log),
                };
                terminal.draw(|f| view::render(f, &self.dashboard, &self.ui, &cx))?;
                last_draw = Some(Instant::now());
                dirty = false;
            }
        }
    }

    /// Handles one input event; true means quit.
    fn input(
        &mut self,
        input: TermEvent,
        source: &Arc<Source>,
        runtime: &tokio::runtime::Handle,
    ) -> bool {
        // Resizes only need a redraw; mouse, focus and paste mean nothing.
        let TermEvent::Key(key) = input else {
            return false;
        };
        let Some(action) = keys::action(key, &self.ui) else {
            return false;
        };
        let level_before = self.ui.log_level;
        let effect = self.ui.apply(action, &self.dashboard);
        if level_before != self.ui.log_level {
            self.log = log_state(self.ui.log_level);
        }
        effect.is_some_and(|e| self.effect(e, source, runtime))
    }

    /// Carries out an effect; true means quit.
    fn effect(
        &mut self,
        effect: Effect,
        source: &Arc<Source>,
        runtime: &tokio::runtime::Handle,
    ) -> bool {
        match effect {
            Effect::Quit => return true,
            Effect::Refused(why) => tracing::warn!("{why}"),
            Effect::LogPage(page) => self.log.transition(match page {
                LogPage::Up => TuiWidgetEvent::PrevPageKey,
                LogPage::Down => TuiWidgetEvent::NextPageKey,
                LogPage::Live => TuiWidgetEvent::EscapeKey,
            }),
            Effect::Command(cmd) => {
                let source = source.clone();
                // The pool confirms a command with an "operator: …" notice,
                // which reaches the log pane through the feed (proof it got
                // there); only a failure is reported from here.
                runtime.spawn(async move {
                    let what = describe(&cmd);
                    if let Err(e) = source.command(cmd).await {
                        tracing::warn!("{what} failed: {e}");
                    }
                });
            }
        }
        false
    }
}

fn describe(cmd: &crate::events::Command) -> String {
    use crate::events::Command as C;
    match cmd {
        C::Disable(n) => format!("disable {n}"),
        C::Enable(n) => format!("enable {n}"),
        C::Refresh(n) => format!("refresh {n}"),
        C::Probe(n) => format!("probe {n}"),
        C::UseNext(n) => format!("use {n} next"),
        C::Rotate => "rotate".to_string(),
    }
}

fn log_line(level: Level, line: &str) {
    match level {
        Level::Info => tracing::info!("{line}"),
        Level::Warn => tracing::warn!("{line}"),
        Level::Error => tracing::error!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_off_the_dashboard_thread_is_counted_not_printed_over_the_screen() {
        install_panic_hook();
        let before = PANICS.load(Ordering::Relaxed);
        // This thread plays the dashboard's; a proxy task panics elsewhere.
        *TERMINAL_THREAD.lock().unwrap() = Some(std::thread::current().id());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let joined = rt.block_on(async {
            tokio::spawn(async {
                panic!("a proxy task fails");
            })
            .await
        });
        *TERMINAL_THREAD.lock().unwrap() = None;
        assert!(joined.unwrap_err().is_panic());
        assert_eq!(PANICS.load(Ordering::Relaxed), before + 1);
    }
}
