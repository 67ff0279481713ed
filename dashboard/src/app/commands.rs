//! What each [`Command`] of the key table does to the [`App`]: moving, filtering, switching
//! views, and asking before an [`Action`]. Which key runs which command is decided by the table
//! in [`super::keys`], not here.

use crossterm::event::{KeyCode, KeyEvent};
use mailroom::dead::Filter;

use super::keys::{self, Command, Mode};
use super::{App, Popup, VIEWS, View};
use crate::data::Action;

impl App {
    /// Handles one key. Returns an action only when a confirm popup was answered `y`.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Action> {
        let mode = self.mode();
        let action = keys::lookup(mode, self.view, key).and_then(|c| self.run(c, key));
        if mode == Mode::Filter {
            // Every key typed changes the rows shown, so an old selection points nowhere useful.
            self.selected[self.view.index()] = 0;
        }
        action
    }

    /// Carries out one command; `key` is the key that ran it (typing needs its character).
    pub fn run(&mut self, command: Command, key: KeyEvent) -> Option<Action> {
        let i = self.view.index();
        match command {
            Command::Quit => self.quit = true,
            Command::OpenHelp => self.popup = Popup::Help,
            Command::CloseHelp => self.popup = Popup::None,
            Command::Show(v) => self.show(v),
            Command::NextView => self.show(View::ALL[(i + 1) % VIEWS]),
            Command::PreviousView => self.show(View::ALL[(i + VIEWS - 1) % VIEWS]),
            Command::Down => {
                let last = self.rows_in(self.view).saturating_sub(1);
                self.selected[i] = (self.selected[i] + 1).min(last);
            }
            Command::Up => self.selected[i] = self.selected[i].saturating_sub(1),
            Command::First => self.selected[i] = 0,
            Command::Last => self.selected[i] = self.rows_in(self.view).saturating_sub(1),
            Command::StartFilter => self.editing_filter = true,
            Command::ApplyFilter => self.editing_filter = false,
            Command::ClearFilter => {
                self.filters[i].clear();
                self.editing_filter = false;
                self.selected[i] = 0;
            }
            Command::DeleteChar => {
                self.filters[i].pop();
            }
            Command::TypeChar => {
                if let KeyCode::Char(c) = key.code {
                    self.filters[i].push(c);
                }
            }
            Command::ReplaySelected => self.ask_replay_selected(),
            Command::ReplayShown => self.ask_replay_shown(),
            Command::ResendLink => self.ask_resend(),
            Command::Unsuppress => self.ask_unsuppress(),
            Command::Yes => {
                if let Popup::Confirm(action) =
                    std::mem::replace(&mut self.popup, Popup::Working("starting…".into()))
                {
                    return Some(action);
                }
            }
            Command::No => {
                self.popup = Popup::None;
                self.message = Some("cancelled".into());
            }
        }
        None
    }

    /// Switches the view. The status message was about the view left behind, so it goes too.
    pub fn show(&mut self, view: View) {
        if view != self.view {
            self.view = view;
            self.message = None;
        }
    }

    fn confirm_or(&mut self, action: Option<Action>, otherwise: &str) {
        match action {
            Some(a) => self.popup = Popup::Confirm(a),
            None => self.message = Some(otherwise.into()),
        }
    }

    fn ask_replay_selected(&mut self) {
        let action = self
            .visible_dead()
            .get(self.selected())
            .and_then(|d| d.job_id.clone())
            .map(|id| Action::Replay {
                filter: Filter::Jobs(vec![id]),
                count: 1,
            });
        self.confirm_or(action, "nothing selected to replay");
    }

    /// Without a filter, everything in the dead-letter queue, including letters that arrived
    /// after the last refresh; with one, exactly the jobs shown.
    fn ask_replay_shown(&mut self) {
        let visible = self.visible_dead();
        let action = if visible.is_empty() {
            None
        } else if self.filter().is_empty() {
            Some(Action::Replay {
                filter: Filter::All,
                count: visible.len(),
            })
        } else {
            let ids: Vec<String> = visible.iter().filter_map(|d| d.job_id.clone()).collect();
            Some(Action::Replay {
                count: ids.len(),
                filter: Filter::Jobs(ids),
            })
        };
        self.confirm_or(action, "no dead letters to replay");
    }

    fn ask_resend(&mut self) {
        let action =
            self.visible_users()
                .get(self.selected())
                .map(|u| Action::ResendVerification {
                    email: u.email.clone(),
                });
        self.confirm_or(action, "no user selected");
    }

    fn ask_unsuppress(&mut self) {
        let action = self
            .visible_suppressions()
            .get(self.selected())
            .map(|s| Action::Unsuppress {
                email: s.email.clone(),
            });
        self.confirm_or(action, "no address selected");
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyModifiers;

    use super::*;
    use crate::data::Suppression;

    fn press(app: &mut App, c: char) -> Option<Action> {
        app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    #[test]
    fn changing_the_view_clears_the_status_message() {
        let mut app = App::new();
        app.finished(Ok("replayed 1 of 1 dead letter (0 parked)".into()));
        press(&mut app, '1');
        assert!(app.message.is_some(), "the same view: the message stays");
        press(&mut app, '2');
        assert_eq!(app.message, None);
        app.message = Some("cancelled".into());
        app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
        assert_eq!(app.view, View::Users);
        assert_eq!(app.message, None);
    }

    #[test]
    fn a_key_without_rows_says_so() {
        let mut app = App::new();
        press(&mut app, '5');
        assert_eq!(press(&mut app, 'x'), None);
        assert_eq!(app.message.as_deref(), Some("no address selected"));
        app.apply(
            crate::data::Update::Suppressions(vec![Suppression {
                email: "a@example.com".into(),
                reason: "manual".into(),
                detail: String::new(),
                created_at: chrono::Utc::now(),
            }]),
            std::time::Instant::now(),
        );
        press(&mut app, 'x');
        assert_eq!(
            press(&mut app, 'y'),
            Some(Action::Unsuppress {
                email: "a@example.com".into()
            })
        );
    }
}
