//! NDJSON files and stdin: one record per line, read with a bounded buffer so a single huge line
//! cannot exhaust memory (its first bytes are kept for the dead letter, the rest is counted).

use std::io::{self, BufRead};

use super::Record;
use crate::event::Origin;

/// Reads every line of `reader`, calling `each` with the record. `name` is the file path or `-`.
pub fn read_lines<R: BufRead>(
    reader: R,
    name: &str,
    max_record_bytes: usize,
    mut each: impl FnMut(Record<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut source = LineSource::new(reader, name, max_record_bytes);
    while let Some(record) = source.next_record()? {
        each(record)?;
    }
    Ok(source.lines())
}

/// A pull-based reader of NDJSON records, for callers that interleave several inputs.
#[derive(Debug)]
pub struct LineSource<R> {
    reader: R,
    line: Vec<u8>,
    number: i64,
    origin: Origin,
    max: usize,
}

impl<R: BufRead> LineSource<R> {
    /// Reads `reader`, named `name` in coordinates, with records limited to `max_record_bytes`.
    pub fn new(reader: R, name: &str, max_record_bytes: usize) -> LineSource<R> {
        LineSource {
            reader,
            line: Vec::with_capacity(4096),
            number: 0,
            origin: Origin {
                name: name.to_owned(),
                partition: None,
                offset: 0,
            },
            max: max_record_bytes,
        }
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.number as u64
    }

    /// The next record, `None` at the end. A blank line is a record too, so that it is counted
    /// (the pipeline skips it as `empty`).
    pub fn next_record(&mut self) -> io::Result<Option<Record<'_>>> {
        self.line.clear();
        let (total, ended) = read_bounded_line(&mut self.reader, &mut self.line, self.max)?;
        if total == 0 && !ended {
            return Ok(None);
        }
        self.number += 1;
        let mut content_len = total - usize::from(ended);
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
                content_len -= 1;
            }
        }
        self.origin.offset = self.number;
        let oversized_len = (content_len > self.max).then(|| {
            self.line.truncate(self.max);
            content_len
        });
        Ok(Some(Record {
            bytes: &self.line,
            origin: &self.origin,
            oversized_len,
            received: None,
        }))
    }
}

/// Reads up to and including `\n`, keeping at most `max + 2` bytes. Returns the full length and
/// whether a newline ended the line.
fn read_bounded_line<R: BufRead>(reader: &mut R, out: &mut Vec<u8>, max: usize) -> io::Result<(usize, bool)> {
    let keep = max.saturating_add(2);
    let mut total = 0usize;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok((total, false));
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = keep.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok((total, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_with_numbers_and_bounds_long_ones() {
        let input = b"{\"a\":1}\r\n\n   \nxxxxxxxxxxxxxxxxxxxx\nlast".to_vec();
        let mut seen = Vec::new();
        let n = read_lines(&input[..], "in.ndjson", 10, |r| {
            seen.push((
                r.origin.offset,
                String::from_utf8_lossy(r.bytes).into_owned(),
                r.oversized_len,
            ));
            Ok(())
        })
        .expect("reads");
        assert_eq!(n, 5);
        assert_eq!(
            seen,
            vec![
                (1, "{\"a\":1}".to_owned(), None),
                (2, String::new(), None),
                (3, "   ".to_owned(), None),
                (4, "xxxxxxxxxx".to_owned(), Some(20)),
                (5, "last".to_owned(), None),
            ]
        );
    }
}
