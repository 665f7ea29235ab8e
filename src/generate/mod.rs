//! Deterministic synthetic audit traffic from a realistic population, with labelled anomalies.
//!
//! The population mixes the integrations a hospital runs: 24/7 EHR interfaces (FHIR AuditEvents
//! per IHE BALP, one per patient of a search), 24/7 lab feeds, nightly billing batches, weekly bulk
//! exports, monthly jobs and business-hours SMART backend apps (gateway access logs), each getting
//! its tokens from Okta, Keycloak, Entra ID or, for a few, Google Cloud IAM (service accounts
//! whose tokens are minted by `GenerateAccessToken`). Benign confounders are part of every
//! scenario: monthly and weekly jobs, export spikes, scope lists in varying order and v1/v2 syntax,
//! integrations onboarded (and registered) mid-period with their permissions granted then,
//! batches that sometimes run an hour late, several egress hosts per integration network, the odd
//! refused token request, people signing in (and failing to, now and then in bursts) to the same
//! IdPs and apps, records delivered twice, and addresses redacted as vendors redact them.
//!
//! Records are in the vendors' real shapes, in the variety SOCs receive (the table in
//! `render.rs`): Entra ID as diagnostic-settings records or Log Analytics table rows (dynamic
//! columns as JSON or as strings holding JSON), per integration.
//!
//! PHI volume has the shape real volume has (issue 20): lab feeds and backend apps carry, besides
//! their single-patient calls, one line an hour with the hour's bulk of patients (a transaction
//! Bundle of results, a population search), following the hour of the day (a lab feed's
//! afternoon peak and night ebb, an app's late morning), quieter weekends, growth (one in four
//! grows 1.5×, one in four 2.5× in 60 days), noise, and for some a weekly job (lab feeds on Sunday
//! nights, apps on Tuesday mornings) or a monthly one (lab feeds, on a day of the period's first
//! week). Two `phi_volume` anomalies are unusual for the hour only: four times a lab feed's night
//! level for four hours, and ten, eight and six times an app's usual level for three.
//!
//! Anomalies of every detector kind are injected on chosen identities and written as labels
//! (`labels.json`); the inventory goes to `registry.toml`. Same options and seed, same bytes.
//!
//! Random streams: `rng` draws the traffic and the anomalies as they were before the variety of
//! shapes was added; the shapes, the people, the repeats and the PHI volume each draw from a
//! stream of their own, so adding one kind of variety moves nothing else (but which records are
//! delivered twice: that stream draws once per record).

mod render;

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc, Weekday};
use rand::seq::{IndexedRandom, SliceRandom};
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
    /// The identity the record is about, as the normalizer names it (the Kafka key in the demo):
    /// an integration's client id (Entra's app id, a GCP service account's e-mail) or a person.
    pub identity: String,
    /// The raw JSON line.
    pub line: String,
    /// Part of an injected anomaly (never repeated, so a label keeps its meaning).
    injected: bool,
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
/// run on. The generator's own repeats (a record delivered twice) are left out: these tests
/// deliver repeats themselves and count them.
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
    let mut records = scenario.records;
    records.dedup_by(|later, earlier| later.line == earlier.line);
    let events = normalize_all(&records, &normalizer).expect("generated records normalize");
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
            // Above their weekly jobs, grown.
            Archetype::Lab => 20_000,
            Archetype::Smart => 3000,
            Archetype::Ehr => 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idp {
    Okta,
    Keycloak,
    Entra,
    /// Google Cloud IAM: the integration is a service account; a workload impersonates it
    /// (`GenerateAccessToken`) for its tokens.
    Gcp,
}

/// One integration of the population.
#[derive(Debug, Clone)]
struct Identity {
    archetype: Archetype,
    idp: Idp,
    client_id: String,
    /// Entra's service-principal object id (sign-ins and audit logs use it).
    principal_id: Option<String>,
    /// Entra: its records come as Log Analytics / Sentinel table rows (`AADServicePrincipalSignInLogs`,
    /// `AuditLogs`) rather than as diagnostic-settings records.
    table: bool,
    /// GCP: the service account's unique numeric id (resource names carry it instead of the
    /// e-mail).
    unique_id: String,
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
    /// Lab feeds and backend apps: the shape of their PHI volume.
    shape: Option<Shape>,
    /// Injected runs of PHI volume: first hour and, per hour, times the usual level.
    runs: Vec<(DateTime<Utc>, &'static [f64])>,
}

/// The PHI volume of a lab feed or a backend app besides its single-patient calls: patients per
/// hour in one line an hour (a lab feed's transaction Bundle of results, a backend's population
/// search), shaped by the hour of the day and of the week, growing, noisy, with the odd weekly or
/// monthly job.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    /// Patients per hour at its busiest weekday hour, at the start of the period.
    base: f64,
    /// Lab feeds (24/7): the night level, as a share of `base`.
    night: f64,
    /// Lab feeds: the daytime part on Saturdays and Sundays, as a share of a weekday's.
    weekend: f64,
    /// Growth over 60 days (1: none).
    growth: f64,
    /// Hour-to-hour noise: the standard deviation of the log.
    noise: f64,
    /// A weekly job: weekday, hour, and patients as a multiple of `base` (grown).
    weekly: Option<(Weekday, u32, f64)>,
    /// A monthly job: day of the month, hour, and patients as a multiple of `base` (grown).
    monthly: Option<(u32, u32, f64)>,
}

impl Shape {
    /// Patients in the hour starting at `t`, `days` into the period, before noise and jobs.
    fn level(&self, archetype: Archetype, t: DateTime<Utc>, days: f64) -> f64 {
        let hour = t.hour();
        let day_shape = match archetype {
            Archetype::Lab => {
                // Results peak early in the afternoon and ebb to the night level.
                let daytime = if (7..20).contains(&hour) {
                    (std::f64::consts::PI * (f64::from(hour) - 6.0) / 14.0).sin()
                } else {
                    0.0
                };
                let weekend = if matches!(t.weekday(), Weekday::Sat | Weekday::Sun) {
                    self.weekend
                } else {
                    1.0
                };
                self.night + (1.0 - self.night) * daytime * weekend
            }
            _ => match hour {
                8 => 0.5,
                9 => 0.8,
                10..=14 => 1.0,
                15 => 0.9,
                16 => 0.8,
                17 => 0.6,
                _ => 0.0,
            },
        };
        self.base * day_shape * self.growth.powf(days / 60.0)
    }

    /// Patients of its job in the hour starting at `t`, if one runs then.
    fn job(&self, t: DateTime<Utc>, days: f64) -> Option<f64> {
        let grown = self.base * self.growth.powf(days / 60.0);
        let weekly = self
            .weekly
            .filter(|&(day, hour, _)| t.weekday() == day && t.hour() == hour)
            .map(|(_, _, times)| times);
        let monthly = self
            .monthly
            .filter(|&(dom, hour, _)| t.day() == dom && t.hour() == hour)
            .map(|(_, _, times)| times);
        weekly.or(monthly).map(|times| times * grown)
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

impl Identity {
    fn home_ip(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.network[0], self.network[1], self.network[2], self.host
        )
    }

    /// What an Entra record names the integration by: its app id, service-principal object id
    /// and display name, and whether its records are Log Analytics rows.
    fn entra(&self) -> (String, String, String, bool) {
        (
            self.client_id.clone(),
            self.principal_id.clone().unwrap_or_default(),
            self.name.clone(),
            self.table,
        )
    }

    fn is_active(&self, t: DateTime<Utc>) -> bool {
        t >= self.from && !self.silent.iter().any(|(a, b)| t >= *a && t < *b)
    }
}

/// A random GUID in its 8-4-4-4-12 form, drawn from `rng`.
fn uuid_of(rng: &mut ChaCha8Rng) -> String {
    let b: [u8; 16] = rng.random();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Generates a scenario.
pub fn generate(opts: &Options) -> Scenario {
    generated(opts).0
}

/// A scenario and the population it was made from.
fn generated(opts: &Options) -> (Scenario, Vec<Identity>) {
    let mut g = Gen::new(opts);
    g.population();
    let anomalies = g.plan_anomalies();
    for i in 0..g.ids.len() {
        g.baseline_traffic(i);
    }
    let victims: Vec<usize> = anomalies.iter().map(|a| a.identity()).collect();
    g.injecting = true;
    for anomaly in anomalies {
        g.inject(anomaly);
    }
    g.injecting = false;
    g.onboarding_grants();
    g.staff();
    g.sign_ins(&victims);
    g.records.sort_by_key(|r| r.time);
    g.repeat_some();
    g.labels
        .sort_by(|a, b| (a.start, &a.detector).cmp(&(b.start, &b.detector)));
    let registry = g.registry();
    let scenario = Scenario {
        records: g.records,
        labels: g.labels,
        registry,
    };
    (scenario, g.ids)
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
        (SourceFormat::GcpAudit, "gcp-audit.ndjson"),
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
    PermissionGranted(usize),
    KeyCreated(usize),
    /// Four times its night-time level for four hours (issue 20, a).
    PhiNight(usize),
    /// Ten, eight and six times its usual level for three hours (issue 20, d).
    PhiRun(usize),
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
    /// The vendors' shapes added since: Entra table rows and string columns, GCP service
    /// accounts, redacted addresses, grants at onboarding.
    shape: ChaCha8Rng,
    /// People and their sign-ins.
    people_rng: ChaCha8Rng,
    /// Records delivered twice.
    repeat: ChaCha8Rng,
    /// The shaped PHI volume of lab feeds and backend apps (issue 20).
    volume: ChaCha8Rng,
    ids: Vec<Identity>,
    people: Vec<Person>,
    records: Vec<GenRecord>,
    labels: Vec<Label>,
    end: DateTime<Utc>,
    /// Records pushed now are part of an injected anomaly.
    injecting: bool,
}

/// Tenant of the generated Entra and Keycloak identities.
const TENANT: &str = "6c1f3e2a-1111-4c2b-9d0e-000000000001";
/// The Log Analytics workspace Entra's table rows were exported from (their `TenantId`).
const WORKSPACE: &str = "b3a8e1d4-2222-4c2b-9d0e-000000000002";
const REALM: &str = "hospital";
/// The Google Cloud project of the GCP integrations' service accounts.
const GCP_PROJECT: &str = "hospital-integrations";

/// A member of staff: people sign in to the same IdPs as the integrations, to web apps and now
/// and then to an integration's app; they are never a non-human identity.
#[derive(Debug, Clone)]
struct Person {
    display: String,
    /// Entra and Okta sign-in name, `first.last@example.org`.
    upn: String,
    /// Keycloak username.
    username: String,
    entra_id: String,
    okta_id: String,
    keycloak_id: String,
    /// The workstation's address (the hospital LAN) or, working from home, a public one.
    ip: String,
    user_agent: &'static str,
}

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
            shape: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5a4e_0f5e_a1d0),
            people_rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x9e09_1e51_57a4),
            repeat: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x2e9e_a70d_d1e5),
            volume: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x7011_0e5e_a5a1),
            opts,
            ids: Vec::new(),
            people: Vec::new(),
            records: Vec::new(),
            labels: Vec::new(),
            end,
            injecting: false,
        }
    }

    fn day(&self, fraction: f64, hour: u32) -> DateTime<Utc> {
        let day = ((f64::from(self.opts.days) * fraction) as i64).clamp(0, i64::from(self.opts.days) - 1);
        self.opts.start + Duration::days(day) + Duration::hours(i64::from(hour))
    }

    fn uuid(&mut self) -> String {
        uuid_of(&mut self.rng)
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
            let mut idp = [Idp::Okta, Idp::Keycloak, Idp::Entra][i % 3];
            let name = format!("{}-{}", archetype.slug(), i + 1);
            let mut client_id = match idp {
                Idp::Okta | Idp::Gcp => format!("0oa{}", self.token(17)),
                Idp::Keycloak => name.clone(),
                Idp::Entra => self.uuid(),
            };
            let principal_id = (idp == Idp::Entra).then(|| self.uuid());
            // One Okta integration in eight is a GCP service account instead (its Okta client id
            // is still drawn, so the main stream is as it was).
            if i % 24 == 21 {
                idp = Idp::Gcp;
                client_id = format!("{name}@{GCP_PROJECT}.iam.gserviceaccount.com");
            }
            let table = idp == Idp::Entra && self.shape.random_bool(0.5);
            let unique_id = format!("1{:020}", self.shape.random::<u64>());
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
                table,
                unique_id,
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
                shape: None,
                runs: Vec::new(),
            });
            let shape = self.shape(archetype, late);
            if let Some(id) = self.ids.last_mut() {
                id.shape = shape;
            }
        }
    }

    /// The volume shape of a lab feed or a backend app, drawn from the volume stream. A monthly
    /// job runs on a day of the period's first week (not its first day), so that its first run is
    /// learned, as a deployment learns it before judging.
    fn shape(&mut self, archetype: Archetype, late: bool) -> Option<Shape> {
        let v = &mut self.volume;
        let growth = [1.0, 1.0, 1.5, 2.5][v.random_range(0..4)];
        match archetype {
            Archetype::Lab => {
                let base = v.random_range(60.0..250.0);
                let night = v.random_range(0.1..0.3);
                let weekend = v.random_range(0.3..0.8);
                let noise = v.random_range(0.1..0.3);
                let weekly = v
                    .random_bool(1.0 / 3.0)
                    .then(|| (Weekday::Sun, 3, v.random_range(6.0..12.0)));
                let first = self.opts.start.day() - 1;
                let monthly = (v.random_bool(0.25) && !late).then(|| {
                    let dom = (first + v.random_range(1..7)) % 28 + 1;
                    (dom, 4, v.random_range(4.0..8.0))
                });
                Some(Shape {
                    base,
                    night,
                    weekend,
                    growth,
                    noise,
                    weekly,
                    monthly,
                })
            }
            Archetype::Smart => {
                let base = v.random_range(15.0..60.0);
                let noise = v.random_range(0.1..0.3);
                let weekly = v.random_bool(0.25).then(|| (Weekday::Tue, 9, v.random_range(4.0..8.0)));
                Some(Shape {
                    base,
                    night: 0.0,
                    weekend: 1.0,
                    growth,
                    noise,
                    weekly,
                    monthly: None,
                })
            }
            _ => None,
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
            stranger.table = false;
            stranger.name = format!("unknown-analytics-client-{}", i + 1);
            stranger.registered = false;
            stranger.from = self.end; // no baseline traffic; only the injected hour
            stranger.network = [172, 16, (i % 250) as u8];
            self.ids.push(stranger);
            used.push(1);
            plan.push(Anomaly::Unregistered(i));
        }
        // Kinds added since, planned after the others so that those keep their identities: a
        // high-privilege or unapproved permission granted (at Entra, Okta or GCP in turn, where
        // the population has one), and a key created for a GCP service account.
        let keyed: Vec<usize> = plan
            .iter()
            .filter_map(|a| match a {
                Anomaly::CredentialAdded(i) => Some(*i),
                _ => None,
            })
            .collect();
        for k in 0..per_kind {
            // No credential is added to it (that would make the finding critical, still one
            // `permission_granted` finding, but not the case labelled here).
            let rotation = [Idp::Entra, Idp::Okta, Idp::Gcp];
            let picked = (0..self.ids.len())
                .filter(|&i| {
                    let id = &self.ids[i];
                    id.registered && id.from == self.opts.start && id.idp != Idp::Keycloak && !keyed.contains(&i)
                })
                .min_by_key(|&i| {
                    let turn = rotation.iter().position(|p| *p == self.ids[i].idp).unwrap_or(0);
                    (
                        used[i],
                        (turn + rotation.len() - k % rotation.len()) % rotation.len(),
                        i,
                    )
                });
            if let Some(i) = picked {
                used[i] += 1;
                plan.push(Anomaly::PermissionGranted(i));
            }
        }
        if let Some(i) = (0..self.ids.len())
            .find(|&i| used[i] == 0 && self.ids[i].idp == Idp::Gcp && self.ids[i].from == self.opts.start)
        {
            used[i] += 1;
            plan.push(Anomaly::KeyCreated(i));
        }
        // Issue 20: volume unusual for the hour but not for the identity, on identities with three
        // weeks of history behind them. Their shape is set here, so that the run's multiple of the
        // usual level is known: (a) a lab feed at 150 patients an hour at its busiest, 30 at night
        // (plus its three single results an hour), four times that for four night hours, below
        // its daytime hours and under the 200 of a single hour; (b) a backend app at 40 an hour
        // (plus two single reads), 10, 8 and 6 times that for three late-morning hours.
        if self.opts.days >= 28 {
            for _ in 0..per_kind {
                if let Some(i) = self.victim(&[Archetype::Lab], None, &mut used) {
                    let start = self.weekday_at(0.62, 1);
                    self.ids[i].shape = Some(Shape {
                        base: 150.0,
                        night: 0.2,
                        weekend: 0.6,
                        growth: 1.0,
                        noise: 0.15,
                        weekly: None,
                        monthly: None,
                    });
                    self.ids[i].runs.push((start, &[4.0; 4]));
                    plan.push(Anomaly::PhiNight(i));
                }
                if let Some(i) = self.victim(&[Archetype::Smart], None, &mut used) {
                    let start = self.weekday_at(0.38, 11);
                    self.ids[i].shape = Some(Shape {
                        base: 40.0,
                        night: 0.0,
                        weekend: 1.0,
                        growth: 1.0,
                        noise: 0.15,
                        weekly: None,
                        monthly: None,
                    });
                    self.ids[i].runs.push((start, &[10.0, 8.0, 6.0]));
                    plan.push(Anomaly::PhiRun(i));
                }
            }
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
                self.shaped_volume(i, hour, n, &ip);
            }
            hour += Duration::hours(1);
        }
    }

    /// The shaped volume line of the hour starting at `hour` (`singles` single-patient calls
    /// besides it), and its job when one runs; in an injected run, the line makes the hour's
    /// patients the run's multiple of the usual level (line and single calls, before noise).
    fn shaped_volume(&mut self, i: usize, hour: DateTime<Utc>, singles: u32, ip: &str) {
        let Some(shape) = self.ids[i].shape else { return };
        let archetype = self.ids[i].archetype;
        let days = (hour - self.opts.start).num_seconds() as f64 / 86_400.0;
        let level = shape.level(archetype, hour, days);
        let noise = (shape.noise * normal(&mut self.volume)).exp();
        let offset = Duration::seconds(self.volume.random_range(120..3300));
        let run = self.ids[i].runs.iter().find_map(|&(start, times)| {
            let k = (hour - start).num_hours();
            usize::try_from(k).ok().and_then(|k| times.get(k).copied())
        });
        let patients = match run {
            Some(times) => (times * (level + f64::from(singles))).round() as u64 - u64::from(singles),
            None => (level * noise).round() as u64,
        };
        if patients > 0 {
            self.injecting = run.is_some();
            let line = render::gateway_volume(self, i, hour + offset, ip, patients);
            self.push(i, hour + offset, Stream::Gateway, SourceFormat::GatewayAccess, line);
            self.injecting = false;
        }
        if let Some(job) = shape.job(hour, days) {
            let noise = (shape.noise * normal(&mut self.volume)).exp();
            let at = hour + Duration::seconds(self.volume.random_range(60..600));
            let line = render::gateway_volume(self, i, at, ip, (job * noise).round() as u64);
            self.push(i, at, Stream::Gateway, SourceFormat::GatewayAccess, line);
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
                self.records
                    .retain(|r| !(r.identity == client && r.time >= silent_from && r.time < wake));
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
            Anomaly::PermissionGranted(i) => {
                // Illicit consent (MITRE ATT&CK T1528) or an added cloud role (T1098.003): a
                // permission no integration needs, granted by an admin account.
                // The k-th such anomaly: each on a day of its own.
                let k = self
                    .labels
                    .iter()
                    .filter(|l| l.detector == "permission_granted")
                    .count();
                let at = self.weekday_at(0.6 + 0.05 * (k % 6) as f64, 15) + Duration::minutes(12);
                let (format, line) = match self.ids[i].idp {
                    Idp::Entra => {
                        let role =
                            ["Application.ReadWrite.All", "Directory.ReadWrite.All"][self.shape.random_range(0..2)];
                        (
                            SourceFormat::EntraAudit,
                            render::entra_app_role_granted(self, i, at, &render::GRAPH, role),
                        )
                    }
                    Idp::Okta | Idp::Keycloak => (
                        SourceFormat::Okta,
                        render::okta_consent_granted(self, i, at, &["system/*.rs"]),
                    ),
                    Idp::Gcp => (
                        SourceFormat::GcpAudit,
                        render::gcp_role_granted(self, i, at, "roles/iam.serviceAccountTokenCreator"),
                    ),
                };
                self.push(i, at, Stream::Idp, format, line);
                self.label(i, "permission_granted", at, at + Duration::hours(1));
            }
            Anomaly::PhiNight(i) | Anomaly::PhiRun(i) => {
                // The traffic of the run's hours was made with the rest ([`Gen::shaped_volume`]).
                for (start, times) in self.ids[i].runs.clone() {
                    self.label(i, "phi_volume", start, start + Duration::hours(times.len() as i64));
                }
            }
            Anomaly::KeyCreated(i) => {
                // A key created for a GCP service account, then the account used from elsewhere
                // (with the key, no impersonation is needed: the call comes straight to the API).
                let at = self.weekday_at(0.78, 11) + Duration::minutes(4);
                let key: [u8; 20] = self.rng.random();
                let line = render::gcp_key_created(self, i, at, &hex::encode(key));
                self.push(i, at, Stream::Idp, SourceFormat::GcpAudit, line);
                let elsewhere = format!("192.0.2.{}", 10 + i % 200);
                self.data_event(i, at + Duration::minutes(30), &elsewhere, DataKind::Normal);
                self.label(i, "credential_added", at, at + Duration::hours(1));
            }
        }
    }

    /// The permissions of the integrations onboarded mid-period, granted the day before they
    /// start, by an admin: what the registry approves for them (benign; the admin consent of an
    /// Entra app lists no delegated scope, its app roles follow one by one). Keycloak records
    /// no grant for a client-credentials client.
    fn onboarding_grants(&mut self) {
        for i in 0..self.ids.len() {
            let id = &self.ids[i];
            if !id.registered || id.from <= self.opts.start {
                continue;
            }
            let at = id.from - Duration::hours(14) + Duration::minutes(self.shape.random_range(0..50));
            let approved = id.archetype.scopes();
            match id.idp {
                Idp::Entra => {
                    let line = render::entra_admin_consent(self, i, at);
                    self.push(i, at, Stream::Idp, SourceFormat::EntraAudit, line);
                    for (n, role) in approved.iter().enumerate() {
                        let t = at + Duration::seconds(2 + n as i64);
                        let line = render::entra_app_role_granted(self, i, t, &render::FHIR_API, role);
                        self.push(i, t, Stream::Idp, SourceFormat::EntraAudit, line);
                    }
                }
                Idp::Okta => {
                    let line = render::okta_consent_granted(self, i, at, approved);
                    self.push(i, at, Stream::Idp, SourceFormat::Okta, line);
                }
                Idp::Gcp => {
                    let line = render::gcp_role_granted(self, i, at, "roles/healthcare.fhirResourceReader");
                    self.push(i, at, Stream::Idp, SourceFormat::GcpAudit, line);
                }
                Idp::Keycloak => {}
            }
        }
    }

    /// The staff who sign in to the IdPs.
    fn staff(&mut self) {
        const FIRST: [&str; 16] = [
            "Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kemal", "Lena", "Marta",
            "Noah", "Olga", "Pavel",
        ];
        const LAST: [&str; 12] = [
            "Alves", "Brandt", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Horvat", "Ito", "Jensen", "Kowalski",
            "Larsen",
        ];
        const AGENTS: [&str; 3] = [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
        ];
        let r = &mut self.people_rng;
        for n in 0..40 {
            // 48 distinct pairs (16 × 12 / 4) before one repeats.
            let (first, last) = (FIRST[n % FIRST.len()], LAST[n % LAST.len()]);
            let okta: String = (0..17)
                .map(|_| b"abcdefghijklmnopqrstuvwxyz0123456789"[r.random_range(0..36)] as char)
                .collect();
            let ip = if r.random_bool(0.8) {
                format!("10.80.{}.{}", r.random_range(0..16), r.random_range(10..250))
            } else {
                format!("198.51.100.{}", r.random_range(100..250))
            };
            self.people.push(Person {
                display: format!("{first} {last}"),
                upn: format!("{}.{}@example.org", first.to_lowercase(), last.to_lowercase()),
                username: format!("{}{}", first[..1].to_lowercase(), last.to_lowercase()),
                entra_id: uuid_of(r),
                okta_id: format!("00u{okta}"),
                keycloak_id: uuid_of(r),
                ip,
                user_agent: AGENTS[r.random_range(0..AGENTS.len())],
            });
        }
    }

    /// People's sign-ins: a handful per IdP in every weekday business hour, one in twelve
    /// failed, to web apps and now and then to an integration's app; and, `max(1, identities /
    /// 200)` times per IdP, a person's burst of 15 failed sign-ins (a forgotten password) to an
    /// integration's app. A person's failures are never the app's: the burst is a confounder for
    /// `auth_failure_burst`. The integrations people use carry no anomaly (`victims`), so any
    /// finding on them is a false one.
    fn sign_ins(&mut self, victims: &[usize]) {
        if self.people.is_empty() {
            return;
        }
        // The SMART apps people open are also the integrations' backend clients; without one
        // (a small population), an EHR or lab interface's client stands in.
        let apps = |idp: Idp| -> Vec<usize> {
            let of = |archetypes: &[Archetype]| -> Vec<usize> {
                (0..self.ids.len())
                    .filter(|&i| {
                        let id = &self.ids[i];
                        id.idp == idp
                            && archetypes.contains(&id.archetype)
                            && id.registered
                            && id.from == self.opts.start
                            && !victims.contains(&i)
                    })
                    .collect()
            };
            let smart = of(&[Archetype::Smart]);
            if smart.is_empty() {
                of(&[Archetype::Ehr, Archetype::Lab])
            } else {
                smart
            }
        };
        let apps = [
            (Idp::Entra, apps(Idp::Entra)),
            (Idp::Okta, apps(Idp::Okta)),
            (Idp::Keycloak, apps(Idp::Keycloak)),
        ];
        let mut hour = self.opts.start;
        while hour < self.end {
            let business = !matches!(hour.weekday(), Weekday::Sat | Weekday::Sun) && (8..18).contains(&hour.hour());
            if business {
                for (idp, apps) in &apps {
                    for _ in 0..self.people_rng.random_range(2..=5) {
                        let p = self.people_rng.random_range(0..self.people.len());
                        let at = hour + Duration::seconds(self.people_rng.random_range(0..3600));
                        let ok = !self.people_rng.random_bool(1.0 / 12.0);
                        let app = (self.people_rng.random_bool(0.2))
                            .then(|| apps.choose(&mut self.people_rng).copied())
                            .flatten();
                        self.sign_in(*idp, p, at, ok, app);
                    }
                }
            }
            hour += Duration::hours(1);
        }
        let bursts = (self.ids.len() / 200).max(1);
        for k in 0..bursts {
            for (idp, apps) in &apps {
                // Okta's `user.session.start` is a sign-in to Okta itself: no app.
                let app = match idp {
                    Idp::Okta => None,
                    _ => apps.choose(&mut self.people_rng).copied(),
                };
                let fraction = self.people_rng.random_range(0.15..0.95);
                let at = self.weekday_at(fraction, 8 + (k % 9) as u32)
                    + Duration::minutes(self.people_rng.random_range(0..50));
                let p = self.people_rng.random_range(0..self.people.len());
                for s in 0..15 {
                    self.sign_in(*idp, p, at + Duration::seconds(s * 20), false, app);
                }
                self.sign_in(*idp, p, at + Duration::seconds(15 * 20 + 40), true, app);
            }
        }
    }

    /// One person's sign-in at `idp`, to integration `app`'s client or else to a web app.
    fn sign_in(&mut self, idp: Idp, p: usize, at: DateTime<Utc>, ok: bool, app: Option<usize>) {
        let (format, identity, line) = match idp {
            Idp::Entra => (
                SourceFormat::EntraSignIn,
                self.people[p].upn.clone(),
                render::entra_user_signin(self, p, at, ok, app),
            ),
            Idp::Okta => (
                SourceFormat::Okta,
                self.people[p].okta_id.clone(),
                render::okta_user_signin(self, p, at, ok, app),
            ),
            // People do not sign in at Google Cloud here.
            Idp::Keycloak | Idp::Gcp => (
                SourceFormat::Keycloak,
                self.people[p].keycloak_id.clone(),
                render::keycloak_user_login(self, p, at, ok, app),
            ),
        };
        self.push_about(identity, at, Stream::Idp, format, line);
    }

    /// At-least-once delivery: one record in 200 arrives twice, the same line right after the
    /// first. Never a record of an injected anomaly (a label counts what happened once).
    fn repeat_some(&mut self) {
        let records = std::mem::take(&mut self.records);
        self.records.reserve(records.len() + records.len() / 150);
        for r in records {
            if !r.injected && self.repeat.random_bool(0.005) {
                self.records.push(r.clone());
            }
            self.records.push(r);
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

    /// A record about integration `i`: the normalizers name it by its client id (Entra's app id,
    /// a GCP service account's e-mail).
    fn push(&mut self, i: usize, time: DateTime<Utc>, stream: Stream, format: SourceFormat, line: String) {
        let identity = self.ids[i].client_id.clone();
        self.push_about(identity, time, stream, format, line);
    }

    fn push_about(
        &mut self,
        identity: String,
        time: DateTime<Utc>,
        stream: Stream,
        format: SourceFormat,
        line: String,
    ) {
        self.records.push(GenRecord {
            time,
            stream,
            format,
            identity,
            line,
            injected: self.injecting,
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
            Idp::Gcp => (SourceFormat::GcpAudit, render::gcp_token(self, i, at, ip, ok)),
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

impl Anomaly {
    /// The identity it is injected on.
    fn identity(self) -> usize {
        match self {
            Anomaly::Dormant(i)
            | Anomaly::ScopeDrift(i)
            | Anomaly::PhiVolume(i)
            | Anomaly::Unregistered(i)
            | Anomaly::Offboarded(i)
            | Anomaly::NewNetwork(i)
            | Anomaly::CredentialSharing(i)
            | Anomaly::AuthFailures(i)
            | Anomaly::BreakGlass(i)
            | Anomaly::CredentialAdded(i)
            | Anomaly::OffHours(i)
            | Anomaly::PermissionGranted(i)
            | Anomaly::KeyCreated(i)
            | Anomaly::PhiNight(i)
            | Anomaly::PhiRun(i) => i,
        }
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
                "permission_granted",
                "phi_volume",
                "scope_drift",
                "unregistered_identity",
            ]
        );
        assert!(a.records.windows(2).all(|w| w[0].time <= w[1].time), "event-time order");
        let other = generate(&Options { seed: 8, ..opts });
        assert_ne!(other.records[0].line, a.records[0].line);
    }

    /// Issue 20: the generated population's PHI volume has a diurnal and weekly shape, grows
    /// (up to 2.5× in 60 days) and has weekly and monthly jobs; `phi_volume` reports each
    /// labelled run once, with the hours its rules report, and nothing on the rest. By
    /// construction: (a) four night hours at four times the usual level are a run reported from
    /// its third hour (count 2: the third and fourth); (d) 10×, 8× and 6× a usual 42 patients are
    /// three sharp hours (count 3); the 4,000-patient hour of a backend app crosses its sharp
    /// threshold, then the registry's 3,000 (count 2).
    #[test]
    fn phi_volume_reports_each_run_once_and_nothing_on_growth_or_jobs() {
        use crate::findings::DetectorId;
        let opts = Options {
            identities: 30,
            days: 60,
            seed: 3,
            ..Options::default()
        };
        let (scenario, ids) = generated(&opts);
        let shaped: Vec<&Identity> = ids
            .iter()
            .filter(|id| id.shape.is_some() && id.runs.is_empty())
            .collect();
        let with = |f: fn(&Shape) -> bool| shaped.iter().filter(|id| id.shape.as_ref().is_some_and(f)).count();
        assert!(with(|s| s.growth == 2.5) >= 2, "identities growing 2.5× in 60 days");
        assert!(with(|s| s.weekly.is_some()) >= 2, "identities with a weekly job");
        assert!(with(|s| s.monthly.is_some()) >= 1, "identities with a monthly job");

        let normalizer = crate::normalize::Normalizer::new(
            crate::normalize::Pseudonymizer::new(b"a test key, not a secret").expect("key"),
            crate::normalize::DEFAULT_MAX_RECORD_BYTES,
        );
        let events = normalize_all(&scenario.records, &normalizer).expect("generated records normalize");
        let registry =
            crate::registry::Registry::parse(&scenario.registry, Path::new("registry.toml")).expect("registry");
        let engine = crate::engine::Engine::new(
            crate::detect::Detectors::default(),
            Some(registry),
            crate::baseline::Settings::default(),
        );
        let mut detection = crate::engine::Detection::new(engine, Duration::minutes(5), false);
        for e in events {
            detection.push(e, &mut |_| {});
        }
        detection.finish(&mut |_| {});
        let phi: Vec<_> = detection
            .findings()
            .iter()
            .filter(|f| f.detector == DetectorId::PhiVolume)
            .map(|f| (f.identity.id.clone(), f.event_time, f.count))
            .collect();

        let labels: Vec<&Label> = scenario.labels.iter().filter(|l| l.detector == "phi_volume").collect();
        let victim = |runs: usize| {
            ids.iter()
                .find(|id| id.runs.first().is_some_and(|(_, times)| times.len() == runs))
                .expect("planned")
        };
        let (night, run) = (victim(4), victim(3));
        let label = |id: &Identity| {
            *labels
                .iter()
                .find(|l| l.identity == id.client_id && l.start == id.runs[0].0)
                .expect("labelled")
        };
        let bulk = labels
            .iter()
            .find(|l| l.end - l.start == Duration::hours(1))
            .expect("the 4,000-patient hour");
        assert_eq!(labels.len(), 3);
        assert_eq!(phi.len(), 3, "{phi:?}");
        for (l, hour, count) in [(label(night), 2, 2), (label(run), 0, 3), (bulk, 0, 2)] {
            let found: Vec<_> = phi.iter().filter(|(id, ..)| *id == l.identity).collect();
            let first = l.start + Duration::hours(hour);
            assert!(
                found
                    .iter()
                    .any(|(_, t, c)| *t >= first && *t < first + Duration::hours(1) && *c == count),
                "{l:?}: {found:?}"
            );
        }
        // The growing identities and those with weekly or monthly jobs are among the quiet.
        for id in &shaped {
            if phi.iter().any(|(f, ..)| *f == id.client_id) {
                assert!(labels.iter().any(|l| l.identity == id.client_id), "{}", id.name);
            }
        }
    }

    #[test]
    fn records_come_in_the_vendors_shapes_and_name_whom_the_normalizer_names() {
        use crate::event::{EventKind, IdentityType};
        use crate::normalize::{DEFAULT_MAX_RECORD_BYTES, Normalizer, Pseudonymizer, RecordMeta};
        let s = generate(&Options {
            identities: 48,
            days: 14,
            seed: 5,
            ..Options::default()
        });
        let normalizer = Normalizer::new(
            Pseudonymizer::new(b"a test key, not a secret").expect("key"),
            DEFAULT_MAX_RECORD_BYTES,
        );
        let json = |r: &GenRecord| serde_json::from_str::<serde_json::Value>(&r.line).expect("JSON");
        let mut people = std::collections::BTreeSet::new();
        let mut grants = Vec::new();
        for r in &s.records {
            let events = normalizer
                .normalize(r.line.as_bytes(), &RecordMeta::default())
                .expect("generated records normalize");
            assert_eq!(events.len(), 1, "{}", r.line);
            let e = &events[0];
            // Keycloak's `LOGIN` / `LOGIN_ERROR` are a person's (`userId`), as Entra's and Okta's
            // people's sign-ins are.
            assert_eq!(e.identity, r.identity, "{}", r.line);
            if e.identity_type == IdentityType::User {
                people.insert(e.identity.clone());
            }
            if e.kind == EventKind::PermissionGrant {
                grants.push(e.clone());
            }
        }
        // People sign in at Entra and Okta (and Keycloak), and never appear in the labels.
        assert!(people.len() > 20, "{people:?}");
        assert!(s.labels.iter().all(|l| !people.contains(&l.identity)));
        // Entra in both shapes, a row's dynamic columns both as JSON and as strings of JSON.
        let entra: Vec<serde_json::Value> = s
            .records
            .iter()
            .filter(|r| matches!(r.format, SourceFormat::EntraSignIn | SourceFormat::EntraAudit))
            .map(json)
            .collect();
        for table in ["AADServicePrincipalSignInLogs", "SigninLogs", "AuditLogs"] {
            assert!(entra.iter().any(|v| v["Type"] == table), "{table}");
        }
        for category in ["ServicePrincipalSignInLogs", "SignInLogs", "AuditLogs"] {
            assert!(entra.iter().any(|v| v["category"] == category), "{category}");
        }
        let rows: Vec<&serde_json::Value> = entra.iter().filter(|v| v["Type"] == "AuditLogs").collect();
        assert!(rows.iter().any(|v| v["TargetResources"].is_string()));
        assert!(rows.iter().any(|v| v["TargetResources"].is_array()));
        // Each labelled grant is a grant to that identity, inside its window; benign grants too.
        for label in s.labels.iter().filter(|l| l.detector == "permission_granted") {
            assert!(
                grants
                    .iter()
                    .any(|g| g.identity == label.identity && g.time >= label.start && g.time < label.end),
                "{label:?}"
            );
        }
        assert!(grants.len() > s.labels.iter().filter(|l| l.detector == "permission_granted").count());
        // GCP: tokens minted for the service account, a key created for one.
        let gcp: Vec<&GenRecord> = s
            .records
            .iter()
            .filter(|r| r.format == SourceFormat::GcpAudit)
            .collect();
        assert!(gcp.iter().any(|r| r.line.contains("\"GenerateAccessToken\"")));
        assert!(gcp.iter().any(|r| r.line.contains("CreateServiceAccountKey")));
        assert!(
            s.labels
                .iter()
                .any(|l| l.detector == "credential_added" && l.identity.ends_with(".gserviceaccount.com"))
        );
        // At-least-once delivery: some records twice in a row, never an injected one.
        let repeats = s.records.windows(2).filter(|w| w[0].line == w[1].line).count();
        assert!(repeats > 0);
        assert!(s.records.windows(2).all(|w| w[0].line != w[1].line || !w[0].injected));
    }
}
