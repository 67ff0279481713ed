//! The Suppressed view: the suppression list, newest first; `x` takes an address off it.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::THEME;
use super::widgets::{List, column, draw_list, filter_title};
use crate::app::{App, View};
use crate::data::Suppression;

pub fn draw(f: &mut Frame, app: &App, area: Rect) {
    let suppressed = app.visible_suppressions();
    let columns = [
        column("address", Constraint::Min(24)),
        column("reason", Constraint::Length(11)),
        column("since", Constraint::Length(16)),
        column("detail", Constraint::Min(10)),
    ];
    let list = List {
        view: View::Suppressions,
        title: filter_title(
            app,
            View::Suppressions,
            "Suppressed addresses, newest first",
            suppressed.len(),
        ),
        columns: &columns,
        rows: suppressed.into_iter().map(row).collect(),
    };
    draw_list(f, app, area, &app.suppressions, list);
}

fn row(s: &Suppression) -> Row<'static> {
    // Entries added by hand are the operator's own; those SES reported deserve a look.
    let reason = if s.reason == "manual" {
        THEME.dim
    } else {
        THEME.warn
    };
    Row::new(vec![
        Cell::from(s.email.clone()),
        Cell::from(Span::styled(s.reason.clone(), reason)),
        Cell::from(s.created_at.format("%Y-%m-%d %H:%M").to_string()),
        Cell::from(s.detail.clone()),
    ])
}
