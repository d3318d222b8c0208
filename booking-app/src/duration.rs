//! Durations as every flashsale setting writes them (`250ms`, `10s`, `2m`, `1h30m`, `1h 30m`):
//! humantime's syntax, the one parser of both crates (the operator reads the FlashSale's
//! `window.warmup` with it), for loadgen's flags, `token --ttl` and `IDEMPOTENCY_RETENTION`.

use std::time::Duration;

/// Parses a duration flag (`250ms`, `10s`, `2m`, `1h30m`, `1h 30m`): humantime's syntax, the
/// one the operator reads too (its `window.warmup`). A number needs its unit; `0` alone is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 10s, 250ms, 2m or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        // A bare number was seconds once; nothing documented relied on it (every script and
        // page writes a unit), so a number needs its unit here as everywhere else.
        for bad in ["1.5", "10", "ten", "-1s", "1h30", ""] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
