//! A validator for OCSF events built from the schema's own source files
//! (`../shared/fixtures/ocsf/`), and the tests that hold nhiwatch's Detection Findings to it.
//!
//! The schema source is not JSON Schema: a class lists attributes by name with a requirement,
//! `extends` a parent whose attributes it inherits (the child's entry deep-merged over the
//! parent's, enum values included), and `$include`s profiles whose attributes apply only when
//! the event lists the profile in `metadata.profiles` (unless the class re-declares them with
//! `"profile": null`). `dictionary.json` gives each attribute its type, array-ness, enum and
//! sibling; object files follow the same scheme and may carry `at_least_one`/`just_one`
//! constraints. Checked here: every attribute is defined for its class or object (and its
//! profile is declared), required attributes are present, types match (primitives through the
//! dictionary's type chain, objects recursively; objects the fixture subset leaves out are
//! accepted as any JSON object), integer enums hold a defined value, a sibling caption matches
//! its id's, constraints hold, and `class_uid`/`type_uid` are computed as the schema says.
//! Not checked: the regular expressions of string subtypes (e.g. `email_t`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use nhiwatch::findings::ocsf::{self, Activity};
use nhiwatch::findings::{Finding, Status};
use serde_json::{Map, Value};

use crate::support::*;

/// The fixture directory.
pub fn dir() -> PathBuf {
    external().parent().expect("fixtures dir").join("ocsf")
}

/// A class or object with everything inherited and included.
#[derive(Debug, Clone, Default)]
struct Resolved {
    attributes: Map<String, Value>,
    constraints: Map<String, Value>,
}

/// The loaded schema.
pub struct Schema {
    root: PathBuf,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    categories: Map<String, Value>,
    /// Class files by class name.
    classes: HashMap<String, PathBuf>,
    cache: std::sync::Mutex<HashMap<String, Resolved>>,
}

fn load_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Deep merge: objects merge key by key, anything else is replaced.
fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Schema {
    /// Loads the schema source under `root`.
    pub fn load(root: &Path) -> Schema {
        let dict = load_json(&root.join("dictionary.json"));
        let mut classes = HashMap::new();
        let mut stack = vec![root.join("events")];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).expect("events dir").flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "json") {
                    let name = load_json(&p)["name"].as_str().unwrap_or_default().to_owned();
                    classes.insert(name, p);
                }
            }
        }
        Schema {
            root: root.to_owned(),
            dictionary: dict["attributes"].as_object().cloned().unwrap_or_default(),
            types: dict["types"]["attributes"].as_object().cloned().unwrap_or_default(),
            categories: load_json(&root.join("categories.json"))["attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            classes,
            cache: Default::default(),
        }
    }

    fn resolve_file(&self, path: &Path, parent: impl Fn(&str) -> Option<Resolved>) -> Resolved {
        let doc = load_json(path);
        let mut resolved = doc["extends"].as_str().and_then(&parent).unwrap_or_default();
        let own = doc["attributes"].as_object().cloned().unwrap_or_default();
        if let Some(includes) = own.get("$include") {
            let list: Vec<&str> = match includes {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for inc in list {
                let profile = load_json(&self.root.join(inc));
                let name = profile["name"].as_str().unwrap_or_default().to_owned();
                for (k, v) in profile["attributes"].as_object().cloned().unwrap_or_default() {
                    let mut v = v;
                    v["profile"] = Value::String(name.clone());
                    match resolved.attributes.get_mut(&k) {
                        Some(existing) => deep_merge(existing, &v),
                        None => {
                            resolved.attributes.insert(k, v);
                        }
                    }
                }
            }
        }
        for (k, v) in own {
            if k == "$include" {
                continue;
            }
            match resolved.attributes.get_mut(&k) {
                Some(existing) => deep_merge(existing, &v),
                None => {
                    resolved.attributes.insert(k, v);
                }
            }
        }
        if let Some(c) = doc["constraints"].as_object() {
            resolved.constraints = c.clone();
        }
        resolved
    }

    fn class(&self, name: &str) -> Resolved {
        let key = format!("class:{name}");
        if let Some(r) = self.cache.lock().expect("cache").get(&key) {
            return r.clone();
        }
        let path = self
            .classes
            .get(name)
            .unwrap_or_else(|| panic!("no class {name}"))
            .clone();
        let r = self.resolve_file(&path, |p| Some(self.class(p)));
        self.cache.lock().expect("cache").insert(key, r.clone());
        r
    }

    fn object(&self, name: &str) -> Option<Resolved> {
        let key = format!("object:{name}");
        if let Some(r) = self.cache.lock().expect("cache").get(&key) {
            return Some(r.clone());
        }
        let path = self.root.join("objects").join(format!("{name}.json"));
        if !path.exists() {
            return None;
        }
        let r = self.resolve_file(&path, |p| self.object(p));
        self.cache.lock().expect("cache").insert(key, r.clone());
        Some(r)
    }

    /// The dictionary's definition of `name` with the class's or object's entry merged over it.
    fn definition(&self, name: &str, local: &Value) -> Value {
        let mut def = self.dictionary.get(name).cloned().unwrap_or(Value::Null);
        if def.is_null() {
            return local.clone();
        }
        deep_merge(&mut def, local);
        def
    }

    /// The primitive a type reduces to (`timestamp_t` → `long_t`), or the object name.
    fn primitive<'a>(&'a self, ty: &'a str) -> &'a str {
        let mut t = ty;
        for _ in 0..5 {
            match self.types.get(t).and_then(|d| d["type"].as_str()) {
                Some(parent) => t = parent,
                None => break,
            }
        }
        t
    }

    /// Violations of `event` against its class (found from `class_uid`).
    pub fn validate(&self, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let class_uid = event["class_uid"].as_u64().unwrap_or(0);
        let Some((class_name, category)) = self.classes.keys().find_map(|name| {
            let doc = load_json(&self.classes[name]);
            // The category is inherited through `extends` when a class does not name one.
            let mut category = doc["category"].as_str().map(str::to_owned);
            let mut parent = doc["extends"].as_str().map(str::to_owned);
            while category.is_none() {
                let p = load_json(self.classes.get(parent.as_deref()?)?);
                category = p["category"].as_str().map(str::to_owned);
                parent = p["extends"].as_str().map(str::to_owned);
            }
            let category = category?;
            let category = category.as_str();
            let cat_uid = self.categories.get(category)?["uid"].as_u64()?;
            (cat_uid * 1000 + doc["uid"].as_u64()? == class_uid).then(|| (name.clone(), cat_uid))
        }) else {
            return vec![format!("class_uid {class_uid} is no class of the schema")];
        };
        let class = self.class(&class_name);
        if event["category_uid"].as_u64() != Some(category) {
            errors.push(format!("category_uid must be {category}"));
        }
        let activity = event["activity_id"].as_u64().unwrap_or(u64::MAX);
        if event["type_uid"].as_u64() != Some(class_uid * 100 + activity) {
            errors.push("type_uid must be class_uid * 100 + activity_id".into());
        }
        let profiles: BTreeSet<String> = event["metadata"]["profiles"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        // `class_uid` and `category_uid` enums describe the base event only.
        self.check_object(
            event,
            &class,
            "",
            &profiles,
            &mut errors,
            &["class_uid", "category_uid"],
        );
        errors
    }

    fn check_object(
        &self,
        value: &Value,
        shape: &Resolved,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
        skip_enum: &[&str],
    ) {
        let Some(obj) = value.as_object() else {
            errors.push(format!("{}: must be an object", path.trim_end_matches('.')));
            return;
        };
        let applies = |def: &Value| match def.get("profile") {
            Some(Value::String(p)) => profiles.contains(p),
            _ => true,
        };
        for (name, def) in &shape.attributes {
            if def["requirement"] == "required" && applies(def) && !obj.contains_key(name) {
                errors.push(format!("{path}{name}: required"));
            }
        }
        for (name, v) in obj {
            let at = format!("{path}{name}");
            let Some(local) = shape.attributes.get(name) else {
                errors.push(format!("{at}: not an attribute of this class or object"));
                continue;
            };
            if !applies(local) {
                errors.push(format!(
                    "{at}: belongs to profile {} not listed in metadata.profiles",
                    local["profile"]
                ));
            }
            let def = self.definition(name, local);
            let ty = def["type"].as_str().unwrap_or("json_t");
            let items: Vec<&Value> = if def["is_array"] == true {
                match v.as_array() {
                    Some(a) => a.iter().collect(),
                    None => {
                        errors.push(format!("{at}: must be an array"));
                        continue;
                    }
                }
            } else {
                vec![v]
            };
            for (i, item) in items.into_iter().enumerate() {
                let at = if def["is_array"] == true {
                    format!("{at}[{i}]")
                } else {
                    at.clone()
                };
                self.check_value(item, ty, &at, profiles, errors);
                if let Some(values) = def["enum"].as_object()
                    && !skip_enum.contains(&name.as_str())
                    && let Some(n) = item.as_i64()
                    && !values.contains_key(&n.to_string())
                {
                    errors.push(format!(
                        "{at}: {n} is not one of {:?}",
                        values.keys().collect::<Vec<_>>()
                    ));
                }
                // A sibling label carries the caption of its id (unless the id is 99, Other).
                if let (Some(sibling), Some(n), Some(values)) =
                    (def["sibling"].as_str(), item.as_i64(), def["enum"].as_object())
                    && n != 99
                    && !skip_enum.contains(&name.as_str())
                    && let Some(label) = obj.get(sibling)
                    && let Some(caption) = values.get(&n.to_string()).and_then(|e| e["caption"].as_str())
                    && label.as_str() != Some(caption)
                {
                    errors.push(format!(
                        "{path}{sibling}: {label} is not the caption of {name} {n} ({caption:?})"
                    ));
                }
            }
        }
        for (kind, names) in &shape.constraints {
            let names: Vec<&str> = names
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let present = names.iter().filter(|n| obj.contains_key(**n)).count();
            let ok = match kind.as_str() {
                "at_least_one" => present >= 1,
                "just_one" => present == 1,
                _ => true,
            };
            if !ok {
                errors.push(format!("{}: {kind} of {names:?}", path.trim_end_matches('.')));
            }
        }
    }

    fn check_value(&self, v: &Value, ty: &str, at: &str, profiles: &BTreeSet<String>, errors: &mut Vec<String>) {
        let ok = match self.primitive(ty) {
            "string_t" => v.is_string(),
            "integer_t" | "long_t" => v.is_i64() || v.is_u64(),
            "float_t" => v.is_number(),
            "boolean_t" => v.is_boolean(),
            "json_t" => true,
            // The generic `object` carries any keys: the schema's own words, "a generic object to
            // log objects that are not otherwise defined by the schema" (e.g. `unmapped`).
            "object" => v.is_object(),
            object => {
                match self.object(object) {
                    Some(shape) => self.check_object(v, &shape, &format!("{at}."), profiles, errors, &[]),
                    // Outside the fixture subset: any JSON object.
                    None => {
                        if !v.is_object() {
                            errors.push(format!("{at}: must be an object ({object})"));
                        }
                    }
                }
                true
            }
        };
        if !ok {
            errors.push(format!("{at}: {v} is not a {ty}"));
        }
    }
}

/// The schema, loaded once.
pub fn schema() -> &'static Schema {
    static SCHEMA: std::sync::OnceLock<Schema> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(|| Schema::load(&dir()))
}

/// Asserts that `event` is a valid OCSF Detection Finding.
pub fn assert_detection_finding(event: &Value) {
    assert_eq!(event["class_uid"], 2004, "{event}");
    let errors = schema().validate(event);
    assert!(errors.is_empty(), "{event:#}\n{errors:#?}");
}

fn findings() -> Vec<Finding> {
    crate::findings::scenario_findings().0
}

#[test]
fn every_finding_in_every_state_is_a_valid_detection_finding() {
    let findings = findings();
    let detectors: BTreeSet<_> = findings.iter().map(|f| f.detector).collect();
    assert_eq!(detectors.len(), 12, "every detector's findings are checked");
    let mut checked = BTreeMap::new();
    for f in &findings {
        for (status, activity) in [
            (Status::New, Activity::Create),
            (Status::Acknowledged, Activity::Update),
            (Status::Suppressed, Activity::Update),
            (Status::Resolved, Activity::Close),
        ] {
            let f = Finding { status, ..f.clone() };
            let event = ocsf::encode_delivery(&f, activity, Some(7));
            assert_detection_finding(&event);
            assert_eq!(event["metadata"]["uid"], format!("{}:7", f.id));
            assert_eq!(event["metadata"]["sequence"], 7);
            assert_eq!(event["time"], f.detected_at.timestamp_millis());
            assert_eq!(event["start_time"], f.event_time.timestamp_millis());
            assert_eq!(event["end_time"], f.last_event_time.timestamp_millis());
            *checked.entry(f.detector).or_insert(0) += 1;
        }
    }
    assert_eq!(checked.values().sum::<usize>(), findings.len() * 4);
}

#[test]
fn the_encoding_declares_the_schema_version_it_is_validated_against() {
    let version = load_json(&dir().join("version.json"));
    assert_eq!(version["version"], ocsf::OCSF_VERSION);
}

#[test]
fn the_validator_catches_what_is_wrong() {
    let f = &findings()[0];
    let good = ocsf::encode_delivery(f, Activity::Create, Some(1));
    assert!(schema().validate(&good).is_empty());
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut e = good.clone();
        edit(&mut e);
        schema().validate(&e)
    };
    let has = |errors: Vec<String>, needle: &str| {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle:?} not in {errors:#?}"
        );
    };
    has(
        broken(&|e| drop(e.as_object_mut().map(|o| o.remove("finding_info")))),
        "finding_info: required",
    );
    has(
        broken(&|e| drop(e["finding_info"].as_object_mut().map(|o| o.remove("uid")))),
        "finding_info.uid: required",
    );
    has(broken(&|e| e["severity_id"] = 9.into()), "severity_id: 9 is not one of");
    has(
        broken(&|e| e["status"] = "Acknowledged".into()),
        "status: \"Acknowledged\" is not the caption of status_id 1",
    );
    has(broken(&|e| e["type_uid"] = 200_402.into()), "type_uid must be");
    has(broken(&|e| e["patient"] = "x".into()), "patient: not an attribute");
    has(
        broken(&|e| e["unmapped"] = "x".into()),
        "unmapped: \"x\" is not a object",
    );
    has(
        broken(&|e| e["time"] = "2026-01-01".into()),
        "time: \"2026-01-01\" is not a timestamp_t",
    );
    has(
        broken(&|e| e["evidences"] = serde_json::json!([{}])),
        "evidences[0]: at_least_one",
    );
    has(
        broken(&|e| e["priority_id"] = 1.into()),
        "belongs to profile \"incident\"",
    );
    has(
        broken(&|e| e["metadata"]["product"] = "nhiwatch".into()),
        "metadata.product: must be an object",
    );
}
