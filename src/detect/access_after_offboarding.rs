//! `access_after_offboarding`: activity after the registry's `offboarded_at` or `expires_at`,
//! after the IdP deactivated or deleted the app, or with a credential that was revoked. The
//! integration should be silent; whoever is using it is not its owner's business process.

use super::{Cx, Detector, detector_config, rfc3339};
use crate::baseline::{is_activity, secs};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/access_after_offboarding.toml`
    pub struct AccessAfterOffboardingConfig {
        severity: Severity::Critical,
        suppress_minutes: 1440,
    }
}

/// See the module docs.
pub struct AccessAfterOffboarding(AccessAfterOffboardingConfig);

impl Detector for AccessAfterOffboarding {
    const ID: DetectorId = DetectorId::AccessAfterOffboarding;
    type Config = AccessAfterOffboardingConfig;

    fn new(config: AccessAfterOffboardingConfig) -> Self {
        AccessAfterOffboarding(config)
    }

    fn config(&self) -> &AccessAfterOffboardingConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if !is_activity(cx.event) {
            return;
        }
        let (since, reason) = if let Some((at, key)) = cx.entry.and_then(|e| e.retired_at())
            && cx.event.time >= at
        {
            (Some(secs(at)), format!("the registry's {key} ({})", rfc3339(secs(at))))
        } else if let Some(at) = cx.state.deactivated_at()
            && cx.now >= at
        {
            (
                Some(at),
                format!("the identity provider deactivated the application ({})", rfc3339(at)),
            )
        } else if let Some(key) = cx.event.credential_id.as_deref()
            && cx.state.is_revoked(key)
        {
            (None, format!("its credential {key} was revoked"))
        } else {
            return;
        };
        let what = match (&cx.event.interaction, &cx.event.resource_type) {
            (Some(i), Some(r)) => format!("a {i} of {r} for {} patient(s)", cx.event.distinct_patients()),
            _ => format!("a {}", cx.event.kind),
        };
        let when = match since {
            Some(at) => format!("{}, {} after", rfc3339(cx.now), cx.ago(at)),
            None => format!("{}, after", rfc3339(cx.now)),
        };
        let mut hit = self.hit(
            Confidence::High,
            format!("{} active after offboarding", cx.who()),
            format!(
                "{} performed {} at {} {}. An offboarded integration must be silent: revoke its \
                 credentials and find out who is using them.",
                cx.who(),
                what,
                when,
                reason,
            ),
        );
        hit.analysis = vec![Analysis::new(
            "activity_after_retirement",
            rfc3339(cx.now),
            serde_json::Value::Null,
            since.map(rfc3339).unwrap_or_default(),
        )];
        hits.push(hit);
    }
}
