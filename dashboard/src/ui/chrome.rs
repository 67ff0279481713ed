//! What surrounds every view: the tabs on top, the status line (each feed's age or failure,
//! then the last message or the first error) and the footer of key hints, which comes from the
//! key table.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};

use super::{Now, THEME};
use crate::app::{App, View};
use crate::data::Source;
use crate::text::age;

pub fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let [name, tabs] =
        Layout::horizontal([Constraint::Length(10), Constraint::Min(10)]).areas(area);
    f.render_widget(Paragraph::new(Span::styled(" Mailroom", THEME.title)), name);
    let titles: Vec<String> = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()))
        .collect();
    f.render_widget(
        Tabs::new(titles)
            .style(THEME.tab)
            .highlight_style(THEME.tab_selected)
            .select(app.view.index())
            .divider("│"),
        tabs,
    );
}

pub fn draw_status(f: &mut Frame, app: &App, area: Rect, now: Now) {
    let mut spans = Vec::new();
    for s in Source::ALL {
        let (text, style) = match app.feed_state(s) {
            (_, Some(_)) => (format!("{} ✗", s.label()), THEME.error),
            (Some(t), None) => (
                format!(
                    "{} {}",
                    s.label(),
                    age(now.instant.saturating_duration_since(t).as_secs() as i64)
                ),
                THEME.dim,
            ),
            (None, None) => (format!("{} …", s.label()), THEME.dim),
        };
        spans.push(Span::styled(text, style));
        spans.push(Span::raw(" "));
    }
    let first_error = Source::ALL
        .iter()
        .find_map(|s| app.feed_state(*s).1.map(|e| (s.label(), e)));
    // The operator's own action outranks a feed error: the error is also marked ✗ above.
    if let Some(m) = &app.message {
        spans.push(Span::styled(format!("│ {m}"), THEME.warn));
    } else if let Some((label, e)) = first_error {
        spans.push(Span::styled(format!("│ {label}: {e}"), THEME.error));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

pub fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (k, what) in app.hints() {
        spans.push(Span::styled(format!(" {k}"), THEME.key));
        spans.push(Span::raw(format!(" {what} ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
