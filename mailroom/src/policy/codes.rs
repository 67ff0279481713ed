//! One-time codes: what a guess at a code gets. A guess takes one of the code's attempts
//! before it is compared (so concurrent guesses cannot share one); a right guess on the last
//! attempt still works; once the attempts are gone the code is dead. An address with no live
//! code (no such user, none requested, or replaced by a newer request) is answered from a count
//! of its misses, exactly as a real code would be, so the answers do not tell whether the
//! address has an account.

/// What a guess gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The code is right: the store may now consume it.
    Matched,
    /// 422 `invalid_code`, with the guesses left.
    Wrong { attempts_left: u32 },
    /// 410 `code_expired`.
    Expired,
    /// 410 `code_used`.
    Used,
    /// 410 `code_exhausted`: every attempt was spent.
    Exhausted,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Matched => "matched",
            Answer::Wrong { .. } => "invalid_code",
            Answer::Expired => "code_expired",
            Answer::Used => "code_used",
            Answer::Exhausted => "code_exhausted",
        }
    }
}

/// A guess at a live code, whose attempt was taken: `attempts_left` is what remains after it.
pub fn guess(matched: bool, attempts_left: i32) -> Answer {
    if matched {
        Answer::Matched
    } else {
        Answer::Wrong {
            attempts_left: attempts_left.max(0) as u32,
        }
    }
}

/// The facts of a code that could not take an attempt (it is not live).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadCode {
    pub used: bool,
    pub expired: bool,
    pub attempts_left: i32,
    /// Its job is still the user's current one of its purpose (a newer request replaces it).
    pub current: bool,
}

/// What a guess at a code that is not live gets; None when it should count as a miss, as if
/// there were no code (one replaced by a newer request is as good as none).
pub fn dead(code: DeadCode) -> Option<Answer> {
    if !code.current {
        return None;
    }
    // Used first: a code used and then expired was used. Then exhausted: out of attempts is
    // final whatever the clock says.
    Some(if code.used {
        Answer::Used
    } else if code.attempts_left <= 0 {
        Answer::Exhausted
    } else if code.expired {
        Answer::Expired
    } else {
        // Not reached (a live code takes its attempt), but a row that changed between the two
        // reads is safest answered as expired: the person asks for a new code.
        Answer::Expired
    })
}

/// A guess at an address with no live code, `misses` counted in the window with this one.
/// The same sequence a real code gives: `max - 1`, …, 0 attempts left, then exhausted.
pub fn miss(misses: i32, max_attempts: i32) -> Answer {
    if misses > max_attempts {
        Answer::Exhausted
    } else {
        Answer::Wrong {
            attempts_left: (max_attempts - misses).max(0) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code of `max` attempts, guessed wrong every time: the answers, in order.
    fn wrong_guesses_at_a_code(max: i32, n: usize) -> Vec<Answer> {
        let mut left = max;
        (0..n)
            .map(|_| {
                if left > 0 {
                    left -= 1;
                    guess(false, left)
                } else {
                    dead(DeadCode {
                        used: false,
                        expired: false,
                        attempts_left: left,
                        current: true,
                    })
                    .unwrap()
                }
            })
            .collect()
    }

    #[test]
    fn an_unknown_address_answers_exactly_like_a_wrong_code() {
        for max in [1, 5, 10] {
            let n = max as usize + 3;
            let misses: Vec<Answer> = (1..=n as i32).map(|m| miss(m, max)).collect();
            assert_eq!(misses, wrong_guesses_at_a_code(max, n), "max {max}");
        }
        let five = wrong_guesses_at_a_code(5, 7);
        assert_eq!(five[0], Answer::Wrong { attempts_left: 4 });
        assert_eq!(five[4], Answer::Wrong { attempts_left: 0 });
        assert_eq!(five[5], Answer::Exhausted);
    }

    #[test]
    fn a_right_guess_on_the_last_attempt_works_and_dead_codes_say_why() {
        assert_eq!(guess(true, 0), Answer::Matched);
        let d = |used, expired, attempts_left, current| DeadCode {
            used,
            expired,
            attempts_left,
            current,
        };
        assert_eq!(dead(d(true, true, 0, true)), Some(Answer::Used));
        assert_eq!(dead(d(false, true, 0, true)), Some(Answer::Exhausted));
        assert_eq!(dead(d(false, true, 3, true)), Some(Answer::Expired));
        assert_eq!(dead(d(true, false, 3, false)), None, "replaced: a miss");
    }
}
