//! NDJSON files and stdin: one record per line, read with a bounded buffer so a single huge line
//! cannot exhaust memory (its first bytes are kept for the dead letter, the rest is counted).

use std::io::{self, BufRead};

use super::Record;
use crate::event::Origin;

/// Reads every line of `reader`, calling `each` with the record. `name` is the file path or `-`.
pub fn read_lines<R: BufRead>(
    mut reader: R,
    name: &str,
    max_record_bytes: usize,
    mut each: impl FnMut(Record<'_>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut line = Vec::with_capacity(4096);
    let mut number: i64 = 0;
    let mut origin = Origin {
        name: name.to_owned(),
        partition: None,
        offset: 0,
    };
    loop {
        line.clear();
        let (total, ended) = read_bounded_line(&mut reader, &mut line, max_record_bytes)?;
        if total == 0 && !ended {
            return Ok(number as u64);
        }
        number += 1;
        let mut content_len = total - usize::from(ended);
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
                content_len -= 1;
            }
        }
        if content_len > max_record_bytes {
            line.truncate(max_record_bytes);
            origin.offset = number;
            each(Record {
                bytes: &line,
                origin: &origin,
                oversized_len: Some(content_len),
                received: None,
            })?;
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        origin.offset = number;
        each(Record {
            bytes: &line,
            origin: &origin,
            oversized_len: None,
            received: None,
        })?;
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
                (4, "xxxxxxxxxx".to_owned(), Some(20)),
                (5, "last".to_owned(), None),
            ]
        );
    }
}
