//! Event-time alignment of the partitions one consumer reads.
//!
//! Kafka fetches partitions unevenly: the first seconds after a start, a backlog after an
//! outage, a rebalance, or topics of different sizes let one partition run days of event time
//! ahead of another. The reorder buffer ([`crate::engine::Reorder`]) waits for the slowest
//! partition, so what runs ahead only waits in memory; this module keeps that bounded and says
//! which partitions the slowest is: per assigned partition it keeps the newest event time read,
//! whether the partition is *idle* (at its end offset; or silent while others deliver, when
//! where it ends is not known; or silent ten times as long although records wait in it, a
//! partition whose leader cannot be reached), and
//! whether it is paused for running ahead of the slowest partition being read by more than the
//! bound (Flink's watermark alignment). A paused partition is resumed once the slowest is back
//! within the bound. Pure bookkeeping: the consumer applies what [`Alignment::review`] decides.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// The partitions of one consumer and their event-time positions.
#[derive(Debug)]
pub struct Alignment {
    bound: chrono::Duration,
    idle_after: Duration,
    parts: HashMap<String, HashMap<i32, Part>>,
    /// When a record last arrived from any partition: a partition is silent only while others
    /// deliver (an outage silences all and idles none).
    last_any: Option<Instant>,
}

#[derive(Debug)]
struct Part {
    newest: Option<DateTime<Utc>>,
    last_record: Instant,
    idle: bool,
    ahead: bool,
}

/// Where a partition's position is against its end, as the broker last said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Everything the partition held was read.
    Reached,
    /// Records wait in it: it is slow to come, not idle (Kafka Streams waits for such a
    /// partition too).
    Behind,
    /// Not known (no statistics yet, or none for it).
    Unknown,
}

/// What [`Alignment::review`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// Partitions that became idle (`true`) or active (`false`).
    pub idle: Vec<(String, i32, bool)>,
    /// Partitions to pause: ahead of the slowest by more than the bound.
    pub pause: Vec<(String, i32)>,
    /// Partitions paused for running ahead that may read again.
    pub resume: Vec<(String, i32)>,
}

impl Alignment {
    /// Partitions may run `bound` of event time ahead of the slowest being read; one that gave
    /// no record for `idle_after` while others did is idle.
    pub fn new(bound: chrono::Duration, idle_after: Duration) -> Alignment {
        Alignment {
            bound,
            idle_after,
            parts: HashMap::new(),
            last_any: None,
        }
    }

    /// `topic`/`partition` was assigned; false if it already was.
    pub fn assign(&mut self, topic: &str, partition: i32, now: Instant) -> bool {
        let parts = self.parts.entry(topic.to_owned()).or_default();
        if parts.contains_key(&partition) {
            return false;
        }
        parts.insert(
            partition,
            Part {
                newest: None,
                last_record: now,
                idle: false,
                ahead: false,
            },
        );
        true
    }

    /// `topic`/`partition` was revoked; false if it was not assigned.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> bool {
        let Some(parts) = self.parts.get_mut(topic) else {
            return false;
        };
        let removed = parts.remove(&partition).is_some();
        if parts.is_empty() {
            self.parts.remove(topic);
        }
        removed
    }

    /// The assigned partitions.
    pub fn assigned(&self) -> impl Iterator<Item = (&str, i32)> {
        self.parts
            .iter()
            .flat_map(|(t, parts)| parts.keys().map(move |p| (t.as_str(), *p)))
    }

    /// A record of `topic`/`partition` was read, its events' newest time `newest`; true when
    /// the partition was idle and is active again (to be told before its events).
    pub fn record(&mut self, topic: &str, partition: i32, newest: Option<DateTime<Utc>>, now: Instant) -> bool {
        self.last_any = Some(now);
        let Some(part) = self.parts.get_mut(topic).and_then(|p| p.get_mut(&partition)) else {
            return false;
        };
        part.last_record = now;
        if let Some(t) = newest {
            part.newest = Some(part.newest.map_or(t, |n| n.max(t)));
        }
        std::mem::replace(&mut part.idle, false)
    }

    /// Silence is counted from `now` (consumption resumed after a pause for backpressure).
    pub fn restart_silence(&mut self, now: Instant) {
        for part in self.parts.values_mut().flat_map(HashMap::values_mut) {
            part.last_record = now;
        }
        self.last_any = Some(now);
    }

    /// Decides which partitions are idle and which to pause or resume so that none reads more
    /// than the bound ahead of the slowest partition that is being read and has given an event.
    /// A partition is idle when `end` says it was read to its end; when its end is not known
    /// and it gave no record for `idle_after` while others did; or when records wait in it but
    /// it gave none for ten times that while others did (or while others were paused for
    /// running ahead). A partition paused for running ahead is never silent.
    pub fn review(&mut self, now: Instant, end: &dyn Fn(&str, i32) -> End) -> Review {
        let mut review = Review::default();
        // Partitions paused for running ahead would deliver if they could: while any is, the
        // silence of the others counts against the clock.
        let delivering = if self.parts.values().flat_map(HashMap::values).any(|p| p.ahead) {
            Some(now)
        } else {
            self.last_any
        };
        // Shortly after boot an instant may not reach that far back: then no one is silent.
        let since = |d: Duration| delivering.and_then(|t| t.checked_sub(d));
        let (silent_since, stuck_since) = (since(self.idle_after), since(self.idle_after * 10));
        for (topic, parts) in &mut self.parts {
            for (&partition, part) in parts.iter_mut() {
                let quiet = |since: Option<Instant>| !part.ahead && since.is_some_and(|t| part.last_record <= t);
                let idle = match end(topic, partition) {
                    End::Reached => true,
                    End::Unknown => quiet(silent_since),
                    End::Behind => quiet(stuck_since),
                };
                if idle != part.idle {
                    part.idle = idle;
                    review.idle.push((topic.clone(), partition, idle));
                }
            }
        }
        let slowest = self
            .parts
            .values()
            .flat_map(HashMap::values)
            .filter(|p| !p.idle)
            .filter_map(|p| p.newest)
            .min();
        for (topic, parts) in &mut self.parts {
            for (&partition, part) in parts.iter_mut() {
                let ahead = match (slowest, part.newest) {
                    (Some(s), Some(n)) => !part.idle && n - s > self.bound,
                    _ => false,
                };
                if ahead != part.ahead {
                    part.ahead = ahead;
                    if ahead {
                        review.pause.push((topic.clone(), partition));
                    } else {
                        // Its silence counts from when it may read again.
                        part.last_record = self.last_any.unwrap_or(part.last_record).max(part.last_record);
                        review.resume.push((topic.clone(), partition));
                    }
                }
            }
        }
        review
    }

    fn part(&self, topic: &str, partition: i32) -> Option<&Part> {
        self.parts.get(topic)?.get(&partition)
    }

    /// Whether `topic`/`partition` is idle.
    pub fn is_idle(&self, topic: &str, partition: i32) -> bool {
        self.part(topic, partition).is_some_and(|p| p.idle)
    }

    /// Whether `topic`/`partition` is paused for running ahead.
    pub fn is_ahead(&self, topic: &str, partition: i32) -> bool {
        self.part(topic, partition).is_some_and(|p| p.ahead)
    }

    /// Partitions paused for running ahead, and partitions idle.
    pub fn counts(&self) -> (usize, usize) {
        let parts = || self.parts.values().flat_map(HashMap::values);
        (parts().filter(|p| p.ahead).count(), parts().filter(|p| p.idle).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_767_225_600 + hours * 3600, 0)
    }

    fn never(_: &str, _: i32) -> End {
        End::Unknown
    }

    #[test]
    fn a_partition_ahead_of_the_slowest_by_more_than_the_bound_is_paused_until_it_is_caught_up() {
        let t0 = Instant::now();
        let mut a = Alignment::new(chrono::Duration::hours(48), Duration::from_secs(30));
        for p in 0..2 {
            a.assign("grants", p, t0);
        }
        a.assign("reads", 0, t0);
        a.record("grants", 0, at(100), t0);
        a.record("grants", 1, at(40), t0);
        a.record("reads", 0, at(10), t0);
        let review = a.review(t0, &never);
        // 100 h and 40 h against the slowest at 10 h: only the first is more than 48 h ahead.
        assert_eq!(review.pause, [("grants".to_owned(), 0)]);
        assert!(review.resume.is_empty() && review.idle.is_empty());
        assert!(a.is_ahead("grants", 0));
        assert_eq!(a.counts(), (1, 0));
        // The reads reach 60 h: the grants of partition 1, at 40 h, are the slowest now, and
        // 100 h is still more than 48 h ahead of them.
        a.record("reads", 0, at(60), t0);
        assert_eq!(a.review(t0, &never), Review::default());
        // They reach 55 h: 100 h is within 48 h of the slowest again.
        a.record("grants", 1, at(55), t0);
        let review = a.review(t0, &never);
        assert_eq!(review.resume, [("grants".to_owned(), 0)]);
        assert_eq!(a.counts(), (0, 0));
    }

    #[test]
    fn a_partition_at_its_end_or_silent_while_others_deliver_is_idle_and_holds_nothing_back() {
        let t0 = Instant::now();
        let mut a = Alignment::new(chrono::Duration::hours(1), Duration::from_secs(30));
        a.assign("t", 0, t0);
        a.assign("t", 1, t0);
        a.assign("t", 2, t0);
        a.record("t", 0, at(1), t0);
        a.record("t", 1, at(50), t0);
        // Partition 0 is at its end: idle, so 50 h is not ahead of anything read.
        let end0 = |_: &str, p: i32| if p == 0 { End::Reached } else { End::Unknown };
        let review = a.review(t0, &end0);
        assert_eq!(review.idle, [("t".to_owned(), 0, true)]);
        assert!(review.pause.is_empty(), "{review:?}");
        // Everyone silent (an outage): no one is idle for it.
        assert!(a.review(t0, &never).idle.contains(&("t".to_owned(), 0, false)));
        assert_eq!(a.counts().1, 0, "an outage idles no one");
        // Partition 1 delivers for 31 s while 2 stays silent: 2 is idle.
        let now = t0 + Duration::from_secs(31);
        a.record("t", 1, at(51), now);
        let mut idle = a.review(now, &never).idle;
        idle.sort();
        assert_eq!(idle, [("t".to_owned(), 0, true), ("t".to_owned(), 2, true)]);
        // A record of an idle partition makes it active again, to be told first.
        assert!(a.record("t", 2, at(52), now));
        assert!(!a.record("t", 2, at(53), now));
    }

    /// A partition with records waiting is slow to come, not idle: only a silence ten times
    /// as long (its leader unreachable) makes it idle.
    #[test]
    fn a_partition_with_records_waiting_is_idle_only_after_ten_times_the_silence() {
        let t0 = Instant::now();
        let mut a = Alignment::new(chrono::Duration::hours(1), Duration::from_secs(30));
        a.assign("t", 0, t0);
        a.assign("t", 1, t0);
        let behind = |_: &str, p: i32| if p == 1 { End::Behind } else { End::Unknown };
        a.record("t", 0, at(1), t0 + Duration::from_secs(31));
        assert_eq!(a.review(t0, &behind), Review::default());
        a.record("t", 0, at(2), t0 + Duration::from_secs(301));
        assert_eq!(a.review(t0, &behind).idle, [("t".to_owned(), 1, true)]);
    }

    /// Others paused for running ahead deliver nothing, yet would: the silence of one whose
    /// records never come (a transactional marker at its end, a stuck fetch) counts against
    /// the clock then, so the paused ones are not held forever.
    #[test]
    fn silence_counts_against_the_clock_while_others_are_paused_ahead() {
        let t0 = Instant::now();
        let mut a = Alignment::new(chrono::Duration::hours(1), Duration::from_secs(30));
        a.assign("t", 0, t0);
        a.assign("t", 1, t0);
        a.record("t", 0, at(50), t0);
        a.record("t", 1, at(1), t0);
        let behind = |_: &str, p: i32| if p == 1 { End::Behind } else { End::Unknown };
        assert_eq!(a.review(t0, &behind).pause, [("t".to_owned(), 0)]);
        // Nothing arrives from anyone for five minutes: partition 1 is idle, 0 reads again.
        let review = a.review(t0 + Duration::from_secs(301), &behind);
        assert_eq!(review.idle, [("t".to_owned(), 1, true)]);
        assert_eq!(review.resume, [("t".to_owned(), 0)]);
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let t0 = Instant::now();
        let mut a = Alignment::new(chrono::Duration::hours(1), Duration::from_secs(30));
        assert!(a.assign("t", 0, t0));
        assert!(!a.assign("t", 0, t0));
        assert!(a.revoke("t", 0));
        assert!(!a.revoke("t", 0));
        assert_eq!(a.assigned().count(), 0);
    }
}
