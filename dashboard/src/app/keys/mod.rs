//! The one table of keys, [`KEYS`]: for every key, the modes and views it works in, the
//! [`Command`] it runs, its footer hint and its help line. Key handling ([`lookup`]), the footer
//! ([`hints`]) and the help overlay ([`help_rows`]) are all read from it, and the key names
//! shown are made from the key codes themselves, so what the screen says cannot drift from
//! what the keys do (the idea of gitui's `KeysList`).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::{App, View};

/// What the dashboard is doing, which decides what a key means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No popup and no filter being typed.
    Browse,
    /// Typing the current view's filter.
    Filter,
    /// A y/n question is open.
    Confirm,
    /// The help overlay is open.
    Help,
    /// An action is running.
    Working,
}

/// A key as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// This code, whatever the modifiers (Shift comes with `BackTab` and capitals; terminals
    /// differ in what else they add).
    Code(KeyCode),
    /// Control and this letter.
    Ctrl(char),
    /// Any character: typing a filter.
    AnyChar,
}

impl Key {
    fn matches(self, key: KeyEvent) -> bool {
        match self {
            Key::Code(c) => key.code == c,
            Key::Ctrl(c) => {
                key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
            }
            Key::AnyChar => matches!(key.code, KeyCode::Char(_)),
        }
    }

    /// The name the footer and the help show.
    pub fn name(self) -> String {
        match self {
            Key::Code(KeyCode::Char(c)) => c.to_string(),
            Key::Code(KeyCode::Tab) => "Tab".into(),
            Key::Code(KeyCode::BackTab) => "S-Tab".into(),
            Key::Code(KeyCode::Down) => "↓".into(),
            Key::Code(KeyCode::Up) => "↑".into(),
            Key::Code(KeyCode::Home) => "Home".into(),
            Key::Code(KeyCode::End) => "End".into(),
            Key::Code(KeyCode::Enter) => "Enter".into(),
            Key::Code(KeyCode::Esc) => "Esc".into(),
            Key::Code(KeyCode::Backspace) => "Backspace".into(),
            Key::Code(other) => other.to_string(),
            Key::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Key::AnyChar => "text".into(),
        }
    }
}

/// The views a key works in (in [`Mode::Browse`]; the other modes ignore the view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Views {
    All,
    /// Every view with rows to move through and filter: all but the overview.
    Lists,
    Only(View),
}

impl Views {
    pub fn contains(self, view: View) -> bool {
        match self {
            Views::All => true,
            Views::Lists => view != View::Overview,
            Views::Only(v) => v == view,
        }
    }
}

/// What a key does; [`App::run`](super::App) carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Quit,
    OpenHelp,
    CloseHelp,
    Show(View),
    NextView,
    PreviousView,
    Down,
    Up,
    First,
    Last,
    StartFilter,
    ApplyFilter,
    ClearFilter,
    DeleteChar,
    TypeChar,
    ReplaySelected,
    ReplayShown,
    ResendLink,
    Unsuppress,
    Yes,
    No,
}

/// A key's footer hint.
#[derive(Debug, Clone, Copy)]
pub enum Hint {
    /// Not in the footer (the help still lists it).
    None,
    Text(&'static str),
    /// Worded after the state, e.g. whether a filter narrows what `R` replays.
    Dynamic(fn(&App) -> &'static str),
}

/// One row of the table: keys that share modes, views, hint and help line.
#[derive(Debug, Clone, Copy)]
pub struct Binding {
    /// Each key with the command it runs (`j`/`k` share a hint, not a command).
    pub keys: &'static [(Key, Command)],
    pub modes: &'static [Mode],
    pub views: Views,
    pub hint: Hint,
    /// The help overlay's line; a key of one view gets the view's name in front.
    pub help: &'static str,
}

const BROWSE: &[Mode] = &[Mode::Browse];
const EVERYWHERE: &[Mode] = &[
    Mode::Browse,
    Mode::Filter,
    Mode::Confirm,
    Mode::Help,
    Mode::Working,
];

const fn browse(
    keys: &'static [(Key, Command)],
    views: Views,
    hint: Hint,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        modes: BROWSE,
        views,
        hint,
        help,
    }
}

const fn during(
    modes: &'static [Mode],
    keys: &'static [(Key, Command)],
    hint: Hint,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        modes,
        views: Views::All,
        hint,
        help,
    }
}

const fn ch(c: char) -> Key {
    Key::Code(KeyCode::Char(c))
}

fn replay_shown_hint(app: &App) -> &'static str {
    if app.filter().is_empty() {
        "replay all"
    } else {
        "replay filtered"
    }
}

/// Every key. The first row that matches the mode, the view and the key wins; the footer and
/// the help keep the table's order.
pub const KEYS: &[Binding] = &[
    browse(
        &[
            (ch('1'), Command::Show(View::Overview)),
            (ch('2'), Command::Show(View::Sends)),
            (ch('3'), Command::Show(View::Users)),
            (ch('4'), Command::Show(View::Dead)),
            (ch('5'), Command::Show(View::Suppressions)),
            (Key::Code(KeyCode::Tab), Command::NextView),
        ],
        Views::All,
        Hint::Text("views"),
        "go to the view numbered on its tab; Tab: the next view",
    ),
    browse(
        &[(Key::Code(KeyCode::BackTab), Command::PreviousView)],
        Views::All,
        Hint::None,
        "the previous view",
    ),
    browse(
        &[(ch('j'), Command::Down), (ch('k'), Command::Up)],
        Views::Lists,
        Hint::Text("move"),
        "move the selection",
    ),
    browse(
        &[
            (Key::Code(KeyCode::Down), Command::Down),
            (Key::Code(KeyCode::Up), Command::Up),
        ],
        Views::Lists,
        Hint::None,
        "move the selection",
    ),
    browse(
        &[(ch('g'), Command::First), (ch('G'), Command::Last)],
        Views::Lists,
        Hint::None,
        "first / last row",
    ),
    browse(
        &[
            (Key::Code(KeyCode::Home), Command::First),
            (Key::Code(KeyCode::End), Command::Last),
        ],
        Views::Lists,
        Hint::None,
        "first / last row",
    ),
    browse(
        &[(ch('/'), Command::StartFilter)],
        Views::Lists,
        Hint::Text("filter"),
        "filter the current view",
    ),
    browse(
        &[(Key::Code(KeyCode::Esc), Command::ClearFilter)],
        Views::Lists,
        Hint::None,
        "clear the filter",
    ),
    browse(
        &[(ch('r'), Command::ReplaySelected)],
        Views::Only(View::Dead),
        Hint::Text("replay"),
        "replay the selected dead letter",
    ),
    browse(
        &[(ch('R'), Command::ReplayShown)],
        Views::Only(View::Dead),
        Hint::Dynamic(replay_shown_hint),
        "replay all, or only the filtered ones",
    ),
    browse(
        &[(ch('r'), Command::ResendLink)],
        Views::Only(View::Users),
        Hint::Text("resend link"),
        "send a new verification link",
    ),
    browse(
        &[(ch('x'), Command::Unsuppress)],
        Views::Only(View::Suppressions),
        Hint::Text("mail again"),
        "take the address off the list",
    ),
    browse(
        &[(ch('?'), Command::OpenHelp)],
        Views::All,
        Hint::Text("help"),
        "this help",
    ),
    // While an action runs only quitting is possible: the running action owns the screen.
    during(
        &[Mode::Browse, Mode::Working],
        &[(ch('q'), Command::Quit)],
        Hint::Text("quit"),
        "quit and restore the terminal",
    ),
    // Before the filter's `AnyChar`, so that Ctrl-C quits while typing too.
    during(
        EVERYWHERE,
        &[(Key::Ctrl('c'), Command::Quit)],
        Hint::None,
        "quit and restore the terminal",
    ),
    during(
        &[Mode::Filter],
        &[(Key::Code(KeyCode::Enter), Command::ApplyFilter)],
        Hint::Text("apply"),
        "apply the filter being typed",
    ),
    during(
        &[Mode::Filter],
        &[(Key::Code(KeyCode::Esc), Command::ClearFilter)],
        Hint::Text("clear"),
        "clear the filter",
    ),
    during(
        &[Mode::Filter],
        &[(Key::Code(KeyCode::Backspace), Command::DeleteChar)],
        Hint::Text("delete"),
        "delete the filter's last character",
    ),
    during(
        &[Mode::Filter],
        &[(Key::AnyChar, Command::TypeChar)],
        Hint::None,
        "type the filter (any field containing it, any case)",
    ),
    during(
        &[Mode::Confirm],
        &[(ch('y'), Command::Yes), (ch('Y'), Command::Yes)],
        Hint::Text("yes"),
        "confirm the action asked about",
    ),
    during(
        &[Mode::Confirm],
        &[
            (ch('n'), Command::No),
            (ch('N'), Command::No),
            (Key::Code(KeyCode::Esc), Command::No),
        ],
        Hint::Text("no"),
        "cancel the action asked about",
    ),
    during(
        &[Mode::Help],
        &[
            (Key::Code(KeyCode::Esc), Command::CloseHelp),
            (ch('?'), Command::CloseHelp),
            (ch('q'), Command::CloseHelp),
        ],
        Hint::Text("close"),
        "close this help",
    ),
];

impl Binding {
    pub fn applies(&self, mode: Mode, view: View) -> bool {
        self.modes.contains(&mode) && (mode != Mode::Browse || self.views.contains(view))
    }

    /// The keys' names joined by `/`: a capital that does what its small letter does is not
    /// named again (`y` for `y`/`Y`), and a run of digits is shortened (`1-5`).
    pub fn label(&self) -> String {
        let shown: Vec<Key> = self
            .keys
            .iter()
            .filter(|(k, c)| match k {
                Key::Code(KeyCode::Char(u)) if u.is_uppercase() => {
                    let lower = ch(u.to_ascii_lowercase());
                    !self.keys.contains(&(lower, *c))
                }
                _ => true,
            })
            .map(|(k, _)| *k)
            .collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < shown.len() {
            let run = digit_run(&shown[i..]);
            if run >= 3 {
                parts.push(format!("{}-{}", shown[i].name(), shown[i + run - 1].name()));
                i += run;
            } else {
                parts.push(shown[i].name());
                i += 1;
            }
        }
        parts.join("/")
    }

    /// The help line, with the view's name in front when the key works in one view only.
    pub fn help_text(&self) -> String {
        match self.views {
            Views::Only(v) => format!("{}: {}", v.title(), self.help),
            _ => self.help.to_owned(),
        }
    }
}

/// How many keys from the start are consecutive digits (`1`, `2`, `3` …).
fn digit_run(keys: &[Key]) -> usize {
    let digit = |k: &Key| match k {
        Key::Code(KeyCode::Char(c)) => c.to_digit(10),
        _ => None,
    };
    let Some(first) = keys.first().and_then(digit) else {
        return 0;
    };
    keys.iter()
        .enumerate()
        .take_while(|(i, k)| digit(k) == Some(first + *i as u32))
        .count()
}

/// The command `key` runs in this mode and view, if any.
pub fn lookup(mode: Mode, view: View, key: KeyEvent) -> Option<Command> {
    KEYS.iter()
        .filter(|b| b.applies(mode, view))
        .find_map(|b| b.keys.iter().find(|(k, _)| k.matches(key)).map(|(_, c)| *c))
}

/// The footer: every key with a hint that works right now, as `(keys, hint)`.
pub fn hints(app: &App) -> Vec<(String, &'static str)> {
    let (mode, view) = (app.mode(), app.view);
    KEYS.iter()
        .filter(|b| b.applies(mode, view))
        .filter_map(|b| {
            let hint = match b.hint {
                Hint::None => return None,
                Hint::Text(t) => t,
                Hint::Dynamic(f) => f(app),
            };
            Some((b.label(), hint))
        })
        .collect()
}

/// The help overlay: every row of the table as `(keys, help line)`. Rows with the same help
/// line share one line (`j/k  ↓/↑`), so the overlay stays short enough for 80×24.
pub fn help_rows() -> Vec<(String, String)> {
    let mut rows: Vec<(Vec<String>, String)> = Vec::new();
    for b in KEYS {
        let (label, text) = (b.label(), b.help_text());
        match rows.iter_mut().find(|(_, t)| *t == text) {
            Some((labels, _)) if labels.contains(&label) => {}
            Some((labels, _)) => labels.push(label),
            None => rows.push((vec![label], text)),
        }
    }
    rows.into_iter()
        .map(|(labels, text)| (labels.join("  "), text))
        .collect()
}

/// The key that closes the help, for its title.
pub fn close_help_key() -> String {
    KEYS.iter()
        .flat_map(|b| b.keys)
        .find(|(_, c)| *c == Command::CloseHelp)
        .map_or_else(String::new, |(k, _)| k.name())
}

#[cfg(test)]
mod tests;
