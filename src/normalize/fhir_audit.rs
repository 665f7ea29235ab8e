//! FHIR `AuditEvent` (R4 and R5, JSON or XML) per IHE Basic Audit Log Patterns.
//!
//! Who acted — the client, the non-human identity this product watches — is decided by the
//! agents' roles in the data flow, as IHE BALP (ITI Basic Audit Log Patterns, §3.x "Basic
//! AuditEvent" patterns) and DICOM PS3.15 A.5 define them: the Source (`110153`) sends the data,
//! the Destination (`110152`) receives it.
//!
//! | step | rule | BALP/FHIR example |
//! |---|---|---|
//! | 0 | people are never the client: `who.reference` to Practitioner, PractitionerRole, Patient, RelatedPerson or Person, or a person role (`humanuser`, `IRCP`, `AUT`, `INF`, `PROV`, `ATND`, SNOMED `429577009`, BALP `UserSamlAgent`/`UserOauthAgent`, the Swiss EPR `HCP`, `ASS`, `REP`, `PAT`, `PADM`, `DADM`) — unless it is a `Device` or `Organization` | `IRCP` John Smith |
//! | 1 | the server is recognisable: R4 `network.type` 5 (URI) or an address that is a URL, an R5 `networkUri` that is a URL (not `urn:ipv6:…`), a name that is a URL, or the `source.observer` when `source.type` says the observer is a server (security-source-type 3, 4, 5, 6). Of the Source/Destination agents, the one that is not the server is the client | Read (client-recorded): server `Device/ex-device` 110153 with type 5 → client `myMachine.example.org` 110152 |
//! | 2 | else by data flow of the interaction: read, vread, history and capabilities send data to the client, so the client is the Destination; search, create, update, patch, delete, operations, batch and transaction are sent by the client, so it is the Source | Query: client 110153 |
//! | 3 | else a Source/Destination agent that is the `source.observer` of client type (1 user device, 2 data interface) | MHD Provide Bundle recorded by the Document Source |
//! | 4 | else the Source, then `110150` (Application), then a `Device` that is not the Destination, then a requesting machine agent, then any named machine agent that is not the server | AuthZ consent: `110150` `Device/ex-device` |
//! | 5 | else a typed but anonymous Source or Destination (R5 `who` empty), kept for its network address; with no machine agent at all, the requesting person is the actor (`identity_type` `user`: a human event, never a non-human identity) | SAML poke, break-glass |
//!
//! The client's id is `who.identifier.value`, else `who.reference`, else `who.display`, else the
//! R4 `agent.name`. A person agent — the requesting one first — is the `on_behalf_of` user; an
//! agent's `policy` is the OAuth token id. `src_ip` is the client's network address when it is an
//! IP address (R4 `network.type` 2, R5 `networkString`).
//!
//! What was done: the `restful-interaction` code from `subtype` (R4) or `code`/`category` (R5),
//! else the HTTP request line in the base64 `entity.query` read by the FHIR REST grammar
//! ([`super::fhir_rest`]), else `action` (C/R/U/D/E). Resource type from the first non-patient
//! entity reference, else from the request line, else `Patient` when only a patient is named. Patients from entities of role `1` and R5 `patient`, pseudonymised here.

use base64::Engine;
use chrono::{DateTime, Utc};

use super::fhir_rest::Route;
use super::json::{Node, codings, has_code, items, str_at, string_at};
use super::{
    Ctx, Entries, Judge, MAX_PAGE_ELEMENTS, ParseError, UNIDENTIFIED, fhir_xml, network_address, parse_time,
    resource_type_from_path,
};
use crate::event::{Event, EventKind, IdentityType, Interaction, Outcome, SourceFormat};

const FORMAT: SourceFormat = SourceFormat::FhirAuditEvent;
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";

/// Judges a JSON `AuditEvent`, or each entry of a `Bundle` of them: the record is parsed into a
/// borrowed tree, whose strings point into it.
pub fn judge_json<'r>(ctx: &Ctx<'_>, text: &'r str, judge: &mut Judge<'r, '_>) {
    match serde_json::from_str::<serde_json_borrow::Value<'_>>(text) {
        Ok(value) => {
            let entries = std::cell::OnceCell::new();
            judge_value(ctx, &value, judge, |i| {
                let entries = entries.get_or_init(|| json_entries(text));
                entries.get(i).copied().flatten().unwrap_or(text)
            });
        }
        Err(error) => judge.reject(None, ParseError::json(error)),
    }
}

/// Judges an XML `AuditEvent`, or each entry of a `Bundle` of them.
pub fn judge_xml<'r>(ctx: &Ctx<'_>, text: &'r str, judge: &mut Judge<'r, '_>) {
    match fhir_xml::read(text) {
        Ok(resource) => judge_value(ctx, &resource.value, judge, |i| {
            resource
                .entries
                .get(i)
                .cloned()
                .flatten()
                .and_then(|r| text.get(r))
                .unwrap_or(text)
        }),
        Err(error) => judge.reject(None, error),
    }
}

/// Normalizes a JSON `AuditEvent` or `Bundle`, all or nothing (an element of a page).
pub fn normalize_json(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
    let mut entries = Entries::default();
    judge_json(ctx, ctx.raw, &mut Judge::new(out, &mut entries));
    entries.into_result().map(drop)
}

/// Normalizes an XML `AuditEvent` or `Bundle`, all or nothing.
pub fn normalize_xml(ctx: &Ctx<'_>, out: &mut Vec<Event>) -> Result<(), ParseError> {
    let mut entries = Entries::default();
    judge_xml(ctx, ctx.raw, &mut Judge::new(out, &mut entries));
    entries.into_result().map(drop)
}

/// The text of each JSON `Bundle` entry's `resource`, read again only when an entry is refused,
/// so that the dead letter keeps the entry rather than the whole `Bundle`.
fn json_entries(text: &str) -> Vec<Option<&str>> {
    #[derive(serde::Deserialize)]
    struct Bundle<'a> {
        #[serde(borrow, default)]
        entry: Vec<Entry<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Entry<'a> {
        #[serde(borrow, default)]
        resource: Option<&'a serde_json::value::RawValue>,
    }
    serde_json::from_str::<Bundle<'_>>(text)
        .map(|b| b.entry.into_iter().map(|e| e.resource.map(|r| r.get())).collect())
        .unwrap_or_default()
}

/// Judges an `AuditEvent` or `Bundle` already in JSON shape (from JSON or XML): an `AuditEvent`
/// is one entry; each entry of a `Bundle` is one, its text given by `entry_text`. Entries that
/// are not `AuditEvent`s are skipped.
fn judge_value<'r, V: Node>(
    ctx: &Ctx<'_>,
    value: &V,
    judge: &mut Judge<'r, '_>,
    entry_text: impl Fn(usize) -> &'r str,
) {
    match str_at(value, &["resourceType"]) {
        Some("AuditEvent") => judge.entry(
            None,
            || "",
            |out| {
                out.push(audit_event(ctx, value, None)?);
                Ok(())
            },
        ),
        Some("Bundle") => {
            let entries = items(value.field("entry"));
            let (count, _) = entries.size_hint();
            if count > MAX_PAGE_ELEMENTS {
                let error = ParseError::TooComplex {
                    what: "entries in a Bundle",
                    limit: MAX_PAGE_ELEMENTS,
                };
                return judge.reject(None, error);
            }
            let mut any = false;
            for (i, entry) in entries.enumerate() {
                any = true;
                match entry.field("resource") {
                    Some(resource) if str_at(resource, &["resourceType"]) == Some("AuditEvent") => {
                        judge.entry(
                            Some(i),
                            || entry_text(i),
                            |out| {
                                out.push(audit_event(ctx, resource, Some(i))?);
                                Ok(())
                            },
                        );
                    }
                    Some(_) => judge.skip(
                        Some(i),
                        ParseError::NotAuditEvent("FHIR Bundle entry that is not an AuditEvent"),
                    ),
                    None => judge.skip(
                        Some(i),
                        ParseError::NotAuditEvent("FHIR Bundle entry without a resource"),
                    ),
                }
            }
            if !any {
                judge.skip(None, ParseError::Empty);
            }
        }
        _ => judge.reject(
            None,
            ParseError::NotAuditEvent("FHIR resource that is not an AuditEvent"),
        ),
    }
}

fn audit_event<V: Node>(ctx: &Ctx<'_>, ae: &V, index: Option<usize>) -> Result<Event, ParseError> {
    let time = event_time(ae)?;
    let event_id = match (str_at(ae, &["id"]), index) {
        (Some(id), _) => id.to_owned(),
        (None, None) => ctx.fallback_id(FORMAT),
        (None, Some(i)) => format!("{}#{i}", ctx.fallback_id(FORMAT)),
    };

    let query = items(ae.field("entity")).find(|&e| has_code(e.field("role"), &["24"]) || e.field("query").is_some());
    let request_line = query.and_then(decode_query);
    let route = request_line.as_deref().map(|line| {
        let (method, target) = request_parts(line);
        (method, Route::parse(target))
    });
    let interaction = interaction(ae)
        .or_else(|| route.and_then(|(method, r)| method.and_then(|m| r.interaction(m))))
        .or_else(|| action_fallback(ae, query.is_some()));
    let kind = kind(ae, interaction);

    let agents: Vec<&V> = items(ae.field("agent")).collect();
    let client = pick_client(ae, &agents, interaction);
    let person = agents
        .iter()
        .copied()
        .filter(|&a| is_person(a) && who_id(a).is_some())
        .max_by_key(|&a| is_true(a.field("requestor")));
    let (identity, identity_name, identity_type) = match (client, person) {
        (Some(agent), _) => {
            let (id, name) = who_id(agent).unwrap_or((UNIDENTIFIED.to_owned(), None));
            (id, name, agent_identity_type(agent))
        }
        // No machine took part: the person is the actor, and the event is a human one.
        (None, Some(agent)) => {
            let (id, name) = who_id(agent).unwrap_or((UNIDENTIFIED.to_owned(), None));
            (id, name, IdentityType::User)
        }
        (None, None) => (UNIDENTIFIED.to_owned(), None, IdentityType::Unknown),
    };

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
    event.on_behalf_of = client.and(person).and_then(who_id).map(|(id, _)| id);
    event.token_id = agents
        .iter()
        .flat_map(|a| items(a.field("policy")))
        .find_map(Node::text)
        .map(str::to_owned);
    event.purpose_of_use = purposes(ae, &agents);

    let (patients, resource_type) = entities(ctx, ae);
    event.patients = patients;
    event.resource_type = resource_type.or_else(|| route.and_then(|(_, r)| r.resource_type).map(str::to_owned));
    if event.resource_type.is_none() && !event.patients.is_empty() {
        event.resource_type = Some("Patient".to_owned());
    }
    if let Some((_, r)) = route {
        event.operation = r.operation.map(str::to_owned);
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

const SOURCE: &str = "110153";
const DESTINATION: &str = "110152";
const APPLICATION: &str = "110150";

fn has_type<V: Node>(agent: &V, code: &str) -> bool {
    agent_type_codes(agent).any(|c| c == code)
}

/// The client agent, by the steps of the module doc's table.
fn pick_client<'a, V: Node>(ae: &V, agents: &[&'a V], interaction: Option<Interaction>) -> Option<&'a V> {
    let machines: Vec<&'a V> = agents.iter().copied().filter(|&a| !is_person(a)).collect();
    let named = |a: &V| who_id(a).is_some();
    let flow = |a: &V| has_type(a, SOURCE) || has_type(a, DESTINATION);
    let find = |pred: &dyn Fn(&V) -> bool| machines.iter().copied().find(|&a| pred(a));

    // 1. One side of the data flow is recognisably the server: the client is the other side.
    if machines.iter().any(|&a| flow(a) && is_server(ae, a)) {
        let mut others = machines
            .iter()
            .copied()
            .filter(|&a| flow(a) && named(a) && !is_server(ae, a));
        if let (Some(client), None) = (others.next(), others.next()) {
            return Some(client);
        }
    }
    // 2. The data flow of the interaction says which side the client is on.
    if let Some(interaction) = interaction {
        let side = match interaction {
            Interaction::Read | Interaction::Vread | Interaction::History | Interaction::Capabilities => DESTINATION,
            _ => SOURCE,
        };
        if let Some(client) = find(&|a| has_type(a, side) && named(a) && !is_server(ae, a)) {
            return Some(client);
        }
    }
    // 3. A client-side observer recorded its own request.
    let observer_is_client = source_types(ae).any(|t| matches!(t, "1" | "2"));
    if observer_is_client && let Some(client) = find(&|a| flow(a) && named(a) && is_observer(ae, a)) {
        return Some(client);
    }
    // 4. Roles and kinds, most telling first.
    find(&|a| has_type(a, SOURCE) && named(a) && !is_server(ae, a))
        .or_else(|| find(&|a| has_type(a, APPLICATION) && named(a)))
        .or_else(|| {
            find(&|a| {
                str_at(a, &["who", "reference"]).is_some_and(|r| r.starts_with("Device/"))
                    && !has_type(a, DESTINATION)
                    && !is_server(ae, a)
            })
        })
        .or_else(|| find(&|a| is_true(a.field("requestor")) && named(a)))
        .or_else(|| find(&|a| named(a) && !has_type(a, DESTINATION) && !is_server(ae, a)))
        // 5. A client agent may be typed but anonymous (R5 `who` empty): keep it for its network.
        .or_else(|| find(&|a| flow(a) && !is_server(ae, a)))
}

/// security-source-type codes of the recording `source` (R4 `source.type`, R5 `source.type`).
fn source_types<V: Node>(ae: &V) -> impl Iterator<Item = &str> {
    codings(ae.field("source").and_then(|s| s.field("type"))).map(|(_, c)| c)
}

/// Whether the agent is the one that recorded the event (`source.observer`).
fn is_observer<V: Node>(ae: &V, agent: &V) -> bool {
    let Some(observer) = ae.field("source").and_then(|s| s.field("observer")) else {
        return false;
    };
    ["reference", "display"]
        .iter()
        .any(|k| str_at(observer, &[k]).is_some_and(|o| str_at(agent, &["who", k]) == Some(o)))
        || str_at(observer, &["identifier", "value"])
            .is_some_and(|o| str_at(agent, &["who", "identifier", "value"]) == Some(o))
}

/// Whether the agent is the FHIR server (see the module doc, step 1).
fn is_server<V: Node>(ae: &V, agent: &V) -> bool {
    let url = |s: &str| s.contains("://");
    let network = agent.field("network");
    network.is_some_and(|n| str_at(n, &["type"]) == Some("5") || str_at(n, &["address"]).is_some_and(url))
        || str_at(agent, &["networkUri"]).is_some_and(url)
        || str_at(agent, &["who", "display"]).is_some_and(url)
        || str_at(agent, &["name"]).is_some_and(url)
        || (source_types(ae).any(|t| matches!(t, "3" | "4" | "5" | "6")) && is_observer(ae, agent))
}

/// The agent's id and display name.
fn who_id<V: Node>(agent: &V) -> Option<(String, Option<String>)> {
    let who = agent.field("who");
    let display = who.and_then(|w| string_at(w, &["display"]));
    if let Some(id) = who.and_then(|w| string_at(w, &["identifier", "value"]).or_else(|| string_at(w, &["reference"])))
    {
        return Some((id, display));
    }
    display.or_else(|| string_at(agent, &["name"])).map(|d| (d, None))
}

const PERSON_ROLES: &[&str] = &[
    "humanuser",
    "IRCP",
    "AUT",
    "INF",
    "PROV",
    "ATND",
    "429577009",
    "UserSamlAgent",
    "UserOauthAgent",
    // Swiss EPR (CH:ATC) roles: healthcare professional, assistant, representative, patient,
    // policy and document administrators.
    "HCP",
    "ASS",
    "REP",
    "PAT",
    "PADM",
    "DADM",
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
    reference.is_some_and(|r| PERSON_REFERENCES.iter().any(|p| r.contains(p)))
        || agent_type_codes(agent).any(|c| PERSON_ROLES.contains(&c))
}

fn agent_identity_type<V: Node>(agent: &V) -> IdentityType {
    if str_at(agent, &["who", "reference"]).is_some_and(|r| r.starts_with("Device/")) {
        IdentityType::Device
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

/// The method and target of an HTTP request line (`GET /r4/Observation?x HTTP/1.1` →
/// `GET`, `/r4/Observation?x`); a bare URL has no method.
fn request_parts(line: &str) -> (Option<&str>, &str) {
    let mut words = line.split_ascii_whitespace();
    match words.next() {
        Some(method @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD")) => {
            (Some(method), words.next().unwrap_or(""))
        }
        Some(first) => (None, first),
        None => (None, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{Normalizer, Pseudonymizer, RecordMeta};

    fn normalize(record: serde_json::Value) -> Event {
        let n = Normalizer::new(Pseudonymizer::random(), 1 << 20);
        let mut events = n
            .normalize(record.to_string().as_bytes(), &RecordMeta::default())
            .expect("normalizes");
        assert_eq!(events.len(), 1);
        events.remove(0)
    }

    fn agent(code: &str, who: serde_json::Value) -> serde_json::Value {
        serde_json::json!({"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": code}]},
                           "who": who, "requestor": false})
    }

    fn rest(code: &str, agents: serde_json::Value, query: Option<&str>) -> serde_json::Value {
        let mut ae = serde_json::json!({
            "resourceType": "AuditEvent", "id": "t", "recorded": "2026-01-05T09:00:00Z",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "agent": agents, "source": {"observer": {"display": "gateway"}}});
        if !code.is_empty() {
            ae["subtype"] = serde_json::json!([{"system": RESTFUL, "code": code}]);
        }
        if let Some(q) = query {
            use base64::Engine as _;
            let q = base64::engine::general_purpose::STANDARD.encode(q);
            ae["entity"] = serde_json::json!([{"role": {"code": "24"}, "query": q}]);
        }
        ae
    }

    /// BALP data flow without any server signal (no network, no observer among the agents): in a
    /// read the client is the Destination, in a search or a write the Source.
    #[test]
    fn the_data_flow_of_the_interaction_names_the_client() {
        let agents = serde_json::json!([
            agent("110153", serde_json::json!({"display": "a"})),
            agent("110152", serde_json::json!({"display": "b"}))
        ]);
        assert_eq!(normalize(rest("read", agents.clone(), None)).identity, "b");
        assert_eq!(normalize(rest("vread", agents.clone(), None)).identity, "b");
        assert_eq!(normalize(rest("search-type", agents.clone(), None)).identity, "a");
        assert_eq!(normalize(rest("update", agents.clone(), None)).identity, "a");
        // Without a restful code, the method of the request line gives the interaction.
        let read = rest("", agents.clone(), Some("GET /api/FHIR/R4/Patient/eq081 HTTP/1.1"));
        let e = normalize(read);
        assert_eq!(
            (e.identity.as_str(), e.interaction, e.resource_type.as_deref()),
            ("b", Some(Interaction::Read), Some("Patient"))
        );
        let search = rest("", agents, Some("GET /fhir/R4/Observation?patient=123 HTTP/1.1"));
        let e = normalize(search);
        assert_eq!(
            (e.identity.as_str(), e.interaction, e.resource_type.as_deref()),
            ("a", Some(Interaction::Search), Some("Observation"))
        );
    }

    /// Persons are never the client (Swiss EPR `HCP`, a `Practitioner` reference even as Source);
    /// the R4 `agent.name` names a client whose `who` has no id.
    #[test]
    fn people_act_for_clients_and_names_stand_in_for_ids() {
        let hcp = serde_json::json!({"type": {"coding": [{"system": "urn:oid:2.16.756.5.30.1.127.3.10.6", "code": "HCP"}]},
                                     "who": {"identifier": {"value": "7601000000000"}}, "requestor": true});
        let doctor = agent("110153", serde_json::json!({"reference": "Practitioner/42"}));
        let mut client = agent("110153", serde_json::Value::Null);
        client.as_object_mut().expect("object").remove("who");
        client["name"] = serde_json::json!("lab-feed");
        let server = serde_json::json!({"who": {"reference": "Device/fhir"}, "type": {"coding": [{"code": "110152"}]},
                                        "network": {"address": "https://fhir.example.org/r4", "type": "5"}});
        let e = normalize(rest("create", serde_json::json!([hcp, doctor, client, server]), None));
        assert_eq!(e.identity, "lab-feed");
        assert_eq!(e.identity_type, IdentityType::Application);
        assert_eq!(e.on_behalf_of.as_deref(), Some("7601000000000"));
        // Only people took part: a human event.
        let e = normalize(rest(
            "read",
            serde_json::json!([{"who": {"reference": "PractitionerRole/7"}, "requestor": true}]),
            None,
        ));
        assert_eq!(
            (e.identity.as_str(), e.identity_type),
            ("PractitionerRole/7", IdentityType::User)
        );
    }

    #[test]
    fn reads_request_lines() {
        assert_eq!(
            request_parts("GET test.fhir.org/r4/Observation?patient=x"),
            (Some("GET"), "test.fhir.org/r4/Observation?patient=x")
        );
        assert_eq!(
            request_parts("POST /r4/Observation/_search HTTP/1.1"),
            (Some("POST"), "/r4/Observation/_search")
        );
        assert_eq!(
            request_parts("http://h/open/Encounter?participant=13"),
            (None, "http://h/open/Encounter?participant=13")
        );
    }
}
