//! Drawing: lays out the frame and hands each part to its module — one module per view, the
//! chrome around them (tabs, status line, footer), the popups, and the shared widgets. Reads the
//! [`App`] and never changes it. Everything fits 80×24 and reflows on resize.

mod chrome;
mod dead;
mod overview;
mod popups;
mod sends;
mod suppressed;
mod theme;
mod users;
mod widgets;

use std::time::Instant;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};

use crate::app::{App, View};

pub use theme::{THEME, Theme};
pub use widgets::sparkline;

/// The moment a frame is drawn, in both clocks: `instant` for the age of data, `utc` for the
/// age of users. Passed in so that tests draw deterministic frames.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub utc: DateTime<Utc>,
}

impl Now {
    pub fn current() -> Self {
        Self {
            instant: Instant::now(),
            utc: Utc::now(),
        }
    }
}

pub fn draw(f: &mut Frame, app: &App, now: Now) {
    let [top, body, status, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    chrome::draw_tabs(f, app, top);
    match app.view {
        View::Overview => overview::draw(f, app, body, now),
        View::Sends => sends::draw(f, app, body),
        View::Users => users::draw(f, app, body, now),
        View::Dead => dead::draw(f, app, body),
        View::Suppressions => suppressed::draw(f, app, body),
    }
    chrome::draw_status(f, app, status, now);
    chrome::draw_footer(f, app, footer);
    popups::draw(f, app);
}

#[cfg(test)]
mod tests;
