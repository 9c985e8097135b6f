//! What the keys do, on screen: the footer's line of keys (or the filter
//! being typed) and the help overlay.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::state_style;
use crate::events::State;
use crate::tui::keys::{KEYS, Ui};

pub(super) fn render_footer(frame: &mut Frame, area: Rect, ui: &Ui) {
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
    let key = |k: &crate::tui::keys::KeyHelp| k.keys.split(' ').next().unwrap_or(k.keys);
    let width =
        |k: &crate::tui::keys::KeyHelp| key(k).chars().count() + k.footer.unwrap_or("").len() + 3;
    let mut room = (area.width as usize).saturating_sub(last.iter().map(|k| width(k)).sum());
    let mut spans = vec![Span::raw(" ")];
    let push = |k: &crate::tui::keys::KeyHelp, spans: &mut Vec<Span>| {
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

pub(super) fn render_help(frame: &mut Frame, area: Rect) {
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
