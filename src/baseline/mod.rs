//! Per-identity state: what each non-human identity normally does, learned from its own events.
//!
//! One [`IdentityState`] per identity, in a `DashMap` so the HTTP inventory can read while the
//! engine writes. It holds first/last activity and the longest silence so far (cadence), an
//! hour-of-week bitmap, scopes seen with their first-seen time, resource type × interaction
//! class seen, network prefixes and user agents seen, PHI volume per hour as a robust running
//! estimate, failure counts per 10 minutes, and lifecycle facts from the IdP. Strings become
//! `u64` keys or shared `Arc<Scope>`s so the common case stays under 1 KiB.
//!
//! The engine calls [`IdentityState::observe`] before the detectors (it advances the counting
//! windows so they include the event) and [`IdentityState::learn`] after them (so a detector sees
//! what was known *before* the event).

pub mod net;
pub mod profile;

use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use dashmap::DashMap;
use dashmap::mapref::one::{Ref, RefMut};

use crate::event::{Event, EventKind, Interaction, Outcome};
use crate::scope::Scope;

pub use profile::Profile;

/// Learning and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Days of event time before baseline detectors judge an identity.
    pub learning_days: u32,
    /// Activity events before baseline detectors judge an identity.
    pub learning_events: u32,
    /// Identities unseen this long are forgotten.
    pub retention_days: u32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            learning_days: 7,
            learning_events: 50,
            retention_days: 180,
        }
    }
}

/// A baseline snapshot that cannot be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("baseline snapshot: {0}")]
pub struct SnapshotError(pub String);

impl SnapshotError {
    fn encode(e: postcard::Error) -> SnapshotError {
        SnapshotError(format!("encoding: {e}"))
    }
}

/// All identities' state.
#[derive(Debug, Default)]
pub struct Baseline {
    states: DashMap<Box<str>, IdentityState>,
    scopes: DashMap<Scope, Arc<Scope>>,
    settings: Settings,
}

impl Baseline {
    /// An empty baseline.
    pub fn new(settings: Settings) -> Baseline {
        Baseline {
            states: DashMap::new(),
            scopes: DashMap::new(),
            settings,
        }
    }

    /// Learning and retention settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Identities held.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// True when no identity is held.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// One identity's state, for reading.
    pub fn get(&self, identity: &str) -> Option<Ref<'_, Box<str>, IdentityState>> {
        self.states.get(identity)
    }

    /// One identity's state for update, created at `t` when new.
    pub fn get_mut_or_new(&self, identity: &str, t: i64) -> RefMut<'_, Box<str>, IdentityState> {
        if let Some(state) = self.states.get_mut(identity) {
            return state;
        }
        self.states
            .entry(identity.into())
            .or_insert_with(|| IdentityState::new(t))
    }

    /// The shared copy of a scope, so identities holding the same scope share one allocation.
    pub fn intern(&self, scope: &Scope) -> Arc<Scope> {
        if let Some(s) = self.scopes.get(scope) {
            return s.clone();
        }
        self.scopes
            .entry(scope.clone())
            .or_insert_with(|| Arc::new(scope.clone()))
            .clone()
    }

    /// Forgets identities with no event since `retention_days` before `now`; returns how many.
    pub fn evict(&self, now: i64) -> usize {
        let horizon = now - i64::from(self.settings.retention_days) * DAY;
        let before = self.states.len();
        self.states.retain(|_, s| s.last_event >= horizon);
        self.scopes.retain(|_, s| Arc::strong_count(s) > 1);
        before - self.states.len()
    }

    /// Every identity's state as a checkpoint payload: an 8-byte little-endian count, then each
    /// identity as a postcard-encoded `(id, state)` pair (compact, field order as declared: a
    /// change to these structs is a new checkpoint format version); then the hour-of-week
    /// profiles ([`Profile`]) as a section of their own: an 8-byte count and postcard `(id,
    /// profile)` pairs. The section came after the identities' layout was set, so a checkpoint
    /// written without it restores (the profiles start empty) and keeps the format version.
    /// Written one identity at a time, so a snapshot of 1M identities needs no copy of the state.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = vec![0u8; 8];
        let mut count = 0u64;
        for entry in &self.states {
            out = postcard::to_extend(&(entry.key(), entry.value()), out).map_err(SnapshotError::encode)?;
            count += 1;
        }
        out[..8].copy_from_slice(&count.to_le_bytes());
        let section = out.len();
        out.extend_from_slice(&[0u8; 8]);
        let mut profiles = 0u64;
        for entry in &self.states {
            if let Some(profile) = entry.value().volume.profile() {
                out = postcard::to_extend(&(entry.key(), profile), out).map_err(SnapshotError::encode)?;
                profiles += 1;
            }
        }
        out[section..section + 8].copy_from_slice(&profiles.to_le_bytes());
        Ok(out)
    }

    /// The baseline a [`Baseline::snapshot`] holds, with `settings`; scopes are shared again.
    pub fn restore(settings: Settings, bytes: &[u8]) -> Result<Baseline, SnapshotError> {
        fn count<'a>(bytes: &'a [u8], what: &str) -> Result<(u64, &'a [u8]), SnapshotError> {
            bytes
                .split_first_chunk::<8>()
                .map(|(n, rest)| (u64::from_le_bytes(*n), rest))
                .ok_or_else(|| SnapshotError(format!("shorter than its count of {what}")))
        }
        let (identities, mut rest) = count(bytes, "identities")?;
        let baseline = Baseline::new(settings);
        for n in 0..identities {
            let ((id, mut state), tail): ((Box<str>, IdentityState), &[u8]) = postcard::take_from_bytes(rest)
                .map_err(|e| SnapshotError(format!("identity {n} of {identities}: {e}")))?;
            for seen in &mut state.scopes {
                seen.scope = baseline.intern(&seen.scope);
            }
            baseline.states.insert(id, state);
            rest = tail;
        }
        // A checkpoint written before the profiles ends here.
        if !rest.is_empty() {
            let (profiles, mut tail) = count(rest, "profiles")?;
            for n in 0..profiles {
                let ((id, profile), after): ((Box<str>, Profile), &[u8]) = postcard::take_from_bytes(tail)
                    .map_err(|e| SnapshotError(format!("profile {n} of {profiles}: {e}")))?;
                let mut state = baseline
                    .states
                    .get_mut(&id)
                    .ok_or_else(|| SnapshotError(format!("profile {n} of {profiles}: no identity {id:?}")))?;
                state.volume.profile = Some(Box::new(profile));
                tail = after;
            }
            rest = tail;
        }
        if !rest.is_empty() {
            return Err(SnapshotError(format!("{} bytes after the last profile", rest.len())));
        }
        Ok(baseline)
    }

    /// Visits every identity (for the inventory and for tests).
    pub fn for_each(&self, mut f: impl FnMut(&str, &IdentityState)) {
        for entry in &self.states {
            f(entry.key(), entry.value());
        }
    }
}

/// The baselines the inventory reads: one for a single instance, one per owned partition for a
/// member of a consumer group (added when a partition is assigned, removed when it is revoked).
/// An identity lives in exactly one of them, because events are partitioned by identity.
#[derive(Debug, Clone)]
pub struct Baselines {
    settings: Settings,
    parts: Arc<std::sync::RwLock<std::collections::BTreeMap<i32, Arc<Baseline>>>>,
}

impl Baselines {
    /// Partition baselines learning with `settings`, none yet.
    pub fn new(settings: Settings) -> Baselines {
        Baselines {
            settings,
            parts: Arc::default(),
        }
    }

    /// The one baseline of a single instance.
    pub fn single(baseline: Arc<Baseline>) -> Baselines {
        let b = Baselines::new(baseline.settings());
        b.insert(0, baseline);
        b
    }

    fn parts(&self) -> std::sync::RwLockReadGuard<'_, std::collections::BTreeMap<i32, Arc<Baseline>>> {
        self.parts.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds (or replaces) the baseline of `partition`.
    pub fn insert(&self, partition: i32, baseline: Arc<Baseline>) {
        let mut parts = self.parts.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        parts.insert(partition, baseline);
    }

    /// Drops the baseline of `partition`.
    pub fn remove(&self, partition: i32) {
        let mut parts = self.parts.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        parts.remove(&partition);
    }

    /// The learning settings.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Visits every identity of every baseline.
    pub fn for_each(&self, mut f: impl FnMut(&str, &IdentityState)) {
        for baseline in self.parts().values() {
            baseline.for_each(&mut f);
        }
    }

    /// `f` of the state of `identity`, if it is held.
    pub fn with<R>(&self, identity: &str, f: impl FnOnce(&IdentityState) -> R) -> Option<R> {
        let parts = self.parts();
        let state = parts.values().find_map(|b| b.get(identity))?;
        Some(f(&state))
    }
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// Failure counting bucket.
pub const FAILURE_BUCKET_SECS: i64 = 600;
const MAX_NETWORKS: usize = 32;
const MAX_AGENTS: usize = 8;
const MAX_ACCESS: usize = 64;
const MAX_SWITCHES: usize = 16;
const MAX_REVOKED: usize = 8;
/// Credentials remembered per identity: a secret or key pair rotates through two or three.
const MAX_CREDENTIALS: usize = 8;
/// Token grants remembered per identity, newest kept: enough to date a token used several
/// grant intervals after its issue (8 hours of hourly grants), which is what a lifetime policy
/// is about. Every identity whose IdP logs token ids has them, so they are kept compact.
const MAX_TOKENS: usize = 8;
/// Weight of a new window in the volume estimates (≈ the last 30 active windows count).
const ALPHA: f64 = 1.0 / 30.0;

/// A scope the identity has used, with when it was first seen.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeenScope {
    /// The scope (shared).
    pub scope: Arc<Scope>,
    /// First seen (Unix seconds).
    pub first: i64,
}

/// A network prefix the identity has used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// [`net::network_key`] of the prefix.
    pub key: u64,
    /// First use (Unix seconds).
    pub first: i64,
    /// Latest use (Unix seconds).
    pub last: i64,
}

/// Distinct patients and records per clock hour, with a robust running estimate over the
/// identity's active hours and its hour-of-week [`Profile`].
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// The hour being counted (Unix hours).
    pub hour: i64,
    /// Patients touched so far in that hour.
    pub patients: u64,
    /// Records so far in that hour.
    pub records: u64,
    /// EWMA of `ln(1 + patients)` over closed active hours.
    pub mean: f64,
    /// Its exponentially weighted variance.
    pub var: f64,
    /// Largest hourly patient count learned (anomalous hours are not learned).
    pub peak: u64,
    /// Active hours learned.
    pub hours: u32,
    /// Whether the identity was still learning when the counted hour began.
    learning: bool,
    /// The hour-of-week profile, from the first hour with PHI access. Checkpointed in a section
    /// of its own after the identities ([`Baseline::snapshot`]), so that a checkpoint written
    /// before it still restores.
    #[serde(skip)]
    profile: Option<Box<Profile>>,
}

impl Volume {
    fn add(&mut self, hour: i64, patients: u64, records: u64, learning: bool) {
        if hour > self.hour {
            let folded = self.close();
            if let Some(p) = self.profile.as_mut() {
                p.skip(hour - self.hour - i64::from(folded));
            }
            self.hour = hour;
            self.patients = 0;
            self.records = 0;
            self.learning = learning;
        }
        if hour == self.hour {
            self.patients += patients;
            self.records += records;
        }
    }

    /// Folds the counted hour into the profile and the estimate (clamped to mean + 3 sd once a
    /// baseline exists, so that one anomalous hour does not become the new normal); false when
    /// the hour held nothing. While the identity is learning, every hour may set the peak (a
    /// weekly export seen then is part of its normal); after, only an hour within 3× the peak.
    fn close(&mut self) -> bool {
        if self.patients == 0 && self.records == 0 {
            return false;
        }
        let overall = self.overall();
        self.profile
            .get_or_insert_with(|| Box::new(Profile::new(self.hour)))
            .close(self.hour, self.patients, self.learning, overall);
        let x = (self.patients as f64).ln_1p();
        if self.hours == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let settled = self.hours >= 5;
            let x = if settled { x.min(self.mean + 3.0 * self.sd()) } else { x };
            let d = x - self.mean;
            self.mean += ALPHA * d;
            self.var = (1.0 - ALPHA) * (self.var + ALPHA * d * d);
        }
        if self.learning || self.hours < 5 || self.patients <= self.peak.saturating_mul(3) {
            self.peak = self.peak.max(self.patients);
        }
        self.hours += 1;
        true
    }

    /// Standard deviation of the log estimate, floored so a perfectly regular identity still
    /// has room (a factor of e^0.25 ≈ 1.3).
    pub fn sd(&self) -> f64 {
        self.var.sqrt().max(profile::MIN_SD)
    }

    /// Typical patients per active hour.
    pub fn typical(&self) -> f64 {
        self.mean.exp_m1()
    }

    /// The overall level, `ln(1 + patients)` of the typical active hour, once one was learned.
    pub fn overall(&self) -> Option<f64> {
        (self.hours > 0).then_some(self.mean)
    }

    /// The hour-of-week profile, once an hour with PHI access was learned.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_deref()
    }
}

/// Failures per 10-minute bucket, with the previous bucket for a sliding view.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failures {
    /// Bucket being counted (Unix seconds / 600).
    pub bucket: i64,
    /// Failures in it.
    pub count: u32,
    /// Failures in the bucket before, when it was the previous one.
    pub previous: u32,
    /// EWMA of failures per active bucket.
    pub mean: f64,
    /// Buckets learned.
    pub buckets: u32,
}

impl Failures {
    fn add(&mut self, bucket: i64, failed: bool) {
        if bucket > self.bucket {
            // A bucket this high is a burst in progress, not a baseline to learn.
            let x = f64::from(self.count).min(self.mean * 3.0 + 3.0);
            self.mean += ALPHA * (x - self.mean);
            self.buckets += 1;
            self.previous = if bucket == self.bucket + 1 { self.count } else { 0 };
            self.count = 0;
            self.bucket = bucket;
        }
        if failed && bucket >= self.bucket - 1 {
            if bucket == self.bucket {
                self.count += 1;
            } else {
                self.previous += 1;
            }
        }
    }

    /// Failures in the current and the previous bucket (the last 10–20 minutes).
    pub fn recent(&self) -> u32 {
        self.count + self.previous
    }
}

/// Interaction classes, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// read, vread, search, history, capabilities
    Read = 1,
    /// create, update, patch, transaction, batch
    Write = 2,
    /// delete
    Delete = 4,
    /// `$export` (bulk data)
    Export = 8,
    /// any other operation
    Operation = 16,
}

impl Class {
    /// The class of a data-access event.
    pub fn of(event: &Event) -> Option<Class> {
        Some(match event.interaction? {
            Interaction::Delete => Class::Delete,
            i if i.is_write() => Class::Write,
            Interaction::Operation => match event.operation.as_deref() {
                Some(op) if op.trim_start_matches('$').eq_ignore_ascii_case("export") => Class::Export,
                _ => Class::Operation,
            },
            _ => Class::Read,
        })
    }

    /// For sentences: "write", "delete", "$export", "operation", "read".
    pub fn describe(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Delete => "delete",
            Class::Export => "$export",
            Class::Operation => "operation",
        }
    }
}

/// A credential change, classified from the source's action name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialChange {
    /// A secret, key or certificate was added (or generated, rotated in).
    Added,
    /// One was removed or revoked.
    Removed,
}

impl CredentialChange {
    /// Classifies a `credential_change` event by its action.
    pub fn of(event: &Event) -> Option<CredentialChange> {
        if event.kind != EventKind::CredentialChange || event.outcome == Outcome::Failure {
            return None;
        }
        let action = event.action.as_deref()?.to_ascii_lowercase();
        let has = |words: &[&str]| words.iter().any(|w| action.contains(w));
        if has(&["remove", "delete", "revoke", "deactivate", "expire"]) {
            Some(CredentialChange::Removed)
        } else if has(&[
            "add",
            "create",
            "generate",
            "rotate",
            "regenerate",
            "reset",
            "update",
            "new",
        ]) {
            Some(CredentialChange::Added)
        } else {
            None
        }
    }
}

/// True when an app-lifecycle event retires the app (deactivate, disable, delete, suspend);
/// `Some(false)` when it brings it back; `None` otherwise.
pub fn retires_app(event: &Event) -> Option<bool> {
    if event.kind != EventKind::AppLifecycle || event.outcome == Outcome::Failure {
        return None;
    }
    let action = event.action.as_deref()?.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| action.contains(w));
    if has(&["deactivate", "disable", "delete", "suspend", "remove"]) {
        Some(true)
    } else if has(&["activate", "enable", "unsuspend", "restore"]) {
        Some(false)
    } else {
        None
    }
}

/// True when the event is the identity itself acting successfully: data access or a token.
pub fn is_activity(event: &Event) -> bool {
    matches!(event.kind, EventKind::DataAccess | EventKind::TokenIssued) && event.outcome != Outcome::Failure
}

/// True when the event is the identity failing to get a token or being denied a call.
pub fn is_failure(event: &Event) -> bool {
    event.kind == EventKind::AuthFailure || (event.kind == EventKind::DataAccess && event.outcome == Outcome::Failure)
}

/// Unix seconds of an event time.
pub fn secs(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

/// Hour of the week, Monday 00:00 UTC = 0.
pub fn hour_of_week(t: DateTime<Utc>) -> usize {
    t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize
}

/// What one identity normally does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IdentityState {
    /// First activity (Unix seconds), or the first event when it has not acted yet.
    pub first_seen: i64,
    /// Latest activity, `None` before any.
    pub last_seen: Option<i64>,
    /// Latest event of any kind (for retention).
    pub last_event: i64,
    /// Activity events seen.
    pub events: u32,
    /// Longest silence between two activity events so far, in seconds: the identity's cadence.
    pub max_gap: i64,
    /// Distinct days (UTC) with activity.
    pub active_days: u32,
    hours: [u64; 3],
    /// Scopes seen, minimal under containment, with first-seen time.
    pub scopes: Vec<SeenScope>,
    access: Vec<u64>,
    /// Interaction classes seen, as [`Class`] bits.
    pub classes: u8,
    /// Network prefixes used, least recently used dropped beyond 32.
    pub networks: Vec<Network>,
    agents: Vec<u64>,
    /// PHI volume.
    pub volume: Volume,
    /// Failures.
    pub failures: Failures,
    last_network: u64,
    /// What few identities have (network switches, lifecycle facts), boxed so the common case
    /// pays one pointer for it.
    rare: Option<Box<Rare>>,
    /// Display name from the source.
    pub name: Option<Box<str>>,
}

impl IdentityState {
    fn new(t: i64) -> IdentityState {
        IdentityState {
            first_seen: t,
            last_seen: None,
            last_event: t,
            events: 0,
            max_gap: 0,
            active_days: 0,
            hours: [0; 3],
            scopes: Vec::new(),
            access: Vec::new(),
            classes: 0,
            networks: Vec::new(),
            agents: Vec::new(),
            volume: Volume::default(),
            failures: Failures::default(),
            last_network: 0,
            rare: None,
            name: None,
        }
    }

    /// True once the identity has been watched long enough to be judged against its baseline.
    pub fn established(&self, settings: &Settings, now: i64) -> bool {
        self.last_seen.is_some()
            && self.events >= settings.learning_events
            && now - self.first_seen >= i64::from(settings.learning_days) * DAY
    }

    /// True when the identity has been active within `tolerance` hours of `t`'s hour of week.
    pub fn active_near(&self, t: DateTime<Utc>, tolerance: u32) -> bool {
        let how = hour_of_week(t) as i64;
        let tolerance = i64::from(tolerance);
        (-tolerance..=tolerance).any(|d| {
            let bin = (how + d).rem_euclid(168) as usize;
            self.hours[bin / 64] & (1 << (bin % 64)) != 0
        })
    }

    /// True when the identity has been active at `t`'s hour of the day (± `tolerance`) on any
    /// day of the week.
    pub fn active_at_hour_of_day(&self, t: DateTime<Utc>, tolerance: u32) -> bool {
        let hour = t.hour() as i64;
        let tolerance = i64::from(tolerance);
        (0..7).any(|day| {
            (-tolerance..=tolerance).any(|d| {
                let bin = (day * 24 + (hour + d).rem_euclid(24)) as usize;
                self.hours[bin / 64] & (1 << (bin % 64)) != 0
            })
        })
    }

    /// True when the identity has been active on `t`'s day of the week.
    pub fn active_on_weekday(&self, t: DateTime<Utc>) -> bool {
        let day = t.weekday().num_days_from_monday() as usize;
        (day * 24..day * 24 + 24).any(|bin| self.hours[bin / 64] & (1 << (bin % 64)) != 0)
    }

    /// Hours of the week with activity.
    pub fn active_hours(&self) -> u32 {
        self.hours.iter().map(|h| h.count_ones()).sum()
    }

    /// The active hours of the week as `(day, hour)`, Monday = 0, UTC.
    pub fn active_hour_list(&self) -> Vec<(u8, u8)> {
        (0..168usize)
            .filter(|&bin| self.hours[bin / 64] & (1 << (bin % 64)) != 0)
            .map(|bin| ((bin / 24) as u8, (bin % 24) as u8))
            .collect()
    }

    /// True when the identity has used `resource_type` with `class` before.
    pub fn has_access(&self, resource_type: &str, class: Class) -> bool {
        self.access.contains(&access_key(resource_type, class))
    }

    /// Resource type × class pairs seen.
    pub fn access_count(&self) -> usize {
        self.access.len()
    }

    /// The network with this key, if the identity used it.
    pub fn network(&self, key: u64) -> Option<&Network> {
        self.networks.iter().find(|n| n.key == key)
    }

    /// True when the user agent was seen before.
    pub fn knows_agent(&self, agent: &str) -> bool {
        self.agents.contains(&net::fnv1a(agent.as_bytes()))
    }

    /// True when the credential was revoked.
    pub fn is_revoked(&self, credential_id: &str) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|r| r.revoked.contains(&net::fnv1a(credential_id.as_bytes())))
    }

    /// Network switches at or after `since`.
    pub fn switches_since(&self, since: i64) -> usize {
        self.rare
            .as_ref()
            .map_or(0, |r| r.switches.iter().filter(|&&s| s >= since).count())
    }

    /// When the IdP deactivated or deleted the app, unless reactivated since.
    pub fn deactivated_at(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.deactivated_at)
    }

    /// When a credential was last added.
    pub fn credential_added_at(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.credential_added_at)
    }

    /// Since when the credential is known: its creation when an addition was seen, else its
    /// first use.
    pub fn credential(&self, credential_id: &str) -> Option<Credential> {
        let key = net::fnv1a(credential_id.as_bytes());
        self.rare.as_ref()?.credentials.iter().find(|c| c.key == key).copied()
    }

    /// The grant of the token, when it was seen.
    pub fn token(&self, token_id: &str) -> Option<Token> {
        let key = Grant::key(token_id);
        let g = self.rare.as_ref()?.tokens.iter().find(|t| t.key == key)?;
        let issued = i64::from(g.issued);
        Some(Token {
            issued,
            expires: (g.lifetime > 0).then(|| issued + i64::from(g.lifetime)),
        })
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Advances the counting windows with `event`, before the detectors look. `established` is
    /// whether the learning period was over before this event.
    pub fn observe(&mut self, event: &Event, established: bool) {
        let t = secs(event.time);
        if matches!(
            event.kind,
            EventKind::DataAccess | EventKind::TokenIssued | EventKind::AuthFailure
        ) {
            self.failures.add(t.div_euclid(FAILURE_BUCKET_SECS), is_failure(event));
        }
        if !is_activity(event) {
            return;
        }
        if event.kind == EventKind::DataAccess {
            let records = event.records.unwrap_or(1);
            self.volume
                .add(t.div_euclid(HOUR), event.distinct_patients(), records, !established);
        }
        if let Some(ip) = &event.src_ip {
            let key = net::network_key(ip);
            if self.last_network != 0 && key != self.last_network {
                bounded_push(&mut self.rare().switches, MAX_SWITCHES, t);
            }
            self.last_network = key;
        }
    }

    /// Learns from `event`, after the detectors looked.
    pub fn learn(&mut self, event: &Event, baseline: &Baseline) {
        let t = secs(event.time);
        self.last_event = self.last_event.max(t);
        if self.name.is_none()
            && let Some(name) = &event.identity_name
        {
            self.name = Some(name.as_str().into());
        }
        match CredentialChange::of(event) {
            Some(CredentialChange::Added) => {
                let rare = self.rare();
                rare.credential_added_at = Some(t);
                if let Some(id) = &event.credential_id {
                    let key = net::fnv1a(id.as_bytes());
                    rare.credentials.retain(|c| c.key != key);
                    bounded_push(
                        &mut rare.credentials,
                        MAX_CREDENTIALS,
                        Credential {
                            key,
                            since: t,
                            created: true,
                        },
                    );
                }
            }
            Some(CredentialChange::Removed) => {
                if let Some(id) = &event.credential_id {
                    let key = net::fnv1a(id.as_bytes());
                    let rare = self.rare();
                    rare.credentials.retain(|c| c.key != key);
                    bounded_push(&mut rare.revoked, MAX_REVOKED, key);
                }
            }
            None => {}
        }
        if event.kind == EventKind::TokenIssued
            && event.outcome != Outcome::Failure
            && let Some(id) = &event.token_id
        {
            let issued = event.token_issued_at.map_or(t, secs);
            let grant = Grant {
                key: Grant::key(id),
                issued: u32::try_from(issued).unwrap_or(0),
                lifetime: event
                    .token_expires_at
                    .and_then(|x| u32::try_from(secs(x) - issued).ok())
                    .unwrap_or(0),
            };
            bounded_push(&mut self.rare().tokens, MAX_TOKENS, grant);
        }
        if is_activity(event)
            && let Some(id) = &event.credential_id
        {
            let key = net::fnv1a(id.as_bytes());
            if !self
                .rare
                .as_ref()
                .is_some_and(|r| r.credentials.iter().any(|c| c.key == key))
            {
                let credential = Credential {
                    key,
                    since: t,
                    created: false,
                };
                bounded_push(&mut self.rare().credentials, MAX_CREDENTIALS, credential);
            }
        }
        match retires_app(event) {
            Some(true) => self.rare().deactivated_at = Some(t),
            Some(false) => {
                if let Some(r) = self.rare.as_mut() {
                    r.deactivated_at = None;
                }
            }
            None => {}
        }
        if !is_activity(event) {
            return;
        }
        match self.last_seen {
            None => {
                self.first_seen = t;
                self.active_days = 1;
            }
            Some(last) => {
                self.max_gap = self.max_gap.max(t - last);
                if t.div_euclid(DAY) > last.div_euclid(DAY) {
                    self.active_days += 1;
                }
            }
        }
        self.last_seen = Some(self.last_seen.map_or(t, |last| last.max(t)));
        self.events = self.events.saturating_add(1);
        let bin = hour_of_week(event.time);
        self.hours[bin / 64] |= 1 << (bin % 64);
        for scope in &event.scopes {
            self.learn_scope(scope, t, baseline);
        }
        if let Some(class) = Class::of(event) {
            self.classes |= class as u8;
            if let Some(rt) = &event.resource_type {
                let key = access_key(rt, class);
                if !self.access.contains(&key) && self.access.len() < MAX_ACCESS {
                    push_exact(&mut self.access, key);
                }
            }
        }
        if let Some(ip) = &event.src_ip {
            let key = net::network_key(ip);
            match self.networks.iter_mut().find(|n| n.key == key) {
                Some(n) => n.last = n.last.max(t),
                None => {
                    if self.networks.len() == MAX_NETWORKS
                        && let Some(oldest) = (0..self.networks.len()).min_by_key(|&i| self.networks[i].last)
                    {
                        self.networks.swap_remove(oldest);
                    }
                    self.networks.push(Network { key, first: t, last: t });
                }
            }
        }
        if let Some(agent) = &event.user_agent {
            let key = net::fnv1a(agent.as_bytes());
            if !self.agents.contains(&key) && self.agents.len() < MAX_AGENTS {
                push_exact(&mut self.agents, key);
            }
        }
    }

    fn learn_scope(&mut self, scope: &Scope, t: i64, baseline: &Baseline) {
        if self.scopes.iter().any(|s| s.scope.contains(scope)) {
            return;
        }
        self.scopes.retain(|s| !scope.contains(&s.scope));
        push_exact(
            &mut self.scopes,
            SeenScope {
                scope: baseline.intern(scope),
                first: t,
            },
        );
    }

    /// True when `scope` is within what the identity has used.
    pub fn covers(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s.scope.contains(scope))
    }
}

/// Lifecycle facts, credentials, token grants and network switches: most identities never have
/// any.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Rare {
    switches: Vec<i64>,
    deactivated_at: Option<i64>,
    credential_added_at: Option<i64>,
    revoked: Vec<u64>,
    credentials: Vec<Credential>,
    tokens: Vec<Grant>,
}

/// A token grant as kept: 12 bytes. A 32-bit hash of the id is enough among eight tokens of one
/// identity; Unix seconds fit 32 bits until 2106.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Grant {
    key: u32,
    issued: u32,
    /// Seconds from issue to expiry; 0 when the grant did not say.
    lifetime: u32,
}

impl Grant {
    fn key(token_id: &str) -> u32 {
        let h = net::fnv1a(token_id.as_bytes());
        (h ^ (h >> 32)) as u32
    }
}

/// A credential (secret, key, certificate) of an identity, by hash of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    key: u64,
    /// Its creation (when `created`) or its first use seen (Unix seconds).
    pub since: i64,
    /// Whether `since` is its creation; else the credential is at least that old.
    pub created: bool,
}

/// An access token granted to an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// When it was issued (Unix seconds).
    pub issued: i64,
    /// When it expires, if the grant said.
    pub expires: Option<i64>,
}

/// Pushes onto a list kept at most `max` long, dropping the oldest entry (the first).
fn bounded_push<T>(v: &mut Vec<T>, max: usize, item: T) {
    if v.len() >= max {
        v.remove(0);
    }
    push_exact(v, item);
}

/// Pushes without the doubling growth: these sets are small, change rarely, and there is one
/// of each per identity, so spare capacity would be most of their memory.
fn push_exact<T>(v: &mut Vec<T>, item: T) {
    v.reserve_exact(1);
    v.push(item);
}

fn access_key(resource_type: &str, class: Class) -> u64 {
    (net::fnv1a(resource_type.as_bytes()) << 8) | class as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SourceFormat;

    /// Issue 18, item 6: a permission grant changes what the identity may do; it is not the
    /// identity using a scope. `scope_drift` judges scopes against those used (this state), so a
    /// grant must leave them, and every activity count, as they were.
    #[test]
    fn a_permission_grant_is_not_a_use_of_its_scopes() {
        let baseline = Baseline::new(Settings::default());
        let t = DateTime::from_timestamp(1_767_571_200, 0).expect("valid");
        let mut grant = Event::new(
            "g1".into(),
            t,
            SourceFormat::EntraAudit,
            EventKind::PermissionGrant,
            "app".into(),
        );
        grant.outcome = Outcome::Success;
        grant.scopes = Scope::parse_list("Mail.ReadWrite system/*.cruds");
        let mut state = baseline.get_mut_or_new("app", secs(t));
        state.observe(&grant, false);
        state.learn(&grant, &baseline);
        assert!(state.scopes.is_empty());
        assert!(!state.covers(&Scope::parse("system/Patient.r")));
        assert_eq!((state.events, state.last_seen, state.active_hours()), (0, None, 0));
    }

    #[test]
    fn a_snapshot_restores_every_identity_exactly_with_scopes_shared() {
        let (mut events, registry) = crate::generate::test_events(30, 10, 5);
        events.sort_by_key(|e| e.time);
        let mut engine =
            crate::engine::Engine::new(crate::detect::Detectors::default(), Some(registry), Settings::default());
        let mut updates = Vec::new();
        for e in &events {
            engine.process(e, e.time, &mut updates);
        }
        let original = engine.baseline();
        let bytes = original.snapshot().expect("snapshot");
        let restored = Baseline::restore(original.settings(), &bytes).expect("restore");

        assert!(original.len() >= 20, "the generated integrations: {}", original.len());
        assert_eq!(restored.len(), original.len());
        let mut with_rare = 0;
        original.for_each(|id, state| {
            with_rare += usize::from(state.rare.is_some());
            assert_eq!(restored.get(id).as_deref(), Some(state), "{id}");
        });
        assert!(with_rare > 0, "token grants and lifecycle facts are covered");
        // Identities holding the same scope hold one allocation again.
        let mut first: std::collections::HashMap<Scope, Arc<Scope>> = std::collections::HashMap::new();
        let mut shared = 0;
        restored.for_each(|_, state| {
            for seen in &state.scopes {
                match first.get(&*seen.scope) {
                    Some(a) => {
                        assert!(Arc::ptr_eq(a, &seen.scope));
                        shared += 1;
                    }
                    None => {
                        first.insert((*seen.scope).clone(), Arc::clone(&seen.scope));
                    }
                }
            }
        });
        assert!(shared > 0);

        // Every identity with PHI access has its hour-of-week profile back.
        let mut profiles = 0;
        original.for_each(|_, state| profiles += usize::from(state.volume.profile().is_some()));
        assert!(profiles > 0 && profiles < original.len(), "{profiles} profiles");

        // A checkpoint written before profiles (the identities alone) restores, without them.
        let identities = identity_section(&bytes);
        let older = Baseline::restore(original.settings(), &bytes[..identities]).expect("restore");
        original.for_each(|id, state| {
            let mut expected = state.clone();
            expected.volume.profile = None;
            assert_eq!(older.get(id).as_deref(), Some(&expected), "{id}");
        });

        // A cut or padded snapshot is refused, naming where.
        let cut = Baseline::restore(original.settings(), &bytes[..bytes.len() - 3]).expect_err("cut");
        assert!(
            cut.0.starts_with(&format!("profile {} of {profiles}", profiles - 1)),
            "{cut}"
        );
        let cut = Baseline::restore(original.settings(), &bytes[..identities - 3]).expect_err("cut");
        assert!(
            cut.0
                .starts_with(&format!("identity {} of {}", original.len() - 1, original.len())),
            "{cut}"
        );
        let mut padded = bytes.clone();
        padded.extend_from_slice(b"xyz");
        assert_eq!(
            Baseline::restore(original.settings(), &padded).expect_err("padded").0,
            "3 bytes after the last profile"
        );
    }

    /// Length of the identities' part of a snapshot (its count and `(id, state)` pairs).
    fn identity_section(bytes: &[u8]) -> usize {
        let count = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let mut rest = &bytes[8..];
        for _ in 0..count {
            let (_, tail): ((Box<str>, IdentityState), &[u8]) = postcard::take_from_bytes(rest).expect("identity");
            rest = tail;
        }
        bytes.len() - rest.len()
    }

    fn at(hours: i64) -> DateTime<Utc> {
        // 2026-01-05 is a Monday.
        DateTime::from_timestamp(1_767_571_200 + hours * HOUR, 0).expect("valid")
    }

    fn access(hours: i64, patients: u64, ip: &str) -> Event {
        let mut e = Event::new(
            format!("e{hours}"),
            at(hours),
            SourceFormat::GatewayAccess,
            EventKind::DataAccess,
            "app".into(),
        );
        e.outcome = Outcome::Success;
        e.patient_count = Some(patients);
        e.src_ip = Some(ip.into());
        e.interaction = Some(Interaction::Read);
        e.resource_type = Some("Patient".into());
        e
    }

    #[test]
    fn learns_cadence_hours_networks_and_volume() {
        let baseline = Baseline::new(Settings::default());
        let mut s = IdentityState::new(0);
        for h in 0..24 * 8 {
            let e = access(h, 10, "10.0.0.5");
            s.observe(&e, false);
            s.learn(&e, &baseline);
        }
        assert_eq!(s.events, 192);
        assert_eq!(s.max_gap, HOUR);
        assert_eq!(s.active_days, 8);
        assert!(s.established(&Settings::default(), secs(at(24 * 8))));
        assert!(!s.established(&Settings::default(), secs(at(24 * 6))));
        assert_eq!(s.active_hours(), 168);
        assert!(s.has_access("Patient", Class::Read));
        assert!(!s.has_access("Patient", Class::Delete));
        assert_eq!(s.networks.len(), 1);
        assert!((s.volume.typical() - 10.0).abs() < 0.01, "{}", s.volume.typical());
        assert_eq!(s.volume.peak, 10);
        // A spike is counted but, once closed, clamped in the estimate and not learned as a peak.
        let spike = access(24 * 8, 5000, "10.0.0.5");
        s.observe(&spike, true);
        assert_eq!(s.volume.patients, 5000);
        s.learn(&spike, &baseline);
        let next = access(24 * 8 + 1, 10, "10.0.0.5");
        s.observe(&next, true);
        assert_eq!(s.volume.peak, 10);
        assert!(s.volume.typical() < 12.0, "{}", s.volume.typical());
        // A switch of network is recorded.
        let away = access(24 * 8 + 2, 1, "203.0.113.9");
        s.observe(&away, true);
        assert_eq!(s.switches_since(secs(at(24 * 8))), 1);
    }

    #[test]
    fn scopes_are_kept_minimal_under_containment_and_shared() {
        let baseline = Baseline::new(Settings::default());
        let mut a = IdentityState::new(0);
        let mut b = IdentityState::new(0);
        a.learn_scope(&Scope::parse("system/Patient.r"), 1, &baseline);
        a.learn_scope(&Scope::parse("system/Patient.rs"), 2, &baseline);
        a.learn_scope(&Scope::parse("system/Patient.s"), 3, &baseline);
        assert_eq!(a.scopes.len(), 1);
        assert_eq!(a.scopes[0].scope.to_string(), "system/Patient.rs");
        assert!(a.covers(&Scope::parse("system/Patient.read")));
        assert!(!a.covers(&Scope::parse("system/*.cruds")));
        b.learn_scope(&Scope::parse("system/Patient.rs"), 4, &baseline);
        assert!(Arc::ptr_eq(&a.scopes[0].scope, &b.scopes[0].scope));
    }

    #[test]
    fn failures_count_in_sliding_buckets() {
        let mut f = Failures::default();
        for s in 0..15 {
            f.add((6000 + s * 60) / FAILURE_BUCKET_SECS, true);
        }
        // Buckets 10 and 11 (10 + 5 failures) are both in view.
        assert_eq!(f.recent(), 15);
        f.add(14, false);
        assert_eq!(f.recent(), 0);
    }

    #[test]
    fn token_grants_are_kept_compact_and_newest_first_out_last() {
        assert_eq!(std::mem::size_of::<Grant>(), 12);
        let baseline = Baseline::new(Settings::default());
        let mut s = IdentityState::new(0);
        for n in 0..=MAX_TOKENS as i64 {
            let mut e = Event::new(
                format!("g{n}"),
                at(n),
                SourceFormat::Okta,
                EventKind::TokenIssued,
                "app".into(),
            );
            e.outcome = Outcome::Success;
            e.token_id = Some(format!("AT.{n}"));
            e.token_expires_at = Some(at(n + 1));
            s.learn(&e, &baseline);
        }
        assert_eq!(s.token("AT.0"), None, "the oldest grant is forgotten");
        let newest = s.token(&format!("AT.{MAX_TOKENS}")).expect("newest kept");
        assert_eq!(newest.issued, secs(at(MAX_TOKENS as i64)));
        assert_eq!(newest.expires, Some(secs(at(MAX_TOKENS as i64 + 1))));
        assert_eq!(s.token("AT.unknown"), None);
    }

    #[test]
    fn lifecycle_actions_are_classified() {
        let mut e = Event::new(
            "x".into(),
            at(0),
            SourceFormat::EntraAudit,
            EventKind::CredentialChange,
            "app".into(),
        );
        e.outcome = Outcome::Success;
        e.action = Some("Add service principal credentials".into());
        assert_eq!(CredentialChange::of(&e), Some(CredentialChange::Added));
        e.action = Some("Remove service principal credentials".into());
        assert_eq!(CredentialChange::of(&e), Some(CredentialChange::Removed));
        e.kind = EventKind::AppLifecycle;
        e.action = Some("application.lifecycle.deactivate".into());
        assert_eq!(retires_app(&e), Some(true));
        e.action = Some("application.lifecycle.activate".into());
        assert_eq!(retires_app(&e), Some(false));
    }
}
