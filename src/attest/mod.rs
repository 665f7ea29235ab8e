//! The attestation report: for each registered integration, what it is approved for against
//! what it did over a period, for a compliance officer to review and sign.
//!
//! Everything comes from the archive (SQL over `events` and `findings`, with the registry as the
//! table `integrations`), so a report can be produced for any past period and reproduced later.
//! Per integration: owner, purpose and dates from the registry; approved scopes against use (an
//! approved SMART scope is used when some successful data access needed a permission inside it,
//! an opaque scope when it was granted); scopes granted outside approval; resource types touched;
//! distinct patients per week (pseudonyms, so a patient counted in two weeks is one patient in
//! the period total); last use; the findings raised in the period with their status (from the
//! findings journal when given: status changes live there, not in the archive). The summary lists
//! what needs attention and the identities seen but not registered.
//!
//! Rendered as self-contained HTML (`html.rs`: no scripts, no fetches, inline SVG charts, print
//! styles), CSV (one row per integration) or JSON (the [`Report`] as is).

mod html;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use serde::Serialize;

use crate::detect::rfc3339;
use crate::findings::Status;
use crate::findings::store::FindingStore;
use crate::registry::{Integration, Registry};
use crate::replay::{QueryError, Sql, period};
use crate::scope::Scope;

pub use html::render as html;

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Start of the period (included), RFC 3339.
    pub from: String,
    /// End of the period (excluded), RFC 3339.
    pub to: String,
    /// When the report was produced (wall clock).
    pub generated_at: String,
    /// The nhiwatch version that produced it.
    pub version: String,
    /// Where the status of findings comes from.
    pub status_source: String,
    /// One entry per registered integration, in registry order.
    pub integrations: Vec<Attested>,
    /// Non-human identities active in the period that the registry does not know.
    pub unregistered: Vec<Stranger>,
}

/// One integration over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attested {
    /// Registry id.
    pub id: String,
    /// Display name.
    pub name: Option<String>,
    /// Who answers for it.
    pub owner: Option<String>,
    /// Why it exists.
    pub purpose: Option<String>,
    /// Went live.
    pub onboarded_at: Option<String>,
    /// Approval lapses.
    pub expires_at: Option<String>,
    /// Retired.
    pub offboarded_at: Option<String>,
    /// Latest activity before the end of the period (any time in the archive).
    pub last_use: Option<String>,
    /// Activity events (successful data access and token grants) in the period.
    pub events: u64,
    /// Records read or written in the period.
    pub records: u64,
    /// Distinct patients touched in the period.
    pub patients: u64,
    /// Distinct patients per week (Monday), every week of the period.
    pub weekly_patients: Vec<Week>,
    /// Approved scopes with their use, then granted scopes outside approval.
    pub scopes: Vec<ScopeUse>,
    /// Resource types touched, by interaction.
    pub resources: Vec<ResourceUse>,
    /// Findings raised in the period.
    pub findings: Vec<FindingRow>,
    /// What the reviewer should look at.
    pub attention: Vec<Attention>,
}

/// One thing a reviewer should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attention {
    /// In words.
    pub text: String,
    /// Access beyond approval (activity after retirement, scopes outside approval, open
    /// findings), as opposed to housekeeping (missing owner or expiry, unused scopes).
    pub serious: bool,
}

/// Distinct patients in one week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Week {
    /// The Monday the week starts on, `YYYY-MM-DD`.
    pub week: String,
    /// Distinct patients.
    pub patients: u64,
    /// Days of the week inside the period: 7, or fewer for a first or last week the period
    /// cuts (a partial week's count is not comparable with the others').
    pub days: u32,
}

/// A scope and its use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScopeUse {
    /// The scope.
    pub scope: String,
    /// Whether the registry approves it.
    pub approved: bool,
    /// Whether the registry's approval applies to it: always for an approved scope and for a
    /// SMART scope; for an opaque one (an identity provider's `<resource>/.default`, `openid`)
    /// only when the entry approves some opaque scope (see [`Integration::approves_scope`]).
    /// A grant not judged is listed, not flagged.
    pub judged: bool,
    /// Data accesses it was needed for (SMART scopes) or grants that carried it (others).
    pub uses: u64,
}

impl ScopeUse {
    /// Granted outside the registry's approval, where its approval applies.
    pub fn outside_approval(&self) -> bool {
        !self.approved && self.judged
    }
}

/// A resource type and interaction touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceUse {
    /// FHIR resource type.
    pub resource_type: String,
    /// FHIR interaction.
    pub interaction: String,
    /// Successful accesses.
    pub events: u64,
}

/// A finding in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRow {
    /// Finding id.
    pub id: String,
    /// Detector.
    pub detector: String,
    /// Severity.
    pub severity: String,
    /// Status (from the journal when given, else as archived).
    pub status: String,
    /// Whether the status counts as open (new or acknowledged).
    pub open: bool,
    /// First event.
    pub first_seen: String,
    /// Title.
    pub title: String,
    /// Hits folded into it.
    pub count: u64,
}

/// An identity the registry does not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stranger {
    /// The id in the events.
    pub id: String,
    /// Its name in the source.
    pub name: Option<String>,
    /// Activity events in the period.
    pub events: u64,
    /// Latest activity in the period.
    pub last_use: String,
}

impl Report {
    /// The integrations most urgent first: access after retirement, then other access beyond
    /// approval or open findings (more serious items first), then housekeeping only, then
    /// nothing; by id within each.
    pub fn by_urgency(&self) -> Vec<&Attested> {
        let rank = |a: &Attested| {
            let serious = a.attention.iter().filter(|t| t.serious).count();
            let retired = a
                .attention
                .iter()
                .any(|t| t.serious && t.text.starts_with(ACTIVE_AFTER));
            let class = match (retired, serious, a.attention.is_empty()) {
                (true, _, _) => 0,
                (false, 1.., _) => 1,
                (false, 0, false) => 2,
                (false, 0, true) => 3,
            };
            (class, std::cmp::Reverse(serious), a.id.clone())
        };
        let mut out: Vec<&Attested> = self.integrations.iter().collect();
        out.sort_by_cached_key(|a| rank(a));
        out
    }

    /// Integrations with at least one attention item.
    pub fn needing_attention(&self) -> usize {
        self.integrations.iter().filter(|i| !i.attention.is_empty()).count()
    }

    /// Integrations with a serious item: access beyond approval or open findings.
    pub fn serious(&self) -> usize {
        self.integrations
            .iter()
            .filter(|i| i.attention.iter().any(|a| a.serious))
            .count()
    }
}

/// Rows of an answer as text cells (`None` for null), every column cast to text.
fn text_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>, QueryError> {
    let mut out = Vec::new();
    for b in batches {
        let columns = b
            .columns()
            .iter()
            .map(|c| cast(c, &DataType::Utf8).map_err(|e| QueryError::Invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                columns
                    .iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        (!s.is_null(r)).then(|| s.value(r).to_owned())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Column `i` of every row, as integers (counts, micros of timestamps).
fn int_column(batches: &[RecordBatch], i: usize) -> Result<Vec<Option<i64>>, QueryError> {
    let mut out = Vec::new();
    for b in batches {
        let c = cast(b.column(i), &DataType::Int64).map_err(|e| QueryError::Invalid(e.to_string()))?;
        let a = c.as_primitive::<Int64Type>();
        out.extend((0..a.len()).map(|r| (!a.is_null(r)).then(|| a.value(r))));
    }
    Ok(out)
}

fn count(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

fn micros_rfc3339(v: Option<i64>) -> Option<String> {
    v.map(|us| rfc3339(us.div_euclid(1_000_000)))
}

/// Activity: the engine's definition (successful data access or token grant).
const ACTIVITY: &str = "e.kind IN ('data_access', 'token_issued') AND e.outcome <> 'failure'";
/// The period, with partition pruning.
const PERIOD: &str =
    "e.date >= substr($from, 1, 10) AND e.date <= substr($to, 1, 10) AND e.time >= $from AND e.time < $to";

/// Builds the report for `[from, to)` from the archive behind `sql`. `journal`, when given, is
/// the findings store whose status (acknowledged, resolved, suppressed…) the report shows.
pub async fn build(
    sql: &Sql,
    registry: &Registry,
    journal: Option<&FindingStore>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Report, QueryError> {
    sql.register_registry(registry)?;
    let params = period(from, to);
    let run = |q: String| {
        let params = params.clone();
        async move { sql.query(&q, &params).await }
    };

    // Activity in the period, per integration.
    let a = run(format!(
        "SELECT i.id, count(*), sum(COALESCE(e.records, 0)) FROM events e JOIN integrations i ON i.seen_as = e.identity \
         WHERE {PERIOD} AND {ACTIVITY} GROUP BY i.id"
    ))
    .await?;
    let ids = text_rows(&a.batches)?;
    let (events, records) = (int_column(&a.batches, 1)?, int_column(&a.batches, 2)?);
    let mut activity: HashMap<String, (u64, u64)> = HashMap::new();
    for (r, row) in ids.iter().enumerate() {
        if let Some(id) = &row[0] {
            activity.insert(id.clone(), (count(events[r]), count(records[r])));
        }
    }

    // Last use, over the whole archive before the end of the period.
    let a = run(format!(
        "SELECT i.id, max(e.time) FROM events e JOIN integrations i ON i.seen_as = e.identity \
         WHERE e.date <= substr($to, 1, 10) AND e.time < $to AND {ACTIVITY} GROUP BY i.id"
    ))
    .await?;
    let last: HashMap<String, i64> = text_rows(&a.batches)?
        .into_iter()
        .zip(int_column(&a.batches, 1)?)
        .filter_map(|(row, t)| Some((row[0].clone()?, t?.div_euclid(1_000_000))))
        .collect();

    // Scopes granted or presented on activity.
    let a = run(format!(
        "SELECT id, scope, count(*) FROM (SELECT i.id, unnest(e.scopes) AS scope FROM events e \
         JOIN integrations i ON i.seen_as = e.identity WHERE {PERIOD} AND {ACTIVITY}) GROUP BY id, scope"
    ))
    .await?;
    let mut granted: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for (row, n) in text_rows(&a.batches)?.into_iter().zip(int_column(&a.batches, 2)?) {
        if let (Some(id), Some(scope)) = (row[0].clone(), row[1].clone()) {
            granted.entry(id).or_default().push((scope, count(n)));
        }
    }

    // Resource types by interaction.
    let a = run(format!(
        "SELECT i.id, e.resource_type, \
         CASE WHEN e.interaction = 'operation' THEN COALESCE(e.operation, 'operation') ELSE e.interaction END, \
         count(*) FROM events e JOIN integrations i ON i.seen_as = e.identity \
         WHERE {PERIOD} AND e.kind = 'data_access' AND e.outcome <> 'failure' AND e.resource_type IS NOT NULL \
         AND e.interaction IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ))
    .await?;
    let mut resources: HashMap<String, Vec<ResourceUse>> = HashMap::new();
    for (row, n) in text_rows(&a.batches)?.into_iter().zip(int_column(&a.batches, 3)?) {
        if let [Some(id), Some(rt), Some(interaction), _] = &row[..] {
            resources.entry(id.clone()).or_default().push(ResourceUse {
                resource_type: rt.clone(),
                interaction: interaction.clone(),
                events: count(n),
            });
        }
    }

    // Distinct patients per week and in the whole period.
    let pseudonyms = format!(
        "SELECT i.id, e.time, unnest(e.patients) AS p FROM events e JOIN integrations i ON i.seen_as = e.identity \
         WHERE {PERIOD} AND e.kind = 'data_access' AND e.outcome <> 'failure'"
    );
    let a = run(format!(
        "SELECT id, CAST(date_trunc('week', time) AS DATE), count(DISTINCT p) FROM ({pseudonyms}) GROUP BY 1, 2"
    ))
    .await?;
    let mut weekly: HashMap<String, BTreeMap<String, u64>> = HashMap::new();
    for (row, n) in text_rows(&a.batches)?.into_iter().zip(int_column(&a.batches, 2)?) {
        if let (Some(id), Some(week)) = (row[0].clone(), row[1].clone()) {
            weekly.entry(id).or_default().insert(week, count(n));
        }
    }
    let a = run(format!("SELECT id, count(DISTINCT p) FROM ({pseudonyms}) GROUP BY id")).await?;
    let patients: HashMap<String, u64> = text_rows(&a.batches)?
        .into_iter()
        .zip(int_column(&a.batches, 1)?)
        .filter_map(|(row, n)| Some((row[0].clone()?, count(n))))
        .collect();

    // Findings raised in the period, in their latest state.
    let mut findings: HashMap<String, Vec<FindingRow>> = HashMap::new();
    for f in sql.findings_in(from, to).await? {
        let status = journal
            .and_then(|j| j.get(&f.id))
            .map(|s| s.status_at(now))
            .unwrap_or(f.status);
        findings.entry(f.identity.id.clone()).or_default().push(FindingRow {
            id: f.id.clone(),
            detector: f.detector.to_string(),
            severity: f.severity.to_string(),
            status: status.to_string(),
            open: matches!(status, Status::New | Status::Acknowledged),
            first_seen: rfc3339(f.event_time.timestamp()),
            title: f.title.clone(),
            count: f.count,
        });
    }

    // Identities the registry does not know.
    let a = run(format!(
        "SELECT e.identity, max(e.identity_name), count(*), max(e.time) FROM events e \
         LEFT JOIN integrations i ON i.seen_as = e.identity \
         WHERE i.id IS NULL AND {PERIOD} AND {ACTIVITY} AND e.identity_type <> 'user' \
         GROUP BY e.identity ORDER BY 3 DESC, 1"
    ))
    .await?;
    let unregistered = text_rows(&a.batches)?
        .into_iter()
        .zip(int_column(&a.batches, 2)?)
        .zip(int_column(&a.batches, 3)?)
        .filter_map(|((row, n), t)| {
            Some(Stranger {
                id: row[0].clone()?,
                name: row[1].clone(),
                events: count(n),
                last_use: micros_rfc3339(t)?,
            })
        })
        .collect();

    let weeks = weeks_of(from, to);
    let integrations = registry
        .entries()
        .iter()
        .map(|entry| {
            let id = &entry.id;
            let (events, records) = activity.get(id).copied().unwrap_or_default();
            let mut rows = findings.remove(id).unwrap_or_default();
            rows.sort_by(|a, b| (&a.first_seen, &a.id).cmp(&(&b.first_seen, &b.id)));
            let per_week = weekly.remove(id).unwrap_or_default();
            let mut attested = Attested {
                id: id.clone(),
                name: entry.name.clone(),
                owner: entry.owner.clone(),
                purpose: entry.purpose.clone(),
                onboarded_at: entry.onboarded_at.map(|t| rfc3339(t.timestamp())),
                expires_at: entry.expires_at.map(|t| rfc3339(t.timestamp())),
                offboarded_at: entry.offboarded_at.map(|t| rfc3339(t.timestamp())),
                last_use: last.get(id).map(|&t| rfc3339(t)),
                events,
                records,
                patients: patients.get(id).copied().unwrap_or(0),
                weekly_patients: weeks
                    .iter()
                    .map(|w| Week {
                        week: w.clone(),
                        patients: per_week.get(w).copied().unwrap_or(0),
                        days: days_in(w, from, to),
                    })
                    .collect(),
                scopes: scope_use(
                    entry,
                    granted.get(id).map(Vec::as_slice).unwrap_or_default(),
                    resources.get(id).map(Vec::as_slice).unwrap_or_default(),
                ),
                resources: resources.remove(id).unwrap_or_default(),
                findings: rows,
                attention: Vec::new(),
            };
            attested.attention = attention(entry, &attested, last.get(id).copied(), from, to);
            attested
        })
        .collect();

    Ok(Report {
        from: rfc3339(from.timestamp()),
        to: rfc3339(to.timestamp()),
        generated_at: rfc3339(now.timestamp()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        status_source: if journal.is_some() {
            "the findings journal (status changes by analysts included)".to_owned()
        } else {
            "the archive (status at detection; give the findings journal for later changes)".to_owned()
        },
        integrations,
        unregistered,
    })
}

/// The Mondays (`YYYY-MM-DD`) of every week that overlaps `[from, to)`.
fn weeks_of(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    use chrono::Datelike;
    let mut day = from.date_naive() - Duration::days(i64::from(from.weekday().num_days_from_monday()));
    let mut out = Vec::new();
    while day.and_hms_opt(0, 0, 0).is_some_and(|t| t.and_utc() < to) {
        out.push(day.to_string());
        day += Duration::days(7);
    }
    out
}

/// Whole or partial days of the week starting on the Monday `week` (`YYYY-MM-DD`) that lie in
/// `[from, to)`.
fn days_in(week: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let Some(start) = chrono::NaiveDate::parse_from_str(week, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
    else {
        return 0;
    };
    (0..7)
        .filter(|d| {
            let day = start + Duration::days(*d);
            day < to && day + Duration::days(1) > from
        })
        .count() as u32
}

/// Permission letter of an interaction (`r`, `s`, `c`, `u`, `d`), as SMART v2 names them; an
/// operation (`$everything`, `$export`…) reads the type it runs on.
fn permission(interaction: &str) -> Option<char> {
    Some(match interaction {
        "read" | "vread" | "history" => 'r',
        "search" => 's',
        "create" => 'c',
        "update" | "patch" => 'u',
        "delete" => 'd',
        op if op.starts_with('$') => 'r',
        _ => return None,
    })
}

/// Approved scopes with their use, then the scopes granted outside approval.
fn scope_use(entry: &Integration, granted: &[(String, u64)], resources: &[ResourceUse]) -> Vec<ScopeUse> {
    let mut out: Vec<ScopeUse> = entry
        .approved_scopes
        .iter()
        .map(|approved| {
            let text = approved.to_string();
            let context = text.split('/').next().unwrap_or("system");
            let smart = text.contains('/');
            // What the scope itself names (`Observation` of `system/Observation.rs`).
            let own_type = text
                .split('/')
                .nth(1)
                .and_then(|t| t.split('.').next())
                .filter(|t| *t != "*")
                .unwrap_or("Patient");
            let reads_own = approved.contains(&Scope::parse(&format!("{context}/{own_type}.r")));
            let uses = if smart {
                resources
                    .iter()
                    .filter(|r| {
                        // A bulk export reads every type its token's scopes allow.
                        (r.interaction == "$export" && reads_own)
                            || permission(&r.interaction).is_some_and(|p| {
                                approved.contains(&Scope::parse(&format!("{context}/{}.{p}", r.resource_type)))
                            })
                    })
                    .map(|r| r.events)
                    .sum()
            } else {
                granted
                    .iter()
                    .filter(|(g, _)| Scope::parse(g) == *approved)
                    .map(|(_, n)| n)
                    .sum()
            };
            ScopeUse {
                scope: text,
                approved: true,
                judged: true,
                uses,
            }
        })
        .collect();
    let outside: BTreeSet<(String, u64, bool)> = granted
        .iter()
        .filter_map(|(g, uses)| {
            let scope = Scope::parse(g);
            // A SMART permission outside approval is always an attestation item (none approved
            // approves none); an opaque one only where the registry approves opaque scopes.
            let judged = scope.as_smart().is_some() || entry.approves_scope(&scope).is_some();
            (!entry.approved_scopes.iter().any(|a| a.contains(&scope))).then(|| (g.clone(), *uses, judged))
        })
        .collect();
    out.extend(outside.into_iter().map(|(scope, uses, judged)| ScopeUse {
        scope,
        approved: false,
        judged,
        uses,
    }));
    out
}

/// How the attention item of activity after retirement begins (the most urgent of all).
const ACTIVE_AFTER: &str = "active after its";

/// The attention items of one integration (last used at `last_use`, Unix seconds), serious
/// ones first.
fn attention(
    entry: &Integration,
    a: &Attested,
    last_use: Option<i64>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Attention> {
    let mut out = Vec::new();
    let mut push = |text: String, serious: bool| out.push(Attention { text, serious });
    if let Some((retired, key)) = entry.retired_at()
        && last_use.is_some_and(|t| t > retired.timestamp())
    {
        push(format!("{ACTIVE_AFTER} {key} ({})", rfc3339(retired.timestamp())), true);
    } else if let Some(expires) = entry.expires_at
        && expires > to - Duration::days(1)
        && expires <= to + Duration::days(30)
    {
        push(format!("approval lapses {}", rfc3339(expires.timestamp())), false);
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let outside = a.scopes.iter().filter(|s| s.outside_approval()).count();
    if outside > 0 {
        push(
            format!("{outside} scope{} granted outside approval", plural(outside)),
            true,
        );
    }
    let open = a.findings.iter().filter(|f| f.open).count();
    if open > 0 {
        push(format!("{open} open finding{}", plural(open)), true);
    }
    if a.events == 0 && entry.retired_at().is_none_or(|(t, _)| t > to) {
        match entry.onboarded_at.filter(|o| *o > from) {
            // Onboarded during the period: not yet in use is not yet stale.
            Some(o) => push(format!("not used since onboarding ({})", rfc3339(o.timestamp())), false),
            None => push("no activity in the period".to_owned(), false),
        }
    }
    let unused = a.scopes.iter().filter(|s| s.approved && s.uses == 0).count();
    if unused > 0 && a.events > 0 {
        push(format!("{unused} approved scope{} unused", plural(unused)), false);
    }
    for key in entry.missing() {
        let what = if key == "expires_at" { "expiry" } else { key };
        push(format!("no {what} on record"), false);
    }
    out
}

/// The report as CSV: one row per integration.
pub fn csv(report: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "name",
        "owner",
        "purpose",
        "onboarded_at",
        "expires_at",
        "offboarded_at",
        "last_use",
        "events",
        "records",
        "distinct_patients",
        "approved_scopes",
        "unused_scopes",
        "scopes_outside_approval",
        "resource_types",
        "open_findings",
        "closed_findings",
        "attention",
    ])?;
    for a in &report.integrations {
        let join = |it: &mut dyn Iterator<Item = String>| it.collect::<Vec<_>>().join(" ");
        let types: BTreeSet<&str> = a.resources.iter().map(|r| r.resource_type.as_str()).collect();
        let open = a.findings.iter().filter(|f| f.open).count();
        w.write_record([
            a.id.clone(),
            a.name.clone().unwrap_or_default(),
            a.owner.clone().unwrap_or_default(),
            a.purpose.clone().unwrap_or_default(),
            a.onboarded_at.clone().unwrap_or_default(),
            a.expires_at.clone().unwrap_or_default(),
            a.offboarded_at.clone().unwrap_or_default(),
            a.last_use.clone().unwrap_or_default(),
            a.events.to_string(),
            a.records.to_string(),
            a.patients.to_string(),
            join(&mut a.scopes.iter().filter(|s| s.approved).map(|s| s.scope.clone())),
            join(
                &mut a
                    .scopes
                    .iter()
                    .filter(|s| s.approved && s.uses == 0)
                    .map(|s| s.scope.clone()),
            ),
            join(
                &mut a
                    .scopes
                    .iter()
                    .filter(|s| s.outside_approval())
                    .map(|s| s.scope.clone()),
            ),
            join(&mut types.iter().map(|t| t.to_string())),
            open.to_string(),
            (a.findings.len() - open).to_string(),
            a.attention
                .iter()
                .map(|t| t.text.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_cover_the_period_from_its_monday() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).expect("time").with_timezone(&Utc);
        // Wednesday 2026-01-07 to Monday 2026-01-19 (excluded): the weeks of 5 and 12 January.
        assert_eq!(
            weeks_of(t("2026-01-07T00:00:00Z"), t("2026-01-19T00:00:00Z")),
            ["2026-01-05", "2026-01-12"]
        );
        assert_eq!(
            weeks_of(t("2026-01-05T00:00:00Z"), t("2026-01-19T00:00:01Z")),
            ["2026-01-05", "2026-01-12", "2026-01-19"]
        );
        // Wednesday to Monday: the first week has its last five days, the second all seven.
        let (from, to) = (t("2026-01-07T00:00:00Z"), t("2026-01-19T00:00:00Z"));
        assert_eq!(days_in("2026-01-05", from, to), 5);
        assert_eq!(days_in("2026-01-12", from, to), 7);
        // A period ending on Tuesday noon: that week has Monday and the part of Tuesday.
        assert_eq!(days_in("2026-01-19", from, t("2026-01-20T12:00:00Z")), 2);
    }

    #[test]
    fn approved_smart_scopes_are_used_by_the_permissions_they_grant() {
        let registry = Registry::parse(
            "[[integration]]\nid = \"a\"\napproved_scopes = [\"system/Observation.rs\", \"system/Patient.r\", \"system/Condition.r\"]\n",
            std::path::Path::new("r.toml"),
        )
        .expect("registry");
        let entry = &registry.entries()[0];
        let granted = vec![
            ("system/Observation.rs".to_owned(), 10),
            ("system/Observation.cruds".to_owned(), 2),
            // Entra's grant of an application permission set: opaque, and the registry lists
            // no opaque scope, so it is not judged (README, "Identity registry").
            ("https://graph.microsoft.com/.default".to_owned(), 4),
        ];
        let resources = vec![
            ResourceUse {
                resource_type: "Observation".into(),
                interaction: "search".into(),
                events: 7,
            },
            ResourceUse {
                resource_type: "Patient".into(),
                interaction: "read".into(),
                events: 3,
            },
            ResourceUse {
                resource_type: "Patient".into(),
                interaction: "delete".into(),
                events: 1,
            },
        ];
        let uses: Vec<(String, bool, bool, u64)> = scope_use(entry, &granted, &resources)
            .into_iter()
            .map(|s| (s.scope, s.approved, s.judged, s.uses))
            .collect();
        assert_eq!(
            uses,
            // Approved scopes in the registry's (sorted) order, then those outside approval.
            [
                ("system/Condition.r".to_owned(), true, true, 0),
                ("system/Observation.rs".to_owned(), true, true, 7),
                ("system/Patient.r".to_owned(), true, true, 3),
                ("https://graph.microsoft.com/.default".to_owned(), false, false, 4),
                ("system/Observation.cruds".to_owned(), false, true, 2),
            ]
        );
    }

    /// README ("Attestation"): a SMART permission granted outside approval is an item even
    /// where the entry approves no scope at all (none approved approves none); an opaque grant
    /// waits for the entry to approve some opaque scope.
    #[test]
    fn a_smart_grant_to_an_entry_approving_nothing_is_outside_approval() {
        let registry = Registry::parse(
            "[[integration]]\nid = \"a\"\n\n[[integration]]\nid = \"b\"\napproved_scopes = [\"openid\"]\n",
            std::path::Path::new("r.toml"),
        )
        .expect("registry");
        let granted = vec![
            ("system/*.cruds".to_owned(), 1),
            ("https://graph.microsoft.com/.default".to_owned(), 2),
        ];
        let judged = |entry: &Integration| -> Vec<(String, bool)> {
            scope_use(entry, &granted, &[])
                .into_iter()
                .filter(|s| !s.approved)
                .map(|s| (s.scope.clone(), s.outside_approval()))
                .collect()
        };
        assert_eq!(
            judged(&registry.entries()[0]),
            [
                ("https://graph.microsoft.com/.default".to_owned(), false),
                ("system/*.cruds".to_owned(), true),
            ]
        );
        // An entry approving an opaque scope has its opaque grants judged too.
        assert_eq!(
            judged(&registry.entries()[1]),
            [
                ("https://graph.microsoft.com/.default".to_owned(), true),
                ("system/*.cruds".to_owned(), true),
            ]
        );
    }
}
