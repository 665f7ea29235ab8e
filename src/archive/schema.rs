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

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

/// `events` as one record batch, in the order given.
pub fn events_batch(events: &[Event]) -> Result<RecordBatch, ArrowError> {
    let e = events;
    let opt = |f: fn(&Event) -> Option<&str>| strings(e.iter().map(f));
    let mut status = UInt16Builder::new();
    let (mut src_name, mut src_partition, mut src_offset) =
        (StringBuilder::new(), Int32Builder::new(), Int64Builder::new());
    let mut src_valid = Vec::with_capacity(e.len());
    for ev in e {
        status.append_option(ev.status);
        match &ev.source {
            Some(o) => {
                src_name.append_value(&o.name);
                src_partition.append_option(o.partition);
                src_offset.append_value(o.offset);
                src_valid.push(true);
            }
            None => {
                src_name.append_value("");
                src_partition.append_null();
                src_offset.append_value(0);
                src_valid.push(false);
            }
        }
    }
    let source = StructArray::try_new(
        source_fields(),
        vec![
            Arc::new(src_name.finish()),
            Arc::new(src_partition.finish()),
            Arc::new(src_offset.finish()),
        ],
        Some(src_valid.into()),
    )?;
    let columns: Vec<ArrayRef> = vec![
        opt(|v| Some(&v.event_id)),
        times(e.iter().map(|v| v.time.timestamp_micros())),
        opt(|v| Some(v.format.as_str())),
        opt(|v| Some(v.kind.as_str())),
        opt(|v| Some(&v.identity)),
        opt(|v| v.identity_name.as_deref()),
        opt(|v| Some(v.identity_type.as_str())),
        opt(|v| v.tenant.as_deref()),
        opt(|v| v.on_behalf_of.as_deref()),
        opt(|v| v.initiator.as_deref()),
        lists(e.iter().map(|v| v.scopes.iter().map(|s| s.to_string()))),
        opt(|v| v.interaction.map(|i| i.as_str())),
        opt(|v| v.operation.as_deref()),
        opt(|v| v.resource_type.as_deref()),
        lists(e.iter().map(|v| v.patients.iter())),
        u64s(e.iter().map(|v| v.patient_count)),
        u64s(e.iter().map(|v| v.records)),
        u64s(e.iter().map(|v| v.bytes)),
        lists(e.iter().map(|v| v.purpose_of_use.iter())),
        opt(|v| v.src_ip.as_deref()),
        opt(|v| v.user_agent.as_deref()),
        opt(|v| Some(v.outcome.as_str())),
        Arc::new(status.finish()),
        opt(|v| v.error.as_deref()),
        opt(|v| v.credential_id.as_deref()),
        opt(|v| v.token_id.as_deref()),
        opt(|v| v.action.as_deref()),
        Arc::new(source),
    ];
    RecordBatch::try_new(event_schema(), columns)
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
        times(f.iter().map(|v| v.event_time.timestamp_micros())),
        times(f.iter().map(|v| v.last_event_time.timestamp_micros())),
        times(f.iter().map(|v| v.detected_at.timestamp_micros())),
        opt(|v| Some(&v.title)),
        opt(|v| Some(&v.explanation)),
        u64s(f.iter().map(|v| Some(v.count))),
        json(|v| serde_json::to_string(&v.analysis).unwrap_or_default()),
        json(|v| serde_json::to_string(&v.evidence).unwrap_or_default()),
    ];
    RecordBatch::try_new(finding_schema(), columns)
}
