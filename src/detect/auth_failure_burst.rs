//! `auth_failure_burst`: failed token requests or denied calls far above the identity's own
//! rate: secret guessing, a stolen client id, or a broken rotation. Counted over the current and
//! previous 10-minute bucket, and reported when the count crosses the threshold.

use super::{Cx, Detector, detector_config};
use crate::baseline::is_failure;
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/auth_failure_burst.toml`
    pub struct AuthFailureBurstConfig {
        severity: Severity::Medium,
        suppress_minutes: 60,
        /// Failures in 10–20 minutes below which nothing is reported.
        pub min_failures: u32 = 10,
        /// Failures must also exceed this many times the identity's usual rate.
        pub ratio: f64 = 5.0,
    }
}

/// See the module docs.
pub struct AuthFailureBurst(AuthFailureBurstConfig);

impl Detector for AuthFailureBurst {
    const ID: DetectorId = DetectorId::AuthFailureBurst;
    type Config = AuthFailureBurstConfig;

    fn new(config: AuthFailureBurstConfig) -> Self {
        AuthFailureBurst(config)
    }

    fn config(&self) -> &AuthFailureBurstConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if !is_failure(cx.event) {
            return;
        }
        let f = &cx.state.failures;
        let usual = f.mean * 2.0;
        // An identity without a baseline is held to twice the floor: guessing at a client id
        // nobody has seen is still worth a finding.
        let floor = if cx.established {
            self.0.min_failures
        } else {
            self.0.min_failures * 2
        };
        let threshold = f64::from(floor).max((usual * self.0.ratio).ceil()) as u32;
        let recent = f.recent();
        if recent != threshold {
            return;
        }
        let reason = cx.event.error.as_deref().unwrap_or("no reason given");
        let mut hit = self.hit(
            Confidence::High,
            format!("Burst of {recent} authentication failures for {}", cx.who()),
            format!(
                "{} failed {} times in the last 10–20 minutes (latest reason: {}). It usually fails {:.1} \
                 times per 10 minutes; the threshold is {} ({} or {}× usual, whichever is higher). \
                 Check for a broken secret rotation, or someone guessing at this client's credentials.",
                cx.who(),
                recent,
                reason,
                f.mean,
                threshold,
                floor,
                self.0.ratio,
            ),
        );
        hit.analysis = vec![Analysis::new(
            "failures_per_20_minutes",
            recent,
            (usual * 100.0).round() / 100.0,
            threshold,
        )];
        hits.push(hit);
    }
}
