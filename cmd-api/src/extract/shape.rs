//! Checks an upload must pass as it is split: JSON syntax, nesting within
//! the limit, no duplicate keys, numbers a float can hold. (UTF-8 is
//! checked below, by `text`.)
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
    let mut walk = WalkState::new(max_depth);
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = Walk(&mut walk).deserialize(&mut de).and_then(|()| de.end());
    let Err(e) = result else { return Ok(()) };
    Err(walk.failure(&e, e.line() as u64 + first_line - 1))
}

/// Told about the elements of a top-level array as the streaming walk
/// reads them (or about the top-level value, when it is not an array).
pub trait Elements {
    /// An element is about to be read.
    fn starts(&mut self);
    /// It was read and passed the checks; `index` is its place in the
    /// top-level array, `None` for a top-level value that is not one.
    /// An error stops the walk.
    fn ends(&mut self, index: Option<usize>) -> Result<(), ()>;
}

pub enum StreamFailure {
    Extract(ExtractError),
    /// The reader failed, with what it said.
    Io(std::io::Error),
    /// [`Elements::ends`] asked to stop.
    Stopped,
}

/// [`check_json`] of a whole body read from `reader`, which is never held
/// whole: elements are reported to `elements` as they complete.
pub fn check_json_stream<R: std::io::Read>(
    reader: R,
    max_depth: usize,
    elements: &mut dyn Elements,
) -> Result<(), StreamFailure> {
    let mut walk = WalkState::new(max_depth);
    let mut stopped = false;
    elements.starts();
    let mut de = serde_json::Deserializer::from_reader(reader);
    let top = Top {
        walk: &mut walk,
        elements: &mut *elements,
        stopped: &mut stopped,
    };
    let result = top.deserialize(&mut de).and_then(|is_array| {
        // Before the trailing whitespace is read: it is not the value's.
        if !is_array && elements.ends(None).is_err() {
            stopped = true;
            return Err(serde_json::Error::custom("stopped by the caller"));
        }
        de.end()
    });
    match result {
        Ok(()) => Ok(()),
        Err(_) if stopped => Err(StreamFailure::Stopped),
        Err(e) if e.is_io() => Err(StreamFailure::Io(e.into())),
        Err(e) => Err(StreamFailure::Extract(walk.failure(&e, e.line() as u64))),
    }
}

/// The top-level value: an array is walked element by element, anything
/// else as one value. Yields whether it was an array.
struct Top<'a> {
    walk: &'a mut WalkState,
    elements: &'a mut dyn Elements,
    stopped: &'a mut bool,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        Walk(self.walk).visit_map(map).map(|()| false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        self.walk.enter()?;
        let mut index = 0;
        loop {
            self.elements.starts();
            self.walk.path.push(Segment::Index(index));
            let more = seq.next_element_seed(Walk(&mut *self.walk))?;
            self.walk.path.pop();
            if more.is_none() {
                return Ok(true);
            }
            if self.elements.ends(Some(index)).is_err() {
                *self.stopped = true;
                return Err(A::Error::custom("stopped by the caller"));
            }
            index += 1;
        }
    }
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
    fn new(max_depth: usize) -> Self {
        Self {
            path: Vec::new(),
            max_depth,
            finding: None,
        }
    }

    /// What stopped the walk, `line` being where in the whole body.
    fn failure(&mut self, e: &serde_json::Error, line: u64) -> ExtractError {
        let column = e.column() as u64;
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
            None => super::invalid_json(e, line),
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

    struct Seen(Vec<Option<usize>>);

    impl Elements for Seen {
        fn starts(&mut self) {}
        fn ends(&mut self, index: Option<usize>) -> Result<(), ()> {
            self.0.push(index);
            if index == Some(2) { Err(()) } else { Ok(()) }
        }
    }

    #[test]
    fn the_stream_walk_reports_each_element_and_the_whole_body_position() {
        let mut seen = Seen(Vec::new());
        let body = &b"[{\"a\":1},\n{\"a\":2}]"[..];
        assert!(check_json_stream(body, 64, &mut seen).is_ok());
        assert_eq!(seen.0, [Some(0), Some(1)]);

        let body =
            &b"[{\"name\":\"A\"},\n{\"name\":\"B\",\"address\":{\"city\":\"x\",\"city\":\"y\"}}]"[..];
        let Err(StreamFailure::Extract(ExtractError::DuplicateKey { path, line, .. })) =
            check_json_stream(body, 64, &mut Seen(Vec::new()))
        else {
            panic!("expected a duplicate key")
        };
        assert_eq!((path.as_str(), line), ("/1/address", 2));

        let mut seen = Seen(Vec::new());
        let stopped = check_json_stream(&b"[1,2,3,4]"[..], 64, &mut seen);
        assert!(matches!(stopped, Err(StreamFailure::Stopped)));
        assert_eq!(seen.0, [Some(0), Some(1), Some(2)]);

        let mut seen = Seen(Vec::new());
        assert!(check_json_stream(&b" {\"a\":[1]} "[..], 64, &mut seen).is_ok());
        assert_eq!(seen.0, [None]);
    }
}
