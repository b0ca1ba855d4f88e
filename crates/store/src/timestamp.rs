//! Points in time as kas stores and shows them: UTC, millisecond
//! precision, written `2026-12-01T20:33:01.123Z` (as GitLab writes them).

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// A stored time that is not RFC 3339.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time")]
pub struct BadTimestamp(String);

impl Timestamp {
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp(now.replace_millisecond(now.millisecond()).unwrap_or(now))
    }

    /// The time `ahead` from now.
    pub fn from_now(ahead: Duration) -> Timestamp {
        Timestamp(Timestamp::now().0 + ahead)
    }

    /// The time `back` before now.
    pub fn before_now(back: Duration) -> Timestamp {
        Timestamp(Timestamp::now().0 - back)
    }

    pub fn is_past(&self) -> bool {
        self.0 < OffsetDateTime::now_utc()
    }

    /// How long ago this was (zero for a time to come).
    pub fn age(&self) -> Duration {
        (OffsetDateTime::now_utc() - self.0)
            .try_into()
            .unwrap_or(Duration::ZERO)
    }

    /// Whether this is more than `age` ago.
    pub fn is_older_than(&self, age: Duration) -> bool {
        OffsetDateTime::now_utc() - self.0 > age
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let text = self.0.format(&format).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = BadTimestamp;

    fn from_str(text: &str) -> Result<Timestamp, BadTimestamp> {
        OffsetDateTime::parse(text, &Rfc3339)
            .map(|t| Timestamp(t.to_offset(time::UtcOffset::UTC)))
            .map_err(|_| BadTimestamp(text.to_string()))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = BadTimestamp;

    fn try_from(text: String) -> Result<Timestamp, BadTimestamp> {
        text.parse()
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_stored_and_read_back() {
        let at: Timestamp = "2026-12-01T20:33:01.123Z".parse().unwrap();
        assert_eq!(at.to_string(), "2026-12-01T20:33:01.123Z");
        let shifted: Timestamp = "2026-12-01T21:33:01.123+01:00".parse().unwrap();
        assert_eq!(shifted, at, "offsets are converted to UTC");
        assert!(at.is_past());
        assert!(at.is_older_than(Duration::from_secs(60)));
        assert!(!Timestamp::from_now(Duration::from_secs(60)).is_past());
        assert!(!Timestamp::now().is_older_than(Duration::from_secs(60)));
        assert!(Timestamp::before_now(Duration::from_secs(61)).is_older_than(Duration::from_secs(60)));
        let error = "yesterday".parse::<Timestamp>().unwrap_err();
        assert!(error.to_string().contains("\"yesterday\" is not an RFC 3339 time"));
        let json = serde_json::to_string(&at).unwrap();
        assert_eq!(json, "\"2026-12-01T20:33:01.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), at);
    }
}
