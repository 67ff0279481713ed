//! The Overview: the queues with their depth history, the activity summary (sends per minute,
//! today's counts, bounce and complaint rates, the dispatcher, unverified users, the SES
//! account) and a chart of sends over the last hour.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline};

use super::widgets::{Column, column, loading_or, sparkline, table, titled};
use super::{Now, THEME};
use crate::app::App;
use crate::data::{AccountInfo, Activity, BOUNCE_REVIEW, COMPLAINT_REVIEW, Feedback, QueueStat};
use crate::text::{age, noun};

const QUEUE_COLUMNS: [Column; 5] = [
    column("queue", Constraint::Min(20)),
    column("ready", Constraint::Length(7)),
    column("unacked", Constraint::Length(7)),
    column("consumers", Constraint::Length(9)),
    column("depth", Constraint::Length(20)),
];

pub fn draw(f: &mut Frame, app: &App, area: Rect, now: Now) {
    // The queues take the rows they need, the activity its lines, and the chart of sends
    // whatever height is left, so a tall terminal shows more history instead of empty rows.
    let queue_rows = app.queues.data.as_ref().map_or(1, |q| q.len() + 1) as u16 + 1;
    let [queues, activity, chart] = Layout::vertical([
        Constraint::Length(queue_rows.max(3)),
        // A top border and seven lines.
        Constraint::Length(8),
        Constraint::Min(0),
    ])
    .areas(area);
    draw_queues(f, app, queues);
    let mut lines = match &app.activity.data {
        None => vec![loading_or(
            app.activity.updated,
            app.activity.error.as_deref(),
        )],
        Some(a) => activity_lines(a),
    };
    lines.push(unverified_line(app, now));
    lines.push(field("SES account", ses_spans(app)));
    f.render_widget(Paragraph::new(lines).block(titled(" Activity ")), activity);
    draw_chart(f, app, chart);
}

/// A line of the activity summary: its label in a column of its own, then the value.
fn field<'a>(label: &str, value: Vec<Span<'a>>) -> Line<'a> {
    let mut spans = vec![Span::styled(format!("{label:<16}"), THEME.header)];
    spans.extend(value);
    Line::from(spans)
}

fn draw_queues(f: &mut Frame, app: &App, area: Rect) {
    let title = if app.prefix.is_empty() {
        " Queues ".to_owned()
    } else {
        format!(" Queues ({}.*) ", app.prefix)
    };
    let block = titled(title);
    match &app.queues.data {
        None => {
            let line = loading_or(app.queues.updated, app.queues.error.as_deref());
            f.render_widget(Paragraph::new(line).block(block), area);
        }
        Some(q) => {
            let rows = q.iter().map(|s| queue_row(app, s)).collect();
            f.render_widget(table(&QUEUE_COLUMNS, rows).block(block), area);
        }
    }
}

fn queue_row(app: &App, s: &QueueStat) -> Row<'static> {
    let history = app
        .depth
        .get(&s.name)
        .map(|h| sparkline(h.iter().copied(), 20))
        .unwrap_or_default();
    Row::new(vec![
        Cell::from(s.name.clone()),
        Cell::from(s.ready.to_string()),
        Cell::from(s.unacked.map_or("-".into(), |u| u.to_string())),
        Cell::from(s.consumers.to_string()),
        Cell::from(history),
    ])
}

/// Sends per minute, today's counts, the feedback rates and the dispatcher's state.
fn activity_lines(a: &Activity) -> Vec<Line<'static>> {
    let total: u64 = a.per_minute.iter().sum();
    let counter = |n: i64, what: &str, bad| {
        Span::styled(format!("{n} {what}"), if n > 0 { bad } else { THEME.dim })
    };
    let mut lines = vec![
        field(
            "sends/min (1 h)",
            vec![
                Span::raw(sparkline(a.per_minute.iter().copied(), 60)),
                Span::raw(format!(" {total}")),
            ],
        ),
        field(
            "today",
            vec![
                Span::styled(format!("{} sent", a.today.sent), THEME.ok),
                Span::raw("  "),
                counter(a.today.failed, "failed", THEME.warn),
                Span::raw("  "),
                counter(a.today.dead, "dead", THEME.error),
                Span::raw("  "),
                Span::raw(format!("{} skipped", a.today.skipped)),
            ],
        ),
    ];
    lines.extend(rate_lines(&a.feedback));
    lines.push(field(
        "dispatcher",
        vec![match a.paused {
            Some(true) => Span::styled("PAUSED (SES account stop)", THEME.error),
            Some(false) => Span::styled("running", THEME.ok),
            None => Span::styled("unknown (metrics unreachable)", THEME.dim),
        }],
    ));
    lines
}

/// SES reviews the account at 5 % bounces or 0.1 % complaints: both windows against both.
fn rate_lines(fb: &Feedback) -> Vec<Line<'static>> {
    [
        ("rates 24 h", fb.sent_24h, fb.bounces_24h, fb.complaints_24h),
        ("rates 7 d", fb.sent_7d, fb.bounces_7d, fb.complaints_7d),
    ]
    .into_iter()
    .map(|(window, sent, bounces, complaints)| {
        field(
            window,
            vec![
                rate_span("bounce", bounces, sent, BOUNCE_REVIEW),
                Span::styled(" of 5%  ", THEME.dim),
                rate_span("complaint", complaints, sent, COMPLAINT_REVIEW),
                Span::styled(" of 0.1%  ", THEME.dim),
                Span::raw(format!("{sent} sent")),
            ],
        )
    })
    .collect()
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

/// Unverified users are on the overview because the product promises them their email.
fn unverified_line(app: &App, now: Now) -> Line<'static> {
    let value = match &app.users.data {
        None => loading_or(app.users.updated, app.users.error.as_deref()).spans,
        Some(u) => {
            let style = if u.total > 0 { THEME.warn } else { THEME.ok };
            let Some(oldest) = u.oldest.first() else {
                return field("unverified", vec![Span::styled(u.total.to_string(), style)]);
            };
            // A bounded count ("500+") is always more than one.
            let (count, users) = if u.more {
                (format!("{}+", u.total), "users")
            } else {
                (u.total.to_string(), noun(u.total, "user", "users"))
            };
            vec![
                Span::styled(count, style),
                Span::raw(format!(
                    " {users}, the oldest signed up {} ago",
                    age((now.utc - oldest.created_at).num_seconds().max(0))
                )),
            ]
        }
    };
    field("unverified", value)
}

fn ses_spans(app: &App) -> Vec<Span<'static>> {
    match &app.account.data {
        None => loading_or(app.account.updated, app.account.error.as_deref()).spans,
        Some(AccountInfo::Unavailable) => vec![Span::styled(
            "unavailable (the endpoint does not report the account)",
            THEME.dim,
        )],
        Some(AccountInfo::Known(a)) => {
            let (mode, style) = if a.production_access {
                ("production", THEME.ok)
            } else {
                ("sandbox", THEME.warn)
            };
            let paused = if a.sending_enabled {
                ""
            } else {
                ", SENDING PAUSED"
            };
            vec![
                Span::styled(mode, style),
                Span::raw(format!(
                    ", {} of {} sent in 24 h, max {}/s{paused}",
                    a.sent_last_24_hours, a.max_24_hour_send, a.max_send_rate,
                )),
            ]
        }
    }
}

fn draw_chart(f: &mut Frame, app: &App, area: Rect) {
    let Some(a) = &app.activity.data else { return };
    if area.height < 3 {
        return;
    }
    let peak = a.per_minute.iter().copied().max().unwrap_or(0);
    f.render_widget(
        Sparkline::default()
            .block(titled(format!(
                " Sends per minute, last hour (peak {peak}) "
            )))
            .data(&a.per_minute)
            .style(THEME.ok),
        area,
    );
}
