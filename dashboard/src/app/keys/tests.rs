//! The key table checked against itself: labels made from keys, every key reachable, the
//! help short enough for 80×24.

use super::*;

fn press(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn labels_are_made_from_the_keys() {
    assert_eq!(KEYS[0].label(), "1-5/Tab");
    let confirm: Vec<String> = KEYS
        .iter()
        .filter(|b| b.modes == [Mode::Confirm])
        .map(Binding::label)
        .collect();
    assert_eq!(confirm, ["y", "n/Esc"]);
    let g = KEYS.iter().find(|b| b.keys[0].0 == ch('g')).unwrap();
    assert_eq!(g.label(), "g/G", "G is not g: it goes to the last row");
}

#[test]
fn every_command_in_the_table_can_be_reached_and_is_in_the_help() {
    let help = help_rows();
    for b in KEYS {
        assert!(!b.help.is_empty());
        assert!(help.iter().any(|(_, t)| *t == b.help_text()));
        for mode in b.modes {
            let view = View::ALL
                .into_iter()
                .find(|v| b.applies(*mode, *v))
                .expect("some view");
            for (k, c) in b.keys {
                let event = match k {
                    Key::Code(code) => press(*code),
                    Key::Ctrl(c) => KeyEvent::new(KeyCode::Char(*c), KeyModifiers::CONTROL),
                    Key::AnyChar => press(KeyCode::Char('z')),
                };
                assert_eq!(lookup(*mode, view, event), Some(*c), "{k:?} in {mode:?}");
            }
        }
    }
}

#[test]
fn the_help_fits_an_80_by_24_terminal() {
    let rows = help_rows();
    assert!(rows.len() + 2 <= 24, "{} rows", rows.len());
    for (k, t) in &rows {
        assert!(k.chars().count() < 16, "{k}");
        assert!(t.chars().count() <= 74 - 16, "{t}");
    }
}

#[test]
fn a_key_of_one_view_does_nothing_in_another() {
    assert_eq!(
        lookup(Mode::Browse, View::Sends, press(KeyCode::Char('r'))),
        None
    );
    assert_eq!(
        lookup(Mode::Browse, View::Users, press(KeyCode::Char('r'))),
        Some(Command::ResendLink)
    );
    assert_eq!(
        lookup(Mode::Browse, View::Overview, press(KeyCode::Char('/'))),
        None
    );
}
