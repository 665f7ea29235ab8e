//! `unregistered_identity`: an identity the registry does not know touches PHI. Only when a
//! registry is configured: without an inventory, every identity is unregistered.

use super::{Cx, Detector, detector_config};
use crate::event::{EventKind, Outcome};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/unregistered_identity.toml`
    pub struct UnregisteredIdentityConfig {
        severity: Severity::Medium,
        suppress_minutes: 10080,
    }
}

/// See the module docs.
pub struct UnregisteredIdentity(UnregisteredIdentityConfig);

impl Detector for UnregisteredIdentity {
    const ID: DetectorId = DetectorId::UnregisteredIdentity;
    type Config = UnregisteredIdentityConfig;

    fn new(config: UnregisteredIdentityConfig) -> Self {
        UnregisteredIdentity(config)
    }

    fn config(&self) -> &UnregisteredIdentityConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        if !cx.has_registry || cx.entry.is_some() || e.kind != EventKind::DataAccess || e.outcome == Outcome::Failure {
            return;
        }
        let patients = e.distinct_patients();
        if patients == 0 && e.resource_type.is_none() {
            return;
        }
        let mut hit = self.hit(
            Confidence::High,
            format!("Unregistered identity {} accessed patient data", cx.who()),
            format!(
                "{} ({} via {}) accessed {} for {} patient(s) but is not in the identity registry, \
                 under its id or any alias: it has no recorded owner, purpose or approved scope. \
                 Register it with an owner or revoke its credentials.",
                cx.who(),
                e.identity_type,
                e.format,
                e.resource_type.as_deref().unwrap_or("data"),
                patients,
            ),
        );
        hit.analysis = vec![Analysis::new("registered", false, serde_json::Value::Null, true)];
        hits.push(hit);
    }
}
