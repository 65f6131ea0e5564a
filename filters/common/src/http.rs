//! HTTP header names and values as checked config types, plus sanitising of values copied from requests.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Longest header name accepted in config; real names are far shorter, this only stops absurd input.
const MAX_HEADER_NAME_LEN: usize = 256;

/// A valid, lower-cased HTTP header name (an RFC 9110 token). Pseudo-headers (`:path`) are not accepted:
/// filters change them through dedicated options, not generic header edits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeaderName(String);

impl HeaderName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if is_valid_header_name(text) {
            Ok(HeaderName(text.to_ascii_lowercase()))
        } else {
            Err(format!("{text:?} is not a valid header name"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_HEADER_NAME_LEN && name.bytes().all(is_token_byte)
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Field values may hold visible ASCII, spaces, tabs and obs-text; never CR, LF, NUL or other controls.
pub fn is_valid_header_value(value: &str) -> bool {
    value.bytes().all(is_value_byte)
}

fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Makes a request-derived value safe to put in a header: control characters (CR, LF, NUL, …) become
/// spaces, surrounding whitespace is trimmed, and the result is cut to at most `max_bytes` on a char boundary.
pub fn sanitize_header_value(value: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max_bytes));
    for c in value.trim().chars() {
        let c = if c.is_control() && c != '\t' { ' ' } else { c };
        // a control character mapped to a space must not leave leading whitespace (found by fuzzing)
        if out.is_empty() && c.is_whitespace() {
            continue;
        }
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

impl<'de> Deserialize<'de> for HeaderName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HeaderName::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for HeaderName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Serialize for HeaderValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A header value from config: no CR/LF or other control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue(String);

impl HeaderValue {
    pub fn parse(text: &str) -> Result<Self, String> {
        if is_valid_header_value(text) {
            Ok(HeaderValue(text.to_string()))
        } else {
            Err(format!(
                "{text:?} is not a valid header value (control characters such as CR/LF are not allowed)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        HeaderValue::parse(&text).map_err(de::Error::custom)
    }
}

/// A status code a filter may answer with: 100–599.
pub fn is_valid_status(status: u16) -> bool {
    (100..=599).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens_and_lowercased() {
        assert_eq!(
            HeaderName::parse("X-Request-ID").unwrap().as_str(),
            "x-request-id"
        );
        for bad in ["", "x y", "x:y", ":path", "x\r\ny", "é", "a\0"] {
            assert!(HeaderName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(HeaderName::parse(&"a".repeat(257)).is_err());
    }

    #[test]
    fn header_values_reject_control_characters() {
        assert!(HeaderValue::parse("Bearer abc; q=\"1\"\tx").is_ok());
        assert!(HeaderValue::parse("").is_ok());
        for bad in ["a\r\nb", "a\nb", "a\rb", "a\0b", "a\x7fb"] {
            assert!(HeaderValue::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sanitising_removes_crlf_and_caps_length() {
        assert_eq!(
            sanitize_header_value("  a\r\nSet-Cookie: x ", 100),
            "a  Set-Cookie: x"
        );
        assert_eq!(sanitize_header_value("abcdef", 3), "abc");
        // never splits a multi-byte character
        assert_eq!(sanitize_header_value("ééé", 5), "éé");
        let s = sanitize_header_value("x\u{0}y\u{1b}z", 64);
        assert!(is_valid_header_value(&s), "{s:?}");
    }

    #[test]
    fn sanitising_a_leading_control_character_leaves_no_leading_space() {
        // fuzz/http crash-9c840073: "\x05 a\xd9b\r\nc" kept the spaces after the control byte
        let v = String::from_utf8_lossy(b"\x05 a\xd9b\r\nc").into_owned();
        assert_eq!(sanitize_header_value(&v, 64), "a\u{fffd}b  c");
        assert_eq!(sanitize_header_value("\u{1}\t\u{2} x \u{3}", 64), "x");
    }

    #[test]
    fn status_codes_are_bounded() {
        assert!(is_valid_status(429));
        assert!(!is_valid_status(99));
        assert!(!is_valid_status(600));
    }
}
