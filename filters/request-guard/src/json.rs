//! The `body.json` check: well-formed JSON no deeper than a limit. The depth is measured by a byte scan
//! before parsing, so a deeply nested body is refused without recursing into it; the parse itself
//! (UTF-8 check, then `serde_json` into `IgnoredAny`) allocates nothing for the values.

use serde::de::IgnoredAny;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonProblem {
    Invalid,
    TooDeep,
}

/// Checks `body` is one JSON value (surrounding whitespace allowed) nested at most `max_depth` levels.
pub fn check(body: &[u8], max_depth: u32) -> Result<(), JsonProblem> {
    if depth_exceeds(body, max_depth) {
        return Err(JsonProblem::TooDeep);
    }
    // RFC 8259 JSON is UTF-8; serde_json does not validate strings it skips.
    let text = std::str::from_utf8(body).map_err(|_| JsonProblem::Invalid)?;
    serde_json::from_str::<IgnoredAny>(text)
        .map(|_| ())
        .map_err(|_| JsonProblem::Invalid)
}

/// Whether arrays/objects nest deeper than `max_depth`, ignoring brackets inside strings.
fn depth_exceeds(body: &[u8], max_depth: u32) -> bool {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_table() {
        let cases: &[(&str, u32, Result<(), JsonProblem>)] = &[
            (r#"{"a":[1,2,{"b":null}]}"#, 3, Ok(())),
            (r#"{"a":[1,2,{"b":null}]}"#, 2, Err(JsonProblem::TooDeep)),
            (" 42 ", 1, Ok(())),
            (r#""[[[[""#, 1, Ok(())),
            (r#"{"k":"\"[[["}"#, 1, Ok(())),
            ("[[[]]]", 3, Ok(())),
            ("[[[]]]", 2, Err(JsonProblem::TooDeep)),
            ("", 4, Err(JsonProblem::Invalid)),
            ("{", 4, Err(JsonProblem::Invalid)),
            ("{\"a\":1}{}", 4, Err(JsonProblem::Invalid)),
            ("{'a':1}", 4, Err(JsonProblem::Invalid)),
            ("[1,]", 4, Err(JsonProblem::Invalid)),
            ("\u{feff}{}", 4, Err(JsonProblem::Invalid)),
        ];
        for (body, depth, want) in cases {
            assert_eq!(
                check(body.as_bytes(), *depth),
                *want,
                "{body:?} depth {depth}"
            );
        }
    }

    #[test]
    fn very_deep_nesting_is_refused_without_recursion() {
        let body = "[".repeat(1_000_000);
        assert_eq!(check(body.as_bytes(), 128), Err(JsonProblem::TooDeep));
    }

    #[test]
    fn invalid_utf8_in_strings_is_invalid() {
        assert_eq!(check(b"\"\xff\"", 4), Err(JsonProblem::Invalid));
    }
}
