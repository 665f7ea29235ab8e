//! One identity under any of its names: what a user types to filter or look up (a canonical
//! id, a registry alias, or a display name) resolved to the canonical id the baselines and
//! findings are kept under.

use super::{ApiError, AppState};

/// The canonical id `given` names: the registry's id when it is an id or alias the registry
/// lists; `given` itself when an identity of that id has been seen; else the one identity whose
/// display name it is, ignoring case (the registry's name, or for an identity the registry
/// does not list, the name its source gave). A display name shared by several identities is
/// refused, listing them; a name nobody has is returned as given (it matches nothing).
pub fn canonical(state: &AppState, given: &str) -> Result<String, ApiError> {
    let registry = state.registry.as_deref();
    if let Some(entry) = registry.and_then(|r| r.resolve(given)) {
        return Ok(entry.id.clone());
    }
    if state.baseline.with(given, |_| ()).is_some() {
        return Ok(given.to_owned());
    }
    let mut candidates: Vec<String> = registry
        .map(|r| r.named(given).into_iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default();
    let wanted = given.to_lowercase();
    state.baseline.for_each(|id, s| {
        if registry.and_then(|r| r.resolve(id)).is_none()
            && s.name.as_deref().is_some_and(|n| n.to_lowercase() == wanted)
        {
            candidates.push(id.to_owned());
        }
    });
    candidates.sort_unstable();
    candidates.dedup();
    match candidates.len() {
        0 => Ok(given.to_owned()),
        1 => Ok(candidates.swap_remove(0)),
        _ => Err(ApiError::bad_query(format!(
            "the name {given:?} is the display name of {} identities: {}; give one of their ids",
            candidates.len(),
            candidates.join(", ")
        ))),
    }
}
