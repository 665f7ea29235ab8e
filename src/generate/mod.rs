//! Deterministic synthetic audit traffic from a realistic population, with labelled anomalies.
//!
//! The population mixes the integrations a hospital runs: 24/7 EHR interfaces (FHIR AuditEvents
//! per IHE BALP, one per patient of a search), 24/7 lab feeds, nightly billing batches, weekly bulk
//! exports, monthly jobs and business-hours SMART backend apps (gateway access logs), each getting
//! its tokens from Okta, Keycloak or Entra ID. Benign confounders are part of every scenario:
//! monthly and weekly jobs, export spikes, scope lists in varying order and v1/v2 syntax,
//! integrations onboarded (and registered) mid-period, batches that sometimes run an hour late,
//! several egress hosts per integration network, and the odd refused token request.
//!
//! Anomalies of every detector kind are injected on chosen identities and written as labels
//! (`labels.json`); the inventory goes to `registry.toml`. Same options and seed, same bytes.

mod render;

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::event::SourceFormat;

/// Generator options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of integrations in the population (at least 8, so every archetype is present).
    pub identities: usize,
    /// Length of the period in days.
    pub days: u32,
    /// Random seed.
    pub seed: u64,
    /// First instant of the period (a Monday 00:00 UTC by default).
    pub start: DateTime<Utc>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            identities: 40,
            days: 45,
            seed: 7,
            start: Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).single().expect("valid date"),
        }
    }
}

/// The Kafka topic a record belongs on in the demo (and the file it is written to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// `fhir-audit`
    FhirAudit,
    /// `gateway-access`
    Gateway,
    /// `idp-audit`
    Idp,
}

impl Stream {
    /// Topic name.
    pub fn topic(self) -> &'static str {
        match self {
            Stream::FhirAudit => "fhir-audit",
            Stream::Gateway => "gateway-access",
            Stream::Idp => "idp-audit",
        }
    }
}

/// One generated raw record.
#[derive(Debug, Clone)]
pub struct GenRecord {
    /// Event time.
    pub time: DateTime<Utc>,
    /// Topic.
    pub stream: Stream,
    /// Format of `line`.
    pub format: SourceFormat,
    /// The identity the record is about (the Kafka key in the demo).
    pub identity: String,
    /// The raw JSON line.
    pub line: String,
}

/// A labelled anomaly: `detector` should fire on `identity` between `start` and `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The identity as it appears in the data events.
    pub identity: String,
    /// Detector id.
    pub detector: String,
    /// Window start.
    pub start: DateTime<Utc>,
    /// Window end.
    pub end: DateTime<Utc>,
}

/// What `generate` made.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Records in event-time order.
    pub records: Vec<GenRecord>,
    /// Injected anomalies.
    pub labels: Vec<Label>,
    /// `registry.toml` contents.
    pub registry: String,
}

/// `records` normalized by `normalizer`, in order (tests and benchmarks feed the engine with
/// them).
pub fn normalize_all(
    records: &[GenRecord],
    normalizer: &crate::normalize::Normalizer,
) -> Result<Vec<crate::event::Event>, crate::normalize::ParseError> {
    let meta = crate::normalize::RecordMeta::default();
    let mut events = Vec::with_capacity(records.len());
    for r in records {
        normalizer.normalize_into(r.line.as_bytes(), &meta, &mut events)?;
    }
    Ok(events)
}

/// A generated scenario of `identities` over `days` (seed `seed`) as events normalized with a
/// test key, in generated order, and its registry: what the unit tests of the engine's state
/// run on.
#[cfg(test)]
pub(crate) fn test_events(
    identities: usize,
    days: u32,
    seed: u64,
) -> (Vec<crate::event::Event>, crate::registry::Registry) {
    use crate::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer};
    let scenario = generate(&Options {
        identities,
        days,
        seed,
        ..Default::default()
    });
    let normalizer = Normalizer::new(
        Pseudonymizer::new(b"a test key, not a secret").expect("key"),
        DEFAULT_MAX_RECORD_BYTES,
    );
    let events = normalize_all(&scenario.records, &normalizer).expect("generated records normalize");
    let registry =
        crate::registry::Registry::parse(&scenario.registry, std::path::Path::new("registry.toml")).expect("registry");
    (events, registry)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Archetype {
    Ehr,
    Lab,
    Billing,
    Export,
    Monthly,
    Smart,
}

impl Archetype {
    const CYCLE: [Archetype; 10] = [
        Archetype::Ehr,
        Archetype::Lab,
        Archetype::Smart,
        Archetype::Billing,
        Archetype::Smart,
        Archetype::Lab,
        Archetype::Export,
        Archetype::Smart,
        Archetype::Monthly,
        Archetype::Ehr,
    ];

    fn slug(self) -> &'static str {
        match self {
            Archetype::Ehr => "ehr-adt-interface",
            Archetype::Lab => "lab-results-feed",
            Archetype::Billing => "billing-batch",
            Archetype::Export => "bulk-export",
            Archetype::Monthly => "monthly-quality-report",
            Archetype::Smart => "smart-backend-app",
        }
    }

    fn purpose(self) -> &'static str {
        match self {
            Archetype::Ehr => "Synchronise encounters and observations with the EHR",
            Archetype::Lab => "Deliver lab results to the EHR",
            Archetype::Billing => "Nightly claims and coverage reconciliation",
            Archetype::Export => "Weekly bulk export to the analytics warehouse",
            Archetype::Monthly => "Monthly quality-measure report",
            Archetype::Smart => "Clinical decision support backend",
        }
    }

    /// Approved scopes in v2 syntax.
    fn scopes(self) -> &'static [&'static str] {
        match self {
            Archetype::Ehr => &["system/Patient.rs", "system/Observation.rs", "system/Encounter.rs"],
            Archetype::Lab => &[
                "system/Observation.cu",
                "system/DiagnosticReport.cu",
                "system/Patient.r",
            ],
            Archetype::Billing => &[
                "system/Claim.rs",
                "system/Coverage.rs",
                "system/ExplanationOfBenefit.rs",
                "system/Patient.r",
            ],
            Archetype::Export => &[
                "system/Patient.rs",
                "system/Observation.rs",
                "system/Encounter.rs",
                "system/Group.r",
            ],
            Archetype::Monthly => &["system/Observation.rs", "system/Patient.rs"],
            Archetype::Smart => &["system/Patient.rs", "system/Observation.rs"],
        }
    }

    /// Data events in the hour starting at `t`, or 0 when the integration does not run then.
    fn events_in_hour(self, t: DateTime<Utc>) -> u32 {
        let (hour, weekday) = (t.hour(), t.weekday());
        let weekday_business = !matches!(weekday, Weekday::Sat | Weekday::Sun) && (8..18).contains(&hour);
        match self {
            Archetype::Ehr => 4,
            Archetype::Lab => 3,
            Archetype::Billing if (1..3).contains(&hour) => 6,
            Archetype::Export if weekday == Weekday::Sun && hour == 2 => 2,
            Archetype::Monthly if t.day() == 1 && hour == 3 => 4,
            Archetype::Smart if weekday_business => 2,
            _ => 0,
        }
    }

    fn max_patients_per_hour(self) -> u32 {
        match self {
            Archetype::Billing => 600,
            Archetype::Export => 5000,
            Archetype::Monthly => 500,
            _ => 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idp {
    Okta,
    Keycloak,
    Entra,
}

/// One integration of the population.
#[derive(Debug, Clone)]
struct Identity {
    archetype: Archetype,
    idp: Idp,
    client_id: String,
    /// Entra's service-principal object id (sign-ins and audit logs use it).
    principal_id: Option<String>,
    key_id: String,
    name: String,
    network: [u8; 3],
    host: u8,
    user_agent: String,
    /// The FHIR base path the integration calls: servers differ (`/fhir`, `/fhir/R4`, Epic's
    /// `/api/FHIR/R4`, a tenant path, HAPI's `/baseR4`).
    base: String,
    /// Active from this instant (onboarded mid-period) ...
    from: DateTime<Utc>,
    /// ... and silent in these windows.
    silent: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    registered: bool,
    offboarded_at: Option<DateTime<Utc>>,
    owner: String,
}

impl Identity {
    fn home_ip(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.network[0], self.network[1], self.network[2], self.host
        )
    }

    fn is_active(&self, t: DateTime<Utc>) -> bool {
        t >= self.from && !self.silent.iter().any(|(a, b)| t >= *a && t < *b)
    }
}

/// Generates a scenario.
pub fn generate(opts: &Options) -> Scenario {
    let mut g = Gen::new(opts);
    g.population();
    let anomalies = g.plan_anomalies();
    for i in 0..g.ids.len() {
        g.baseline_traffic(i);
    }
    for anomaly in anomalies {
        g.inject(anomaly);
    }
    g.records.sort_by_key(|r| r.time);
    g.labels
        .sort_by(|a, b| (a.start, &a.detector).cmp(&(b.start, &b.detector)));
    let registry = g.registry();
    Scenario {
        records: g.records,
        labels: g.labels,
        registry,
    }
}

/// Writes a scenario to `dir`: one NDJSON file per format, `labels.json`, `registry.toml`.
pub fn write(scenario: &Scenario, dir: &Path) -> std::io::Result<Vec<(String, usize)>> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let files = [
        (SourceFormat::FhirAuditEvent, "fhir-audit.ndjson"),
        (SourceFormat::GatewayAccess, "gateway-access.ndjson"),
        (SourceFormat::Okta, "okta.ndjson"),
        (SourceFormat::Keycloak, "keycloak.ndjson"),
        (SourceFormat::EntraSignIn, "entra-signin.ndjson"),
        (SourceFormat::EntraAudit, "entra-audit.ndjson"),
    ];
    let mut counts = Vec::new();
    for (format, name) in files {
        let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name))?);
        let mut n = 0;
        for r in scenario.records.iter().filter(|r| r.format == format) {
            out.write_all(r.line.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
        }
        out.flush()?;
        counts.push((name.to_owned(), n));
    }
    let labels = serde_json::to_string_pretty(&scenario.labels).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("labels.json"), labels + "\n")?;
    std::fs::write(dir.join("registry.toml"), &scenario.registry)?;
    Ok(counts)
}

#[derive(Debug, Clone, Copy)]
enum Anomaly {
    Dormant(usize),
    ScopeDrift(usize),
    PhiVolume(usize),
    Unregistered(usize),
    Offboarded(usize),
    NewNetwork(usize),
    CredentialSharing(usize),
    AuthFailures(usize),
    BreakGlass(usize),
    CredentialAdded(usize),
    OffHours(usize),
}

/// Makes an anomaly of one kind for an identity.
type AnomalyFn = fn(usize) -> Anomaly;

struct Gen {
    opts: Options,
    rng: ChaCha8Rng,
    /// The real world's variety of shapes (base URLs, who records an audit event, people among
    /// the agents, redactions): drawn from a stream of its own, so that adding variety does not
    /// move the traffic and anomalies drawn from `rng`.
    vary: ChaCha8Rng,
    ids: Vec<Identity>,
    records: Vec<GenRecord>,
    labels: Vec<Label>,
    end: DateTime<Utc>,
}

/// Tenant of the generated Entra and Keycloak identities.
const TENANT: &str = "6c1f3e2a-1111-4c2b-9d0e-000000000001";
const REALM: &str = "hospital";

impl Gen {
    fn new(opts: &Options) -> Gen {
        let opts = Options {
            identities: opts.identities.max(8),
            days: opts.days.max(1),
            ..opts.clone()
        };
        let end = opts.start + Duration::days(i64::from(opts.days));
        Gen {
            rng: ChaCha8Rng::seed_from_u64(opts.seed),
            vary: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed_0f7a_71e7),
            opts,
            ids: Vec::new(),
            records: Vec::new(),
            labels: Vec::new(),
            end,
        }
    }

    fn day(&self, fraction: f64, hour: u32) -> DateTime<Utc> {
        let day = ((f64::from(self.opts.days) * fraction) as i64).clamp(0, i64::from(self.opts.days) - 1);
        self.opts.start + Duration::days(day) + Duration::hours(i64::from(hour))
    }

    fn uuid(&mut self) -> String {
        let b: [u8; 16] = self.rng.random();
        let h = hex::encode(b);
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    fn population(&mut self) {
        let n = self.opts.identities;
        let onboarded_late = (n / 10).max(1);
        for i in 0..n {
            let archetype = Archetype::CYCLE[i % Archetype::CYCLE.len()];
            let idp = [Idp::Okta, Idp::Keycloak, Idp::Entra][i % 3];
            let name = format!("{}-{}", archetype.slug(), i + 1);
            let client_id = match idp {
                Idp::Okta => format!("0oa{}", self.token(17)),
                Idp::Keycloak => name.clone(),
                Idp::Entra => self.uuid(),
            };
            let principal_id = (idp == Idp::Entra).then(|| self.uuid());
            let key_id = self.uuid();
            let late = i >= n - onboarded_late && archetype != Archetype::Ehr;
            let from = if late { self.day(0.5, 0) } else { self.opts.start };
            let ua = match archetype {
                Archetype::Ehr => "Mirth Connect/4.4.1",
                Archetype::Lab => "LabBridge/2.3 (HL7v2-FHIR)",
                Archetype::Billing => "ClaimSync/5.0 python-requests/2.31",
                Archetype::Export => "bulk-fhir-client/1.8",
                Archetype::Monthly => "QualityReporter/3.2 Java/17",
                Archetype::Smart => "cds-hooks-service/1.4 okhttp/4.12",
            };
            let base = match self.vary.random_range(0..6) {
                0 => "/fhir".to_owned(),
                1 => "/fhir/R4".to_owned(),
                2 => "/api/FHIR/R4".to_owned(),
                3 => format!("/r4/{TENANT}"),
                4 => "/baseR4".to_owned(),
                _ => "https://fhir.example.org/fhir/R4".to_owned(),
            };
            self.ids.push(Identity {
                archetype,
                idp,
                client_id,
                principal_id,
                key_id,
                name,
                network: [10, 20 + (i / 200) as u8, (i % 200) as u8],
                host: 10 + (i % 40) as u8,
                user_agent: ua.to_owned(),
                base,
                from,
                silent: Vec::new(),
                registered: true,
                offboarded_at: None,
                owner: format!(
                    "{}-team@example.org",
                    archetype.slug().split('-').next().unwrap_or("it")
                ),
            });
        }
    }

    /// An established identity of one of `archetypes` (and of `idp`, when given), preferring
    /// one no other anomaly uses yet, so that labels stay one anomaly per identity.
    fn victim(&self, archetypes: &[Archetype], idp: Option<Idp>, used: &mut [u32]) -> Option<usize> {
        let i = (0..self.ids.len())
            .filter(|&i| {
                let id = &self.ids[i];
                archetypes.contains(&id.archetype) && id.from == self.opts.start && idp.is_none_or(|p| id.idp == p)
            })
            .min_by_key(|&i| (used[i], i))?;
        used[i] += 1;
        Some(i)
    }

    /// Anomalies to inject: `max(1, identities / 200)` of each kind, on distinct identities
    /// where the population allows.
    fn plan_anomalies(&mut self) -> Vec<Anomaly> {
        let per_kind = (self.ids.len() / 200).max(1);
        let mut used = vec![0u32; self.ids.len()];
        let mut plan = Vec::new();
        for _ in 0..per_kind {
            let entra = [Archetype::Lab, Archetype::Smart, Archetype::Ehr];
            if let Some(i) = self.victim(&entra, Some(Idp::Entra), &mut used) {
                plan.push(Anomaly::CredentialAdded(i));
            }
            // A dormant wake-up needs a learned baseline (9 days), then over 30 silent days.
            if self.opts.days >= 44
                && let Some(i) = self.victim(&[Archetype::Smart], None, &mut used)
            {
                // Any other anomaly on it would break its silence: never reuse it.
                used[i] = u32::MAX / 2;
                plan.push(Anomaly::Dormant(i));
            }
            let kinds: [(Archetype, AnomalyFn); 8] = [
                (Archetype::Lab, Anomaly::ScopeDrift),
                (Archetype::Smart, Anomaly::PhiVolume),
                (Archetype::Billing, Anomaly::Offboarded),
                (Archetype::Ehr, Anomaly::NewNetwork),
                (Archetype::Lab, Anomaly::CredentialSharing),
                (Archetype::Smart, Anomaly::AuthFailures),
                (Archetype::Ehr, Anomaly::BreakGlass),
                (Archetype::Smart, Anomaly::OffHours),
            ];
            for (archetype, make) in kinds {
                if let Some(i) = self.victim(&[archetype], None, &mut used) {
                    plan.push(make(i));
                }
            }
            // An identity nobody registered, appearing mid-period.
            let i = self.ids.len();
            let template = (0..self.ids.len())
                .find(|&i| self.ids[i].archetype == Archetype::Smart)
                .unwrap_or(0);
            let mut stranger = self.ids[template].clone();
            stranger.client_id = format!("0oa{}", self.token(17));
            stranger.idp = Idp::Okta;
            stranger.principal_id = None;
            stranger.name = format!("unknown-analytics-client-{}", i + 1);
            stranger.registered = false;
            stranger.from = self.end; // no baseline traffic; only the injected hour
            stranger.network = [172, 16, (i % 250) as u8];
            self.ids.push(stranger);
            used.push(1);
            plan.push(Anomaly::Unregistered(i));
        }
        plan
    }

    fn baseline_traffic(&mut self, i: usize) {
        let mut hour = self.opts.start;
        while hour < self.end {
            let id = &self.ids[i];
            let mut n = id.archetype.events_in_hour(hour);
            // Benign noise real traffic has: a nightly batch that now and then runs late...
            if id.archetype == Archetype::Billing && hour.hour() == 3 && self.rng.random_bool(0.15) {
                n = 2;
            }
            if n > 0 && id.is_active(hour) {
                // ...several egress hosts in the integration's own /24...
                let mut ip = id.home_ip();
                if self.rng.random_bool(0.3) {
                    let o = id.network;
                    ip = format!("{}.{}.{}.{}", o[0], o[1], o[2], self.rng.random_range(50..60));
                }
                // ...and the odd refused token request (a clock skew, a retried expired secret).
                let ok = !self.rng.random_bool(0.004);
                let offset = Duration::seconds(self.rng.random_range(0..120));
                self.token_event(i, hour + offset, &ip, None, ok);
                if !ok {
                    self.token_event(i, hour + offset + Duration::seconds(5), &ip, None, true);
                }
                for _ in 0..n {
                    let offset = Duration::seconds(self.rng.random_range(120..3600));
                    self.data_event(i, hour + offset, &ip, DataKind::Normal);
                }
            }
            hour += Duration::hours(1);
        }
    }

    fn label(&mut self, i: usize, detector: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
        self.labels.push(Label {
            identity: self.ids[i].client_id.clone(),
            detector: detector.into(),
            start,
            end,
        });
    }

    fn inject(&mut self, anomaly: Anomaly) {
        match anomaly {
            Anomaly::Dormant(i) => {
                // Nine days of baseline (past the learning period), then 32 silent days.
                let silent_from = self.opts.start + Duration::days(9);
                let mut wake = silent_from + Duration::days(32) + Duration::hours(10);
                while matches!(wake.weekday(), Weekday::Sat | Weekday::Sun) {
                    wake += Duration::days(1);
                }
                self.ids[i].silent.push((silent_from, wake));
                // Remove the baseline traffic of the silent window, then wake up.
                let client = self.ids[i].client_id.clone();
                let principal = self.ids[i].principal_id.clone();
                self.records.retain(|r| {
                    !((r.identity == client || Some(&r.identity) == principal.as_ref())
                        && r.time >= silent_from
                        && r.time < wake)
                });
                let ip = self.ids[i].home_ip();
                self.token_event(i, wake, &ip, None, true);
                for m in 0..3 {
                    self.data_event(i, wake + Duration::minutes(5 + m * 7), &ip, DataKind::Normal);
                }
                self.label(i, "dormant_wakeup", wake, wake + Duration::hours(1));
            }
            Anomaly::ScopeDrift(i) => {
                let at = self.day(0.6, 14) + Duration::minutes(3);
                let ip = self.ids[i].home_ip();
                self.token_event(i, at, &ip, Some(&["system/*.cruds"]), true);
                self.data_event(i, at + Duration::minutes(4), &ip, DataKind::Delete);
                self.label(i, "scope_drift", at, at + Duration::hours(1));
            }
            Anomaly::PhiVolume(i) => {
                let at = self.weekday_at(0.7, 11);
                let ip = self.ids[i].home_ip();
                for m in 0..10 {
                    self.data_event(i, at + Duration::minutes(m * 5 + 1), &ip, DataKind::Bulk(400));
                }
                self.label(i, "phi_volume", at, at + Duration::hours(1));
            }
            Anomaly::Unregistered(i) => {
                let at = self.weekday_at(0.5, 9);
                let ip = self.ids[i].home_ip();
                self.token_event(i, at, &ip, None, true);
                for m in 0..6 {
                    self.data_event(i, at + Duration::minutes(m * 9 + 2), &ip, DataKind::Normal);
                }
                self.label(i, "unregistered_identity", at, at + Duration::hours(1));
            }
            Anomaly::Offboarded(i) => {
                let at = self.day(0.6, 0);
                self.ids[i].offboarded_at = Some(at);
                self.label(i, "access_after_offboarding", at, self.end);
            }
            Anomaly::NewNetwork(i) => {
                // A short run of calls from elsewhere: a new network, not interleaved use.
                let at = self.day(0.55, 15) + Duration::minutes(10);
                let ip = format!("203.0.113.{}", 10 + i % 200);
                for s in 0..3 {
                    self.data_event(i, at + Duration::seconds(s * 20), &ip, DataKind::Normal);
                }
                self.label(i, "new_network", at, at + Duration::hours(1));
            }
            Anomaly::CredentialSharing(i) => {
                // Interleaved use from the home network and another one: the second network is
                // also new, so both detectors are labelled.
                let at = self.day(0.65, 13);
                let home = self.ids[i].home_ip();
                let other = format!("198.51.100.{}", 10 + i % 200);
                for m in 0..8 {
                    let ip = if m % 2 == 0 { &home } else { &other };
                    self.data_event(i, at + Duration::minutes(m * 6 + 1), &ip.clone(), DataKind::Normal);
                }
                self.label(i, "credential_sharing", at, at + Duration::hours(1));
                self.label(i, "new_network", at, at + Duration::hours(1));
            }
            Anomaly::AuthFailures(i) => {
                let at = self.weekday_at(0.45, 10);
                let ip = self.ids[i].home_ip();
                for s in 0..40 {
                    self.token_event(i, at + Duration::seconds(s * 13), &ip, None, false);
                }
                self.label(i, "auth_failure_burst", at, at + Duration::minutes(10));
            }
            Anomaly::BreakGlass(i) => {
                let at = self.day(0.75, 4) + Duration::minutes(20);
                let ip = self.ids[i].home_ip();
                self.data_event(i, at, &ip, DataKind::BreakGlass);
                self.label(i, "break_glass", at, at + Duration::minutes(1));
            }
            Anomaly::CredentialAdded(i) => {
                let at = self.weekday_at(0.8, 14);
                let new_key = self.uuid();
                let line = render::entra_credential_added(self, i, at, &new_key);
                self.push(i, at, Stream::Idp, SourceFormat::EntraAudit, line);
                let old_key = std::mem::replace(&mut self.ids[i].key_id, new_key);
                let elsewhere = format!("192.0.2.{}", 10 + i % 200);
                self.token_event(i, at + Duration::minutes(30), &elsewhere, None, true);
                self.ids[i].key_id = old_key;
                self.label(i, "credential_added", at, at + Duration::hours(1));
            }
            Anomaly::OffHours(i) => {
                let mut at = self.day(0.85, 3);
                while at.weekday() != Weekday::Sun {
                    at -= Duration::days(1);
                }
                let at = at + Duration::minutes(7);
                let ip = self.ids[i].home_ip();
                self.token_event(i, at, &ip, None, true);
                for m in 0..3 {
                    self.data_event(i, at + Duration::minutes(3 + m * 11), &ip, DataKind::Normal);
                }
                self.label(i, "off_hours", at, at + Duration::hours(1));
            }
        }
    }

    /// The first weekday at or after `fraction` of the period, at `hour`.
    fn weekday_at(&self, fraction: f64, hour: u32) -> DateTime<Utc> {
        let mut at = self.day(fraction, hour);
        while matches!(at.weekday(), Weekday::Sat | Weekday::Sun) {
            at += Duration::days(1);
        }
        at
    }

    fn push(&mut self, i: usize, time: DateTime<Utc>, stream: Stream, format: SourceFormat, line: String) {
        let identity = match format {
            SourceFormat::EntraSignIn | SourceFormat::EntraAudit => self.ids[i].principal_id.clone(),
            _ => None,
        }
        .unwrap_or_else(|| self.ids[i].client_id.clone());
        self.records.push(GenRecord {
            time,
            stream,
            format,
            identity,
            line,
        });
    }

    /// A token grant (or failure) at the identity's IdP, with its approved scopes in a random
    /// order and, now and then, in v1 syntax (benign: same meaning).
    fn token_event(&mut self, i: usize, at: DateTime<Utc>, ip: &str, extra: Option<&[&str]>, ok: bool) {
        let mut scopes: Vec<String> = self.ids[i].archetype.scopes().iter().map(|s| (*s).to_owned()).collect();
        if self.rng.random_bool(0.2) {
            for s in &mut scopes {
                if let Some(base) = s.strip_suffix(".rs") {
                    *s = format!("{base}.read");
                }
            }
        }
        scopes.extend(extra.unwrap_or_default().iter().map(|s| (*s).to_owned()));
        scopes.shuffle(&mut self.rng);
        let scope = scopes.join(" ");
        let (format, line) = match self.ids[i].idp {
            Idp::Okta => (SourceFormat::Okta, render::okta_token(self, i, at, ip, &scope, ok)),
            Idp::Keycloak => (
                SourceFormat::Keycloak,
                render::keycloak_token(self, i, at, ip, &scope, ok),
            ),
            Idp::Entra => (SourceFormat::EntraSignIn, render::entra_signin(self, i, at, ip, ok)),
        };
        self.push(i, at, Stream::Idp, format, line);
    }

    fn data_event(&mut self, i: usize, at: DateTime<Utc>, ip: &str, kind: DataKind) {
        if self.ids[i].archetype == Archetype::Ehr {
            for line in render::balp_events(self, i, at, ip, kind) {
                self.push(i, at, Stream::FhirAudit, SourceFormat::FhirAuditEvent, line);
            }
        } else {
            let line = render::gateway_line(self, i, at, ip, kind);
            self.push(i, at, Stream::Gateway, SourceFormat::GatewayAccess, line);
        }
    }

    fn registry(&self) -> String {
        let mut out = String::from(
            "# Identity registry generated by `nhiwatch generate`: the inventory of known integrations.\n\
             # Format: see README.md (Identity registry).\n",
        );
        for id in self.ids.iter().filter(|id| id.registered) {
            let _ = writeln!(out, "\n[[integration]]");
            let _ = writeln!(out, "id = {:?}", id.client_id);
            if let Some(p) = &id.principal_id {
                let _ = writeln!(out, "aliases = [{p:?}]");
            }
            let _ = writeln!(out, "name = {:?}", id.name);
            let _ = writeln!(out, "owner = {:?}", id.owner);
            let _ = writeln!(out, "purpose = {:?}", id.archetype.purpose());
            let scopes: Vec<String> = id.archetype.scopes().iter().map(|s| format!("{s:?}")).collect();
            let _ = writeln!(out, "approved_scopes = [{}]", scopes.join(", "));
            let _ = writeln!(
                out,
                "approved_networks = [\"{}.{}.{}.0/24\"]",
                id.network[0], id.network[1], id.network[2]
            );
            let _ = writeln!(out, "max_patients_per_hour = {}", id.archetype.max_patients_per_hour());
            if id.from > self.opts.start {
                let _ = writeln!(
                    out,
                    "onboarded_at = {}",
                    id.from.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
            if let Some(at) = id.offboarded_at {
                let _ = writeln!(
                    out,
                    "offboarded_at = {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
            }
        }
        out
    }
}

/// What a data event does.
#[derive(Debug, Clone, Copy)]
enum DataKind {
    Normal,
    Delete,
    Bulk(u32),
    BreakGlass,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_output_and_every_detector_labelled() {
        let opts = Options {
            identities: 12,
            days: 45,
            ..Options::default()
        };
        let a = generate(&opts);
        let b = generate(&opts);
        assert_eq!(a.records.len(), b.records.len());
        assert!(a.records.iter().zip(&b.records).all(|(x, y)| x.line == y.line));
        assert_eq!(a.labels, b.labels);
        let mut detectors: Vec<&str> = a.labels.iter().map(|l| l.detector.as_str()).collect();
        detectors.sort_unstable();
        detectors.dedup();
        assert_eq!(
            detectors,
            [
                "access_after_offboarding",
                "auth_failure_burst",
                "break_glass",
                "credential_added",
                "credential_sharing",
                "dormant_wakeup",
                "new_network",
                "off_hours",
                "phi_volume",
                "scope_drift",
                "unregistered_identity",
            ]
        );
        assert!(a.records.windows(2).all(|w| w[0].time <= w[1].time), "event-time order");
        let other = generate(&Options { seed: 8, ..opts });
        assert_ne!(other.records[0].line, a.records[0].line);
    }
}
