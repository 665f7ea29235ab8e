//! What the commands print: a finding's line, the findings and run summaries (the command
//! line's, the demo's and the benchmark's).

use crate::findings::{Change, Finding, Update};
use crate::runtime::Stats;
use std::collections::BTreeMap;

/// One finding update as a terminal line (its title escaped: it names the identity).
pub fn finding_line(update: &Update) -> String {
    let f = &update.finding;
    let tag = match update.change {
        Change::New => "",
        Change::Escalated => " (escalated)",
        Change::Folded => " (again)",
    };
    format!(
        "{}  {:<8} {:<24} {}{}",
        f.event_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        f.severity.as_str().to_uppercase(),
        f.detector.as_str(),
        crate::terminal::escape(&f.title),
        tag
    )
}

/// Findings per detector and severity.
pub fn findings_summary(findings: &[Finding]) -> String {
    use std::fmt::Write as _;
    let mut per: BTreeMap<&str, (usize, BTreeMap<&str, usize>)> = BTreeMap::new();
    for f in findings {
        let e = per.entry(f.detector.as_str()).or_default();
        e.0 += 1;
        *e.1.entry(f.severity.as_str()).or_default() += 1;
    }
    let mut s = String::from("findings per detector:\n");
    for (detector, (n, sev)) in per {
        let sev: Vec<String> = sev.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "  {detector:<26} {n:>6}  ({})", sev.join(", "));
    }
    s
}

/// A human summary of pipeline counts; identities are escaped ([`crate::terminal`]).
pub fn summary(stats: &Stats, top: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "records {}  events {}  dead letters {}  skipped {}",
        stats.records,
        stats.events,
        stats.dead_lettered(),
        stats.skipped_total()
    );
    s.push_str(&entries_line(stats));
    let _ = writeln!(s, "events per format:");
    for (format, n) in &stats.by_format {
        let _ = writeln!(s, "  {:<18} {n:>9}", format.as_str());
    }
    for (title, counts) in [
        ("dead letters per reason:", &stats.dead_letters),
        ("skipped per reason:", &stats.skipped),
    ] {
        if !counts.is_empty() {
            let _ = writeln!(s, "{title}");
            for (reason, n) in counts {
                let _ = writeln!(s, "  {reason:<18} {n:>9}");
            }
        }
    }
    let mut identities: Vec<(&String, &u64)> = stats.by_identity.iter().collect();
    identities.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(
        s,
        "events per identity ({} identities, top {}):",
        identities.len(),
        top.min(identities.len())
    );
    for (identity, n) in identities.into_iter().take(top) {
        let identity = crate::terminal::escape(identity);
        let _ = writeln!(s, "  {identity:<40} {n:>9}");
    }
    s
}

/// When pages or `Bundle`s were read (their elements are entries of their own), how every entry
/// ended; empty otherwise, when entries are records.
pub(crate) fn entries_line(stats: &Stats) -> String {
    if stats.entries == stats.records {
        return String::new();
    }
    format!(
        "entries {} (each element of a page or Bundle is one): {} normalized, {} dead-lettered, {} skipped\n",
        stats.entries,
        stats.accepted,
        stats.dead_lettered(),
        stats.skipped_total()
    )
}
