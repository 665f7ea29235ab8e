//! FHIR XML to the FHIR JSON shape, so one `AuditEvent` normalizer serves both encodings.
//!
//! Follows the FHIR XML rules that matter for reading: a primitive is an element with a `value`
//! attribute; an element may repeat (then it becomes an array); a resource nested in `resource`
//! or `contained` is named by its element. The XHTML narrative (`div`) is skipped. Primitive
//! values stay strings (`"true"`, `"0"`): the normalizer accepts both forms.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as Xml};
use serde_json::{Map, Value};

use super::ParseError;

struct Frame {
    name: String,
    map: Map<String, Value>,
    value: Option<String>,
}

impl Frame {
    fn open(e: &BytesStart<'_>) -> Result<Frame, ParseError> {
        let name = AsRef::<str>::as_ref(&e.local_name()).to_owned();
        let mut frame = Frame {
            name,
            map: Map::new(),
            value: None,
        };
        for attr in e.attributes() {
            let attr = attr.map_err(|err| ParseError::MalformedXml(err.to_string()))?;
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| ParseError::MalformedXml(err.to_string()))?
                .into_owned();
            match AsRef::<str>::as_ref(&attr.key.local_name()) {
                "value" => frame.value = Some(value),
                "url" => {
                    frame.map.insert("url".into(), Value::String(value));
                }
                _ => {}
            }
        }
        Ok(frame)
    }

    fn into_value(self) -> Value {
        match (self.value, self.map.is_empty()) {
            (Some(v), true) => Value::String(v),
            (Some(v), false) => {
                let mut map = self.map;
                map.insert("value".into(), Value::String(v));
                Value::Object(map)
            }
            (None, _) => Value::Object(self.map),
        }
    }
}

/// Adds a child, turning a repeated element into an array.
fn insert(map: &mut Map<String, Value>, name: String, value: Value) {
    match map.get_mut(&name) {
        Some(Value::Array(items)) => items.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
        None => {
            map.insert(name, value);
        }
    }
}

/// Places a closed element into its parent. A child of `resource`/`contained` is the resource
/// itself: its fields move up and its name becomes `resourceType`.
fn close(stack: &mut [Frame], frame: Frame) {
    let Some(parent) = stack.last_mut() else { return };
    if matches!(parent.name.as_str(), "resource" | "contained") && parent.map.is_empty() {
        let name = frame.name.clone();
        if let Value::Object(fields) = frame.into_value() {
            parent.map = fields;
        }
        parent.map.insert("resourceType".into(), Value::String(name));
    } else {
        let name = frame.name.clone();
        insert(&mut parent.map, name, frame.into_value());
    }
}

/// Reads a FHIR XML resource into its JSON shape.
pub fn to_json(text: &str) -> Result<Value, ParseError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let bad = |e: quick_xml::Error| ParseError::MalformedXml(e.to_string());
    loop {
        match reader.read_event().map_err(bad)? {
            Xml::Start(e) if AsRef::<str>::as_ref(&e.local_name()) == "div" => {
                reader.read_to_end(e.name()).map_err(bad)?;
            }
            Xml::Start(e) => stack.push(Frame::open(&e)?),
            Xml::Empty(e) => {
                let frame = Frame::open(&e)?;
                close(&mut stack, frame);
            }
            Xml::End(_) => {
                let frame = stack
                    .pop()
                    .ok_or_else(|| ParseError::MalformedXml("unbalanced end tag".into()))?;
                if stack.is_empty() {
                    let name = frame.name.clone();
                    let Value::Object(mut map) = frame.into_value() else {
                        return Err(ParseError::MalformedXml("root element has a value".into()));
                    };
                    map.insert("resourceType".into(), Value::String(name));
                    return Ok(Value::Object(map));
                }
                close(&mut stack, frame);
            }
            Xml::Eof => return Err(ParseError::MalformedXml("unexpected end of document".into())),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_primitives_repeats_and_nested_resources() {
        let xml = r#"<?xml version="1.0"?><Bundle xmlns="http://hl7.org/fhir"><type value="collection"/>
            <entry><resource><AuditEvent><id value="a"/><text><div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div></text>
            <agent><requestor value="true"/></agent><agent><requestor value="false"/></agent></AuditEvent></resource></entry>
            </Bundle>"#;
        let v = to_json(xml).expect("valid XML");
        assert_eq!(
            v,
            json!({"resourceType": "Bundle", "type": "collection", "entry": {"resource": {
                "resourceType": "AuditEvent", "id": "a", "text": {},
                "agent": [{"requestor": "true"}, {"requestor": "false"}]}}})
        );
    }

    #[test]
    fn rejects_broken_xml() {
        assert_eq!(
            to_json("<AuditEvent><id value=\"a\"/>").unwrap_err().reason(),
            "malformed_xml"
        );
        assert_eq!(
            to_json("<AuditEvent><a></b></AuditEvent>").unwrap_err().reason(),
            "malformed_xml"
        );
    }
}
