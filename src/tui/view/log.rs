//! The log pane: tui-logger's widget at the chosen level, or a
//! placeholder where there is none (snapshot tests).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Style, Stylize};
use ratatui::widgets::Paragraph;

use super::{Context, pane};
use crate::tui::keys::{LOG_LEVELS, Pane, Ui};

pub(super) fn render_log(frame: &mut Frame, area: Rect, ui: &Ui, cx: &Context) {
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
