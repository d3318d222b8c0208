//! Durations as every flashsale setting writes them ("10m", "1h30m", "1h 30m", "90s", "250ms"):
//! humantime's syntax, the one parser of both crates (booking-app's loadgen flags read the same).
//! The CRD's CEL rule for `window.warmup` is `WARMUP_RULE`, the same grammar as a regular
//! expression, so the API server refuses what the operator could not read.

use chrono::TimeDelta;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration such as 10m, 1h30m or 90s: {reason}")]
pub struct DurationError {
    pub text: String,
    pub reason: String,
}

/// The CEL rule of `window.warmup`: `0`, or one or more `<digits>[.<digits>]<unit>` groups with
/// optional ASCII white space around each part (a class spelled out: `\s` is ASCII in the API
/// server's RE2 but Unicode in kube's client-side CEL), units as humantime spells them — the
/// grammar `parse_duration` reads (crd_tests checks the two agree). The parser also refuses a fraction
/// it cannot hold exactly, such as `1.5ns`; the operator then reports that as an invalid spec.
pub const WARMUP_RULE: &str = r"self.matches('^(0|[ \\t\\n\\r]*([0-9]+(\\.[0-9]+)?[ \\t\\n\\r]*(nanos|nsec|ns|usec|us|µs|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)[ \\t\\n\\r]*)+)$')";

/// Parses a duration; a month is 30.44 days and a year 365.25 (humantime's definitions).
pub fn parse_duration(text: &str) -> Result<TimeDelta, DurationError> {
    let fail = |reason: String| DurationError {
        text: text.to_owned(),
        reason,
    };
    let std = humantime::parse_duration(text).map_err(|e| fail(e.to_string()))?;
    TimeDelta::from_std(std).map_err(|_| fail("longer than the operator can count".into()))
}

/// Texts that are not durations in any spelling (the hand-written Go-style parser this replaced
/// refused them too, and so does the CRD's rule: crd_tests checks both).
#[cfg(test)]
pub(crate) const NOT_DURATIONS: &[&str] = &[
    "",
    "10",
    "m",
    "1.m",
    ".5s",
    "-1m",
    "1h30",
    "1e3s",
    "ten minutes",
    "5x",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10m").unwrap(), TimeDelta::minutes(10));
        assert_eq!(parse_duration("1h30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(parse_duration("1h 30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(parse_duration("90s").unwrap(), TimeDelta::minutes(90) / 60);
        assert_eq!(
            parse_duration("1.5s").unwrap(),
            TimeDelta::milliseconds(1500)
        );
        assert_eq!(
            parse_duration("250ms").unwrap(),
            TimeDelta::milliseconds(250)
        );
        assert_eq!(
            parse_duration("2h45m30s").unwrap(),
            TimeDelta::seconds(2 * 3600 + 45 * 60 + 30)
        );
        assert_eq!(parse_duration("7us").unwrap(), TimeDelta::microseconds(7));
        assert_eq!(parse_duration("0s").unwrap(), TimeDelta::zero());
        assert_eq!(parse_duration("0").unwrap(), TimeDelta::zero());
        assert_eq!(parse_duration("2 hours").unwrap(), TimeDelta::hours(2));
        assert_eq!(parse_duration("1d").unwrap(), TimeDelta::days(1));
    }

    #[test]
    fn what_the_go_parser_refused_is_still_refused() {
        // The Go-style parser also refused "10 m" and "1d", which humantime reads as 10 minutes
        // and a day.
        for &bad in NOT_DURATIONS {
            let err = parse_duration(bad).expect_err(bad);
            assert_eq!(err.text, bad);
        }
        // Below a nanosecond cannot be held (the old parser rounded it down).
        assert!(parse_duration("1.5ns").is_err());
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(parse_duration("999999999999999y").is_err());
        let err = parse_duration("9999999999y").unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
    }
}
