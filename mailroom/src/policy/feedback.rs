//! What one SES event does: to the send log's `delivery` (delayed, delivered, bounced, complained; a
//! later, weaker event never hides a worse one) and to the suppression list (a permanent
//! bounce or a complaint other than `not-spam` at once; transient bounces once there are
//! [`FeedbackRules::soft_bounce_limit`] of them within [`FeedbackRules::soft_bounce_window`]).

use chrono::Duration;

use crate::domain::SuppressionReason;

/// The thresholds of the suppression rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackRules {
    /// Transient bounces of one address within the window that suppress it.
    pub soft_bounce_limit: i64,
    /// How far back transient bounces count.
    pub soft_bounce_window: Duration,
}

impl FeedbackRules {
    /// The window when only the limit is configured.
    pub const DEFAULT_WINDOW: Duration = Duration::days(7);

    pub fn new(soft_bounce_limit: i64) -> Self {
        Self {
            soft_bounce_limit,
            soft_bounce_window: Self::DEFAULT_WINDOW,
        }
    }
}

/// What the send log says of a sent email, worst last (a delay is the mildest: the mail may
/// still arrive, and a delivery replaces it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    Delayed,
    Delivered,
    Bounced,
    Complained,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delayed => "delayed",
            Delivery::Delivered => "delivered",
            Delivery::Bounced => "bounced",
            Delivery::Complained => "complained",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Delayed,
            Self::Delivered,
            Self::Bounced,
            Self::Complained,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// One event as the rules see it: SES's type in lower case (`bounce`, `complaint`,
/// `delivery`, …) and its subtype (`Permanent…`, `Transient…`, `not-spam`, …).
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub kind: &'a str,
    pub subtype: Option<&'a str>,
}

impl EventFacts<'_> {
    fn permanent(&self) -> bool {
        self.subtype.is_some_and(|s| s.starts_with("Permanent"))
    }

    fn transient(&self) -> bool {
        self.subtype.is_some_and(|s| s.starts_with("Transient"))
    }
}

/// The delivery status this event reports, if any. A transient bounce reports none: the mail
/// may still arrive.
pub fn delivery(e: EventFacts<'_>) -> Option<Delivery> {
    match e.kind {
        "delivery" => Some(Delivery::Delivered),
        "delivery_delay" => Some(Delivery::Delayed),
        "bounce" if e.permanent() => Some(Delivery::Bounced),
        "complaint" => Some(Delivery::Complained),
        _ => None,
    }
}

/// Whether `new` replaces what the send log says now: complained > bounced > delivered, so a
/// delivery notification arriving after a complaint does not hide it.
pub fn delivery_replaces(current: Option<Delivery>, new: Delivery) -> bool {
    current.is_none_or(|c| new > c)
}

/// What the event does to the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// Nothing.
    No,
    /// The address is suppressed now, for this reason.
    Now(SuppressionReason),
    /// A transient bounce: suppressed if the recent ones (this one included) reach the limit;
    /// ask [`soft_bounces_suppress`] with their count within the window.
    IfSoftBouncesReachLimit,
}

pub fn suppression(e: EventFacts<'_>) -> Suppression {
    match e.kind {
        "bounce" if e.permanent() => Suppression::Now(SuppressionReason::Bounce),
        "bounce" if e.transient() => Suppression::IfSoftBouncesReachLimit,
        // `not-spam`: the person said the mail was wanted; anything else is a complaint.
        "complaint" if e.subtype != Some("not-spam") => {
            Suppression::Now(SuppressionReason::Complaint)
        }
        _ => Suppression::No,
    }
}

/// Whether `recent` transient bounces within the window (the new one included) suppress.
pub fn soft_bounces_suppress(recent: i64, rules: FeedbackRules) -> bool {
    recent >= rules.soft_bounce_limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e<'a>(kind: &'a str, subtype: Option<&'a str>) -> EventFacts<'a> {
        EventFacts { kind, subtype }
    }

    #[test]
    fn each_event_kind_maps_to_its_delivery_and_suppression() {
        use Suppression::*;
        use SuppressionReason as R;
        let table: &[(&str, Option<&str>, Option<Delivery>, Suppression)] = &[
            ("delivery", None, Some(Delivery::Delivered), No),
            (
                "bounce",
                Some("Permanent"),
                Some(Delivery::Bounced),
                Now(R::Bounce),
            ),
            (
                "bounce",
                Some("Permanent/NoEmail"),
                Some(Delivery::Bounced),
                Now(R::Bounce),
            ),
            ("bounce", Some("Transient"), None, IfSoftBouncesReachLimit),
            (
                "bounce",
                Some("Transient/MailboxFull"),
                None,
                IfSoftBouncesReachLimit,
            ),
            ("bounce", Some("Undetermined"), None, No),
            ("bounce", None, None, No),
            (
                "complaint",
                None,
                Some(Delivery::Complained),
                Now(R::Complaint),
            ),
            (
                "complaint",
                Some("abuse"),
                Some(Delivery::Complained),
                Now(R::Complaint),
            ),
            (
                "complaint",
                Some("not-spam"),
                Some(Delivery::Complained),
                No,
            ),
            ("send", None, None, No),
            ("reject", None, None, No),
            (
                "delivery_delay",
                Some("MailboxFull"),
                Some(Delivery::Delayed),
                No,
            ),
        ];
        for (kind, sub, d, s) in table {
            assert_eq!(delivery(e(kind, *sub)), *d, "{kind} {sub:?}");
            assert_eq!(suppression(e(kind, *sub)), *s, "{kind} {sub:?}");
        }
    }

    #[test]
    fn a_weaker_delivery_never_hides_a_worse_one() {
        use Delivery::*;
        let all = [
            None,
            Some(Delayed),
            Some(Delivered),
            Some(Bounced),
            Some(Complained),
        ];
        for current in all {
            for new in [Delayed, Delivered, Bounced, Complained] {
                let replaces = delivery_replaces(current, new);
                // The status after applying the event is the worse of the two, always.
                let after = if replaces { Some(new) } else { current };
                assert_eq!(after, current.max(Some(new)), "{current:?} then {new:?}");
            }
        }
    }

    #[test]
    fn soft_bounces_suppress_at_the_limit() {
        let rules = FeedbackRules::new(3);
        assert!(!soft_bounces_suppress(2, rules));
        assert!(soft_bounces_suppress(3, rules));
        assert!(soft_bounces_suppress(4, rules));
        assert_eq!(rules.soft_bounce_window, Duration::days(7));
    }
}
