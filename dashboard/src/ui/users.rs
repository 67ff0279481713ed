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
        column("name", Constraint::Length(12)),
        column("email", Constraint::Min(24)),
        column("age", Constraint::Length(6)),
        column("link", Constraint::Length(9)),
        column("next", Constraint::Length(15)),
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
        Cell::from(next(u, now)),
    ])
}

/// What the sweep does next: `reminder in 3h`, `reminder due`, `expires in 2d`, `expiring`.
fn next(u: &UserRow, now: Now) -> Span<'static> {
    use mailroom::policy::retention::NextStep;
    let (what, at) = match u.next {
        Some(NextStep::Reminder(at)) => ("reminder", at),
        Some(NextStep::Expiry(at)) => ("expires", at),
        None => return Span::styled("-", THEME.dim),
    };
    let left = (at - now.utc).num_seconds();
    match (what, left > 0) {
        ("reminder", true) => Span::raw(format!("reminder in {}", age(left))),
        ("reminder", false) => Span::styled("reminder due", THEME.warn),
        (_, true) => Span::raw(format!("expires in {}", age(left))),
        (_, false) => Span::styled("expiring", THEME.warn),
    }
}
