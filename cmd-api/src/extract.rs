//! Turns an upload into company documents: one object, a JSON array of
//! objects, or NDJSON, read as it arrives and never held whole. Each
//! document keeps its exact bytes as posted, so the stored object is what
//! the client sent. A body with any unusable part is refused whole: no
//! document after the first problem is handed on, the caller announces
//! none of them, and the client gets every position to fix (up to a limit).

mod elements;
mod error;
mod shape;
mod text;

pub use error::{ExtractError, Problem, SplitError};

pub use shape::DEPTH_CEILING;

use std::io::{BufRead, Read};
use std::sync::Arc;

use elements::{Elements, Next};
use error::{Location, invalid_json};
use shape::Name;
use text::TextReader;

use etl_core::domain::{CompanySlug, SlugError};
use etl_core::events::COMPANIES_DATASET;

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

/// Problems listed in one answer; the rest are counted.
const MAX_PROBLEMS: usize = 20;
/// Unusable documents after which the rest of the body is not read: the
/// answer is the same (refused whole) and a body of millions of them would
/// otherwise cost seconds of a core to count.
const STOP_AT_PROBLEMS: usize = 100;

#[derive(Debug, Clone)]
pub struct SplitLimits {
    /// Deepest nesting of arrays and objects accepted, at most
    /// [`DEPTH_CEILING`].
    pub max_depth: usize,
    /// Largest company document (array element, NDJSON line, or the whole
    /// body when it is one object): the most the splitter holds at once.
    pub max_company_bytes: usize,
    pub naming: Naming,
}

/// How a dataset's documents are named, and how a document without a
/// usable name is answered.
#[derive(Debug, Clone)]
pub struct Naming {
    /// The top-level field that names a document (its dataset's
    /// `document_name`): `name` for companies.
    pub field: Arc<str>,
    /// The dataset's name, which the answers use for its documents.
    pub dataset: Arc<str>,
    /// The error code: `missing_company` for companies, as the contract
    /// has it since before datasets; `missing_document_name` for others.
    pub code: &'static str,
}

impl Naming {
    pub fn companies() -> Self {
        Self::new("name", COMPANIES_DATASET)
    }

    pub fn new(field: &str, dataset: &str) -> Self {
        let code = if dataset == COMPANIES_DATASET {
            "missing_company"
        } else {
            "missing_document_name"
        };
        Self {
            field: field.into(),
            dataset: dataset.into(),
            code,
        }
    }
}

/// Splits a whole body held in memory; see [`split_stream`].
pub fn split(
    body: &[u8],
    format: BodyFormat,
    max_depth: usize,
) -> Result<Vec<CompanyDoc>, ExtractError> {
    let mut docs = Vec::new();
    let limits = SplitLimits {
        max_depth,
        max_company_bytes: usize::MAX,
        naming: Naming::companies(),
    };
    match split_stream(body, format, limits, |doc| {
        docs.push(doc);
        true
    }) {
        Ok(_) => Ok(docs),
        Err(SplitError::Extract(e)) => Err(e),
        Err(other) => unreachable!("a body in memory without a size limit: {other}"),
    }
}

/// Reads an upload and hands each company document to `sink` as soon as it
/// is complete, holding at most one document (plus a read buffer) at a
/// time. `sink` returns false to stop. Once a document turns out unusable
/// no more are handed over, but the rest is still read so that every
/// problem is listed. Returns how many documents the body has.
pub fn split_stream<R: Read>(
    reader: R,
    format: BodyFormat,
    limits: SplitLimits,
    sink: impl FnMut(CompanyDoc) -> bool,
) -> Result<usize, SplitError> {
    let mut text = TextReader::new(reader);
    let mut collector = Collector {
        sink,
        naming: limits.naming.clone(),
        documents: 0,
        problems: Vec::new(),
        problem_count: 0,
    };
    let result = match format {
        BodyFormat::Json => split_json(&mut text, limits, &mut collector),
        BodyFormat::NdJson => split_ndjson(&mut text, limits, &mut collector),
    };
    match result {
        Err(SplitError::Extract(ExtractError::InvalidJson { .. })) | Ok(())
            if !text.saw_content() =>
        {
            Err(ExtractError::InvalidJson {
                message: "the body is empty: send a company object, an array of them, or NDJSON"
                    .into(),
                line: 1,
                column: 0,
            }
            .into())
        }
        Ok(()) => collector.finish(),
        Err(e) => Err(e),
    }
}

/// Receives the documents in order, hands the usable ones on while all
/// are, and lists the problems.
struct Collector<F> {
    sink: F,
    naming: Naming,
    documents: usize,
    problems: Vec<Problem>,
    problem_count: usize,
}

impl<F: FnMut(CompanyDoc) -> bool> Collector<F> {
    /// Takes the next document; whether it is a usable company, or why not.
    /// `json`: one checked JSON value, valid UTF-8; `name`: what its check
    /// found of its `name`.
    fn take(
        &mut self,
        at: Location,
        json: &[u8],
        name: Name<'_>,
    ) -> Result<Result<(), String>, SplitError> {
        self.documents += 1;
        match company_of(json, name, &self.naming.field) {
            Ok(company) => {
                // After a problem the body is refused: no point storing more.
                if self.problem_count == 0 {
                    let doc = CompanyDoc {
                        company,
                        bytes: json.to_vec(),
                    };
                    if !(self.sink)(doc) {
                        return Err(SplitError::Stopped);
                    }
                }
                Ok(Ok(()))
            }
            Err(message) => {
                self.problem(at, message.clone())?;
                Ok(Err(message))
            }
        }
    }

    /// A document identical to one taken before: the same company (one
    /// file, handed on once) or the same problem, at another place.
    fn again(&mut self, at: Location, usable: &Result<(), String>) -> Result<(), SplitError> {
        self.documents += 1;
        match usable {
            Ok(()) => Ok(()),
            Err(message) => self.problem(at, message.clone()),
        }
    }

    fn problem(&mut self, at: Location, message: String) -> Result<(), SplitError> {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(at.problem(message));
        }
        if self.problem_count == STOP_AT_PROBLEMS {
            return Err(self.refusal("at least ").into());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<usize, SplitError> {
        if self.documents == 0 {
            return Err(ExtractError::NoUsableDocument {
                message: format!(
                    "the array is empty: there are no {} to import",
                    self.naming.dataset
                ),
                problems: self.problems,
                code: self.naming.code,
            }
            .into());
        }
        if self.problems.is_empty() {
            return Ok(self.documents);
        }
        Err(self.refusal("").into())
    }

    /// The answer to a body with unusable documents; `count_prefix` says
    /// whether the count is all of them or where reading stopped.
    fn refusal(&mut self, count_prefix: &str) -> ExtractError {
        let problems = std::mem::take(&mut self.problems);
        let first = problems.first().expect("a problem was noted");
        let message = match self.problem_count {
            1 => format!("{}{}", first.where_prefix(), first.message),
            n => format!(
                "{count_prefix}{n} documents are not usable {}; first: {}{}",
                self.naming.dataset,
                first.where_prefix(),
                first.message
            ),
        };
        ExtractError::NoUsableDocument {
            message,
            problems,
            code: self.naming.code,
        }
    }
}

fn split_json<R: Read, F: FnMut(CompanyDoc) -> bool>(
    text: &mut TextReader<R>,
    limits: SplitLimits,
    collector: &mut Collector<F>,
) -> Result<(), SplitError> {
    let mut elements = Elements::new(text, limits.max_depth, limits.max_company_bytes);
    let mut seen = SeenElements::default();
    loop {
        let Next::Value(value) = elements.next()? else {
            return Ok(());
        };
        let (bytes, index) = (value.bytes, value.index);
        let at = index.map_or(Location::Whole, Location::Index);
        if let Some(usable) = seen.get(bytes) {
            collector.again(at, usable)?;
            continue;
        }
        // A scalar was checked where it was cut; it has no name either.
        let name = if value.checked {
            Name::Missing
        } else {
            shape::check_value(
                bytes,
                limits.max_depth,
                &limits.naming.field,
                index,
                value.start,
            )?
        };
        // UTF-8 already: TextReader checked it, and cuts fall only around
        // ASCII brackets, quotes and delimiters.
        let usable = collector.take(at, bytes, name)?;
        seen.insert(bytes, usable);
    }
}

/// The last few small elements (or NDJSON lines) of this body, and whether
/// each was a usable company. An element repeated byte for byte is the
/// same file (stored and announced once anyway) or the same problem, so it
/// is neither checked nor parsed again: a gzip body of a few elements
/// repeated millions of times (a few hundred KiB that inflate past
/// `MAX_BODY_BYTES`) costs a pass over its bytes, not a parse of each copy.
#[derive(Default)]
struct SeenElements {
    recent: Vec<(Vec<u8>, Result<(), String>)>,
    /// The entry the next new element replaces, once `recent` is full.
    next: usize,
}

impl SeenElements {
    /// Longer elements are not remembered: repeats of them are rare, and
    /// each costs little next to its size.
    const MAX_ELEMENT_BYTES: usize = 256;
    /// Compared one by one: a few, so that a miss costs little.
    const ENTRIES: usize = 2;

    fn get(&self, bytes: &[u8]) -> Option<&Result<(), String>> {
        if bytes.len() > Self::MAX_ELEMENT_BYTES {
            return None;
        }
        self.recent
            .iter()
            .find(|(known, _)| known.as_slice() == bytes)
            .map(|(_, usable)| usable)
    }

    fn insert(&mut self, bytes: &[u8], usable: Result<(), String>) {
        if bytes.len() > Self::MAX_ELEMENT_BYTES {
            return;
        }
        if self.recent.len() < Self::ENTRIES {
            self.recent.push((bytes.to_vec(), usable));
            return;
        }
        let (known, old) = &mut self.recent[self.next];
        known.clear();
        known.extend_from_slice(bytes);
        *old = usable;
        self.next = (self.next + 1) % Self::ENTRIES;
    }
}

fn split_ndjson<R: Read, F: FnMut(CompanyDoc) -> bool>(
    text: &mut TextReader<R>,
    limits: SplitLimits,
    collector: &mut Collector<F>,
) -> Result<(), SplitError> {
    let limit = limits.max_company_bytes;
    let mut line = Vec::new();
    let mut seen = SeenElements::default();
    for number in 1.. {
        line.clear();
        let read = (&mut *text)
            .take((limit as u64).saturating_add(1))
            .read_until(b'\n', &mut line)
            .map_err(SplitError::from_read)?;
        if read == 0 {
            return Ok(());
        }
        let content = line.strip_suffix(b"\n").unwrap_or(&line);
        if content.len() > limit {
            return Err(SplitError::CompanyTooLarge {
                place: format!("line {number}"),
                limit,
            });
        }
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at = Location::Line(number as usize);
        if let Some(usable) = seen.get(content) {
            collector.again(at, usable)?;
            continue;
        }
        let name = shape::check_json(content, limits.max_depth, &limits.naming.field, number)?;
        // Valid JSON: what surrounds the value is JSON whitespace.
        let usable = collector.take(at, content.trim_ascii(), name)?;
        seen.insert(content, usable);
    }
    unreachable!("more lines than a u64 counts")
}

/// The slug of the document's `field`, or why it has none.
fn company_of(json: &[u8], name: Name<'_>, field: &str) -> Result<CompanySlug, String> {
    if json.first() != Some(&b'{') {
        return Err(format!(
            "expected a document object, found {}",
            kind_of(json)
        ));
    }
    let name = match name {
        Name::Str(name) => name,
        Name::Missing => return Err(format!("the document has no {field:?}")),
        Name::Other(kind) => return Err(format!("{field:?} must be a string, found {kind}")),
    };
    CompanySlug::from_name(&name).map_err(|e| match e {
        SlugError::Empty(_) | SlugError::Invalid(_) => format!(
            "{field:?} {:?} has no letters or digits to identify the document",
            name.chars().take(80).collect::<String>()
        ),
    })
}

fn kind_of(json: &[u8]) -> &'static str {
    match json.first() {
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
                matches!(err, ExtractError::NoUsableDocument { .. }),
                "{body:?}: {err:?}"
            );
        }
    }

    #[test]
    fn every_bad_element_of_an_array_is_listed() {
        let err = split(br#"[{"name":"A"}, 1, {"x":1}]"#, BodyFormat::Json, 64).unwrap_err();
        let ExtractError::NoUsableDocument {
            problems, message, ..
        } = err
        else {
            panic!("expected missing_company")
        };
        let indexes: Vec<_> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [Some(1), Some(2)]);
        assert!(message.starts_with("2 documents"), "{message}");
    }

    /// Hands out `chunk` bytes per read, as a slow network would.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn stream_all(
        body: &[u8],
        format: BodyFormat,
        chunk: usize,
        max_company_bytes: usize,
    ) -> Result<Vec<CompanyDoc>, SplitError> {
        let mut docs = Vec::new();
        let limits = SplitLimits {
            max_depth: 64,
            max_company_bytes,
            naming: Naming::companies(),
        };
        split_stream(Trickle { data: body, chunk }, format, limits, |doc| {
            docs.push(doc);
            true
        })?;
        Ok(docs)
    }

    #[test]
    fn any_chunking_of_the_body_gives_the_same_documents() {
        let array = "[ {\"name\":\"Ромашка\", \"n\": 1} ,\n{\"name\":\"B\"}\n]\n".as_bytes();
        let ndjson = "{\"name\":\"Ромашка\"}\r\n\n{\"name\":\"B\"}".as_bytes();
        for (body, format) in [(array, BodyFormat::Json), (ndjson, BodyFormat::NdJson)] {
            let whole = split(body, format, 64).unwrap();
            assert_eq!(names(&whole), ["romashka", "b"]);
            for chunk in [1, 2, 3, 7] {
                assert_eq!(stream_all(body, format, chunk, 1 << 20).unwrap(), whole);
            }
        }
    }

    #[test]
    fn a_company_over_its_limit_is_named_and_whitespace_does_not_count() {
        let big = format!("{{\"name\":\"{}\"}}", "x".repeat(100));
        let cases = [
            (
                format!("[{{\"name\":\"A\"}}, {big}]"),
                BodyFormat::Json,
                "element 1",
            ),
            (big.clone(), BodyFormat::Json, "element 0"),
            (
                format!("{{\"name\":\"A\"}}\n{big}\n"),
                BodyFormat::NdJson,
                "line 2",
            ),
        ];
        for (body, format, place) in cases {
            match stream_all(body.as_bytes(), format, 5, 50) {
                Err(SplitError::CompanyTooLarge {
                    place: p,
                    limit: 50,
                }) => {
                    assert!(p.starts_with(place), "{p} for {body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let padded = format!("{}{{\"name\":\"A\"}}{}", " ".repeat(500), "\n".repeat(500));
        assert_eq!(
            stream_all(padded.as_bytes(), BodyFormat::Json, 64, 50)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn no_document_is_handed_on_after_the_first_unusable_one() {
        let body = br#"[{"name":"A"}, 7, {"name":"C"}]"#;
        let mut handed = Vec::new();
        let limits = SplitLimits {
            max_depth: 64,
            max_company_bytes: 1 << 20,
            naming: Naming::companies(),
        };
        let result = split_stream(&body[..], BodyFormat::Json, limits, |doc| {
            handed.push(doc.company);
            true
        });
        assert!(matches!(
            result,
            Err(SplitError::Extract(ExtractError::NoUsableDocument { .. }))
        ));
        assert_eq!(handed.len(), 1);
    }

    #[test]
    fn a_sink_that_refuses_stops_the_split() {
        let limits = SplitLimits {
            max_depth: 64,
            max_company_bytes: 1 << 20,
            naming: Naming::companies(),
        };
        let mut calls = 0;
        let result = split_stream(
            &br#"[{"name":"A"},{"name":"B"},{"name":"C"}]"#[..],
            BodyFormat::Json,
            limits,
            |_| {
                calls += 1;
                false
            },
        );
        assert!(matches!(result, Err(SplitError::Stopped)), "{result:?}");
        assert_eq!(calls, 1);
    }
}
