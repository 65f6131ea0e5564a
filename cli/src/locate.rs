//! Finds the line and column of a JSON path (`routes[0].chain[1].config.limits[0]`) in YAML text.
//!
//! serde_norway stamps an error with the position of the innermost node being deserialized when the error
//! arose. So the locator walks the document along the path with a seed that fails on purpose at the target
//! node (or at the deepest node that exists on the way), and reads the position from that error.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into segments. Unparseable pieces are kept as keys.
pub fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut key = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if !key.is_empty() {
                    out.push(Segment::Key(std::mem::take(&mut key)));
                }
            }
            '[' => {
                if !key.is_empty() {
                    out.push(Segment::Key(std::mem::take(&mut key)));
                }
                let mut digits = String::new();
                for d in chars.by_ref() {
                    if d == ']' {
                        break;
                    }
                    digits.push(d);
                }
                match digits.parse() {
                    Ok(i) => out.push(Segment::Index(i)),
                    Err(_) => out.push(Segment::Key(digits)),
                }
            }
            _ => key.push(c),
        }
    }
    if !key.is_empty() {
        out.push(Segment::Key(key));
    }
    out
}

/// 1-based (line, column) of the node at `path`, or of its deepest existing ancestor.
pub fn locate(yaml: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    let de = serde_norway::Deserializer::from_str(yaml);
    match (Seek { path: &segs }).deserialize(de) {
        Ok(()) => None,
        Err(e) => e.location().map(|l| (l.line(), l.column())),
    }
}

struct Seek<'a> {
    path: &'a [Segment],
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(SeekVisitor { path: self.path })
    }
}

struct SeekVisitor<'a> {
    path: &'a [Segment],
}

fn here<E: de::Error>() -> E {
    E::custom("located")
}

impl<'de> Visitor<'de> for SeekVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the node at the path")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Segment::Key(want), rest)) = self.path.split_first() else {
            return Err(here());
        };
        while let Some(key) = map.next_key::<String>()? {
            if &key == want {
                map.next_value_seed(Seek { path: rest })?;
                return Err(here());
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(here())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Segment::Index(want), rest)) = self.path.split_first() else {
            return Err(here());
        };
        let mut i = 0;
        loop {
            if i == *want {
                return match seq.next_element_seed(Seek { path: rest })? {
                    Some(()) => Err(here()),
                    None => Err(here()),
                };
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(here());
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
upstreams:
  echo:
    url: http://127.0.0.1:1
routes:
  - name: a
    upstream: echo
  - name: b
    upstream: echo
    chain:
      - filter: rate-limit
        config:
          limits:
            - name: x
              per: 0s
";

    #[test]
    fn paths_split_into_keys_and_indexes() {
        assert_eq!(
            segments("routes[1].chain[0].config"),
            vec![
                Segment::Key("routes".into()),
                Segment::Index(1),
                Segment::Key("chain".into()),
                Segment::Index(0),
                Segment::Key("config".into())
            ]
        );
        assert_eq!(segments(""), vec![]);
    }

    #[test]
    fn scalar_paths_point_at_their_value() {
        assert_eq!(locate(DOC, "upstreams.echo.url"), Some((3, 10)));
        assert_eq!(locate(DOC, "routes[1].name"), Some((7, 11)));
        assert_eq!(
            locate(DOC, "routes[1].chain[0].config.limits[0].per"),
            Some((14, 20))
        );
    }

    #[test]
    fn missing_nodes_point_at_their_deepest_existing_ancestor() {
        // routes[0] has no chain: the route mapping itself (its first key) is reported.
        assert_eq!(locate(DOC, "routes[0].chain[0]").map(|l| l.0), Some(5));
        assert_eq!(locate(DOC, "routes[9]").map(|l| l.0), Some(5));
    }
}
