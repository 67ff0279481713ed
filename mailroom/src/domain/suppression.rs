//! Why an address is on the suppression list, and an entry of SES's account-level list.

/// Why an address is on the suppression list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// A permanent (hard) bounce.
    Bounce,
    /// The person marked an email as spam.
    Complaint,
    /// Repeated transient bounces.
    SoftBounce,
    /// An operator added it.
    Manual,
    /// Imported from SES's account-level suppression list.
    Ses,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::Bounce,
        SuppressionReason::Complaint,
        SuppressionReason::SoftBounce,
        SuppressionReason::Manual,
        SuppressionReason::Ses,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::SoftBounce => "soft_bounce",
            SuppressionReason::Manual => "manual",
            SuppressionReason::Ses => "ses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One address on SES's account-level suppression list.
#[derive(Debug, Clone, PartialEq)]
pub struct SuppressedAddress {
    pub email: String,
    /// BOUNCE or COMPLAINT, as SES says.
    pub reason: String,
}
