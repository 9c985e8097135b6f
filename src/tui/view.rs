//! Rendering: a function of the dashboard state, the UI state and a clock,
//! generic over the backend so `TestBackend` snapshots pin the layout.
//!
//! Here: the layout, the styles and number formats the panes share; each
//! pane is drawn in a child of its own (`header`, `credentials`,
//! `history`, `requests`, `log`, and `help` for the footer and the help
//! overlay).

mod credentials;
mod header;
mod help;
mod history;
mod log;
mod requests;

use std::time::Duration;

use jiff::tz::TimeZone;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders};

use self::credentials::render_table;
use self::header::render_header;
use self::help::{render_footer, render_help};
use self::history::render_history;
use self::log::render_log;
use self::requests::render_requests;
use super::keys::Ui;
use super::state::Dashboard;
use crate::events::{State, human};

/// Everything `render` needs besides the state: the clock, the time zone
/// for wall-clock columns, and the log widget (absent in snapshot tests,
/// where the process-wide log buffer would make them unstable).
pub struct Context<'a> {
    pub now_ms: u64,
    pub tz: &'a TimeZone,
    pub log: Option<&'a tui_logger::TuiWidgetState>,
}

/// Layouts switch at this width/height: below, panes stack and the table
/// drops its provider and reason columns.
const WIDE: (u16, u16) = (120, 36);

pub fn render(frame: &mut Frame, d: &Dashboard, ui: &Ui, cx: &Context) {
    let area = frame.area();
    let wide = area.width >= WIDE.0 && area.height >= WIDE.1;
    let table_rows = ui.rows(d).len().max(1) as u16;
    let [header, table, rest, footer] = Layout::vertical([
        Constraint::Length(2),
        // Title + column header + one line per credential, but never more
        // than half the screen.
        Constraint::Length((table_rows + 2).min(area.height / 2).max(4)),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(frame, header, d, cx);
    render_table(frame, table, d, ui, cx, wide);
    if wide {
        let [middle, log] =
            Layout::vertical([Constraint::Percentage(50), Constraint::Fill(1)]).areas(rest);
        let [requests, history] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Fill(1)]).areas(middle);
        render_requests(frame, requests, d, ui, cx);
        render_history(frame, history, d, cx);
        render_log(frame, log, ui, cx);
    } else {
        let [history, requests, log] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Percentage(50),
            Constraint::Fill(1),
        ])
        .areas(rest);
        render_history(frame, history, d, cx);
        render_requests(frame, requests, d, ui, cx);
        render_log(frame, log, ui, cx);
    }
    render_footer(frame, footer, ui);
    if ui.help {
        render_help(frame, area);
    }
}

fn pane<'a>(title: impl Into<Line<'a>>, focused: bool) -> Block<'a> {
    let style = if focused {
        Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::new().fg(Color::DarkGray)
    };
    Block::new()
        .borders(Borders::TOP)
        .border_style(style)
        .title(title.into().style(if focused {
            style
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        }))
}

fn state_style(s: State) -> Style {
    match s {
        State::Ready => Style::new().fg(Color::Green),
        State::Cooling => Style::new().fg(Color::Yellow),
        State::Exhausted => Style::new().fg(Color::Magenta),
        State::Failed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        State::Disabled => Style::new().fg(Color::DarkGray),
    }
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A wait or an age in at most five characters: `850ms`, `42s`, `1m30s`,
/// `2h5m`.
pub fn short(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    human(Duration::from_millis(ms))
}

/// Time left, rounded up: a credential cooling for 0.4 s more shows `1s`,
/// never `0s`.
pub fn countdown(ms: u64) -> String {
    short(ms.div_ceil(1000) * 1000)
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60) {
        (0, 0, m, s) => format!("{m}m{s:02}s"),
        (0, h, m, s) => format!("{h}h{m:02}m{s:02}s"),
        (d, h, m, _) => format!("{d}d{h:02}h{m:02}m"),
    }
}

fn latency(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

#[cfg(test)]
mod tests;
