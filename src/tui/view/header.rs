//! The header: the source, uptime and how much of the pool is ready (or
//! that it is exhausted, and when the first credential is back), unhealthy
//! providers, and the request, 429 and refresh totals.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Context, count, countdown, uptime};
use crate::events::State;
use crate::tui::state::{Dashboard, effective_state, remaining};

pub(super) fn render_header(frame: &mut Frame, area: Rect, d: &Dashboard, cx: &Context) {
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

    // Session affinity: conversations kept on one credential; last, and
    // only when it fits whole (the warnings before it matter more).
    if d.sessions > 0 {
        let more = [sep(), Span::raw(format!("{} sessions", count(d.sessions)))];
        let width: usize = top.iter().chain(&more).map(Span::width).sum();
        if width <= usize::from(area.width) {
            top.extend(more);
        }
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
