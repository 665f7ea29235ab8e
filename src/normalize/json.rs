//! Small helpers for reading `serde_json::Value` trees of formats whose shape varies (FHIR R4
//! and R5, one-or-many elements from XML, optional nesting in IdP logs).

use serde_json::Value;

/// The value at a path of object keys.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// A non-empty string at a path.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// An owned non-empty string at a path.
pub fn string_at(v: &Value, path: &[&str]) -> Option<String> {
    str_at(v, path).map(str::to_owned)
}

/// The elements of a one-or-many value: an array's items, a single value, or nothing for null.
pub fn items(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    let (slice, single) = match v {
        Some(Value::Array(a)) => (a.as_slice(), None),
        Some(Value::Null) | None => (&[][..], None),
        Some(other) => (&[][..], Some(other)),
    };
    slice.iter().chain(single)
}

/// A non-negative integer given as a number or a numeric string.
pub fn u64_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The `(system, code)` pairs of a FHIR Coding or CodeableConcept (one or many).
pub fn codings(v: Option<&Value>) -> impl Iterator<Item = (Option<&str>, &str)> {
    items(v).flat_map(|c| {
        let direct = c
            .get("code")
            .and_then(Value::as_str)
            .map(|code| (c.get("system").and_then(Value::as_str), code));
        let nested = items(c.get("coding")).filter_map(|cc| {
            cc.get("code")
                .and_then(Value::as_str)
                .map(|code| (cc.get("system").and_then(Value::as_str), code))
        });
        direct.into_iter().chain(nested)
    })
}

/// True when some coding of `v` has one of `codes` (any system).
pub fn has_code(v: Option<&Value>, codes: &[&str]) -> bool {
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
