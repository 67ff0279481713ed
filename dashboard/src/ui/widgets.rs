//! The pieces every view is built from: a section's block, the line shown while a feed has no
//! data, tables with their header, the list views' table with its selection and filter title,
//! and text sparklines. A view module only says what its columns and rows are.

use std::time::Instant;

use mailroom::job::JobKind;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, HighlightSpacing, Paragraph, Row, Table, TableState};

use super::THEME;
use crate::app::{App, Feed, View};

/// A section of the screen: a top border carrying the title.
pub fn section<'a>(title: impl Into<Line<'a>>) -> Block<'a> {
    Block::default().borders(Borders::TOP).title(title)
}

/// A section whose title is a plain header.
pub fn titled(title: impl Into<String>) -> Block<'static> {
    section(Span::styled(title.into(), THEME.header))
}

/// What stands in for a feed's data before any came: the error if the first fetch failed.
pub fn loading_or<'a>(updated: Option<Instant>, error: Option<&str>) -> Line<'a> {
    match (updated, error) {
        (None, Some(e)) => Line::styled(format!("unavailable: {e}"), THEME.error),
        _ => Line::styled("loading…", THEME.dim),
    }
}

/// The stand-in line while `feed` has no data, or None once it has.
pub fn pending<'a, T>(feed: &Feed<T>) -> Option<Line<'a>> {
    feed.data
        .is_none()
        .then(|| loading_or(feed.updated, feed.error.as_deref()))
}

/// One column of a table: its header and its width.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub title: &'static str,
    pub width: Constraint,
}

pub const fn column(title: &'static str, width: Constraint) -> Column {
    Column { title, width }
}

/// The column of job kinds, wide enough for the longest kind there is (`password_changed`).
pub fn kind_column() -> Column {
    let longest = JobKind::ALL
        .iter()
        .map(|k| k.as_str().chars().count())
        .max()
        .unwrap_or(4);
    column("kind", Constraint::Length(longest as u16))
}

/// A table with its header row.
pub fn table<'a>(columns: &[Column], rows: Vec<Row<'a>>) -> Table<'a> {
    Table::new(rows, columns.iter().map(|c| c.width))
        .header(Row::new(columns.iter().map(|c| c.title)).style(THEME.header))
}

/// A list view's content: the rows after its filter, under a title from [`filter_title`].
pub struct List<'a> {
    pub view: View,
    pub title: Line<'a>,
    pub columns: &'a [Column],
    pub rows: Vec<Row<'a>>,
}

/// Draws a list view: the stand-in line while `feed` has no data, else the table with the
/// view's selection.
pub fn draw_list<T>(f: &mut Frame, app: &App, area: Rect, feed: &Feed<T>, list: List) {
    let block = section(list.title);
    if let Some(line) = pending(feed) {
        f.render_widget(Paragraph::new(line).block(block), area);
        return;
    }
    let selected = (!list.rows.is_empty()).then(|| app.selected_in(list.view));
    let t = table(list.columns, list.rows)
        .row_highlight_style(THEME.selected)
        .highlight_symbol("› ")
        // Reserved even with nothing selected, so an empty table's header sits where a full
        // one's does.
        .highlight_spacing(HighlightSpacing::Always)
        .block(block);
    f.render_stateful_widget(t, area, &mut TableState::default().with_selected(selected));
}

/// A list view's title: its name, how many rows the filter lets through, and the filter (with
/// a cursor while it is typed).
pub fn filter_title(app: &App, view: View, title: &str, count: usize) -> Line<'static> {
    let f = app.filter_of(view);
    let mut spans = vec![Span::styled(format!(" {title} ({count}) "), THEME.header)];
    if app.editing_filter && app.view == view {
        spans.push(Span::styled(format!(" /{f}▏"), THEME.key));
    } else if !f.is_empty() {
        spans.push(Span::styled(format!(" filter: {f} "), THEME.key));
    }
    Line::from(spans)
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A sparkline as text, scaled to its own maximum.
pub fn sparkline(values: impl IntoIterator<Item = u64>, width: usize) -> String {
    let v: Vec<u64> = values.into_iter().collect();
    let v = &v[v.len().saturating_sub(width)..];
    let max = v.iter().copied().max().unwrap_or(0);
    v.iter()
        .map(|x| {
            if max == 0 {
                BARS[0]
            } else {
                BARS[((*x as f64 / max as f64) * 7.0).round() as usize]
            }
        })
        .collect()
}
