//! How the dispatcher writes times and durations: in words for emails ("24 hours"), and as
//! timestamps for the send log and dead-letter headers.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// "24 hours", "1 hour", "30 minutes".
pub fn human_duration(d: Duration) -> String {
    let mins = d.as_secs().div_ceil(60);
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if mins >= 60 && mins.is_multiple_of(60) {
        plural(mins / 60, "hour")
    } else {
        plural(mins, "minute")
    }
}

/// When a dead letter died, for its header. Milliseconds: `dead list` orders by it.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_words() {
        assert_eq!(human_duration(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(human_duration(Duration::from_secs(3_600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(1_800)), "30 minutes");
    }
}
