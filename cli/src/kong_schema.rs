//! A draft-4 validator that checks `pattern` the way Kong does. Kong validates a filter's config against its
//! `meta.json` with lua-resty-ljsonschema, which matches patterns with `ngx.re.find(subject, pattern, "jo")`:
//! PCRE2, searched (not anchored), bytes rather than UTF-8 (no `u` flag). Patterns PCRE2 cannot compile (e.g.
//! `\u0000`, an ECMAScript escape) make every value fail in Kong, so here they fail to build.

use jsonschema::{Keyword, ValidationError};
use pcre2::bytes::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Compiles `pattern` as Kong's `ngx.re` does (non-UTF PCRE2).
pub fn compile(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new().utf(false).build(pattern).map_err(|e| {
        format!("PCRE2 (as Kong's ngx.re compiles it) refuses pattern {pattern:?}: {e}")
    })
}

/// Every `pattern` in a schema, with its JSON pointer, so a test can name the one PCRE2 refuses.
pub fn patterns(schema: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}/{k}");
                    match (k.as_str(), child) {
                        ("pattern", Value::String(p)) => out.push((here, p.clone())),
                        ("patternProperties", Value::Object(props)) => {
                            for (p, sub) in props {
                                out.push((format!("{here}/{p}"), p.clone()));
                                walk(sub, format!("{here}/{p}"), out);
                            }
                        }
                        _ => walk(child, here, out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(schema, String::new(), &mut out);
    out
}

struct Pcre2Pattern {
    source: String,
    regex: Regex,
}

impl<'i> Keyword<'i> for Pcre2Pattern {
    fn validate(&self, instance: &'i Value) -> Result<(), ValidationError<'i>> {
        if self.is_valid(instance) {
            Ok(())
        } else {
            Err(ValidationError::custom(format!(
                "{instance} does not match pattern {:?}",
                self.source
            )))
        }
    }

    fn is_valid(&self, instance: &'i Value) -> bool {
        match instance {
            // A PCRE2 error while matching (e.g. a match limit) fails the value, as in Kong.
            Value::String(s) => self.regex.is_match(s.as_bytes()).unwrap_or(false),
            _ => true,
        }
    }
}

fn pattern_keyword<'a>(
    _parent: &'a Map<String, Value>,
    value: &'a Value,
    _path: jsonschema::paths::Location,
) -> Result<Box<dyn for<'i> Keyword<'i>>, ValidationError<'a>> {
    let Value::String(source) = value else {
        return Err(ValidationError::custom("pattern must be a string"));
    };
    let regex = compile(source).map_err(ValidationError::custom)?;
    Ok(Box::new(Pcre2Pattern {
        source: source.clone(),
        regex,
    }))
}

/// A draft-4 validator for `schema` whose patterns compile and match as in Kong. `Err` names the pattern PCRE2
/// refuses (`patternProperties` keys are compiled by the same check in [`patterns`]).
pub fn draft4(schema: &Value) -> Result<jsonschema::Validator, String> {
    for (at, p) in patterns(schema) {
        compile(&p).map_err(|e| format!("{at}: {e}"))?;
    }
    jsonschema::draft4::options()
        .with_keyword("pattern", pattern_keyword)
        .build(schema)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ecmascript_unicode_escapes_do_not_compile_as_in_kong() {
        let err =
            draft4(&json!({"type": "string", "pattern": "^[^\\u0000-\\u001f]*$"})).unwrap_err();
        assert!(err.contains("/pattern"), "{err}");
        assert!(err.contains("PCRE2"), "{err}");
    }

    #[test]
    fn patterns_match_bytes_and_search_like_ngx_re() {
        let v = draft4(&json!({"type": "string", "pattern": "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"}))
            .unwrap();
        assert!(v.is_valid(&json!("${header.x-user-id} é")));
        assert!(!v.is_valid(&json!("a\r\nb")));
        assert!(!v.is_valid(&json!("a\u{7f}")));
        let unanchored = draft4(&json!({"type": "string", "pattern": "b"})).unwrap();
        assert!(unanchored.is_valid(&json!("abc")));
        assert!(!unanchored.is_valid(&json!("ac")));
    }

    #[test]
    fn a_value_outside_the_pattern_is_reported_at_its_path() {
        let schema = json!({"type": "object", "properties": {"key": {"type": "string", "pattern": "^[a-z]+$"}}});
        let v = draft4(&schema).unwrap();
        let errors: Vec<String> = v
            .iter_errors(&json!({"key": "A1"}))
            .map(|e| e.instance_path().to_string())
            .collect();
        assert_eq!(errors, vec!["/key".to_string()]);
    }
}
