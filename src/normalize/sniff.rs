//! Recognising a record's format by its shape.
//!
//! For JSON the sniffer walks the top-level object once, noting which marker keys are present and
//! reading only the values that decide between formats (`resourceType`, `category`, `log.logger`,
//! and a Log Analytics row's `Type` and `Category`); every other value is skipped without being
//! built. The chosen normalizer then deserializes what it needs.
//!
//! Entra ID logs come in three shapes: the Azure Monitor diagnostic-settings envelope (`category`
//! with `operationName`/`properties`), a Log Analytics / Microsoft Sentinel table row (`Type` is
//! the table: `SigninLogs`, `AADNonInteractiveUserSignInLogs`, `AADServicePrincipalSignInLogs`,
//! `AADManagedIdentitySignInLogs`, `AuditLogs`; without `Type`, `TimeGenerated` with a sign-in
//! `Category` or with `InitiatedBy`/`TargetResources`), and a Microsoft Graph resource (`signIn`:
//! `createdDateTime` + `appId` + a user, service principal, status or event types;
//! `directoryAudit`: `activityDateTime` + `activityDisplayName` + `initiatedBy`/`targetResources`).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::ParseError;

/// The recognised shape of a record, which selects the normalizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON array: each element is a record of its own.
    JsonArray,
    /// FHIR gateway access log line.
    Gateway,
    /// FHIR `AuditEvent` or `Bundle` as JSON.
    FhirJson,
    /// FHIR `AuditEvent` or `Bundle` as XML.
    FhirXml,
    /// Okta System Log event.
    Okta,
    /// Keycloak event-listener JSON (login or admin event).
    KeycloakJson,
    /// Keycloak `org.keycloak.events` console line (`type=..., realmId=...`).
    KeycloakLine,
    /// Keycloak JSON (ECS) console log line from the `org.keycloak.events` logger.
    KeycloakEcs,
    /// Entra ID sign-in log (diagnostic settings, Log Analytics table or Microsoft Graph).
    EntraSignIn,
    /// Entra ID audit log (diagnostic settings, Log Analytics table or Microsoft Graph).
    EntraAudit,
    /// Auth0 log event, bare or in a log-stream envelope.
    Auth0,
    /// GCP Cloud Audit Log entry.
    GcpAudit,
    /// AWS CloudTrail record.
    CloudTrail,
    /// A known source's log line that is not an audit event.
    NotAudit(&'static str),
}

/// Marker keys, one bit each.
mod key {
    pub const PROTO_PAYLOAD: u64 = 1;
    pub const LOG_NAME: u64 = 1 << 1;
    pub const EVENT_VERSION: u64 = 1 << 2;
    pub const EVENT_SOURCE: u64 = 1 << 3;
    pub const EVENT_TYPE: u64 = 1 << 4;
    pub const ACTOR: u64 = 1 << 5;
    pub const PUBLISHED: u64 = 1 << 6;
    pub const LOG_ID: u64 = 1 << 7;
    pub const DATA: u64 = 1 << 8;
    pub const TYPE: u64 = 1 << 9;
    pub const DATE: u64 = 1 << 10;
    pub const CLIENT_ID: u64 = 1 << 11;
    pub const REALM_ID: u64 = 1 << 12;
    pub const OPERATION_TYPE: u64 = 1 << 13;
    pub const TS: u64 = 1 << 14;
    pub const METHOD: u64 = 1 << 15;
    pub const PATH: u64 = 1 << 16;
    pub const INTERACTION: u64 = 1 << 17;
    pub const RESOURCE_TYPE: u64 = 1 << 18;
    pub const OPERATION_NAME: u64 = 1 << 19;
    pub const PROPERTIES: u64 = 1 << 20;
    pub const INSERT_ID: u64 = 1 << 21;
    pub const EVENT_NAME: u64 = 1 << 22;
    // Entra ID, Log Analytics table rows (PascalCase) and Microsoft Graph resources (camelCase).
    pub const TIME_GENERATED: u64 = 1 << 23;
    pub const OPERATION_NAME_TABLE: u64 = 1 << 24;
    pub const INITIATED_BY_TABLE: u64 = 1 << 25;
    pub const TARGET_RESOURCES_TABLE: u64 = 1 << 26;
    pub const ACTIVITY_DATE_TIME: u64 = 1 << 27;
    pub const ACTIVITY_DISPLAY_NAME: u64 = 1 << 28;
    pub const INITIATED_BY: u64 = 1 << 29;
    pub const TARGET_RESOURCES: u64 = 1 << 30;
    pub const CREATED_DATE_TIME: u64 = 1 << 31;
    pub const APP_ID: u64 = 1 << 32;
    pub const USER_PRINCIPAL_NAME: u64 = 1 << 33;
    pub const SERVICE_PRINCIPAL_ID: u64 = 1 << 34;
    pub const SIGN_IN_EVENT_TYPES: u64 = 1 << 35;
    pub const STATUS: u64 = 1 << 36;

    pub fn of(name: &str) -> u64 {
        match name {
            "protoPayload" => PROTO_PAYLOAD,
            "logName" => LOG_NAME,
            "insertId" => INSERT_ID,
            "eventVersion" => EVENT_VERSION,
            "eventSource" => EVENT_SOURCE,
            "eventName" => EVENT_NAME,
            "eventType" => EVENT_TYPE,
            "actor" => ACTOR,
            "published" => PUBLISHED,
            "log_id" => LOG_ID,
            "data" => DATA,
            "type" => TYPE,
            "date" => DATE,
            "client_id" => CLIENT_ID,
            "realmId" => REALM_ID,
            "operationType" => OPERATION_TYPE,
            "ts" => TS,
            "method" => METHOD,
            "path" => PATH,
            "interaction" => INTERACTION,
            "resource_type" => RESOURCE_TYPE,
            "operationName" => OPERATION_NAME,
            "properties" => PROPERTIES,
            "TimeGenerated" => TIME_GENERATED,
            "OperationName" => OPERATION_NAME_TABLE,
            "InitiatedBy" => INITIATED_BY_TABLE,
            "TargetResources" => TARGET_RESOURCES_TABLE,
            "activityDateTime" => ACTIVITY_DATE_TIME,
            "activityDisplayName" => ACTIVITY_DISPLAY_NAME,
            "initiatedBy" => INITIATED_BY,
            "targetResources" => TARGET_RESOURCES,
            "createdDateTime" => CREATED_DATE_TIME,
            "appId" => APP_ID,
            "userPrincipalName" => USER_PRINCIPAL_NAME,
            "servicePrincipalId" => SERVICE_PRINCIPAL_ID,
            "signInEventTypes" => SIGN_IN_EVENT_TYPES,
            "status" => STATUS,
            _ => 0,
        }
    }
}

#[derive(Default)]
struct TopKeys<'a> {
    flags: u64,
    resource_type: Option<Cow<'a, str>>,
    category: Option<Cow<'a, str>>,
    logger: Option<Cow<'a, str>>,
    /// A Log Analytics row's `Type` (its table).
    table: Option<Cow<'a, str>>,
    /// A Log Analytics row's `Category`.
    table_category: Option<Cow<'a, str>>,
}

/// The Entra sign-in categories: diagnostic-settings `category`, a table's `Category`.
const SIGN_IN_CATEGORIES: [&str; 4] = [
    "SignInLogs",
    "NonInteractiveUserSignInLogs",
    "ServicePrincipalSignInLogs",
    "ManagedIdentitySignInLogs",
];

impl TopKeys<'_> {
    fn has(&self, flags: u64) -> bool {
        self.flags & flags == flags
    }

    fn any(&self, flags: u64) -> bool {
        self.flags & flags != 0
    }

    /// An Entra ID record in the Log Analytics table or Microsoft Graph shape.
    fn entra(&self) -> Option<Shape> {
        use key::*;
        if let Some(table) = self.table.as_deref() {
            match table {
                "SigninLogs"
                | "AADNonInteractiveUserSignInLogs"
                | "AADServicePrincipalSignInLogs"
                | "AADManagedIdentitySignInLogs" => return Some(Shape::EntraSignIn),
                "AuditLogs" => return Some(Shape::EntraAudit),
                _ if self.has(TIME_GENERATED) => {
                    return Some(Shape::NotAudit(
                        "Log Analytics table that is not an Entra sign-in or audit log",
                    ));
                }
                _ => {}
            }
        }
        if self.has(TIME_GENERATED) {
            if self
                .table_category
                .as_deref()
                .is_some_and(|c| SIGN_IN_CATEGORIES.contains(&c))
            {
                return Some(Shape::EntraSignIn);
            }
            if self.has(OPERATION_NAME_TABLE) && self.any(INITIATED_BY_TABLE | TARGET_RESOURCES_TABLE) {
                return Some(Shape::EntraAudit);
            }
        }
        if self.has(ACTIVITY_DATE_TIME | ACTIVITY_DISPLAY_NAME) && self.any(INITIATED_BY | TARGET_RESOURCES) {
            return Some(Shape::EntraAudit);
        }
        if self.has(CREATED_DATE_TIME | APP_ID)
            && self.any(USER_PRINCIPAL_NAME | SERVICE_PRINCIPAL_ID | SIGN_IN_EVENT_TYPES | STATUS)
        {
            return Some(Shape::EntraSignIn);
        }
        None
    }

    fn shape(&self) -> Option<Shape> {
        use key::*;
        if let Some(rt) = self.resource_type.as_deref() {
            return Some(match rt {
                "AuditEvent" | "Bundle" => Shape::FhirJson,
                _ => Shape::NotAudit("FHIR resource that is not an AuditEvent"),
            });
        }
        if let Some(logger) = self.logger.as_deref() {
            return Some(if logger == "org.keycloak.events" {
                Shape::KeycloakEcs
            } else {
                Shape::NotAudit("Keycloak server log")
            });
        }
        if self.has(PROTO_PAYLOAD) && self.any(LOG_NAME | INSERT_ID) {
            return Some(Shape::GcpAudit);
        }
        if self.has(EVENT_VERSION | EVENT_SOURCE | EVENT_NAME) {
            return Some(Shape::CloudTrail);
        }
        if let Some(category) = self.category.as_deref()
            && self.any(OPERATION_NAME | PROPERTIES)
        {
            return Some(match category {
                c if SIGN_IN_CATEGORIES.contains(&c) => Shape::EntraSignIn,
                "AuditLogs" => Shape::EntraAudit,
                _ => Shape::NotAudit("Azure Monitor category that is not an Entra sign-in or audit log"),
            });
        }
        if let Some(shape) = self.entra() {
            return Some(shape);
        }
        if self.has(EVENT_TYPE | ACTOR | PUBLISHED) {
            return Some(Shape::Okta);
        }
        if self.has(LOG_ID | DATA) || (self.has(TYPE | DATE) && self.any(LOG_ID | CLIENT_ID)) {
            return Some(Shape::Auth0);
        }
        if self.has(REALM_ID) && self.any(TYPE | OPERATION_TYPE) {
            return Some(Shape::KeycloakJson);
        }
        if self.has(CLIENT_ID | TS) && self.any(METHOD | PATH | INTERACTION | RESOURCE_TYPE) {
            return Some(Shape::Gateway);
        }
        None
    }
}

impl<'de> de::Deserialize<'de> for TopKeys<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopKeys<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut keys = TopKeys::default();
                while let Some(name) = map.next_key::<Cow<'de, str>>()? {
                    match name.as_ref() {
                        "resourceType" => keys.resource_type = text_value(&mut map)?,
                        "category" => keys.category = text_value(&mut map)?,
                        "log.logger" => keys.logger = text_value(&mut map)?,
                        "Type" => keys.table = text_value(&mut map)?,
                        "Category" => keys.table_category = text_value(&mut map)?,
                        other => {
                            keys.flags |= key::of(other);
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(keys)
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// A string value, or `None` for any other JSON type.
fn text_value<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Cow<'de, str>>, A::Error> {
    let value: serde_json::Value = map.next_value()?;
    Ok(match value {
        serde_json::Value::String(s) => Some(Cow::Owned(s)),
        _ => None,
    })
}

/// Recognises the shape of one (trimmed, non-empty) record.
pub fn sniff(text: &str) -> Result<Shape, ParseError> {
    match text.as_bytes().first() {
        Some(b'[') => Ok(Shape::JsonArray),
        Some(b'{') if leading_resource_type(text).is_some_and(|t| t == "AuditEvent" || t == "Bundle") => {
            Ok(Shape::FhirJson)
        }
        Some(b'{') => {
            let keys: TopKeys<'_> = serde_json::from_str(text).map_err(ParseError::json)?;
            keys.shape().ok_or(ParseError::UnknownFormat)
        }
        Some(b'<') => sniff_xml(text),
        Some(_) => sniff_line(text),
        None => Err(ParseError::Empty),
    }
}

/// The resource type when a record opens with it, as FHIR servers write it (the most frequent
/// and largest records: they are then not walked twice). The FHIR normalizer parses the whole
/// record, so a malformed one is still refused as malformed; any other opening takes the walk.
fn leading_resource_type(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix("\"resourceType\"")?.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let value = &rest[..rest.find('"')?];
    (!value.contains('\\')).then_some(value)
}

fn sniff_xml(text: &str) -> Result<Shape, ParseError> {
    let mut reader = quick_xml::Reader::from_str(text);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e)) => {
                return match AsRef::<str>::as_ref(&e.local_name()) {
                    "AuditEvent" | "Bundle" => Ok(Shape::FhirXml),
                    _ => Err(ParseError::UnknownFormat),
                };
            }
            Ok(quick_xml::events::Event::Eof) => return Err(ParseError::MalformedXml("no root element".into())),
            Ok(_) => {}
            Err(e) => return Err(ParseError::MalformedXml(e.to_string())),
        }
    }
}

fn sniff_line(text: &str) -> Result<Shape, ParseError> {
    if text.contains("[org.keycloak.events]") {
        return Ok(Shape::KeycloakLine);
    }
    // JBoss / Quarkus console lines: `[date ]HH:MM:SS,mmm LEVEL [logger] (thread) message`.
    let looks_like_jboss = text.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && text
            .split_ascii_whitespace()
            .take(4)
            .any(|w| w.starts_with('[') && w.ends_with(']'));
    if looks_like_jboss {
        Ok(Shape::NotAudit("Keycloak server log"))
    } else {
        Err(ParseError::UnknownFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_shapes_by_keys() {
        let cases = [
            (r#"{"resourceType":"AuditEvent"}"#, Shape::FhirJson),
            (
                r#"{"ts":"x","client_id":"a","method":"GET","path":"/Patient"}"#,
                Shape::Gateway,
            ),
            (r#"{"eventType":"x","actor":{},"published":"x"}"#, Shape::Okta),
            (r#"{"log_id":"1","data":{}}"#, Shape::Auth0),
            (
                r#"{"type":"CLIENT_LOGIN","realmId":"r","clientId":"c"}"#,
                Shape::KeycloakJson,
            ),
            (r#"{"category":"AuditLogs","operationName":"x"}"#, Shape::EntraAudit),
            (
                r#"{"category":"ServicePrincipalSignInLogs","properties":{}}"#,
                Shape::EntraSignIn,
            ),
            // Entra ID as Log Analytics / Sentinel rows (Azure Monitor table reference: `Type` is
            // the table) and as Microsoft Graph resources (`signIn`, `directoryAudit`).
            (
                r#"{"TimeGenerated":"x","Type":"SigninLogs","Category":"SignInLogs"}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"TimeGenerated":"x","Type":"AADNonInteractiveUserSignInLogs"}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"TimeGenerated":"x","Type":"AADServicePrincipalSignInLogs"}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"TimeGenerated":"x","Type":"AADManagedIdentitySignInLogs"}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"TimeGenerated":"x","Type":"AuditLogs","InitiatedBy":"{}"}"#,
                Shape::EntraAudit,
            ),
            (
                r#"{"TimeGenerated":"x","Category":"ServicePrincipalSignInLogs","AppId":"a"}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"TimeGenerated":"x","OperationName":"Add application","TargetResources":[]}"#,
                Shape::EntraAudit,
            ),
            (
                r#"{"TimeGenerated":"x","Type":"AzureActivity"}"#,
                Shape::NotAudit("Log Analytics table that is not an Entra sign-in or audit log"),
            ),
            (
                r#"{"id":"x","createdDateTime":"x","appId":"a","userPrincipalName":"u","status":{}}"#,
                Shape::EntraSignIn,
            ),
            (
                r#"{"id":"x","category":"ApplicationManagement","activityDateTime":"x","activityDisplayName":"y","initiatedBy":{}}"#,
                Shape::EntraAudit,
            ),
            (r#"{"protoPayload":{},"logName":"x"}"#, Shape::GcpAudit),
            (
                r#"{"eventVersion":"1.08","eventSource":"x","eventName":"y"}"#,
                Shape::CloudTrail,
            ),
            (
                r#"{"log.logger":"io.quarkus","message":"x"}"#,
                Shape::NotAudit("Keycloak server log"),
            ),
            ("<AuditEvent xmlns=\"http://hl7.org/fhir\"/>", Shape::FhirXml),
            ("[1,2]", Shape::JsonArray),
            // Opening with the resource type, with or without spaces, or not first.
            (r#"{ "resourceType" : "Bundle", "entry": []}"#, Shape::FhirJson),
            (r#"{"id":"x","resourceType":"AuditEvent"}"#, Shape::FhirJson),
            (
                r#"{"resourceType":"Patient","id":"x"}"#,
                Shape::NotAudit("FHIR resource that is not an AuditEvent"),
            ),
        ];
        for (text, shape) in cases {
            assert_eq!(sniff(text).expect(text), shape, "{text}");
        }
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert_eq!(sniff(r#"{"hello":"world"}"#).unwrap_err().reason(), "unknown_format");
        assert_eq!(sniff(r#"{"hello":"#).unwrap_err().reason(), "malformed_json");
        assert_eq!(
            sniff(r#"{"resourceType":"Patient","#).unwrap_err().reason(),
            "malformed_json"
        );
        assert_eq!(sniff("<Patient/>").unwrap_err().reason(), "unknown_format");
        assert_eq!(sniff("<AuditEvent").unwrap_err().reason(), "malformed_xml");
        assert_eq!(sniff("hello world").unwrap_err().reason(), "unknown_format");
        assert_eq!(
            sniff("21:01:42,548 INFO  [org.keycloak.services] (main) Added user").expect("jboss line"),
            Shape::NotAudit("Keycloak server log")
        );
    }
}
