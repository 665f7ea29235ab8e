//! Inventory truths: what the registry says against what the audit stream shows.
//!
//! Four gaps, each a list compliance can act on: (a) identities seen but not registered, (b)
//! registered integrations never seen or silent for `unseen_days` (stale inventory), (c)
//! registered integrations without an owner, a purpose or an expiry, (d) expired or offboarded
//! integrations still active. The same questions are saved queries over the archive
//! (`replay/inventory_*.sql` and `replay/access_after_offboarding.sql`); a test holds the two to
//! the same answers.
//!
//! "Seen" and "active" follow the engine: activity is a successful data access or token grant
//! ([`crate::baseline::is_activity`]); times are judged as of the newest event seen.

use serde::Serialize;

use crate::detect::rfc3339;
use crate::registry::Registry;

/// What the stream showed of one identity (canonical id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Canonical id: the registry id when registered.
    pub id: String,
    /// Display name from the source.
    pub name: Option<String>,
    /// Latest activity, Unix seconds; `None` when it only ever failed or was administered.
    pub last_seen: Option<i64>,
    /// Latest event of any kind, Unix seconds.
    pub last_event: i64,
    /// Activity events.
    pub events: u64,
}

/// The four gaps.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Gaps {
    /// The time the gaps are judged at: the newest event seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Silence, in days, after which a registered integration is stale.
    pub unseen_days: u32,
    /// Whether a registry is loaded (without one, every identity is unregistered).
    pub registry: bool,
    /// (a) Identities seen but not registered, most active first.
    pub unregistered: Vec<Unregistered>,
    /// (b) Registered, not retired, and never seen or silent for `unseen_days`.
    pub stale: Vec<Stale>,
    /// (c) Registered without an owner, a purpose or an expiry.
    pub incomplete: Vec<Incomplete>,
    /// (d) Expired or offboarded, yet active after that date.
    pub retired_active: Vec<RetiredActive>,
}

/// (a) An identity outside the registry.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Unregistered {
    /// The id seen in the events.
    pub id: String,
    /// Its name in the source, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Latest activity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Activity events.
    pub events: u64,
}

/// (b) A registered integration not in use.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stale {
    /// Registry id.
    pub id: String,
    /// Owner, if the registry names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Latest activity; absent when never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// Whole days of silence before `as_of`; absent when never seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silent_days: Option<i64>,
}

/// (c) A registry entry missing what governance needs.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Incomplete {
    /// Registry id.
    pub id: String,
    /// The missing keys: `owner`, `purpose`, `expires_at`.
    pub missing: Vec<&'static str>,
}

/// (d) A retired integration still acting.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RetiredActive {
    /// Registry id.
    pub id: String,
    /// Owner, if the registry names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// When it was retired.
    pub retired_at: String,
    /// Which registry date retired it: `expires_at` or `offboarded_at`.
    pub retired_by: &'static str,
    /// Its latest activity, after `retired_at`.
    pub last_seen: String,
}

/// The gaps between `registry` and what was `seen`, judged at the newest event seen.
pub fn gaps(registry: Option<&Registry>, seen: &[Seen], unseen_days: u32) -> Gaps {
    const DAY: i64 = 86_400;
    let as_of = seen.iter().map(|s| s.last_event).max();
    let now = as_of.unwrap_or(0);
    let last_seen: std::collections::HashMap<&str, i64> = seen
        .iter()
        .filter_map(|s| Some((s.id.as_str(), s.last_seen?)))
        .collect();
    let activity = |id: &str| last_seen.get(id).copied();

    let mut unregistered: Vec<Unregistered> = seen
        .iter()
        .filter(|s| registry.is_none_or(|r| r.resolve(&s.id).is_none()))
        .map(|s| Unregistered {
            id: s.id.clone(),
            name: s.name.clone(),
            last_seen: s.last_seen.map(rfc3339),
            events: s.events,
        })
        .collect();
    unregistered.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.id.cmp(&b.id)));

    let entries = registry.map(Registry::entries).unwrap_or_default();
    let horizon = now - i64::from(unseen_days) * DAY;
    let mut stale = Vec::new();
    let mut incomplete = Vec::new();
    let mut retired_active = Vec::new();
    for e in entries {
        let last = activity(&e.id);
        let retired = e.retired_at().filter(|(at, _)| at.timestamp() <= now);
        // Onboarded within the window: not in use yet is not stale yet.
        let settled = e.onboarded_at.is_none_or(|t| t.timestamp() <= horizon);
        if as_of.is_some() && retired.is_none() && settled && last.is_none_or(|l| l <= horizon) {
            stale.push(Stale {
                id: e.id.clone(),
                owner: e.owner.clone(),
                last_seen: last.map(rfc3339),
                silent_days: last.map(|l| (now - l) / DAY),
            });
        }
        let missing = e.missing();
        if !missing.is_empty() {
            incomplete.push(Incomplete {
                id: e.id.clone(),
                missing,
            });
        }
        if let (Some((at, by)), Some(l)) = (retired, last)
            && l > at.timestamp()
        {
            retired_active.push(RetiredActive {
                id: e.id.clone(),
                owner: e.owner.clone(),
                retired_at: rfc3339(at.timestamp()),
                retired_by: by,
                last_seen: rfc3339(l),
            });
        }
    }
    stale.sort_by(|a, b| a.last_seen.cmp(&b.last_seen).then_with(|| a.id.cmp(&b.id)));
    incomplete.sort_by(|a, b| a.id.cmp(&b.id));
    retired_active.sort_by(|a, b| a.id.cmp(&b.id));
    Gaps {
        as_of: as_of.map(rfc3339),
        unseen_days,
        registry: registry.is_some(),
        unregistered,
        stale,
        incomplete,
        retired_active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn registry() -> Registry {
        Registry::parse(
            r#"
[[integration]]
id = "lab"
aliases = ["0oa-lab"]
owner = "lab-it@example.org"
purpose = "Lab results"
expires_at = 2027-01-01T00:00:00Z

[[integration]]
id = "billing"
owner = "finance@example.org"
expires_at = 2026-01-20T00:00:00Z

[[integration]]
id = "never"
owner = "x@example.org"
purpose = "Never used"
expires_at = 2027-01-01T00:00:00Z
onboarded_at = 2025-06-01T00:00:00Z

[[integration]]
id = "new-one"
onboarded_at = 2026-01-30T00:00:00Z
"#,
            Path::new("registry.toml"),
        )
        .expect("valid")
    }

    fn seen(id: &str, last_seen: Option<i64>, events: u64) -> Seen {
        Seen {
            id: id.into(),
            name: None,
            last_seen,
            last_event: last_seen.unwrap_or(T0),
            events,
        }
    }

    #[test]
    fn each_gap_is_found_and_only_it() {
        let r = registry();
        let now = T0 + 40 * DAY; // 2026-02-10
        let stream = vec![
            seen("lab", Some(now), 900),
            seen("billing", Some(T0 + 25 * DAY), 40),
            seen("shadow-app", Some(T0 + 39 * DAY), 12),
            seen("failing", None, 0),
        ];
        let g = gaps(Some(&r), &stream, 30);
        assert_eq!(g.as_of.as_deref(), Some("2026-02-10T00:00:00Z"));
        let ids = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            g.unregistered.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
            ids(vec!["shadow-app", "failing"])
        );
        // `never` was onboarded long ago and never acted; `new-one` is too new to be stale;
        // `billing` expired, so it is not stale but retired and active.
        assert_eq!(g.stale.len(), 1);
        assert_eq!((g.stale[0].id.as_str(), g.stale[0].last_seen.as_ref()), ("never", None));
        assert_eq!(
            g.incomplete
                .iter()
                .map(|i| (i.id.as_str(), i.missing.clone()))
                .collect::<Vec<_>>(),
            vec![
                ("billing", vec!["purpose"]),
                ("new-one", vec!["owner", "purpose", "expires_at"])
            ]
        );
        assert_eq!(g.retired_active.len(), 1);
        let b = &g.retired_active[0];
        assert_eq!(
            (b.id.as_str(), b.retired_by, b.retired_at.as_str(), b.last_seen.as_str()),
            ("billing", "expires_at", "2026-01-20T00:00:00Z", "2026-01-26T00:00:00Z")
        );

        // A month later (the clock moves with the newest event of any identity): `lab` has
        // been silent for 31 days, and `new-one` is no longer new.
        let mut later = stream.clone();
        later.push(Seen {
            last_event: now + 31 * DAY,
            ..seen("shadow-2", None, 0)
        });
        let g = gaps(Some(&r), &later, 30);
        assert_eq!(
            g.stale
                .iter()
                .map(|s| (s.id.as_str(), s.silent_days))
                .collect::<Vec<_>>(),
            vec![("never", None), ("new-one", None), ("lab", Some(31))]
        );
    }

    #[test]
    fn without_a_registry_everything_is_unregistered() {
        let g = gaps(None, &[seen("a", Some(T0), 3)], 30);
        assert!(!g.registry);
        assert_eq!(g.unregistered.len(), 1);
        assert!(g.stale.is_empty() && g.incomplete.is_empty() && g.retired_active.is_empty());
    }
}
