//! Each view rendered to ratatui's TestBackend at 80×24 and compared with its snapshot.

mod common;

use std::time::{Duration, Instant};

use common::{FakeSource, t0};
use dashboard::app::App;
use dashboard::data::{DataSource, Source};
use dashboard::ui::{Now, draw};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

async fn render(keys: &str, failing: Option<Source>, width: u16, height: u16) -> String {
    let source = FakeSource {
        failing,
        ..Default::default()
    };
    let mut app = App::new();
    let at = Instant::now();
    for s in Source::ALL {
        match source.fetch(s).await {
            Ok(u) => app.apply(u, at),
            Err(e) => app.fail(s, e),
        }
    }
    for c in keys.chars() {
        let code = match c {
            '\n' => crossterm::event::KeyCode::Enter,
            c => crossterm::event::KeyCode::Char(c),
        };
        app.on_key(crossterm::event::KeyEvent::new(
            code,
            crossterm::event::KeyModifiers::NONE,
        ));
    }
    let now = Now {
        instant: at + Duration::from_secs(2),
        utc: t0(),
    };
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| draw(f, &app, now)).unwrap();
    terminal.backend().to_string()
}

#[tokio::test]
async fn overview() {
    insta::assert_snapshot!(render("", None, 80, 24).await);
}

#[tokio::test]
async fn sends() {
    insta::assert_snapshot!(render("2j", None, 80, 24).await);
}

#[tokio::test]
async fn users() {
    insta::assert_snapshot!(render("3", None, 80, 24).await);
}

#[tokio::test]
async fn dead_letters_with_a_filter_and_the_replay_question() {
    insta::assert_snapshot!(render("4/permanent\nR", None, 80, 24).await);
}

#[tokio::test]
async fn suppressions_and_the_removal_question() {
    insta::assert_snapshot!(render("5jx", None, 80, 24).await);
}

/// A tall terminal: the chart of sends takes the rows the tables do not need.
#[tokio::test]
async fn overview_on_a_tall_terminal() {
    insta::assert_snapshot!(render("", None, 120, 40).await);
}

#[tokio::test]
async fn help() {
    insta::assert_snapshot!(render("?", None, 80, 24).await);
}

#[tokio::test]
async fn a_source_that_fails_shows_in_the_status_line() {
    insta::assert_snapshot!(render("", Some(Source::Queues), 80, 24).await);
}

#[tokio::test]
async fn survives_a_tiny_and_a_wide_terminal() {
    // No panic at odd sizes; the layout reflows.
    for (w, h) in [(20, 5), (40, 10), (200, 60), (80, 24)] {
        let out = render("4", None, w, h).await;
        assert_eq!(out.lines().count(), h as usize);
    }
}
