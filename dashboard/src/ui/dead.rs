//! The Dead letters view: the dead-letter queue grouped by error class, filterable; `r` and `R`
//! replay from here.

use mailroom::dead::DeadLetter;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::THEME;
use super::widgets::{List, column, draw_list, filter_title, kind_column};
use crate::app::{App, View};

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let dead = app.visible_dead();
    let columns = [
        column("class", Constraint::Length(10)),
        column("recipient", Constraint::Min(18)),
        kind_column(),
        column("att", Constraint::Length(3)),
        column("rep", Constraint::Length(3)),
        column("last error", Constraint::Min(16)),
    ];
    let list = List {
        view: View::Dead,
        title: filter_title(app, View::Dead, "Dead letters by error class", dead.len()),
        columns: &columns,
        rows: dead.into_iter().map(row).collect(),
    };
    draw_list(f, app, area, &app.dead, list);
}

fn row(d: &DeadLetter) -> Row<'static> {
    Row::new(vec![
        Cell::from(Span::styled(d.error_class.clone(), THEME.error)),
        Cell::from(d.recipient.clone().unwrap_or_else(|| "-".into())),
        Cell::from(d.kind.clone().unwrap_or_else(|| "-".into())),
        Cell::from(d.attempts.to_string()),
        Cell::from(d.replays.to_string()),
        Cell::from(d.last_error.clone()),
    ])
}
