//! Frames drawn from hand-made data, for what the snapshots' fixed data does not show: the
//! longest job kind, a count of one, and empty tables.

use std::time::Instant;

use chrono::{TimeZone, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mailroom::dead::DeadLetter;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::{Now, draw};
use crate::app::App;
use crate::data::{Activity, SendRow, Suppression, Update, UserRow, Users};

fn now() -> Now {
    Now {
        instant: Instant::now(),
        utc: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
    }
}

fn user(name: &str) -> UserRow {
    UserRow {
        name: name.into(),
        email: format!("{}@example.com", name.to_lowercase()),
        created_at: now().utc - chrono::Duration::hours(2),
        link_expired: None,
        next: None,
    }
}

/// One row in each list view, `users` unverified users.
fn app(users: usize) -> App {
    let mut app = App::new();
    let at = Instant::now();
    app.apply(
        Update::Activity(Activity {
            recent: vec![SendRow {
                at: now().utc,
                kind: "password_changed".into(),
                recipient: "ada@example.com".into(),
                status: "sent".into(),
                latency_ms: Some(41),
                error: String::new(),
                api_key: "web".into(),
            }],
            ..Activity::default()
        }),
        at,
    );
    let oldest: Vec<UserRow> = ["Grace", "Linus"]
        .map(user)
        .into_iter()
        .take(users)
        .collect();
    let total = oldest.len() as i64;
    app.apply(
        Update::Users(Users {
            total,
            more: false,
            oldest,
        }),
        at,
    );
    app.apply(
        Update::Dead(vec![DeadLetter {
            job_id: Some("11111111-1111-4111-8111-111111111111".into()),
            kind: Some("password_changed".into()),
            recipient: Some("eve@example.org".into()),
            attempts: 1,
            error_class: "permanent".into(),
            last_error: "SES MessageRejected".into(),
            died_at: None,
            replays: 0,
        }]),
        at,
    );
    app.apply(
        Update::Suppressions(vec![Suppression {
            email: "gone@example.com".into(),
            reason: "bounce".into(),
            detail: "smtp; 550".into(),
            created_at: now().utc,
        }]),
        at,
    );
    app
}

fn keys(app: &mut App, keys: &str) {
    for c in keys.chars() {
        let code = if c == '\n' {
            KeyCode::Enter
        } else {
            KeyCode::Char(c)
        };
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }
}

fn lines(app: &App, width: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, 24)).unwrap();
    terminal.draw(|f| draw(f, app, now())).unwrap();
    let buffer = terminal.backend().buffer();
    (0..buffer.area.height)
        .map(|y| {
            (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect()
        })
        .collect()
}

#[test]
fn the_longest_kind_fits_its_column() {
    for width in [80, 120] {
        for view in ['2', '4'] {
            let mut app = app(2);
            keys(&mut app, &view.to_string());
            let screen = lines(&app, width);
            assert!(
                screen[3].contains("password_changed "),
                "view {view} at {width}: {}",
                screen[3]
            );
        }
    }
}

#[test]
fn an_empty_table_puts_its_header_where_a_full_one_does() {
    for view in ['2', '3', '4', '5'] {
        let mut app = app(2);
        keys(&mut app, &view.to_string());
        let full = lines(&app, 80)[2].clone();
        keys(&mut app, "/no such row\n");
        let screen = lines(&app, 80);
        assert!(screen[1].contains("(0)"), "{}", screen[1]);
        assert_eq!(screen[2], full, "view {view}");
        assert!(full.starts_with("  "), "the selection column: {full:?}");
    }
}

#[test]
fn counts_agree_with_their_noun() {
    let one = lines(&app(1), 80).join("\n");
    assert!(one.contains("1 user, the oldest"), "{one}");
    let two = lines(&app(2), 80).join("\n");
    assert!(two.contains("2 users, the oldest"), "{two}");
}

#[test]
fn the_status_message_goes_with_the_view() {
    let mut app = app(2);
    keys(&mut app, "4");
    app.finished(Ok("replayed 1 of 1 dead letter (0 parked)".into()));
    assert!(lines(&app, 80)[22].contains("replayed 1 of 1"));
    keys(&mut app, "2");
    assert!(!lines(&app, 80)[22].contains("replayed"));
}
