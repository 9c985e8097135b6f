//! The 429 history: upstream and client 429s per second as sparklines.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Paragraph, Sparkline};

use super::{Context, pane, short};
use crate::tui::state::Dashboard;

/// The 429 history covers at least this much time; on a narrow pane each
/// column shows the busiest second of a few.
const HISTORY_SPAN_SECS: usize = 180;

pub(super) fn render_history(frame: &mut Frame, area: Rect, d: &Dashboard, cx: &Context) {
    let label_w = 11u16;
    let cols = area.width.saturating_sub(label_w).max(1) as usize;
    let group = HISTORY_SPAN_SECS.div_ceil(cols).max(1);
    let buckets = d.buckets(cols * group, cx.now_ms);
    let peak_of = |f: fn(&crate::tui::state::Bucket) -> u64| -> Vec<u64> {
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
