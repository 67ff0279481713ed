//! The Users view: unverified users, oldest first, with the state of their verification link.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row};

use super::widgets::{List, column, draw_list, filter_title};
use super::{Now, THEME};
use crate::app::{App, View};
use crate::data::UserRow;
use crate::text::age;

pub fn draw(f: &mut Frame, app: &App, area: Rect, now: Now) {
    let users = app.visible_users();
    let total = app.users.data.as_ref().map_or(String::from("0"), |u| {
        format!("{}{}", u.total, if u.more { "+" } else { "" })
    });
    let mut title = filter_title(
        app,
        View::Users,
        "Unverified users, oldest first",
        users.len(),
    );
    title
        .spans
        .push(Span::styled(format!(" {total} in all "), THEME.dim));
    let columns = [
        column("name", Constraint::Length(20)),
        column("email", Constraint::Min(24)),
        column("age", Constraint::Length(6)),
        column("link", Constraint::Length(9)),
    ];
    let list = List {
        view: View::Users,
        title,
        columns: &columns,
        rows: users.into_iter().map(|u| row(u, now)).collect(),
    };
    draw_list(f, app, area, &app.users, list);
}

fn row(u: &UserRow, now: Now) -> Row<'static> {
    Row::new(vec![
        Cell::from(u.name.clone()),
        Cell::from(u.email.clone()),
        Cell::from(age((now.utc - u.created_at).num_seconds().max(0))),
        Cell::from(match u.link_expired {
            Some(true) => Span::styled("expired", THEME.warn),
            Some(false) => Span::styled("valid", THEME.ok),
            None => Span::styled("not sent", THEME.dim),
        }),
    ])
}
