//! Turns an upload into company documents: one object, a JSON array of
//! objects, or NDJSON. Each document keeps its exact bytes as posted, so the
//! stored object is what the client sent. A body with any unusable part is
//! rejected whole: nothing of it is stored, and the client gets every
//! position to fix (up to a limit).

mod shape;

pub use shape::DEPTH_CEILING;

use serde::Deserialize;
use serde_json::value::RawValue;

use etl_core::domain::{CompanySlug, SlugError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    NdJson,
}

/// One company of the upload, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanyDoc {
    pub company: CompanySlug,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("{message} at line {line}, column {column}")]
    InvalidJson {
        message: String,
        line: u64,
        column: u64,
    },
    #[error("{message} (line {line}, column {column})")]
    InvalidEncoding {
        message: String,
        line: u64,
        column: u64,
    },
    #[error(
        "arrays and objects nest deeper than the limit of {limit} levels at line {line}, column {column}"
    )]
    TooDeep {
        limit: usize,
        line: u64,
        column: u64,
    },
    #[error(
        "key {key:?} appears twice in the object at {} (line {line}, column {column}); keep one: readers disagree on which one counts, so the api does not guess",
        if path.is_empty() { "the top level" } else { path }
    )]
    DuplicateKey {
        key: String,
        /// JSON Pointer of the object holding the key.
        path: String,
        line: u64,
        column: u64,
    },
    #[error("{message}")]
    MissingCompany {
        message: String,
        problems: Vec<Problem>,
    },
}

/// Where in the upload a document is unusable, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Array index (JSON) or line number (NDJSON); absent for a single object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl ExtractError {
    /// Line and column of a problem in the body's text, when it has one.
    pub fn position(&self) -> Option<(u64, u64)> {
        match self {
            ExtractError::InvalidJson { line, column, .. }
            | ExtractError::InvalidEncoding { line, column, .. }
            | ExtractError::TooDeep { line, column, .. }
            | ExtractError::DuplicateKey { line, column, .. } => Some((*line, *column)),
            ExtractError::MissingCompany { .. } => None,
        }
    }
}

/// Problems listed in one answer; the rest are counted.
const MAX_PROBLEMS: usize = 20;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `max_depth`: deepest nesting of arrays and objects accepted, at most
/// [`DEPTH_CEILING`].
pub fn split(
    body: &[u8],
    format: BodyFormat,
    max_depth: usize,
) -> Result<Vec<CompanyDoc>, ExtractError> {
    // A leading BOM is what some Windows editors write; it is not content.
    let body = body.strip_prefix(UTF8_BOM).unwrap_or(body);
    shape::check_encoding(body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ExtractError::InvalidJson {
            message: "the body is empty: send a company object, an array of them, or NDJSON".into(),
            line: 1,
            column: 0,
        });
    }
    let located: Vec<(Location, &RawValue)> = match format {
        BodyFormat::Json => {
            shape::check_json(body, max_depth, 1)?;
            split_json(body)?
        }
        BodyFormat::NdJson => split_ndjson(body, max_depth)?,
    };
    let mut docs = Vec::with_capacity(located.len());
    let mut problems = Vec::new();
    for (at, raw) in &located {
        match company_of(raw) {
            Ok(company) => docs.push(CompanyDoc {
                company,
                bytes: raw.get().as_bytes().to_vec(),
            }),
            Err(message) => problems.push(at.problem(message)),
        }
    }
    if docs.is_empty() && problems.is_empty() {
        return Err(ExtractError::MissingCompany {
            message: "the array is empty: there is no company to import".into(),
            problems,
        });
    }
    if !problems.is_empty() {
        let count = problems.len();
        let first = problems[0].clone();
        problems.truncate(MAX_PROBLEMS);
        let message = match (count, &first) {
            (1, p) => format!("{}{}", p.where_prefix(), p.message),
            (n, p) => format!(
                "{n} documents are not usable companies; first: {}{}",
                p.where_prefix(),
                p.message
            ),
        };
        return Err(ExtractError::MissingCompany { message, problems });
    }
    Ok(docs)
}

#[derive(Clone, Copy)]
enum Location {
    Whole,
    Index(usize),
    Line(usize),
}

impl Location {
    fn problem(self, message: String) -> Problem {
        let (index, line) = match self {
            Location::Whole => (None, None),
            Location::Index(i) => (Some(i), None),
            Location::Line(l) => (None, Some(l)),
        };
        Problem {
            index,
            line,
            message,
        }
    }
}

impl Problem {
    fn where_prefix(&self) -> String {
        match (self.index, self.line) {
            (Some(i), _) => format!("element {i}: "),
            (_, Some(l)) => format!("line {l}: "),
            _ => String::new(),
        }
    }
}

/// `line`: where the error is in the whole body.
fn invalid_json(e: &serde_json::Error, line: u64) -> ExtractError {
    let text = e.to_string();
    // serde_json appends " at line L column C"; we report those as fields.
    let message = text
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_owned())
        .unwrap_or(text);
    ExtractError::InvalidJson {
        message,
        line,
        column: e.column() as u64,
    }
}

/// Only after [`shape::check_json`] passed: errors here are not expected.
fn split_json(body: &[u8]) -> Result<Vec<(Location, &RawValue)>, ExtractError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace()).copied();
    if first == Some(b'[') {
        let items: Vec<&RawValue> =
            serde_json::from_slice(body).map_err(|e| invalid_json(&e, e.line() as u64))?;
        Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, raw)| (Location::Index(i), raw))
            .collect())
    } else {
        let raw: &RawValue =
            serde_json::from_slice(body).map_err(|e| invalid_json(&e, e.line() as u64))?;
        Ok(vec![(Location::Whole, raw)])
    }
}

fn split_ndjson(body: &[u8], max_depth: usize) -> Result<Vec<(Location, &RawValue)>, ExtractError> {
    let mut out = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let number = i as u64 + 1;
        shape::check_json(line, max_depth, number)?;
        let raw: &RawValue = serde_json::from_slice(line).map_err(|e| invalid_json(&e, number))?;
        out.push((Location::Line(i + 1), raw));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
}

fn company_of(raw: &RawValue) -> Result<CompanySlug, String> {
    let text = raw.get();
    if !text.starts_with('{') {
        return Err(format!(
            "expected a company object, found {}",
            kind_of(text)
        ));
    }
    let parsed: NameOnly<'_> =
        serde_json::from_str(text).map_err(|e| format!("unreadable object: {e}"))?;
    let name_raw = parsed
        .name
        .ok_or_else(|| "the company has no \"name\"".to_owned())?;
    let name: String = serde_json::from_str(name_raw.get()).map_err(|_| {
        format!(
            "\"name\" must be a string, found {}",
            kind_of(name_raw.get())
        )
    })?;
    CompanySlug::from_name(&name).map_err(|e| match e {
        SlugError::Empty(_) | SlugError::Invalid(_) => format!(
            "\"name\" {:?} has no letters or digits to identify the company",
            name.chars().take(80).collect::<String>()
        ),
    })
}

fn kind_of(json: &str) -> &'static str {
    match json.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(docs: &[CompanyDoc]) -> Vec<&str> {
        docs.iter().map(|d| d.company.as_str()).collect()
    }

    #[test]
    fn one_object_keeps_its_exact_bytes() {
        let body = b" \n{\"name\": \"Acme\", \"inn\": \"7707083893\"}\n";
        let docs = split(body, BodyFormat::Json, 64).unwrap();
        assert_eq!(names(&docs), ["acme"]);
        assert_eq!(
            docs[0].bytes,
            b"{\"name\": \"Acme\", \"inn\": \"7707083893\"}"
        );
    }

    #[test]
    fn an_array_gives_one_document_per_company() {
        let body = r#"[{"name":"A"}, {"name":"Ромашка"}]"#.as_bytes();
        let docs = split(body, BodyFormat::Json, 64).unwrap();
        assert_eq!(names(&docs), ["a", "romashka"]);
        assert_eq!(docs[1].bytes, r#"{"name":"Ромашка"}"#.as_bytes());
    }

    #[test]
    fn ndjson_skips_blank_lines() {
        let body = b"{\"name\":\"A\"}\n\n{\"name\":\"B\"}\r\n";
        assert_eq!(
            names(&split(body, BodyFormat::NdJson, 64).unwrap()),
            ["a", "b"]
        );
    }

    #[test]
    fn a_utf8_bom_is_ignored() {
        let docs = split(b"\xEF\xBB\xBF{\"name\":\"A\"}", BodyFormat::Json, 64).unwrap();
        assert_eq!(names(&docs), ["a"]);
    }

    #[test]
    fn truncated_json_reports_line_and_column() {
        let err = split(b"[\n{\"name\": \"A\"},\n{\"name\": ", BodyFormat::Json, 64).unwrap_err();
        match err {
            ExtractError::InvalidJson { line, column, .. } => {
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_broken_ndjson_line_is_reported_by_its_line_number() {
        let err = split(b"{\"name\":\"A\"}\n{oops}\n", BodyFormat::NdJson, 64).unwrap_err();
        assert!(
            matches!(
                err,
                ExtractError::InvalidJson {
                    line: 2,
                    column: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn empty_bodies_are_invalid_json() {
        for body in [&b""[..], b"  \n\t", b"\xEF\xBB\xBF"] {
            assert!(matches!(
                split(body, BodyFormat::Json, 64),
                Err(ExtractError::InvalidJson { .. })
            ));
        }
    }

    #[test]
    fn non_objects_and_nameless_objects_are_missing_companies() {
        for body in [
            &b"null"[..],
            b"42",
            b"\"acme\"",
            b"[]",
            b"{}",
            b"{\"name\": 7}",
            b"{\"name\": \"!!\"}",
        ] {
            let err = split(body, BodyFormat::Json, 64).unwrap_err();
            assert!(
                matches!(err, ExtractError::MissingCompany { .. }),
                "{body:?}: {err:?}"
            );
        }
    }

    #[test]
    fn every_bad_element_of_an_array_is_listed() {
        let err = split(br#"[{"name":"A"}, 1, {"x":1}]"#, BodyFormat::Json, 64).unwrap_err();
        let ExtractError::MissingCompany { problems, message } = err else {
            panic!("expected missing_company")
        };
        let indexes: Vec<_> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [Some(1), Some(2)]);
        assert!(message.starts_with("2 documents"), "{message}");
    }
}
