//! The FHIR RESTful API's URL grammar: which resource type a request touches and which
//! interaction it is, on the base URLs real servers use.
//!
//! A base URL carries whatever the deployment chose before the resource type: a version
//! (`/fhir/R4/`, `/baseR4/`, `/STU3/`, `/DSTU2/`), a vendor prefix (Epic `/api/FHIR/R4/`), a
//! tenant (Oracle Health `/r4/<tenant-id>/`), a Cloud Healthcare store path
//! (`…/fhirStores/<store>/fhir/`). So the resource type is the first path segment that **is** a
//! resource type name of the specification — the R4 and R5 lists, and the STU3/DSTU2 names
//! those dropped, compiled in below — never merely the first capitalised one (`R4`, `FHIR` and
//! `DSTU2` are not resource types).
//!
//! After the type, the grammar of FHIR R4 §3.1.0 (RESTful API, "Service Base URL" and the
//! interaction summary table) and §3.1.0.1.9 (compartments):
//!
//! | path after the base                    | GET / HEAD     | POST        | PUT / PATCH / DELETE |
//! |----------------------------------------|----------------|-------------|----------------------|
//! | (nothing)                              | —              | transaction or batch (`transaction`) | — |
//! | `metadata`                             | capabilities   | —           | —                    |
//! | `_search`, `_history`, `$op`           | search, history, operation (system level) |||
//! | `[type]`                               | search         | create      | conditional update…  |
//! | `[type]/_search`                       | search         | search      | —                    |
//! | `[type]/_history`                      | history        | —           | —                    |
//! | `[type]/$op`                           | operation      | operation   | —                    |
//! | `[type]/[id]`                          | read           | —           | update / patch / delete |
//! | `[type]/[id]/_history`                 | history        | —           | —                    |
//! | `[type]/[id]/_history/[vid]`           | vread          | —           | —                    |
//! | `[type]/[id]/$op`                      | operation      | operation   | —                    |
//! | `[type]/[id]/[type2]` (compartment)    | search of `type2` | —        | —                    |

use crate::event::Interaction;

/// FHIR R4 (4.0.1) resource types, from the specification's resource list.
const R4: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// FHIR R5 (5.0.0) resource types.
const R5: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "ActorDefinition",
    "AdministrableProductDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "ArtifactAssessment",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BiologicallyDerivedProductDispense",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "ChargeItem",
    "ChargeItemDefinition",
    "Citation",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "ClinicalUseDefinition",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "ConditionDefinition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceAssociation",
    "DeviceDefinition",
    "DeviceDispense",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUsage",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "EncounterHistory",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceReport",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "FormularyItem",
    "GenomicStudy",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingSelection",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "Ingredient",
    "InsurancePlan",
    "InventoryItem",
    "InventoryReport",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "ManufacturedItemDefinition",
    "Measure",
    "MeasureReport",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProductDefinition",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionIntake",
    "NutritionOrder",
    "NutritionProduct",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "PackagedProductDefinition",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Permission",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RegulatedAuthorization",
    "RelatedPerson",
    "RequestOrchestration",
    "Requirements",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "SubscriptionStatus",
    "SubscriptionTopic",
    "Substance",
    "SubstanceDefinition",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestPlan",
    "TestReport",
    "TestScript",
    "Transport",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// Resource types of STU3 (3.0.2) and DSTU2 (1.0.2) that R4 and R5 no longer have (Epic and
/// others still serve DSTU2 and STU3 endpoints).
const OLDER: &[&str] = &[
    "BodySite",
    "Conformance",
    "DataElement",
    "DeviceComponent",
    "DeviceUseRequest",
    "DiagnosticOrder",
    "EligibilityRequest",
    "EligibilityResponse",
    "ExpansionProfile",
    "ImagingManifest",
    "ImagingObjectSelection",
    "MedicationOrder",
    "Order",
    "OrderResponse",
    "ProcedureRequest",
    "ProcessRequest",
    "ProcessResponse",
    "ReferralRequest",
    "Sequence",
    "ServiceDefinition",
];

/// True when `name` is a resource type of FHIR R4, R5, STU3 or DSTU2 (case-sensitive, as the
/// specification's names are).
pub fn is_resource_type(name: &str) -> bool {
    [R4, R5, OLDER].iter().any(|list| list.binary_search(&name).is_ok())
}

/// What a FHIR REST request path says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The resource type acted on (for a compartment search, the type searched).
    pub resource_type: Option<&'a str>,
    /// The `$operation`, at system, type or instance level.
    pub operation: Option<&'a str>,
    id: bool,
    history: bool,
    version: bool,
    search: bool,
    metadata: bool,
    base: bool,
}

impl<'a> Route<'a> {
    /// Reads a request target: a path, a path with a host (`test.fhir.org/r4/Observation`) or
    /// an absolute URL; the query string and fragment are ignored.
    pub fn parse(target: &'a str) -> Route<'a> {
        let target = target.split(['?', '#']).next().unwrap_or(target).trim();
        let path = match target.find("://") {
            Some(i) => &target[i + 3..],
            None => target,
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut route = Route::default();
        let Some(first) = segments.iter().position(|s| is_resource_type(s)) else {
            // System level: the last segment says what (a base URL's own segments are not
            // interactions).
            match segments.last().copied() {
                Some("metadata") => route.metadata = true,
                Some("_search") => route.search = true,
                Some("_history") => route.history = true,
                Some(op) if is_operation(op) => route.operation = Some(op),
                _ => route.base = true,
            }
            return route;
        };
        route.resource_type = Some(segments[first]);
        match &segments[first + 1..] {
            [] => {}
            ["_search"] => route.search = true,
            ["_history"] => route.history = true,
            [op] if is_operation(op) => route.operation = Some(op),
            [_id] => route.id = true,
            [_id, "_history"] => route.history = true,
            [_id, "_history", _vid] => route.version = true,
            [_id, op] if is_operation(op) => {
                route.id = true;
                route.operation = Some(op);
            }
            [_id, compartment, ..] if is_resource_type(compartment) || *compartment == "*" => {
                route.resource_type = is_resource_type(compartment).then_some(*compartment);
                route.search = true;
            }
            _ => route.id = true,
        }
        route
    }

    /// The interaction a request with this method makes on this route.
    pub fn interaction(&self, method: &str) -> Option<Interaction> {
        if self.operation.is_some() {
            return Some(Interaction::Operation);
        }
        let method = method.trim().to_ascii_uppercase();
        Some(match method.as_str() {
            "GET" | "HEAD" if self.metadata => Interaction::Capabilities,
            "GET" | "HEAD" if self.version => Interaction::Vread,
            "GET" | "HEAD" if self.history => Interaction::History,
            "GET" | "HEAD" if self.id => Interaction::Read,
            "GET" | "HEAD" if self.resource_type.is_some() || self.search => Interaction::Search,
            "POST" if self.search => Interaction::Search,
            "POST" if self.base => Interaction::Transaction,
            "POST" if self.resource_type.is_some() && !self.id => Interaction::Create,
            "PUT" if self.resource_type.is_some() => Interaction::Update,
            "PATCH" if self.resource_type.is_some() => Interaction::Patch,
            "DELETE" if self.resource_type.is_some() => Interaction::Delete,
            _ => return None,
        })
    }
}

fn is_operation(segment: &str) -> bool {
    segment.len() > 1 && segment.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interaction::*;

    fn route(method: &str, target: &'static str) -> (Option<Interaction>, Option<&'static str>, Option<&'static str>) {
        let r = Route::parse(target);
        (r.interaction(method), r.resource_type, r.operation)
    }

    #[test]
    fn the_lists_are_sorted_and_complete() {
        for list in [R4, R5, OLDER] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted, no repeats");
        }
        // The R4 resource list names 146 types (index page of 4.0.1 with Binary, Bundle and
        // Parameters); R5's names 158.
        assert_eq!(R4.len(), 146);
        assert_eq!(R5.len(), 158);
        for name in [
            "Patient",
            "Observation",
            "AuditEvent",
            "Bundle",
            "Group",
            "List",
            "Media",
        ] {
            assert!(is_resource_type(name), "{name}");
        }
        // R5 only, and DSTU2 only.
        assert!(is_resource_type("Permission") && is_resource_type("MedicationOrder"));
        for name in [
            "R4",
            "FHIR",
            "DSTU2",
            "STU3",
            "Resource",
            "DomainResource",
            "patient",
            "fhir",
        ] {
            assert!(!is_resource_type(name), "{name}");
        }
    }

    /// Base URLs as vendors publish them: Epic's `…/api/FHIR/R4/`, Oracle Health's
    /// `…/r4/<tenant-id>/`, HAPI's `/baseR4/`, SMART's `/fhir/R4/`, Cloud Healthcare's store path.
    #[test]
    fn the_resource_type_is_a_resource_type_wherever_the_base_ends() {
        assert_eq!(
            route("GET", "/fhir/R4/Observation?patient=123"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(
            route(
                "GET",
                "https://fhir.epic.example/interconnect-fhir-oauth/api/FHIR/R4/Patient/eq081-VQEgP8drUUqCWzHfw3"
            ),
            (Some(Read), Some("Patient"), None)
        );
        assert_eq!(
            route(
                "GET",
                "https://fhir-ehr.example.net/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d/Patient/12724066"
            ),
            (Some(Read), Some("Patient"), None)
        );
        assert_eq!(
            route("GET", "/baseR4/Encounter?date=ge2024"),
            (Some(Search), Some("Encounter"), None)
        );
        assert_eq!(
            route("GET", "/STU3/ProcedureRequest/7"),
            (Some(Read), Some("ProcedureRequest"), None)
        );
        assert_eq!(
            route("GET", "/api/FHIR/DSTU2/MedicationOrder?patient=1"),
            (Some(Search), Some("MedicationOrder"), None)
        );
        assert_eq!(
            route(
                "GET",
                "projects/p/locations/us/datasets/d/fhirStores/s/fhir/Observation/9"
            ),
            (Some(Read), Some("Observation"), None)
        );
        assert_eq!(
            route("GET", "test.fhir.org/r4/Observation?patient=x"),
            (Some(Search), Some("Observation"), None)
        );
        // A capitalised segment that is no resource type is not one.
        assert_eq!(route("GET", "/api/FHIR/R4/Widget/1"), (None, None, None));
    }

    /// FHIR R4 §3.1.0, the interaction summary.
    #[test]
    fn the_interaction_follows_the_rest_grammar() {
        assert_eq!(
            route("GET", "/fhir/Patient/123/_history/2"),
            (Some(Vread), Some("Patient"), None)
        );
        assert_eq!(
            route("GET", "/fhir/Patient/123/_history"),
            (Some(History), Some("Patient"), None)
        );
        assert_eq!(
            route("GET", "/fhir/Patient/_history"),
            (Some(History), Some("Patient"), None)
        );
        assert_eq!(route("GET", "/fhir/_history"), (Some(History), None, None));
        assert_eq!(
            route("POST", "/fhir/R4/Observation/_search"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(route("POST", "/fhir/_search"), (Some(Search), None, None));
        assert_eq!(
            route("GET", "/fhir/Patient/1/Observation"),
            (Some(Search), Some("Observation"), None)
        );
        assert_eq!(
            route("POST", "/fhir/R4/Observation"),
            (Some(Create), Some("Observation"), None)
        );
        assert_eq!(
            route("PUT", "/fhir/Observation/9"),
            (Some(Update), Some("Observation"), None)
        );
        assert_eq!(
            route("PATCH", "/fhir/Observation/9"),
            (Some(Patch), Some("Observation"), None)
        );
        assert_eq!(
            route("DELETE", "/fhir/Observation/9"),
            (Some(Delete), Some("Observation"), None)
        );
        assert_eq!(route("GET", "/fhir/R4/metadata"), (Some(Capabilities), None, None));
        assert_eq!(route("POST", "/fhir/R4"), (Some(Transaction), None, None));
        assert_eq!(route("POST", "/fhir/R4/"), (Some(Transaction), None, None));
        assert_eq!(
            route("GET", "/fhir/R4/$export"),
            (Some(Operation), None, Some("$export"))
        );
        assert_eq!(
            route("GET", "/fhir/Patient/$export"),
            (Some(Operation), Some("Patient"), Some("$export"))
        );
        assert_eq!(
            route("GET", "/fhir/Group/7/$export?_type=Patient"),
            (Some(Operation), Some("Group"), Some("$export"))
        );
        assert_eq!(
            route("POST", "/fhir/Patient/$match"),
            (Some(Operation), Some("Patient"), Some("$match"))
        );
        assert_eq!(
            route("GET", "/fhir/Patient/5/$everything"),
            (Some(Operation), Some("Patient"), Some("$everything"))
        );
        // A method the grammar has no interaction for at a level is none.
        assert_eq!(route("DELETE", "/fhir/R4"), (None, None, None));
        assert_eq!(route("OPTIONS", "/fhir/Patient/1"), (None, Some("Patient"), None));
    }
}
