//! SMART on FHIR scopes, parsed rather than compared as strings.
//!
//! Both syntaxes are read: v1 (`patient/*.read`, `user/Observation.write`) and v2
//! (`system/Observation.rs`, `patient/*.cruds`, granular `?category=laboratory`). A v1 scope is
//! held in its v2 meaning (`read` = `rs`, `write` = `cud`, `*` = `cruds`), so the two compare.
//! Anything that is not a SMART resource scope (`openid`, `launch/patient`, a custom API scope) is
//! kept as an opaque string that only contains itself.
//!
//! Containment ([`Scope::contains`]) is the partial order "grants at least what the other grants":
//! `system/*.cruds` ⊇ `system/Patient.rs` ⊇ `system/Patient.r`. It is what makes "this token is
//! broader than anything this identity used before" computable.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The launch context of a SMART scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Context {
    /// `patient/`: data of the patient in context.
    Patient,
    /// `user/`: data the user may see.
    User,
    /// `system/`: backend services, no user.
    System,
}

impl Context {
    fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// A set of v2 permissions, `c r u d s` as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Perms(u8);

impl Perms {
    /// create
    pub const C: Perms = Perms(1);
    /// read
    pub const R: Perms = Perms(2);
    /// update
    pub const U: Perms = Perms(4);
    /// delete
    pub const D: Perms = Perms(8);
    /// search
    pub const S: Perms = Perms(16);
    /// All five.
    pub const ALL: Perms = Perms(31);
    const LETTERS: [(u8, char); 5] = [(1, 'c'), (2, 'r'), (4, 'u'), (8, 'd'), (16, 's')];

    /// True when every permission of `other` is in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bit set.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// Builds from bits; `None` when empty or out of range.
    pub fn from_bits(bits: u8) -> Option<Perms> {
        (bits != 0 && bits & !Perms::ALL.0 == 0).then_some(Perms(bits))
    }

    /// Parses v2 letters, which must appear in `cruds` order without repeats.
    fn parse_v2(s: &str) -> Option<Perms> {
        let mut bits = 0u8;
        let mut next = 0usize;
        for ch in s.chars() {
            let pos = Perms::LETTERS[next..].iter().position(|&(_, c)| c == ch)? + next;
            bits |= Perms::LETTERS[pos].0;
            next = pos + 1;
        }
        Perms::from_bits(bits)
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, letter) in Perms::LETTERS {
            if self.0 & bit != 0 {
                write!(f, "{letter}")?;
            }
        }
        Ok(())
    }
}

/// A SMART resource scope in canonical (v2) form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SmartScope {
    /// `patient`, `user` or `system`.
    pub context: Context,
    /// Resource type; `None` for `*`.
    pub resource: Option<String>,
    /// Permissions granted.
    pub perms: Perms,
    /// Granular restriction (`category=laboratory`), parameters sorted; `None` when unrestricted.
    pub query: Option<String>,
}

impl SmartScope {
    /// True when `self` grants everything `other` grants.
    pub fn contains(&self, other: &SmartScope) -> bool {
        self.context == other.context
            && (self.resource.is_none() || self.resource == other.resource)
            && self.perms.contains(other.perms)
            && (self.query.is_none() || self.query == other.query)
    }

    fn parse(s: &str) -> Option<SmartScope> {
        let (context, rest) = s.split_once('/')?;
        let context = match context {
            "patient" => Context::Patient,
            "user" => Context::User,
            "system" => Context::System,
            _ => return None,
        };
        let (body, query) = match rest.split_once('?') {
            Some((body, q)) => (body, Some(canonical_query(q)?)),
            None => (rest, None),
        };
        let (resource, perms) = body.rsplit_once('.')?;
        let resource = match resource {
            "*" => None,
            r if is_resource_type(r) => Some(r.to_owned()),
            _ => return None,
        };
        let perms = match perms {
            "read" => Perms(Perms::R.0 | Perms::S.0),
            "write" => Perms(Perms::C.0 | Perms::U.0 | Perms::D.0),
            "*" => Perms::ALL,
            v2 => Perms::parse_v2(v2)?,
        };
        Some(SmartScope {
            context,
            resource,
            perms,
            query,
        })
    }
}

impl fmt::Display for SmartScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}.{}",
            self.context.as_str(),
            self.resource.as_deref().unwrap_or("*"),
            self.perms
        )?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// A scope as granted or used: SMART (parsed) or opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A SMART resource scope.
    Smart(SmartScope),
    /// Anything else, kept verbatim.
    Other(String),
}

impl Scope {
    /// Parses one scope token. Never fails: what is not SMART is opaque.
    pub fn parse(s: &str) -> Scope {
        match SmartScope::parse(s) {
            Some(smart) => Scope::Smart(smart),
            None => Scope::Other(s.to_owned()),
        }
    }

    /// Parses a space-separated scope list (the OAuth `scope` parameter), dropping duplicates
    /// and sorting, so that two lists in another order compare equal.
    pub fn parse_list(list: &str) -> Vec<Scope> {
        Scope::collect(list.split_ascii_whitespace())
    }

    /// Parses several scope tokens, sorted and without duplicates.
    pub fn collect<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = tokens.into_iter().filter(|t| !t.is_empty()).map(Scope::parse).collect();
        scopes.sort();
        scopes.dedup();
        scopes
    }

    /// True when `self` grants everything `other` grants.
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Smart(a), Scope::Smart(b)) => a.contains(b),
            (Scope::Other(a), Scope::Other(b)) => a == b,
            _ => false,
        }
    }

    /// True when some scope of `set` contains `self`.
    pub fn covered_by(&self, set: &[Scope]) -> bool {
        set.iter().any(|s| s.contains(self))
    }

    /// The SMART form, if this is a SMART scope.
    pub fn as_smart(&self) -> Option<&SmartScope> {
        match self {
            Scope::Smart(s) => Some(s),
            Scope::Other(_) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Smart(s) => s.fmt(f),
            Scope::Other(s) => f.write_str(s),
        }
    }
}

impl FromStr for Scope {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Scope, Self::Err> {
        Ok(Scope::parse(s))
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(Scope::parse(&s))
    }
}

/// FHIR resource type names: an upper-case letter then letters and digits.
fn is_resource_type(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Sorts `a=1&b=2` parameters so equal restrictions compare equal; `None` if empty.
fn canonical_query(q: &str) -> Option<String> {
    let mut params: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    if params.is_empty() {
        return None;
    }
    params.sort_unstable();
    params.dedup();
    Some(params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(text: &str) -> Scope {
        Scope::parse(text)
    }

    #[test]
    fn parses_v1_and_v2_to_the_same_meaning() {
        assert_eq!(s("patient/*.read"), s("patient/*.rs"));
        assert_eq!(s("user/Observation.write"), s("user/Observation.cud"));
        assert_eq!(s("system/*.*"), s("system/*.cruds"));
        assert_eq!(s("patient/*.read").to_string(), "patient/*.rs");
    }

    #[test]
    fn parses_granular_scopes_canonically() {
        let a = s("patient/Observation.rs?category=laboratory&code=x");
        let b = s("patient/Observation.rs?code=x&category=laboratory");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "patient/Observation.rs?category=laboratory&code=x");
        let Scope::Smart(smart) = a else {
            panic!("granular scope is SMART")
        };
        assert_eq!(smart.resource.as_deref(), Some("Observation"));
        assert_eq!(
            smart.perms,
            Perms::from_bits(Perms::R.bits() | Perms::S.bits()).unwrap()
        );
    }

    #[test]
    fn keeps_non_smart_scopes_opaque() {
        for text in [
            "openid",
            "fhirUser",
            "launch/patient",
            "offline_access",
            "patient/*.rsc",
            "system/observation.rs",
            "system/Observation",
            "system/Observation.",
            "admin/*.read",
        ] {
            assert_eq!(s(text), Scope::Other(text.to_owned()), "{text}");
        }
    }

    #[test]
    fn containment_follows_the_smart_order() {
        assert!(s("system/*.cruds").contains(&s("system/Patient.rs")));
        assert!(s("system/Patient.rs").contains(&s("system/Patient.r")));
        assert!(!s("system/Patient.r").contains(&s("system/Patient.rs")));
        assert!(!s("system/Patient.rs").contains(&s("system/Observation.rs")));
        assert!(!s("patient/*.cruds").contains(&s("system/Patient.r")));
        assert!(s("patient/Observation.rs").contains(&s("patient/Observation.rs?category=laboratory")));
        assert!(!s("patient/Observation.rs?category=laboratory").contains(&s("patient/Observation.rs")));
        assert!(s("openid").contains(&s("openid")));
        assert!(!s("openid").contains(&s("profile")));
        assert!(s("system/Patient.r").covered_by(&[s("openid"), s("system/*.read")]));
    }

    #[test]
    fn lists_ignore_order_and_duplicates() {
        assert_eq!(
            Scope::parse_list("system/Patient.rs openid system/Patient.read"),
            Scope::parse_list("openid  system/Patient.rs")
        );
    }

    fn arb_scope() -> impl Strategy<Value = Scope> {
        let smart = (
            prop_oneof![Just("patient"), Just("user"), Just("system")],
            prop_oneof![Just("*"), Just("Patient"), Just("Observation")],
            1u8..32,
            prop_oneof![Just(None), Just(Some("category=laboratory")), Just(Some("a=1&b=2"))],
        )
            .prop_map(|(ctx, res, bits, q)| {
                let perms = Perms::from_bits(bits).expect("1..32 is a valid set");
                let mut text = format!("{ctx}/{res}.{perms}");
                if let Some(q) = q {
                    text.push('?');
                    text.push_str(q);
                }
                Scope::parse(&text)
            });
        prop_oneof![4 => smart, 1 => prop_oneof![Just("openid"), Just("launch")].prop_map(Scope::parse)]
    }

    proptest! {
        #[test]
        fn containment_is_reflexive(a in arb_scope()) {
            prop_assert!(a.contains(&a));
        }

        #[test]
        fn containment_is_transitive(a in arb_scope(), b in arb_scope(), c in arb_scope()) {
            if a.contains(&b) && b.contains(&c) {
                prop_assert!(a.contains(&c), "{a} ⊇ {b} ⊇ {c}");
            }
        }

        #[test]
        fn containment_is_antisymmetric(a in arb_scope(), b in arb_scope()) {
            if a.contains(&b) && b.contains(&a) {
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn canonical_form_round_trips(a in arb_scope()) {
            prop_assert_eq!(Scope::parse(&a.to_string()), a);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let scope = Scope::parse(&text);
            if let Scope::Other(raw) = &scope {
                prop_assert_eq!(raw, &text);
            }
        }
    }
}
