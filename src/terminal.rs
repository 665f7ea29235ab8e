//! Text bound for a terminal or a text log: strings that come from the sources (identities,
//! finding titles made of them, whatever a record carries) with their control characters
//! escaped, so that a record cannot forge a log line (`\n`), recolour or rewrite the screen (ESC,
//! C1 controls), cut output short (NUL) or reorder what is shown (Unicode bidirectional controls,
//! the "Trojan Source" trick, CVE-2021-42574).
//!
//! Escapes look like Rust's `escape_debug`: `\n`, `\r`, `\t`, `\0`, else `\u{1b}`. Everything
//! else, backslashes included, is left as it is, so ordinary identities print unchanged. JSON
//! output needs none of this: serde_json escapes C0 controls itself, and its readers are programs.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// True for the characters [`escape`] escapes: C0 controls, DEL, C1 controls, the Unicode line
/// and paragraph separators, and the bidirectional marks, embeddings, overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}'..='\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// `s` with every [unsafe](is_unsafe) character escaped; borrowed when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let _ = Escaping(&mut out).write_str(s);
    Cow::Owned(out)
}

/// Displays a value with its [unsafe](is_unsafe) characters escaped as they are written, for
/// `format!` and `tracing` fields (`identity = %Escaped(&id)`). Width and alignment are not
/// applied: pad the result of [`escape`] instead.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(Escaping(f), "{}", self.0)
    }
}

/// A [`fmt::Write`] that escapes [unsafe](is_unsafe) characters on their way to `W`.
pub struct Escaping<W>(pub W);

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(at) = rest.find(is_unsafe) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                '\0' => self.0.write_str("\\0")?,
                c => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_and_leaves_the_rest() {
        let forged = "etl\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\x1b[31m\0\u{202e}gpj.exe\u{9b}\u{7f}\t";
        assert_eq!(
            escape(forged),
            "etl\\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\\u{1b}[31m\\0\\u{202e}gpj.exe\\u{9b}\\u{7f}\\t"
        );
        assert_eq!(Escaped(forged).to_string(), escape(forged));
        for plain in ["lab-feed", "DOMAIN\\svc", "ünïcödé 名前", "0oa1 x@y.org", ""] {
            assert!(matches!(escape(plain), Cow::Borrowed(_)), "{plain}");
        }
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{2066}', '\u{2069}',
        ] {
            assert!(is_unsafe(c), "{c:?}");
        }
        for c in ['\u{a0}', '\u{200b}', '\u{2030}', '\u{206a}', 'é'] {
            assert!(!is_unsafe(c), "{c:?}");
        }
    }
}
