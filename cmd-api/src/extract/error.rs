//! What can be wrong with an upload, and where: the errors of the split
//! and the problems listed in a refusal.

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
    /// Valid JSON, but a document is not an object or has no usable name.
    #[error("{message}")]
    NoUsableDocument {
        message: String,
        problems: Vec<Problem>,
        /// `missing_company` or `missing_document_name`, by dataset.
        code: &'static str,
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
            ExtractError::NoUsableDocument { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error("{place} is larger than the limit of {limit} bytes for one company")]
    CompanyTooLarge { place: String, limit: usize },
    /// The reader failed (the client, or a layer below such as gzip).
    #[error("the body could not be read: {0}")]
    Read(std::io::Error),
    /// The sink refused a document.
    #[error("stopped")]
    Stopped,
}

impl SplitError {
    /// Takes an error of the text layer (an encoding error) back out of an
    /// `io::Error`; anything else is the reader's.
    pub(super) fn from_read(e: std::io::Error) -> Self {
        if e.get_ref().is_some_and(|inner| inner.is::<ExtractError>()) {
            let inner = e.into_inner().expect("checked: it has an inner error");
            let extract = inner
                .downcast::<ExtractError>()
                .expect("checked: it is an ExtractError");
            return SplitError::Extract(*extract);
        }
        SplitError::Read(e)
    }
}

#[derive(Clone, Copy)]
pub(super) enum Location {
    Whole,
    Index(usize),
    Line(usize),
}

impl Location {
    pub(super) fn problem(self, message: String) -> Problem {
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
    pub(super) fn where_prefix(&self) -> String {
        match (self.index, self.line) {
            (Some(i), _) => format!("element {i}: "),
            (_, Some(l)) => format!("line {l}: "),
            _ => String::new(),
        }
    }
}

/// `line` and `column`: where the error is in the whole body.
pub(super) fn invalid_json(e: &serde_json::Error, line: u64, column: u64) -> ExtractError {
    let text = e.to_string();
    // serde_json appends " at line L column C"; we report those as fields.
    let message = text
        .rsplit_once(" at line ")
        .map(|(m, _)| m.to_owned())
        .unwrap_or(text);
    ExtractError::InvalidJson {
        message,
        line,
        column,
    }
}
