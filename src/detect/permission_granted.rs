//! `permission_granted`: a permission is granted to a non-human identity (an OAuth consent, a
//! delegated or application permission, an app role, an Auth0 client grant, a GCP role binding;
//! [`EventKind::PermissionGrant`], whose identity is the client that receives it) and either
//!
//! - it is outside what the registry approves for that identity (SMART scopes by containment;
//!   opaque scopes only when the entry lists an opaque one, as `scope_drift` judges them), or —
//!   with `unregistered = true` — the registry does not list the identity at all, so nothing is
//!   approved for it (by default `unregistered_identity` reports those): high;
//! - or it is on the file's `high_privilege` list (Microsoft Graph `Directory.ReadWrite.All`,
//!   SMART `system/*.*`, GCP `roles/owner`, Auth0 Management API `create:client_grants`, …):
//!   high; on its `sensitive` list (`Mail.Read`, …): medium. The lists name permissions, not the
//!   API they are for (the events do not carry it): an API of one's own with a scope of the same
//!   name matches too.
//!
//! Broad permissions granted to an application are how an illicit consent grant (MITRE ATT&CK
//! T1528, Steal Application Access Token) and added cloud roles (T1098.003, Account
//! Manipulation: Additional Cloud Roles) give an attacker lasting access that no password reset
//! ends. Adding a credential to the same application (T1098.001, Additional Cloud Credentials)
//! completes the takeover, so a reported grant and a credential added to the same identity
//! within `credential_window_hours` of each other, in either order, raise the finding to
//! critical with both events in its evidence: a grant after a credential cites the open
//! `credential_added` finding's event; a credential after a grant folds into the open
//! `permission_granted` finding.
//!
//! A grant is a change of permission, not a use of one: it is not activity, so its scopes never
//! become the scopes an identity "has used" in `scope_drift`'s baseline.

use super::{Cx, Detector, detector_config, human_duration, rfc3339};
use crate::baseline::CredentialChange;
use crate::event::{EventKind, Outcome};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};
use crate::scope::Scope;

detector_config! {
    /// `detectors/permission_granted.toml`
    pub struct PermissionGrantedConfig {
        severity: Severity::High,
        suppress_minutes: 1440,
        /// Permissions reported at `severity` wherever they are granted. A SMART scope counts
        /// when the grant includes it (containment: `system/*.cruds` includes `system/*.write`);
        /// any other by name, ignoring case.
        pub high_privilege: Vec<String> = high_privilege(),
        /// Permissions reported at `sensitive_severity`: read or send access to people's mail.
        pub sensitive: Vec<String> = ["Mail.Read", "Mail.Send", "MailboxSettings.ReadWrite"]
            .map(String::from)
            .to_vec(),
        /// Severity of a grant reported only for a `sensitive` permission.
        pub sensitive_severity: Severity = Severity::Medium,
        /// A grant to an identity the registry does not list is outside its approval (with a
        /// registry configured). Off by default: `unregistered_identity` reports an unregistered
        /// identity's grants (one finding for all it does), and this detector still reports
        /// its `high_privilege` and `sensitive` grants.
        pub unregistered: bool = false,
        /// A reported grant and a credential added to the same identity within this many hours
        /// of each other (event time, either order) raise the finding to `correlated_severity`.
        pub credential_window_hours: u32 = 6,
        /// Severity of a grant correlated with a credential added.
        pub correlated_severity: Severity = Severity::Critical,
    }
}

/// The high-privilege permissions by default (admin and management rights, every resource
/// type): `permission_granted.high_privilege`, and what makes an unregistered identity's tokens
/// and grants high for `unregistered_identity`.
pub fn high_privilege() -> Vec<String> {
    [
        // Microsoft Graph and Exchange Online application or delegated permissions.
        "Mail.ReadWrite",
        "Directory.ReadWrite.All",
        "Application.ReadWrite.All",
        "AppRoleAssignment.ReadWrite.All",
        "RoleManagement.ReadWrite.Directory",
        "Files.ReadWrite.All",
        "Sites.ReadWrite.All",
        "full_access_as_app",
        // SMART on FHIR: every resource type, for the system or any user.
        "system/*.*",
        "system/*.cruds",
        "system/*.write",
        "user/*.*",
        // Google Cloud IAM roles.
        "roles/owner",
        "roles/editor",
        "roles/iam.serviceAccountTokenCreator",
        "roles/iam.serviceAccountKeyAdmin",
        "roles/resourcemanager.projectIamAdmin",
        // Auth0 Management API: grant permissions, create or change applications and their
        // keys, give roles.
        "create:client_grants",
        "update:client_grants",
        "create:clients",
        "update:clients",
        "create:client_keys",
        "update:client_keys",
        "create:role_members",
        // Okta Admin Management API: manage apps and clients (and their secrets), admin
        // roles, API tokens.
        "okta.apps.manage",
        "okta.clients.manage",
        "okta.roles.manage",
        "okta.apiTokens.manage",
    ]
    .map(String::from)
    .to_vec()
}

/// See the module docs.
pub struct PermissionGranted {
    config: PermissionGrantedConfig,
    high: Vec<Scope>,
    sensitive: Vec<Scope>,
}

/// True when the granted `scope` includes the listed one: SMART by containment, others by name
/// without case (Microsoft Graph permission names are not case-sensitive).
pub(crate) fn includes(granted: &Scope, listed: &Scope) -> bool {
    match (granted, listed) {
        (Scope::Other(g), Scope::Other(l)) => g.eq_ignore_ascii_case(l),
        _ => granted.contains(listed),
    }
}

/// Characters a title keeps under when it can.
const TITLE_MAX: usize = 120;

/// Scopes named in a sentence, at most.
const LISTED: usize = 20;

/// The first `max` of `items`, then how many more.
fn some_of(items: &[String], max: usize) -> String {
    let shown = items.iter().take(max).map(String::as_str).collect::<Vec<_>>().join(" ");
    match items.len().saturating_sub(max) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

const ATTACK: &str = "Broad permissions granted to an application are how an illicit consent grant (MITRE \
     ATT&CK T1528, Steal Application Access Token) or added cloud roles (T1098.003, Additional Cloud \
     Roles) give lasting access that no password reset ends.";

impl PermissionGranted {
    fn window(&self) -> i64 {
        i64::from(self.config.credential_window_hours) * 3600
    }

    /// A grant: what makes it worth reporting, and how bad.
    fn grant(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        let scopes = &e.scopes;
        let mut reasons: Vec<String> = Vec::new();
        let mut analysis = Vec::new();
        let mut severity = None;
        let (mut outside, mut high, mut sensitive) = (Vec::new(), Vec::new(), Vec::new());
        match cx.entry {
            Some(entry) => {
                let approved = entry
                    .approved_scopes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                for scope in scopes {
                    if entry.approves_scope(scope) == Some(false) {
                        outside.push(scope.to_string());
                        analysis.push(Analysis::new(
                            "granted_scope",
                            scope.to_string(),
                            approved.clone(),
                            "within approved_scopes",
                        ));
                    }
                }
                if !outside.is_empty() {
                    reasons.push(format!(
                        "{} {} outside the registry's approval ({approved})",
                        some_of(&outside, LISTED),
                        if outside.len() == 1 { "is" } else { "are" },
                    ));
                    severity = Some(self.config.severity);
                }
            }
            None if cx.has_registry && self.config.unregistered => {
                reasons.push(format!(
                    "{} is not in the identity registry, so no permission is approved for it",
                    cx.who()
                ));
                analysis.push(Analysis::new("registered", false, serde_json::Value::Null, true));
                severity = Some(self.config.severity);
            }
            None => {}
        }
        for scope in scopes {
            if self.high.iter().any(|l| includes(scope, l)) {
                high.push(scope.to_string());
                analysis.push(Analysis::new(
                    "high_privilege_scope",
                    scope.to_string(),
                    serde_json::Value::Null,
                    "permission_granted.high_privilege",
                ));
            } else if self.sensitive.iter().any(|l| includes(scope, l)) {
                sensitive.push(scope.to_string());
                analysis.push(Analysis::new(
                    "sensitive_scope",
                    scope.to_string(),
                    serde_json::Value::Null,
                    "permission_granted.sensitive",
                ));
            }
        }
        if !high.is_empty() {
            reasons.push(format!(
                "{} {}",
                some_of(&high, LISTED),
                if high.len() == 1 {
                    "is a high-privilege permission"
                } else {
                    "are high-privilege permissions"
                },
            ));
            severity = Some(self.config.severity);
        }
        if !sensitive.is_empty() {
            reasons.push(format!(
                "{} {}",
                some_of(&sensitive, LISTED),
                if sensitive.len() == 1 {
                    "is a sensitive permission"
                } else {
                    "are sensitive permissions"
                },
            ));
            severity = Some(severity.unwrap_or(self.config.sensitive_severity));
        }
        let Some(severity) = severity else { return };
        let all: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        let granted = if all.is_empty() {
            "a permission (the source lists none)".to_owned()
        } else {
            some_of(&all, LISTED)
        };
        // The title names what was reported, briefly: a grant may hold a hundred scopes.
        let reported: Vec<String> = outside.into_iter().chain(high).chain(sensitive).collect();
        let lead = format!("Permission granted to {}", cx.who());
        let named = if reported.is_empty() { &all } else { &reported };
        // Up to three scopes, fewer when a long name and id leave no room for them.
        let headline = (1..=3)
            .rev()
            .map(|max| some_of(named, max))
            .find(|h| lead.chars().count() + 2 + h.chars().count() < TITLE_MAX)
            .unwrap_or_else(|| some_of(named, 1));
        let by = e.initiator.as_deref().unwrap_or("an unrecorded actor");
        let action = e.action.as_deref().unwrap_or("permission grant");
        let credential = cx
            .state
            .credential_added_at()
            .filter(|added| (cx.now - added).abs() <= self.window());
        let mut hit = self.hit(
            Confidence::High,
            if headline.is_empty() {
                lead
            } else {
                format!("{lead}: {headline}")
            },
            String::new(),
        );
        hit.severity = severity;
        let mut explanation = format!(
            "{} was granted {granted} by {by} ({action}): {}. {ATTACK}",
            cx.who(),
            reasons.join("; "),
        );
        if let Some(added) = credential {
            hit.severity = self.config.correlated_severity;
            hit.title = format!("Permission granted to {} after a credential was added", cx.who());
            hit.cite = Some(DetectorId::CredentialAdded);
            explanation.push_str(&format!(
                " A credential was added to the same identity {} {} this grant ({}; T1098.001, Additional \
                 Cloud Credentials): new permissions and a new credential on one application is a \
                 takeover's persistence. Treat it as an incident: revoke the grant and the new credential \
                 unless the owner confirms both.",
                human_duration((cx.now - added).abs()),
                if added <= cx.now { "before" } else { "after" },
                rfc3339(added),
            ));
            analysis.push(Analysis::new(
                "credential_added_seconds_apart",
                (cx.now - added).abs(),
                serde_json::Value::Null,
                self.window(),
            ));
        } else {
            explanation.push_str(" Confirm the grant with the identity's owner and with whoever granted it; revoke it if it was not planned.");
        }
        hit.explanation = explanation;
        hit.analysis = analysis;
        hits.push(hit);
    }

    /// A credential added: the open grant finding it completes, if one is recent enough.
    fn credential(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let Some(grant) = cx.open_finding(DetectorId::PermissionGranted) else {
            return;
        };
        let apart = cx.now - grant.last_event_time.timestamp();
        if apart.abs() > self.window() {
            return;
        }
        let (by, key) = super::credential_added::added_by(cx.event);
        let mut hit = self.hit(
            Confidence::High,
            format!("Credential added to {} after a permission grant", cx.who()),
            format!(
                "A credential was added to {}{key} by {by} ({}), {} {} the grant reported as \"{}\" at {} \
                 (T1098.001, Additional Cloud Credentials): new permissions and a new credential on one \
                 application is a takeover's persistence. {ATTACK} Treat it as an incident: revoke the grant \
                 and the new credential unless the owner confirms both.",
                cx.who(),
                cx.event.action.as_deref().unwrap_or("credential change"),
                human_duration(apart.abs()),
                if apart >= 0 { "after" } else { "before" },
                grant.title,
                rfc3339(grant.last_event_time.timestamp()),
            ),
        );
        hit.severity = self.config.correlated_severity;
        hit.cite = Some(DetectorId::PermissionGranted);
        hit.analysis = grant
            .analysis
            .iter()
            .filter(|a| a.metric != "credential_added_seconds_apart")
            .cloned()
            .chain([Analysis::new(
                "credential_added_seconds_apart",
                apart.abs(),
                serde_json::Value::Null,
                self.window(),
            )])
            .collect();
        hits.push(hit);
    }
}

impl Detector for PermissionGranted {
    const ID: DetectorId = DetectorId::PermissionGranted;
    type Config = PermissionGrantedConfig;

    fn new(config: PermissionGrantedConfig) -> Self {
        let parse = |list: &[String]| list.iter().map(|s| Scope::parse(s.trim())).collect();
        PermissionGranted {
            high: parse(&config.high_privilege),
            sensitive: parse(&config.sensitive),
            config,
        }
    }

    fn config(&self) -> &PermissionGrantedConfig {
        &self.config
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if cx.event.kind == EventKind::PermissionGrant && cx.event.outcome != Outcome::Failure {
            self.grant(cx, hits);
        } else if CredentialChange::of(cx.event) == Some(CredentialChange::Added) {
            self.credential(cx, hits);
        }
    }
}
