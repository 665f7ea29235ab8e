//! `credential_added`: a secret, key or certificate is added to an application. Adding a
//! credential is how an attacker keeps access to an app; it is also routine rotation, so the
//! finding is medium, and `new_network` raises it to high when the identity is then used from a
//! network it never used (within `new_network.credential_follow_hours`).

use super::{Cx, Detector, detector_config};
use crate::baseline::CredentialChange;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/credential_added.toml`
    pub struct CredentialAddedConfig {
        severity: Severity::Medium,
        suppress_minutes: 1440,
    }
}

/// See the module docs.
pub struct CredentialAdded(CredentialAddedConfig);

impl Detector for CredentialAdded {
    const ID: DetectorId = DetectorId::CredentialAdded;
    type Config = CredentialAddedConfig;

    fn new(config: CredentialAddedConfig) -> Self {
        CredentialAdded(config)
    }

    fn config(&self) -> &CredentialAddedConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if CredentialChange::of(cx.event) != Some(CredentialChange::Added) {
            return;
        }
        let (by, key) = added_by(cx.event);
        let previous = cx
            .state
            .credential_added_at()
            .map(|t| format!("The previous credential change was {} ago.", cx.ago(t)))
            .unwrap_or_else(|| "No earlier credential change is on record.".to_owned());
        let mut hit = self.hit(
            Confidence::Medium,
            format!("Credential added to {}", cx.who()),
            format!(
                "A credential was added to {}{} by {} ({}). {} Confirm this was a planned rotation; \
                 use of the identity from a new network soon after raises this finding to high.",
                cx.who(),
                key,
                by,
                cx.event.action.as_deref().unwrap_or("credential change"),
                previous,
            ),
        );
        hit.analysis = vec![Analysis::new(
            "credential_added",
            cx.event.action.clone().unwrap_or_default(),
            serde_json::Value::Null,
            serde_json::Value::Null,
        )];
        hits.push(hit);
    }
}

/// Who added a credential (its initiator) and the key's id as a phrase (` (key id …)`), for the
/// explanations of the findings a credential change raises.
pub(super) fn added_by(event: &crate::event::Event) -> (&str, String) {
    let by = event.initiator.as_deref().unwrap_or("an unrecorded actor");
    let key = event
        .credential_id
        .as_deref()
        .map(|k| format!(" (key id {k})"))
        .unwrap_or_default();
    (by, key)
}
