//! The identity registry: the inventory of known integrations, each with an owner, a purpose,
//! approved scopes and networks, a PHI ceiling and its lifecycle dates.
//!
//! The registry makes detection policy-aware: an identity it does not know is unregistered, one
//! past `offboarded_at` should be silent, a scope outside `approved_scopes` is drift whatever the
//! baseline says. It is read from TOML and validated at load; every error names the file, the
//! entry and the key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::Deserialize;

use crate::scope::Scope;

/// One known integration.
#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    /// The canonical id findings are reported under.
    pub id: String,
    /// Other ids of the same integration in other sources (IdP client id, `Device/...`).
    pub aliases: Vec<String>,
    /// Display name.
    pub name: Option<String>,
    /// Who answers for it.
    pub owner: Option<String>,
    /// Why it exists.
    pub purpose: Option<String>,
    /// Scopes it may hold (parsed; SMART scopes compare by containment).
    pub approved_scopes: Vec<Scope>,
    /// Networks it may call from.
    pub approved_networks: Vec<IpNet>,
    /// Distinct-patient ceiling per hour.
    pub max_patients_per_hour: Option<u64>,
    /// When it went live.
    pub onboarded_at: Option<DateTime<Utc>>,
    /// When its approval lapses.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was retired.
    pub offboarded_at: Option<DateTime<Utc>>,
    /// Longest token lifetime (and token age at use) policy allows, in seconds; the
    /// `stale_credential` detector's default when absent.
    pub max_token_ttl: Option<i64>,
    /// How often its secrets, keys and certificates must be rotated, in seconds; the
    /// `stale_credential` detector's default when absent.
    pub rotate_every: Option<i64>,
}

impl Integration {
    /// The keys governance needs that this entry lacks, of `owner`, `purpose`, `expires_at`.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("owner", self.owner.is_none()),
            ("purpose", self.purpose.is_none()),
            ("expires_at", self.expires_at.is_none()),
        ]
        .into_iter()
        .filter_map(|(key, absent)| absent.then_some(key))
        .collect()
    }

    /// The earlier of `expires_at` and `offboarded_at`: after it, any activity is unauthorised.
    pub fn retired_at(&self) -> Option<(DateTime<Utc>, &'static str)> {
        match (self.offboarded_at, self.expires_at) {
            (Some(o), Some(e)) if e < o => Some((e, "expires_at")),
            (Some(o), _) => Some((o, "offboarded_at")),
            (None, Some(e)) => Some((e, "expires_at")),
            (None, None) => None,
        }
    }

    /// True when the registry approves SMART scopes for this integration, so SMART scopes
    /// outside them are drift. Opaque scopes are judged against approval only when some opaque
    /// scope is listed: an IdP's `.default` or `openid` is not a FHIR permission.
    pub fn approves_scope(&self, scope: &Scope) -> Option<bool> {
        let listed = match scope {
            Scope::Smart(_) => self.approved_scopes.iter().any(|s| s.as_smart().is_some()),
            Scope::Other(_) => self.approved_scopes.iter().any(|s| s.as_smart().is_none()),
        };
        listed.then(|| scope.covered_by(&self.approved_scopes))
    }

    /// `Some(true)` when the address lies in an approved network, `None` when none are listed or
    /// the address is not an IP address.
    pub fn approves_address(&self, address: &str) -> Option<bool> {
        if self.approved_networks.is_empty() {
            return None;
        }
        let ip: std::net::IpAddr = address.parse().ok()?;
        Some(self.approved_networks.iter().any(|n| n.contains(&ip)))
    }
}

/// The inventory.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<Integration>,
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Loads and validates a registry file.
    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            file: path.to_owned(),
            key: String::new(),
            why: format!("cannot read: {e}"),
        })?;
        Registry::parse(&text, path)
    }

    /// Parses registry TOML; `file` names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Registry, RegistryError> {
        let err = |key: String, why: String| RegistryError {
            file: file.to_owned(),
            key,
            why,
        };
        let raw: RawRegistry = toml::from_str(text).map_err(|e| {
            let key = e.span().map(|s| locate(text, s.start)).unwrap_or_default();
            err(key, e.message().to_owned())
        })?;
        let mut registry = Registry::default();
        for (n, raw) in raw.integration.into_iter().enumerate() {
            let at = |key: &str| format!("integration[{n}].{key}");
            let id = raw.id.trim().to_owned();
            if id.is_empty() {
                return Err(err(at("id"), "must not be empty".into()));
            }
            let approved_networks = raw
                .approved_networks
                .iter()
                .map(|s| {
                    s.parse::<IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                        .map_err(|_| err(at("approved_networks"), format!("{s:?} is not a CIDR network")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let date = |key: &str, v: Option<toml::value::Datetime>| -> Result<Option<DateTime<Utc>>, RegistryError> {
                v.map(|d| {
                    DateTime::parse_from_rfc3339(&d.to_string())
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(|_| err(at(key), format!("{d} is not an instant with a time zone (RFC 3339)")))
                })
                .transpose()
            };
            let duration = |key: &str, v: &Option<String>| -> Result<Option<i64>, RegistryError> {
                v.as_deref()
                    .map(|text| match humantime::parse_duration(text) {
                        Ok(d) if !d.is_zero() => {
                            i64::try_from(d.as_secs()).map_err(|_| err(at(key), format!("{text:?} is too long")))
                        }
                        Ok(_) => Err(err(at(key), "must be longer than zero".into())),
                        Err(e) => Err(err(
                            at(key),
                            format!("{text:?} is not a duration like \"1h\" or \"90days\": {e}"),
                        )),
                    })
                    .transpose()
            };
            let approved_scopes = Scope::collect(raw.approved_scopes.iter().map(String::as_str));
            let entry = Integration {
                onboarded_at: date("onboarded_at", raw.onboarded_at)?,
                expires_at: date("expires_at", raw.expires_at)?,
                offboarded_at: date("offboarded_at", raw.offboarded_at)?,
                id,
                aliases: raw.aliases,
                name: raw.name,
                owner: raw.owner,
                purpose: raw.purpose,
                approved_scopes,
                approved_networks,
                max_patients_per_hour: raw.max_patients_per_hour,
                max_token_ttl: duration("max_token_ttl", &raw.max_token_ttl)?,
                rotate_every: duration("rotate_every", &raw.rotate_every)?,
            };
            let index = registry.entries.len();
            for key in std::iter::once(&entry.id).chain(&entry.aliases) {
                if let Some(&other) = registry.by_id.get(key) {
                    return Err(err(
                        at(if *key == entry.id { "id" } else { "aliases" }),
                        format!(
                            "{key:?} is already used by integration {:?}",
                            registry.entries[other].id
                        ),
                    ));
                }
                registry.by_id.insert(key.clone(), index);
            }
            registry.entries.push(entry);
        }
        Ok(registry)
    }

    /// The integration an id or alias belongs to.
    pub fn resolve(&self, id: &str) -> Option<&Integration> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    /// The integrations whose display name is `name`, ignoring case, in file order (names are
    /// not unique: two may share one).
    pub fn named(&self, name: &str) -> Vec<&Integration> {
        let wanted = name.to_lowercase();
        self.entries
            .iter()
            .filter(|e| e.name.as_deref().is_some_and(|n| n.to_lowercase() == wanted))
            .collect()
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Integration] {
        &self.entries
    }

    /// True when no integration is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A registry that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub struct RegistryError {
    /// The registry file.
    pub file: PathBuf,
    /// The entry and key, e.g. `integration[3].approved_networks`.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.why)
        }
    }
}

/// `line N` for a byte offset, for TOML syntax errors that have no key path.
fn locate(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    #[serde(default)]
    integration: Vec<RawIntegration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegration {
    id: String,
    #[serde(default)]
    aliases: Vec<String>,
    name: Option<String>,
    owner: Option<String>,
    purpose: Option<String>,
    #[serde(default)]
    approved_scopes: Vec<String>,
    #[serde(default)]
    approved_networks: Vec<String>,
    max_patients_per_hour: Option<u64>,
    onboarded_at: Option<toml::value::Datetime>,
    expires_at: Option<toml::value::Datetime>,
    offboarded_at: Option<toml::value::Datetime>,
    max_token_ttl: Option<String>,
    rotate_every: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[integration]]
id = "lab-results-feed"
aliases = ["0oa1b2c3", "Device/lab-gw"]
name = "Acme lab results feed"
owner = "lab-it@example.org"
purpose = "Deliver lab results to the EHR"
approved_scopes = ["system/Observation.crus", "system/Patient.r"]
approved_networks = ["10.20.0.0/16"]
max_patients_per_hour = 500
expires_at = 2027-01-01T00:00:00Z
offboarded_at = 2026-06-30T00:00:00Z
max_token_ttl = "15m"
rotate_every = "90days"
"#;

    fn parse(text: &str) -> Result<Registry, RegistryError> {
        Registry::parse(text, Path::new("registry.toml"))
    }

    #[test]
    fn parses_the_documented_example() {
        let r = parse(EXAMPLE).expect("valid");
        let entry = r.resolve("Device/lab-gw").expect("alias resolves");
        assert_eq!(entry.id, "lab-results-feed");
        assert_eq!(entry.owner.as_deref(), Some("lab-it@example.org"));
        assert_eq!(entry.max_patients_per_hour, Some(500));
        assert_eq!(
            (entry.max_token_ttl, entry.rotate_every),
            (Some(900), Some(90 * 86_400))
        );
        let (at, key) = entry.retired_at().expect("has dates");
        assert_eq!(
            (at.to_rfc3339(), key),
            ("2026-06-30T00:00:00+00:00".to_owned(), "offboarded_at")
        );
        assert_eq!(entry.approves_scope(&Scope::parse("system/Observation.rs")), Some(true));
        assert_eq!(entry.approves_scope(&Scope::parse("system/Observation.d")), Some(false));
        assert_eq!(entry.approves_scope(&Scope::parse("openid")), None);
        assert_eq!(entry.approves_address("10.20.7.9"), Some(true));
        assert_eq!(entry.approves_address("203.0.113.9"), Some(false));
        assert!(r.resolve("unknown").is_none());
        let named: Vec<&str> = r.named("ACME LAB results FEED").iter().map(|e| e.id.as_str()).collect();
        assert_eq!(named, ["lab-results-feed"]);
        assert!(r.named("Acme lab").is_empty());
    }

    #[test]
    fn errors_name_file_entry_and_key() {
        let dup = format!("{EXAMPLE}\n[[integration]]\nid = \"other\"\naliases = [\"0oa1b2c3\"]\n");
        assert_eq!(
            parse(&dup).expect_err("duplicate").to_string(),
            "registry.toml: integration[1].aliases: \"0oa1b2c3\" is already used by integration \"lab-results-feed\""
        );
        let net = "[[integration]]\nid = \"a\"\napproved_networks = [\"10.0.0.0/33\"]\n";
        assert_eq!(
            parse(net).expect_err("bad network").to_string(),
            "registry.toml: integration[0].approved_networks: \"10.0.0.0/33\" is not a CIDR network"
        );
        let local = "[[integration]]\nid = \"a\"\nexpires_at = 2027-01-01T00:00:00\n";
        assert!(
            parse(local)
                .expect_err("no zone")
                .to_string()
                .contains("integration[0].expires_at")
        );
        let unknown = "[[integration]]\nid = \"a\"\nownr = \"x\"\n";
        let e = parse(unknown).expect_err("unknown key");
        assert!(e.to_string().contains("unknown field `ownr`"), "{e}");
        assert_eq!(e.key, "line 3");
        let ttl = "[[integration]]\nid = \"a\"\nmax_token_ttl = \"an hour\"\n";
        let e = parse(ttl).expect_err("bad duration").to_string();
        assert!(
            e.starts_with("registry.toml: integration[0].max_token_ttl: \"an hour\" is not a duration"),
            "{e}"
        );
        let empty = "[[integration]]\nid = \" \"\n";
        assert_eq!(
            parse(empty).expect_err("empty id").to_string(),
            "registry.toml: integration[0].id: must not be empty"
        );
    }
}
