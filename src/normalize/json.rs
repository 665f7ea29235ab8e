//! Small helpers for reading JSON trees of formats whose shape varies (FHIR R4 and R5,
//! one-or-many elements from XML, optional nesting in IdP logs).
//!
//! They read any [`Node`]: `serde_json::Value`, or `serde_json_borrow::Value`, whose strings
//! borrow from the record and whose objects are vectors — no allocation per key or string, which
//! is what FHIR `AuditEvent`s, the largest and most frequent records, are parsed into.

use serde_json::Value;

/// A JSON value as the helpers read it.
pub trait Node: Sized {
    /// The member `key` of an object.
    fn field(&self, key: &str) -> Option<&Self>;
    /// The text of a string.
    fn text(&self) -> Option<&str>;
    /// The items of an array.
    fn elements(&self) -> Option<&[Self]>;
    /// An unsigned integer.
    fn unsigned(&self) -> Option<u64>;
    /// A boolean.
    fn boolean(&self) -> Option<bool>;
    /// JSON `null`.
    fn null(&self) -> bool;
}

impl Node for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn elements(&self) -> Option<&[Value]> {
        self.as_array().map(Vec::as_slice)
    }
    fn unsigned(&self) -> Option<u64> {
        self.as_u64()
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn null(&self) -> bool {
        self.is_null()
    }
}

impl<'a> Node for serde_json_borrow::Value<'a> {
    fn field(&self, key: &str) -> Option<&serde_json_borrow::Value<'a>> {
        self.as_object()?.get(key)
    }
    fn text(&self) -> Option<&str> {
        self.as_str()
    }
    fn elements(&self) -> Option<&[serde_json_borrow::Value<'a>]> {
        self.as_array()
    }
    fn unsigned(&self) -> Option<u64> {
        self.as_u64()
    }
    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }
    fn null(&self) -> bool {
        self.is_null()
    }
}

/// The value at a path of object keys.
pub fn at<'a, V: Node>(v: &'a V, path: &[&str]) -> Option<&'a V> {
    path.iter().try_fold(v, |v, k| v.field(k))
}

/// A non-empty string at a path.
pub fn str_at<'a, V: Node>(v: &'a V, path: &[&str]) -> Option<&'a str> {
    at(v, path)
        .and_then(Node::text)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An owned non-empty string at a path.
pub fn string_at<V: Node>(v: &V, path: &[&str]) -> Option<String> {
    str_at(v, path).map(str::to_owned)
}

/// The elements of a one-or-many value: an array's items, a single value, or nothing for null.
pub fn items<V: Node>(v: Option<&V>) -> impl Iterator<Item = &V> {
    let (slice, single) = match v {
        Some(v) => match v.elements() {
            Some(a) => (a, None),
            None if v.null() => (&[][..], None),
            None => (&[][..], Some(v)),
        },
        None => (&[][..], None),
    };
    slice.iter().chain(single)
}

/// A non-negative integer given as a number or a numeric string.
pub fn u64_of<V: Node>(v: Option<&V>) -> Option<u64> {
    let v = v?;
    v.unsigned().or_else(|| v.text().and_then(|s| s.trim().parse().ok()))
}

/// The `(system, code)` pairs of a FHIR Coding or CodeableConcept (one or many).
pub fn codings<V: Node>(v: Option<&V>) -> impl Iterator<Item = (Option<&str>, &str)> {
    items(v).flat_map(|c| {
        let direct = c
            .field("code")
            .and_then(Node::text)
            .map(|code| (c.field("system").and_then(Node::text), code));
        let nested = items(c.field("coding")).filter_map(|cc| {
            cc.field("code")
                .and_then(Node::text)
                .map(|code| (cc.field("system").and_then(Node::text), code))
        });
        direct.into_iter().chain(nested)
    })
}

/// True when some coding of `v` has one of `codes` (any system).
pub fn has_code<V: Node>(v: Option<&V>, codes: &[&str]) -> bool {
    codings(v).any(|(_, c)| codes.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_codings_of_both_shapes() {
        let coding = json!({"system": "s", "code": "a"});
        let concept = json!({"coding": [{"system": "s", "code": "b"}, {"code": "c"}]});
        let many = json!([coding.clone(), concept.clone()]);
        assert_eq!(codings(Some(&coding)).collect::<Vec<_>>(), vec![(Some("s"), "a")]);
        assert_eq!(
            codings(Some(&concept)).collect::<Vec<_>>(),
            vec![(Some("s"), "b"), (None, "c")]
        );
        assert_eq!(codings(Some(&many)).count(), 3);
        assert!(has_code(Some(&many), &["c"]));
    }

    #[test]
    fn reads_numbers_and_paths() {
        let v = json!({"a": {"b": " x "}, "n": "71", "m": 3});
        assert_eq!(str_at(&v, &["a", "b"]), Some("x"));
        assert_eq!(u64_of(v.get("n")), Some(71));
        assert_eq!(u64_of(v.get("m")), Some(3));
        assert_eq!(items(v.get("missing")).count(), 0);
        assert_eq!(items(v.get("a")).count(), 1);
    }
}
