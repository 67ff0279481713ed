//! The Sends view: the most recent sends, filterable, coloured by status.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::THEME;
use super::widgets::{List, column, draw_list, filter_title, kind_column};
use crate::app::{App, View};
use crate::data::SendRow;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let sends = app.visible_sends();
    let columns = [
        column("time", Constraint::Length(8)),
        kind_column(),
        column("recipient", Constraint::Min(16)),
        column("key", Constraint::Length(8)),
        column("status", Constraint::Length(8)),
        column("latency", Constraint::Length(7)),
        column("error", Constraint::Min(4)),
    ];
    let list = List {
        view: View::Sends,
        title: filter_title(app, View::Sends, "Recent sends", sends.len()),
        columns: &columns,
        rows: sends.into_iter().map(row).collect(),
    };
    draw_list(f, app, area, &app.activity, list);
}

fn row(s: &SendRow) -> Row<'static> {
    let style = match s.status.as_str() {
        "sent" => THEME.ok,
        "dead" => THEME.error,
        "retrying" | "sending" => THEME.warn,
        _ => Style::default(),
    };
    Row::new(vec![
        Cell::from(s.at.format("%H:%M:%S").to_string()),
        Cell::from(s.kind.clone()),
        Cell::from(s.recipient.clone()),
        Cell::from(if s.api_key.is_empty() {
            Span::styled("-", THEME.dim)
        } else {
            Span::raw(s.api_key.clone())
        }),
        Cell::from(Span::styled(s.status.clone(), style)),
        Cell::from(s.latency_ms.map_or("-".into(), |l| format!("{l}ms"))),
        Cell::from(s.error.clone()),
    ])
}
