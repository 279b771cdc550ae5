//! The top level of a JSON body, read as it streams in: one value, or an
//! array whose elements are cut out one at a time with their exact bytes.
//! Only the framing is checked here (brackets, commas, what surrounds the
//! value, with serde_json's messages and positions); each element is then
//! checked whole, from memory ([`super::shape::check_value`]). Walking
//! the body through serde_json's reader, a byte at a time, cost about a
//! microsecond per element; cutting costs one pass over the bytes.

use std::io::BufRead;

use super::shape::{self, Position};
use super::{ExtractError, SplitError};

/// What [`Elements::next`] found.
pub enum Next<'a> {
    /// An element (or the body's one value).
    Value(Value<'a>),
    /// The body ended where it may.
    End,
}

pub struct Value<'a> {
    pub bytes: &'a [u8],
    /// Its place in the top-level array; `None` for a body that is not one.
    pub index: Option<usize>,
    /// Where its first byte is.
    pub start: Position,
    /// Whether it passed [`shape::check_value`] already: a scalar is
    /// checked here, where the byte after it is known (serde_json's verdict
    /// on `tru]` is not its verdict on `tru`). An object or array is not.
    pub checked: bool,
}

pub struct Elements<'r, R> {
    text: &'r mut R,
    max_depth: usize,
    limit: usize,
    /// Bytes consumed so far, and where the current line starts.
    offset: u64,
    line: u64,
    line_start: u64,
    state: State,
    element: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    /// Inside the top-level array, before element `0`.
    First,
    /// After element `n - 1`, before a comma or the closing bracket.
    After(usize),
    /// After the body's value: only whitespace may follow.
    Done,
    Ended,
}

/// Where a scan is inside a string, after its opening quote.
#[derive(Default)]
struct InString {
    escaped: bool,
    /// Bytes of a `\uXXXX` escape still to come: serde_json takes the
    /// next four bytes whatever they are (a quote too).
    hex_left: u8,
}

impl InString {
    /// No escape under way: only a quote or a backslash changes anything.
    fn plain(&self) -> bool {
        !self.escaped && self.hex_left == 0
    }

    /// Moves past `b`; `true` when it is the closing quote.
    fn closed_by(&mut self, b: u8) -> bool {
        if self.hex_left > 0 {
            self.hex_left -= 1;
        } else if self.escaped {
            self.escaped = false;
            if b == b'u' {
                self.hex_left = 4;
            }
        } else if b == b'\\' {
            self.escaped = true;
        } else {
            return b == b'"';
        }
        false
    }
}

/// The bytes that matter to the framing outside strings.
const STRUCTURAL: [bool; 256] = byte_set(b"\"{[}]");
const WHITESPACE: [bool; 256] = byte_set(b" \t\n\r");

/// A lookup table: `true` for each byte of `bytes`.
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < bytes.len() {
        table[bytes[i] as usize] = true;
        i += 1;
    }
    table
}

impl<'r, R: BufRead> Elements<'r, R> {
    pub fn new(text: &'r mut R, max_depth: usize, limit: usize) -> Self {
        Self {
            text,
            max_depth,
            limit,
            offset: 0,
            line: 1,
            line_start: 0,
            state: State::Start,
            element: Vec::new(),
        }
    }

    /// The next element, or the end of the body.
    pub fn next(&mut self) -> Result<Next<'_>, SplitError> {
        loop {
            match self.state {
                State::Start => match self.peek()? {
                    Some(b'[') => {
                        self.bump();
                        if self.max_depth == 0 {
                            return Err(self.too_deep());
                        }
                        self.state = State::First;
                    }
                    Some(_) => {
                        self.state = State::Done;
                        return self.value(None);
                    }
                    None => return Err(self.invalid("EOF while parsing a value", self.here())),
                },
                State::First => match self.peek()? {
                    Some(b']') => {
                        self.bump();
                        self.state = State::Done;
                    }
                    Some(_) => {
                        self.state = State::After(1);
                        return self.value(Some(0));
                    }
                    None => return Err(self.invalid("EOF while parsing a list", self.here())),
                },
                State::After(n) => match self.peek()? {
                    Some(b',') => {
                        self.bump();
                        match self.peek()? {
                            Some(b']') => {
                                return Err(self.invalid("trailing comma", self.peeked()));
                            }
                            Some(_) => {
                                self.state = State::After(n + 1);
                                return self.value(Some(n));
                            }
                            None => {
                                return Err(self.invalid("EOF while parsing a value", self.here()));
                            }
                        }
                    }
                    Some(b']') => {
                        self.bump();
                        self.state = State::Done;
                    }
                    Some(_) => return Err(self.invalid("expected `,` or `]`", self.peeked())),
                    None => return Err(self.invalid("EOF while parsing a list", self.here())),
                },
                State::Done => match self.peek()? {
                    Some(_) => return Err(self.invalid("trailing characters", self.peeked())),
                    None => {
                        self.state = State::Ended;
                        return Ok(Next::End);
                    }
                },
                State::Ended => return Ok(Next::End),
            }
        }
    }

    /// Reads one value, starting at the (significant) byte in front.
    fn value(&mut self, index: Option<usize>) -> Result<Next<'_>, SplitError> {
        let start = self.peeked();
        self.element.clear();
        let first = self.peek()?.expect("a byte was peeked");
        let checked = match first {
            b'{' | b'[' => {
                self.container(index)?;
                false
            }
            b',' | b']' | b'}' | b':' => {
                return Err(self.invalid("expected value", start));
            }
            b'"' => {
                self.string()?;
                self.check_scalar(index, start)?;
                true
            }
            _ => {
                self.scalar()?;
                self.check_scalar(index, start)?;
                true
            }
        };
        Ok(Next::Value(Value {
            bytes: &self.element,
            index,
            start,
            checked,
        }))
    }

    /// Checks the scalar just read with the byte that follows it, as
    /// serde_json reads it: `tru]` is "expected ident" at the bracket, `12a`
    /// is "expected `,` or `]`" at the letter (in an array).
    fn check_scalar(&mut self, index: Option<usize>, start: Position) -> Result<(), SplitError> {
        let buf = self.text.fill_buf().map_err(SplitError::from_read)?;
        let next = buf.first().copied();
        let len = self.element.len();
        self.element.extend(next);
        // Only the shape matters here: no member is noted as the name.
        let checked = shape::check_value(&self.element, self.max_depth, "", index, start).map(drop);
        self.element.truncate(len);
        let after = start.column + len as u64;
        match checked {
            Err(ExtractError::InvalidJson {
                message,
                line,
                column,
            }) if message == "trailing characters" => {
                if column == after {
                    // Only the byte after it: the scalar is whole.
                    Ok(())
                } else if index.is_some() {
                    Err(self.invalid("expected `,` or `]`", Position { line, column }))
                } else {
                    Err(self.invalid(&message, Position { line, column }))
                }
            }
            checked => checked.map_err(SplitError::from),
        }
    }

    /// An object or array, up to its closing bracket (or the end of the
    /// body, where the check finds what is missing). Most of a company is
    /// inside strings, which are skipped to their next quote or backslash
    /// at once (memchr); outside them, to the next bracket or quote.
    fn container(&mut self, index: Option<usize>) -> Result<(), SplitError> {
        let mut depth = 0usize;
        let mut string: Option<InString> = None;
        self.cut(index, |buf| {
            let mut i = 0;
            while i < buf.len() {
                if let Some(s) = &mut string {
                    if s.plain() {
                        i += memchr::memchr2(b'"', b'\\', &buf[i..])?;
                    }
                    if s.closed_by(buf[i]) {
                        string = None;
                    }
                    i += 1;
                    continue;
                }
                i += buf[i..].iter().position(|b| STRUCTURAL[*b as usize])?;
                match buf[i] {
                    b'"' => string = Some(InString::default()),
                    b'{' | b'[' => depth += 1,
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                }
                i += 1;
            }
            None
        })
    }

    /// A string, up to its closing quote.
    fn string(&mut self) -> Result<(), SplitError> {
        let mut string: Option<InString> = None;
        self.cut(None, |buf| {
            for (i, &b) in buf.iter().enumerate() {
                let Some(s) = &mut string else {
                    // The opening quote.
                    string = Some(InString::default());
                    continue;
                };
                if s.closed_by(b) {
                    return Some(i + 1);
                }
            }
            None
        })
    }

    /// A number or a literal: up to the next byte that cannot be part of one.
    fn scalar(&mut self) -> Result<(), SplitError> {
        self.cut(None, |buf| {
            buf.iter().position(|b| {
                WHITESPACE[*b as usize]
                    || matches!(b, b',' | b']' | b'}' | b'[' | b'{' | b':' | b'"')
            })
        })
    }

    /// Moves the value in front into the element, one read buffer at a
    /// time: `ends` is given each buffer and says how many of its bytes
    /// complete the value, if it ends there (or the body ends first).
    fn cut(
        &mut self,
        index: Option<usize>,
        mut ends: impl FnMut(&[u8]) -> Option<usize>,
    ) -> Result<(), SplitError> {
        loop {
            let buf = self.text.fill_buf().map_err(SplitError::from_read)?;
            if buf.is_empty() {
                return Ok(());
            }
            let end = ends(buf);
            let taken = end.unwrap_or(buf.len());
            self.record(taken, index)?;
            if end.is_some() {
                return Ok(());
            }
        }
    }

    /// Moves `len` bytes of the read buffer into the element.
    fn record(&mut self, len: usize, index: Option<usize>) -> Result<(), SplitError> {
        if self.element.len() + len > self.limit {
            let place = match index {
                Some(i) => format!("element {i} of the array"),
                None => "element 0 of the array (or the body's one company)".to_owned(),
            };
            return Err(SplitError::CompanyTooLarge {
                place,
                limit: self.limit,
            });
        }
        let buf = self.text.fill_buf().map_err(SplitError::from_read)?;
        let bytes = &buf[..len];
        self.element.extend_from_slice(bytes);
        self.count_lines(len);
        Ok(())
    }

    /// Skips whitespace; the next byte, not consumed.
    fn peek(&mut self) -> Result<Option<u8>, SplitError> {
        loop {
            let buf = self.text.fill_buf().map_err(SplitError::from_read)?;
            if buf.is_empty() {
                return Ok(None);
            }
            match buf.iter().position(|b| !WHITESPACE[*b as usize]) {
                Some(0) => return Ok(Some(buf[0])),
                Some(n) => {
                    let b = buf[n];
                    self.count_lines(n);
                    return Ok(Some(b));
                }
                None => {
                    let n = buf.len();
                    self.count_lines(n);
                }
            }
        }
    }

    /// Consumes the byte [`Self::peek`] returned.
    fn bump(&mut self) {
        self.count_lines(1);
    }

    /// Consumes `len` bytes of the read buffer, counting their lines.
    fn count_lines(&mut self, len: usize) {
        if len == 0 {
            return;
        }
        let buf = self.text.fill_buf().expect("the bytes were read before");
        let bytes = &buf[..len];
        if let Some(last) = memchr::memrchr(b'\n', bytes) {
            self.line += memchr::memchr_iter(b'\n', bytes).count() as u64;
            self.line_start = self.offset + last as u64 + 1;
        }
        self.offset += len as u64;
        self.text.consume(len);
    }

    /// Where serde_json reports an error found at the end of what was read:
    /// the column of the last byte consumed (0 after a line break).
    fn here(&self) -> Position {
        Position {
            line: self.line,
            column: self.offset - self.line_start,
        }
    }

    /// The position of the byte in front (peeked, not consumed).
    fn peeked(&self) -> Position {
        Position {
            line: self.line,
            column: self.offset - self.line_start + 1,
        }
    }

    fn invalid(&self, message: &str, at: Position) -> SplitError {
        ExtractError::InvalidJson {
            message: message.to_owned(),
            line: at.line,
            column: at.column,
        }
        .into()
    }

    fn too_deep(&self) -> SplitError {
        let at = self.peeked();
        ExtractError::TooDeep {
            limit: self.max_depth,
            line: at.line,
            column: at.column,
        }
        .into()
    }
}
