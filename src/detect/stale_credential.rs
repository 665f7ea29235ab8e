//! `stale_credential`: an identity keeps using a credential older than its rotation policy, or
//! holds access tokens that live longer than its token policy. Facts come from the events,
//! correlated in the identity's state:
//!
//! - a token grant that states its expiry (Okta's `access_token` target) gives the token's
//!   lifetime at issue;
//! - a token id seen again at the FHIR server (BALP `agent.policy`, a gateway's `token_id`) is
//!   dated by its grant, or by the `iat` the gateway logged, to give its age at use; a token the
//!   server accepted after its own expiry raises the finding to high;
//! - a credential added (Entra "Add service principal credentials", Okta or Auth0 secret
//!   events) dates a secret or key; its use (Entra's `servicePrincipalCredentialKeyId`) is then
//!   that old. A credential first seen in use is at least as old as that first use;
//! - with no credential id on use, the newest credential added bounds them all: whichever one
//!   is used is at least as old as the last addition.
//!
//! Policy comes from the identity's registry entry (`max_token_ttl`, `rotate_every`) and, where
//! absent, from this detector's defaults. Policy checks need no learning period.

use super::{Cx, Detector, detector_config, human_duration, rfc3339};
use crate::baseline::is_activity;
use crate::event::{EventKind, Outcome};
use crate::findings::{Analysis, Confidence, DetectorId, Hit, Severity};

detector_config! {
    /// `detectors/stale_credential.toml`
    pub struct StaleCredentialConfig {
        severity: Severity::Medium,
        suppress_minutes: 1440,
        /// Longest token lifetime, and token age at use, allowed when the registry entry sets
        /// no `max_token_ttl`.
        pub max_token_ttl_minutes: u32 = 60,
        /// Rotation period of secrets, keys and certificates when the registry entry sets no
        /// `rotate_every`.
        pub rotate_every_days: u32 = 90,
        /// Clock difference between identity provider and resource server tolerated before a
        /// token's age counts against the policy.
        pub clock_skew_minutes: u32 = 5,
    }
}

/// See the module docs.
pub struct StaleCredential(StaleCredentialConfig);

impl StaleCredential {
    fn token_ttl(&self, cx: &Cx<'_>) -> (i64, &'static str) {
        match cx.entry.and_then(|e| e.max_token_ttl) {
            Some(ttl) => (ttl, "the registry's max_token_ttl"),
            None => (i64::from(self.0.max_token_ttl_minutes) * 60, "the default policy"),
        }
    }

    fn rotation(&self, cx: &Cx<'_>) -> (i64, &'static str) {
        match cx.entry.and_then(|e| e.rotate_every) {
            Some(every) => (every, "the registry's rotate_every"),
            None => (i64::from(self.0.rotate_every_days) * 86_400, "the default policy"),
        }
    }

    /// A grant whose stated lifetime exceeds the policy.
    fn long_lived_grant(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        let Some(expires) = e.token_expires_at.map(|t| t.timestamp()) else {
            return;
        };
        let issued = e.token_issued_at.map_or(cx.now, |t| t.timestamp());
        let lifetime = expires - issued;
        let (ttl, source) = self.token_ttl(cx);
        if lifetime <= ttl {
            return;
        }
        let mut hit = self.hit(
            Confidence::High,
            format!(
                "Token of {} lives {}, beyond policy",
                cx.who(),
                human_duration(lifetime)
            ),
            format!(
                "{} was issued a token{} valid for {} (until {}); {} allows {}. A long-lived token \
                 outlives the revocation of the credential that obtained it and widens the window \
                 for replay: shorten the authorization server's token lifetime for this client.",
                cx.who(),
                e.token_id.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
                human_duration(lifetime),
                rfc3339(expires),
                source,
                human_duration(ttl),
            ),
        );
        hit.analysis = vec![Analysis::new(
            "token_lifetime_minutes",
            lifetime / 60,
            serde_json::Value::Null,
            ttl / 60,
        )];
        hits.push(hit);
    }

    /// A token used older than the policy, dated by the event's own `iat` or by its grant.
    fn old_token(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        let Some(token_id) = e.token_id.as_deref() else { return };
        let grant = cx.state.token(token_id);
        let Some(issued) = e.token_issued_at.map(|t| t.timestamp()).or(grant.map(|g| g.issued)) else {
            return;
        };
        let expires = e
            .token_expires_at
            .map(|t| t.timestamp())
            .or(grant.and_then(|g| g.expires));
        let skew = i64::from(self.0.clock_skew_minutes) * 60;
        let age = cx.now - issued;
        let (ttl, source) = self.token_ttl(cx);
        if age <= ttl + skew {
            return;
        }
        let expired = expires.filter(|&x| cx.now > x + skew);
        let mut hit = self.hit(
            Confidence::High,
            format!("Token of {} used {} after issue", cx.who(), human_duration(age)),
            format!(
                "{} used token {} {} after it was issued at {}; {} allows {}.{} Tokens this old \
                 mean the client caches them past policy or the token lifetime is set too long.",
                cx.who(),
                token_id,
                human_duration(age),
                rfc3339(issued),
                source,
                human_duration(ttl),
                match expired {
                    Some(x) => format!(
                        " The token expired at {} and the server still accepted it: check that the \
                         FHIR server validates token expiry.",
                        rfc3339(x)
                    ),
                    None => String::new(),
                },
            ),
        );
        if expired.is_some() {
            hit.severity = hit.severity.max(Severity::High);
        }
        hit.analysis = vec![Analysis::new(
            "token_age_minutes",
            age / 60,
            serde_json::Value::Null,
            ttl / 60,
        )];
        hits.push(hit);
    }

    /// A credential used older than the rotation period.
    fn old_credential(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        let e = cx.event;
        let (since, confidence, dated, note) = match e.credential_id.as_deref() {
            Some(id) => match cx.state.credential(id) {
                Some(c) if c.created => (c.since, Confidence::High, format!("credential {id} was created"), ""),
                Some(c) => (
                    c.since,
                    Confidence::Medium,
                    format!("credential {id} was first seen in use"),
                    " (its creation is older than what nhiwatch has seen, so it is at least this old)",
                ),
                None => return,
            },
            None => match cx.state.credential_added_at() {
                Some(added) => (
                    added,
                    Confidence::Medium,
                    "its newest credential was added".to_owned(),
                    " (the event does not name the credential used; any of them is at least this old)",
                ),
                None => return,
            },
        };
        let age = cx.now - since;
        let (every, source) = self.rotation(cx);
        if age <= every {
            return;
        }
        let days = |s: i64| s / 86_400;
        let mut hit = self.hit(
            confidence,
            format!("{} uses a credential {} old", cx.who(), human_duration(age)),
            format!(
                "{} acted ({}) {} after {} at {}{}; {} requires rotation every {}. Rotate the secret \
                 or key{} and remove the old one.",
                cx.who(),
                e.kind,
                human_duration(age),
                dated,
                rfc3339(since),
                note,
                source,
                human_duration(every),
                cx.entry
                    .and_then(|x| x.owner.as_deref())
                    .map(|o| format!(" (owner: {o})"))
                    .unwrap_or_default(),
            ),
        );
        hit.analysis = vec![Analysis::new(
            "credential_age_days",
            days(age),
            serde_json::Value::Null,
            days(every),
        )];
        hits.push(hit);
    }
}

impl Detector for StaleCredential {
    const ID: DetectorId = DetectorId::StaleCredential;
    type Config = StaleCredentialConfig;

    fn new(config: StaleCredentialConfig) -> Self {
        StaleCredential(config)
    }

    fn config(&self) -> &StaleCredentialConfig {
        &self.0
    }

    fn check(&self, cx: &Cx<'_>, hits: &mut Vec<Hit>) {
        if cx.event.outcome == Outcome::Failure {
            return;
        }
        // One hit per event at most: the token's case, else the credential's.
        let before = hits.len();
        match cx.event.kind {
            EventKind::TokenIssued => self.long_lived_grant(cx, hits),
            EventKind::DataAccess => self.old_token(cx, hits),
            _ => {}
        }
        if hits.len() == before && is_activity(cx.event) {
            self.old_credential(cx, hits);
        }
    }
}
