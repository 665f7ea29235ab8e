//! Detectors: pure functions of (identity state, registry entry, event) to hits; a detector that
//! correlates two events also reads the identity's open findings.
//!
//! Detectors do no I/O and read no clock: event time is the only time.
//!
//! # Adding a detector
//!
//! 1. `src/detect/<id>.rs`: a type implementing [`Detector`] with its own `Config` (declared
//!    with `detector_config!`, which adds the settings every detector has).
//! 2. One line in `detectors!` below (module and type), and its id in [`DetectorId`]
//!    (`src/findings/mod.rs`, the wire name every finding carries).
//! 3. `detectors/<id>.toml` with its documented defaults, and its row in `detectors/README.md`.
//! 4. Its OWASP NHI / CSF 2.0 controls in `controls.toml`, and the id in the finding schema's
//!    enum (`schemas/finding.schema.json`) and the dashboard's filter (`src/http/dashboard.html`).
//!
//! Tests fail until each is done: every configured id has exactly one declared detector and a
//! defaults file; the schema, dashboard, README and controls name exactly [`DetectorId::ALL`].

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use serde::de::DeserializeOwned;

use crate::baseline::{IdentityState, Settings};
use crate::event::Event;
use crate::findings::{Confidence, DetectorId, Finding, Folder, Hit, Severity};
use crate::registry::Integration;

/// Every detector, declared once, in [`DetectorId::ALL`]'s order: its module and type. The list
/// gives the modules, their re-exports and [`Detectors::build`]'s list; each type's
/// [`Detector::ID`] ties it to its id (a test checks that every configured id has exactly one).
macro_rules! detectors {
    ($($module:ident :: $ty:ident),* $(,)?) => {
        $(
            mod $module;
            pub use $module::$ty;
        )*

        /// Each declared detector, built from `source` (the TOML text of its file, or `None`
        /// for its defaults), with the source it was built from.
        fn build_each(
            source: &mut dyn FnMut(DetectorId) -> Result<Option<(PathBuf, String)>, ConfigError>,
        ) -> Result<Vec<(DetectorId, Option<(PathBuf, String)>, Box<dyn DynDetector>)>, ConfigError> {
            Ok(vec![$({
                let src = source(<$ty as Detector>::ID)?;
                (<$ty as Detector>::ID, src.clone(), make::<$ty>(src)?)
            }),*])
        }
    };
}

detectors! {
    dormant_wakeup::DormantWakeup,
    scope_drift::ScopeDrift,
    phi_volume::PhiVolume,
    unregistered_identity::UnregisteredIdentity,
    access_after_offboarding::AccessAfterOffboarding,
    new_network::NewNetwork,
    auth_failure_burst::AuthFailureBurst,
    break_glass::BreakGlass,
    credential_added::CredentialAdded,
    off_hours::OffHours,
    stale_credential::StaleCredential,
    permission_granted::PermissionGranted,
}

/// What a detector sees for one event.
pub struct Cx<'a> {
    /// The event.
    pub event: &'a Event,
    /// Event time, Unix seconds.
    pub now: i64,
    /// The identity's state: learned sets as before this event, counting windows including it.
    pub state: &'a IdentityState,
    /// Whether the learning period is over.
    pub established: bool,
    /// Whether a registry is configured at all.
    pub has_registry: bool,
    /// The identity's registry entry, if registered.
    pub entry: Option<&'a Integration>,
    /// Learning settings (for explanations).
    pub learning: &'a Settings,
    /// The identity's canonical id: the registry's, else the event's.
    pub id: &'a str,
    /// The findings open for folding, before this event's hits.
    pub open: &'a Folder,
}

impl Cx<'_> {
    /// "Dormant for 41 days" style durations.
    pub fn ago(&self, since: i64) -> String {
        human_duration(self.now - since)
    }

    /// The identity's open finding of `detector`, if any (to correlate with what was reported).
    pub fn open_finding(&self, detector: DetectorId) -> Option<&Finding> {
        self.open.open(detector, self.id)
    }

    /// The identity as sentences name it: its display name (registry name, else the name its
    /// source gave) with the canonical id beside it, `Acme lab feed (lab-feed)`, so a reader can
    /// take either to the API; the id alone when there is no name or the name is the id.
    pub fn who(&self) -> String {
        match self
            .entry
            .and_then(|e| e.name.as_deref())
            .or(self.state.name.as_deref())
        {
            Some(name) if name != self.id => format!("{name} ({})", self.id),
            _ => self.id.to_owned(),
        }
    }
}

/// Settings every detector has; `detector_config!` adds them to each config.
pub trait Common {
    /// Whether the detector runs.
    fn enabled(&self) -> bool;
    /// Severity of its findings (some detectors raise it in stated cases).
    fn severity(&self) -> Severity;
    /// Hits this close to the previous one fold into the open finding.
    fn suppress(&self) -> chrono::Duration;
}

/// A detector, typed by its configuration.
pub trait Detector: Send + Sync + 'static {
    /// Its id, which is also its file name under `detectors/`.
    const ID: DetectorId;
    /// Its settings, read from `detectors/<id>.toml`.
    type Config: DeserializeOwned + Default + fmt::Debug + Clone + PartialEq + Common + Send + Sync;
    /// Builds the detector.
    fn new(config: Self::Config) -> Self;
    /// Its settings.
    fn config(&self) -> &Self::Config;
    /// Why `config` cannot be used, beyond what its types say (a ratio below 1, a count out of
    /// range); checked when the detector is built.
    fn validate(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }
    /// Looks at one event and pushes what it finds.
    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>);

    /// A hit under this detector's id, severity and suppression window.
    fn hit(&self, confidence: Confidence, title: String, explanation: String) -> Hit {
        Hit {
            detector: Self::ID,
            severity: self.config().severity(),
            confidence,
            title,
            explanation,
            analysis: Vec::new(),
            suppress_for: self.config().suppress(),
            cite: None,
            cause: None,
        }
    }
}

/// A detector with its type erased, as the engine holds it.
pub trait DynDetector: Send + Sync {
    /// Its id.
    fn id(&self) -> DetectorId;
    /// Whether it runs.
    fn enabled(&self) -> bool;
    /// See [`Detector::check`].
    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>);
    /// Its settings, for `--help`-style listing.
    fn describe(&self) -> String;
    /// Its `suppress_minutes`.
    fn suppress(&self) -> chrono::Duration;
}

impl<D: Detector> DynDetector for D {
    fn id(&self) -> DetectorId {
        D::ID
    }
    fn enabled(&self) -> bool {
        self.config().enabled()
    }
    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        Detector::check(self, cx, hits);
    }
    fn describe(&self) -> String {
        format!("{:?}", self.config())
    }
    fn suppress(&self) -> chrono::Duration {
        self.config().suppress()
    }
}

/// Declares a detector's config struct with the settings every detector has (`enabled`,
/// `severity`, `suppress_minutes`), `deny_unknown_fields`, and defaults in one place.
macro_rules! detector_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            severity: $severity:expr,
            suppress_minutes: $suppress:expr,
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty = $default:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Whether the detector runs.
            pub enabled: bool,
            /// Severity of its findings.
            pub severity: $crate::findings::Severity,
            /// Hits within this many minutes of the previous one fold into the open finding.
            pub suppress_minutes: u32,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    severity: $severity,
                    suppress_minutes: $suppress,
                    $($field: $default,)*
                }
            }
        }

        impl $crate::detect::Common for $name {
            fn enabled(&self) -> bool {
                self.enabled
            }
            fn severity(&self) -> $crate::findings::Severity {
                self.severity
            }
            fn suppress(&self) -> chrono::Duration {
                chrono::Duration::minutes(i64::from(self.suppress_minutes))
            }
        }
    };
}
pub(crate) use detector_config;

/// One detector of type `D` from its settings (`None`: its defaults), checked.
fn make<D: Detector>(source: Option<(PathBuf, String)>) -> Result<Box<dyn DynDetector>, ConfigError> {
    let (config, file) = match source {
        None => (
            D::Config::default(),
            PathBuf::from(format!("{} (defaults)", D::ID.as_str())),
        ),
        Some((file, text)) => match toml::from_str(&text) {
            Ok(config) => (config, file),
            Err(e) => {
                let line = e
                    .span()
                    .map(|s| format!("line {}: ", text[..s.start.min(text.len())].matches('\n').count() + 1))
                    .unwrap_or_default();
                return Err(ConfigError {
                    file,
                    why: format!("{line}{}", e.message()),
                });
            }
        },
    };
    D::validate(&config).map_err(|why| ConfigError { file, why })?;
    Ok(Box::new(D::new(config)))
}

/// The configured set of detectors.
pub struct Detectors {
    list: Vec<Box<dyn DynDetector>>,
    /// The settings each was built from, to build the same set again.
    sources: Vec<(DetectorId, Option<(PathBuf, String)>)>,
}

/// Another set configured the same way (each partition of a group member has its own engine).
impl Clone for Detectors {
    fn clone(&self) -> Detectors {
        let sources = &self.sources;
        Detectors::build(|id| Ok(sources.iter().find(|(i, _)| *i == id).and_then(|(_, s)| s.clone())))
            .expect("settings that built once build again")
    }
}

impl fmt::Debug for Detectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.list.iter().map(|d| d.id())).finish()
    }
}

impl Default for Detectors {
    fn default() -> Detectors {
        Detectors::build(|_| Ok(None)).expect("defaults are valid")
    }
}

/// A detector file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// What is wrong, with the key where there is one.
    pub why: String,
}

/// Detector ids configured by a file of their own. `credential_sharing` is configured in
/// `new_network.toml`: it is that detector's concurrent-networks case.
pub fn configured_ids() -> impl Iterator<Item = DetectorId> {
    DetectorId::ALL
        .iter()
        .copied()
        .filter(|id| *id != DetectorId::CredentialSharing)
}

impl Detectors {
    /// Each detector's `suppress_minutes`: the quiet period between deliveries of updates of one
    /// finding ([`crate::findings::store::FindingStore::with_quiet`]). `credential_sharing` is
    /// `new_network`'s.
    pub fn quiet_periods(&self) -> std::collections::HashMap<DetectorId, chrono::Duration> {
        let mut out: std::collections::HashMap<_, _> = self.list.iter().map(|d| (d.id(), d.suppress())).collect();
        if let Some(&q) = out.get(&DetectorId::NewNetwork) {
            out.insert(DetectorId::CredentialSharing, q);
        }
        out
    }

    /// Builds every detector from `source(id)`: the TOML text of its file, or `None` for its
    /// defaults.
    pub fn build(
        mut source: impl FnMut(DetectorId) -> Result<Option<(PathBuf, String)>, ConfigError>,
    ) -> Result<Detectors, ConfigError> {
        let mut list = Vec::new();
        let mut sources = Vec::new();
        for (id, src, detector) in build_each(&mut source)? {
            sources.push((id, src));
            list.push(detector);
        }
        Ok(Detectors { list, sources })
    }

    /// Loads `dir/<id>.toml` for each detector (defaults where a file is absent); a file in
    /// `dir` that names no detector is an error, so a typo in a file name is not ignored.
    pub fn load(dir: &Path) -> Result<Detectors, ConfigError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ConfigError {
            file: dir.to_owned(),
            why: format!("cannot read the detectors directory: {e}"),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "toml") {
                let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
                if !configured_ids().any(|id| id.as_str() == stem) {
                    let known: Vec<&str> = configured_ids().map(DetectorId::as_str).collect();
                    return Err(ConfigError {
                        file: path.clone(),
                        why: format!("no detector is called {stem:?}; known: {}", known.join(", ")),
                    });
                }
            }
        }
        Detectors::build(|id| {
            let file = dir.join(format!("{}.toml", id.as_str()));
            match std::fs::read_to_string(&file) {
                Ok(text) => Ok(Some((file, text))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ConfigError {
                    file,
                    why: format!("cannot read: {e}"),
                }),
            }
        })
    }

    /// Runs every enabled detector on one event.
    pub fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        for d in &self.list {
            if d.enabled() {
                d.check(cx, hits);
            }
        }
    }

    /// The detectors with their settings.
    pub fn iter(&self) -> impl Iterator<Item = &dyn DynDetector> {
        self.list.iter().map(|d| d.as_ref())
    }
}

/// "3 days 4 hours", "25 minutes": durations in explanations.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let unit = |n: i64, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    if d > 0 {
        if h > 0 && d < 7 {
            format!("{} {}", unit(d, "day"), unit(h, "hour"))
        } else {
            unit(d, "day")
        }
    } else if h > 0 {
        unit(h, "hour")
    } else {
        unit(m, "minute")
    }
}

/// RFC 3339 of Unix seconds, for explanations.
pub fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(59), "0 minutes");
        assert_eq!(human_duration(25 * 60), "25 minutes");
        assert_eq!(human_duration(3600), "1 hour");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600), "3 days 4 hours");
        assert_eq!(human_duration(41 * 86_400 + 3600), "41 days");
    }

    /// Every id configured by a file of its own has exactly one declared detector, in
    /// [`DetectorId::ALL`]'s order (the order hits of one event are reported in).
    #[test]
    fn every_configured_id_has_one_declared_detector() {
        let declared: Vec<DetectorId> = Detectors::default().iter().map(|d| d.id()).collect();
        assert_eq!(declared, configured_ids().collect::<Vec<_>>());
    }

    #[test]
    fn checked_in_files_are_the_defaults_and_typos_fail() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("detectors");
        let loaded = Detectors::load(&dir).expect("checked-in detectors load");
        let defaults = Detectors::default();
        for id in configured_ids() {
            assert!(
                dir.join(format!("{}.toml", id.as_str())).exists(),
                "detectors/{id}.toml is missing"
            );
        }
        let a: Vec<String> = loaded.iter().map(|d| d.describe()).collect();
        let b: Vec<String> = defaults.iter().map(|d| d.describe()).collect();
        assert_eq!(a, b, "detectors/*.toml must state the built-in defaults");

        let typo = Detectors::build(|id| {
            Ok((id == DetectorId::PhiVolume).then(|| ("phi_volume.toml".into(), "min_patinets = 5\n".to_owned())))
        })
        .expect_err("unknown key");
        let message = typo.to_string();
        assert!(
            message.starts_with("phi_volume.toml: line 1: unknown field `min_patinets`"),
            "{message}"
        );
        let invalid = Detectors::build(|id| {
            Ok((id == DetectorId::PhiVolume).then(|| ("phi_volume.toml".into(), "run_hours = 9\n".to_owned())))
        })
        .expect_err("out of range");
        assert_eq!(
            invalid.to_string(),
            "phi_volume.toml: run_hours is 9; it must be 2 to 8"
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("phi_volum.toml"), "").expect("write");
        let e = Detectors::load(tmp.path()).expect_err("unknown file");
        assert!(e.to_string().contains("no detector is called \"phi_volum\""), "{e}");
    }
}
