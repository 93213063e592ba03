//! UTC times as the pages, exports and the command line write and read them (ISO 8601),
//! without a calendar library: the proleptic Gregorian day arithmetic is a
//! few lines.

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

/// `2026-11-28T04:30:00.123Z`
pub fn format_utc(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// `2026-11-28T04:30` (what a `datetime-local` field shows).
pub fn format_minutes(ms: i64) -> String {
    format_utc(ms).chars().take(16).collect()
}

/// A time typed by a user or a script: milliseconds since 1970, or
/// `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS[.fff]`, with an
/// optional trailing `Z` (all UTC; a space may stand for the `T`).
pub fn parse(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| format!("{t:?} is out of range"));
    }
    let bad = || {
        format!(
            "{t:?} is not a time: use 2026-11-28, 2026-11-28T14:30 or 2026-11-28T14:30:05Z (UTC)"
        )
    };
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let num = |x: &str, lo: i64, hi: i64| -> Result<i64, String> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: i64 = x.parse().map_err(|_| bad())?;
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(bad())
        }
    };
    let mut dp = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (dp.next(), dp.next(), dp.next(), dp.next()) else {
        return Err(bad());
    };
    let (y, m, d) = (num(y, 1970, 9999)?, num(m, 1, 12)?, num(d, 1, 31)?);
    let mut ms = days_from_civil(y, m, d) * 86_400_000;
    if civil_from_days(days_from_civil(y, m, d)) != (y, m, d) {
        return Err(format!("{date:?} is not a date"));
    }
    if let Some(c) = clock {
        let (hms, frac) = match c.split_once('.') {
            Some((a, f)) => (a, Some(f)),
            None => (c, None),
        };
        let mut cp = hms.split(':');
        let h = num(cp.next().unwrap_or(""), 0, 23)?;
        let min = num(cp.next().unwrap_or(""), 0, 59)?;
        let sec = match cp.next() {
            Some(x) => num(x, 0, 60)?,
            None => 0,
        };
        if cp.next().is_some() {
            return Err(bad());
        }
        let milli = match frac {
            Some(f) if !f.is_empty() && f.len() <= 3 => {
                num(f, 0, 999)? * 10_i64.pow(3 - f.len() as u32)
            }
            Some(_) => return Err(bad()),
            None => 0,
        };
        ms += h * 3_600_000 + min * 60_000 + sec * 1000 + milli;
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn formats_and_parses_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_764_304_205_123), "2025-11-28T04:30:05.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_minutes(1_764_304_205_123), "2025-11-28T04:30");
        for ms in [0, 951_782_400_000, 1_764_304_205_123, 4_102_444_799_999] {
            assert_eq!(parse(&format_utc(ms)).unwrap(), ms);
        }
        assert_eq!(parse("2025-11-28").unwrap(), 1_764_288_000_000);
        assert_eq!(parse("2025-11-28T04:30").unwrap(), 1_764_304_200_000);
        assert_eq!(parse("2025-11-28 04:30:05").unwrap(), 1_764_304_205_000);
        assert_eq!(parse("2025-11-28T04:30:05.1Z").unwrap(), 1_764_304_205_100);
        assert_eq!(parse(" 1764304205123 ").unwrap(), 1_764_304_205_123);
        for bad in [
            "",
            "yesterday",
            "2025-13-01",
            "2025-02-30",
            "2025-11-28T25:00",
            "2025-11",
            "2025-11-28T04:30:05.1234",
            "-5",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
