//! RFC 3339 timestamps, as every payload and record writes them.

use std::time::SystemTime;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats a time as RFC 3339 (UTC, milliseconds).
pub fn format(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    let t = t
        .replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses an RFC 3339 timestamp.
pub fn parse(s: &str) -> Result<SystemTime, time::error::Parse> {
    OffsetDateTime::parse(s, &Rfc3339).map(SystemTime::from)
}

/// serde adapter: `#[serde(with = "crate::time_fmt::rfc3339")]`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    /// Writes the time as RFC 3339.
    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    /// Reads an RFC 3339 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        super::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        let t = super::parse("2026-11-22T08:30:00.250Z").expect("valid");
        assert_eq!(super::format(t), "2026-11-22T08:30:00.25Z");
    }
}
