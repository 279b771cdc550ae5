//! Checks an upload must pass as it is split: JSON syntax, nesting within
//! the limit, no duplicate keys, numbers a float can hold. (UTF-8 is
//! checked below, by `text`.)
//!
//! One recursive walk does all of it, and notes the `name` of the value's
//! top-level object on the way, so that finding the company takes no
//! second parse. Its depth is checked before serde_json's own recursion
//! limit (128) can be reached, so a body of 100,000 nested arrays costs a
//! few frames of stack and gets `too_deep`, not a crash.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use super::ExtractError;

/// Keys of an object checked for repeats by a list; a set beyond.
const FEW_KEYS: usize = 16;

/// Highest `MAX_JSON_DEPTH` accepted: below serde_json's recursion limit,
/// which would otherwise answer first with a less helpful message.
pub const DEPTH_CEILING: usize = 100;

/// The `name` member of a checked value's top-level object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name<'a> {
    /// No such member, or the value is not an object.
    Missing,
    Str(Cow<'a, str>),
    /// Not a string: what it is ("a number", "an object", …).
    Other(&'static str),
}

/// Checks one JSON text (a whole body, or one NDJSON line starting at
/// `first_line`).
pub fn check_json<'a>(
    text: &'a [u8],
    max_depth: usize,
    name_field: &'a str,
    first_line: u64,
) -> Result<Name<'a>, ExtractError> {
    let mut walk = WalkState::new(max_depth, name_field);
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = Walk(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    let Err(e) = result else { return Ok(walk.name) };
    Err(walk.failure(&e, e.line() as u64 + first_line - 1, e.column() as u64))
}

/// Where a value cut out of a body starts: the line, and the column of
/// its first byte (columns count bytes, as serde_json's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

/// Checks one value cut out of a JSON body: `index` is its place in the
/// top-level array (`None` for the body's one value), `at` where its first
/// byte is, so that a finding names its place in the whole body.
pub fn check_value<'a>(
    text: &'a [u8],
    max_depth: usize,
    name_field: &'a str,
    index: Option<usize>,
    at: Position,
) -> Result<Name<'a>, ExtractError> {
    let mut walk = WalkState::new(max_depth, name_field);
    walk.path.extend(index.map(Segment::Index));
    walk.root = walk.path.len();
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = Walk(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    let Err(e) = result else { return Ok(walk.name) };
    let (line, column) = match e.line() as u64 {
        1 => (at.line, at.column - 1 + e.column() as u64),
        n => (at.line + n - 1, e.column() as u64),
    };
    Err(walk.failure(&e, line, column))
}

enum Finding {
    TooDeep,
    DuplicateKey { key: String },
}

enum Segment<'de> {
    Index(usize),
    /// Borrowed from the text unless it holds escapes.
    Key(Cow<'de, str>),
}

struct WalkState<'de> {
    /// Where the walk is; left in place when it stops at a finding.
    path: Vec<Segment<'de>>,
    max_depth: usize,
    finding: Option<Finding>,
    /// The path's length at the value's own top level.
    root: usize,
    /// The top-level member noted as the value's name.
    name_field: &'de str,
    name: Name<'de>,
}

impl<'de> WalkState<'de> {
    fn new(max_depth: usize, name_field: &'de str) -> Self {
        Self {
            path: Vec::new(),
            max_depth,
            finding: None,
            root: 0,
            name_field,
            name: Name::Missing,
        }
    }

    /// What stopped the walk, at `line` and `column` of the whole body.
    fn failure(&mut self, e: &serde_json::Error, line: u64, column: u64) -> ExtractError {
        match self.finding.take() {
            Some(Finding::TooDeep) => ExtractError::TooDeep {
                limit: self.max_depth,
                line,
                column,
            },
            Some(Finding::DuplicateKey { key }) => ExtractError::DuplicateKey {
                key,
                path: self.pointer(),
                line,
                column,
            },
            None => super::invalid_json(e, line, column),
        }
    }

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

struct Walk<'s, 'de>(&'s mut WalkState<'de>);

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
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
        // Most objects have a few keys: a list is cheaper than a set.
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let repeated = if many.is_empty() && seen.len() < FEW_KEYS {
                seen.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(seen.drain(..));
                }
                many.contains(&key)
            };
            if repeated {
                self.0.finding = Some(Finding::DuplicateKey {
                    key: key.into_owned(),
                });
                return Err(A::Error::custom("duplicate key"));
            }
            let is_name = key == self.0.name_field && self.0.path.len() == self.0.root;
            self.0.path.push(Segment::Key(key.clone()));
            if is_name {
                map.next_value_seed(NameSeed(&mut *self.0))?;
            } else {
                map.next_value_seed(Walk(&mut *self.0))?;
            }
            self.0.path.pop();
            if many.is_empty() {
                seen.push(key);
            } else {
                many.insert(key);
            }
        }
        Ok(())
    }
}

/// The top-level `name`: noted, and walked like any value.
struct NameSeed<'s, 'de>(&'s mut WalkState<'de>);

impl<'de> DeserializeSeed<'de> for NameSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> NameSeed<'_, 'de> {
    fn other<E>(self, kind: &'static str) -> Result<(), E> {
        self.0.name = Name::Other(kind);
        Ok(())
    }
}

impl<'de> Visitor<'de> for NameSeed<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.other("a boolean")
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.other("a number")
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.other("a number")
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.other("a number")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.other("null")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        self.0.name = Name::Str(Cow::Borrowed(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.name = Name::Str(Cow::Owned(v.to_owned()));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.name = Name::Other("an array");
        Walk(self.0).visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.name = Name::Other("an object");
        Walk(self.0).visit_map(map)
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
        assert!(check_json(&deep(64), 64, "name", 1).is_ok());
        let err = check_json(&deep(65), 64, "name", 1).unwrap_err();
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
        let err = check_json(&deep(100_000), 64, "name", 1).unwrap_err();
        assert!(matches!(err, ExtractError::TooDeep { .. }), "{err:?}");
        let unclosed = vec![b'{'; 100_000];
        assert!(check_json(&unclosed, DEPTH_CEILING, "name", 1).is_err());
    }

    #[test]
    fn a_duplicate_key_is_named_with_the_object_that_holds_it() {
        let body = br#"[{"name":"A"},{"name":"B","address":{"city":"x","city":"y"}}]"#;
        let err = check_json(body, 64, "name", 1).unwrap_err();
        let ExtractError::DuplicateKey { key, path, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!((key.as_str(), path.as_str()), ("city", "/1/address"));
    }

    #[test]
    fn escaped_and_plain_spellings_of_one_key_are_duplicates() {
        let err = check_json(br#"{"name":"A","n\u0061me":"B"}"#, 64, "name", 1).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { key, .. } if key == "name"));
    }

    #[test]
    fn a_key_repeated_after_many_others_is_found() {
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let body = format!("{{{},\"k3\":0}}", keys.join(","));
        let err = check_json(body.as_bytes(), 64, "name", 1).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { key, .. } if key == "k3"));
        let body = format!("{{{}}}", keys.join(","));
        assert!(check_json(body.as_bytes(), 64, "name", 1).is_ok());
    }

    #[test]
    fn a_dataset_names_its_documents_by_its_own_top_level_field() {
        let body = br#"{"name":"not this","sku":"A-1","x":{"sku":"inner"}}"#;
        assert_eq!(
            check_json(body, 64, "sku", 1).unwrap(),
            Name::Str("A-1".into())
        );
        assert_eq!(
            check_json(br#"{"name":"A"}"#, 64, "sku", 1).unwrap(),
            Name::Missing
        );
    }

    #[test]
    fn the_top_level_name_is_noted_and_nested_ones_are_not() {
        fn name(body: &[u8]) -> Name<'_> {
            check_json(body, 64, "name", 1).unwrap()
        }
        let text = |s: &str| Name::Str(Cow::Owned(s.to_owned()));
        assert_eq!(name(br#"{"x":{"name":"inner"},"name":"A"}"#), text("A"));
        assert_eq!(name(br#"{"n\u0061me":"B"}"#), text("B"));
        assert_eq!(name(br#"{"name":"a\"b"}"#), text("a\"b"));
        assert_eq!(name(br#"{"x":{"name":"inner"}}"#), Name::Missing);
        assert_eq!(name(br#"[{"name":"A"}]"#), Name::Missing);
        assert_eq!(name(br#"{"name":{"a":1}}"#), Name::Other("an object"));
        assert_eq!(name(br#"{"name":[1]}"#), Name::Other("an array"));
        assert_eq!(name(br#"{"name":null}"#), Name::Other("null"));
        assert_eq!(name(br#"{"name":true}"#), Name::Other("a boolean"));
        assert_eq!(name(br#"{"name":-1.5}"#), Name::Other("a number"));
        let at = Position { line: 1, column: 2 };
        let element = check_value(br#"{"name":"C"}"#, 64, "name", Some(3), at).unwrap();
        assert_eq!(element, text("C"));
        // A name that is an object is still checked like any value.
        let err = check_json(br#"{"name":{"a":1,"a":2}}"#, 64, "name", 1).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { path, .. } if path == "/name"));
    }

    #[test]
    fn the_same_key_in_sibling_objects_is_fine() {
        assert!(check_json(br#"[{"a":1},{"a":2},{"a":{"a":3}}]"#, 64, "name", 1).is_ok());
    }

    #[test]
    fn numbers_beyond_f64_are_invalid_json_and_big_integers_pass() {
        assert!(check_json(b"[123456789012345678901234567890, -1e300]", 64, "name", 1).is_ok());
        let err = check_json(b"[1,\n1e400]", 64, "name", 1).unwrap_err();
        assert!(
            matches!(err, ExtractError::InvalidJson { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn line_numbers_count_from_the_ndjson_line() {
        let err = check_json(b"{\"a\":1,\"a\":2}", 64, "name", 7).unwrap_err();
        assert!(matches!(err, ExtractError::DuplicateKey { line: 7, .. }));
    }

    #[test]
    fn a_value_cut_out_of_a_body_is_reported_where_it_is_in_the_body() {
        let at = Position { line: 3, column: 5 };
        let body = br#"{"name":"B","address":{"city":"x","city":"y"}}"#;
        let Err(ExtractError::DuplicateKey {
            path, line, column, ..
        }) = check_value(body, 64, "name", Some(1), at)
        else {
            panic!("expected a duplicate key")
        };
        assert_eq!((path.as_str(), line), ("/1/address", 3));
        let Err(ExtractError::DuplicateKey { column: alone, .. }) = check_json(body, 64, "name", 1)
        else {
            panic!("expected a duplicate key")
        };
        // The value's own column, moved to where the value starts.
        assert_eq!(column, 5 - 1 + alone);

        let Err(ExtractError::InvalidJson { line, column, .. }) =
            check_value(b"{\n  \"a\" 1}", 64, "name", Some(0), at)
        else {
            panic!("expected invalid JSON")
        };
        assert_eq!((line, column), (4, 7), "the second line of the value");

        // Inside the top-level array, the value's own nesting starts at 2.
        assert!(check_value(&deep(63), 64, "name", Some(0), at).is_ok());
        assert!(matches!(
            check_value(&deep(64), 64, "name", Some(0), at),
            Err(ExtractError::TooDeep { .. })
        ));
        assert!(check_value(&deep(64), 64, "name", None, at).is_ok());
    }
}
