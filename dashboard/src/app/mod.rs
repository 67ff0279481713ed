//! The dashboard's state: the views, the last good data of every feed, the selection and
//! filter of each view, the popup and the status message. Pure: no I/O and no drawing, so tests
//! feed key sequences and check the state.
//!
//! What each key does lives in [`keys`] (the one table of keys) and [`commands`] (what a
//! command does to this state). Destructive actions come out of [`App::on_key`] as
//! [`Action`]s only after the operator answered `y` to a confirm popup.

pub mod commands;
pub mod keys;

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use mailroom::dead::DeadLetter;

use crate::data::{
    AccountInfo, Action, Activity, QueueStat, SendRow, Source, Suppression, Update, UserRow, Users,
};

pub use keys::Mode;

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

    pub fn index(self) -> usize {
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

    /// What the keys mean right now: a popup takes every key, then an open filter.
    pub fn mode(&self) -> Mode {
        match self.popup {
            Popup::Confirm(_) => Mode::Confirm,
            Popup::Help => Mode::Help,
            Popup::Working(_) => Mode::Working,
            Popup::None if self.editing_filter => Mode::Filter,
            Popup::None => Mode::Browse,
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

    fn rows_in(&self, view: View) -> usize {
        match view {
            View::Overview => 0,
            View::Sends => self.visible_sends().len(),
            View::Users => self.visible_users().len(),
            View::Dead => self.visible_dead().len(),
            View::Suppressions => self.visible_suppressions().len(),
        }
    }

    /// Fresh data can have fewer rows than the selection points past.
    fn clamp(&mut self) {
        for v in View::ALL {
            let last = self.rows_in(v).saturating_sub(1);
            let s = &mut self.selected[v.index()];
            *s = (*s).min(last);
        }
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

    /// The keys that mean something right now, for the footer: `(keys, what they do)`.
    pub fn hints(&self) -> Vec<(String, &'static str)> {
        keys::hints(self)
    }
}
