//! The popups drawn over a view: the help overlay and the confirm and working boxes. Their key
//! lines come from the key table, like the footer's.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::THEME;
use crate::app::keys::{close_help_key, help_rows};
use crate::app::{App, Popup};

/// The width of the help's key column.
const KEY_COLUMN: usize = 16;

pub fn draw(f: &mut Frame, app: &App) {
    match &app.popup {
        Popup::None => {}
        Popup::Help => draw_help(f),
        Popup::Confirm(action) => {
            let answers: Vec<String> = app
                .hints()
                .into_iter()
                .map(|(k, what)| format!("{k}: {what}"))
                .collect();
            draw_box(
                f,
                "Confirm",
                &[action.question(), String::new(), answers.join("    ")],
            )
        }
        Popup::Working(line) => draw_box(f, "Working", std::slice::from_ref(line)),
    }
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn draw_help(f: &mut Frame) {
    let rows = help_rows();
    let area = centered(f.area(), 76, rows.len() as u16 + 2);
    let lines: Vec<Line> = rows
        .into_iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<KEY_COLUMN$}"), THEME.key),
                Span::raw(what),
            ])
        })
        .collect();
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(" Keys ({} closes) ", close_help_key()))),
        area,
    );
}

fn draw_box(f: &mut Frame, title: &str, lines: &[String]) {
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(10) as u16 + 4;
    let area = centered(f.area(), width.max(30), lines.len() as u16 + 2);
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(
            lines
                .iter()
                .map(|l| Line::from(l.clone()))
                .collect::<Vec<_>>(),
        )
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}
