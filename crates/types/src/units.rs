//! Physical units as integers: energy in milliwatt-hours, prices in token base units per kWh,
//! delivery slots of 15 minutes.
//!
//! Consensus code never sees a float. Human-readable decimal forms (`"1.5"` kWh) are parsed and
//! printed here, exactly, by the same fixed-point routine as token amounts.

use crate::amount::{format_fixed, parse_fixed, FixedError};

/// Milliwatt-hours in one kilowatt-hour.
pub const MWH_PER_KWH: u64 = 1_000_000;
/// Decimal places of a kWh figure that a mWh integer represents exactly.
pub const KWH_DECIMALS: u32 = 6;
/// Length of a market delivery slot in milliseconds (15 minutes).
pub const SLOT_MS: u64 = 15 * 60 * 1000;
/// The last slot a transaction may name: the one that starts at 9999-12-31 23:45 UTC. Every
/// time derived from a slot (its end, its windows, days of history) stays far inside a `u64` of
/// milliseconds, so no arithmetic on a named slot can overflow.
pub const MAX_SLOT: u64 = 253_402_300_800_000 / SLOT_MS - 1;

/// Slots in a day.
pub const SLOTS_PER_DAY: u64 = 96;

/// Parses a non-negative decimal number of kWh (`"1.5"`, `"0.001"`) into mWh.
pub fn parse_kwh(s: &str) -> Result<u64, FixedError> {
    let v = parse_fixed(s, KWH_DECIMALS)?;
    u64::try_from(v).map_err(|_| FixedError::Overflow(s.trim().to_string()))
}

/// Prints mWh as decimal kWh without trailing zeros (`1500000` -> `"1.5"`).
pub fn format_kwh(energy_mwh: u64) -> String {
    format_fixed(u128::from(energy_mwh), KWH_DECIMALS)
}

/// The delivery slot (index since the Unix epoch) that contains `unix_ms`.
pub fn slot_of(unix_ms: u64) -> u64 {
    unix_ms / SLOT_MS
}

/// When `slot` starts, in milliseconds since the Unix epoch.
pub fn slot_start_ms(slot: u64) -> u64 {
    slot.saturating_mul(SLOT_MS)
}

/// The slot's index within its (UTC) day, 0..96: the key of time-of-use tariffs.
pub fn slot_of_day(slot: u64) -> u64 {
    slot % SLOTS_PER_DAY
}

/// `YYYY-MM-DDTHH:MMZ` of a time in seconds since the Unix epoch.
pub fn utc(unix_s: u64) -> String {
    let (y, m, d, hh, mm, _) = civil(unix_s);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}Z")
}

/// RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ`, of a time in seconds since the Unix epoch.
pub fn rfc3339(unix_s: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix_s);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// A time for people, in the one format the CLI, the errors and the dashboard use:
/// `2010-05-05 01:10 UTC`, with seconds only where there are some (`01:10:07 UTC`).
pub fn utc_text(unix_ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix_ms / 1_000);
    if ss == 0 {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC")
    } else {
        format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
    }
}

/// A slot for people: its number (what commands take) and when it starts.
pub fn slot_text(slot: u64) -> String {
    format!("slot {slot} ({})", utc_text(slot_start_ms(slot)))
}

/// Milliseconds since the Unix epoch of an RFC 3339 time: `2026-12-06T17:00:00Z`, with a space
/// or `t` for the `T`, fractions of a second (kept to the millisecond), any UTC offset (`Z`,
/// `+00:00`, `-05:00`) or none (UTC). `None` if it is not one, or before 1970.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let s = t.get(from..to)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let mut rest = &t[19..];
    let mut ms = 0;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        ms = f[..digits.min(3)].parse::<i64>().ok()? * 10i64.pow(3 - digits.min(3) as u32);
        rest = &f[digits..];
    }
    let offset_s = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.as_bytes();
            if o.len() != 6 || o[3] != b':' {
                return None;
            }
            let (oh, om) = (
                rest[1..3].parse::<i64>().ok()?,
                rest[4..6].parse::<i64>().ok()?,
            );
            if !rest[1..3]
                .bytes()
                .chain(rest[4..6].bytes())
                .all(|c| c.is_ascii_digit())
                || oh > 23
                || om > 59
            {
                return None;
            }
            sign * (oh * 3_600 + om * 60)
        }
    };
    // Howard Hinnant's days-from-civil.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let unix_s = days * 86_400 + h * 3_600 + mi * 60 + s - offset_s;
    u64::try_from(unix_s * 1_000 + ms).ok()
}

/// (year, month, day, hour, minute, second) in UTC of a time in seconds since the Unix epoch.
fn civil(unix_s: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3_600, secs % 3_600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_for_people_are_utc_to_the_minute_and_slots_say_when() {
        assert_eq!(utc_text(1_273_013_700_000), "2010-05-04 22:55 UTC");
        assert_eq!(utc_text(1_273_013_707_000), "2010-05-04 22:55:07 UTC");
        assert_eq!(slot_text(1_414_468), "slot 1414468 (2010-05-05 01:00 UTC)");
    }

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_474_700), "2026-12-05T12:45:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc(1_796_474_700), "2026-12-05T12:45Z");
    }

    #[test]
    fn rfc3339_parses_back_with_fractions_and_offsets() {
        for s in [0, 951_782_400, 1_796_474_700, 4_102_444_799] {
            assert_eq!(parse_rfc3339_ms(&rfc3339(s)), Some(s * 1_000));
        }
        let at = 1_795_543_200_000;
        assert_eq!(parse_rfc3339_ms("2026-11-24T18:00:00.250Z"), Some(at + 250));
        assert_eq!(parse_rfc3339_ms("2026-11-24T18:00:00.25Z"), Some(at + 250));
        assert_eq!(
            parse_rfc3339_ms("2026-11-24T18:00:00.123456+00:00"),
            Some(at + 123)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-24 18:00:00"), Some(at));
        assert_eq!(parse_rfc3339_ms("2026-11-24T19:30:00+01:30"), Some(at));
        assert_eq!(parse_rfc3339_ms("2026-11-24T13:00:00-05:00"), Some(at));
        for bad in [
            "yesterday",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T18:00:00.Z",
            "2026-11-24T18:00:00+0100",
            "2026-11-24T18:00:00+1:00",
            "2026-11-24T18:00:00 UTC",
            "1969-12-31T23:59:59Z",
            "2026-11-24T18:00:0xZ",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn kwh_round_trips_exactly() {
        assert_eq!(parse_kwh("1.5").unwrap(), 1_500_000);
        assert_eq!(parse_kwh("0.000001").unwrap(), 1);
        assert_eq!(format_kwh(1_500_000), "1.5");
        assert_eq!(format_kwh(7), "0.000007");
        assert!(parse_kwh("1.0000001").is_err());
        assert!(parse_kwh("-1").is_err());
        assert!(parse_kwh("99999999999999999999").is_err());
    }

    #[test]
    fn slots_are_fifteen_minutes() {
        assert_eq!(slot_of(0), 0);
        assert_eq!(slot_of(SLOT_MS - 1), 0);
        assert_eq!(slot_of(SLOT_MS), 1);
        assert_eq!(slot_start_ms(4), 3_600_000);
        assert_eq!(slot_of_day(96 + 5), 5);
    }
}
