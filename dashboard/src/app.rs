//! The dashboard's state and what each key does to it. Pure: no I/O and no drawing, so tests
//! feed key sequences and check the state. Destructive actions come out of [`App::on_key`] as
//! [`Action`]s only after the operator answered `y` to a confirm popup.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use mailroom::dead::{DeadLetter, Filter};

use crate::data::{
    AccountInfo, Action, Activity, QueueStat, SendRow, Source, Suppression, Update, UserRow, Users,
};

/// The views, in key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    Overview,
    Sends,
    Users,
    Dead,
    Suppressions,
}

/// How many views there are (keys 1 to N).
const VIEWS: usize = 5;

impl View {
    pub const ALL: [View; VIEWS] = [
        View::Overview,
        View::Sends,
        View::Users,
        View::Dead,
        View::Suppressions,
    ];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Sends => "Sends",
            View::Users => "Users",
            View::Dead => "Dead letters",
            View::Suppressions => "Suppressed",
        }
    }

    fn index(self) -> usize {
        View::ALL.iter().position(|v| *v == self).expect("listed")
    }
}

/// The last good data of one source, when it came, and the last error since.
#[derive(Debug, Clone)]
pub struct Feed<T> {
    pub data: Option<T>,
    pub updated: Option<Instant>,
    pub error: Option<String>,
}

impl<T> Default for Feed<T> {
    fn default() -> Self {
        Self {
            data: None,
            updated: None,
            error: None,
        }
    }
}

impl<T> Feed<T> {
    fn set(&mut self, data: T, at: Instant) {
        self.data = Some(data);
        self.updated = Some(at);
        self.error = None;
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    None,
    Help,
    Confirm(Action),
    /// An action is running; the text is its latest progress.
    Working(String),
}

/// Samples of queue depth kept for the sparklines.
const HISTORY: usize = 60;

pub struct App {
    pub view: View,
    pub queues: Feed<Vec<QueueStat>>,
    pub activity: Feed<Activity>,
    pub users: Feed<Users>,
    pub dead: Feed<Vec<DeadLetter>>,
    pub account: Feed<AccountInfo>,
    pub suppressions: Feed<Vec<Suppression>>,
    /// The QUEUE_PREFIX watched, shown with the queues.
    pub prefix: String,
    /// Ready-message history per queue, oldest first.
    pub depth: HashMap<String, VecDeque<u64>>,
    selected: [usize; VIEWS],
    filters: [String; VIEWS],
    /// Typing a filter for the current view.
    pub editing_filter: bool,
    pub popup: Popup,
    /// The last action's outcome or a notice, for the status line.
    pub message: Option<String>,
    pub quit: bool,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    pub fn new() -> Self {
        Self {
            view: View::Overview,
            queues: Feed::default(),
            activity: Feed::default(),
            users: Feed::default(),
            dead: Feed::default(),
            account: Feed::default(),
            suppressions: Feed::default(),
            prefix: String::new(),
            depth: HashMap::new(),
            selected: [0; VIEWS],
            filters: Default::default(),
            editing_filter: false,
            popup: Popup::None,
            message: None,
            quit: false,
        }
    }

    pub fn apply(&mut self, update: Update, at: Instant) {
        match update {
            Update::Queues(q) => {
                for s in &q {
                    let h = self.depth.entry(s.name.clone()).or_default();
                    h.push_back(s.ready);
                    while h.len() > HISTORY {
                        h.pop_front();
                    }
                }
                self.queues.set(q, at);
            }
            Update::Activity(a) => self.activity.set(a, at),
            Update::Users(u) => self.users.set(u, at),
            Update::Dead(d) => {
                let mut d = d;
                // Grouped by error class, oldest first within a class.
                d.sort_by(|a, b| {
                    a.error_class
                        .cmp(&b.error_class)
                        .then(a.died_at.cmp(&b.died_at))
                });
                self.dead.set(d, at);
            }
            Update::Account(a) => self.account.set(a, at),
            Update::Suppressions(l) => self.suppressions.set(l, at),
        }
        self.clamp();
    }

    /// A failed refresh: the last good data stays; the error goes to the status line.
    pub fn fail(&mut self, source: Source, error: String) {
        let e = Some(error);
        match source {
            Source::Queues => self.queues.error = e,
            Source::Activity => self.activity.error = e,
            Source::Users => self.users.error = e,
            Source::Dead => self.dead.error = e,
            Source::Account => self.account.error = e,
            Source::Suppressions => self.suppressions.error = e,
        }
    }

    pub fn feed_state(&self, source: Source) -> (Option<Instant>, Option<&str>) {
        match source {
            Source::Queues => (self.queues.updated, self.queues.error.as_deref()),
            Source::Activity => (self.activity.updated, self.activity.error.as_deref()),
            Source::Users => (self.users.updated, self.users.error.as_deref()),
            Source::Dead => (self.dead.updated, self.dead.error.as_deref()),
            Source::Account => (self.account.updated, self.account.error.as_deref()),
            Source::Suppressions => (
                self.suppressions.updated,
                self.suppressions.error.as_deref(),
            ),
        }
    }

    pub fn filter(&self) -> &str {
        &self.filters[self.view.index()]
    }

    pub fn filter_of(&self, view: View) -> &str {
        &self.filters[view.index()]
    }

    pub fn selected(&self) -> usize {
        self.selected[self.view.index()]
    }

    pub fn selected_in(&self, view: View) -> usize {
        self.selected[view.index()]
    }

    fn matches(filter: &str, fields: &[&str]) -> bool {
        let f = filter.to_lowercase();
        f.is_empty() || fields.iter().any(|x| x.to_lowercase().contains(&f))
    }

    pub fn visible_sends(&self) -> Vec<&SendRow> {
        let f = self.filter_of(View::Sends);
        self.activity
            .data
            .iter()
            .flat_map(|a| &a.recent)
            .filter(|s| Self::matches(f, &[&s.kind, &s.recipient, &s.status, &s.error]))
            .collect()
    }

    pub fn visible_users(&self) -> Vec<&UserRow> {
        let f = self.filter_of(View::Users);
        self.users
            .data
            .iter()
            .flat_map(|u| &u.oldest)
            .filter(|u| Self::matches(f, &[&u.name, &u.email]))
            .collect()
    }

    pub fn visible_dead(&self) -> Vec<&DeadLetter> {
        let f = self.filter_of(View::Dead);
        self.dead
            .data
            .iter()
            .flatten()
            .filter(|d| {
                Self::matches(
                    f,
                    &[
                        &d.error_class,
                        d.recipient.as_deref().unwrap_or(""),
                        d.kind.as_deref().unwrap_or(""),
                        d.job_id.as_deref().unwrap_or(""),
                        &d.last_error,
                    ],
                )
            })
            .collect()
    }

    pub fn visible_suppressions(&self) -> Vec<&Suppression> {
        let f = self.filter_of(View::Suppressions);
        self.suppressions
            .data
            .iter()
            .flatten()
            .filter(|s| Self::matches(f, &[&s.email, &s.reason, &s.detail]))
            .collect()
    }

    fn rows_in_view(&self) -> usize {
        match self.view {
            View::Overview => 0,
            View::Sends => self.visible_sends().len(),
            View::Users => self.visible_users().len(),
            View::Dead => self.visible_dead().len(),
            View::Suppressions => self.visible_suppressions().len(),
        }
    }

    fn clamp(&mut self) {
        for v in View::ALL {
            let view = self.view;
            self.view = v;
            let n = self.rows_in_view();
            self.selected[v.index()] = self.selected[v.index()].min(n.saturating_sub(1));
            self.view = view;
        }
    }

    /// Handles one key. Returns an action only when a confirm popup was answered `y`.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.quit = true;
            return None;
        }
        match self.popup.clone() {
            Popup::Confirm(action) => {
                match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => {
                        self.popup = Popup::Working("starting…".into());
                        return Some(action);
                    }
                    KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                        self.popup = Popup::None;
                        self.message = Some("cancelled".into());
                    }
                    _ => {}
                }
                return None;
            }
            Popup::Help => {
                if matches!(
                    key.code,
                    KeyCode::Esc | KeyCode::Char('?') | KeyCode::Char('q')
                ) {
                    self.popup = Popup::None;
                }
                return None;
            }
            // While an action runs, only quitting is possible.
            Popup::Working(_) => {
                if key.code == KeyCode::Char('q') {
                    self.quit = true;
                }
                return None;
            }
            Popup::None => {}
        }
        if self.editing_filter {
            let i = self.view.index();
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.filters[i].clear();
                    self.editing_filter = false;
                }
                KeyCode::Backspace => {
                    self.filters[i].pop();
                }
                KeyCode::Char(c) => self.filters[i].push(c),
                _ => {}
            }
            self.selected[i] = 0;
            return None;
        }
        let i = self.view.index();
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.popup = Popup::Help,
            KeyCode::Char(c @ '1'..='5') => self.view = View::ALL[(c as u8 - b'1') as usize],
            KeyCode::Tab => self.view = View::ALL[(i + 1) % VIEWS],
            KeyCode::BackTab => self.view = View::ALL[(i + VIEWS - 1) % VIEWS],
            KeyCode::Char('j') | KeyCode::Down => {
                let n = self.rows_in_view();
                if n > 0 {
                    self.selected[i] = (self.selected[i] + 1).min(n - 1);
                }
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.selected[i] = self.selected[i].saturating_sub(1)
            }
            KeyCode::Char('g') | KeyCode::Home => self.selected[i] = 0,
            KeyCode::Char('G') | KeyCode::End => {
                self.selected[i] = self.rows_in_view().saturating_sub(1)
            }
            KeyCode::Char('/') if self.view != View::Overview => self.editing_filter = true,
            KeyCode::Esc => {
                self.filters[i].clear();
                self.selected[i] = 0;
            }
            KeyCode::Char('r') if self.view == View::Dead => {
                let job = self
                    .visible_dead()
                    .get(self.selected[i])
                    .and_then(|d| d.job_id.clone());
                match job {
                    Some(id) => {
                        self.popup = Popup::Confirm(Action::Replay {
                            filter: Filter::Jobs(vec![id]),
                            count: 1,
                        })
                    }
                    None => self.message = Some("nothing selected to replay".into()),
                }
            }
            KeyCode::Char('R') if self.view == View::Dead => {
                let visible = self.visible_dead();
                if visible.is_empty() {
                    self.message = Some("no dead letters to replay".into());
                } else if self.filter().is_empty() {
                    self.popup = Popup::Confirm(Action::Replay {
                        filter: Filter::All,
                        count: visible.len(),
                    });
                } else {
                    let ids: Vec<String> =
                        visible.iter().filter_map(|d| d.job_id.clone()).collect();
                    self.popup = Popup::Confirm(Action::Replay {
                        count: ids.len(),
                        filter: Filter::Jobs(ids),
                    });
                }
            }
            KeyCode::Char('x') if self.view == View::Suppressions => {
                match self.visible_suppressions().get(self.selected[i]) {
                    Some(s) => {
                        self.popup = Popup::Confirm(Action::Unsuppress {
                            email: s.email.clone(),
                        })
                    }
                    None => self.message = Some("no address selected".into()),
                }
            }
            KeyCode::Char('r') if self.view == View::Users => {
                match self.visible_users().get(self.selected[i]) {
                    Some(u) => {
                        self.popup = Popup::Confirm(Action::ResendVerification {
                            email: u.email.clone(),
                        })
                    }
                    None => self.message = Some("no user selected".into()),
                }
            }
            _ => {}
        }
        None
    }

    /// Progress of the running action.
    pub fn progress(&mut self, line: String) {
        if let Popup::Working(_) = self.popup {
            self.popup = Popup::Working(line);
        }
    }

    /// The running action finished.
    pub fn finished(&mut self, result: Result<String, String>) {
        self.popup = Popup::None;
        self.message = Some(match result {
            Ok(s) => s,
            Err(e) => format!("failed: {e}"),
        });
    }

    /// The keys the current view accepts, for the footer.
    pub fn keys(&self) -> Vec<(&'static str, &'static str)> {
        if let Popup::Confirm(_) = self.popup {
            return vec![("y", "yes"), ("n/Esc", "no")];
        }
        if self.editing_filter {
            return vec![
                ("Enter", "apply"),
                ("Esc", "clear"),
                ("Backspace", "delete"),
            ];
        }
        let mut k = vec![("1-5/Tab", "views")];
        if self.view != View::Overview {
            k.push(("j/k", "move"));
            k.push(("/", "filter"));
        }
        match self.view {
            View::Dead => {
                k.push(("r", "replay"));
                k.push((
                    "R",
                    if self.filter().is_empty() {
                        "replay all"
                    } else {
                        "replay filtered"
                    },
                ));
            }
            View::Users => k.push(("r", "resend link")),
            View::Suppressions => k.push(("x", "mail again")),
            _ => {}
        }
        k.push(("?", "help"));
        k.push(("q", "quit"));
        k
    }
}

/// Every key, for the help overlay.
pub const HELP: &[(&str, &str)] = &[
    (
        "1 2 3 4 5",
        "Overview, Sends, Users, Dead letters, Suppressed",
    ),
    ("Tab / Shift-Tab", "next / previous view"),
    ("j k  ↓ ↑", "move the selection"),
    ("g G  Home End", "first / last row"),
    ("/", "filter the current view (Enter applies, Esc clears)"),
    ("Esc", "close a popup, clear the filter"),
    (
        "r",
        "replay the selected dead letter · Users: resend the link",
    ),
    ("R", "Dead letters: replay all, or the filtered ones"),
    ("x", "Suppressed: take the address off the list"),
    ("y / n", "confirm or cancel an action"),
    ("?", "this help"),
    ("q  Ctrl-C", "quit and restore the terminal"),
];
