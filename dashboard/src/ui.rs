//! Drawing: one function per view, popups, the status line and the footer. Reads the
//! [`App`] and never changes it. Everything fits 80×24 and reflows on resize.

use std::time::Instant;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row, Sparkline, Table, TableState, Tabs, Wrap,
};

use crate::app::{App, HELP, Popup, View};
use crate::data::{AccountInfo, BOUNCE_REVIEW, COMPLAINT_REVIEW, Feedback, Source};

/// Named styles, so the look is decided in one place.
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
    draw_tabs(f, app, top);
    match app.view {
        View::Overview => draw_overview(f, app, body, now),
        View::Sends => draw_sends(f, app, body),
        View::Users => draw_users(f, app, body, now),
        View::Dead => draw_dead(f, app, body),
        View::Suppressions => draw_suppressions(f, app, body),
    }
    draw_status(f, app, status, now);
    draw_footer(f, app, footer);
    match &app.popup {
        Popup::None => {}
        Popup::Help => draw_help(f),
        Popup::Confirm(action) => draw_box(
            f,
            "Confirm",
            &[
                action.question(),
                String::new(),
                "y: yes    n / Esc: no".into(),
            ],
        ),
        Popup::Working(line) => draw_box(f, "Working", std::slice::from_ref(line)),
    }
}

fn draw_tabs(f: &mut Frame, app: &App, area: Rect) {
    let [name, tabs] =
        Layout::horizontal([Constraint::Length(10), Constraint::Min(10)]).areas(area);
    f.render_widget(Paragraph::new(Span::styled(" Mailroom", THEME.title)), name);
    let titles: Vec<String> = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()))
        .collect();
    let selected = View::ALL.iter().position(|v| *v == app.view);
    f.render_widget(
        Tabs::new(titles)
            .style(THEME.tab)
            .highlight_style(THEME.tab_selected)
            .select(selected)
            .divider("│"),
        tabs,
    );
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

fn loading_or<'a>(updated: Option<Instant>, error: Option<&str>) -> Line<'a> {
    match (updated, error) {
        (None, Some(e)) => Line::styled(format!("unavailable: {e}"), THEME.error),
        _ => Line::styled("loading…", THEME.dim),
    }
}

/// A rate against SES's review threshold: green below half of it, yellow from half, red at it.
fn rate_span(label: &str, part: i64, sent: i64, threshold: f64) -> Span<'static> {
    match Feedback::rate(part, sent) {
        None => Span::styled(format!("{label} -"), THEME.dim),
        Some(r) => {
            let style = if r >= threshold {
                THEME.error
            } else if r >= threshold / 2.0 {
                THEME.warn
            } else {
                THEME.ok
            };
            Span::styled(format!("{label} {:.2}%", r * 100.0), style)
        }
    }
}

fn draw_overview(f: &mut Frame, app: &App, area: Rect, now: Now) {
    // The queues take the rows they need, the activity its lines, and the chart of sends
    // whatever height is left, so a tall terminal shows more history instead of empty rows.
    let queue_rows = app.queues.data.as_ref().map_or(1, |q| q.len() + 1) as u16 + 1;
    let [queues, rest, chart] = Layout::vertical([
        Constraint::Length(queue_rows.max(3)),
        // A top border and seven lines.
        Constraint::Length(8),
        Constraint::Min(0),
    ])
    .areas(area);
    let title = if app.prefix.is_empty() {
        " Queues ".to_owned()
    } else {
        format!(" Queues ({}.*) ", app.prefix)
    };
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(title, THEME.header));
    match &app.queues.data {
        None => f.render_widget(
            Paragraph::new(loading_or(app.queues.updated, app.queues.error.as_deref()))
                .block(block),
            queues,
        ),
        Some(q) => {
            let rows = q.iter().map(|s| {
                let hist = app
                    .depth
                    .get(&s.name)
                    .map(|h| sparkline(h.iter().copied(), 20))
                    .unwrap_or_default();
                Row::new(vec![
                    Cell::from(s.name.clone()),
                    Cell::from(s.ready.to_string()),
                    Cell::from(s.unacked.map_or("-".into(), |u| u.to_string())),
                    Cell::from(s.consumers.to_string()),
                    Cell::from(hist),
                ])
            });
            let t = Table::new(
                rows,
                [
                    Constraint::Min(20),
                    Constraint::Length(7),
                    Constraint::Length(7),
                    Constraint::Length(9),
                    Constraint::Length(20),
                ],
            )
            .header(
                Row::new(["queue", "ready", "unacked", "consumers", "depth"]).style(THEME.header),
            )
            .block(block);
            f.render_widget(t, queues);
        }
    }

    let mut lines: Vec<Line> = Vec::new();
    match &app.activity.data {
        None => lines.push(loading_or(
            app.activity.updated,
            app.activity.error.as_deref(),
        )),
        Some(a) => {
            let total: u64 = a.per_minute.iter().sum();
            lines.push(Line::from(vec![
                Span::styled("sends/min (1 h) ", THEME.header),
                Span::raw(sparkline(a.per_minute.iter().copied(), 60)),
                Span::raw(format!(" {total}")),
            ]));
            lines.push(Line::from(vec![
                Span::styled("today           ", THEME.header),
                Span::styled(format!("{} sent", a.today.sent), THEME.ok),
                Span::raw("  "),
                Span::styled(
                    format!("{} failed", a.today.failed),
                    if a.today.failed > 0 {
                        THEME.warn
                    } else {
                        THEME.dim
                    },
                ),
                Span::raw("  "),
                Span::styled(
                    format!("{} dead", a.today.dead),
                    if a.today.dead > 0 {
                        THEME.error
                    } else {
                        THEME.dim
                    },
                ),
                Span::raw("  "),
                Span::raw(format!("{} skipped", a.today.skipped)),
            ]));
            let fb = &a.feedback;
            // SES reviews the account at 5 % bounces or 0.1 % complaints.
            for (window, sent, bounces, complaints) in [
                (
                    "rates 24 h      ",
                    fb.sent_24h,
                    fb.bounces_24h,
                    fb.complaints_24h,
                ),
                (
                    "rates 7 d       ",
                    fb.sent_7d,
                    fb.bounces_7d,
                    fb.complaints_7d,
                ),
            ] {
                lines.push(Line::from(vec![
                    Span::styled(window, THEME.header),
                    rate_span("bounce", bounces, sent, BOUNCE_REVIEW),
                    Span::styled(" of 5%  ", THEME.dim),
                    rate_span("complaint", complaints, sent, COMPLAINT_REVIEW),
                    Span::styled(" of 0.1%  ", THEME.dim),
                    Span::raw(format!("{sent} sent")),
                ]));
            }
            lines.push(Line::from(vec![
                Span::styled("dispatcher      ", THEME.header),
                match a.paused {
                    Some(true) => Span::styled("PAUSED (SES account stop)", THEME.error),
                    Some(false) => Span::styled("running", THEME.ok),
                    None => Span::styled("unknown (metrics unreachable)", THEME.dim),
                },
            ]));
        }
    }
    let ses = match &app.account.data {
        None => loading_or(app.account.updated, app.account.error.as_deref()).spans,
        Some(AccountInfo::Unavailable) => vec![Span::styled(
            "unavailable (the endpoint does not report the account)",
            THEME.dim,
        )],
        Some(AccountInfo::Known(a)) => vec![
            Span::styled(
                if a.production_access {
                    "production"
                } else {
                    "sandbox"
                },
                if a.production_access {
                    THEME.ok
                } else {
                    THEME.warn
                },
            ),
            Span::raw(format!(
                ", {} of {} sent in 24 h, max {}/s{}",
                a.sent_last_24_hours,
                a.max_24_hour_send,
                a.max_send_rate,
                if a.sending_enabled {
                    ""
                } else {
                    ", SENDING PAUSED"
                }
            )),
        ],
    };
    // Unverified users: the product's promise is that they get their email.
    lines.push(Line::from(match &app.users.data {
        None => {
            let mut l = vec![Span::styled("unverified      ", THEME.header)];
            l.extend(loading_or(app.users.updated, app.users.error.as_deref()).spans);
            l
        }
        Some(u) => {
            let mut l = vec![
                Span::styled("unverified      ", THEME.header),
                Span::styled(
                    format!("{}{}", u.total, if u.more { "+" } else { "" }),
                    if u.total > 0 { THEME.warn } else { THEME.ok },
                ),
            ];
            if let Some(oldest) = u.oldest.first() {
                l.push(Span::raw(format!(
                    " users, the oldest signed up {} ago",
                    age((now.utc - oldest.created_at).num_seconds().max(0))
                )));
            }
            l
        }
    }));
    let mut ses_line = vec![Span::styled("SES account     ", THEME.header)];
    ses_line.extend(ses);
    lines.push(Line::from(ses_line));
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::TOP)
                .title(Span::styled(" Activity ", THEME.header)),
        ),
        rest,
    );
    if chart.height >= 3
        && let Some(a) = &app.activity.data
    {
        let max = a.per_minute.iter().copied().max().unwrap_or(0);
        f.render_widget(
            Sparkline::default()
                .block(Block::default().borders(Borders::TOP).title(Span::styled(
                    format!(" Sends per minute, last hour (peak {max}) "),
                    THEME.header,
                )))
                .data(&a.per_minute)
                .style(THEME.ok),
            chart,
        );
    }
}

fn filter_title(app: &App, view: View, title: &str, count: usize) -> Line<'static> {
    let f = app.filter_of(view);
    let mut spans = vec![Span::styled(format!(" {title} ({count}) "), THEME.header)];
    if app.editing_filter && app.view == view {
        spans.push(Span::styled(format!(" /{f}▏"), THEME.key));
    } else if !f.is_empty() {
        spans.push(Span::styled(format!(" filter: {f} "), THEME.key));
    }
    Line::from(spans)
}

fn table_state(selected: usize, len: usize) -> TableState {
    TableState::default().with_selected(if len == 0 { None } else { Some(selected) })
}

fn draw_sends(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_sends();
    let block = Block::default().borders(Borders::TOP).title(filter_title(
        app,
        View::Sends,
        "Recent sends",
        rows.len(),
    ));
    if app.activity.data.is_none() {
        f.render_widget(
            Paragraph::new(loading_or(
                app.activity.updated,
                app.activity.error.as_deref(),
            ))
            .block(block),
            area,
        );
        return;
    }
    let len = rows.len();
    let t = Table::new(
        rows.into_iter().map(|s| {
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
                Cell::from(Span::styled(s.status.clone(), style)),
                Cell::from(s.latency_ms.map_or("-".into(), |l| format!("{l}ms"))),
                Cell::from(s.error.clone()),
            ])
        }),
        [
            Constraint::Length(8),
            Constraint::Length(14),
            Constraint::Min(22),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new(["time", "kind", "recipient", "status", "latency", "error"]).style(THEME.header),
    )
    .row_highlight_style(THEME.selected)
    .highlight_symbol("› ")
    .block(block);
    f.render_stateful_widget(t, area, &mut table_state(app.selected_in(View::Sends), len));
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn draw_users(f: &mut Frame, app: &App, area: Rect, now: Now) {
    let rows = app.visible_users();
    let total = app.users.data.as_ref().map_or(String::from("0"), |u| {
        format!("{}{}", u.total, if u.more { "+" } else { "" })
    });
    let mut title = filter_title(
        app,
        View::Users,
        "Unverified users, oldest first",
        rows.len(),
    );
    title
        .spans
        .push(Span::styled(format!(" {total} in all "), THEME.dim));
    let block = Block::default().borders(Borders::TOP).title(title);
    if app.users.data.is_none() {
        f.render_widget(
            Paragraph::new(loading_or(app.users.updated, app.users.error.as_deref())).block(block),
            area,
        );
        return;
    }
    let len = rows.len();
    let t = Table::new(
        rows.into_iter().map(|u| {
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
        }),
        [
            Constraint::Length(20),
            Constraint::Min(24),
            Constraint::Length(6),
            Constraint::Length(9),
        ],
    )
    .header(Row::new(["name", "email", "age", "link"]).style(THEME.header))
    .row_highlight_style(THEME.selected)
    .highlight_symbol("› ")
    .block(block);
    f.render_stateful_widget(t, area, &mut table_state(app.selected_in(View::Users), len));
}

fn draw_dead(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_dead();
    let block = Block::default().borders(Borders::TOP).title(filter_title(
        app,
        View::Dead,
        "Dead letters by error class",
        rows.len(),
    ));
    if app.dead.data.is_none() {
        f.render_widget(
            Paragraph::new(loading_or(app.dead.updated, app.dead.error.as_deref())).block(block),
            area,
        );
        return;
    }
    let len = rows.len();
    let t = Table::new(
        rows.into_iter().map(|d| {
            Row::new(vec![
                Cell::from(Span::styled(d.error_class.clone(), THEME.error)),
                Cell::from(d.recipient.clone().unwrap_or_else(|| "-".into())),
                Cell::from(d.kind.clone().unwrap_or_else(|| "-".into())),
                Cell::from(d.attempts.to_string()),
                Cell::from(d.replays.to_string()),
                Cell::from(d.last_error.clone()),
            ])
        }),
        [
            Constraint::Length(10),
            Constraint::Min(18),
            Constraint::Length(14),
            Constraint::Length(3),
            Constraint::Length(3),
            Constraint::Min(16),
        ],
    )
    .header(
        Row::new(["class", "recipient", "kind", "att", "rep", "last error"]).style(THEME.header),
    )
    .row_highlight_style(THEME.selected)
    .highlight_symbol("› ")
    .block(block);
    f.render_stateful_widget(t, area, &mut table_state(app.selected_in(View::Dead), len));
}

fn draw_suppressions(f: &mut Frame, app: &App, area: Rect) {
    let rows = app.visible_suppressions();
    let block = Block::default().borders(Borders::TOP).title(filter_title(
        app,
        View::Suppressions,
        "Suppressed addresses, newest first",
        rows.len(),
    ));
    if app.suppressions.data.is_none() {
        f.render_widget(
            Paragraph::new(loading_or(
                app.suppressions.updated,
                app.suppressions.error.as_deref(),
            ))
            .block(block),
            area,
        );
        return;
    }
    let len = rows.len();
    let t = Table::new(
        rows.into_iter().map(|s| {
            Row::new(vec![
                Cell::from(s.email.clone()),
                Cell::from(Span::styled(
                    s.reason.clone(),
                    if s.reason == "manual" {
                        THEME.dim
                    } else {
                        THEME.warn
                    },
                )),
                Cell::from(s.created_at.format("%Y-%m-%d %H:%M").to_string()),
                Cell::from(s.detail.clone()),
            ])
        }),
        [
            Constraint::Min(24),
            Constraint::Length(11),
            Constraint::Length(16),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["address", "reason", "since", "detail"]).style(THEME.header))
    .row_highlight_style(THEME.selected)
    .highlight_symbol("› ")
    .block(block);
    f.render_stateful_widget(
        t,
        area,
        &mut table_state(app.selected_in(View::Suppressions), len),
    );
}

fn draw_status(f: &mut Frame, app: &App, area: Rect, now: Now) {
    let mut spans = Vec::new();
    for s in Source::ALL {
        let (updated, error) = app.feed_state(s);
        let (text, style) = match (updated, error) {
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
    if let Some(m) = &app.message {
        spans.push(Span::styled(format!("│ {m}"), THEME.warn));
    } else if let Some((label, e)) = first_error {
        spans.push(Span::styled(format!("│ {label}: {e}"), THEME.error));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(f: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (k, what) in app.keys() {
        spans.push(Span::styled(format!(" {k}"), THEME.key));
        spans.push(Span::raw(format!(" {what} ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
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
    let area = centered(f.area(), 76, HELP.len() as u16 + 2);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<16}"), THEME.key),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, area);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Keys (Esc closes) ")),
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
