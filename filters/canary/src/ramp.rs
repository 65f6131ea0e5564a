//! The time ramp: the canary share grows from a base percentage to a target in equal steps, like Kong
//! Enterprise's canary plugin (`start`, `duration`, `steps`). Everything is integer arithmetic on
//! microseconds and parts-per-million, so every host and build computes the same share at the same instant.

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::time::Duration;

/// Ramp start time, as seconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RampStart(pub u64);

impl RampStart {
    /// Accepts `"YYYY-MM-DDTHH:MM:SSZ"` (UTC only, no fractions or offsets: unambiguous on every host).
    pub fn parse_utc(text: &str) -> Result<RampStart, String> {
        let bad =
            || format!("{text:?} is not a UTC time like \"2026-12-01T09:00:00Z\" or Unix seconds");
        let b = text.as_bytes();
        if b.len() != 20 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(bad());
        }
        if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') || b.get(16) != Some(&b':') {
            return Err(bad());
        }
        if b.get(19) != Some(&b'Z') {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> Result<u64, String> {
            let s = text.get(from..to).ok_or_else(bad)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse::<u64>().map_err(|_| bad())
            } else {
                Err(bad())
            }
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        if year < 1970 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month)
        {
            return Err(bad());
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        Ok(RampStart(
            days * 86_400 + hour * 3600 + minute * 60 + second,
        ))
    }
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, restricted to years ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl<'de> Deserialize<'de> for RampStart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RampStart;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Unix seconds or a UTC time like \"2026-12-01T09:00:00Z\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RampStart, E> {
                Ok(RampStart(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RampStart, E> {
                u64::try_from(v)
                    .map(RampStart)
                    .map_err(|_| E::custom("start must not be before 1970"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RampStart, E> {
                RampStart::parse_utc(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for RampStart {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl JsonSchema for RampStart {
    fn schema_name() -> Cow<'static, str> {
        "RampStart".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": ["integer", "string"], "minimum": 0,
            "description": "Unix time in seconds, or a UTC time \"YYYY-MM-DDTHH:MM:SSZ\"."})
    }
}

/// A validated ramp, in the units the request path uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RampPlan {
    pub start_us: u64,
    pub duration_us: u64,
    pub steps: u64,
    pub from_ppm: u64,
    pub to_ppm: u64,
}

impl RampPlan {
    /// The canary share (ppm) at `now`: `from` before the start, `to` from `start + duration` on, and in
    /// between `from + (to - from) * k / steps` where `k` counts whole steps elapsed (0..steps).
    pub fn share_at(&self, now: Duration) -> u64 {
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        if now_us < self.start_us {
            return self.from_ppm;
        }
        let elapsed = now_us - self.start_us;
        if elapsed >= self.duration_us || self.duration_us == 0 || self.steps == 0 {
            return self.to_ppm;
        }
        // elapsed < duration, so k < steps; u128 avoids overflow for long ramps.
        let k =
            (u128::from(elapsed) * u128::from(self.steps) / u128::from(self.duration_us)) as u64;
        let (from, to) = (i128::from(self.from_ppm), i128::from(self.to_ppm));
        let share = from + (to - from) * i128::from(k) / i128::from(self.steps);
        u64::try_from(share).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_convert_to_unix_seconds() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("2024-02-29T12:34:56Z", 1_709_210_096),
            ("2026-12-01T09:00:00Z", 1_796_115_600),
        ];
        for (text, secs) in cases {
            assert_eq!(RampStart::parse_utc(text), Ok(RampStart(secs)), "{text}");
        }
        for bad in [
            "2026-12-01 09:00:00Z",
            "2026-12-01T09:00:00",
            "2026-12-01T09:00:00+01:00",
            "2026-02-30T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-1a-01T00:00:00Z",
            "",
        ] {
            assert!(RampStart::parse_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ramp_steps_follow_the_injected_clock() {
        // 5% → 100% over 1000 s in 4 steps: 5, 28.75, 52.5, 76.25, then 100 at the end.
        let plan = RampPlan {
            start_us: 1_000_000_000,
            duration_us: 1_000_000_000,
            steps: 4,
            from_ppm: 50_000,
            to_ppm: 1_000_000,
        };
        let at = |s: u64| plan.share_at(Duration::from_secs(s));
        let cases = [
            (0, 50_000),
            (999, 50_000),
            (1000, 50_000),
            (1249, 50_000),
            (1250, 287_500),
            (1499, 287_500),
            (1500, 525_000),
            (1750, 762_500),
            (1999, 762_500),
            (2000, 1_000_000),
            (u64::MAX / 2_000_000, 1_000_000),
        ];
        for (secs, ppm) in cases {
            assert_eq!(at(secs), ppm, "at {secs}s");
        }
    }

    #[test]
    fn ramp_may_go_down_for_a_rollback() {
        let plan = RampPlan {
            start_us: 0,
            duration_us: 10,
            steps: 2,
            from_ppm: 500_000,
            to_ppm: 0,
        };
        assert_eq!(plan.share_at(Duration::from_micros(0)), 500_000);
        assert_eq!(plan.share_at(Duration::from_micros(5)), 250_000);
        assert_eq!(plan.share_at(Duration::from_micros(10)), 0);
    }

    #[test]
    fn ramp_share_never_decreases_while_ramping_up() {
        let plan = RampPlan {
            start_us: 0,
            duration_us: 3_600_000_000,
            steps: 7,
            from_ppm: 12_345,
            to_ppm: 987_654,
        };
        let mut last = 0;
        for minute in 0..=61 {
            let share = plan.share_at(Duration::from_secs(minute * 60));
            assert!(share >= last, "minute {minute}: {share} < {last}");
            last = share;
        }
        assert_eq!(last, 987_654);
    }
}
