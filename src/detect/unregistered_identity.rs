//! `unregistered_identity`: an identity the registry does not know acts where it matters — it
//! touches patient data, obtains a token, is granted a permission, or gets a credential added
//! (issue 20: an unregistered client that can obtain tokens is the same risk as one reading
//! data). Only when a registry is configured: without an inventory, every identity is
//! unregistered.
//!
//! Severity is `severity` (medium), or `privileged_severity` (high) when what it obtained — the
//! token's or the grant's scopes — includes a high-privilege permission (`high_privilege`, by
//! default `permission_granted`'s list: admin and management rights, every resource type).
//! One finding per identity: later acts fold into it, and a privileged one escalates it.

use super::permission_granted::includes;
use super::{Cx, Detector, detector_config};
use crate::baseline::CredentialChange;
use crate::event::{EventKind, Outcome};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};
use crate::scope::Scope;

detector_config! {
    /// `detectors/unregistered_identity.toml`
    pub struct UnregisteredIdentityConfig {
        severity: Severity::Medium,
        suppress_minutes: 10080,
        /// Severity when a token or grant it obtained includes a `high_privilege` permission.
        pub privileged_severity: Severity = Severity::High,
        /// High-privilege permissions (SMART by containment, others by name without case).
        pub high_privilege: Vec<String> = super::permission_granted::high_privilege(),
    }
}

/// See the module docs.
pub struct UnregisteredIdentity {
    config: UnregisteredIdentityConfig,
    high: Vec<Scope>,
}

impl Detector for UnregisteredIdentity {
    const ID: DetectorId = DetectorId::UnregisteredIdentity;
    type Config = UnregisteredIdentityConfig;

    fn new(config: UnregisteredIdentityConfig) -> Self {
        let high = config.high_privilege.iter().map(|s| Scope::parse(s.trim())).collect();
        UnregisteredIdentity { config, high }
    }

    fn config(&self) -> &UnregisteredIdentityConfig {
        &self.config
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        if !cx.has_registry || cx.entry.is_some() || e.outcome == Outcome::Failure {
            return;
        }
        let patients = e.distinct_patients();
        let act = match e.kind {
            EventKind::DataAccess if patients > 0 || e.resource_type.is_some() => format!(
                "accessed {} for {patients} patient(s)",
                e.resource_type.as_deref().unwrap_or("data")
            ),
            EventKind::TokenIssued => "obtained a token".to_owned(),
            EventKind::PermissionGrant => "was granted permissions".to_owned(),
            EventKind::CredentialChange if CredentialChange::of(e) == Some(CredentialChange::Added) => {
                "had a credential added".to_owned()
            }
            _ => return,
        };
        // What it obtained: a token's or a grant's scopes (a read's are what it already held).
        let obtained = matches!(e.kind, EventKind::TokenIssued | EventKind::PermissionGrant);
        let privileged: Vec<String> = e
            .scopes
            .iter()
            .filter(|s| obtained && self.high.iter().any(|l| includes(s, l)))
            .take(20)
            .map(ToString::to_string)
            .collect();
        let scopes = if e.scopes.is_empty() {
            String::new()
        } else {
            let listed: Vec<String> = e.scopes.iter().take(10).map(ToString::to_string).collect();
            format!(" with {}", listed.join(" "))
        };
        let mut hit = self.hit(
            Confidence::High,
            format!("Unregistered identity {} {act}", cx.who()),
            format!(
                "{} ({} via {}) {act}{scopes} but is not in the identity registry, under its id or \
                 any alias: it has no recorded owner, purpose or approved scope.{} Register it with \
                 an owner or revoke its credentials.",
                cx.who(),
                e.identity_type,
                e.format,
                if privileged.is_empty() {
                    String::new()
                } else {
                    format!(" What it obtained includes high-privilege {}.", privileged.join(" "))
                },
            ),
        );
        hit.analysis = vec![Analysis::new("registered", false, serde_json::Value::Null, true)];
        if !privileged.is_empty() {
            hit.severity = hit.severity.max(self.config.privileged_severity);
            hit.analysis.push(Analysis::new(
                "high_privilege_scope",
                privileged.join(" "),
                serde_json::Value::Null,
                "unregistered_identity.high_privilege",
            ));
        }
        hits.push(hit);
    }
}
