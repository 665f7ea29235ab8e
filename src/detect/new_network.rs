//! `new_network`: an established identity acts from a network prefix (/24, /64, or host name)
//! it has never used and the registry does not approve. Two cases are filed under other ids:
//!
//! - `credential_sharing`: the identity is used from several networks at once: within
//!   `sharing_window_minutes`, at least two networks are active and the traffic switches between
//!   them at least `sharing_min_switches` times. One credential, several users.
//! - a new network within `credential_follow_hours` of a credential being added raises the
//!   `credential_added` finding to high instead of opening a second finding.

use super::{Cx, Detector, detector_config, human_duration};
use crate::baseline::{is_activity, net};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/new_network.toml`
    pub struct NewNetworkConfig {
        severity: Severity::Medium,
        suppress_minutes: 1440,
        /// A network inside the registry's `approved_networks` is not reported even when new.
        pub trust_approved: bool = true,
        /// Report concurrent use from several networks as `credential_sharing`.
        pub sharing: bool = true,
        /// Severity of `credential_sharing` findings.
        pub sharing_severity: Severity = Severity::High,
        /// Window in which concurrent networks are counted.
        pub sharing_window_minutes: u32 = 60,
        /// Network switches within the window that make it concurrent use rather than a move.
        pub sharing_min_switches: u32 = 5,
        /// A new network this soon after a credential was added escalates `credential_added`.
        pub credential_follow_hours: u32 = 24,
    }
}

/// See the module docs.
pub struct NewNetwork(NewNetworkConfig);

impl Detector for NewNetwork {
    const ID: DetectorId = DetectorId::NewNetwork;
    type Config = NewNetworkConfig;

    fn new(config: NewNetworkConfig) -> Self {
        NewNetwork(config)
    }

    fn config(&self) -> &NewNetworkConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let Some(ip) = cx.event.src_ip.as_deref() else { return };
        if !is_activity(cx.event) || !cx.established {
            return;
        }
        let key = net::network_key(ip);
        // Labels and the registry's approval only for a network never seen (most events come
        // from a known one: rendering them for every event showed in the profile, issue 22).
        let approval = || cx.entry.and_then(|e| e.approves_address(ip));
        if cx.state.network(key).is_none() && !(self.0.trust_approved && approval() == Some(true)) {
            let approval = approval();
            let prefix = net::prefix_label(ip);
            let known: Vec<String> = cx
                .state
                .networks
                .iter()
                .take(5)
                .map(|n| net::key_label(n.key))
                .collect();
            let known = if cx.state.networks.len() > 5 {
                format!("{} and {} more", known.join(", "), cx.state.networks.len() - 5)
            } else {
                known.join(", ")
            };
            let policy = match approval {
                Some(false) => " and outside the registry's approved networks",
                _ => "",
            };
            let follow = i64::from(self.0.credential_follow_hours) * 3600;
            let analysis = vec![Analysis::new(
                "network",
                prefix.clone(),
                known.clone(),
                "previously used",
            )];
            if let Some(added) = cx.state.credential_added_at()
                && cx.now - added <= follow
            {
                let mut hit = self.hit(
                    Confidence::High,
                    format!("New credential of {} used from a new network", cx.who()),
                    format!(
                        "A credential was added to {} and {} later the identity was used from {} ({ip}), a \
                         network it never used{policy}; its known networks are {}. A credential added and \
                         then used from elsewhere is how stolen application access is kept: verify the \
                         change with the owner and revoke the new credential if it is not theirs.",
                        cx.who(),
                        human_duration(cx.now - added),
                        prefix,
                        known,
                    ),
                );
                hit.detector = DetectorId::CredentialAdded;
                hit.severity = Severity::High;
                hit.analysis = analysis;
                hits.push(hit);
            } else {
                let mut hit = self.hit(
                    Confidence::Medium,
                    format!("{} used from a new network {}", cx.who(), prefix),
                    format!(
                        "{} acted ({}) from {} ({ip}), a network it never used in {} of history{policy}. \
                         Known networks: {}.",
                        cx.who(),
                        cx.event.kind,
                        prefix,
                        cx.ago(cx.state.first_seen),
                        known,
                    ),
                );
                if approval == Some(false) {
                    hit.severity = hit.severity.max(Severity::High);
                }
                hit.cause = Some(prefix.clone());
                hit.analysis = analysis;
                hits.push(hit);
            }
        }
        if !self.0.sharing {
            return;
        }
        let since = cx.now - i64::from(self.0.sharing_window_minutes) * 60;
        let switches = cx.state.switches_since(since);
        if switches != self.0.sharing_min_switches as usize {
            return;
        }
        let mut active: Vec<u64> = cx
            .state
            .networks
            .iter()
            .filter(|n| n.last >= since)
            .map(|n| n.key)
            .collect();
        if !active.contains(&key) {
            active.push(key);
        }
        if active.len() < 2 {
            return;
        }
        let labels: Vec<String> = active.iter().map(|&k| net::key_label(k)).collect();
        let mut hit = self.hit(
            Confidence::Medium,
            format!("{} used from {} networks at once", cx.who(), active.len()),
            format!(
                "Within {} minutes, {} was used from {} networks ({}), switching between them {} times. \
                 A non-human identity runs from one place; interleaved use from several means its credential \
                 is shared or stolen.",
                self.0.sharing_window_minutes,
                cx.who(),
                active.len(),
                labels.join(", "),
                switches,
            ),
        );
        hit.detector = DetectorId::CredentialSharing;
        hit.severity = self.0.sharing_severity;
        hit.analysis = vec![Analysis::new(
            "network_switches_per_window",
            switches,
            "one network at a time",
            self.0.sharing_min_switches,
        )];
        hits.push(hit);
    }
}
