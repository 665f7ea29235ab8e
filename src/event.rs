//! The one normalized audit event every input format is mapped to.
//!
//! `Event` is flat and cheap to build on the hot path. It is mirrored by
//! `schemas/event.schema.json` (kept true by a test) and, later, by the Arrow schema of the
//! archive. Patient references in it are already pseudonymised by the normalizer: nothing after
//! normalization ever sees a real patient id.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::scope::Scope;

/// The identity of an event whose source names no actor (a FHIR AuditEvent without agents, a
/// GCP entry with an empty `authenticationInfo`, a person's failed login that names nobody).
pub const UNIDENTIFIED: &str = "unidentified";

/// A normalized audit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Stable id: the source's own event id where it has one, else a hash of the raw bytes.
    pub event_id: String,
    /// When the audited action happened (event time, UTC).
    pub time: DateTime<Utc>,
    /// The input format the event was read from.
    pub format: SourceFormat,
    /// What kind of action this is.
    pub kind: EventKind,
    /// The acting identity: client id, application id, service principal, service account. Once
    /// the registry resolves it (by id or alias) this is the registry's canonical id and the
    /// source's own id moves to `source_identity`.
    pub identity: String,
    /// The id the source wrote, when the registry resolved it to a different canonical
    /// `identity` (an IdP client id, a `Device/...` alias); absent when they are the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// Human-readable name of the identity, where the source gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_name: Option<String>,
    /// Whether the identity is a machine (the product's subject) or a person.
    pub identity_type: IdentityType,
    /// Tenant, realm, organisation or project the identity belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user on whose behalf a non-human identity acted, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// Who performed a lifecycle or admin change on `identity`, when that is someone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator: Option<String>,
    /// Scopes granted to or used by the token of this event, parsed (SMART) or opaque.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
    /// FHIR RESTful interaction, for data access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction: Option<Interaction>,
    /// FHIR operation name (e.g. `$export`) when `interaction` is `operation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// FHIR resource type accessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Pseudonymised patients whose data was touched (keyed HMAC of `Patient/<id>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// Number of distinct patients touched, where the source states it (else `patients.len()`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_count: Option<u64>,
    /// Records (resources) returned or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
    /// Response size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Purpose-of-use codes (e.g. `TREAT`, `ETREAT`, `BTG`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub purpose_of_use: Vec<String>,
    /// Client IP address in canonical form; host names and placeholders are not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    /// Client user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Whether the action succeeded.
    pub outcome: Outcome,
    /// HTTP status, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The source's failure reason or error code, for failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Id of the credential (secret, key, certificate) used or changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// Id of the access token (e.g. BALP `agent.policy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// When the access token was issued (a JWT's `iat`, or the grant's own time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_issued_at: Option<DateTime<Utc>>,
    /// When the access token expires (a JWT's `exp`, Okta's access-token `expires`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<DateTime<Utc>>,
    /// Source-specific action name (Okta `eventType`, Keycloak `type`, Entra operation...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Where the raw record was read: evidence for findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Origin>,
}

/// Where a raw record came from: a Kafka coordinate or a file line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Kafka topic, file path, or `-` for stdin.
    pub name: String,
    /// Kafka partition; absent for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Kafka offset, or 1-based line number for files.
    pub offset: i64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.partition {
            Some(p) => write!(f, "{}[{}]@{}", self.name, p, self.offset),
            None => write!(f, "{}:{}", self.name, self.offset),
        }
    }
}

/// Declares a fieldless enum with a stable snake_case wire name per variant.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ();

            /// The variant of a wire name.
            fn from_str(s: &str) -> Result<$name, ()> {
                match s { $($wire => Ok($name::$variant),)+ _ => Err(()) }
            }
        }
    };
}
pub(crate) use wire_enum;

wire_enum! {
    /// The input formats nhiwatch reads.
    SourceFormat {
        /// FHIR R4/R5 `AuditEvent` (JSON or XML), IHE BALP.
        FhirAuditEvent => "fhir_audit_event",
        /// FHIR gateway access log, `schemas/gateway-access.schema.json`.
        GatewayAccess => "gateway_access",
        /// Okta System Log.
        Okta => "okta",
        /// Keycloak login and admin events (JSON or `key=value` log lines).
        Keycloak => "keycloak",
        /// Microsoft Entra ID sign-in logs (service principals, managed identities, people).
        EntraSignIn => "entra_signin",
        /// Microsoft Entra ID audit logs.
        EntraAudit => "entra_audit",
        /// Auth0 tenant logs.
        Auth0 => "auth0",
        /// GCP Cloud Audit Logs.
        GcpAudit => "gcp_audit",
        /// AWS CloudTrail records (e.g. HealthLake).
        CloudTrail => "cloudtrail",
    }
}

wire_enum! {
    /// What kind of action an event records.
    EventKind {
        /// Read or write of (possibly patient) data.
        DataAccess => "data_access",
        /// A token or session was issued to the identity.
        TokenIssued => "token_issued",
        /// A token request or call was refused.
        AuthFailure => "auth_failure",
        /// A secret, key or certificate was added, removed or rotated.
        CredentialChange => "credential_change",
        /// The application was created, updated, enabled, disabled or deleted.
        AppLifecycle => "app_lifecycle",
        /// A permission was granted to the identity: an OAuth consent, a delegated or
        /// application permission, an app role, a client grant, an IAM role binding. The
        /// event's identity is the client that receives it; `scopes` holds what was granted,
        /// `initiator` who granted it.
        PermissionGrant => "permission_grant",
        /// Another administrative action (configuration, permission removals).
        Admin => "admin",
        /// An interactive sign-in of a person (not a token grant to a machine).
        SignIn => "sign_in",
        /// Recognised and kept for the record, but of none of the kinds above.
        Other => "other",
    }
}

wire_enum! {
    /// Whether an identity is a machine or a person.
    IdentityType {
        /// An OAuth client, app registration, service principal or integration.
        Application => "application",
        /// A cloud service account or workload identity.
        ServiceAccount => "service_account",
        /// A cloud managed identity.
        ManagedIdentity => "managed_identity",
        /// A device or system (e.g. a BALP `Device` agent).
        Device => "device",
        /// A person.
        User => "user",
        /// The source does not say.
        Unknown => "unknown",
    }
}

impl IdentityType {
    /// True for identities this product watches (everything but a person).
    pub fn is_non_human(self) -> bool {
        !matches!(self, IdentityType::User)
    }
}

wire_enum! {
    /// The result of the audited action.
    Outcome {
        /// It succeeded.
        Success => "success",
        /// It failed or was denied.
        Failure => "failure",
        /// The source does not say.
        Unknown => "unknown",
    }
}

wire_enum! {
    /// FHIR RESTful interaction (`http://hl7.org/fhir/restful-interaction`), folded to the
    /// distinctions detectors need (`search-type` is `search`, `history-instance` is `history`).
    Interaction {
        /// read
        Read => "read",
        /// vread
        Vread => "vread",
        /// search, search-type, search-system
        Search => "search",
        /// history, history-instance, history-type, history-system
        History => "history",
        /// create
        Create => "create",
        /// update
        Update => "update",
        /// patch
        Patch => "patch",
        /// delete
        Delete => "delete",
        /// capabilities
        Capabilities => "capabilities",
        /// transaction
        Transaction => "transaction",
        /// batch
        Batch => "batch",
        /// operation (`$export`, `$everything`...)
        Operation => "operation",
    }
}

impl Interaction {
    /// Parses a restful-interaction code (also the folded forms).
    pub fn from_code(code: &str) -> Option<Interaction> {
        Some(match code {
            "read" => Interaction::Read,
            "vread" => Interaction::Vread,
            "search" | "search-type" | "search-system" | "search-compartment" => Interaction::Search,
            "history" | "history-instance" | "history-type" | "history-system" => Interaction::History,
            "create" => Interaction::Create,
            "update" => Interaction::Update,
            "patch" => Interaction::Patch,
            "delete" => Interaction::Delete,
            "capabilities" => Interaction::Capabilities,
            "transaction" => Interaction::Transaction,
            "batch" => Interaction::Batch,
            "operation" => Interaction::Operation,
            _ => return None,
        })
    }

    /// True when the interaction changes data.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Interaction::Create
                | Interaction::Update
                | Interaction::Patch
                | Interaction::Delete
                | Interaction::Transaction
                | Interaction::Batch
        )
    }
}

impl Event {
    /// A minimal event; normalizers fill in the rest.
    pub fn new(
        event_id: String,
        time: DateTime<Utc>,
        format: SourceFormat,
        kind: EventKind,
        identity: String,
    ) -> Event {
        Event {
            event_id,
            time,
            format,
            kind,
            identity,
            source_identity: None,
            identity_name: None,
            identity_type: IdentityType::Unknown,
            tenant: None,
            on_behalf_of: None,
            initiator: None,
            scopes: Vec::new(),
            interaction: None,
            operation: None,
            resource_type: None,
            patients: Vec::new(),
            patient_count: None,
            records: None,
            bytes: None,
            purpose_of_use: Vec::new(),
            src_ip: None,
            user_agent: None,
            outcome: Outcome::Unknown,
            status: None,
            error: None,
            credential_id: None,
            token_id: None,
            token_issued_at: None,
            token_expires_at: None,
            action: None,
            source: None,
        }
    }

    /// The id the source wrote: `source_identity` when the identity was canonicalized, else
    /// `identity`.
    pub fn source_id(&self) -> &str {
        self.source_identity.as_deref().unwrap_or(&self.identity)
    }

    /// Distinct patients touched: the stated count, else the pseudonyms carried.
    pub fn distinct_patients(&self) -> u64 {
        self.patient_count.unwrap_or(self.patients.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interaction_codes_fold() {
        assert_eq!(Interaction::from_code("search-type"), Some(Interaction::Search));
        assert_eq!(Interaction::from_code("history-instance"), Some(Interaction::History));
        assert_eq!(Interaction::from_code("poke"), None);
        assert!(Interaction::Delete.is_write());
        assert!(!Interaction::Search.is_write());
    }

    #[test]
    fn wire_names_round_trip() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(kind).expect("serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            let back: EventKind = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, *kind);
        }
    }

    #[test]
    fn origin_displays_as_coordinates() {
        let kafka = Origin {
            name: "audit".into(),
            partition: Some(2),
            offset: 41,
        };
        assert_eq!(kafka.to_string(), "audit[2]@41");
        let file = Origin {
            name: "in.ndjson".into(),
            partition: None,
            offset: 7,
        };
        assert_eq!(file.to_string(), "in.ndjson:7");
    }
}
