//! RFC 3339 text for protobuf timestamps, as the proto3 JSON mapping writes them: UTC with a
//! `Z`, and 0, 3, 6 or 9 fractional digits, whichever is the shortest exact form. Hand-written
//! (days to civil date, after Howard Hinnant's `civil_from_days`) to avoid a date crate for
//! one function.
use prost_types::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// `timestamp` as RFC 3339 in UTC, e.g. `2023-11-14T22:13:20.123Z`.
pub(crate) fn rfc3339(timestamp: &Timestamp) -> String {
    // Normalize nanos into 0..1e9, carrying into the seconds.
    let total_nanos =
        i128::from(timestamp.seconds) * i128::from(NANOS_PER_SECOND) + i128::from(timestamp.nanos);
    let seconds = total_nanos.div_euclid(i128::from(NANOS_PER_SECOND)) as i64;
    let nanos = total_nanos.rem_euclid(i128::from(NANOS_PER_SECOND)) as u32;

    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (
        second_of_day / 3_600,
        second_of_day % 3_600 / 60,
        second_of_day % 60,
    );
    let fraction = match nanos {
        0 => String::new(),
        n if n % 1_000_000 == 0 => format!(".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => format!(".{:06}", n / 1_000),
        n => format!(".{n:09}"),
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64, nanos: i32) -> String {
        rfc3339(&Timestamp { seconds, nanos })
    }

    #[test]
    fn formats_whole_seconds() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_700_000_000, 0), "2023-11-14T22:13:20Z");
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        assert_eq!(at(-62_135_596_800, 0), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn handles_leap_days_and_month_ends() {
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00Z");
        assert_eq!(at(4_107_456_000, 0), "2100-02-28T00:00:00Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00Z"); // 2100 is not a leap year
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        assert_eq!(at(1_735_689_599, 0), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn uses_the_shortest_exact_fraction() {
        assert_eq!(at(1_700_000_000, 123_000_000), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            at(1_700_000_000, 123_456_000),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(at(1_700_000_000, 1), "2023-11-14T22:13:20.000000001Z");
        assert_eq!(at(1_700_000_000, 5_000_000), "2023-11-14T22:13:20.005Z");
    }

    #[test]
    fn normalizes_out_of_range_nanos() {
        assert_eq!(at(0, -1_000_000), "1969-12-31T23:59:59.999Z");
        assert_eq!(at(0, 1_500_000_000), "1970-01-01T00:00:01.500Z");
    }

    fn days_in_month(year: i64, month: u32) -> u32 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn agrees_with_counting_days_from_the_epoch() {
        // 1970-01-01 forward to 2400, one day at a time, against a calendar walked by hand.
        let mut date = (1970_i64, 1_u32, 1_u32);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), date, "day {days}");
            date = if date.2 < days_in_month(date.0, date.1) {
                (date.0, date.1, date.2 + 1)
            } else if date.1 < 12 {
                (date.0, date.1 + 1, 1)
            } else {
                (date.0 + 1, 1, 1)
            };
        }
        // And backward to 1570.
        let mut date = (1970_i64, 1_u32, 1_u32);
        for days in (-146_100..0).rev() {
            date = if date.2 > 1 {
                (date.0, date.1, date.2 - 1)
            } else if date.1 > 1 {
                (date.0, date.1 - 1, days_in_month(date.0, date.1 - 1))
            } else {
                (date.0 - 1, 12, 31)
            };
            assert_eq!(civil_from_days(days), date, "day {days}");
        }
    }
}
