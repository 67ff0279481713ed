//! Wording shared by the views and the confirm questions: a count with its noun in the right
//! number, and an age in its largest whole unit.

/// `1 user`, `2 users`, `0 users`: the noun follows the count.
pub fn counted(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", noun(n, one, many))
}

/// The noun alone, for a count drawn in a style of its own.
pub fn noun<'a>(n: i64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// An age in seconds as its largest whole unit: `59s`, `5m`, `2h`, `3d`.
pub fn age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(counted(1, "user", "users"), "1 user");
        assert_eq!(counted(2, "user", "users"), "2 users");
        assert_eq!(counted(0, "address", "addresses"), "0 addresses");
        assert_eq!(counted(1, "address", "addresses"), "1 address");
    }

    #[test]
    fn ages_round_down_to_their_unit() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(30 * 3600), "1d");
    }
}
