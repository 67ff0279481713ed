//! Key sequences against the app, with data from a fake source: the state that results.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::FakeSource;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use dashboard::app::{App, Popup, View};
use dashboard::data::{Action, DataSource, Source};
use mailroom::dead::Filter;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn keys(app: &mut App, s: &str) -> Vec<Action> {
    s.chars()
        .filter_map(|c| {
            let code = match c {
                '\t' => KeyCode::Tab,
                '\n' => KeyCode::Enter,
                '\x1b' => KeyCode::Esc,
                '\x08' => KeyCode::Backspace,
                c => KeyCode::Char(c),
            };
            app.on_key(key(code))
        })
        .collect()
}

async fn loaded() -> App {
    let source = FakeSource::default();
    let mut app = App::new();
    for s in Source::ALL {
        app.apply(source.fetch(s).await.unwrap(), Instant::now());
    }
    app
}

#[tokio::test]
async fn number_keys_and_tab_switch_views() {
    let mut app = loaded().await;
    assert_eq!(app.view, View::Overview);
    keys(&mut app, "2");
    assert_eq!(app.view, View::Sends);
    keys(&mut app, "4");
    assert_eq!(app.view, View::Dead);
    keys(&mut app, "5");
    assert_eq!(app.view, View::Suppressions);
    keys(&mut app, "\t");
    assert_eq!(app.view, View::Overview);
    app.on_key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT));
    assert_eq!(app.view, View::Suppressions);
}

#[tokio::test]
async fn moving_stops_at_the_ends() {
    let mut app = loaded().await;
    keys(&mut app, "2jjjjj");
    assert_eq!(app.selected(), 2);
    keys(&mut app, "kkkkk");
    assert_eq!(app.selected(), 0);
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected(), 1);
    keys(&mut app, "G");
    assert_eq!(app.selected(), 2);
}

#[tokio::test]
async fn the_filter_narrows_the_rows_and_esc_clears_it() {
    let mut app = loaded().await;
    keys(&mut app, "2/bob\n");
    assert_eq!(app.filter(), "bob");
    assert_eq!(app.visible_sends().len(), 1);
    assert!(!app.editing_filter);
    keys(&mut app, "/\x08\x08\x08dead\n");
    assert_eq!(app.visible_sends().len(), 1);
    assert_eq!(app.visible_sends()[0].recipient, "eve@example.org");
    keys(&mut app, "\x1b");
    assert_eq!(app.visible_sends().len(), 3);
}

#[tokio::test]
async fn dead_letters_are_grouped_by_error_class() {
    let app = loaded().await;
    let classes: Vec<&str> = app
        .visible_dead()
        .iter()
        .map(|d| d.error_class.as_str())
        .collect();
    assert_eq!(classes, ["permanent", "permanent", "retryable"]);
}

#[tokio::test]
async fn r_replays_the_selected_dead_letter_only_after_y() {
    let mut app = loaded().await;
    assert!(keys(&mut app, "4jr").is_empty());
    let id = app.visible_dead()[1].job_id.clone().unwrap();
    assert_eq!(
        app.popup,
        Popup::Confirm(Action::Replay {
            filter: Filter::Jobs(vec![id.clone()]),
            count: 1
        })
    );
    // Other keys do nothing while the question is open.
    assert!(keys(&mut app, "jq2").is_empty());
    assert!(!app.quit);
    assert_eq!(app.view, View::Dead);
    let actions = keys(&mut app, "y");
    assert_eq!(
        actions,
        vec![Action::Replay {
            filter: Filter::Jobs(vec![id]),
            count: 1
        }]
    );
    assert!(matches!(app.popup, Popup::Working(_)));
    app.finished(Ok("replayed 1".into()));
    assert_eq!(app.popup, Popup::None);
    assert_eq!(app.message.as_deref(), Some("replayed 1"));
}

#[tokio::test]
async fn n_or_esc_cancels_and_nothing_happens() {
    let mut app = loaded().await;
    assert!(keys(&mut app, "4rn").is_empty());
    assert_eq!(app.popup, Popup::None);
    assert!(keys(&mut app, "R\x1b").is_empty());
    assert_eq!(app.popup, Popup::None);
    assert_eq!(app.message.as_deref(), Some("cancelled"));
}

#[tokio::test]
async fn capital_r_replays_all_or_only_the_filtered_ones() {
    let mut app = loaded().await;
    let all = keys(&mut app, "4Ry");
    assert_eq!(
        all,
        vec![Action::Replay {
            filter: Filter::All,
            count: 3
        }]
    );
    app.finished(Ok(String::new()));
    let filtered = keys(&mut app, "/retryable\nRy");
    assert_eq!(
        filtered,
        vec![Action::Replay {
            filter: Filter::Jobs(vec!["22222222-2222-4222-8222-222222222222".into()]),
            count: 1
        }]
    );
}

#[tokio::test]
async fn r_in_users_resends_the_verification_link() {
    let mut app = loaded().await;
    let actions = keys(&mut app, "3jry");
    assert_eq!(
        actions,
        vec![Action::ResendVerification {
            email: "linus@example.org".into()
        }]
    );
}

#[tokio::test]
async fn x_in_suppressed_takes_the_address_off_the_list_only_after_y() {
    let mut app = loaded().await;
    assert!(keys(&mut app, "5x").is_empty(), "asks first");
    assert!(keys(&mut app, "n").is_empty());
    assert_eq!(app.popup, Popup::None);
    // Filtered down to the complaint, then confirmed.
    let actions = keys(&mut app, "/angry\nxy");
    assert_eq!(
        actions,
        vec![Action::Unsuppress {
            email: "angry@example.com".into()
        }]
    );
}

#[tokio::test]
async fn help_opens_with_question_mark_and_closes_with_esc() {
    let mut app = loaded().await;
    keys(&mut app, "?");
    assert_eq!(app.popup, Popup::Help);
    keys(&mut app, "3");
    assert_eq!(
        app.view,
        View::Overview,
        "keys do not leak through the help"
    );
    keys(&mut app, "\x1b");
    assert_eq!(app.popup, Popup::None);
}

#[tokio::test]
async fn q_and_ctrl_c_quit() {
    let mut app = loaded().await;
    keys(&mut app, "q");
    assert!(app.quit);
    let mut app = loaded().await;
    app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
    assert!(app.quit);
}

#[tokio::test]
async fn a_failing_source_keeps_the_last_good_data_and_reports_the_error() {
    let mut app = loaded().await;
    app.fail(Source::Queues, "connection refused".into());
    assert!(app.queues.data.is_some(), "last good data kept");
    assert_eq!(app.feed_state(Source::Queues).1, Some("connection refused"));
}

/// The whole loop: background refresh from the fake source, scripted keys, a confirmed replay
/// carried out by the source, quit.
#[tokio::test]
async fn the_event_loop_refreshes_in_the_background_and_performs_confirmed_actions() {
    let source = Arc::new(FakeSource::default());
    let s = source.clone();
    let script = ["4", "r", "y", "q"];
    let events = Box::pin(futures_util::stream::unfold(0usize, move |i| {
        let s = s.clone();
        async move {
            if i == 0 {
                // Wait until every source has been fetched once, as a person would wait to see data.
                while s.fetches.load(Ordering::SeqCst) < 5 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            if i == 3 {
                // Give the confirmed action a moment to run before quitting.
                while s.performed.lock().unwrap().is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            let k = script.get(i)?;
            let ev = Event::Key(key(KeyCode::Char(k.chars().next().unwrap())));
            Some((Ok(ev), i + 1))
        }
    }));
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let app = dashboard::run_app(
        &mut terminal,
        source.clone(),
        events,
        Duration::from_millis(50),
    )
    .await
    .unwrap();
    assert!(app.quit);
    assert_eq!(app.view, View::Dead);
    let performed = source.performed.lock().unwrap().clone();
    assert_eq!(performed.len(), 1);
    assert!(matches!(&performed[0], Action::Replay { count: 1, .. }));
}
