//! Rendering: a function of the dashboard state, the UI state and a clock,
//! generic over the backend so `TestBackend` snapshots pin the layout.

use std::time::Duration;

use jiff::tz::TimeZone;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState};

use super::keys::{KEYS, LOG_LEVELS, Pane, Ui};
use super::state::{Dashboard, effective_state, remaining};
use crate::events::{CredentialKind, CredentialView, RequestRecord, State, human};

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

fn render_header(frame: &mut Frame, area: Rect, d: &Dashboard, cx: &Context) {
    let sep = || Span::raw(" │ ").dark_gray();
    let mut top = vec![
        Span::raw(" tokenyard ").bold().reversed(),
        Span::raw(" "),
        Span::raw(d.source.clone()).bold(),
    ];
    if d.waiting {
        top.extend([sep(), Span::raw("connecting…").yellow()]);
    } else {
        top.extend([
            sep(),
            Span::raw(format!(
                "up {}",
                uptime(cx.now_ms.saturating_sub(d.started_ms))
            )),
        ]);
        let ready = d
            .credentials
            .iter()
            .filter(|c| effective_state(c, cx.now_ms) == State::Ready)
            .count();
        top.push(sep());
        if d.exhausted(cx.now_ms) {
            top.push(
                Span::raw(" POOL EXHAUSTED ")
                    .bold()
                    .fg(Color::White)
                    .bg(Color::Red),
            );
            if let Some(back) = d
                .credentials
                .iter()
                .filter_map(|c| match c.state {
                    State::Cooling | State::Exhausted | State::Failed => c.until_ms,
                    _ => None,
                })
                .min()
            {
                top.push(Span::raw(format!(
                    " first back in {}",
                    countdown(remaining(back, cx.now_ms))
                )));
            }
        } else {
            top.push(Span::styled(
                format!("{ready}/{} ready", d.credentials.len()),
                Style::new().fg(Color::Green),
            ));
        }
    }
    for p in d.providers.iter().filter(|p| !p.healthy) {
        top.extend([
            sep(),
            Span::raw(format!(" {} UNHEALTHY ", p.name))
                .bold()
                .fg(Color::White)
                .bg(Color::Red),
        ]);
        if let Some(since) = p.since_ms {
            top.push(Span::raw(format!(
                " for {}",
                crate::events::human(std::time::Duration::from_millis(
                    cx.now_ms.saturating_sub(since)
                ))
            )));
        }
    }
    if let Some(why) = &d.disconnected {
        top.extend([
            sep(),
            Span::raw(format!("disconnected, retrying ({why})"))
                .bold()
                .fg(Color::Red),
        ]);
    }

    let t = d.totals;
    let (minute, _) = d.window(60, cx.now_ms);
    let success = if t.requests == 0 {
        "—".to_string()
    } else {
        format!("{:.1}%", t.succeeded as f64 * 100.0 / t.requests as f64)
    };
    let mut bottom = vec![
        Span::raw(" req "),
        Span::raw(count(t.requests)).bold(),
        Span::raw(format!(" · {:.1}/s · ok ", d.rate(cx.now_ms))),
        Span::raw(success).bold(),
        sep(),
        Span::raw("429 up "),
        Span::raw(count(t.upstream_429)).bold().yellow(),
        Span::raw(format!(" ({}/60s) · client ", minute.upstream_429)),
        Span::styled(
            count(t.client_429),
            if t.client_429 > 0 {
                Style::new().bold().fg(Color::Red)
            } else {
                Style::new().bold()
            },
        ),
        sep(),
        Span::raw(format!("refresh {}", count(t.refreshes))),
    ];
    if t.refresh_failures > 0 {
        bottom.push(Span::raw(format!(" ({} failed)", t.refresh_failures)).red());
    }
    if d.panics > 0 {
        bottom.extend([
            sep(),
            Span::raw(format!("{} panic(s), see log", d.panics))
                .bold()
                .fg(Color::White)
                .bg(Color::Red),
        ]);
    }
    frame.render_widget(
        Paragraph::new(vec![Line::from(top), Line::from(bottom)]),
        area,
    );
}

fn render_table(frame: &mut Frame, area: Rect, d: &Dashboard, ui: &Ui, cx: &Context, wide: bool) {
    let rows = ui.rows(d);
    let focused = ui.focus == Pane::Credentials;
    let mut title = format!(" credentials ({})", d.credentials.len());
    if !ui.filter.is_empty() || ui.filtering {
        title.push_str(&format!(" · filter “{}” {} shown", ui.filter, rows.len()));
    }
    title.push_str(" · ▶ serves next ");
    let block = pane(title, focused);

    let mut header = vec!["", "name"];
    let mut widths = vec![Constraint::Length(1), Constraint::Min(8)];
    if wide {
        header.push("provider");
        widths.push(Constraint::Length(10));
    }
    header.extend([
        "tier", "state", "cooldown", "req", "429", "fail", "used", "token", "lat",
    ]);
    widths.extend([8, 9, 8, 6, 5, 4, 5, 6, 6].map(Constraint::Length));
    if wide {
        header.push("why");
        widths.push(Constraint::Fill(2));
    }

    let body: Vec<Row> = rows
        .iter()
        .map(|c| credential_row(c, d, cx.now_ms, wide))
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

fn credential_row<'a>(c: &'a CredentialView, d: &Dashboard, now_ms: u64, wide: bool) -> Row<'a> {
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
        Cell::from(used),
        Cell::from(token).style(if c.kind == CredentialKind::ApiKey {
            Style::new().dark_gray()
        } else {
            Style::new()
        }),
        Cell::from(lat),
    ]);
    if wide {
        let why = match state {
            State::Ready => c.last_error.clone().unwrap_or_default(),
            _ => c.reason.clone().unwrap_or_default(),
        };
        cells.push(Cell::from(why).dark_gray());
    }
    Row::new(cells)
}

/// The 429 history covers at least this much time; on a narrow pane each
/// column shows the busiest second of a few.
const HISTORY_SPAN_SECS: usize = 180;

fn render_history(frame: &mut Frame, area: Rect, d: &Dashboard, cx: &Context) {
    let label_w = 11u16;
    let cols = area.width.saturating_sub(label_w).max(1) as usize;
    let group = HISTORY_SPAN_SECS.div_ceil(cols).max(1);
    let buckets = d.buckets(cols * group, cx.now_ms);
    let peak_of = |f: fn(&super::state::Bucket) -> u64| -> Vec<u64> {
        buckets
            .chunks(group)
            .map(|c| c.iter().map(f).max().unwrap_or(0))
            .collect()
    };
    let up = peak_of(|b| b.upstream_429);
    let client = peak_of(|b| b.client_429);
    let span = short((cols * group) as u64 * 1000);
    let title = if group == 1 {
        format!(" 429s per second · last {span} ")
    } else {
        format!(" 429s/s (peak per {group}s) · last {span} ")
    };
    let block = pane(title, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let each = (inner.height / 2).max(1);
    let [a, b] =
        Layout::vertical([Constraint::Length(each), Constraint::Length(each)]).areas(inner);
    for (area, name, data, color) in [
        (a, "upstream", &up, Color::Yellow),
        (b, "client", &client, Color::Red),
    ] {
        if area.height == 0 {
            continue;
        }
        let [label, spark] =
            Layout::horizontal([Constraint::Length(label_w), Constraint::Fill(1)]).areas(area);
        let peak = data.iter().copied().max().unwrap_or(0);
        frame.render_widget(
            Paragraph::new(format!("{name:<8}{peak:>2}")).style(Style::new().fg(color)),
            label,
        );
        frame.render_widget(
            Sparkline::default()
                .data(data.as_slice())
                .max(peak.max(1))
                .style(Style::new().fg(color)),
            spark,
        );
    }
}

fn render_requests(frame: &mut Frame, area: Rect, d: &Dashboard, ui: &Ui, cx: &Context) {
    let focused = ui.focus == Pane::Requests;
    let mut title = format!(" recent requests ({})", d.recent.len());
    if ui.requests_back > 0 {
        title.push_str(&format!(" · {} back (End: newest)", ui.requests_back));
    }
    title.push(' ');
    let rows: Vec<Row> = d
        .recent
        .iter()
        .rev()
        .skip(ui.requests_back)
        .take(area.height as usize)
        .map(|r| request_row(r, cx))
        .collect();
    let table = Table::new(
        rows,
        [8, 12, 3, 0, 3, 3, 6, 6].map(|w| match w {
            // The path takes what is left.
            0 => Constraint::Fill(1),
            w => Constraint::Length(w),
        }),
    )
    .header(
        Row::new(["time", "model", "str", "path", "att", "st", "lat", "ttfb"])
            .style(Style::new().bold().dark_gray()),
    )
    .column_spacing(1)
    .block(pane(title, focused));
    frame.render_widget(table, area);
}

fn request_row<'a>(r: &'a RequestRecord, cx: &Context) -> Row<'a> {
    let time = jiff::Timestamp::from_millisecond(r.at_ms as i64)
        .map(|t| t.to_zoned(cx.tz.clone()).strftime("%H:%M:%S").to_string())
        .unwrap_or_default();
    let status_style = match r.status {
        200..=299 => Style::new().green(),
        429 => Style::new().red().bold(),
        499 => Style::new().dark_gray(),
        _ => Style::new().red(),
    };
    let path = if r.path.is_empty() {
        "—".to_string()
    } else {
        r.path.join(" → ")
    };
    Row::new([
        Cell::from(time).dark_gray(),
        Cell::from(r.model.as_str()),
        Cell::from(if r.stream { "sse" } else { "" }),
        Cell::from(path),
        Cell::from(r.attempts.to_string()),
        Cell::from(r.status.to_string()).style(status_style),
        Cell::from(latency(r.latency_ms)),
        Cell::from(r.ttfb_ms.map(latency).unwrap_or_default()),
    ])
}

fn render_log(frame: &mut Frame, area: Rect, ui: &Ui, cx: &Context) {
    let focused = ui.focus == Pane::Log;
    let level = LOG_LEVELS[ui.log_level].as_str().to_lowercase();
    let title = format!(" log · {level} and above · ←/→ level · PgUp/PgDn scroll ");
    let block = pane(title, focused);
    match cx.log {
        Some(state) => {
            let widget = tui_logger::TuiLoggerWidget::default()
                .block(block)
                .output_separator(' ')
                .output_timestamp(Some("%H:%M:%S".into()))
                .output_level(Some(tui_logger::TuiLoggerLevelOutput::Abbreviated))
                .output_target(false)
                .output_file(false)
                .output_line(false)
                .style_error(Style::new().red())
                .style_warn(Style::new().yellow())
                .style_info(Style::new())
                .style_debug(Style::new().dark_gray())
                .style_trace(Style::new().dark_gray())
                .state(state);
            frame.render_widget(widget, area);
        }
        None => frame.render_widget(
            Paragraph::new("(log lines appear here)")
                .dark_gray()
                .block(block),
            area,
        ),
    }
}

fn render_footer(frame: &mut Frame, area: Rect, ui: &Ui) {
    if ui.filtering {
        let line = Line::from(vec![
            Span::raw(" filter: ").bold(),
            Span::raw(ui.filter.clone()),
            Span::raw("▏").cyan(),
            Span::raw("  Enter keep · Esc clear · ↑/↓ select").dark_gray(),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    // Always room for help and quit: fit the others before them.
    let last: Vec<_> = KEYS
        .iter()
        .filter(|k| matches!(k.footer, Some("help" | "quit")))
        .collect();
    let first = KEYS
        .iter()
        .filter(|k| k.footer.is_some() && !matches!(k.footer, Some("help" | "quit")));
    // The short form of a key for the footer: its first alternative.
    let key = |k: &super::keys::KeyHelp| k.keys.split(' ').next().unwrap_or(k.keys);
    let width =
        |k: &super::keys::KeyHelp| key(k).chars().count() + k.footer.unwrap_or("").len() + 3;
    let mut room = (area.width as usize).saturating_sub(last.iter().map(|k| width(k)).sum());
    let mut spans = vec![Span::raw(" ")];
    let push = |k: &super::keys::KeyHelp, spans: &mut Vec<Span>| {
        spans.push(Span::raw(key(k).to_string()).bold().cyan());
        spans.push(Span::raw(format!(" {}  ", k.footer.unwrap_or(""))));
    };
    for k in first {
        let w = width(k);
        if w > room {
            continue;
        }
        room -= w;
        push(k, &mut spans);
    }
    for k in last {
        push(k, &mut spans);
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_help(frame: &mut Frame, area: Rect) {
    let w = area.width.min(72);
    let h = (KEYS.len() as u16 + 9).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|k| {
            Line::from(vec![
                Span::raw(format!(" {:<11}", k.keys)).bold().cyan(),
                Span::raw(k.what),
            ])
        })
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::raw(" states: "),
        Span::styled("ready", state_style(State::Ready)),
        Span::raw(" · "),
        Span::styled("cooling", state_style(State::Cooling)),
        Span::raw(" (429, back by itself) · "),
        Span::styled("exhausted", state_style(State::Exhausted)),
        Span::raw(" (quota)"),
    ]));
    lines.push(Line::from(vec![
        Span::raw("         "),
        Span::styled("failed", state_style(State::Failed)),
        Span::raw(" (probed until it answers) · "),
        Span::styled("disabled", state_style(State::Disabled)),
        Span::raw(" (operator)"),
    ]));
    lines.push(Line::raw(
        " Actions go through the admin API's code path; each is confirmed",
    ));
    lines.push(Line::raw(" in the log pane. Any key closes this help."));
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" keys ")
                .border_style(Style::new().cyan()),
        ),
        r,
    );
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
