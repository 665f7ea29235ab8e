//! The report as one self-contained HTML page: inline CSS and SVG, no script, no fetch, so it
//! opens offline, archives as one file and prints (each integration on its own page).

use std::fmt::Write as _;

use super::{Attested, Report};

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn tag(t: &super::Attention) -> String {
    let class = if t.serious { "tag serious" } else { "tag" };
    format!("<span class=\"{class}\">{}</span>", esc(&t.text))
}

fn or_dash(s: Option<&str>) -> String {
    s.map(esc)
        .unwrap_or_else(|| "<span class=\"missing\">—</span>".to_owned())
}

fn day(s: &str) -> &str {
    s.get(..10).unwrap_or(s)
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1b1f24; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; border-bottom: 2px solid #1b1f24; padding-bottom: .2rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.meta { color: #57606a; } table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.missing { color: #9a6700; } .unused td { background: #fff8c5; } .unapproved td { background: #ffebe9; }
.tag.serious { background: #ffebe9; border-color: #cf222e; color: #82071e; }
.tag { display: inline-block; border-radius: 3px; padding: 0 .35rem; margin: 0 .2rem .2rem 0; font-size: .85em; background: #fff1c2; border: 1px solid #d4a72c; }
.ok { color: #1a7f37; } .open { font-weight: 600; color: #cf222e; }
dl { display: grid; grid-template-columns: 10rem 1fr; gap: .15rem 1rem; margin: .4rem 0 1rem; } dt { color: #57606a; } dd { margin: 0; }
.chart rect { fill: #0969da; } .chart rect.partial { fill: none; stroke: #0969da; stroke-dasharray: 3 2; } .chart text { font-size: 10px; fill: #57606a; } .chart line { stroke: #8c959f; }
.sign { margin-top: 2rem; border: 1px solid #1b1f24; padding: 1rem; } .sign td { height: 2.2rem; border-bottom: 1px solid #8c959f; }
@media print { body { margin: 0; max-width: none; font-size: 11px; } section.integration { break-before: page; } .sign { break-inside: avoid; } a { color: inherit; text-decoration: none; } }
"#;

/// Renders the report.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let period = format!("{} to {}", day(&report.from), day(&report.to));
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Non-human identity attestation, {period}</title><style>{STYLE}</style></head><body>\n\
         <header><h1>Non-human identity attestation</h1>\
         <p class=\"meta\">Period <b id=\"period\">{from}</b> to <b>{to}</b> (end excluded) · generated {gen} by nhiwatch {ver} · \
         finding status from {source}</p></header>",
        period = esc(&period),
        from = esc(&report.from),
        to = esc(&report.to),
        gen = esc(&report.generated_at),
        ver = esc(&report.version),
        source = esc(&report.status_source),
    );
    summary(&mut h, report);
    for a in &report.integrations {
        integration(&mut h, a);
    }
    h.push_str("</body></html>\n");
    h
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn summary(h: &mut String, report: &Report) {
    let total = report.integrations.len();
    let active = report.integrations.iter().filter(|a| a.events > 0).count();
    let open: usize = report
        .integrations
        .iter()
        .map(|a| a.findings.iter().filter(|f| f.open).count())
        .sum();
    let serious = report.serious();
    let strangers = report.unregistered.len();
    let _ = write!(
        h,
        "<section id=\"summary\"><h2>Summary</h2>\
         <p><b id=\"count-serious\">{serious}</b> integration{serious_s} with access beyond approval or open findings, \
         <b id=\"count-open\">{open}</b> open finding{open_s}, <b id=\"count-unregistered\">{strangers}</b> unregistered \
         identit{strangers_y} active; <b id=\"count-hygiene\">{hygiene}</b> more with registry housekeeping only \
         (<b id=\"count-attention\">{attention}</b> needing attention in all). \
         <b id=\"count-integrations\">{total}</b> registered integration{total_s}, <b id=\"count-active\">{active}</b> active in the period.</p>\
         <table id=\"summary-table\"><thead><tr><th>Integration</th><th>Owner</th><th>Last use</th>\
         <th class=\"num\">Events</th><th class=\"num\">Patients</th><th>Needs attention</th></tr></thead><tbody>",
        attention = report.needing_attention(),
        hygiene = report.needing_attention() - serious,
        serious_s = plural(serious),
        open_s = plural(open),
        strangers_y = if strangers == 1 { "y" } else { "ies" },
        total_s = plural(total),
    );
    for a in report.by_urgency() {
        let tags: String = if a.attention.is_empty() {
            "<span class=\"ok\">nothing</span>".to_owned()
        } else {
            a.attention.iter().map(tag).collect()
        };
        let _ = write!(
            h,
            "<tr data-id=\"{id}\"><td><a href=\"#i-{id}\">{name}</a></td><td>{owner}</td><td>{last}</td>\
             <td class=\"num\">{events}</td><td class=\"num\">{patients}</td><td>{tags}</td></tr>",
            id = esc(&a.id),
            name = esc(a.name.as_deref().unwrap_or(&a.id)),
            owner = or_dash(a.owner.as_deref()),
            last = a
                .last_use
                .as_deref()
                .map(|t| esc(day(t)))
                .unwrap_or_else(|| "never".to_owned()),
            events = a.events,
            patients = a.patients,
        );
    }
    h.push_str("</tbody></table>");
    if !report.unregistered.is_empty() {
        h.push_str(
            "<h3>Identities active but not registered</h3><table id=\"unregistered\"><thead><tr><th>Identity</th><th>Name in the source</th>\
             <th class=\"num\">Events</th><th>Last use</th></tr></thead><tbody>",
        );
        for s in &report.unregistered {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&s.id),
                or_dash(s.name.as_deref()),
                s.events,
                esc(&s.last_use)
            );
        }
        h.push_str("</tbody></table>");
    }
    let _ = writeln!(
        h,
        "<div class=\"sign\"><p>I have reviewed the integrations above for the period {from} to {to}: each remaining \
         active one still has a business need, its owner is current, and its access is no broader than that need, \
         except where noted for remediation.</p><table><tr><th>Reviewed by</th><td></td><th>Title</th><td></td></tr>\
         <tr><th>Signature</th><td></td><th>Date</th><td></td></tr></table></div></section>",
        from = esc(day(&report.from)),
        to = esc(day(&report.to)),
    );
}

fn integration(h: &mut String, a: &Attested) {
    let _ = write!(
        h,
        "<section class=\"integration\" id=\"i-{id}\"><h2>{name}</h2><dl>\
         <dt>Registry id</dt><dd>{id}</dd><dt>Owner</dt><dd>{owner}</dd><dt>Purpose</dt><dd>{purpose}</dd>\
         <dt>Onboarded</dt><dd>{on}</dd><dt>Expires</dt><dd>{exp}</dd><dt>Offboarded</dt><dd>{off}</dd>\
         <dt>Last use</dt><dd class=\"last-use\">{last}</dd><dt>Activity</dt><dd>{events} events, {records} records, \
         {patients} distinct patients</dd></dl>",
        id = esc(&a.id),
        name = esc(a.name.as_deref().unwrap_or(&a.id)),
        owner = or_dash(a.owner.as_deref()),
        purpose = or_dash(a.purpose.as_deref()),
        on = or_dash(a.onboarded_at.as_deref()),
        exp = or_dash(a.expires_at.as_deref()),
        off = a.offboarded_at.as_deref().map(esc).unwrap_or_else(|| "—".to_owned()),
        last = a.last_use.as_deref().map(esc).unwrap_or_else(|| "never".to_owned()),
        events = a.events,
        records = a.records,
        patients = a.patients,
    );
    if !a.attention.is_empty() {
        h.push_str("<p>Needs attention: ");
        for t in &a.attention {
            h.push_str(&tag(t));
        }
        h.push_str("</p>");
    }

    h.push_str(
        "<h3>Scopes: approved against used</h3><table class=\"scopes\"><thead><tr><th>Scope</th><th>Approved</th>\
         <th class=\"num\">Uses</th></tr></thead><tbody>",
    );
    if a.scopes.is_empty() {
        h.push_str("<tr><td colspan=\"3\" class=\"missing\">no approved scopes on record and none granted</td></tr>");
    }
    for s in &a.scopes {
        let (class, note) = match (s.approved, s.judged, s.uses) {
            (true, _, 0) => ("unused", "yes — unused in the period"),
            (true, _, _) => ("used", "yes"),
            (false, true, _) => ("unapproved", "no — granted outside approval"),
            (false, false, _) => (
                "unjudged",
                "not judged — the registry approves no scope of its kind (an identity provider's scope, not a FHIR permission)",
            ),
        };
        let _ = write!(
            h,
            "<tr class=\"{class}\"><td>{}</td><td>{note}</td><td class=\"num\">{}</td></tr>",
            esc(&s.scope),
            s.uses
        );
    }
    h.push_str("</tbody></table>");

    h.push_str("<h3>Resource types touched</h3>");
    if a.resources.is_empty() {
        h.push_str("<p class=\"meta\">None in the period.</p>");
    } else {
        h.push_str(
            "<table class=\"resources\"><thead><tr><th>Resource type</th><th>Interaction</th><th class=\"num\">Events</th>\
             </tr></thead><tbody>",
        );
        for r in &a.resources {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(&r.resource_type),
                esc(&r.interaction),
                r.events
            );
        }
        h.push_str("</tbody></table>");
    }

    h.push_str("<h3>Distinct patients per week</h3>");
    chart(h, a);

    h.push_str("<h3>Findings raised in the period</h3>");
    if a.findings.is_empty() {
        h.push_str("<p class=\"meta no-findings\">None.</p>");
    } else {
        h.push_str(
            "<table class=\"findings\"><thead><tr><th>First seen</th><th>Detector</th><th>Severity</th><th>Status</th>\
             <th>Title</th><th class=\"num\">Hits</th></tr></thead><tbody>",
        );
        for f in &a.findings {
            let _ = write!(
                h,
                "<tr data-finding=\"{id}\"><td>{first}</td><td>{det}</td><td>{sev}</td><td class=\"{class}\">{status}</td>\
                 <td>{title}</td><td class=\"num\">{count}</td></tr>",
                id = esc(&f.id),
                first = esc(&f.first_seen),
                det = esc(&f.detector),
                sev = esc(&f.severity),
                class = if f.open { "open" } else { "closed" },
                status = esc(&f.status),
                title = esc(&f.title),
                count = f.count,
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");
}

/// A bar per week, scaled to the busiest week, with the peak and the first and last week named.
fn chart(h: &mut String, a: &Attested) {
    let weeks = &a.weekly_patients;
    let (width, height, top, bottom) = (640.0_f64, 120.0_f64, 14.0_f64, 18.0_f64);
    let peak = weeks.iter().map(|w| w.patients).max().unwrap_or(0);
    let n = weeks.len().max(1) as f64;
    let slot = width / n;
    let _ = write!(
        h,
        "<svg class=\"chart\" role=\"img\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         aria-label=\"Distinct patients per week, peak {peak}\" data-peak=\"{peak}\"><line x1=\"0\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\"/>",
        base = height - bottom,
    );
    for (i, w) in weeks.iter().enumerate() {
        let bar = if peak == 0 {
            0.0
        } else {
            (height - top - bottom) * w.patients as f64 / peak as f64
        };
        // A week the period cuts is drawn hollow and says so: its count covers fewer days.
        let (class, partial) = if w.days < 7 {
            (
                " class=\"partial\"",
                format!(" (partial week: {} of 7 days in the period)", w.days),
            )
        } else {
            ("", String::new())
        };
        let _ = write!(
            h,
            "<rect{class} x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bar:.1}\" data-week=\"{week}\" data-patients=\"{p}\" data-days=\"{days}\">\
             <title>week of {week}: {p} patients{partial}</title></rect>",
            x = i as f64 * slot + slot * 0.1,
            y = height - bottom - bar,
            bw = slot * 0.8,
            week = esc(&w.week),
            p = w.patients,
            days = w.days,
        );
    }
    if let (Some(first), Some(last)) = (weeks.first(), weeks.last()) {
        let _ = write!(
            h,
            "<text x=\"0\" y=\"{y}\">{}</text><text x=\"{width}\" y=\"{y}\" text-anchor=\"end\">{}</text>\
             <text x=\"0\" y=\"10\">peak {peak}</text>",
            esc(&first.week),
            if last.days < 7 {
                format!("{} (partial)", esc(&last.week))
            } else {
                esc(&last.week)
            },
            y = height - 4.0,
        );
    }
    h.push_str("</svg>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">O'Brien & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Brien &amp; co&lt;/a&gt;"
        );
    }
}
