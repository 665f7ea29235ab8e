//! FHIR `AuditEvent` (R4 and R5, JSON or XML) per IHE Basic Audit Log Patterns.
//!
//! Who acted: BALP names the client agent by type `110153` (Source Role ID) or `110150`
//! (Application); failing those a `Device` agent that is not the destination, then the requesting
//! agent. Its id is `who.identifier.value`, else `who.reference`, else `who.display`. A person
//! agent that requested the action (e.g. `IRCP`, `humanuser`) is the `on_behalf_of` user; an
//! agent's `policy` is the OAuth token id.
//!
//! What was done: the `restful-interaction` code from `subtype` (R4) or `code`/`category` (R5),
//! else `action` (C/R/U/D/E). Resource type from the first non-patient entity reference, else
//! from the base64 `entity.query` (the HTTP request line), else `Patient` when only a patient is
//! named. Patients from entities of role `1` and R5 `patient`, pseudonymised here.

use base64::Engine;
use chrono::{DateTime, Utc};

use super::json::{Node, codings, has_code, items, str_at, string_at};
use super::{Ctx, ParseError, network_address, parse_time, resource_type_from_path};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};

const FORMAT: SourceFormat = SourceFormat::FhirAuditEvent;
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
/// Identity recorded when an audit event names no acting agent at all.
pub const UNIDENTIFIED: &str = "unidentified";

/// Normalizes a JSON `AuditEvent` or `Bundle` of them.
/// The record is parsed into a borrowed tree: its strings point into the record.
pub fn normalize_json(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
    let value: serde_json_borrow::Value<'_> = serde_json::from_str(ctx.raw).map_err(ParseError::MalformedJson)?;
    normalize_value(ctx, &value, out)
}

/// Normalizes an `AuditEvent` or `Bundle` already in JSON shape (from JSON or XML).
pub fn normalize_value<V: Node>(ctx: &Ctx<'_>, value: &V, out: &mut Vec<Event>) -> Result<(), ParseError> {
    match str_at(value, &["resourceType"]) {
        Some("AuditEvent") => out.push(audit_event(ctx, value, None)?),
        Some("Bundle") => {
            let mut found = 0usize;
            for (i, entry) in items(value.field("entry")).enumerate() {
                let Some(resource) = entry.field("resource") else {
                    continue;
                };
                if str_at(resource, &["resourceType"]) == Some("AuditEvent") {
                    out.push(audit_event(ctx, resource, Some(i))?);
                    found += 1;
                }
            }
            if found == 0 {
                return Err(ParseError::NotAuditEvent("FHIR Bundle without AuditEvent entries"));
            }
        }
        _ => return Err(ParseError::NotAuditEvent("FHIR resource that is not an AuditEvent")),
    }
    Ok(())
}

fn audit_event<V: Node>(ctx: &Ctx<'_>, ae: &V, index: Option<usize>) -> Result<Event, ParseError> {
    let time = event_time(ae)?;
    let event_id = match (str_at(ae, &["id"]), index) {
        (Some(id), _) => id.to_owned(),
        (None, None) => ctx.fallback_id(FORMAT),
        (None, Some(i)) => format!("{}#{i}", ctx.fallback_id(FORMAT)),
    };

    let agents: Vec<&V> = items(ae.field("agent")).collect();
    let client = pick_client(&agents);
    let (identity, identity_name, identity_type) = match client {
        Some(agent) => {
            let (id, name) = who_id(agent).unwrap_or((UNIDENTIFIED.to_owned(), None));
            (id, name, agent_identity_type(agent))
        }
        None => (UNIDENTIFIED.to_owned(), None, IdentityType::Unknown),
    };

    let interaction = interaction(ae);
    let query = items(ae.field("entity")).find(|&e| has_code(e.field("role"), &["24"]) || e.field("query").is_some());
    let request_line = query.and_then(decode_query);
    let interaction = interaction.or_else(|| action_fallback(ae, query.is_some()));
    let kind = kind(ae, interaction);

    let mut event = Event::new(event_id, time, FORMAT, kind, identity);
    event.identity_name = identity_name;
    event.identity_type = identity_type;
    event.interaction = interaction;
    event.action = action_code(ae);
    event.outcome = outcome(ae);
    if event.outcome == Outcome::Failure {
        event.error = string_at(ae, &["outcomeDesc"]).or_else(|| string_at(ae, &["outcome", "detail", "text"]));
    }
    if let Some(agent) = client {
        event.src_ip = agent_network(agent);
    }
    event.on_behalf_of = agents
        .iter()
        .copied()
        .filter(|a| client.is_none_or(|c| !std::ptr::eq(*a, c)))
        .find(|&a| is_true(a.field("requestor")) && is_person(a))
        .and_then(who_id)
        .map(|(id, _)| id);
    event.token_id = agents
        .iter()
        .flat_map(|a| items(a.field("policy")))
        .find_map(Node::text)
        .map(str::to_owned);
    event.purpose_of_use = purposes(ae, &agents);

    let (patients, resource_type) = entities(ctx, ae);
    event.patients = patients;
    event.resource_type = resource_type.or_else(|| {
        request_line
            .as_deref()
            .and_then(|line| resource_type_from_path(request_target(line)))
            .map(str::to_owned)
    });
    if event.resource_type.is_none() && !event.patients.is_empty() {
        event.resource_type = Some("Patient".to_owned());
    }
    if let Some(line) = &request_line {
        let target = request_target(line);
        event.operation = target
            .split(['?', '/'])
            .find(|seg| seg.starts_with('$') && seg.len() > 1)
            .map(str::to_owned);
        if event.operation.is_some() && event.interaction.is_none() {
            event.interaction = Some(Interaction::Operation);
        }
    }
    Ok(event)
}

fn event_time<V: Node>(ae: &V) -> Result<DateTime<Utc>, ParseError> {
    let raw = str_at(ae, &["occurredDateTime"])
        .or_else(|| str_at(ae, &["period", "start"]))
        .or_else(|| str_at(ae, &["occurredPeriod", "start"]))
        .or_else(|| str_at(ae, &["recorded"]))
        .ok_or(ParseError::missing(FORMAT, "recorded"))?;
    parse_time(raw).ok_or(ParseError::bad_time(FORMAT, "recorded"))
}

fn agent_type_codes<V: Node>(agent: &V) -> impl Iterator<Item = &str> {
    codings(agent.field("type"))
        .chain(codings(agent.field("role")))
        .map(|(_, c)| c)
}

fn pick_client<'a, V: Node>(agents: &[&'a V]) -> Option<&'a V> {
    let typed = |code: &str| {
        agents
            .iter()
            .copied()
            .find(|&a| agent_type_codes(a).any(|c| c == code) && who_id(a).is_some())
    };
    typed("110153")
        .or_else(|| typed("110150"))
        .or_else(|| {
            agents.iter().copied().find(|&a| {
                str_at(a, &["who", "reference"]).is_some_and(|r| r.starts_with("Device/"))
                    && !agent_type_codes(a).any(|c| c == "110152")
            })
        })
        .or_else(|| {
            agents
                .iter()
                .copied()
                .find(|&a| is_true(a.field("requestor")) && who_id(a).is_some())
        })
        .or_else(|| {
            agents
                .iter()
                .copied()
                .find(|&a| who_id(a).is_some() && !agent_type_codes(a).any(|c| c == "110152"))
        })
        // A client agent may be typed but anonymous (R5 `who` empty): keep it for its network.
        .or_else(|| {
            agents
                .iter()
                .copied()
                .find(|&a| agent_type_codes(a).any(|c| c == "110153"))
        })
}

/// The agent's id and display name.
fn who_id<V: Node>(agent: &V) -> Option<(String, Option<String>)> {
    let who = agent.field("who")?;
    let display = string_at(who, &["display"]);
    if let Some(id) = string_at(who, &["identifier", "value"]).or_else(|| string_at(who, &["reference"])) {
        return Some((id, display));
    }
    display.map(|d| (d, None))
}

const PERSON_ROLES: &[&str] = &[
    "humanuser",
    "IRCP",
    "AUT",
    "INF",
    "PROV",
    "429577009",
    "UserSamlAgent",
    "UserOauthAgent",
];
const PERSON_REFERENCES: &[&str] = &[
    "Practitioner/",
    "PractitionerRole/",
    "Patient/",
    "RelatedPerson/",
    "Person/",
];

fn is_person<V: Node>(agent: &V) -> bool {
    let reference = str_at(agent, &["who", "reference"]);
    if reference.is_some_and(|r| r.starts_with("Device/") || r.starts_with("Organization/")) {
        return false;
    }
    reference.is_some_and(|r| PERSON_REFERENCES.iter().any(|p| r.starts_with(p)))
        || agent_type_codes(agent).any(|c| PERSON_ROLES.contains(&c))
}

fn agent_identity_type<V: Node>(agent: &V) -> IdentityType {
    let reference = str_at(agent, &["who", "reference"]).unwrap_or("");
    if reference.starts_with("Device/") {
        IdentityType::Device
    } else if is_person(agent) && !agent_type_codes(agent).any(|c| c == "110153" || c == "110150") {
        IdentityType::User
    } else {
        IdentityType::Application
    }
}

fn agent_network<V: Node>(agent: &V) -> Option<String> {
    // R4 network.type 5 is a URI: the server's endpoint, not the client's address.
    let r4 = agent
        .field("network")
        .filter(|&n| str_at(n, &["type"]) != Some("5"))
        .and_then(|n| str_at(n, &["address"]));
    r4.or_else(|| str_at(agent, &["networkString"]))
        .or_else(|| str_at(agent, &["networkUri"]))
        .or_else(|| str_at(agent, &["networkReference", "display"]))
        .and_then(network_address)
}

fn is_true<V: Node>(v: Option<&V>) -> bool {
    v.and_then(Node::boolean) == Some(true) || v.and_then(Node::text) == Some("true")
}

fn restful_code<V: Node>(ae: &V) -> Option<&str> {
    ["subtype", "code", "category", "type"]
        .iter()
        .flat_map(|k| codings(ae.field(k)))
        .find(|(system, _)| *system == Some(RESTFUL))
        .map(|(_, code)| code)
}

fn interaction<V: Node>(ae: &V) -> Option<Interaction> {
    restful_code(ae).and_then(Interaction::from_code)
}

fn action_fallback<V: Node>(ae: &V, has_query: bool) -> Option<Interaction> {
    if !is_rest(ae) {
        return None;
    }
    match str_at(ae, &["action"])? {
        "C" => Some(Interaction::Create),
        "R" => Some(Interaction::Read),
        "U" => Some(Interaction::Update),
        "D" => Some(Interaction::Delete),
        "E" if has_query => Some(Interaction::Search),
        "E" => Some(Interaction::Operation),
        _ => None,
    }
}

fn is_rest<V: Node>(ae: &V) -> bool {
    ["type", "category", "code"]
        .iter()
        .any(|k| has_code(ae.field(k), &["rest"]))
}

fn action_code<V: Node>(ae: &V) -> Option<String> {
    let non_restful = |k: &str| {
        codings(ae.field(k))
            .find(|(s, _)| *s != Some(RESTFUL))
            .map(|(_, c)| c.to_owned())
    };
    let restful = restful_code(ae).map(str::to_owned);
    restful
        .or_else(|| non_restful("subtype"))
        .or_else(|| non_restful("code"))
        .or_else(|| non_restful("type"))
}

/// DICOM event ids (`type` in R4, `code` in R5) that record patient-data access.
const DATA_EVENT_TYPES: &[&str] = &[
    "110106", "110107", "110110", "110112", "ITI-65", "ITI-67", "ITI-68", "ITI-78", "ITI-83",
];

fn kind<V: Node>(ae: &V, interaction: Option<Interaction>) -> EventKind {
    let types = || {
        ["type", "subtype", "category", "code"]
            .into_iter()
            .flat_map(|k| codings(ae.field(k)))
    };
    if interaction.is_some() || is_rest(ae) || types().any(|(_, c)| DATA_EVENT_TYPES.contains(&c)) {
        return EventKind::DataAccess;
    }
    let failed = outcome(ae) == Outcome::Failure;
    if types().any(|(_, c)| c == "110114") {
        return if failed {
            EventKind::AuthFailure
        } else {
            EventKind::TokenIssued
        };
    }
    if types().any(|(_, c)| c == "110113") && failed {
        return EventKind::AuthFailure;
    }
    EventKind::Other
}

fn outcome<V: Node>(ae: &V) -> Outcome {
    // R4 gives a code string; R5 a CodeableConcept in `code` (or the Coding itself).
    let code = ae.field("outcome").and_then(|o| {
        o.text().or_else(|| {
            codings(o.field("code"))
                .next()
                .map(|(_, c)| c)
                .or_else(|| codings(Some(o)).next().map(|(_, c)| c))
        })
    });
    match code {
        Some("0" | "success") => Outcome::Success,
        Some(_) => Outcome::Failure,
        None => Outcome::Unknown,
    }
}

fn purposes<V: Node>(ae: &V, agents: &[&V]) -> Vec<String> {
    let event_level = ["purposeOfEvent", "authorization"]
        .into_iter()
        .flat_map(|k| codings(ae.field(k)));
    let agent_level = agents.iter().flat_map(|a| {
        ["purposeOfUse", "authorization"]
            .into_iter()
            .flat_map(|k| codings(a.field(k)))
    });
    let mut codes: Vec<String> = event_level.chain(agent_level).map(|(_, c)| c.to_owned()).collect();
    codes.sort();
    codes.dedup();
    codes
}

/// Pseudonymised patients and the accessed resource type named by entities.
fn entities<V: Node>(ctx: &Ctx<'_>, ae: &V) -> (Vec<String>, Option<String>) {
    let mut patients = Vec::new();
    let mut resource_type = None;
    let mut add_patient = |reference: &str| {
        let p = ctx.pseudonymizer.patient(reference);
        if !patients.contains(&p) {
            patients.push(p);
        }
    };
    if let Some(reference) = str_at(ae, &["patient", "reference"]) {
        add_patient(reference);
    }
    for entity in items(ae.field("entity")) {
        let reference = str_at(entity, &["what", "reference"]);
        if has_code(entity.field("role"), &["1"]) || reference.is_some_and(|r| r.starts_with("Patient/")) {
            if let Some(r) = reference.or_else(|| str_at(entity, &["what", "identifier", "value"])) {
                add_patient(r);
            }
            continue;
        }
        if resource_type.is_none()
            && let Some(r) = reference.filter(|r| !r.starts_with('#'))
        {
            resource_type = resource_type_from_path(r).map(str::to_owned);
        }
    }
    (patients, resource_type)
}

/// The first line of a base64 `entity.query`: the HTTP request line or URL.
fn decode_query<V: Node>(entity: &V) -> Option<String> {
    let encoded = str_at(entity, &["query"])?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.lines().next().map(|l| l.trim().to_owned())
}

/// The target of an HTTP request line (`GET /r4/Observation?x HTTP/1.1` → `/r4/Observation?x`).
fn request_target(line: &str) -> &str {
    let mut words = line.split_ascii_whitespace();
    match words.next() {
        Some("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD") => words.next().unwrap_or(""),
        Some(first) => first,
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_request_targets() {
        assert_eq!(
            request_target("GET test.fhir.org/r4/Observation?patient=x"),
            "test.fhir.org/r4/Observation?patient=x"
        );
        assert_eq!(
            request_target("POST /r4/Observation/_search HTTP/1.1"),
            "/r4/Observation/_search"
        );
        assert_eq!(
            request_target("http://h/open/Encounter?participant=13"),
            "http://h/open/Encounter?participant=13"
        );
    }
}
