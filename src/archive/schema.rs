//! The Arrow schemas of the archive and the conversion of events and findings into record
//! batches.
//!
//! `events` mirrors `schemas/event.schema.json` field for field (a test keeps them in step): a
//! property required there is non-nullable here, lists are `List<Utf8>`, `source` is a struct,
//! times are UTC microseconds. `findings` holds the finding's flat fields, with its analysis and
//! evidence as JSON text (they are read whole, never filtered inside).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringBuilder, StructArray,
    TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;

use crate::event::Event;
use crate::findings::Finding;

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn source_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, true),
        Field::new("offset", DataType::Int64, false),
    ])
}

/// The schema of the `events` table.
pub fn event_schema() -> SchemaRef {
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("event_id", false),
        Field::new("time", time_type(), false),
        s("format", false),
        s("kind", false),
        s("identity", false),
        s("source_identity", true),
        s("identity_name", true),
        s("identity_type", false),
        s("tenant", true),
        s("on_behalf_of", true),
        s("initiator", true),
        Field::new("scopes", list(), true),
        s("interaction", true),
        s("operation", true),
        s("resource_type", true),
        Field::new("patients", list(), true),
        Field::new("patient_count", DataType::UInt64, true),
        Field::new("records", DataType::UInt64, true),
        Field::new("bytes", DataType::UInt64, true),
        Field::new("purpose_of_use", list(), true),
        s("src_ip", true),
        s("user_agent", true),
        s("outcome", false),
        Field::new("status", DataType::UInt16, true),
        s("error", true),
        s("credential_id", true),
        s("token_id", true),
        Field::new("token_issued_at", time_type(), true),
        Field::new("token_expires_at", time_type(), true),
        s("action", true),
        Field::new("source", DataType::Struct(source_fields()), true),
    ]))
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn lists<I, S>(values: impl Iterator<Item = I>) -> ArrayRef
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut b = ListBuilder::new(StringBuilder::new());
    for v in values {
        for item in v {
            b.values().append_value(item.as_ref());
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

fn u64s(values: impl Iterator<Item = Option<u64>>) -> ArrayRef {
    let mut b = UInt64Builder::new();
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

/// `events` as one record batch, in the order given.
pub fn events_batch(events: &[Event]) -> Result<RecordBatch, ArrowError> {
    let mut rows = EventRows::default();
    for e in events {
        rows.push(e);
    }
    rows.finish()
}

type StringList = ListBuilder<StringBuilder>;

/// Events appended column by column as they arrive: an event's text is copied once into the
/// columns' buffers (no clone of the event, no allocation per field), and [`EventRows::finish`]
/// hands the buffers over as a batch without copying them again.
pub struct EventRows {
    len: usize,
    event_id: StringBuilder,
    time: TimestampMicrosecondBuilder,
    format: StringBuilder,
    kind: StringBuilder,
    identity: StringBuilder,
    source_identity: StringBuilder,
    identity_name: StringBuilder,
    identity_type: StringBuilder,
    tenant: StringBuilder,
    on_behalf_of: StringBuilder,
    initiator: StringBuilder,
    scopes: StringList,
    interaction: StringBuilder,
    operation: StringBuilder,
    resource_type: StringBuilder,
    patients: StringList,
    patient_count: UInt64Builder,
    records: UInt64Builder,
    bytes: UInt64Builder,
    purpose_of_use: StringList,
    src_ip: StringBuilder,
    user_agent: StringBuilder,
    outcome: StringBuilder,
    status: UInt16Builder,
    error: StringBuilder,
    credential_id: StringBuilder,
    token_id: StringBuilder,
    token_issued_at: TimestampMicrosecondBuilder,
    token_expires_at: TimestampMicrosecondBuilder,
    action: StringBuilder,
    src_name: StringBuilder,
    src_partition: Int32Builder,
    src_offset: Int64Builder,
    src_valid: Vec<bool>,
    scratch: String,
}

impl Default for EventRows {
    fn default() -> EventRows {
        let utc = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        let list = || ListBuilder::new(StringBuilder::new());
        EventRows {
            len: 0,
            event_id: StringBuilder::new(),
            time: utc(),
            format: StringBuilder::new(),
            kind: StringBuilder::new(),
            identity: StringBuilder::new(),
            source_identity: StringBuilder::new(),
            identity_name: StringBuilder::new(),
            identity_type: StringBuilder::new(),
            tenant: StringBuilder::new(),
            on_behalf_of: StringBuilder::new(),
            initiator: StringBuilder::new(),
            scopes: list(),
            interaction: StringBuilder::new(),
            operation: StringBuilder::new(),
            resource_type: StringBuilder::new(),
            patients: list(),
            patient_count: UInt64Builder::new(),
            records: UInt64Builder::new(),
            bytes: UInt64Builder::new(),
            purpose_of_use: list(),
            src_ip: StringBuilder::new(),
            user_agent: StringBuilder::new(),
            outcome: StringBuilder::new(),
            status: UInt16Builder::new(),
            error: StringBuilder::new(),
            credential_id: StringBuilder::new(),
            token_id: StringBuilder::new(),
            token_issued_at: utc(),
            token_expires_at: utc(),
            action: StringBuilder::new(),
            src_name: StringBuilder::new(),
            src_partition: Int32Builder::new(),
            src_offset: Int64Builder::new(),
            src_valid: Vec::new(),
            scratch: String::new(),
        }
    }
}

impl std::fmt::Debug for EventRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRows")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl EventRows {
    /// Rows appended since the last [`EventRows::finish`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one event as a row.
    pub fn push(&mut self, e: &Event) {
        use std::fmt::Write as _;
        self.len += 1;
        self.event_id.append_value(&e.event_id);
        self.time.append_value(e.time.timestamp_micros());
        self.format.append_value(e.format.as_str());
        self.kind.append_value(e.kind.as_str());
        self.identity.append_value(&e.identity);
        self.source_identity.append_option(e.source_identity.as_deref());
        self.identity_name.append_option(e.identity_name.as_deref());
        self.identity_type.append_value(e.identity_type.as_str());
        self.tenant.append_option(e.tenant.as_deref());
        self.on_behalf_of.append_option(e.on_behalf_of.as_deref());
        self.initiator.append_option(e.initiator.as_deref());
        for scope in &e.scopes {
            self.scratch.clear();
            let _ = write!(self.scratch, "{scope}");
            self.scopes.values().append_value(&self.scratch);
        }
        self.scopes.append(true);
        self.interaction.append_option(e.interaction.map(|i| i.as_str()));
        self.operation.append_option(e.operation.as_deref());
        self.resource_type.append_option(e.resource_type.as_deref());
        for p in &e.patients {
            self.patients.values().append_value(p);
        }
        self.patients.append(true);
        self.patient_count.append_option(e.patient_count);
        self.records.append_option(e.records);
        self.bytes.append_option(e.bytes);
        for p in &e.purpose_of_use {
            self.purpose_of_use.values().append_value(p);
        }
        self.purpose_of_use.append(true);
        self.src_ip.append_option(e.src_ip.as_deref());
        self.user_agent.append_option(e.user_agent.as_deref());
        self.outcome.append_value(e.outcome.as_str());
        self.status.append_option(e.status);
        self.error.append_option(e.error.as_deref());
        self.credential_id.append_option(e.credential_id.as_deref());
        self.token_id.append_option(e.token_id.as_deref());
        self.token_issued_at
            .append_option(e.token_issued_at.map(|t| t.timestamp_micros()));
        self.token_expires_at
            .append_option(e.token_expires_at.map(|t| t.timestamp_micros()));
        self.action.append_option(e.action.as_deref());
        match &e.source {
            Some(o) => {
                self.src_name.append_value(&o.name);
                self.src_partition.append_option(o.partition);
                self.src_offset.append_value(o.offset);
                self.src_valid.push(true);
            }
            None => {
                self.src_name.append_value("");
                self.src_partition.append_null();
                self.src_offset.append_value(0);
                self.src_valid.push(false);
            }
        }
    }

    /// The rows so far as one batch, in the order appended; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.len = 0;
        let source = StructArray::try_new(
            source_fields(),
            vec![
                Arc::new(self.src_name.finish()),
                Arc::new(self.src_partition.finish()),
                Arc::new(self.src_offset.finish()),
            ],
            Some(std::mem::take(&mut self.src_valid).into()),
        )?;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.format.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.identity.finish()),
            Arc::new(self.source_identity.finish()),
            Arc::new(self.identity_name.finish()),
            Arc::new(self.identity_type.finish()),
            Arc::new(self.tenant.finish()),
            Arc::new(self.on_behalf_of.finish()),
            Arc::new(self.initiator.finish()),
            Arc::new(self.scopes.finish()),
            Arc::new(self.interaction.finish()),
            Arc::new(self.operation.finish()),
            Arc::new(self.resource_type.finish()),
            Arc::new(self.patients.finish()),
            Arc::new(self.patient_count.finish()),
            Arc::new(self.records.finish()),
            Arc::new(self.bytes.finish()),
            Arc::new(self.purpose_of_use.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error.finish()),
            Arc::new(self.credential_id.finish()),
            Arc::new(self.token_id.finish()),
            Arc::new(self.token_issued_at.finish()),
            Arc::new(self.token_expires_at.finish()),
            Arc::new(self.action.finish()),
            Arc::new(source),
        ];
        RecordBatch::try_new(event_schema(), columns)
    }
}

/// The schema of the `findings` table.
pub fn finding_schema() -> SchemaRef {
    let s = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        s("id", false),
        s("detector", false),
        s("severity", false),
        s("confidence", false),
        s("status", false),
        s("identity", false),
        s("identity_name", true),
        s("identity_owner", true),
        Field::new("registered", DataType::Boolean, false),
        Field::new("event_time", time_type(), false),
        Field::new("last_event_time", time_type(), false),
        Field::new("detected_at", time_type(), false),
        s("title", false),
        s("explanation", false),
        Field::new("count", DataType::UInt64, false),
        s("analysis", false),
        s("evidence", false),
        Field::new("controls", list(), true),
        s("cause", true),
    ]))
}

/// `findings` as one record batch, in the order given.
pub fn findings_batch(findings: &[Finding]) -> Result<RecordBatch, ArrowError> {
    let f = findings;
    let opt = |g: fn(&Finding) -> Option<&str>| strings(f.iter().map(g));
    let json = |g: fn(&Finding) -> String| {
        let values: Vec<String> = f.iter().map(g).collect();
        strings(values.iter().map(|v| Some(v.as_str())))
    };
    let mut registered = BooleanBuilder::new();
    for x in f {
        registered.append_value(x.identity.registered);
    }
    let columns: Vec<ArrayRef> = vec![
        opt(|v| Some(&v.id)),
        opt(|v| Some(v.detector.as_str())),
        opt(|v| Some(v.severity.as_str())),
        opt(|v| Some(v.confidence.as_str())),
        opt(|v| Some(v.status.as_str())),
        opt(|v| Some(&v.identity.id)),
        opt(|v| v.identity.name.as_deref()),
        opt(|v| v.identity.owner.as_deref()),
        Arc::new(registered.finish()),
        times(f.iter().map(|v| Some(v.event_time.timestamp_micros()))),
        times(f.iter().map(|v| Some(v.last_event_time.timestamp_micros()))),
        times(f.iter().map(|v| Some(v.detected_at.timestamp_micros()))),
        opt(|v| Some(&v.title)),
        opt(|v| Some(&v.explanation)),
        u64s(f.iter().map(|v| Some(v.count))),
        json(|v| serde_json::to_string(&v.analysis).unwrap_or_default()),
        json(|v| serde_json::to_string(&v.evidence).unwrap_or_default()),
        lists(f.iter().map(|v| v.controls.iter().map(|c| c.id.clone()))),
        opt(|v| v.cause.as_deref()),
    ];
    RecordBatch::try_new(finding_schema(), columns)
}

/// The events of a batch with the `events` schema (extra columns, such as the partition
/// column `date`, are ignored), in row order.
pub fn events_from_batch(batch: &RecordBatch) -> Result<Vec<Event>, String> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType, UInt16Type, UInt64Type};
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name}"));
    let text = |name: &str| -> Result<&StringArray, String> { Ok(column(name)?.as_string::<i32>()) };
    let get = |a: &StringArray, i: usize| (!a.is_null(i)).then(|| a.value(i).to_owned());
    let parse = |what: &str, v: &str| format!("row has {what} {v:?}");
    let u64_at = |name: &str, i: usize| -> Result<Option<u64>, String> {
        let a = column(name)?.as_primitive::<UInt64Type>();
        Ok((!a.is_null(i)).then(|| a.value(i)))
    };
    let time_at = |name: &str, i: usize| -> Result<Option<chrono::DateTime<chrono::Utc>>, String> {
        let a = column(name)?.as_primitive::<TimestampMicrosecondType>();
        if a.is_null(i) {
            return Ok(None);
        }
        chrono::DateTime::from_timestamp_micros(a.value(i))
            .map(Some)
            .ok_or_else(|| format!("row has {name} out of range"))
    };
    let list_at = |name: &str, i: usize| -> Result<Vec<String>, String> {
        let a = column(name)?.as_list::<i32>();
        if a.is_null(i) {
            return Ok(Vec::new());
        }
        let v = a.value(i);
        let s = v.as_string::<i32>();
        Ok((0..s.len()).map(|j| s.value(j).to_owned()).collect())
    };
    let (event_id, format, kind, identity) = (text("event_id")?, text("format")?, text("kind")?, text("identity")?);
    let times = column("time")?.as_primitive::<TimestampMicrosecondType>();
    let status = column("status")?.as_primitive::<UInt16Type>();
    let source = column("source")?.as_struct();
    let (src_name, src_part, src_off) = (
        source.column(0).as_string::<i32>(),
        source.column(1).as_primitive::<Int32Type>(),
        source.column(2).as_primitive::<Int64Type>(),
    );
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let time =
            chrono::DateTime::from_timestamp_micros(times.value(i)).ok_or_else(|| parse("time", "out of range"))?;
        let mut e = Event::new(
            event_id.value(i).to_owned(),
            time,
            format.value(i).parse().map_err(|()| parse("format", format.value(i)))?,
            kind.value(i).parse().map_err(|()| parse("kind", kind.value(i)))?,
            identity.value(i).to_owned(),
        );
        // Absent from files written before canonical identities were archived.
        e.source_identity = batch
            .column_by_name("source_identity")
            .and_then(|c| get(c.as_string::<i32>(), i));
        e.identity_name = get(text("identity_name")?, i);
        let it = text("identity_type")?.value(i);
        e.identity_type = it.parse().map_err(|()| parse("identity_type", it))?;
        e.tenant = get(text("tenant")?, i);
        e.on_behalf_of = get(text("on_behalf_of")?, i);
        e.initiator = get(text("initiator")?, i);
        e.scopes = list_at("scopes", i)?
            .iter()
            .map(|s| crate::scope::Scope::parse(s))
            .collect();
        e.interaction = match get(text("interaction")?, i) {
            Some(v) => Some(v.parse().map_err(|()| parse("interaction", &v))?),
            None => None,
        };
        e.operation = get(text("operation")?, i);
        e.resource_type = get(text("resource_type")?, i);
        e.patients = list_at("patients", i)?;
        e.patient_count = u64_at("patient_count", i)?;
        e.records = u64_at("records", i)?;
        e.bytes = u64_at("bytes", i)?;
        e.purpose_of_use = list_at("purpose_of_use", i)?;
        e.src_ip = get(text("src_ip")?, i);
        e.user_agent = get(text("user_agent")?, i);
        let o = text("outcome")?.value(i);
        e.outcome = o.parse().map_err(|()| parse("outcome", o))?;
        e.status = (!status.is_null(i)).then(|| status.value(i));
        e.error = get(text("error")?, i);
        e.credential_id = get(text("credential_id")?, i);
        e.token_id = get(text("token_id")?, i);
        e.token_issued_at = time_at("token_issued_at", i)?;
        e.token_expires_at = time_at("token_expires_at", i)?;
        e.action = get(text("action")?, i);
        e.source = (!source.is_null(i)).then(|| crate::event::Origin {
            name: src_name.value(i).to_owned(),
            partition: (!src_part.is_null(i)).then(|| src_part.value(i)),
            offset: src_off.value(i),
        });
        out.push(e);
    }
    Ok(out)
}

/// The findings of a batch with the `findings` schema (extra columns ignored), in row order.
pub fn findings_from_batch(batch: &RecordBatch) -> Result<Vec<Finding>, String> {
    use datafusion::arrow::array::{Array, AsArray, StringArray};
    use datafusion::arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name}"));
    let text = |name: &str| -> Result<&StringArray, String> { Ok(column(name)?.as_string::<i32>()) };
    let time = |name: &str, i: usize| -> Result<chrono::DateTime<chrono::Utc>, String> {
        let a = column(name)?.as_primitive::<TimestampMicrosecondType>();
        chrono::DateTime::from_timestamp_micros(a.value(i)).ok_or_else(|| format!("{name} out of range"))
    };
    let wire = |name: &str, i: usize| -> Result<String, String> { Ok(text(name)?.value(i).to_owned()) };
    let opt = |name: &str, i: usize| -> Result<Option<String>, String> {
        let a = text(name)?;
        Ok((!a.is_null(i)).then(|| a.value(i).to_owned()))
    };
    let bad = |what: &str, v: String| format!("row has {what} {v:?}");
    let registered = column("registered")?.as_boolean();
    let count = column("count")?.as_primitive::<UInt64Type>();
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let detector: crate::findings::DetectorId = wire("detector", i)?
            .parse()
            .map_err(|()| bad("detector", wire("detector", i).unwrap_or_default()))?;
        out.push(Finding {
            id: wire("id", i)?,
            detector,
            severity: wire("severity", i)?
                .parse()
                .map_err(|()| bad("severity", wire("severity", i).unwrap_or_default()))?,
            confidence: wire("confidence", i)?
                .parse()
                .map_err(|()| bad("confidence", wire("confidence", i).unwrap_or_default()))?,
            status: wire("status", i)?
                .parse()
                .map_err(|()| bad("status", wire("status", i).unwrap_or_default()))?,
            identity: crate::findings::IdentityRef {
                id: wire("identity", i)?,
                name: opt("identity_name", i)?,
                owner: opt("identity_owner", i)?,
                registered: registered.value(i),
            },
            event_time: time("event_time", i)?,
            last_event_time: time("last_event_time", i)?,
            detected_at: time("detected_at", i)?,
            title: wire("title", i)?,
            explanation: wire("explanation", i)?,
            analysis: serde_json::from_str(text("analysis")?.value(i)).map_err(|e| e.to_string())?,
            count: count.value(i),
            evidence: serde_json::from_str(text("evidence")?.value(i)).map_err(|e| e.to_string())?,
            // The archive keeps control ids for SQL; the controls come from the table.
            controls: crate::findings::controls::of(detector).to_vec(),
            // Files written before findings had a cause have no such column.
            cause: match batch.column_by_name("cause") {
                Some(_) => opt("cause", i)?,
                None => None,
            },
        });
    }
    Ok(out)
}
