//! The upload as UTF-8 text, checked as it streams in: a leading UTF-8 BOM
//! dropped, UTF-16 named as such, the first invalid byte reported with its
//! line and column. Only checked text is handed on, so the splitter above
//! never sees a byte it would have to re-check.

use std::io::{self, BufRead, Read};

use super::ExtractError;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Enough to hold many records' worth of text between two reads of the
/// source, and small enough that a few hundred uploads cost little.
const BUFFER_BYTES: usize = 64 * 1024;

pub struct TextReader<R> {
    source: R,
    buf: Box<[u8]>,
    /// Next byte to hand out.
    pos: usize,
    /// End of the checked text; `checked..filled` is the start of a
    /// character whose remaining bytes have not arrived yet.
    checked: usize,
    filled: usize,
    started: bool,
    eof: bool,
    /// Checked bytes before `buf[0]`, and the line and column (in
    /// characters) after them: where an encoding error is.
    offset: u64,
    line: u64,
    column: u64,
    saw_content: bool,
}

impl<R: Read> TextReader<R> {
    pub fn new(source: R) -> Self {
        Self {
            source,
            buf: vec![0; BUFFER_BYTES].into_boxed_slice(),
            pos: 0,
            checked: 0,
            filled: 0,
            started: false,
            eof: false,
            offset: 0,
            line: 1,
            column: 1,
            saw_content: false,
        }
    }

    /// Whether anything but whitespace has been read so far.
    pub fn saw_content(&self) -> bool {
        self.saw_content
    }

    fn read_source(&mut self) -> io::Result<()> {
        loop {
            match self.source.read(&mut self.buf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.filled += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Called once the first three bytes (or the whole body) are in.
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        // What some Windows editors write; it is not content.
        if self.buf[..self.filled].starts_with(UTF8_BOM) {
            self.buf.copy_within(UTF8_BOM.len()..self.filled, 0);
            self.filled -= UTF8_BOM.len();
        }
        let head = &self.buf[..self.filled.min(2)];
        // UTF-16's NUL bytes would otherwise read as a syntax error.
        if head == b"\xFF\xFE" || head == b"\xFE\xFF" || head.contains(&0) {
            return Err(encoding_error(ExtractError::InvalidEncoding {
                message: "the body is UTF-16, not UTF-8: convert it to UTF-8 (for example `iconv -f UTF-16 -t UTF-8`)".into(),
                line: 1,
                column: 1,
            }));
        }
        Ok(())
    }

    /// Checks `buf[..filled]`, nothing of which is checked yet.
    fn check(&mut self) -> io::Result<()> {
        let text = &self.buf[..self.filled];
        self.checked = match std::str::from_utf8(text) {
            Ok(_) => text.len(),
            // A character cut by the end of this read: wait for the rest.
            Err(e) if e.error_len().is_none() && !self.eof => e.valid_up_to(),
            Err(e) => {
                let bad = text[e.valid_up_to()];
                self.advance(e.valid_up_to());
                return Err(encoding_error(ExtractError::InvalidEncoding {
                    message: format!(
                        "the body is not valid UTF-8 (byte 0x{bad:02X} at offset {}): send UTF-8 text",
                        self.offset
                    ),
                    line: self.line,
                    column: self.column,
                }));
            }
        };
        self.advance(self.checked);
        Ok(())
    }

    /// Moves the position past `buf[..len]` (checked text).
    fn advance(&mut self, len: usize) {
        let text = &self.buf[..len];
        let chars = |bytes: &[u8]| bytes.iter().filter(|b| (**b & 0xC0) != 0x80).count() as u64;
        match memchr::memrchr(b'\n', text) {
            Some(last) => {
                self.line += memchr::memchr_iter(b'\n', text).count() as u64;
                self.column = chars(&text[last + 1..]) + 1;
            }
            None => self.column += chars(text),
        }
        self.offset += len as u64;
        if !self.saw_content {
            self.saw_content = !text.iter().all(u8::is_ascii_whitespace);
        }
    }
}

impl<R: Read> BufRead for TextReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.checked {
            // Keep the cut character, make room behind it.
            self.buf.copy_within(self.checked..self.filled, 0);
            self.filled -= self.checked;
            self.pos = 0;
            self.checked = 0;
            while self.checked == 0 && !(self.eof && self.filled == 0) {
                self.read_source()?;
                if !self.started {
                    if self.filled < UTF8_BOM.len() && !self.eof {
                        continue;
                    }
                    self.start()?;
                }
                self.check()?;
            }
        }
        Ok(&self.buf[self.pos..self.checked])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.checked);
    }
}

impl<R: Read> Read for TextReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Carries an [`ExtractError`] through `io::Read`, to be taken out again by
/// [`super::SplitError::from_io`].
fn encoding_error(e: ExtractError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `chunk` bytes per read, as a slow network would.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.chunk.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read_all(data: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        TextReader::new(Trickle { data, chunk }).read_to_end(&mut out)?;
        Ok(out)
    }

    fn encoding_error_of(data: &[u8], chunk: usize) -> ExtractError {
        let e = read_all(data, chunk).unwrap_err();
        *e.into_inner().unwrap().downcast::<ExtractError>().unwrap()
    }

    #[test]
    fn characters_cut_between_reads_pass_whole() {
        let text = "Ромашка — 🌼\nok".as_bytes();
        for chunk in 1..=5 {
            assert_eq!(read_all(text, chunk).unwrap(), text, "chunk {chunk}");
        }
    }

    #[test]
    fn a_bom_is_dropped_however_it_arrives() {
        for chunk in 1..=4 {
            assert_eq!(read_all(b"\xEF\xBB\xBF{}", chunk).unwrap(), b"{}");
        }
    }

    #[test]
    fn an_invalid_byte_is_reported_at_its_line_and_column() {
        // Line 2 holds `"name": "Ё ` (11 characters) before the bad byte.
        let data = [&b"{\n\"name\": \"\xD0\x81 "[..], b"\xFF\"}"].concat();
        for chunk in [1, 3, 64] {
            match encoding_error_of(&data, chunk) {
                ExtractError::InvalidEncoding { line, column, .. } => {
                    assert_eq!((line, column), (2, 12), "chunk {chunk}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_character_cut_by_the_end_of_the_body_is_invalid() {
        assert!(matches!(
            encoding_error_of(b"{\"a\":\"\xD0", 2),
            ExtractError::InvalidEncoding { .. }
        ));
    }

    #[test]
    fn utf16_is_named() {
        for body in [&b"\xFF\xFE{\0}\0"[..], b"{\0\"\0", b"\xFE\xFF\0{"] {
            match encoding_error_of(body, 1) {
                ExtractError::InvalidEncoding { message, .. } => {
                    assert!(message.contains("UTF-16"), "{message}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn whitespace_is_not_content() {
        let mut reader = TextReader::new(&b" \n\t "[..]);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert!(!reader.saw_content());
        let mut reader = TextReader::new(&b" x"[..]);
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        assert!(reader.saw_content());
    }
}
