//! The saved compliance queries of `replay/*.sql`, compiled into the binary so a deployment
//! serves them without the source tree. Each starts with a header comment: what it answers,
//! then a `Parameters:` line naming its `$parameters`.

/// A saved query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Saved {
    /// Its name (the file name without `.sql`).
    pub name: &'static str,
    /// What it answers (the header comment).
    pub description: String,
    /// Its parameters, without the `$`.
    pub parameters: Vec<String>,
    /// The SQL.
    #[serde(skip)]
    pub sql: &'static str,
}

const FILES: [(&str, &str); 10] = [
    (
        "access_after_offboarding",
        include_str!("../../replay/access_after_offboarding.sql"),
    ),
    ("dormant_inventory", include_str!("../../replay/dormant_inventory.sql")),
    (
        "findings_by_detector",
        include_str!("../../replay/findings_by_detector.sql"),
    ),
    (
        "inventory_incomplete",
        include_str!("../../replay/inventory_incomplete.sql"),
    ),
    (
        "inventory_retired_active",
        include_str!("../../replay/inventory_retired_active.sql"),
    ),
    ("inventory_stale", include_str!("../../replay/inventory_stale.sql")),
    (
        "inventory_unregistered",
        include_str!("../../replay/inventory_unregistered.sql"),
    ),
    ("least_privilege", include_str!("../../replay/least_privilege.sql")),
    ("phi_access", include_str!("../../replay/phi_access.sql")),
    (
        "top_phi_identities",
        include_str!("../../replay/top_phi_identities.sql"),
    ),
];

/// Every saved query, by name.
pub fn all() -> Vec<Saved> {
    FILES.iter().map(|(name, sql)| parse(name, sql)).collect()
}

/// One saved query.
pub fn get(name: &str) -> Option<Saved> {
    FILES.iter().find(|(n, _)| *n == name).map(|(n, sql)| parse(n, sql))
}

impl Saved {
    /// Whether `given` names exactly this query's parameters: the first missing or unknown one
    /// is named.
    pub fn check_params<'a>(&self, given: impl IntoIterator<Item = &'a str> + Clone) -> Result<(), String> {
        let takes = if self.parameters.is_empty() {
            "none".to_owned()
        } else {
            self.parameters.join(", ")
        };
        if let Some(missing) = self
            .parameters
            .iter()
            .find(|p| !given.clone().into_iter().any(|g| g == p.as_str()))
        {
            return Err(format!(
                "{} needs the parameter {missing} (it takes {takes})",
                self.name
            ));
        }
        if let Some(extra) = given.into_iter().find(|g| !self.parameters.iter().any(|p| p == g)) {
            return Err(format!("{} has no parameter {extra} (it takes {takes})", self.name));
        }
        Ok(())
    }
}

fn parse(name: &'static str, sql: &'static str) -> Saved {
    let header: Vec<&str> = sql.lines().map_while(|l| l.strip_prefix("--")).map(str::trim).collect();
    let (mut description, mut parameters) = (Vec::new(), Vec::new());
    for line in header {
        if let Some(p) = line.strip_prefix("Parameters:") {
            for name in p.split('$').skip(1).map(|t| {
                t.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            }) {
                // Each once, in order of first mention.
                if !name.is_empty() && !parameters.contains(&name) {
                    parameters.push(name);
                }
            }
        } else {
            description.push(line);
        }
    }
    Saved {
        name,
        description: description.join(" "),
        parameters,
        sql,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_replay_is_compiled_in_with_its_header() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/replay");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("replay/")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".sql").map(str::to_owned))
            .collect();
        on_disk.sort();
        let compiled: Vec<&str> = FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, compiled);
        let q = get("top_phi_identities").expect("saved");
        assert_eq!(q.parameters, ["from", "to", "limit"]);
        assert!(q.description.starts_with("Top identities by PHI volume"));
        assert_eq!(
            get("access_after_offboarding").expect("saved").parameters,
            Vec::<String>::new()
        );
        assert!(all().iter().all(|q| !q.description.is_empty()));
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let q = get("top_phi_identities").expect("saved");
        assert_eq!(q.check_params(["to", "limit", "from"]), Ok(()));
        assert_eq!(
            q.check_params(["from", "limit"]),
            Err("top_phi_identities needs the parameter to (it takes from, to, limit)".into())
        );
        assert_eq!(
            q.check_params(["from", "to", "limit", "who"]),
            Err("top_phi_identities has no parameter who (it takes from, to, limit)".into())
        );
        let none = get("access_after_offboarding").expect("saved");
        assert_eq!(none.check_params([]), Ok(()));
        assert_eq!(
            none.check_params(["from"]),
            Err("access_after_offboarding has no parameter from (it takes none)".into())
        );
    }
}
