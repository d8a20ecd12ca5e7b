//! Shared vocabulary of the core: detector names, spans, dates.

use serde::Deserialize;

/// A detector, by its stable type name (dlp/_types.py).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Deserialize, PartialOrd, Ord)]
pub enum Detector {
    #[serde(rename = "EMAIL")]
    Email,
    #[serde(rename = "PHONE")]
    Phone,
    #[serde(rename = "SSN")]
    Ssn,
    #[serde(rename = "CREDIT_CARD")]
    CreditCard,
    #[serde(rename = "IBAN")]
    Iban,
    #[serde(rename = "IP_ADDRESS")]
    IpAddress,
    #[serde(rename = "DATE_OF_BIRTH")]
    DateOfBirth,
    #[serde(rename = "SECRET")]
    Secret,
    #[serde(rename = "NAME")]
    Name,
    #[serde(rename = "ADDRESS")]
    Address,
}

impl Detector {
    pub const ALL: [Detector; 10] = [
        Detector::Email,
        Detector::Phone,
        Detector::Ssn,
        Detector::CreditCard,
        Detector::Iban,
        Detector::IpAddress,
        Detector::DateOfBirth,
        Detector::Secret,
        Detector::Name,
        Detector::Address,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "EMAIL",
            Detector::Phone => "PHONE",
            Detector::Ssn => "SSN",
            Detector::CreditCard => "CREDIT_CARD",
            Detector::Iban => "IBAN",
            Detector::IpAddress => "IP_ADDRESS",
            Detector::DateOfBirth => "DATE_OF_BIRTH",
            Detector::Secret => "SECRET",
            Detector::Name => "NAME",
            Detector::Address => "ADDRESS",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.iter().copied().find(|d| d.name() == name)
    }

    /// Index in `ALL` (for per-detector arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A validator's verdict: (base confidence, start, end); the start may move (an e-mail's
/// leading punctuation is trimmed). Offsets are UTF-8 byte offsets into the text.
pub type Validated = Option<(f64, usize, usize)>;

/// A calendar date (proleptic Gregorian), as Python's `datetime.date`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}
