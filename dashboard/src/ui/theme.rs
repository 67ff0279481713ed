//! The named styles, so that the look is decided in one place.

use ratatui::style::{Color, Modifier, Style};

pub struct Theme {
    pub title: Style,
    pub tab: Style,
    pub tab_selected: Style,
    pub header: Style,
    pub selected: Style,
    pub ok: Style,
    pub warn: Style,
    pub error: Style,
    pub dim: Style,
    pub key: Style,
}

pub const THEME: Theme = Theme {
    title: Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
    tab: Style::new().fg(Color::Gray),
    tab_selected: Style::new().fg(Color::Black).bg(Color::Cyan),
    header: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
    selected: Style::new()
        .bg(Color::DarkGray)
        .add_modifier(Modifier::BOLD),
    ok: Style::new().fg(Color::Green),
    warn: Style::new().fg(Color::Yellow),
    error: Style::new().fg(Color::Red),
    dim: Style::new().fg(Color::DarkGray),
    key: Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
};
