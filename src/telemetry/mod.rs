//! Logging: a `tracing` subscriber writing to stderr, as text for people or JSON for shippers.
//! `RUST_LOG` overrides the configured filter.
//!
//! Log lines carry what records say (a finding's title names its identity), so text logs escape
//! control characters in the message and in every field, however it was recorded (`%` Display
//! included, which `tracing-subscriber` writes as it is): a record cannot forge a log line or
//! write escape sequences to a terminal ([`crate::terminal`]). JSON logs escape by themselves.

use std::fmt::Write as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt as _;

use crate::terminal::Escaping;

/// `[log]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// EnvFilter directive.
    pub filter: String,
    /// Lines for people or JSON objects for a collector.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; a second call is a no-op.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.fmt_fields(escaping_fields()).try_init()
    };
}

/// Text fields as `tracing-subscriber` writes them (`message key=value …`), escaped.
fn escaping_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() != "message" {
            write!(writer, "{field}=")?;
        }
        write!(Escaping(writer), "{value:?}")
    })
    .delimited(" ")
}

pub mod metrics;

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever a field holds and however it is recorded, a text log line stays one line of
    /// printable text.
    #[test]
    fn text_logs_escape_controls_in_the_message_and_every_field() {
        let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || Writer(sink.clone()))
            .fmt_fields(escaping_fields())
            .finish();
        let id = "etl\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\x1b[31m\0\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(identity = %id, display = %id, debug = ?id, text = id, count = 1, "Unregistered identity {id}.");
        });
        let text = String::from_utf8(buffer.lock().expect("log").clone()).expect("UTF-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.trim_end_matches('\n').chars().any(crate::terminal::is_unsafe),
            "{text}"
        );
        let escaped = "etl\\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\\u{1b}[31m\\0\\u{202e}";
        assert!(
            text.contains(&format!(
                "Unregistered identity {escaped}. identity={escaped} display={escaped}"
            )),
            "{text}"
        );
        assert!(text.ends_with("count=1\n"), "{text}");
    }

    struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
