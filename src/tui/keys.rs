//! Input → intent → effect. A key becomes an [`Action`] (keybindings are
//! data: [`KEYS`] drives both the mapping's help and the footer); the
//! action changes the [`Ui`] and may yield an [`Effect`] for the outside
//! world (a pool command, quitting, a log-pane movement).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::Dashboard;
use crate::events::{Command, State};

/// What the operator meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Disable the selected credential, or enable it if disabled.
    ToggleDisabled,
    Refresh,
    UseNext,
    Rotate,
    /// Clear its failures and probe now.
    Probe,
    FocusNext,
    FocusPrev,
    StartFilter,
    FilterInput(char),
    FilterBackspace,
    /// Keep the filter, leave the input.
    FilterDone,
    /// Drop the filter.
    FilterClear,
    /// Log pane: show one level more / less.
    LogMore,
    LogLess,
    Help,
    CloseHelp,
    Quit,
}

/// What an action asks of the world outside the dashboard state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Command(Command),
    Quit,
    /// Scroll the log pane (tui-logger's page mode).
    LogPage(LogPage),
    /// Nothing can be done; say why in the log pane.
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogPage {
    Up,
    Down,
    /// Back to following the newest lines.
    Live,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pane {
    #[default]
    Credentials,
    Requests,
    Log,
}

impl Pane {
    const ORDER: [Pane; 3] = [Pane::Credentials, Pane::Requests, Pane::Log];

    fn step(self, by: isize) -> Pane {
        let i = Self::ORDER.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Self::ORDER[(i + by).rem_euclid(Self::ORDER.len() as isize) as usize]
    }
}

/// Log levels the pane can show, least to most.
pub const LOG_LEVELS: [tui_logger::LevelFilter; 5] = [
    tui_logger::LevelFilter::Error,
    tui_logger::LevelFilter::Warn,
    tui_logger::LevelFilter::Info,
    tui_logger::LevelFilter::Debug,
    tui_logger::LevelFilter::Trace,
];

/// The dashboard's own state: what is selected, focused, filtered, open.
#[derive(Debug, Clone)]
pub struct Ui {
    pub focus: Pane,
    /// Selected credential, by name, so the selection survives a resync
    /// that reorders or adds rows.
    pub selected: Option<String>,
    pub filter: String,
    /// The filter input has the keyboard.
    pub filtering: bool,
    pub help: bool,
    /// Rows scrolled back from the newest in the requests pane.
    pub requests_back: usize,
    /// Index into [`LOG_LEVELS`] of the most verbose level shown.
    pub log_level: usize,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            focus: Pane::Credentials,
            selected: None,
            filter: String::new(),
            filtering: false,
            help: false,
            requests_back: 0,
            log_level: 2,
        }
    }
}

/// One row of the key table: the keys as shown, what they do, and the
/// footer's word for it. The footer fits as many as the width allows, in
/// this order (help and quit always), so the most used come first.
pub struct KeyHelp {
    pub keys: &'static str,
    pub what: &'static str,
    pub footer: Option<&'static str>,
}

pub const KEYS: &[KeyHelp] = &[
    KeyHelp {
        keys: "d",
        what: "disable the selected credential, or enable it again",
        footer: Some("disable"),
    },
    KeyHelp {
        keys: "r",
        what: "force-refresh its access token (a static key: probe it)",
        footer: Some("refresh"),
    },
    KeyHelp {
        keys: "u",
        what: "use it for the next request",
        footer: Some("next"),
    },
    KeyHelp {
        keys: "n",
        what: "rotate: advance the round-robin cursor",
        footer: Some("rotate"),
    },
    KeyHelp {
        keys: "c",
        what: "clear its failures and probe it now",
        footer: Some("probe"),
    },
    KeyHelp {
        keys: "Tab S-Tab",
        what: "move focus: credentials → requests → log",
        footer: Some("focus"),
    },
    KeyHelp {
        keys: "/",
        what: "filter the table (Enter keeps, Esc clears)",
        footer: Some("filter"),
    },
    KeyHelp {
        keys: "↑/↓ j/k",
        what: "select a credential (or scroll the focused pane)",
        footer: Some("select"),
    },
    KeyHelp {
        keys: "←/→ +/-",
        what: "log pane: show fewer / more levels",
        footer: None,
    },
    KeyHelp {
        keys: "PgUp/PgDn",
        what: "log and requests panes: scroll; Esc follows again",
        footer: None,
    },
    KeyHelp {
        keys: "g/G",
        what: "first / last row",
        footer: None,
    },
    KeyHelp {
        keys: "?",
        what: "this help",
        footer: Some("help"),
    },
    KeyHelp {
        keys: "q Ctrl-C",
        what: "quit: drain in-flight requests, save state",
        footer: Some("quit"),
    },
];

/// Maps a key to an action, given what has the keyboard.
pub fn action(key: KeyEvent, ui: &Ui) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c')) {
        return Some(Action::Quit);
    }
    if ui.help {
        return match key.code {
            KeyCode::Char('q') => Some(Action::Quit),
            _ => Some(Action::CloseHelp),
        };
    }
    if ui.filtering {
        return match key.code {
            KeyCode::Enter => Some(Action::FilterDone),
            KeyCode::Esc => Some(Action::FilterClear),
            KeyCode::Backspace => Some(Action::FilterBackspace),
            KeyCode::Up => Some(Action::Up),
            KeyCode::Down => Some(Action::Down),
            KeyCode::Char(c) if !ctrl => Some(Action::FilterInput(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Action::Top,
        KeyCode::End | KeyCode::Char('G') => Action::Bottom,
        KeyCode::Char('d') => Action::ToggleDisabled,
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('u') => Action::UseNext,
        KeyCode::Char('n') => Action::Rotate,
        KeyCode::Char('c') => Action::Probe,
        KeyCode::Tab => Action::FocusNext,
        KeyCode::BackTab => Action::FocusPrev,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Right | KeyCode::Char('+') => Action::LogMore,
        KeyCode::Left | KeyCode::Char('-') => Action::LogLess,
        KeyCode::Esc if !ui.filter.is_empty() => Action::FilterClear,
        KeyCode::Esc => Action::Bottom,
        KeyCode::Char('?') => Action::Help,
        KeyCode::Char('q') => Action::Quit,
        _ => return None,
    })
}

impl Ui {
    /// The credentials the table shows, in pool order, after the filter.
    pub fn rows<'a>(&self, d: &'a Dashboard) -> Vec<&'a crate::events::CredentialView> {
        let needle = self.filter.to_lowercase();
        d.credentials
            .iter()
            .filter(|c| {
                needle.is_empty()
                    || [&c.name, &c.provider, &c.tier, c.state.as_str()]
                        .iter()
                        .any(|f| f.to_lowercase().contains(&needle))
            })
            .collect()
    }

    /// Index of the selected row among [`Ui::rows`]; the first row when the
    /// selection is gone (filtered out, removed).
    pub fn selected_index(&self, d: &Dashboard) -> Option<usize> {
        let rows = self.rows(d);
        if rows.is_empty() {
            return None;
        }
        Some(
            self.selected
                .as_ref()
                .and_then(|s| rows.iter().position(|c| &c.name == s))
                .unwrap_or(0),
        )
    }

    pub fn selected_name(&self, d: &Dashboard) -> Option<String> {
        let rows = self.rows(d);
        self.selected_index(d).map(|i| rows[i].name.clone())
    }

    fn select_by(&mut self, d: &Dashboard, f: impl Fn(usize, usize) -> usize) {
        let rows = self.rows(d);
        if let Some(i) = self.selected_index(d) {
            let j = f(i, rows.len()).min(rows.len() - 1);
            self.selected = Some(rows[j].name.clone());
        }
    }

    /// Applies an action; returns what the world must do about it.
    pub fn apply(&mut self, action: Action, d: &Dashboard) -> Option<Effect> {
        let on_selected = |make: fn(String) -> Command| -> Option<Effect> {
            match self.selected_name(d) {
                Some(name) => Some(Effect::Command(make(name))),
                None => Some(Effect::Refused("no credential is selected".into())),
            }
        };
        match action {
            Action::Quit => return Some(Effect::Quit),
            Action::Help => self.help = true,
            Action::CloseHelp => self.help = false,
            Action::ToggleDisabled => {
                let name = self.selected_name(d)?;
                let disabled = d
                    .credential(&name)
                    .is_some_and(|c| c.state == State::Disabled);
                return Some(Effect::Command(if disabled {
                    Command::Enable(name)
                } else {
                    Command::Disable(name)
                }));
            }
            Action::Refresh => return on_selected(Command::Refresh),
            Action::UseNext => return on_selected(Command::UseNext),
            Action::Probe => return on_selected(Command::Probe),
            Action::Rotate => return Some(Effect::Command(Command::Rotate)),
            Action::FocusNext => self.focus = self.focus.step(1),
            Action::FocusPrev => self.focus = self.focus.step(-1),
            Action::StartFilter => {
                self.filtering = true;
                self.focus = Pane::Credentials;
            }
            Action::FilterInput(c) => {
                if self.filter.chars().count() < 32 {
                    self.filter.push(c);
                }
            }
            Action::FilterBackspace => {
                self.filter.pop();
            }
            Action::FilterDone => self.filtering = false,
            Action::FilterClear => {
                self.filtering = false;
                self.filter.clear();
            }
            Action::LogMore => self.log_level = (self.log_level + 1).min(LOG_LEVELS.len() - 1),
            Action::LogLess => self.log_level = self.log_level.saturating_sub(1),
            Action::Up | Action::Down | Action::PageUp | Action::PageDown => {
                let (step, page) = match action {
                    Action::Up => (-1, false),
                    Action::Down => (1, false),
                    Action::PageUp => (-10, true),
                    _ => (10, true),
                };
                match self.focus {
                    Pane::Credentials => self.select_by(d, |i, _| i.saturating_add_signed(step)),
                    Pane::Requests => {
                        let max = d.recent.len().saturating_sub(1);
                        self.requests_back =
                            self.requests_back.saturating_add_signed(-step).min(max);
                    }
                    Pane::Log if page => {
                        return Some(Effect::LogPage(if step < 0 {
                            LogPage::Up
                        } else {
                            LogPage::Down
                        }));
                    }
                    Pane::Log => {}
                }
            }
            Action::Top => match self.focus {
                Pane::Credentials => self.select_by(d, |_, _| 0),
                Pane::Requests => self.requests_back = d.recent.len().saturating_sub(1),
                Pane::Log => {}
            },
            Action::Bottom => match self.focus {
                Pane::Credentials => self.select_by(d, |_, n| n - 1),
                Pane::Requests => self.requests_back = 0,
                Pane::Log => return Some(Effect::LogPage(LogPage::Live)),
            },
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::fixtures::{self, NOW_MS};
    use crate::tui::Feed;

    fn press(ui: &mut Ui, d: &Dashboard, code: KeyCode) -> Option<Effect> {
        let a = action(KeyEvent::new(code, KeyModifiers::NONE), ui)?;
        ui.apply(a, d)
    }

    fn dash(snap: crate::events::PoolSnapshot) -> Dashboard {
        let mut d = Dashboard::new("test");
        d.apply(Feed::Snapshot(snap), NOW_MS);
        d
    }

    #[test]
    fn keys_act_on_the_selected_credential() {
        let d = dash(fixtures::cooling());
        let mut ui = Ui::default();
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('d')),
            Some(Effect::Command(Command::Disable("team-a".into())))
        );
        press(&mut ui, &d, KeyCode::Down);
        press(&mut ui, &d, KeyCode::Char('j'));
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('r')),
            Some(Effect::Command(Command::Refresh("oauth-1".into())))
        );
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('u')),
            Some(Effect::Command(Command::UseNext("oauth-1".into())))
        );
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('c')),
            Some(Effect::Command(Command::Probe("oauth-1".into())))
        );
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('n')),
            Some(Effect::Command(Command::Rotate))
        );
        // backup-2 is disabled in this fixture: `d` enables it.
        press(&mut ui, &d, KeyCode::Char('G'));
        press(&mut ui, &d, KeyCode::Char('k'));
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('d')),
            Some(Effect::Command(Command::Enable("backup-2".into())))
        );
        // Selection stops at the ends.
        for _ in 0..20 {
            press(&mut ui, &d, KeyCode::Up);
        }
        assert_eq!(ui.selected.as_deref(), Some("team-a"));
    }

    #[test]
    fn filter_takes_the_keyboard_until_enter_or_esc() {
        let d = dash(fixtures::cooling());
        let mut ui = Ui::default();
        press(&mut ui, &d, KeyCode::Char('/'));
        assert!(ui.filtering);
        for c in "backup".chars() {
            // `d`, `u`, … are text here, not commands.
            assert_eq!(press(&mut ui, &d, KeyCode::Char(c)), None);
        }
        let names: Vec<_> = ui.rows(&d).iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["backup-1", "backup-2"]);
        press(&mut ui, &d, KeyCode::Enter);
        assert!(!ui.filtering);
        assert_eq!(
            press(&mut ui, &d, KeyCode::Char('d')),
            Some(Effect::Command(Command::Disable("backup-1".into())))
        );
        // A state word filters too.
        ui.filter = "cooling".into();
        assert_eq!(ui.rows(&d).len(), 2);
        press(&mut ui, &d, KeyCode::Esc);
        assert!(ui.filter.is_empty());
        assert_eq!(ui.rows(&d).len(), 6);
    }

    #[test]
    fn help_swallows_keys_and_quit_always_works() {
        let d = dash(fixtures::healthy());
        let mut ui = Ui::default();
        press(&mut ui, &d, KeyCode::Char('?'));
        assert!(ui.help);
        assert_eq!(press(&mut ui, &d, KeyCode::Char('d')), None);
        assert!(!ui.help, "any key closes help without acting");
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        ui.filtering = true;
        assert_eq!(action(ctrl_c, &ui), Some(Action::Quit));
        ui.filtering = false;
        assert_eq!(press(&mut ui, &d, KeyCode::Char('q')), Some(Effect::Quit));
    }

    #[test]
    fn tab_cycles_focus_and_arrows_follow_it() {
        let mut d = dash(fixtures::healthy());
        let mut totals = d.totals;
        for id in 0..5 {
            let r = fixtures::request(id, NOW_MS, &["team-a"], 200);
            d.apply(
                Feed::Event(fixtures::request_event(&mut totals, r, 0)),
                NOW_MS,
            );
        }
        let mut ui = Ui::default();
        press(&mut ui, &d, KeyCode::Tab);
        assert_eq!(ui.focus, Pane::Requests);
        press(&mut ui, &d, KeyCode::Up);
        press(&mut ui, &d, KeyCode::Up);
        assert_eq!(ui.requests_back, 2);
        assert_eq!(ui.selected, None, "the table selection did not move");
        press(&mut ui, &d, KeyCode::Tab);
        assert_eq!(ui.focus, Pane::Log);
        assert_eq!(
            press(&mut ui, &d, KeyCode::PageUp),
            Some(Effect::LogPage(LogPage::Up))
        );
        press(&mut ui, &d, KeyCode::Left);
        assert_eq!(LOG_LEVELS[ui.log_level], tui_logger::LevelFilter::Warn);
        press(&mut ui, &d, KeyCode::BackTab);
        assert_eq!(ui.focus, Pane::Requests);
    }

    #[test]
    fn every_footer_key_is_in_the_help_table() {
        assert!(KEYS.iter().filter(|k| k.footer.is_some()).count() >= 8);
        for k in KEYS {
            assert!(!k.what.is_empty() && !k.keys.is_empty());
        }
    }
}
