//! `break_glass`: a non-human identity asserts an emergency purpose of use (`ETREAT`, `BTG`).
//! Break-glass is a person's decision in an emergency; an integration claiming it is bypassing
//! consent or access policy, whatever its baseline.

use super::{Cx, Detector, detector_config};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/break_glass.toml`
    pub struct BreakGlassConfig {
        severity: Severity::High,
        suppress_minutes: 60,
        /// Purpose-of-use codes that mean emergency access (compared without case).
        pub codes: Vec<String> = vec!["ETREAT".into(), "BTG".into()],
    }
}

/// See the module docs.
pub struct BreakGlass(BreakGlassConfig);

impl Detector for BreakGlass {
    const ID: DetectorId = DetectorId::BreakGlass;
    type Config = BreakGlassConfig;

    fn new(config: BreakGlassConfig) -> Self {
        BreakGlass(config)
    }

    fn config(&self) -> &BreakGlassConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let used: Vec<&str> = cx
            .event
            .purpose_of_use
            .iter()
            .filter(|p| self.0.codes.iter().any(|c| c.eq_ignore_ascii_case(p)))
            .map(String::as_str)
            .collect();
        if used.is_empty() {
            return;
        }
        let what = match (&cx.event.interaction, &cx.event.resource_type) {
            (Some(i), Some(r)) => format!("{i} of {r}"),
            (Some(i), None) => i.to_string(),
            _ => cx.event.kind.to_string(),
        };
        let patients = cx.event.distinct_patients();
        let mut hit = self.hit(
            Confidence::High,
            format!("Break-glass access by non-human identity {}", cx.who()),
            format!(
                "{} performed a {} for {} patient(s) with purpose of use {}. Emergency access is a \
                 clinician's decision and is never expected from an integration: confirm who triggered it \
                 and whether consent or access rules were bypassed.",
                cx.who(),
                what,
                patients,
                used.join(", "),
            ),
        );
        hit.analysis = vec![Analysis::new(
            "purpose_of_use",
            used.join(","),
            "no emergency purpose (non-human identity)",
            self.0.codes.join(","),
        )];
        hits.push(hit);
    }
}
