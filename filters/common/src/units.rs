//! Human-friendly units in configs: durations (`"250ms"`, `"1s"`, `"5m"`, `"1h"`) and byte sizes
//! (`"512"`, `"64KiB"`, `"1MiB"`). Each type validates while deserializing, so a bad value fails with its path.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written as a number followed by a unit: `ms`, `s`, `m`, `h` (also `us`, `d`). Fractions are
/// allowed (`"1.5s"`). Stored as whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DurationSpec(pub Duration);

impl DurationSpec {
    pub fn from_secs(secs: u64) -> Self {
        DurationSpec(Duration::from_secs(secs))
    }
    pub fn from_millis(ms: u64) -> Self {
        DurationSpec(Duration::from_millis(ms))
    }
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

/// Parses `"250ms"`, `"1s"`, `"1.5m"`, `"2h"`. Rejects negatives, missing units and absurd values (> 10 years).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like \"1s\", got {text:?}");
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let micros_per_unit: f64 = match unit {
        "us" | "µs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        "d" => 86_400e6,
        _ => return Err(bad()),
    };
    let micros = value * micros_per_unit;
    const TEN_YEARS_US: f64 = 10.0 * 365.0 * 86_400e6;
    if !micros.is_finite() || micros > TEN_YEARS_US {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = DurationSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like \"1s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationSpec, E> {
                parse_duration(v).map(DurationSpec).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationSpec, E> {
                Err(E::custom(format!(
                    "expected a duration with a unit like \"{v}s\", got the bare number {v}"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationSpec, E> {
                self.visit_u64(v.unsigned_abs())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationSpec, E> {
                Err(E::custom(format!(
                    "expected a duration with a unit like \"{v}s\", got the bare number {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// Writes the shortest exact form: `"5m"`, `"1s"`, `"250ms"`, `"10us"` (used for schema defaults).
impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let us = self.0.as_micros();
        let text = match us {
            0 => "0s".to_string(),
            _ if us.is_multiple_of(3_600_000_000) => format!("{}h", us / 3_600_000_000),
            _ if us.is_multiple_of(60_000_000) => format!("{}m", us / 60_000_000),
            _ if us.is_multiple_of(1_000_000) => format!("{}s", us / 1_000_000),
            _ if us.is_multiple_of(1_000) => format!("{}ms", us / 1_000),
            _ => format!("{us}us"),
        };
        s.serialize_str(&text)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

/// A byte size: a bare integer (`512` or `"512"`) or a number with a unit: `B`, `KB`/`MB`/`GB` (powers of
/// 1000) or `KiB`/`MiB`/`GiB` (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let bad = || format!("expected a size like \"64KiB\" or \"512\", got {text:?}");
    let s = text.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err(bad());
    }
    let value: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1000 * 1000,
        "GB" => 1000 * 1000 * 1000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size like \"64KiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_byte_size(v).map(ByteSize).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "expected a whole number of bytes, got {v}"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_parse() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("1s", Duration::from_secs(1)),
            ("1.5s", Duration::from_millis(1500)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("10us", Duration::from_micros(10)),
            (" 0s ", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_rejected_with_the_input() {
        for text in [
            "", "fast", "1", "s", "-1s", "1 s", "1.s", ".5s", "1.2.3s", "1sec", "1e3s",
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("expected a duration"), "{text}: {err}");
        }
        assert!(parse_duration("99999999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn durations_serialize_to_text_that_parses_back() {
        for text in ["0s", "2h", "5m", "1s", "250ms", "10us", "90s"] {
            let d: DurationSpec = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            let back = serde_json::to_string(&d).unwrap();
            let again: DurationSpec = serde_json::from_str(&back).unwrap();
            assert_eq!(d, again, "{text} -> {back}");
        }
        assert_eq!(
            serde_json::to_string(&DurationSpec::from_secs(90)).unwrap(),
            "\"90s\""
        );
    }

    #[test]
    fn bare_numbers_are_not_durations() {
        let err = serde_json::from_str::<DurationSpec>("5").unwrap_err();
        assert!(err.to_string().contains("\"5s\""), "{err}");
    }

    #[test]
    fn byte_sizes_parse_binary_and_decimal_units() {
        let cases = [
            ("512", 512),
            ("512B", 512),
            ("64KiB", 65_536),
            ("1MiB", 1_048_576),
            ("1GiB", 1 << 30),
            ("2KB", 2000),
            ("3MB", 3_000_000),
            ("1 KiB", 1024),
        ];
        for (text, want) in cases {
            assert_eq!(parse_byte_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_byte_sizes_are_rejected() {
        for text in ["", "KiB", "1.5MiB", "-1", "1 parsec", "1kib"] {
            assert!(parse_byte_size(text).is_err(), "{text}");
        }
        assert!(parse_byte_size("99999999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn byte_size_accepts_json_numbers_and_strings() {
        assert_eq!(
            serde_json::from_str::<ByteSize>("1024").unwrap(),
            ByteSize(1024)
        );
        assert_eq!(
            serde_json::from_str::<ByteSize>("\"1KiB\"").unwrap(),
            ByteSize(1024)
        );
        assert!(serde_json::from_str::<ByteSize>("-3").is_err());
        assert!(serde_json::from_str::<ByteSize>("1.5").is_err());
    }
}
