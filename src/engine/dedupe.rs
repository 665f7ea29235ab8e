//! Repeats of a source record, dropped before they count twice.
//!
//! Exports overlap and at-least-once pipelines deliver a record again (a producer retrying a
//! send, a log shipper that restarts before saving its position, a SIEM export re-run over the
//! same hours). Each source names its records, and the normalizers carry that name as
//! [`Event::event_id`]: Entra `id`, Okta `uuid`, Auth0 `log_id`, GCP `insertId`, FHIR
//! `AuditEvent.id`, CloudTrail `eventID`, or, where a record has none, a hash of its raw bytes
//! (`<format>:<hex>`, so a byte-for-byte repeat has the same name). A record is a repeat when one
//! of the same format, with the same id, the same event time, the same identity and the same kind
//! was judged within the window. That is Cloud Logging's own rule (its `LogEntry.insertId`
//! reference: entries with the same timestamp and `insertId` are duplicates, with "no guarantees
//! of de-duplication in the export of logs") applied to every format, with identity and kind
//! added so that a source reusing an id for another record, or a record normalized into several
//! events, never loses one of them.
//!
//! The memory is bounded twice, in event time: an id is forgotten once the newest event time
//! judged is more than `window` past its own, and past `max` ids the oldest is forgotten early
//! (counted). Each id is held as 128 bits of SHA-256 over those fields: about 70 bytes with its
//! place in the time index (a million ids measured 72 MB), 22 in a checkpoint. The engine asks
//! only about the events it judges (people's events count nowhere and are not held), after the
//! reorder buffer, so a live run and a replay of the archive, which sees the same events in the
//! same order, drop the same repeats.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::baseline::secs;
use crate::event::Event;

/// A record's key: 128 bits of SHA-256 over format, id, time, identity and kind.
type Key = [u64; 2];

/// Hashes a [`Key`] by folding its words: they are SHA-256 output already, and hashing them
/// again with SipHash was a tenth of the engine's time (issue 22's profile of `detect`).
#[derive(Default)]
struct Digested(u64);

impl std::hash::Hasher for Digested {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }
}

type Keys = HashSet<Key, std::hash::BuildHasherDefault<Digested>>;

/// Remembers the records judged within a window of event time.
#[derive(Debug, Clone)]
pub struct Dedupe {
    /// Seconds of event time an id is remembered; 0: never.
    window: i64,
    /// Most ids remembered; 0: none.
    max: usize,
    seen: Keys,
    /// The same keys by the event second of their record, for forgetting oldest first.
    by_second: BTreeMap<i64, Vec<Key>>,
    /// Newest event time judged (Unix seconds).
    newest: Option<i64>,
    /// Ids forgotten before their window passed, to stay within `max`.
    forgotten: u64,
}

impl Default for Dedupe {
    /// The checked-in defaults (`engine.dedupe_window_seconds`, `engine.dedupe_max_ids`).
    fn default() -> Dedupe {
        Dedupe::new(86_400, 1_000_000)
    }
}

impl Dedupe {
    /// Remembers ids for `window_seconds` of event time, at most `max_ids` of them; either 0
    /// turns deduplication off.
    pub fn new(window_seconds: u32, max_ids: usize) -> Dedupe {
        Dedupe {
            window: i64::from(window_seconds),
            max: max_ids,
            seen: Keys::default(),
            by_second: BTreeMap::new(),
            newest: None,
            forgotten: 0,
        }
    }

    /// The same settings, nothing remembered.
    pub fn emptied(&self) -> Dedupe {
        Dedupe::new(u32::try_from(self.window).unwrap_or(u32::MAX), self.max)
    }

    fn enabled(&self) -> bool {
        self.window > 0 && self.max > 0
    }

    /// True when `event` repeats a record judged within the window (drop it); otherwise it is
    /// remembered and false.
    pub fn repeat(&mut self, event: &Event) -> bool {
        if !self.enabled() {
            return false;
        }
        let t = secs(event.time);
        let newest = self.newest.map_or(t, |n| n.max(t));
        self.newest = Some(newest);
        let horizon = newest.saturating_sub(self.window);
        self.forget_before(horizon);
        if t < horizon {
            // Older than anything remembered: its first copy, if any, is forgotten too.
            return false;
        }
        let key = key(event);
        if !self.seen.insert(key) {
            return true;
        }
        self.by_second.entry(t).or_default().push(key);
        while self.seen.len() > self.max && self.forget_oldest() {
            self.forgotten += 1;
        }
        false
    }

    fn forget_before(&mut self, horizon: i64) {
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() >= horizon {
                break;
            }
            for key in entry.remove() {
                self.seen.remove(&key);
            }
        }
    }

    /// Forgets one id of the oldest second; false when none is held.
    fn forget_oldest(&mut self) -> bool {
        let Some(mut entry) = self.by_second.first_entry() else {
            return false;
        };
        let key = entry.get_mut().pop();
        if entry.get().is_empty() {
            entry.remove();
        }
        key.is_some_and(|k| self.seen.remove(&k))
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no id is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Ids forgotten before their window passed, to stay within the maximum.
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// What a checkpoint keeps.
    pub fn state(&self) -> DedupeState {
        DedupeState {
            newest: self.newest,
            forgotten: self.forgotten,
            seconds: self
                .by_second
                .iter()
                .map(|(t, keys)| (*t, Base64Keys(keys.clone())))
                .collect(),
        }
    }

    /// This deduplicator (its settings) holding what `state` kept, within its own window and
    /// maximum (which may have changed since).
    pub fn restore(&self, state: DedupeState) -> Dedupe {
        let mut d = self.emptied();
        if !d.enabled() {
            return d;
        }
        d.newest = state.newest;
        d.forgotten = state.forgotten;
        for (t, Base64Keys(keys)) in state.seconds {
            let keys: Vec<Key> = keys.into_iter().filter(|k| d.seen.insert(*k)).collect();
            if !keys.is_empty() {
                d.by_second.entry(t).or_default().extend(keys);
            }
        }
        if let Some(newest) = d.newest {
            d.forget_before(newest.saturating_sub(d.window));
        }
        while d.seen.len() > d.max && d.forget_oldest() {
            d.forgotten += 1;
        }
        d
    }
}

/// The key of `event`'s record. Fields are separated by a zero byte (none of them holds one
/// that matters: ids and identities are text), so no two field lists hash alike by shifting.
fn key(event: &Event) -> Key {
    let mut h = Sha256::new();
    let nanos = event.time.timestamp_nanos_opt().unwrap_or(event.time.timestamp());
    // The time as decimal text (as the key has always had it), without allocating.
    let mut text = [0u8; 24];
    let len = {
        use std::io::Write as _;
        let mut at = &mut text[..];
        let _ = write!(at, "{nanos}");
        24 - at.len()
    };
    for part in [
        event.format.as_str().as_bytes(),
        event.event_id.as_bytes(),
        &text[..len],
        event.identity.as_bytes(),
        event.kind.as_str().as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&digest[i..i + 8]);
        u64::from_le_bytes(b)
    };
    [word(0), word(8)]
}

/// What [`Dedupe::state`] keeps in a checkpoint: the ids by event second, each second's ids as
/// one base64 string (compact in JSON, in the order they were remembered).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeState {
    newest: Option<i64>,
    forgotten: u64,
    seconds: Vec<(i64, Base64Keys)>,
}

/// Keys as the standard base64 of their 16 bytes each, end to end (about 21 characters a key:
/// a partition's state must fit one changelog record).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Base64Keys(Vec<Key>);

impl Serialize for Base64Keys {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.0.len() * 16);
        for [a, b] in &self.0 {
            bytes.extend_from_slice(&a.to_le_bytes());
            bytes.extend_from_slice(&b.to_le_bytes());
        }
        serializer.serialize_str(&STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Base64Keys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Base64Keys, D::Error> {
        use serde::de::Error;
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("record ids: {e}")))?;
        if bytes.len() % 16 != 0 {
            return Err(D::Error::custom(format!(
                "record ids are 16 bytes each, not {} bytes in all",
                bytes.len()
            )));
        }
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        Ok(Base64Keys(
            bytes.chunks_exact(16).map(|k| [word(&k[..8]), word(&k[8..])]).collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, SourceFormat};
    use chrono::DateTime;

    fn ev(id: &str, secs: i64) -> Event {
        let t = DateTime::from_timestamp(1_767_571_200 + secs, 0).expect("valid");
        Event::new(id.into(), t, SourceFormat::Okta, EventKind::TokenIssued, "app".into())
    }

    /// The ids `d` lets through, in order.
    fn kept(d: &mut Dedupe, input: &[(&str, i64)]) -> Vec<String> {
        input
            .iter()
            .filter(|(id, s)| !d.repeat(&ev(id, *s)))
            .map(|(id, s)| format!("{id}@{s}"))
            .collect()
    }

    #[test]
    fn a_repeat_within_the_window_is_dropped_and_one_outside_it_is_kept() {
        // Window 100 s: `a` at 0 is forgotten once an event at 101 is judged.
        let mut d = Dedupe::new(100, 1000);
        let got = kept(
            &mut d,
            &[("a", 0), ("a", 0), ("b", 50), ("a", 0), ("c", 101), ("a", 0), ("b", 50)],
        );
        // `a` again after c@101 is older than 101 - 100 = 1: outside the window, kept (not
        // remembered); `b`@50 is still within it, dropped.
        assert_eq!(got, ["a@0", "b@50", "c@101", "a@0"]);
    }

    #[test]
    fn the_same_id_for_another_time_identity_or_kind_is_another_record() {
        let mut d = Dedupe::new(100, 1000);
        assert!(!d.repeat(&ev("a", 0)));
        assert!(!d.repeat(&ev("a", 1)), "another time");
        let mut other = ev("a", 0);
        other.identity = "another-app".into();
        assert!(!d.repeat(&other), "another identity");
        let mut other = ev("a", 0);
        other.kind = EventKind::AuthFailure;
        assert!(!d.repeat(&other), "another kind");
        let mut other = ev("a", 0);
        other.format = SourceFormat::Auth0;
        assert!(!d.repeat(&other), "another format");
        assert!(d.repeat(&ev("a", 0)));
        assert_eq!(d.len(), 5);
    }

    #[test]
    fn past_the_maximum_the_oldest_is_forgotten_and_counted() {
        let mut d = Dedupe::new(86_400, 2);
        let got = kept(&mut d, &[("a", 0), ("b", 1), ("c", 2), ("b", 1), ("a", 0)]);
        // Holding at most two: c pushes a out (counted), so b is still a repeat and a is not;
        // a, remembered again, is then the oldest and goes at once (counted).
        assert_eq!(got, ["a@0", "b@1", "c@2", "a@0"]);
        assert_eq!(d.len(), 2);
        assert_eq!(d.forgotten(), 2);
    }

    #[test]
    fn zero_turns_it_off() {
        for mut d in [Dedupe::new(0, 10), Dedupe::new(10, 0)] {
            assert_eq!(kept(&mut d, &[("a", 0), ("a", 0)]), ["a@0", "a@0"]);
            assert!(d.is_empty());
        }
    }

    #[test]
    fn what_a_checkpoint_keeps_restores_the_same_memory() {
        let mut d = Dedupe::new(100, 1000);
        kept(&mut d, &[("a", 0), ("b", 0), ("c", 60)]);
        let json = serde_json::to_string(&d.state()).expect("encode");
        let state: DedupeState = serde_json::from_str(&json).expect("decode");
        let mut back = Dedupe::new(100, 1000).restore(state.clone());
        assert_eq!(back.state(), d.state());
        assert_eq!(kept(&mut back, &[("a", 0), ("c", 60), ("b", 0), ("d", 101)]), ["d@101"]);
        // Restored under a smaller maximum: the oldest are forgotten first.
        let small = Dedupe::new(100, 1).restore(state.clone());
        assert_eq!((small.len(), small.forgotten()), (1, 2));
        // Under a shorter window: what is past it is forgotten.
        let mut short = Dedupe::new(30, 1000).restore(state);
        assert_eq!(kept(&mut short, &[("a", 0), ("c", 60)]), ["a@0"]);
        let broken = r#"{"newest":0,"forgotten":0,"seconds":[[0,"AAAA"]]}"#;
        let e = serde_json::from_str::<DedupeState>(broken).expect_err("three bytes");
        assert!(e.to_string().contains("16 bytes each, not 3"), "{e}");
        let broken = r#"{"newest":0,"forgotten":0,"seconds":[[0,"not base64!"]]}"#;
        assert!(serde_json::from_str::<DedupeState>(broken).is_err());
    }
}
