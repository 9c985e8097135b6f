//! The credentials table: one row per credential with its state,
//! cooldown, counts and token, the pool's next pick marked.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::widgets::{Cell, Paragraph, Row, Table, TableState};

use super::{Context, count, countdown, latency, pane, short, state_style};
use crate::events::{CredentialKind, CredentialView, State};
use crate::tui::keys::{Pane, Ui};
use crate::tui::state::{Dashboard, effective_state, remaining};

pub(super) fn render_table(
    frame: &mut Frame,
    area: Rect,
    d: &Dashboard,
    ui: &Ui,
    cx: &Context,
    wide: bool,
) {
    let rows = ui.rows(d);
    let focused = ui.focus == Pane::Credentials;
    let mut title = format!(" credentials ({})", d.credentials.len());
    if !ui.filter.is_empty() || ui.filtering {
        title.push_str(&format!(" · filter “{}” {} shown", ui.filter, rows.len()));
    }
    title.push_str(" · ▶ serves next ");
    let block = pane(title, focused);

    // Wide, the names are shown whole (up to 20 characters); the reason
    // takes what is left.
    let name_width = if wide {
        d.credentials
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(8, 20) as u16
    } else {
        8
    };
    let mut header = vec!["", "name"];
    let mut widths = vec![Constraint::Length(1), Constraint::Min(name_width)];
    if wide {
        header.push("provider");
        widths.push(Constraint::Length(10));
    }
    // Narrow, today's tokens take the place of the last-use age.
    header.extend(["tier", "state", "cooldown", "req", "429", "fail"]);
    widths.extend([8, 9, 8, 6, 5, 4].map(Constraint::Length));
    if wide {
        header.extend(["used", "today"]);
        widths.extend([5, 6].map(Constraint::Length));
    } else {
        header.push("today");
        widths.push(Constraint::Length(6));
    }
    header.extend(["token", "lat"]);
    widths.extend([6, 6].map(Constraint::Length));
    // The daily budget and what the provider says is left: wide only (at
    // 80 columns the names would not fit), and only when some credential
    // has one.
    let extra = Extra {
        budget: wide
            && d.credentials
                .iter()
                .any(|c| c.usage.tokens_per_day_budget.is_some()),
        capacity: wide && d.credentials.iter().any(|c| c.capacity.is_some()),
    };
    if extra.budget {
        header.push("day budget");
        widths.push(Constraint::Length(11));
    }
    if extra.capacity {
        header.push("left");
        widths.push(Constraint::Length(9));
    }
    if wide {
        header.push("why");
        widths.push(Constraint::Fill(2));
    }

    let body: Vec<Row> = rows
        .iter()
        .map(|c| credential_row(c, d, cx.now_ms, wide, extra))
        .collect();
    let table = Table::new(body, widths)
        .header(Row::new(header).style(Style::new().bold().dark_gray()))
        .column_spacing(1)
        .block(block)
        // Visible without colour too.
        .highlight_symbol("›")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always)
        .row_highlight_style(if focused {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new().add_modifier(Modifier::UNDERLINED)
        });
    let mut state = TableState::default().with_selected(ui.selected_index(d));
    frame.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() {
        let msg = if d.waiting {
            "waiting for the first snapshot…"
        } else if d.credentials.is_empty() {
            "no credentials configured"
        } else {
            "no credential matches the filter (Esc clears it)"
        };
        let inner = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        if area.height > 2 {
            frame.render_widget(Paragraph::new(msg).dark_gray().italic(), inner);
        }
    }
}

/// The wide table's optional columns.
#[derive(Clone, Copy)]
struct Extra {
    budget: bool,
    capacity: bool,
}

fn credential_row<'a>(
    c: &'a CredentialView,
    d: &Dashboard,
    now_ms: u64,
    wide: bool,
    extra: Extra,
) -> Row<'a> {
    let state = effective_state(c, now_ms);
    // The pool's pick as of its last snapshot; not shown on a credential
    // that has stopped serving since.
    let marker = if d.next.as_deref() == Some(c.name.as_str()) && state == State::Ready {
        Cell::from("▶").green().bold()
    } else {
        Cell::from("")
    };
    let cooldown = match (state, c.until_ms) {
        (State::Cooling | State::Exhausted | State::Failed, Some(until)) => {
            countdown(remaining(until, now_ms))
        }
        _ => String::new(),
    };
    let used = c
        .last_used_ms
        .map(|t| short(now_ms.saturating_sub(t)))
        .unwrap_or_else(|| "—".into());
    let token = match (c.kind, c.token_expires_ms) {
        (CredentialKind::ApiKey, _) => "key".to_string(),
        (CredentialKind::RefreshToken, None) => "none".to_string(),
        (CredentialKind::RefreshToken, Some(exp)) if exp <= now_ms => "exp".to_string(),
        (CredentialKind::RefreshToken, Some(exp)) => short(exp - now_ms),
    };
    let lat = c.last_latency_ms.map(latency).unwrap_or_default();
    let mut cells = vec![marker, Cell::from(c.name.as_str()).bold()];
    if wide {
        cells.push(Cell::from(c.provider.as_str()));
    }
    cells.extend([
        Cell::from(c.tier.as_str()),
        Cell::from(state.as_str()).style(state_style(state)),
        Cell::from(cooldown).style(state_style(state)),
        Cell::from(count(c.requests)),
        Cell::from(count(c.rate_limited)).style(if c.rate_limited > 0 {
            Style::new().yellow()
        } else {
            Style::new()
        }),
        Cell::from(c.failures.to_string()).style(if c.failures > 0 {
            Style::new().red()
        } else {
            Style::new()
        }),
    ]);
    // With shared state, every replica's tokens: the budget counts those.
    let today = c.usage.today_tokens();
    let answers = c
        .usage
        .cluster_today
        .map_or(c.usage.today.answers, |d| d.answers);
    let today = if answers == 0 {
        Cell::from("—").dark_gray()
    } else {
        Cell::from(crate::vocab::compact(today))
    };
    if wide {
        cells.push(Cell::from(used));
    }
    cells.push(today);
    cells.extend([
        Cell::from(token).style(if c.kind == CredentialKind::ApiKey {
            Style::new().dark_gray()
        } else {
            Style::new()
        }),
        Cell::from(lat),
    ]);
    if extra.budget {
        cells.push(budget_cell(c));
    }
    if extra.capacity {
        cells.push(capacity_cell(c, now_ms));
    }
    if wide {
        let why = match state {
            State::Ready => c.last_error.clone().unwrap_or_default(),
            _ => c.reason.clone().unwrap_or_default(),
        };
        cells.push(Cell::from(why).dark_gray());
    }
    Row::new(cells)
}

/// Today's tokens against the daily budget: a five-step bar and the share
/// (`▰▰▰▱▱  62%`), yellow from 80 %, red once reached; `—` without one.
fn budget_cell(c: &CredentialView) -> Cell<'static> {
    let Some(budget) = c.usage.tokens_per_day_budget.filter(|b| *b > 0) else {
        return Cell::from("—").dark_gray();
    };
    let share = c.usage.today_tokens() as f64 / budget as f64;
    let filled = ((share * 5.0).floor() as usize).min(5);
    let text = format!(
        "{}{} {:>3}%",
        "▰".repeat(filled),
        "▱".repeat(5 - filled),
        (share * 100.0).floor().min(999.0) as u64
    );
    let style = match share {
        s if s >= 1.0 => Style::new().red(),
        s if s >= 0.8 => Style::new().yellow(),
        _ => Style::new(),
    };
    Cell::from(text).style(style)
}

/// The share of its rate-limit window the provider last said is left, and
/// when that window resets (`62% ↻4m`): yellow under 20 %, red when none
/// is; `—` before any answer reported one. A window that has reset since
/// is full again (`100%`).
fn capacity_cell(c: &CredentialView, now_ms: u64) -> Cell<'static> {
    let Some(cap) = &c.capacity else {
        return Cell::from("—").dark_gray();
    };
    let left = cap.left_at(now_ms);
    // (0.58 is 57.99… in binary: nudged so it shows as 58.)
    let mut text = format!("{}%", (left * 100.0 + 1e-6).floor() as u64);
    if let Some(at) = cap.resets_at_ms.filter(|at| *at > now_ms) {
        text.push_str(&format!(" ↻{}", countdown(at - now_ms)));
    }
    let style = match left {
        l if l <= 0.0 => Style::new().red(),
        l if l < 0.2 => Style::new().yellow(),
        _ => Style::new(),
    };
    Cell::from(text).style(style)
}
