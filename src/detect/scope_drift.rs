//! `scope_drift`: a token or call carries a scope outside what the registry approves, or (after
//! learning) broader than anything the identity has used; or the identity does something of a
//! kind it never did: its first write, delete or `$export`, or a resource type it never touched.
//!
//! Scopes are compared by SMART containment, not as strings: the same scopes in another order,
//! v1 `read` for v2 `rs`, or a narrower scope are not drift.

use super::{Cx, Detector, detector_config};
use crate::baseline::{Class, is_activity};
use crate::event::EventKind;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};
use crate::registry::Integration;
use crate::scope::{Perms, Scope};

detector_config! {
    /// `detectors/scope_drift.toml`
    pub struct ScopeDriftConfig {
        severity: Severity::Medium,
        suppress_minutes: 1440,
        /// After learning, flag scopes broader than any the identity has used.
        pub learned_scopes: bool = true,
        /// After learning, flag the first use of these interaction classes
        /// (`write`, `delete`, `$export`, `operation`, `read`).
        pub first_classes: Vec<String> = vec!["write".into(), "delete".into(), "$export".into()],
        /// After learning, flag a resource type × interaction class never used before.
        pub new_resource_types: bool = true,
    }
}

/// See the module docs.
pub struct ScopeDrift(ScopeDriftConfig);

/// The permission a data access needs, for comparing calls with approved scopes.
fn needed(event: &crate::event::Event) -> Option<Perms> {
    use crate::event::Interaction as I;
    Some(match event.interaction? {
        I::Read | I::Vread => Perms::R,
        I::Search | I::History => Perms::S,
        I::Create => Perms::C,
        I::Update | I::Patch => Perms::U,
        I::Delete => Perms::D,
        _ => return None,
    })
}

/// True when an approved SMART scope, in any context, grants `perms` on `resource`.
fn approved_for(entry: &Integration, resource: &str, perms: Perms) -> Option<bool> {
    let mut smart = entry.approved_scopes.iter().filter_map(Scope::as_smart).peekable();
    smart.peek()?;
    Some(smart.any(|s| s.resource.as_deref().is_none_or(|r| r == resource) && s.perms.contains(perms)))
}

impl Detector for ScopeDrift {
    const ID: DetectorId = DetectorId::ScopeDrift;
    type Config = ScopeDriftConfig;

    fn new(config: ScopeDriftConfig) -> Self {
        ScopeDrift(config)
    }

    fn config(&self) -> &ScopeDriftConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        if !is_activity(e) {
            return;
        }
        let mut reasons: Vec<String> = Vec::new();
        let mut analysis = Vec::new();
        let mut severe = false;
        let approved = || {
            cx.entry
                .map(|en| {
                    en.approved_scopes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default()
        };
        let used = || {
            cx.state
                .scopes
                .iter()
                .map(|s| s.scope.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for scope in &e.scopes {
            if let Some(entry) = cx.entry
                && entry.approves_scope(scope) == Some(false)
            {
                severe = true;
                reasons.push(format!(
                    "scope {scope} is outside the registry's approval ({})",
                    approved()
                ));
                analysis.push(Analysis::new(
                    "scope",
                    scope.to_string(),
                    approved(),
                    "within approved_scopes",
                ));
            } else if self.0.learned_scopes && cx.established && !cx.state.covers(scope) {
                reasons.push(format!(
                    "scope {scope} is broader than or outside every scope it has used ({})",
                    if cx.state.scopes.is_empty() {
                        "none".to_owned()
                    } else {
                        used()
                    }
                ));
                analysis.push(Analysis::new("scope", scope.to_string(), used(), "within scopes used"));
            }
        }
        if e.kind == EventKind::DataAccess
            && let Some(class) = Class::of(e)
        {
            let resource = e.resource_type.as_deref();
            if let (Some(entry), Some(rt), Some(perms)) = (cx.entry, resource, needed(e))
                && approved_for(entry, rt, perms) == Some(false)
            {
                severe = true;
                reasons.push(format!(
                    "a {} of {rt} needs permission '{perms}', which no approved scope grants ({})",
                    e.interaction.map(|i| i.as_str()).unwrap_or("call"),
                    approved()
                ));
                analysis.push(Analysis::new(
                    "call",
                    format!("{rt}.{perms}"),
                    approved(),
                    "within approved_scopes",
                ));
            }
            if cx.established {
                let first_class = cx.state.classes & class as u8 == 0
                    && self
                        .0
                        .first_classes
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(class.describe()));
                if first_class {
                    severe |= matches!(class, Class::Delete | Class::Export);
                    reasons.push(format!(
                        "it is the identity's first {} in {} of history",
                        class.describe(),
                        cx.ago(cx.state.first_seen)
                    ));
                    analysis.push(Analysis::new(
                        "interaction_class",
                        class.describe(),
                        "never",
                        "first use",
                    ));
                } else if self.0.new_resource_types
                    && let Some(rt) = resource
                    && !cx.state.has_access(rt, class)
                {
                    reasons.push(format!("it never did a {} of {rt} before", class.describe()));
                    analysis.push(Analysis::new(
                        "resource_interaction",
                        format!("{rt} {}", class.describe()),
                        format!("{} resource type × interaction pairs seen", cx.state.access_count()),
                        "first use",
                    ));
                }
            }
        }
        if reasons.is_empty() {
            return;
        }
        let mut hit = self.hit(
            Confidence::High,
            format!("Scope drift by {}", cx.who()),
            format!(
                "{} ({}{}): {}. An integration's access should stay within its approved, usual \
                 permissions; confirm the change with its owner or revoke the broader grant.",
                cx.who(),
                e.kind,
                e.action.as_deref().map(|a| format!(", {a}")).unwrap_or_default(),
                reasons.join("; "),
            ),
        );
        if severe {
            hit.severity = hit.severity.max(Severity::High);
        }
        // The permission the problem is about: a call outside approval first, else the first use.
        hit.cause = analysis.first().map(|a| match &a.observed {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        hit.analysis = analysis;
        hits.push(hit);
    }
}
