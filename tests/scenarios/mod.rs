//! Golden detector scenarios: small histories a reader can check by hand. For each detector, a
//! case that must fire and a confounder that must not, with exact expectations on which
//! findings come out (detector, identity, first event time, count, severity).
//!
//! Time starts on Monday 2026-01-05 00:00 UTC; `at(day, hour, minute)` counts from there.

use chrono::{DateTime, Duration, TimeZone, Utc};
use nhiwatch::baseline;
use nhiwatch::detect::Detectors;
use nhiwatch::engine::{Detection, Engine};
use nhiwatch::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};
use nhiwatch::findings::{Confidence, DetectorId, Finding, Severity};
use nhiwatch::registry::Registry;
use nhiwatch::scope::Scope;

fn at(day: i64, hour: i64, minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).single().expect("valid")
        + Duration::days(day)
        + Duration::hours(hour)
        + Duration::minutes(minute)
}

/// A successful read of one patient's record by `identity` from `ip`.
fn read(identity: &str, time: DateTime<Utc>, ip: &str) -> Event {
    let mut e = Event::new(
        format!("{identity}-{}", time.timestamp()),
        time,
        SourceFormat::GatewayAccess,
        EventKind::DataAccess,
        identity.into(),
    );
    e.identity_type = IdentityType::Application;
    e.outcome = Outcome::Success;
    e.interaction = Some(Interaction::Read);
    e.resource_type = Some("Patient".into());
    e.patients = vec![format!("p{}", time.timestamp() % 97)];
    e.records = Some(1);
    e.src_ip = Some(ip.into());
    e.scopes = Scope::parse_list("system/Patient.rs system/Observation.rs");
    e
}

/// A token issued to `identity` with `scopes`.
fn token(identity: &str, time: DateTime<Utc>, ip: &str, scopes: &str) -> Event {
    let mut e = Event::new(
        format!("{identity}-tok-{}", time.timestamp()),
        time,
        SourceFormat::Okta,
        EventKind::TokenIssued,
        identity.into(),
    );
    e.identity_type = IdentityType::Application;
    e.outcome = Outcome::Success;
    e.src_ip = Some(ip.into());
    e.scopes = Scope::parse_list(scopes);
    e
}

/// Reads every hour of `days`, on hours where `active(weekday, hour)` holds, minute 10 and 40.
fn history(identity: &str, days: std::ops::Range<i64>, active: impl Fn(i64, i64) -> bool) -> Vec<Event> {
    let mut out = Vec::new();
    for day in days {
        for hour in 0..24 {
            if active(day % 7, hour) {
                out.push(read(identity, at(day, hour, 10), "10.20.1.15"));
                out.push(read(identity, at(day, hour, 40), "10.20.1.16"));
            }
        }
    }
    out
}

fn business(weekday: i64, hour: i64) -> bool {
    weekday < 5 && (8..18).contains(&hour)
}

fn always(_: i64, _: i64) -> bool {
    true
}

const REGISTRY: &str = r#"
[[integration]]
id = "cds-app"
aliases = ["0oa-cds"]
name = "CDS backend"
owner = "cds@example.org"
approved_scopes = ["system/Patient.rs", "system/Observation.rs"]
approved_networks = ["10.20.0.0/16"]
max_patients_per_hour = 1000

[[integration]]
id = "old-billing"
name = "Retired billing connector"
owner = "billing@example.org"
offboarded_at = 2026-01-25T00:00:00Z
"#;

fn registry() -> Registry {
    Registry::parse(REGISTRY, std::path::Path::new("scenario-registry.toml")).expect("valid registry")
}

/// Runs the engine over `events` (sorted by time) and returns the findings.
fn detect(mut events: Vec<Event>, registry: Option<Registry>) -> Vec<Finding> {
    events.sort_by_key(|e| e.time);
    let engine = Engine::new(Detectors::default(), registry, baseline::Settings::default());
    let mut detection = Detection::new(engine, Duration::minutes(5), false);
    for e in events {
        detection.push(e, &mut |_| {});
    }
    detection.finish(&mut |_| {});
    detection.findings().to_vec()
}

/// (detector, identity, first event time) of each finding.
fn summary(findings: &[Finding]) -> Vec<(DetectorId, String, DateTime<Utc>)> {
    findings
        .iter()
        .map(|f| (f.detector, f.identity.id.clone(), f.event_time))
        .collect()
}

#[test]
fn dormant_wakeup_fires_after_a_long_silence() {
    let mut events = history("cds-app", 0..12, business);
    events.push(read("cds-app", at(52, 10, 5), "10.20.1.15"));
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::DormantWakeup, "cds-app".into(), at(52, 10, 5))]
    );
    let f = &findings[0];
    assert_eq!(f.severity, Severity::High);
    // Last activity Friday 2026-01-16 17:40; back Thursday 2026-02-26 10:05.
    assert!(f.explanation.contains("after 40 days of silence"), "{}", f.explanation);
    assert_eq!(f.analysis[0].observed, serde_json::json!(40.7));
}

#[test]
fn a_monthly_job_after_thirty_days_is_not_dormant() {
    // Runs of 60 calls on the 1st of each month, 31 and 28 days apart.
    let mut events = Vec::new();
    for day in [0, 31, 59, 90] {
        for m in 0..60 {
            events.push(read("monthly-job", at(day, 3, m), "10.20.9.4"));
        }
    }
    assert_eq!(summary(&detect(events, None)), []);
}

#[test]
fn scope_drift_fires_outside_the_registry_approval() {
    let mut events = history("0oa-cds", 0..10, business);
    events.push(token(
        "0oa-cds",
        at(10, 9, 0),
        "10.20.1.15",
        "system/Patient.rs system/*.cruds",
    ));
    let findings = detect(events, Some(registry()));
    assert_eq!(
        summary(&findings),
        [(DetectorId::ScopeDrift, "cds-app".into(), at(10, 9, 0))]
    );
    assert_eq!(findings[0].severity, Severity::High);
    assert_eq!(findings[0].identity.owner.as_deref(), Some("cds@example.org"));
    assert!(
        findings[0]
            .explanation
            .contains("scope system/*.cruds is outside the registry's approval"),
        "{}",
        findings[0].explanation
    );
}

#[test]
fn reordered_v1_and_narrower_scopes_are_not_drift() {
    let mut events = history("0oa-cds", 0..10, business);
    events.push(token(
        "0oa-cds",
        at(10, 9, 0),
        "10.20.1.15",
        "system/Observation.read system/Patient.read",
    ));
    events.push(token("0oa-cds", at(10, 9, 5), "10.20.1.15", "system/Patient.r"));
    assert_eq!(summary(&detect(events, Some(registry()))), []);
}

#[test]
fn phi_volume_fires_once_when_the_hour_crosses_the_threshold() {
    let mut events = history("cds-app", 0..10, always);
    let mut bulk = read("cds-app", at(10, 11, 0), "10.20.1.15");
    for n in 0..3 {
        bulk.event_id = format!("bulk-{n}");
        bulk.time = at(10, 11, 10 * n);
        bulk.patients = (0..150).map(|p| format!("bulk{n}-{p}")).collect();
        events.push(bulk.clone());
    }
    let findings = detect(events, None);
    // 150 patients: under the 200 floor; 300: over it. One finding, at the crossing.
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "cds-app".into(), at(10, 11, 10))]
    );
    assert_eq!(findings[0].analysis[0].observed, serde_json::json!(300));
    assert_eq!(findings[0].count, 1);
}

#[test]
fn a_weekly_export_peak_already_seen_is_not_news() {
    // Ten patients an hour on weekdays, and a 2,000-patient export every Sunday at 02:00.
    let mut events = history("exporter", 0..28, business);
    for sunday in [6, 13, 20, 27] {
        let mut e = read("exporter", at(sunday, 2, 5), "10.20.1.15");
        e.patients.clear();
        e.patient_count = Some(2000);
        e.interaction = Some(Interaction::Operation);
        e.operation = Some("$export".into());
        e.resource_type = None;
        events.push(e);
    }
    let findings = detect(events, None);
    // The first export, on day 6, falls in the learning week: its hour becomes the peak, and the
    // exports of later weeks do not exceed 1.5 times it. Its hour of the week was learned too.
    assert_eq!(summary(&findings), []);
}

/// A search by `identity` that touched `patients` distinct patients (a gateway's count).
fn volume(identity: &str, time: DateTime<Utc>, patients: u64) -> Event {
    let mut e = read(identity, time, "10.20.1.15");
    e.event_id = format!("{identity}-v-{}", time.timestamp());
    e.interaction = Some(Interaction::Search);
    e.resource_type = Some("Observation".into());
    e.patients.clear();
    e.patient_count = Some(patients);
    e.records = Some(patients * 3);
    e
}

/// One search every hour of `days`, at minute 5, touching `level(day, hour)` patients.
fn hourly(identity: &str, days: std::ops::Range<i64>, level: impl Fn(i64, i64) -> u64) -> Vec<Event> {
    let mut out = Vec::new();
    for day in days {
        for hour in 0..24 {
            out.push(volume(identity, at(day, hour, 5), level(day, hour)));
        }
    }
    out
}

/// A 24/7 lab feed: 100 patients an hour from 08:00 to 20:00, 20 at night.
fn lab_day(_day: i64, hour: i64) -> u64 {
    if (8..20).contains(&hour) { 100 } else { 20 }
}

fn phi(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.detector == DetectorId::PhiVolume)
        .collect()
}

/// Issue 20 (a): four times its night-time level, four hours long, below its daytime hours (and
/// the 200-patient floor of a single hour): a run, one finding from its third hour, counting the
/// third and fourth.
#[test]
fn four_times_the_night_level_for_four_hours_is_one_run() {
    // Day 22 is Tuesday 2026-01-27; 01:00 to 05:00 at 80 patients, four times its 20.
    let events = hourly("lab-feed", 0..28, |day, hour| {
        if day == 22 && (1..5).contains(&hour) {
            80
        } else {
            lab_day(day, hour)
        }
    });
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "lab-feed".into(), at(22, 3, 5))]
    );
    let f = &findings[0];
    assert_eq!(f.count, 2, "the third and the fourth hour");
    assert_eq!(f.last_event_time, at(22, 4, 5));
    assert!(
        f.explanation.starts_with(
            "On Tuesdays 03:00–04:00 UTC lab-feed usually touches 20 patients an hour (learned over three \
             weeks or more); in the hour from 2026-01-27T03:00:00Z it touched 80 (240 records), the 3rd hour \
             in a row above 3× its usual level for the hour (since 2026-01-27T01:00:00Z)."
        ),
        "{}",
        f.explanation
    );
    assert_eq!(
        f.title,
        "Unusual PHI volume by lab-feed: 80 patients in an hour, 3 hours in a row"
    );
    // 3 × 20.4 (the level as kept, 1/16 of a log unit) is above the floor of 50.
    assert_eq!(f.analysis[0].observed, serde_json::json!(80));
    assert_eq!(f.analysis[0].baseline, serde_json::json!(20.0));
    assert_eq!(f.analysis[0].threshold, serde_json::json!(62));
    assert_eq!(f.analysis[1].observed, serde_json::json!(3));
}

/// Two hours of it are not a run, and a small identity's run stays under the run's floor.
#[test]
fn two_hours_or_a_small_identity_are_not_a_run() {
    let two = hourly("lab-feed", 0..28, |day, hour| {
        if day == 22 && (1..3).contains(&hour) {
            80
        } else {
            lab_day(day, hour)
        }
    });
    assert_eq!(summary(&detect(two, None)), []);
    // Ten patients a night hour; 40 (4×) for four hours is under 50.
    let small = hourly("lab-feed", 0..28, |day, hour| match (day, hour) {
        (22, 1..=4) => 40,
        (_, 8..=19) => 100,
        _ => 10,
    });
    assert_eq!(summary(&detect(small, None)), []);
}

/// Issue 20 (b): growing 2.5× over 60 days, diurnal shape and all, is no finding.
#[test]
fn growth_of_two_and_a_half_times_in_sixty_days_is_not_news() {
    let events = hourly("lab-feed", 0..60, |day, hour| {
        let growth = 2.5f64.powf((day as f64 + hour as f64 / 24.0) / 60.0);
        (lab_day(day, hour) as f64 * growth).round() as u64
    });
    assert_eq!(summary(&detect(events, None)), []);
}

/// Issue 20 (c): a weekly export of 2,000 patients every Sunday at 02:00 (twenty times its
/// daytime hours) is its normal at that time; a monthly job on the 7th at 04:00 too. Both were
/// first seen in the learning week.
#[test]
fn a_weekly_export_and_a_monthly_job_are_normal_at_their_time() {
    // Sundays are days 6, 13, 20, ...; the 7th of January is day 2, of February day 33.
    let events = hourly("lab-feed", 0..42, |day, hour| match (day % 7, day, hour) {
        (6, _, 2) => 2000,
        (_, 2 | 33, 4) => 900,
        _ => lab_day(day, hour),
    });
    assert_eq!(summary(&detect(events, None)), []);
}

/// A weekly export that starts after the learning period is news once (a sharp hour), then
/// learned as a weekly peak; a monthly job seen once is not taken for a weekly one.
#[test]
fn a_new_weekly_export_is_news_once() {
    let events = hourly("lab-feed", 0..42, |day, hour| match (day % 7, day, hour) {
        (6, 20.., 2) => 2000,
        _ => lab_day(day, hour),
    });
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "lab-feed".into(), at(20, 2, 5))]
    );
    assert_eq!(findings[0].count, 1);
    assert!(
        findings[0]
            .explanation
            .starts_with("On Sundays 02:00–03:00 UTC lab-feed usually touches 20 patients an hour"),
        "{}",
        findings[0].explanation
    );
    // A job on Wednesday the 7th at 04:00 (in the learning week) might recur weekly or monthly;
    // Wednesday the 14th is quiet at 04:00, which strikes the weekly period off, so 900 patients
    // on Wednesday the 21st (day 16) at 04:00 are news.
    let events = hourly("lab-feed", 0..28, |day, hour| match (day, hour) {
        (2, 4) => 900,
        (16, 4) => 900,
        _ => lab_day(day, hour),
    });
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "lab-feed".into(), at(16, 4, 5))]
    );
}

/// Issue 20 (d): six to ten times its usual level for three hours, too few patients for any
/// single hour to cross the floor of 200: one finding, at the run's third hour.
#[test]
fn six_to_ten_times_the_usual_level_for_three_hours_is_one_run() {
    // A backend at 15 patients an hour; on Thursday 2026-01-22 (day 17, the third Thursday),
    // 10×, 8× and 6× from 11:00.
    let events = hourly("cds-app", 0..28, |day, hour| match (day, hour) {
        (17, 11) => 150,
        (17, 12) => 120,
        (17, 13) => 90,
        _ => 15,
    });
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "cds-app".into(), at(17, 13, 5))]
    );
    assert_eq!(findings[0].count, 1);
    assert!(
        findings[0].explanation.starts_with(
            "On Thursdays 13:00–14:00 UTC cds-app usually touches 15 patients an hour (seen there twice, \
             weighed with its other days at that hour); in the hour from 2026-01-22T13:00:00Z it touched 90 \
             (270 records), the 3rd hour in a row"
        ),
        "{}",
        findings[0].explanation
    );
    // Larger: 40 an hour, so 400, 320 and 240 each cross a single hour's threshold (200, and 5×
    // the usual level): three sharp hours, one finding from the first.
    let events = hourly("cds-app", 0..28, |day, hour| match (day, hour) {
        (17, 11) => 400,
        (17, 12) => 320,
        (17, 13) => 240,
        _ => 40,
    });
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::PhiVolume, "cds-app".into(), at(17, 11, 5))]
    );
    assert_eq!(findings[0].count, 3);
    assert_eq!(phi(&findings).len(), 1);
}

#[test]
fn unregistered_identity_fires_on_phi_access_not_for_people_or_aliases() {
    let mut events = vec![read("0oa-stranger", at(3, 10, 0), "172.16.4.4")];
    // A registered alias, and a person's sign-in, are not findings.
    events.push(read("0oa-cds", at(3, 10, 5), "10.20.1.15"));
    let mut person = token("alice@example.org", at(3, 10, 6), "10.1.1.1", "openid");
    person.identity_type = IdentityType::User;
    person.kind = EventKind::SignIn;
    events.push(person);
    let findings = detect(events.clone(), Some(registry()));
    assert_eq!(
        summary(&findings),
        [(DetectorId::UnregisteredIdentity, "0oa-stranger".into(), at(3, 10, 0))]
    );
    assert!(!findings[0].identity.registered);
    // Without a registry nobody is "unregistered".
    assert_eq!(summary(&detect(events, None)), []);
}

/// Issue 20, item 3: an unregistered client is judged where it acts — a token, a grant, a
/// credential added — not only on patient data; admin or management rights make it high.
#[test]
fn an_unregistered_client_is_reported_when_it_obtains_a_token_or_a_grant() {
    // A token for an ordinary scope: medium, at the token.
    let findings = detect(
        vec![token(
            "0oa-stranger",
            at(3, 9, 0),
            "172.16.4.4",
            "system/Observation.rs",
        )],
        Some(registry()),
    );
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.detector, f.event_time, f.severity))
            .collect::<Vec<_>>(),
        [(DetectorId::UnregisteredIdentity, at(3, 9, 0), Severity::Medium)]
    );
    assert!(findings[0].title.ends_with("obtained a token"), "{}", findings[0].title);
    // A token with a management scope (Okta's okta.apps.manage, in permission_granted's
    // high-privilege list), then a read: one finding, high from the start, counting both.
    let events = vec![
        token("0oa-stranger", at(3, 9, 0), "172.16.4.4", "okta.apps.manage"),
        read("0oa-stranger", at(3, 9, 5), "172.16.4.4"),
    ];
    let findings = detect(events, Some(registry()));
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.detector, f.severity, f.count))
            .collect::<Vec<_>>(),
        [(DetectorId::UnregisteredIdentity, Severity::High, 2)]
    );
    // A registered client's token is nothing; a failed token request is not an act.
    let mut failed = token("0oa-stranger", at(3, 9, 0), "172.16.4.4", "system/*.cruds");
    failed.outcome = nhiwatch::event::Outcome::Failure;
    let quiet = detect(
        vec![
            token("0oa-cds", at(3, 9, 0), "10.20.1.15", "system/Observation.rs"),
            failed,
        ],
        Some(registry()),
    );
    assert_eq!(summary(&quiet), []);
}

#[test]
fn access_after_offboarding_fires_after_the_date_only() {
    let events = vec![
        read("old-billing", at(19, 2, 0), "10.20.3.3"),
        read("old-billing", at(20, 2, 0), "10.20.3.3"),
        read("old-billing", at(20, 2, 30), "10.20.3.3"),
    ];
    let findings = detect(events, Some(registry()));
    // offboarded_at is 2026-01-25 00:00 = day 20.
    assert_eq!(
        summary(&findings),
        [(DetectorId::AccessAfterOffboarding, "old-billing".into(), at(20, 2, 0))]
    );
    assert_eq!((findings[0].severity, findings[0].count), (Severity::Critical, 2));
}

/// Issue 20: an integration still active for four weeks after offboarding. The engine raises an
/// occurrence each time its day-long window lapses (a read every two days); the analyst sees
/// one finding, counting every read, from the first to the last.
#[test]
fn an_offboarded_integration_active_for_four_weeks_is_one_finding_with_its_count() {
    // offboarded_at is day 20; a read at 03:00 every other day from day 20 to day 46.
    let days: Vec<i64> = (20..48).step_by(2).collect();
    let events: Vec<Event> = days
        .iter()
        .map(|&d| read("old-billing", at(d, 3, 0), "10.20.3.3"))
        .collect();
    let occurrences = detect(events, Some(registry()));
    assert_eq!(occurrences.len(), days.len(), "one occurrence per lapsed window");
    let findings = nhiwatch::findings::aggregate(&occurrences);
    assert_eq!(
        summary(&findings),
        [(DetectorId::AccessAfterOffboarding, "old-billing".into(), at(20, 3, 0))]
    );
    let f = &findings[0];
    assert_eq!(
        (f.count, f.last_event_time, f.severity),
        (14, at(46, 3, 0), Severity::Critical)
    );
    assert_eq!(f.id, occurrences[0].id, "the first occurrence's id");
    // The first five reads and the latest five are its evidence.
    let evidence: Vec<DateTime<Utc>> = f.evidence.iter().map(|e| e.time).collect();
    let expected: Vec<DateTime<Utc>> = days[..5].iter().chain(&days[9..]).map(|&d| at(d, 3, 0)).collect();
    assert_eq!(evidence, expected);
}

/// Scope drift is one finding per permission: two new permissions are two problems, and a
/// permission used again after the engine's window is still the first one's.
#[test]
fn scope_drift_aggregates_per_permission() {
    let mut events = history("cds-app", 0..15, business);
    let outside = |resource: &str, day: i64| {
        let mut e = read("cds-app", at(day, 10, 0), "10.20.1.15");
        e.resource_type = Some(resource.into());
        e.event_id = format!("{resource}-{day}");
        e
    };
    // Encounter (outside the approved scopes) on days 16, 18 and 20; MedicationRequest on day 17.
    events.extend([16, 18, 20].map(|d| outside("Encounter", d)));
    events.push(outside("MedicationRequest", 17));
    let findings = nhiwatch::findings::aggregate(&detect(events, Some(registry())));
    let drift: Vec<(Option<&str>, u64, DateTime<Utc>)> = findings
        .iter()
        .filter(|f| f.detector == DetectorId::ScopeDrift)
        .map(|f| (f.cause.as_deref(), f.count, f.event_time))
        .collect();
    // The cause is the permission as SMART App Launch 2.0 writes it: `<resource>.<cruds>`, `r`
    // for a read.
    assert_eq!(
        drift,
        [
            (Some("Encounter.r"), 3, at(16, 10, 0)),
            (Some("MedicationRequest.r"), 1, at(17, 10, 0)),
        ]
    );
}

#[test]
fn access_after_the_idp_deactivated_the_app() {
    let mut events = vec![read("app-x", at(1, 9, 0), "10.9.9.9")];
    let mut off = Event::new(
        "deact".into(),
        at(2, 9, 0),
        SourceFormat::Okta,
        EventKind::AppLifecycle,
        "app-x".into(),
    );
    off.identity_type = IdentityType::Application;
    off.outcome = Outcome::Success;
    off.action = Some("application.lifecycle.deactivate".into());
    events.push(off);
    events.push(read("app-x", at(3, 9, 0), "10.9.9.9"));
    assert_eq!(
        summary(&detect(events, None)),
        [(DetectorId::AccessAfterOffboarding, "app-x".into(), at(3, 9, 0))]
    );
}

#[test]
fn new_network_fires_for_a_new_prefix_not_a_neighbour() {
    let mut events = history("lab-feed", 0..8, always);
    events.push(read("lab-feed", at(8, 15, 0), "10.20.1.99")); // same /24: not new
    events.push(read("lab-feed", at(8, 15, 5), "203.0.113.7"));
    events.push(read("lab-feed", at(8, 15, 6), "203.0.113.8")); // same new /24: folds
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::NewNetwork, "lab-feed".into(), at(8, 15, 5))]
    );
    assert!(findings[0].title.contains("203.0.113.0/24"), "{}", findings[0].title);
}

#[test]
fn a_new_network_inside_the_approved_ranges_is_not_reported() {
    let mut events = history("0oa-cds", 0..8, always);
    events.push(read("0oa-cds", at(8, 15, 5), "10.20.77.7"));
    assert_eq!(summary(&detect(events, Some(registry()))), []);
}

#[test]
fn credential_sharing_fires_on_interleaved_networks_not_on_a_move() {
    let mut shared = history("lab-feed", 0..8, always);
    for m in 0..8 {
        let ip = if m % 2 == 0 { "10.20.1.15" } else { "198.51.100.23" };
        shared.push(read("lab-feed", at(8, 13, 3 + m * 6), ip));
    }
    let findings = detect(shared, None);
    assert_eq!(
        summary(&findings),
        [
            (DetectorId::NewNetwork, "lab-feed".into(), at(8, 13, 9)),
            // The fifth switch (at minute 33) makes it concurrent use.
            (DetectorId::CredentialSharing, "lab-feed".into(), at(8, 13, 33)),
        ]
    );
    assert_eq!(findings[1].severity, Severity::High);

    // A move: the integration leaves its network for another and stays there.
    let mut moved = history("lab-feed", 0..8, always);
    for m in 0..8 {
        moved.push(read("lab-feed", at(8, 13, 3 + m * 6), "198.51.100.23"));
    }
    assert_eq!(
        summary(&detect(moved, None)),
        [(DetectorId::NewNetwork, "lab-feed".into(), at(8, 13, 3))]
    );
}

fn failure(identity: &str, time: DateTime<Utc>) -> Event {
    let mut e = token(identity, time, "10.20.1.15", "");
    e.kind = EventKind::AuthFailure;
    e.outcome = Outcome::Failure;
    e.error = Some("invalid_client".into());
    e.event_id = format!("fail-{}", time.timestamp());
    e
}

#[test]
fn auth_failure_burst_fires_once_for_a_burst() {
    let mut events = history("cds-app", 0..8, business);
    for s in 0..40 {
        events.push(failure("cds-app", at(8, 10, 0) + Duration::seconds(s * 13)));
    }
    let findings = detect(events, None);
    // The tenth failure (at 10:01:57) crosses the floor; the burst stays one finding.
    assert_eq!(
        summary(&findings),
        [(
            DetectorId::AuthFailureBurst,
            "cds-app".into(),
            at(8, 10, 1) + Duration::seconds(57)
        )]
    );
}

#[test]
fn a_few_failures_during_a_rotation_are_not_a_burst() {
    let mut events = history("cds-app", 0..8, business);
    for s in 0..3 {
        events.push(failure("cds-app", at(8, 10, 0) + Duration::seconds(s * 30)));
    }
    assert_eq!(summary(&detect(events, None)), []);
}

#[test]
fn break_glass_fires_for_a_machine_not_for_a_person_or_routine_purpose() {
    let mut machine = read("ehr-iface", at(2, 4, 20), "10.20.1.15");
    machine.purpose_of_use = vec!["BTG".into(), "ETREAT".into()];
    let mut routine = read("ehr-iface", at(2, 4, 30), "10.20.1.15");
    routine.purpose_of_use = vec!["TREAT".into()];
    let mut person = read("dr-jones", at(2, 4, 40), "10.20.1.15");
    person.identity_type = IdentityType::User;
    person.purpose_of_use = vec!["BTG".into()];
    let findings = detect(vec![machine, routine, person], None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::BreakGlass, "ehr-iface".into(), at(2, 4, 20))]
    );
    assert!(findings[0].explanation.contains("purpose of use BTG, ETREAT"));
}

fn credential_change(identity: &str, time: DateTime<Utc>, action: &str) -> Event {
    let mut e = Event::new(
        format!("cred-{}", time.timestamp()),
        time,
        SourceFormat::EntraAudit,
        EventKind::CredentialChange,
        identity.into(),
    );
    e.identity_type = IdentityType::Application;
    e.outcome = Outcome::Success;
    e.action = Some(action.into());
    e.initiator = Some("it-admin".into());
    e
}

#[test]
fn credential_added_then_used_from_a_new_network_escalates_one_finding() {
    let mut events = history("lab-feed", 0..8, always);
    events.push(credential_change(
        "lab-feed",
        at(8, 14, 0),
        "Add service principal credentials",
    ));
    events.push(read("lab-feed", at(8, 14, 30), "192.0.2.50"));
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::CredentialAdded, "lab-feed".into(), at(8, 14, 0))]
    );
    assert_eq!((findings[0].severity, findings[0].count), (Severity::High, 2));
    assert!(
        findings[0].explanation.contains("30 minutes later"),
        "{}",
        findings[0].explanation
    );
}

#[test]
fn a_removed_credential_is_not_an_added_one() {
    let events = vec![credential_change(
        "lab-feed",
        at(8, 14, 0),
        "Remove service principal credentials",
    )];
    assert_eq!(summary(&detect(events, None)), []);
}

#[test]
fn off_hours_fires_on_a_sunday_night_not_just_after_hours() {
    let mut events = history("cds-app", 0..14, business);
    events.push(read("cds-app", at(14, 18, 30), "10.20.1.15")); // Monday 18:30: next to 17:00
    events.push(read("cds-app", at(20, 3, 7), "10.20.1.15")); // Sunday 03:07
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::OffHours, "cds-app".into(), at(20, 3, 7))]
    );
    assert!(findings[0].title.contains("Sunday 03:07 UTC"), "{}", findings[0].title);
}

#[test]
fn a_registered_integrations_first_day_raises_nothing() {
    // Onboarded today: calls all day, from an approved network, within its approved scopes.
    let mut events = history("0oa-cds", 0..1, always);
    events.push(token("0oa-cds", at(0, 23, 0), "10.20.1.15", "system/Patient.rs"));
    assert_eq!(summary(&detect(events, Some(registry()))), []);
}

#[test]
fn findings_are_reproducible() {
    let mut events = history("lab-feed", 0..8, always);
    events.push(read("lab-feed", at(8, 15, 5), "203.0.113.7"));
    let a = detect(events.clone(), None);
    let b = detect(events, None);
    assert_eq!(a, b);
    assert_eq!(
        a[0].detected_at, a[0].event_time,
        "offline runs stamp findings with event time"
    );
}

// ------------------------------------------------------------------ stale_credential

/// An Okta-style grant to `identity` of token `token_id`, valid for `minutes`.
fn grant(identity: &str, time: DateTime<Utc>, token_id: &str, minutes: i64) -> Event {
    let mut e = token(identity, time, "10.20.1.15", "system/Patient.rs");
    e.event_id = format!("{identity}-grant-{token_id}");
    e.token_id = Some(token_id.into());
    e.token_issued_at = Some(time);
    e.token_expires_at = Some(time + Duration::minutes(minutes));
    e
}

/// A FHIR read presenting token `token_id` (BALP `agent.policy`, a gateway's `token_id`).
fn read_with_token(identity: &str, time: DateTime<Utc>, token_id: &str) -> Event {
    let mut e = read(identity, time, "10.20.1.15");
    e.token_id = Some(token_id.into());
    e
}

/// An Entra-style service-principal sign-in with secret `key`.
fn sign_in_with(identity: &str, time: DateTime<Utc>, key: &str) -> Event {
    let mut e = token(identity, time, "10.20.1.15", "https://fhir.example.org/.default");
    e.format = SourceFormat::EntraSignIn;
    e.credential_id = Some(key.into());
    e
}

/// A credential change naming the key added or removed.
fn key_change(identity: &str, time: DateTime<Utc>, action: &str, key: &str) -> Event {
    let mut e = credential_change(identity, time, action);
    e.event_id = format!("{identity}-{action}-{key}");
    e.credential_id = Some(key.into());
    e
}

fn stale(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.detector == DetectorId::StaleCredential)
        .collect()
}

#[test]
fn a_one_hour_token_used_at_fifty_minutes_is_within_policy() {
    let events = vec![
        grant("etl-app", at(0, 9, 0), "AT.1", 60),
        read_with_token("etl-app", at(0, 9, 50), "AT.1"),
    ];
    assert_eq!(summary(&detect(events, None)), []);
}

#[test]
fn a_one_hour_token_used_at_three_hours_fires_high_for_being_accepted_expired() {
    let events = vec![
        grant("etl-app", at(0, 9, 0), "AT.1", 60),
        read_with_token("etl-app", at(0, 9, 50), "AT.1"),
        read_with_token("etl-app", at(0, 12, 0), "AT.1"),
    ];
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::StaleCredential, "etl-app".into(), at(0, 12, 0))]
    );
    let f = &findings[0];
    assert_eq!((f.severity, f.count), (Severity::High, 1));
    assert_eq!(f.title, "Token of etl-app used 3 hours after issue");
    assert!(
        f.explanation.contains("expired at 2026-01-05T10:00:00Z"),
        "{}",
        f.explanation
    );
    assert_eq!(f.analysis[0].metric, "token_age_minutes");
    assert_eq!(
        (f.analysis[0].observed.as_i64(), f.analysis[0].threshold.as_i64()),
        (Some(180), Some(60))
    );
}

/// Acting under an alias, the identity is reported under its registry id, and sentences name
/// it by its display name with that id beside it.
#[test]
fn a_finding_names_the_identity_by_display_name_and_canonical_id() {
    let registry = Registry::parse(
        "[[integration]]\nid = \"etl-app\"\naliases = [\"0oa-etl\"]\nname = \"Nightly ETL\"\n",
        std::path::Path::new("registry.toml"),
    )
    .expect("registry");
    let events = vec![
        grant("0oa-etl", at(0, 9, 0), "AT.1", 60),
        read_with_token("0oa-etl", at(0, 9, 50), "AT.1"),
        read_with_token("0oa-etl", at(0, 12, 0), "AT.1"),
    ];
    let findings = detect(events, Some(registry));
    let f = stale(&findings)[0];
    assert_eq!(
        (f.identity.id.as_str(), f.identity.name.as_deref()),
        ("etl-app", Some("Nightly ETL"))
    );
    assert_eq!(f.title, "Token of Nightly ETL (etl-app) used 3 hours after issue");
}

#[test]
fn a_token_within_its_lifetime_but_older_than_policy_fires_medium() {
    // Issued for 4 hours (itself past the 1-hour policy: the grant fires), used at 3 hours.
    let events = vec![
        grant("etl-app", at(0, 9, 0), "AT.2", 240),
        read_with_token("etl-app", at(0, 12, 0), "AT.2"),
    ];
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::StaleCredential, "etl-app".into(), at(0, 9, 0))]
    );
    let f = &findings[0];
    // The grant and the late use fold into one finding; the token had not expired.
    assert_eq!((f.severity, f.count), (Severity::Medium, 2));
    assert_eq!(f.title, "Token of etl-app lives 4 hours, beyond policy");
    assert_eq!(f.analysis[0].metric, "token_lifetime_minutes");
    assert_eq!(f.analysis[0].observed.as_i64(), Some(240));
}

#[test]
fn the_registry_token_policy_overrides_the_default() {
    let registry = Registry::parse(
        "[[integration]]\nid = \"etl-app\"\nowner = \"etl@example.org\"\nmax_token_ttl = \"4h\"\n",
        std::path::Path::new("r.toml"),
    )
    .expect("registry");
    let events = vec![
        grant("etl-app", at(0, 9, 0), "AT.3", 240),
        read_with_token("etl-app", at(0, 12, 0), "AT.3"),
    ];
    assert_eq!(summary(&detect(events.clone(), Some(registry))), []);
    // A gateway that logs the token's own iat needs no grant to date it.
    let mut late = read_with_token("etl-app", at(0, 12, 0), "AT.unseen");
    late.token_issued_at = Some(at(0, 6, 0));
    assert_eq!(
        summary(&detect(vec![late], None)),
        [(DetectorId::StaleCredential, "etl-app".into(), at(0, 12, 0))]
    );
}

#[test]
fn a_secret_rotated_on_schedule_does_not_fire_over_four_hundred_days() {
    let mut events = Vec::new();
    // A new secret every 80 days, the old one removed a day later, sign-ins every day.
    for day in 0..=400 {
        let key = format!("k{}", day / 80);
        if day % 80 == 0 {
            events.push(key_change(
                "lab-feed",
                at(day, 8, 0),
                "Add service principal credentials",
                &key,
            ));
        }
        if day % 80 == 1 && day > 1 {
            let old = format!("k{}", day / 80 - 1);
            events.push(key_change(
                "lab-feed",
                at(day, 8, 0),
                "Remove service principal credentials",
                &old,
            ));
        }
        events.push(sign_in_with("lab-feed", at(day, 9, 0), &key));
    }
    assert!(stale(&detect(events, None)).is_empty());
}

#[test]
fn a_secret_used_four_hundred_days_after_its_creation_fires() {
    let mut events = vec![key_change(
        "lab-feed",
        at(0, 8, 0),
        "Add service principal credentials",
        "k0",
    )];
    for day in 0..5 {
        events.push(sign_in_with("lab-feed", at(day, 9, 0), "k0"));
    }
    events.push(sign_in_with("lab-feed", at(400, 9, 0), "k0"));
    let findings = detect(events, None);
    let stale = stale(&findings);
    assert_eq!(stale.len(), 1, "{findings:#?}");
    let f = stale[0];
    assert_eq!((f.event_time, f.confidence), (at(400, 9, 0), Confidence::High));
    assert_eq!(f.analysis[0].metric, "credential_age_days");
    assert_eq!(
        (f.analysis[0].observed.as_i64(), f.analysis[0].threshold.as_i64()),
        (Some(400), Some(90))
    );
    assert!(
        f.explanation
            .contains("credential k0 was created at 2026-01-05T08:00:00Z"),
        "{}",
        f.explanation
    );
}

#[test]
fn a_credential_dated_only_by_its_first_use_is_at_least_that_old() {
    let events = vec![
        sign_in_with("lab-feed", at(0, 9, 0), "k9"),
        sign_in_with("lab-feed", at(90, 8, 0), "k9"), // 89 days 23 hours: within 90 days
        sign_in_with("lab-feed", at(120, 9, 0), "k9"),
    ];
    let findings = detect(events, None);
    assert_eq!(
        summary(&findings),
        [(DetectorId::StaleCredential, "lab-feed".into(), at(120, 9, 0))]
    );
    assert_eq!(findings[0].confidence, Confidence::Medium);
    assert!(
        findings[0]
            .explanation
            .contains("first seen in use at 2026-01-05T09:00:00Z"),
        "{}",
        findings[0].explanation
    );
}

#[test]
fn without_key_ids_the_newest_credential_bounds_the_age_of_the_one_in_use() {
    // Okta-style: the secret rotation is logged, the grants do not say which secret was used.
    let mut events = vec![credential_change(
        "etl-app",
        at(0, 8, 0),
        "app.oauth2.client_secret.rotate",
    )];
    events.push(token("etl-app", at(60, 9, 0), "10.20.1.15", "system/Patient.rs"));
    events.push(token("etl-app", at(100, 9, 0), "10.20.1.15", "system/Patient.rs"));
    let findings = detect(events, None);
    let stale = stale(&findings);
    assert_eq!(stale.len(), 1, "{findings:#?}");
    assert_eq!(
        (stale[0].event_time, stale[0].confidence),
        (at(100, 9, 0), Confidence::Medium)
    );
}

// ------------------------------------------------------------------ permission_granted
//
// Expectations follow the rules of detectors/permission_granted.toml: outside the registry's
// approval (SMART by containment; opaque scopes only when the entry lists one, README "Identity
// registry"), to an identity the registry does not list, or on `high_privilege`: high; on
// `sensitive`: medium; a credential added to the same identity within `credential_window_hours`
// (6) of a reported grant, either order: critical, both events in evidence.

/// A successful consent granting `scopes` to the client `identity` (Entra audit
/// "Consent to application": the identity is the client that receives the permission).
fn consent(identity: &str, time: DateTime<Utc>, scopes: &str) -> Event {
    let mut e = Event::new(
        format!("consent-{identity}-{}", time.timestamp()),
        time,
        SourceFormat::EntraAudit,
        EventKind::PermissionGrant,
        identity.into(),
    );
    e.identity_type = IdentityType::Application;
    e.outcome = Outcome::Success;
    e.scopes = Scope::parse_list(scopes);
    e.action = Some("Consent to application".into());
    e.initiator = Some("it-admin".into());
    e
}

fn granted(findings: &[Finding]) -> Vec<(String, DateTime<Utc>, Severity)> {
    findings
        .iter()
        .filter(|f| f.detector == DetectorId::PermissionGranted)
        .map(|f| (f.identity.id.clone(), f.event_time, f.severity))
        .collect()
}

#[test]
fn permission_granted_fires_outside_the_registry_approval_not_within_it() {
    let events = vec![
        // Within approval (system/Observation.rs is approved): nothing.
        consent("0oa-cds", at(1, 9, 0), "system/Observation.rs"),
        // An opaque scope, and the entry lists none: not judged against approval.
        consent("0oa-cds", at(1, 10, 0), "offline_access"),
        // system/Patient.cruds is broader than the approved system/Patient.rs: outside.
        consent("0oa-cds", at(2, 9, 0), "system/Patient.cruds"),
        // The registry lists no "stranger-app": `unregistered_identity` reports it (one finding
        // for all an unregistered identity does), not this detector.
        consent("stranger-app", at(2, 11, 0), "User.Read"),
    ];
    let findings = detect(events, Some(registry()));
    assert_eq!(granted(&findings), [("cds-app".into(), at(2, 9, 0), Severity::High)]);
    assert_eq!(
        summary(&findings),
        [
            (DetectorId::PermissionGranted, "cds-app".into(), at(2, 9, 0)),
            (DetectorId::UnregisteredIdentity, "stranger-app".into(), at(2, 11, 0)),
        ],
        "{findings:#?}"
    );
    let cds = &findings[0];
    assert_eq!(cds.analysis[0].metric, "granted_scope");
    assert_eq!(cds.analysis[0].observed, "system/Patient.cruds");
    assert!(cds.explanation.contains("T1528") && cds.explanation.contains("T1098.003"));
    assert!(cds.explanation.contains("by it-admin"), "{}", cds.explanation);
}

#[test]
fn permission_granted_fires_for_listed_permissions_without_a_registry() {
    let mut failed = consent("owner-app", at(1, 8, 0), "roles/owner");
    failed.outcome = Outcome::Failure;
    let events = vec![
        consent("graph-app", at(1, 9, 0), "Directory.ReadWrite.All openid"),
        // Graph permission names compare without case.
        consent("reader-app", at(1, 9, 5), "mail.read"),
        // system/*.cud includes system/*.write (create, update, delete of every type).
        consent("smart-app", at(1, 9, 10), "system/*.cud"),
        // Narrower than every listed scope: not high privilege.
        consent("narrow-app", at(1, 9, 15), "system/Patient.cud User.Read"),
        consent("gcp-sa", at(1, 9, 20), "roles/iam.serviceAccountTokenCreator"),
        // Auth0 "Create client grant" to the Management API (scope names as in the vendor's own
        // sample, elastic-auth0/test-success-api-ops): it may grant itself anything.
        consent("auth0-m2m", at(1, 9, 25), "read:users create:client_grants"),
        // A refused grant grants nothing.
        failed,
    ];
    let findings = detect(events, None);
    assert_eq!(
        granted(&findings),
        [
            ("graph-app".into(), at(1, 9, 0), Severity::High),
            ("reader-app".into(), at(1, 9, 5), Severity::Medium),
            ("smart-app".into(), at(1, 9, 10), Severity::High),
            ("gcp-sa".into(), at(1, 9, 20), Severity::High),
            ("auth0-m2m".into(), at(1, 9, 25), Severity::High),
        ]
    );
    assert_eq!(findings[0].analysis[0].metric, "high_privilege_scope");
    assert_eq!(findings[0].analysis[0].observed, "Directory.ReadWrite.All");
    assert_eq!(findings[1].analysis[0].metric, "sensitive_scope");
}

#[test]
fn a_grant_after_a_credential_was_added_is_critical_with_both_events() {
    let events = vec![
        credential_change("lab-feed", at(3, 10, 0), "Add service principal credentials"),
        consent("lab-feed", at(3, 13, 0), "Application.ReadWrite.All"),
        // Seven hours apart: outside the six-hour window, high only.
        credential_change("etl-app", at(3, 2, 0), "Add service principal credentials"),
        consent("etl-app", at(3, 9, 0), "Application.ReadWrite.All"),
    ];
    let findings = detect(events, None);
    assert_eq!(
        granted(&findings),
        [
            ("etl-app".into(), at(3, 9, 0), Severity::High),
            ("lab-feed".into(), at(3, 13, 0), Severity::Critical),
        ]
    );
    let f = findings
        .iter()
        .find(|f| f.detector == DetectorId::PermissionGranted && f.identity.id == "lab-feed")
        .expect("finding");
    let evidence: Vec<&str> = f.evidence.iter().map(|e| e.event_id.as_str()).collect();
    let credential = format!("cred-{}", at(3, 10, 0).timestamp());
    let grant = format!("consent-lab-feed-{}", at(3, 13, 0).timestamp());
    assert_eq!(evidence, [credential.as_str(), grant.as_str()]);
    assert!(f.explanation.contains("3 hours before this grant"), "{}", f.explanation);
    // The credential keeps its own finding.
    assert!(
        findings
            .iter()
            .any(|f| f.detector == DetectorId::CredentialAdded && f.identity.id == "lab-feed")
    );
}

#[test]
fn a_credential_added_after_a_grant_escalates_the_grant_to_critical() {
    let events = vec![
        consent("lab-feed", at(3, 10, 0), "Application.ReadWrite.All"),
        credential_change("lab-feed", at(3, 15, 59), "Add service principal credentials"),
        // An approved, ordinary grant is not reported, so a credential after it is only a
        // credential added.
        consent("0oa-cds", at(3, 10, 0), "system/Observation.rs"),
        credential_change("0oa-cds", at(3, 11, 0), "Add service principal credentials"),
    ];
    let findings = detect(events, Some(registry()));
    let g: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.detector == DetectorId::PermissionGranted)
        .collect();
    // lab-feed is not in this registry either: its grant is reported for its high privilege
    // here, and as an unregistered identity's act by `unregistered_identity` (high: what it
    // obtained includes Application.ReadWrite.All).
    assert_eq!(g.len(), 1, "{findings:#?}");
    let unregistered: Vec<(&str, Severity)> = findings
        .iter()
        .filter(|f| f.detector == DetectorId::UnregisteredIdentity)
        .map(|f| (f.identity.id.as_str(), f.severity))
        .collect();
    assert_eq!(unregistered, [("lab-feed", Severity::High)]);
    assert_eq!(
        (g[0].identity.id.as_str(), g[0].severity, g[0].count),
        ("lab-feed", Severity::Critical, 2)
    );
    let evidence: Vec<&str> = g[0].evidence.iter().map(|e| e.event_id.as_str()).collect();
    let grant = format!("consent-lab-feed-{}", at(3, 10, 0).timestamp());
    let credential = format!("cred-{}", at(3, 15, 59).timestamp());
    assert_eq!(evidence, [grant.as_str(), credential.as_str()]);
    assert!(
        g[0].explanation.contains("5 hours after the grant"),
        "{}",
        g[0].explanation
    );
    let metrics: Vec<&str> = g[0].analysis.iter().map(|a| a.metric.as_str()).collect();
    assert_eq!(metrics, ["high_privilege_scope", "credential_added_seconds_apart"]);
    assert!(
        findings
            .iter()
            .any(|f| f.detector == DetectorId::CredentialAdded && f.identity.id == "cds-app")
    );
}

/// The vendor's own Auth0 sample (elastic-auth0, `test-success-api-ops`): "Create aclient", then
/// "Create client grant" giving that client 130 Management API scopes. The grant lands on the
/// client (`details.request.body.client_id`, src/normalize/auth0.rs); the scopes of the
/// detector's documented Auth0 list that the grant holds are its high-privilege ones.
#[test]
fn the_auth0_samples_management_api_grant_is_a_high_privilege_grant() {
    use crate::support::{external, normalize, read};
    use serde_json::Value;
    let sample: Value = serde_json::from_str(&read(
        &external().join("elastic-auth0/test-success-api-ops.excerpt-events1-5.json"),
    ))
    .expect("JSON");
    let records: Vec<Value> = sample["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["json"].clone())
        .collect();
    let events: Vec<Event> = records
        .iter()
        .flat_map(|r| normalize(&r.to_string()).expect("the sample normalizes"))
        .collect();
    let grant = records
        .iter()
        .find(|r| r["data"]["description"] == "Create client grant")
        .expect("the sample has a client grant");
    let body = &grant["data"]["details"]["request"]["body"];
    let client = body["client_id"].as_str().expect("client_id");
    let scopes: Vec<&str> = body["scope"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // detectors/permission_granted.toml, the Auth0 Management API entries.
    let listed = [
        "create:client_grants",
        "update:client_grants",
        "create:clients",
        "update:clients",
        "create:client_keys",
        "update:client_keys",
        "create:role_members",
    ];
    let mut expected: Vec<&str> = listed.into_iter().filter(|s| scopes.contains(s)).collect();
    expected.sort_unstable();
    assert!(!expected.is_empty(), "the sample grants some of them");

    let findings = detect(events, None);
    assert_eq!(granted(&findings).len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(
        (f.detector, f.identity.id.as_str(), f.severity),
        (DetectorId::PermissionGranted, client, Severity::High)
    );
    let mut flagged: Vec<&str> = f
        .analysis
        .iter()
        .filter(|a| a.metric == "high_privilege_scope")
        .filter_map(|a| a.observed.as_str())
        .collect();
    flagged.sort_unstable();
    assert_eq!(flagged, expected);
    assert!(f.title.chars().count() < 120, "a short title: {}", f.title);
}
