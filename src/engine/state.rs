//! What a checkpoint holds, and the store that writes and restores it.
//!
//! A checkpoint is everything a restarted `run` needs to go on as if it had not stopped: the
//! per-identity baselines, the open findings, the events still waiting in the reorder buffer,
//! the engine's clocks, the record ids remembered to drop repeats, and the input offsets all of
//! that reflects. It is written at a commit
//! point, after the archive and the dead letter covering those offsets are durable, and only
//! then are the offsets committed to Kafka. On start the newest good checkpoint is restored and
//! consumption resumes at its offsets, whatever the group's committed offsets say.
//!
//! # Payload (inside the [`crate::engine::checkpoint`] container, format version 1)
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | length `m` of the metadata, u64 little-endian |
//! | 8..8+m | metadata: JSON `{"offsets": [{"topic", "partition", "next"}], "detection": {…}}` |
//! | 8+m.. | the baselines: [`Baseline::snapshot`] (a count, then postcard `(id, state)` pairs; then a count and postcard `(id, profile)` pairs, the hour-of-week PHI profiles) |
//!
//! The metadata is JSON because events and findings leave empty fields out, which a
//! non-self-describing format cannot read back; it is small (open findings, the events of one
//! lateness window, and the remembered record ids at about 21 base64 characters each). The baselines, a
//! million identities, are postcard.
//!
//! A field added to the metadata that reads as empty when absent (`serde(default)`) keeps the
//! container version: a checkpoint written before it restores as before, with the field empty.
//! `detection.dedupe` (the record ids, see [`crate::engine::Dedupe`]) came that way, so the first
//! restart after an upgrade keeps every baseline and only forgets which records it had seen. A
//! build older than a field passes over a checkpoint holding it (an unknown field), as it would
//! a newer version. The same holds for a section appended after the baselines that reads as
//! empty when absent: the hour-of-week PHI profiles ([`crate::baseline::Profile`], issue 20) came
//! that way, so a checkpoint written before them restores every baseline, the profiles starting
//! empty (`phi_volume` judges such an identity as before profiles until its profile covers a
//! week), and a build older than them passes over a checkpoint holding them (bytes after the
//! last identity). Any other change to either layout, or to the structs they encode, is a new
//! container version. Issue 24 added two such metadata fields: each tracked Kafka partition's
//! newest event time (`detection.reorder.sources`) and the findings raised and not yet released
//! (`detection.held`); both are empty when absent, and a build from before them passes over a
//! checkpoint holding them (back to an older checkpoint, or none).

use std::path::{Path, PathBuf};

use chrono::Duration;
use serde::{Deserialize, Serialize};

use crate::baseline::{self, Baseline, SnapshotError};
use crate::engine::checkpoint::{Checkpoints, Skipped, WriteError};
use crate::engine::{Detection, DetectionState, Engine};
use crate::ingest::Offsets;

/// `[state]`
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Checkpoint directory; empty for no checkpoints.
    pub dir: std::path::PathBuf,
    /// Seconds between commit points.
    pub interval_seconds: u64,
    /// Checkpoints kept.
    pub keep: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    topic: String,
    partition: i32,
    next: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    offsets: Vec<Position>,
    detection: DetectionState,
}

/// The payload of a checkpoint of `detection` at `offsets`.
pub fn encode(detection: &Detection, offsets: &Offsets) -> Result<Vec<u8>, SnapshotError> {
    let meta = Meta {
        offsets: offsets
            .iter()
            .map(|(topic, partition, next)| Position {
                topic: topic.to_owned(),
                partition,
                next,
            })
            .collect(),
        detection: detection.state(),
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| SnapshotError(format!("encoding the metadata: {e}")))?;
    let baselines = detection.engine().baseline().snapshot()?;
    let mut out = Vec::with_capacity(8 + meta.len() + baselines.len());
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&baselines);
    Ok(out)
}

/// A payload read back: the baselines restored, the rest as written.
pub struct Decoded {
    baseline: Baseline,
    detection: DetectionState,
    /// Where to resume reading.
    pub offsets: Offsets,
}

impl Decoded {
    /// The detection to go on with: `engine` is the configured one (detectors, registry,
    /// learning settings) and gets the restored baselines.
    pub fn into_detection(self, engine: Engine, lateness: Duration, live: bool) -> Detection {
        Detection::restore(engine.with_baseline(self.baseline), lateness, live, self.detection)
    }
}

/// What a payload holds, the baselines restored with `settings`.
pub fn decode(payload: &[u8], settings: baseline::Settings) -> Result<Decoded, SnapshotError> {
    let (len, rest) = payload
        .split_first_chunk::<8>()
        .map(|(n, rest)| (u64::from_le_bytes(*n), rest))
        .ok_or_else(|| SnapshotError("shorter than its metadata length".into()))?;
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| SnapshotError(format!("metadata of {len} bytes in a payload of {}", payload.len())))?;
    let (meta, baselines) = rest.split_at(len);
    let meta: Meta = serde_json::from_slice(meta).map_err(|e| SnapshotError(format!("metadata: {e}")))?;
    let baseline = Baseline::restore(settings, baselines)?;
    let mut offsets = Offsets::default();
    for p in meta.offsets {
        offsets.advance(&p.topic, p.partition, p.next);
    }
    Ok(Decoded {
        baseline,
        detection: meta.detection,
        offsets,
    })
}

/// The checkpoint directory of a running service.
pub struct StateStore {
    checkpoints: Checkpoints,
    next: u64,
}

/// What [`StateStore::open`] found.
pub struct Restored {
    /// The detection to go on with: restored, or new when there was no usable checkpoint.
    pub detection: Detection,
    /// Where to resume reading (empty: from the group's committed offsets).
    pub offsets: Offsets,
    /// The checkpoint restored.
    pub from: Option<PathBuf>,
    /// Newer checkpoints passed over, newest first, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory or a file in it.
    #[error(transparent)]
    Io(#[from] WriteError),
    /// The state could not be encoded.
    #[error("checkpoint: {0}")]
    Encode(#[from] SnapshotError),
}

impl StateStore {
    /// Opens `dir` (keeping the newest `keep` checkpoints) and restores its newest good
    /// checkpoint into `engine`. A checkpoint that cannot be read or decoded is passed over
    /// with its reason for the one before; without any, detection starts empty.
    pub fn open(
        dir: &Path,
        keep: usize,
        engine: Engine,
        lateness: Duration,
        live: bool,
    ) -> Result<(StateStore, Restored), StateError> {
        let checkpoints = Checkpoints::open(dir, keep)?;
        let settings = engine.baseline().settings();
        let (found, skipped) =
            checkpoints.latest_decoded(|payload| decode(payload, settings).map_err(|e| e.to_string()));
        let next = checkpoints.next_sequence();
        let store = StateStore { checkpoints, next };
        let restored = match found {
            Some((_, path, decoded)) => Restored {
                offsets: decoded.offsets.clone(),
                detection: decoded.into_detection(engine, lateness, live),
                from: Some(path),
                skipped,
            },
            None => Restored {
                detection: Detection::new(engine, lateness, live),
                offsets: Offsets::default(),
                from: None,
                skipped,
            },
        };
        Ok((store, restored))
    }

    /// Writes a checkpoint of `detection` at `offsets`; returns its file.
    pub fn save(&mut self, detection: &Detection, offsets: &Offsets) -> Result<PathBuf, StateError> {
        let payload = encode(detection, offsets)?;
        let path = self.checkpoints.write(self.next, &payload)?;
        self.next += 1;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use crate::findings::Finding;

    fn engine(registry: &crate::registry::Registry) -> Engine {
        Engine::new(
            crate::detect::Detectors::default(),
            Some(registry.clone()),
            baseline::Settings::default(),
        )
    }

    fn run(detection: &mut Detection, events: &[Event]) {
        for e in events {
            detection.push(e.clone(), &mut |_| {});
        }
    }

    fn finish(mut detection: Detection) -> Vec<Finding> {
        detection.finish(&mut |_| {});
        detection.findings().to_vec()
    }

    #[test]
    fn a_run_stopped_at_a_checkpoint_and_resumed_finds_exactly_what_an_uninterrupted_run_finds() {
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let lateness = Duration::hours(6);
        let mut whole = Detection::new(engine(&registry), lateness, false);
        run(&mut whole, &events);
        let expected = finish(whole);
        assert!(expected.len() >= 5, "the scenario raises findings: {}", expected.len());

        for cut in [events.len() / 2, events.len() * 3 / 4, events.len() * 9 / 10] {
            let mut first = Detection::new(engine(&registry), lateness, false);
            run(&mut first, &events[..cut]);
            assert!(first.waiting() > 0, "events wait for order at the cut");
            assert!(first.engine().open_findings() > 0, "findings are open at the cut");
            let mut offsets = Offsets::default();
            offsets.advance("fhir-audit", 3, cut as i64);
            offsets.advance("idp-audit", 0, 17);
            let payload = encode(&first, &offsets).expect("encode");
            drop(first);

            let decoded = decode(&payload, baseline::Settings::default()).expect("decode");
            assert_eq!(decoded.offsets, offsets);
            let mut resumed = decoded.into_detection(engine(&registry), lateness, false);
            run(&mut resumed, &events[cut..]);
            let got = finish(resumed);
            assert_eq!(got.len(), expected.len(), "cut at {cut}");
            assert!(got == expected, "cut at {cut}: the findings differ");
        }
    }

    /// Issue 18, item 9: the records judged before a checkpoint are still known after it, so a
    /// record delivered again after the restart (Kafka's at-least-once, an export re-read) is a
    /// repeat: the resumed run finds exactly what an uninterrupted run over the records once finds.
    #[test]
    fn a_record_judged_before_a_checkpoint_is_a_repeat_after_it() {
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let lateness = Duration::minutes(5);
        let mut whole = Detection::new(engine(&registry), lateness, false);
        run(&mut whole, &events);
        let expected = finish(whole);

        let cut = events.len() * 3 / 4;
        let mut first = Detection::new(engine(&registry), lateness, false);
        run(&mut first, &events[..cut]);
        let payload = encode(&first, &Offsets::default()).expect("encode");
        drop(first);
        let mut resumed = decode(&payload, baseline::Settings::default())
            .expect("decode")
            .into_detection(engine(&registry), lateness, false);
        // The last hour of event time before the cut, delivered again: judged records (late
        // now, past the lateness) and records still waiting for order alike.
        let newest = events[..cut].iter().map(|e| e.time).max().expect("events");
        let again: Vec<Event> = events[..cut]
            .iter()
            .filter(|e| e.time >= newest - Duration::hours(1))
            .cloned()
            .collect();
        let judged = again
            .iter()
            .filter(|e| e.identity_type.is_non_human() && e.kind != crate::event::EventKind::SignIn)
            .count() as u64;
        assert!(judged > 0, "some records of that hour are judged");
        run(&mut resumed, &again);
        run(&mut resumed, &events[cut..]);
        resumed.finish(&mut |_| {});
        assert_eq!(resumed.engine().stats().duplicates_total(), judged);
        assert!(resumed.findings() == expected.as_slice(), "the findings differ");
    }

    /// A checkpoint written before record ids were kept (no `detection.dedupe`) still restores,
    /// with the baselines and nothing remembered.
    #[test]
    fn a_checkpoint_without_record_ids_restores_with_none() {
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let mut detection = Detection::new(engine(&registry), Duration::minutes(5), false);
        run(&mut detection, &events[..events.len() / 2]);
        assert!(!detection.engine().dedupe().is_empty());
        let payload = encode(&detection, &Offsets::default()).expect("encode");
        let (len, rest) = payload.split_at(8);
        let meta_len = usize::try_from(u64::from_le_bytes(len.try_into().expect("8 bytes"))).expect("fits");
        let mut meta: serde_json::Value = serde_json::from_slice(&rest[..meta_len]).expect("JSON");
        assert!(
            meta["detection"]
                .as_object_mut()
                .and_then(|d| d.remove("dedupe"))
                .is_some()
        );
        let meta = serde_json::to_vec(&meta).expect("JSON");
        let mut old = (meta.len() as u64).to_le_bytes().to_vec();
        old.extend_from_slice(&meta);
        old.extend_from_slice(&rest[meta_len..]);
        let restored = decode(&old, baseline::Settings::default())
            .expect("an older payload decodes")
            .into_detection(engine(&registry), Duration::minutes(5), false);
        assert!(restored.engine().dedupe().is_empty());
        assert_eq!(restored.engine().baseline().len(), detection.engine().baseline().len());
    }

    #[test]
    fn the_store_restores_the_newest_good_checkpoint_and_says_what_it_passed_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (events, registry) = crate::generate::test_events(30, 10, 9);
        let lateness = Duration::minutes(5);
        let (mut store, restored) = StateStore::open(dir.path(), 3, engine(&registry), lateness, true).expect("open");
        assert!(restored.from.is_none() && restored.skipped.is_empty() && restored.offsets.is_empty());
        let mut detection = restored.detection;
        run(&mut detection, &events[..events.len() / 2]);
        let mut offsets = Offsets::default();
        offsets.advance("fhir-audit", 0, 41);
        let good = store.save(&detection, &offsets).expect("save");
        let identities = detection.engine().baseline().len();
        run(&mut detection, &events[events.len() / 2..]);
        offsets.advance("fhir-audit", 0, 99);
        let newest = store.save(&detection, &offsets).expect("save");

        // A flipped byte in the newest: the one before is restored.
        let mut bytes = std::fs::read(&newest).expect("read");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&newest, bytes).expect("write");
        let (mut store, restored) = StateStore::open(dir.path(), 3, engine(&registry), lateness, true).expect("open");
        assert_eq!(restored.from.as_deref(), Some(good.as_path()));
        assert_eq!(restored.offsets.get("fhir-audit", 0), Some(41));
        assert_eq!(restored.detection.engine().baseline().len(), identities);
        assert_eq!(restored.skipped.len(), 1);
        assert_eq!(restored.skipped[0].path, newest);
        assert!(
            restored.skipped[0].reason.contains("checksum"),
            "{}",
            restored.skipped[0].reason
        );

        // The next checkpoint is numbered after the corrupt one, not over it.
        let next = store.save(&restored.detection, &restored.offsets).expect("save");
        assert!(next > newest, "{} after {}", next.display(), newest.display());

        // A container that verifies but whose payload is not this layout: passed over too.
        Checkpoints::open(dir.path(), 3)
            .expect("open")
            .write(99, b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
            .expect("write");
        let (_, restored) = StateStore::open(dir.path(), 3, engine(&registry), lateness, true).expect("open");
        assert_eq!(restored.from.as_deref(), Some(next.as_path()));
        assert!(
            restored.skipped[0].reason.contains("metadata"),
            "{:?}",
            restored.skipped
        );
    }
}
