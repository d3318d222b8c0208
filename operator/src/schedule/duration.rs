//! Go-style durations ("10m", "1h30m", "1.5s"), the form Kubernetes users write and the CRD's CEL
//! rule admits for `window.warmup`.

use chrono::TimeDelta;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration such as 10m or 1h30m")]
pub struct DurationError(pub String);

/// Parses one or more `<number>[.<fraction>]<unit>` groups, unit one of ns, us, ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<TimeDelta, DurationError> {
    let fail = || DurationError(text.to_owned());
    let mut rest = text;
    let mut total_ns: i128 = 0;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if whole_len == 0 {
            return Err(fail());
        }
        let whole: i128 = rest[..whole_len].parse().map_err(|_| fail())?;
        rest = &rest[whole_len..];
        let mut fraction = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            if len == 0 {
                return Err(fail());
            }
            fraction = &after_dot[..len];
            rest = &after_dot[len..];
        }
        let (unit_ns, unit_len) = unit(rest).ok_or_else(fail)?;
        rest = &rest[unit_len..];
        // Fractions beyond nanoseconds cannot matter: keep 18 digits at most so 10^n fits.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_ns = if fraction.is_empty() {
            0
        } else {
            let digits: i128 = fraction.parse().map_err(|_| fail())?;
            digits * unit_ns / 10_i128.pow(u32::try_from(fraction.len()).map_err(|_| fail())?)
        };
        total_ns = whole
            .checked_mul(unit_ns)
            .and_then(|n| n.checked_add(fraction_ns))
            .and_then(|n| total_ns.checked_add(n))
            .ok_or_else(fail)?;
    }
    let total_ns = i64::try_from(total_ns).map_err(|_| fail())?;
    Ok(TimeDelta::nanoseconds(total_ns))
}

/// The unit at the start of `rest`: nanoseconds per unit and the unit's length.
fn unit(rest: &str) -> Option<(i128, usize)> {
    const UNITS: [(&str, i128); 6] = [
        ("ns", 1),
        ("us", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    // Two-letter units first, so "ms" is not read as "m" followed by garbage.
    UNITS
        .iter()
        .find(|(name, _)| rest.starts_with(name))
        .map(|(name, ns)| (*ns, name.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_duration("10m").unwrap(), TimeDelta::minutes(10));
        assert_eq!(parse_duration("1h30m").unwrap(), TimeDelta::minutes(90));
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
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "10", "m", "1.m", ".5s", "-1m", "10 m", "1d", "1h30", "1e3s",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(DurationError(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(parse_duration("99999999999999999999h").is_err());
        assert!(
            parse_duration("9999999h").is_err(),
            "beyond i64 nanoseconds"
        );
    }
}
