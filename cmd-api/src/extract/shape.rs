//! Checks an upload must pass before it is split: UTF-8 text, JSON syntax,
//! nesting within the limit, no duplicate keys, numbers a float can hold.
//!
//! One recursive walk does all of it. Its depth is checked before serde_json's
//! own recursion limit (128) can be reached, so a body of 100,000 nested
//! arrays costs a few frames of stack and gets `too_deep`, not a crash.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use super::ExtractError;

/// Highest `MAX_JSON_DEPTH` accepted: below serde_json's recursion limit,
/// which would otherwise answer first with a less helpful message.
pub const DEPTH_CEILING: usize = 100;

/// Checks one JSON text (a whole body, or one NDJSON line starting at
/// `first_line`).
pub fn check_json(text: &[u8], max_depth: usize, first_line: u64) -> Result<(), ExtractError> {
    let mut walk = WalkState {
        path: Vec::new(),
        max_depth,
        finding: None,
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = Walk(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    let Err(e) = result else { return Ok(()) };
    let line = e.line() as u64 + first_line - 1;
    let column = e.column() as u64;
    Err(match walk.finding.take() {
        Some(Finding::TooDeep) => ExtractError::TooDeep {
            limit: max_depth,
            line,
            column,
        },
        Some(Finding::DuplicateKey { key }) => ExtractError::DuplicateKey {
            key,
            path: walk.pointer(),
            line,
            column,
        },
        None => super::invalid_json(&e, line),
    })
}

/// The body must be UTF-8. UTF-16 (what some Windows tools write) is named
/// as such, since its NUL bytes would otherwise read as a syntax error.
pub fn check_encoding(body: &[u8]) -> Result<(), ExtractError> {
    const HOW: &str = "convert it to UTF-8 (for example `iconv -f UTF-16 -t UTF-8`)";
    let utf16 = body.starts_with(b"\xFF\xFE")
        || body.starts_with(b"\xFE\xFF")
        || body.get(..2).is_some_and(|two| two.contains(&0));
    if utf16 {
        return Err(ExtractError::InvalidEncoding {
            message: format!("the body is UTF-16, not UTF-8: {HOW}"),
            line: 1,
            column: 1,
        });
    }
    let Err(e) = std::str::from_utf8(body) else {
        return Ok(());
    };
    let valid = &body[..e.valid_up_to()];
    let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    // Columns count characters, as an editor shows them.
    let column = String::from_utf8_lossy(&valid[line_start..])
        .chars()
        .count() as u64
        + 1;
    Err(ExtractError::InvalidEncoding {
        message: format!(
            "the body is not valid UTF-8 (byte 0x{:02X} at offset {}): send UTF-8 text",
            body[e.valid_up_to()],
            e.valid_up_to()
        ),
        line,
        column,
    })
}

enum Finding {
    TooDeep,
    DuplicateKey { key: String },
}

enum Segment {
    Index(usize),
    Key(String),
}

struct WalkState {
    /// Where the walk is; left in place when it stops at a finding.
    path: Vec<Segment>,
    max_depth: usize,
    finding: Option<Finding>,
}

impl WalkState {
    /// JSON Pointer (RFC 6901) of the object holding the finding.
    fn pointer(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            out.push('/');
            match segment {
                Segment::Index(i) => out.push_str(&i.to_string()),
                Segment::Key(k) => out.push_str(&k.replace('~', "~0").replace('/', "~1")),
            }
        }
        out
    }

    /// Called on opening an array or object.
    fn enter<E: serde::de::Error>(&mut self) -> Result<(), E> {
        if self.depth() > self.max_depth {
            self.finding = Some(Finding::TooDeep);
            return Err(E::custom("nesting too deep"));
        }
        Ok(())
    }

    /// Open containers: an index or key segment sits below each of them.
    fn depth(&self) -> usize {
        self.path.len() + 1
    }
}

struct Walk<'s>(&'s mut WalkState);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.enter()?;
        let mut index = 0;
        loop {
            self.0.path.push(Segment::Index(index));
            let more = seq.next_element_seed(Walk(&mut *self.0))?;
            self.0.path.pop();
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.enter()?;
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if seen.contains(&key) {
                self.0.finding = Some(Finding::DuplicateKey {
                    key: key.into_owned(),
                });
                return Err(A::Error::custom("duplicate key"));
            }
            self.0.path.push(Segment::Key(key.clone().into_owned()));
            map.next_value_seed(Walk(&mut *self.0))?;
            self.0.path.pop();
            seen.insert(key);
        }
        Ok(())
    }
}

/// Object keys, borrowed from the body unless they contain escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(levels: usize) -> Vec<u8> {
        let mut body = vec![b'['; levels];
        body.extend(std::iter::repeat_n(b']', levels));
        body
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_one_more_is_too_deep() {
        assert!(check_json(&deep(64), 64, 1).is_ok());
        let err = check_json(&deep(65), 64, 1).unwrap_err();
        // serde_json points just past the bracket that opened level 65.
        assert!(
            matches!(
                err,
                ExtractError::TooDeep {
                    limit: 64,
                    line: 1,
                    column: 66
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_hundred_thousand_nested_arrays_are_too_deep_not_a_crash() {
        let err = check_json(&deep(100_000), 64, 1).unwrap_err();
        assert!(matches!(err, ExtractError::TooDeep { .. }), "{err:?}");
        let unclosed = vec![b'{'; 100_000];
        assert!(check_json(&unclosed, DEPTH_CEILING, 1).is_err());
    }

    #[test]
    fn a_duplicate_key_is_named_with_the_object_that_holds_it() {
        let body = br#"[{"name":"A"},{"name":"B","address":{"city":"x","city":"y"}}]"#;
        let err = check_json(body, 64, 1).unwrap_err();
        let ExtractError::DuplicateKey { key, path, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((key.as_str(), path.as_str()), ("city", "/1/address"));
    }

    #[test]
    fn escaped_and_plain_spellings_of_one_key_are_duplicates() {
        let err = check_json(br#"{"name":"A","n\u0061me":"B"}"#, 64, 1).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { key, .. } if key == "name"));
    }

    #[test]
    fn the_same_key_in_sibling_objects_is_fine() {
        assert!(check_json(br#"[{"a":1},{"a":2},{"a":{"a":3}}]"#, 64, 1).is_ok());
    }

    #[test]
    fn numbers_beyond_f64_are_invalid_json_and_big_integers_pass() {
        assert!(check_json(b"[123456789012345678901234567890, -1e300]", 64, 1).is_ok());
        let err = check_json(b"[1,\n1e400]", 64, 1).unwrap_err();
        assert!(
            matches!(err, ExtractError::InvalidJson { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn line_numbers_count_from_the_ndjson_line() {
        let err = check_json(b"{\"a\":1,\"a\":2}", 64, 7).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { line: 7, .. }));
    }

    #[test]
    fn utf16_and_broken_utf8_are_named_with_their_position() {
        for body in [&b"\xFF\xFE{\0}\0"[..], b"{\0\"\0", b"\xFE\xFF\0{"] {
            let err = check_encoding(body).unwrap_err();
            assert!(
                matches!(&err, ExtractError::InvalidEncoding { message, .. } if message.contains("UTF-16")),
                "{err:?}"
            );
        }
        let mut body = "{\"name\":\n\"Ромашка".as_bytes().to_vec();
        body.push(0xC3);
        body.extend(b"\" }");
        let err = check_encoding(&body).unwrap_err();
        let ExtractError::InvalidEncoding { line, column, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(line, 2);
        assert_eq!(column, 9);
        assert!(check_encoding("{\"name\":\"Ромашка\"}".as_bytes()).is_ok());
    }
}
