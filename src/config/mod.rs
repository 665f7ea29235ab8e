//! Settings: `config/default.toml` (every key, documented), a deployment file laid over it, and
//! `NHIWATCH__SECTION__KEY` environment overrides on top.
//!
//! Loading is two steps, like ripgrep's low/high arguments: the merged TOML is deserialized into
//! raw structs with `deny_unknown_fields`, then validated into [`Settings`]. Every error names the
//! file (or variable), the key and what is wrong, and is reported before anything starts.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

pub use crate::archive::ArchiveConfig;
pub use crate::engine::EngineConfig;
pub use crate::engine::state::StateConfig;
pub use crate::http::{HttpConfig, TokenConfig};
pub use crate::ingest::IngestConfig;
pub use crate::ingest::dead_letter::DeadLetterConfig;
pub use crate::kafka::KafkaConfig;
pub use crate::normalize::pseudonym::PseudonymConfig;
use crate::normalize::{Pseudonymizer, pseudonym::WeakKey};
pub use crate::sink::outbox::OutboxConfig;
pub use crate::sink::{SINK_KINDS, Setup, SinkConfig};
pub use crate::telemetry::LogConfig;

/// The checked-in defaults, compiled in so the binary needs no file beside it.
pub const DEFAULTS: &str = include_str!("../../config/default.toml");
/// Prefix of environment overrides; `__` separates the path (`NHIWATCH__KAFKA__BROKERS`).
pub const ENV_PREFIX: &str = "NHIWATCH__";
/// Shorthand for the pseudonymisation key.
pub const PSEUDONYM_KEY_ENV: &str = "NHIWATCH_PSEUDONYM_KEY";
/// Longest `engine.dedupe_window_seconds`: exports overlap by hours or days, not months.
const MAX_DEDUPE_WINDOW: u32 = 30 * 86_400;
/// Most `engine.dedupe_max_ids` (about 70 bytes each).
const MAX_DEDUPE_IDS: usize = 100_000_000;
/// Most `http.max_connections`: each holds a file descriptor and a few KiB of buffers.
const MAX_CONNECTIONS: usize = 1_000_000;
/// Longest `http.header_read_timeout_seconds` and `http.idle_timeout_seconds`.
const MAX_CONNECTION_WAIT: u64 = 3600;

/// A configuration error: the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error.
    #[error("{file}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that nhiwatch does not know (often a typo).
    #[error("{origin}: unknown key `{key}`")]
    UnknownKey {
        /// File or environment variable.
        origin: String,
        /// Dotted key path.
        key: String,
    },
    /// A key with a value of the wrong type or out of range.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// File or environment variable.
        origin: String,
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Raw settings, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Ingest limits.
    pub ingest: IngestConfig,
    /// Kafka consumer.
    pub kafka: KafkaConfig,
    /// Where unusable records go.
    pub dead_letter: DeadLetterConfig,
    /// Patient pseudonymisation.
    pub pseudonymisation: PseudonymConfig,
    /// Detection engine.
    pub engine: EngineConfig,
    /// HTTP API and dashboard.
    pub http: HttpConfig,
    /// Checkpoints of the detection state.
    pub state: StateConfig,
    /// The durable outbox in front of the SIEM sinks.
    pub outbox: OutboxConfig,
    /// Where findings are delivered (`[[sinks]]`), as written; typed and checked in
    /// [`Settings::sinks`].
    pub sinks: RawSinks,
    /// The Parquet archive.
    pub archive: ArchiveConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[[sinks]]` as written. Its `Debug` shows each sink's name and kind only: a Kafka sink's
/// `properties` may hold a password.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct RawSinks(pub Vec<Table>);

impl std::ops::Deref for RawSinks {
    type Target = Vec<Table>;

    fn deref(&self) -> &Vec<Table> {
        &self.0
    }
}

impl std::fmt::Debug for RawSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |t: &Table, key: &str| t.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|t| format!("{} ({})", text(t, "name"), text(t, "kind"))),
            )
            .finish()
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The raw values, all validated.
    pub raw: RawConfig,
    /// The SIEM sinks, typed (`[[sinks]]`).
    pub sinks: Vec<SinkConfig>,
    /// Where the configuration came from (for messages).
    pub origin: String,
    /// Keys set by the environment, with the variable that set each: a bad value there is
    /// blamed on the variable, not on the file.
    from_env: Vec<(String, String)>,
}

impl Settings {
    /// Loads defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Settings::load_with_env(file, &env)
    }

    /// As [`Settings::load`], with the environment given (for tests).
    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Settings, ConfigError> {
        let mut table: Table = DEFAULTS.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            file: "config/default.toml".into(),
            message: e.to_string(),
        })?;
        let defaults = table.clone();
        let mut from_env: Vec<(String, String)> = Vec::new();
        let origin = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_owned(),
                    source,
                })?;
                let user: Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                    file: path.display().to_string(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
                let origin = path.display().to_string();
                let mut user = user;
                relative_to(&mut user, path);
                merge(&mut table, user, &defaults, "", &origin)?;
                origin
            }
            None => "defaults".to_owned(),
        };
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            set_from_env(&mut table, &defaults, &keys, value, name)?;
            from_env.push((keys.join("."), name.clone()));
        }
        if let Some((_, key)) = env.iter().find(|(n, _)| n == PSEUDONYM_KEY_ENV)
            && let Some(Value::Table(section)) = table.get_mut("pseudonymisation")
        {
            section.insert("key".into(), Value::String(key.clone()));
            from_env.push(("pseudonymisation.key".into(), PSEUDONYM_KEY_ENV.into()));
        }
        let raw: RawConfig = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Invalid {
                origin: source_of(&from_env, &origin, &key),
                key,
                message: e.inner().to_string(),
            }
        })?;
        let mut settings = Settings {
            raw,
            origin,
            sinks: Vec::new(),
            from_env,
        };
        settings.validate()?;
        settings.sinks = settings.typed_sinks()?;
        Ok(settings)
    }

    /// What [`crate::sink::Sinks::start`] needs: the outbox, the sinks, the Kafka defaults.
    pub fn sink_setup(&self) -> Setup<'_> {
        Setup {
            outbox: &self.raw.outbox,
            sinks: &self.sinks,
            kafka: &self.raw.kafka,
            origin: &self.origin,
        }
    }

    /// Where the value of `key` came from: the environment variable that set it, the file, or
    /// the defaults.
    pub fn source_of(&self, key: &str) -> String {
        source_of(&self.from_env, &self.origin, key)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.source_of(key),
            key: key.into(),
            message: message.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let raw = &self.raw;
        if raw.ingest.workers > 256 {
            return Err(self.invalid("ingest.workers", "must be between 0 (one per core) and 256"));
        }
        if raw.ingest.max_record_bytes == 0 {
            return Err(self.invalid("ingest.max_record_bytes", "must be greater than 0"));
        }
        if raw.kafka.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(self.invalid("kafka.topics", "topic names must not be empty"));
        }
        if !raw.pseudonymisation.key.is_empty() && raw.pseudonymisation.key.len() < Pseudonymizer::MIN_KEY_BYTES {
            return Err(self.invalid(
                "pseudonymisation.key",
                format!("must be at least {} bytes", Pseudonymizer::MIN_KEY_BYTES),
            ));
        }
        if raw.engine.retention_days <= raw.engine.learning_days {
            return Err(self.invalid("engine.retention_days", "must be greater than engine.learning_days"));
        }
        for (i, t) in raw.http.tokens.iter().enumerate() {
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(self.invalid(
                    &format!("http.tokens[{i}].sha256"),
                    "must be the 64 hex digits of the token's SHA-256 (e.g. `printf %s TOKEN | sha256sum`)",
                ));
            }
        }
        if raw.http.max_page == 0 || raw.http.default_page == 0 || raw.http.default_page > raw.http.max_page {
            return Err(self.invalid("http.default_page", "must be between 1 and http.max_page"));
        }
        if !raw.http.listen.is_empty() && raw.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(self.invalid("http.listen", "must be an address and port, e.g. 127.0.0.1:8080"));
        }
        self.validate_connections()?;
        self.validate_outbox()?;
        if raw.state.interval_seconds == 0 || raw.state.interval_seconds > 86_400 {
            return Err(self.invalid("state.interval_seconds", "must be between 1 and 86400"));
        }
        let k = &raw.kafka;
        if !(1 << 20..=1 << 31).contains(&k.fetch_buffer_bytes) {
            return Err(self.invalid("kafka.fetch_buffer_bytes", "must be between 1 MiB and 2 GiB"));
        }
        if !(1..=86_400).contains(&k.idle_partition_seconds) {
            return Err(self.invalid("kafka.idle_partition_seconds", "must be between 1 and 86400"));
        }
        if raw.engine.max_waiting_events == 0 {
            return Err(self.invalid("engine.max_waiting_events", "must be at least 1"));
        }
        if raw.engine.dedupe_window_seconds > MAX_DEDUPE_WINDOW {
            return Err(self.invalid(
                "engine.dedupe_window_seconds",
                format!("must be between 0 (no deduplication) and {MAX_DEDUPE_WINDOW} (30 days)"),
            ));
        }
        if raw.engine.dedupe_max_ids > MAX_DEDUPE_IDS {
            return Err(self.invalid(
                "engine.dedupe_max_ids",
                format!("must be between 0 (no deduplication) and {MAX_DEDUPE_IDS} (about 7 GB of memory)"),
            ));
        }
        if k.events_topic.is_empty() || k.changelog_topic.is_empty() || k.events_topic == k.changelog_topic {
            return Err(self.invalid(
                "kafka.changelog_topic",
                "kafka.events_topic and kafka.changelog_topic must be two different, non-empty topics",
            ));
        }
        if k.changelog_replication == 0 || k.changelog_replication < -1 {
            return Err(self.invalid(
                "kafka.changelog_replication",
                "must be -1 (the broker's default) or at least 1",
            ));
        }
        if !(1 << 20..=1 << 30).contains(&k.changelog_max_bytes) {
            return Err(self.invalid("kafka.changelog_max_bytes", "must be between 1 MiB and 1 GiB"));
        }
        if raw.state.keep < 2 {
            return Err(self.invalid(
                "state.keep",
                "must be at least 2, so a torn newest checkpoint has a previous one",
            ));
        }
        let a = &raw.archive;
        if a.max_rows == 0 {
            return Err(self.invalid("archive.max_rows", "must be greater than 0"));
        }
        if a.query_timeout_seconds == 0 || a.query_timeout_seconds > 86_400 {
            return Err(self.invalid("archive.query_timeout_seconds", "must be between 1 and 86400"));
        }
        if a.query_memory_bytes < 64 << 20 {
            return Err(self.invalid(
                "archive.query_memory_bytes",
                "must be at least 64 MiB (67108864): a query process needs room for its answer",
            ));
        }
        if a.max_result_rows == 0 {
            return Err(self.invalid("archive.max_result_rows", "must be greater than 0"));
        }
        if a.query_concurrency == 0 || a.query_concurrency > 64 {
            return Err(self.invalid("archive.query_concurrency", "must be between 1 and 64"));
        }
        if raw.log.filter.parse::<tracing_subscriber::EnvFilter>().is_err() {
            return Err(self.invalid("log.filter", "is not a valid log filter"));
        }
        Ok(())
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
        let http = &self.raw.http;
        if !(1..=MAX_CONNECTIONS).contains(&http.max_connections) {
            return Err(self.invalid(
                "http.max_connections",
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        if http.max_unauthenticated_per_ip > http.max_connections {
            return Err(self.invalid(
                "http.max_unauthenticated_per_ip",
                "must be between 0 (no cap) and http.max_connections",
            ));
        }
        for (key, value) in [
            ("http.header_read_timeout_seconds", http.header_read_timeout_seconds),
            ("http.idle_timeout_seconds", http.idle_timeout_seconds),
        ] {
            if !(1..=MAX_CONNECTION_WAIT).contains(&value) {
                return Err(self.invalid(key, format!("must be between 1 and {MAX_CONNECTION_WAIT} (one hour)")));
            }
        }
        Ok(())
    }

    fn validate_outbox(&self) -> Result<(), ConfigError> {
        let outbox = &self.raw.outbox;
        if outbox.segment_bytes == 0 || outbox.segment_bytes.saturating_mul(4) > outbox.max_bytes {
            return Err(self.invalid(
                "outbox.segment_bytes",
                "must be greater than 0 and at most a quarter of outbox.max_bytes",
            ));
        }
        if outbox.retry_initial_ms == 0 || outbox.retry_max_seconds.saturating_mul(1000) < outbox.retry_initial_ms {
            return Err(self.invalid(
                "outbox.retry_initial_ms",
                "must be greater than 0 and at most outbox.retry_max_seconds",
            ));
        }
        Ok(())
    }

    /// `[[sinks]]`, each parsed by its kind ([`SinkConfig::parse`]), names unique.
    fn typed_sinks(&self) -> Result<Vec<SinkConfig>, ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut sinks = Vec::new();
        for (i, table) in self.raw.sinks.iter().enumerate() {
            let sink = SinkConfig::parse(table).map_err(|(key, why)| {
                let key = key.map_or_else(|| format!("sinks[{i}]"), |k| format!("sinks[{i}].{k}"));
                self.invalid(&key, why)
            })?;
            if !names.insert(sink.name.clone()) {
                return Err(self.invalid(&format!("sinks[{i}].name"), format!("`{}` names two sinks", sink.name)));
            }
            sinks.push(sink);
        }
        Ok(sinks)
    }

    /// The archive location, if one is configured.
    pub fn archive_location(&self) -> Option<String> {
        let l = self.raw.archive.location.trim();
        (!l.is_empty()).then(|| l.to_owned())
    }

    /// The archive's flush limits.
    pub fn archive_limits(&self) -> crate::archive::Limits {
        crate::archive::Limits {
            max_rows: self.raw.archive.max_rows,
            max_age: std::time::Duration::from_secs(self.raw.archive.max_age_seconds),
        }
    }

    /// The configured pseudonymizer, or `None` when no key is set.
    pub fn pseudonymizer(&self) -> Option<Result<Pseudonymizer, WeakKey>> {
        let key = &self.raw.pseudonymisation.key;
        (!key.is_empty()).then(|| Pseudonymizer::new(key.as_bytes()))
    }
}

/// Keys under which any name is allowed (passed through).
fn is_open_map(path: &str) -> bool {
    path == "kafka.properties"
}

/// Lays `user` over `base`, refusing keys that the defaults do not have.
fn merge(base: &mut Table, user: Table, defaults: &Table, prefix: &str, origin: &str) -> Result<(), ConfigError> {
    for (key, value) in user {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let default = defaults.get(&key);
        match (default, value) {
            (Some(Value::Table(d)), Value::Table(u)) if !is_open_map(&path) => {
                let Some(Value::Table(b)) = base.get_mut(&key) else {
                    unreachable!("base starts as the defaults")
                };
                merge(b, u, d, &path, origin)?;
            }
            (Some(Value::Table(_)), Value::Table(u)) => {
                let Some(Value::Table(b)) = base.get_mut(&key) else {
                    unreachable!("base starts as the defaults")
                };
                b.extend(u);
            }
            (Some(Value::Table(_)), _) => {
                return Err(ConfigError::Invalid {
                    origin: origin.into(),
                    key: path,
                    message: "must be a table".into(),
                });
            }
            (Some(_), value) => {
                base.insert(key, value);
            }
            (None, _) => {
                return Err(ConfigError::UnknownKey {
                    origin: origin.into(),
                    key: path,
                });
            }
        }
    }
    Ok(())
}

/// The environment variable that set `key` (or the table holding it), else `origin`.
fn source_of(from_env: &[(String, String)], origin: &str, key: &str) -> String {
    from_env
        .iter()
        .rev()
        .find(|(set, _)| {
            key == set
                || key
                    .strip_prefix(set.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
        .map_or_else(|| origin.to_owned(), |(_, var)| format!("environment variable {var}"))
}

/// Keys naming a local file or directory: relative in a configuration file, they are relative
/// to that file (as a file's own references are read everywhere), not to wherever nhiwatch
/// was started.
const PATH_KEYS: [(&str, &str); 7] = [
    ("engine", "registry"),
    ("engine", "detectors"),
    ("dead_letter", "path"),
    ("http", "findings_journal"),
    ("archive", "location"),
    ("state", "dir"),
    ("outbox", "dir"),
];

/// Makes the relative paths `user` (read from `file`) sets relative to `file`'s directory.
fn relative_to(user: &mut Table, file: &Path) {
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    for (section, key) in PATH_KEYS {
        let Some(Value::Table(t)) = user.get_mut(section) else {
            continue;
        };
        if let Some(Value::String(value)) = t.get_mut(key)
            && !value.is_empty()
            && !value.contains("://")
            && Path::new(value.as_str()).is_relative()
        {
            *value = dir.join(value.as_str()).display().to_string();
        }
    }
}

fn set_from_env(table: &mut Table, defaults: &Table, keys: &[String], raw: &str, var: &str) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        origin: format!("environment variable {var}"),
        key: keys.join("."),
    };
    let (section, rest) = keys.split_first().ok_or_else(unknown)?;
    let default_section = defaults.get(section).and_then(Value::as_table).ok_or_else(unknown)?;
    let Some(Value::Table(target)) = table.get_mut(section) else {
        return Err(unknown());
    };
    match rest {
        [key] => {
            let default = default_section.get(key).ok_or_else(unknown)?;
            target.insert(key.clone(), env_value(raw, default));
        }
        [map, key @ ..] if is_open_map(&format!("{section}.{map}")) && !key.is_empty() => {
            let Some(Value::Table(props)) = target.get_mut(map) else {
                return Err(unknown());
            };
            props.insert(key.join("__"), Value::String(raw.to_owned()));
        }
        _ => return Err(unknown()),
    }
    Ok(())
}

/// An environment value, typed like the default it replaces (a string stays a string).
fn env_value(raw: &str, default: &Value) -> Value {
    match default {
        Value::String(_) => Value::String(raw.to_owned()),
        _ => format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nhiwatch.toml");
        std::fs::write(&path, text).expect("write");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_with_env(Some(&path), &env)
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_with_env(None, &[]).expect("defaults are valid");
        assert_eq!(s.raw.ingest.max_record_bytes, 1024 * 1024);
        assert_eq!(s.raw.kafka.topics, ["fhir-audit", "gateway-access", "idp-audit"]);
        assert!(s.pseudonymizer().is_none());
        // The engine's built-in deduplication (`Dedupe::default`) is the file's.
        assert_eq!(
            (s.raw.engine.dedupe_window_seconds, s.raw.engine.dedupe_max_ids),
            (86_400, 1_000_000)
        );
    }

    #[test]
    fn file_then_environment_override() {
        let s = load(
            "[kafka]\nbrokers = \"a:1\"\n[kafka.properties]\n\"security.protocol\" = \"SSL\"\n",
            &[
                ("NHIWATCH__INGEST__MAX_RECORD_BYTES", "2048"),
                ("NHIWATCH__KAFKA__PROPERTIES__SASL.PASSWORD", "pw"),
            ],
        )
        .expect("valid");
        assert_eq!(s.raw.kafka.brokers, "a:1");
        assert_eq!(s.raw.ingest.max_record_bytes, 2048);
        assert_eq!(
            s.raw.kafka.properties.get("security.protocol").map(String::as_str),
            Some("SSL")
        );
        assert_eq!(
            s.raw.kafka.properties.get("sasl.password").map(String::as_str),
            Some("pw")
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = load("[kafka]\nbrokerz = \"a\"\n", &[]).unwrap_err().to_string();
        assert!(e.ends_with("nhiwatch.toml: unknown key `kafka.brokerz`"), "{e}");
        let e = load("[ingest]\nmax_record_bytes = \"big\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nhiwatch.toml: key `ingest.max_record_bytes`: invalid type"),
            "{e}"
        );
        let e = load("[ingest]\nmax_record_bytes = 0\n", &[]).unwrap_err().to_string();
        assert!(
            e.contains("key `ingest.max_record_bytes`: must be greater than 0"),
            "{e}"
        );
        let e = load("[kafka\n", &[]).unwrap_err().to_string();
        assert!(e.contains("nhiwatch.toml: ") && e.contains("line 1"), "{e}");
        let e = load("", &[("NHIWATCH__KAFKA__NOPE", "1")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "environment variable NHIWATCH__KAFKA__NOPE: unknown key `kafka.nope`"
        );
        let e = load("", &[("NHIWATCH_PSEUDONYM_KEY", "short")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `pseudonymisation.key`: must be at least 16 bytes"),
            "{e}"
        );
        let e = load("[engine]\ndedupe_window_seconds = 2592001\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(
                "nhiwatch.toml: key `engine.dedupe_window_seconds`: must be between 0 (no deduplication) and 2592000 (30 days)"
            ),
            "{e}"
        );
        let e = load("", &[("NHIWATCH__ENGINE__DEDUPE_MAX_IDS", "100000001")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `engine.dedupe_max_ids`: must be between 0"), "{e}");
        let off = load("[engine]\ndedupe_window_seconds = 0\ndedupe_max_ids = 0\n", &[]).expect("0 is off");
        assert_eq!(off.raw.engine.dedupe_window_seconds, 0);
    }

    /// Settings with a fixed set of values are enums: a value outside the set is refused at
    /// load, naming the key and the values there are.
    #[test]
    fn enumerated_settings_name_the_values_there_are() {
        let e = |text: &str| load(text, &[]).unwrap_err().to_string();
        for (text, key, values) in [
            ("[log]\nformat = \"jsno\"\n", "log.format", "`text` or `json`"),
            (
                "[kafka]\nauto_offset_reset = \"oldest\"\n",
                "kafka.auto_offset_reset",
                "`earliest` or `latest`",
            ),
            (
                "[[http.tokens]]\nname = \"soc\"\nrole = \"root\"\nsha256 = \"00\"\n",
                "http.tokens[0].role",
                "`read` or `admin`",
            ),
        ] {
            let message = e(text);
            assert!(message.contains(&format!("key `{key}`")), "{message}");
            assert!(message.contains(values), "{message}");
        }
        let ok = load(
            "[log]\nformat = \"json\"\n[kafka]\nauto_offset_reset = \"latest\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(ok.raw.log.format, crate::telemetry::LogFormat::Json);
        assert_eq!(ok.raw.kafka.auto_offset_reset, crate::kafka::OffsetReset::Latest);
    }

    #[test]
    fn a_sinks_secrets_stay_out_of_debug_output() {
        let s = load(
            "[[sinks]]\nname = \"k\"\nkind = \"kafka\"\ntopic = \"t\"\nproperties = { \"sasl.password\" = \"hunter2-secret\" }\n",
            &[],
        )
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2-secret"), "{shown}");
        assert!(shown.contains("k (kafka)"), "{shown}");
    }

    #[test]
    fn sinks_are_checked_per_kind() {
        let hec = "[[sinks]]\nname = \"splunk\"\nkind = \"splunk_hec\"\nurl = \"https://splunk:8088/services/collector/event\"\ntoken_env = \"HEC\"\n";
        let s = load(hec, &[]).expect("valid");
        assert_eq!(s.raw.sinks.len(), 1);
        let e = |text: &str| load(text, &[]).unwrap_err().to_string();
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"splunk\"\n")
                .contains("key `sinks[0].kind`: must be one of kafka, splunk_hec, syslog, webhook")
        );
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"kafka\"\n")
                .contains("key `sinks[0].topic`: is required for kind \"kafka\"")
        );
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"kafka\"\ntopic = \"t\"\nurl = \"http://x\"\n")
                .contains("key `sinks[0].url`: does not apply to kind \"kafka\"")
        );
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:1\"\ntranport = \"tcp\"\n")
                .contains("unknown field `tranport`")
        );
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h\"\n")
                .contains("key `sinks[0].address`: must be host:port")
        );
        assert!(
            e("[[sinks]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"h:1\"\nfacility = \"mail2\"\n")
                .contains("key `sinks[0].facility`")
        );
        assert!(e(&format!("{hec}{hec}")).contains("key `sinks[1].name`: `splunk` names two sinks"));
        assert!(e("[outbox]\nsegment_bytes = 999999999999\n").contains("key `outbox.segment_bytes`"));
        assert!(e("[state]\nkeep = 1\n").contains("key `state.keep`: must be at least 2"));
        assert!(e("[state]\ninterval_seconds = 0\n").contains("key `state.interval_seconds`"));
    }

    #[test]
    fn connection_limits_are_checked() {
        let s = load("", &[]).expect("defaults");
        let http = &s.raw.http;
        assert_eq!(
            (
                http.max_connections,
                http.max_unauthenticated_per_ip,
                http.header_read_timeout_seconds,
                http.idle_timeout_seconds
            ),
            (4096, 64, 10, 60)
        );
        let e = |text: &str, env: &[(&str, &str)]| load(text, env).unwrap_err().to_string();
        assert!(
            e("[http]\nmax_connections = 0\n", &[])
                .ends_with("nhiwatch.toml: key `http.max_connections`: must be between 1 and 1000000")
        );
        assert!(
            e("[http]\nmax_connections = 100\nmax_unauthenticated_per_ip = 101\n", &[]).ends_with(
                "key `http.max_unauthenticated_per_ip`: must be between 0 (no cap) and http.max_connections"
            )
        );
        assert!(
            e("[http]\nheader_read_timeout_seconds = 0\n", &[])
                .ends_with("key `http.header_read_timeout_seconds`: must be between 1 and 3600 (one hour)")
        );
        assert!(
            e("", &[("NHIWATCH__HTTP__IDLE_TIMEOUT_SECONDS", "3601")])
                .ends_with("key `http.idle_timeout_seconds`: must be between 1 and 3600 (one hour)")
        );
        let off = load("[http]\nmax_unauthenticated_per_ip = 0\n", &[]).expect("0 is no cap");
        assert_eq!(off.raw.http.max_unauthenticated_per_ip, 0);
    }

    #[test]
    fn key_is_never_printed() {
        let s = load("", &[("NHIWATCH_PSEUDONYM_KEY", "a-secret-key-of-enough-length")]).expect("valid");
        assert!(!format!("{s:?}").contains("a-secret"));
        assert!(s.pseudonymizer().is_some_and(|p| p.is_ok()));
    }
}
