//! The recent requests: time, model, the credentials tried, status and
//! latency, newest first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::widgets::{Cell, Row, Table};

use super::{Context, latency, pane};
use crate::events::RequestRecord;
use crate::tui::keys::{Pane, Ui};
use crate::tui::state::Dashboard;

pub(super) fn render_requests(frame: &mut Frame, area: Rect, d: &Dashboard, ui: &Ui, cx: &Context) {
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
