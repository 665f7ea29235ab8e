//! The controls a finding bears on, from the checked-in table `controls.toml`: the OWASP
//! Non-Human Identities Top 10 (2025) and NIST CSF 2.0.
//!
//! The table is data compiled into the binary, parsed once; [`of`] gives a detector's controls.
//! A test checks that every detector maps to a control of each framework.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use super::DetectorId;

/// One control of a framework.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// The framework, e.g. `NIST CSF 2.0`.
    pub framework: String,
    /// The framework's own identifier, e.g. `PR.AA-05` or `NHI1:2025`.
    pub id: String,
    /// The control's title in the framework's words.
    pub title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    frameworks: BTreeMap<String, String>,
    controls: BTreeMap<String, RawControl>,
    detectors: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    framework: String,
    title: String,
}

/// The table's source text.
pub const SOURCE: &str = include_str!("../../controls.toml");

/// Parses a control table: every framework and control referenced must be defined, and every
/// detector named must exist. Errors name the key.
fn parse(text: &str) -> Result<BTreeMap<DetectorId, Vec<Control>>, String> {
    let table: Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let mut out = BTreeMap::new();
    for (detector, ids) in table.detectors {
        let id: DetectorId = detector
            .parse()
            .map_err(|()| format!("detectors.{detector}: no detector is called {detector:?}"))?;
        let mut controls = Vec::new();
        for control in ids {
            let raw = table
                .controls
                .get(&control)
                .ok_or_else(|| format!("detectors.{detector}: control {control:?} is not defined"))?;
            let framework = table
                .frameworks
                .get(&raw.framework)
                .ok_or_else(|| format!("controls.{control:?}.framework: {:?} is not a framework", raw.framework))?;
            controls.push(Control {
                framework: framework.clone(),
                id: control,
                title: raw.title.clone(),
            });
        }
        out.insert(id, controls);
    }
    Ok(out)
}

static TABLE: LazyLock<BTreeMap<DetectorId, Vec<Control>>> =
    LazyLock::new(|| parse(SOURCE).unwrap_or_else(|e| panic!("controls.toml: {e}")));

/// The controls findings of `detector` bear on (empty only if the table lacks it, which a test
/// forbids).
pub fn of(detector: DetectorId) -> &'static [Control] {
    TABLE.get(&detector).map(Vec::as_slice).unwrap_or_default()
}

/// Every framework named in the table, by display name.
pub fn frameworks() -> Vec<String> {
    let table: Table = toml::from_str(SOURCE).expect("checked by the tests");
    table.frameworks.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_detector_maps_to_each_framework() {
        let frameworks = frameworks();
        assert_eq!(frameworks.len(), 2);
        for id in DetectorId::ALL {
            let controls = of(*id);
            for framework in &frameworks {
                assert!(
                    controls.iter().any(|c| &c.framework == framework),
                    "{id} has no {framework} control in controls.toml"
                );
            }
        }
        let offboarding = of(DetectorId::AccessAfterOffboarding);
        assert_eq!(offboarding[0].id, "NHI1:2025");
        assert_eq!(offboarding[0].title, "Improper Offboarding");
        assert!(of(DetectorId::ScopeDrift).iter().any(|c| c.id == "PR.AA-05"));
    }

    #[test]
    fn csf_ids_are_csf_2_0_ids() {
        // CSF 1.1's PR.AC family was replaced by PR.AA in 2.0; an old id here would be wrong.
        for id in DetectorId::ALL {
            for c in of(*id) {
                if c.framework == "NIST CSF 2.0" {
                    assert!(!c.id.starts_with("PR.AC"), "{id}: {} is a CSF 1.1 id", c.id);
                    let shape = c.id.len() == 8 && c.id.as_bytes()[2] == b'.' && c.id.as_bytes()[5] == b'-';
                    assert!(shape, "{id}: {} is not a CSF 2.0 subcategory id", c.id);
                }
            }
        }
    }

    #[test]
    fn table_errors_name_the_key() {
        let base = "[frameworks]\nf = \"F\"\n[controls.\"C-1\"]\nframework = \"f\"\ntitle = \"t\"\n";
        assert_eq!(
            parse(&format!("{base}[detectors]\nphi_volum = [\"C-1\"]\n")).expect_err("typo"),
            "detectors.phi_volum: no detector is called \"phi_volum\""
        );
        assert_eq!(
            parse(&format!("{base}[detectors]\nphi_volume = [\"C-2\"]\n")).expect_err("undefined"),
            "detectors.phi_volume: control \"C-2\" is not defined"
        );
        let ok = parse(&format!("{base}[detectors]\nphi_volume = [\"C-1\"]\n")).expect("valid");
        assert_eq!(ok[&DetectorId::PhiVolume][0].framework, "F");
    }
}
