//! FHIR XML to the FHIR JSON shape, so one `AuditEvent` normalizer serves both encodings.
//!
//! Follows the FHIR XML rules that matter for reading: a primitive is an element with a `value`
//! attribute; an element may repeat (then it becomes an array); a resource nested in `resource`
//! or `contained` is named by its element. The XHTML narrative (`div`) is skipped. Primitive
//! values stay strings (`"true"`, `"0"`): the normalizer accepts both forms.
//!
//! The reader keeps its own stack, but the tree it builds is dropped and walked recursively:
//! nesting beyond [`MAX_DEPTH`], more than [`MAX_XML_ELEMENTS`] elements or more than
//! [`MAX_XML_ATTRIBUTES`] attributes on one are refused while reading, before the tree exists.

use std::ops::Range;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event as Xml};
use serde_json::{Map, Value};

use super::{MAX_DEPTH, MAX_XML_ATTRIBUTES, MAX_XML_ELEMENTS, ParseError};

/// A FHIR resource read from XML.
pub struct Resource {
    /// The resource in its JSON shape.
    pub value: Value,
    /// For a `Bundle`: where each `entry`'s resource is in the text, in order (`None` for an
    /// entry without one), so that a refused entry is dead-lettered on its own.
    pub entries: Vec<Option<Range<usize>>>,
}

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
        for (n, attr) in e.attributes().enumerate() {
            if n == MAX_XML_ATTRIBUTES {
                return Err(ParseError::TooComplex {
                    what: "attributes on an XML element",
                    limit: MAX_XML_ATTRIBUTES,
                });
            }
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
pub fn read(text: &str) -> Result<Resource, ParseError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut elements = 0usize;
    let mut entries = Vec::new();
    // Where the resource of the `Bundle` entry being read starts.
    let mut entry_start = None;
    let bad = |e: quick_xml::Error| ParseError::MalformedXml(e.to_string());
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(bad)?;
        if let Xml::Start(_) | Xml::Empty(_) = event {
            elements += 1;
            if elements > MAX_XML_ELEMENTS {
                return Err(ParseError::TooComplex {
                    what: "XML elements",
                    limit: MAX_XML_ELEMENTS,
                });
            }
            // `<Bundle><entry><resource><AuditEvent>`: the stack holds the first three.
            match stack.as_slice() {
                [_] if matches!(&event, Xml::Start(e) | Xml::Empty(e) if AsRef::<str>::as_ref(&e.local_name()) == "entry") =>
                {
                    entries.push(None);
                }
                [_, entry, resource] if entry.name == "entry" && resource.name == "resource" => {
                    entry_start = Some(before);
                }
                _ => {}
            }
        }
        match event {
            Xml::Start(e) if AsRef::<str>::as_ref(&e.local_name()) == "div" => {
                reader.read_to_end(e.name()).map_err(bad)?;
            }
            Xml::Start(_) if stack.len() == MAX_DEPTH => {
                return Err(ParseError::TooDeep { limit: MAX_DEPTH });
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
                    return Ok(Resource {
                        value: Value::Object(map),
                        entries,
                    });
                }
                close(&mut stack, frame);
            }
            Xml::Eof => return Err(ParseError::MalformedXml("unexpected end of document".into())),
            _ => {}
        }
        // The entry's resource has just closed (or was empty).
        if stack.len() == 3
            && let Some(start) = entry_start.take_if(|_| stack[1].name == "entry")
        {
            let end = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
            if let Some(slot) = entries.last_mut() {
                *slot = Some(start..end);
            }
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
        let v = read(xml).expect("valid XML").value;
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
            read("<AuditEvent><id value=\"a\"/>").err().expect("refused").reason(),
            "malformed_xml"
        );
        assert_eq!(
            read("<AuditEvent><a></b></AuditEvent>")
                .err()
                .expect("refused")
                .reason(),
            "malformed_xml"
        );
    }

    /// Nesting, element and attribute counts are refused while reading, with their reasons, at
    /// the limit and not before.
    #[test]
    fn refuses_deep_large_and_attribute_heavy_documents() {
        let nested = |depth: usize| format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        assert!(read(&nested(MAX_DEPTH)).is_ok());
        let deep = read(&nested(MAX_DEPTH + 1)).err().expect("too deep");
        assert_eq!(deep.reason(), "too_deep");
        assert_eq!(read(&nested(100_000)).err().expect("too deep").reason(), "too_deep");

        let wide = |n: usize| format!("<AuditEvent>{}</AuditEvent>", "<b/>".repeat(n));
        assert!(read(&wide(MAX_XML_ELEMENTS - 1)).is_ok());
        let error = read(&wide(MAX_XML_ELEMENTS)).err().expect("too many elements");
        assert_eq!(error.to_string(), "more than 100000 XML elements");

        let attributes = |n: usize| {
            let list: String = (0..n).map(|i| format!(" a{i}=\"x\"")).collect();
            format!("<AuditEvent><id{list}/></AuditEvent>")
        };
        assert!(read(&attributes(MAX_XML_ATTRIBUTES)).is_ok());
        let error = read(&attributes(MAX_XML_ATTRIBUTES + 1))
            .err()
            .expect("too many attributes");
        assert_eq!(error.reason(), "too_complex");
    }

    /// Each `Bundle` entry's resource is found in the text, an entry without one is `None`.
    #[test]
    fn finds_each_bundle_entry_resource() {
        let xml = r#"<Bundle><type value="collection"/><entry><resource><AuditEvent><id value="a"/></AuditEvent></resource></entry>
            <entry><fullUrl value="x"/></entry><entry><resource><Patient/></resource></entry></Bundle>"#;
        let resource = read(xml).expect("valid XML");
        let texts: Vec<Option<&str>> = resource.entries.iter().map(|r| r.clone().map(|r| &xml[r])).collect();
        assert_eq!(
            texts,
            [
                Some(r#"<AuditEvent><id value="a"/></AuditEvent>"#),
                None,
                Some("<Patient/>")
            ]
        );
    }
}
