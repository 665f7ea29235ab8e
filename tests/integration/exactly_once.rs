//! Exactly-once effects of `nhiwatch run` over several topics (issue 24) — on librdkafka's
//! embedded broker and on `tansu`: the topics are fetched unevenly (unequal partition counts, a
//! backlog where one topic runs days of event time ahead), and the run is killed with SIGKILL
//! early and repeatedly, before and between its commit points. The findings it leaves — in its
//! journal, its API and its Kafka sink — are those of a run never interrupted, and no finding
//! was ever delivered that the uninterrupted run does not have.
//!
//! `durability.rs` kills `run` on one topic, whose partitions advance in event time together;
//! here one topic's partitions are read days of event time ahead of another's, which is what a
//! consumer of several topics meets in its first seconds, in a backlog and after a rebalance.
//!
//! A rebalance between two `run --role all` members of one group is not tested: README
//! ("Running a group") makes `--role all` the single instance; members that share partitions
//! run `--role detect` (tested in `group.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nhiwatch::generate::{GenRecord, Options, Stream};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::{Digest as _, Sha256};

use crate::durability::{committed_in, metric, start, stop};
use crate::support::{self, Reaped};

const READ_TOKEN: &str = "a read token for the exactly-once tests";

/// A finding in one state: id, detector, identity, severity, count.
type Row = Vec<String>;

/// The generated traffic and how its three topics are partitioned.
struct Traffic {
    identities: usize,
    days: u32,
    /// Partitions of `fhir-audit`, `gateway-access`, `idp-audit`.
    partitions: [(Stream, i32); 3],
}

impl Traffic {
    fn records(&self) -> Vec<GenRecord> {
        nhiwatch::generate::generate(&Options {
            identities: self.identities,
            days: self.days,
            seed: 11,
            ..Default::default()
        })
        .records
    }

    fn topics(&self) -> String {
        self.partitions
            .iter()
            .map(|(s, _)| format!("\"{}\"", s.topic()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A `run` configuration for `group` under `dir`: lateness 48 h, a commit point every 2 s, a
/// findings journal, the API on a free loopback port with a read token, and a Kafka sink to
/// `findings-<group>` on the same broker.
fn config(dir: &Path, brokers: &str, group: &str, traffic: &Traffic) -> PathBuf {
    let path = dir.join(format!("{group}.toml"));
    let at = |name: &str| dir.join(format!("{group}-{name}")).display().to_string();
    let sha256: String = Sha256::digest(READ_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"{group}\"\ntopics = [{topics}]\n\
             [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
             [engine]\nlateness_seconds = 172800\n\
             [state]\ndir = \"{state}\"\ninterval_seconds = 2\n\
             [http]\nlisten = \"127.0.0.1:0\"\nmetrics_open = true\nfindings_journal = \"{journal}\"\n\
             [[http.tokens]]\nname = \"tests\"\nrole = \"read\"\nsha256 = \"{sha256}\"\n\
             [dead_letter]\npath = \"{dead}\"\n[outbox]\ndir = \"{outbox}\"\n\
             [[sinks]]\nname = \"topic\"\nkind = \"kafka\"\ntopic = \"findings-{group}\"\n",
            topics = traffic.topics(),
            state = at("state"),
            journal = at("findings.ndjson"),
            dead = at("dead-letter.ndjson"),
            outbox = at("outbox"),
        ),
    )
    .expect("config");
    path
}

/// Produces every record to its stream's topic, keyed by identity, all acknowledged; `batch`
/// records at most per batch. The identities are spread over a topic's partitions by size (the
/// largest first, onto the partition holding the fewest bytes), so that no partition outgrows
/// what the embedded broker keeps (about 5 MB); one identity's records stay on one partition, in
/// event-time order.
fn produce(brokers: &str, traffic: &Traffic, records: &[GenRecord], batch: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", batch.to_string())
        .create()
        .expect("producer");
    let mut placed: BTreeMap<(Stream, &str), i32> = BTreeMap::new();
    for &(stream, partitions) in &traffic.partitions {
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for r in records.iter().filter(|r| r.stream == stream) {
            *sizes.entry(r.identity.as_str()).or_default() += r.line.len();
        }
        let mut by_size: Vec<(&str, usize)> = sizes.into_iter().collect();
        by_size.sort_by_key(|&(id, size)| (std::cmp::Reverse(size), id));
        let mut load = vec![0usize; partitions as usize];
        for (identity, size) in by_size {
            let (p, _) = load
                .iter()
                .enumerate()
                .min_by_key(|&(p, l)| (*l, p))
                .expect("a partition");
            load[p] += size;
            placed.insert((stream, identity), p as i32);
        }
        assert!(
            load.iter().all(|&l| l < 4_500_000),
            "{}: partitions within what the embedded broker keeps: {load:?}",
            stream.topic()
        );
    }
    for r in records {
        let record = BaseRecord::to(r.stream.topic())
            .partition(placed[&(r.stream, r.identity.as_str())])
            .key(r.identity.as_bytes())
            .payload(r.line.as_bytes());
        nhiwatch::kafka::send_waiting(&producer, record).expect("send");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// Records `group` has committed over the three topics.
fn committed(brokers: &str, group: &str, traffic: &Traffic) -> i64 {
    traffic
        .partitions
        .iter()
        .map(|&(s, n)| committed_in(brokers, group, s.topic(), n))
        .sum()
}

/// Waits until `group` has committed all `total` records.
fn caught_up(brokers: &str, group: &str, traffic: &Traffic, total: i64, log: &Path, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let done = committed(brokers, group, traffic);
        if done >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: {group} did not catch up: {done} of {total}\n{}",
            support::read(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the process logging to `log` (its latest start) has judged what a run reading
/// the whole stream judges — every partition at its end, so idle and holding nothing back
/// (`nhiwatch_partitions_idle`) — and released the findings that raised (none held).
fn settled(log: &Path, traffic: &Traffic, case: &str) {
    let partitions: i32 = traffic.partitions.iter().map(|(_, n)| n).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let idle = metric(log, "nhiwatch_partitions_idle");
        let held = metric(log, "nhiwatch_findings_held");
        if idle == Some(partitions as u64) && held == Some(0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{case}: not settled ({idle:?} of {partitions} partitions idle, {held:?} findings held):\n{}",
            support::read(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The address the process logging to `log` serves its API on (its latest start).
fn addr(log: &Path) -> String {
    let text = support::read(log);
    text.lines()
        .rev()
        .find_map(|l| {
            l.split_once("Serving the HTTP API. addr=")
                .map(|(_, a)| a.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no API served:\n{text}"))
}

/// A finding's row from its JSON as the journal and the API give it.
fn row(f: &serde_json::Value) -> Row {
    vec![
        f["id"].as_str().expect("id").to_owned(),
        f["detector"].as_str().expect("detector").to_owned(),
        f["identity"]["id"].as_str().expect("identity").to_owned(),
        f["severity"].as_str().expect("severity").to_owned(),
        f["count"].as_u64().expect("count").to_string(),
    ]
}

/// Every finding `GET /v1/findings` lists, all pages.
fn listed(log: &Path) -> BTreeSet<Row> {
    let mut rows = BTreeSet::new();
    let mut cursor = String::new();
    for _ in 0..1000 {
        // The latest start may not serve yet (the log still names the process before it).
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match std::net::TcpStream::connect(addr(log)) {
                Ok(stream) => break stream,
                Err(error) => assert!(Instant::now() < deadline, "connect: {error}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let page = support::get_json(stream, &format!("/v1/findings?limit=500{cursor}"), READ_TOKEN);
        rows.extend(page["items"].as_array().expect("items").iter().map(row));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return rows,
        }
    }
    panic!("more than 1000 pages of findings");
}

/// The API's findings once the process has delivered what it committed: the same answer twice,
/// a second apart.
fn listed_settled(log: &Path) -> BTreeSet<Row> {
    let mut last = listed(log);
    for _ in 0..30 {
        std::thread::sleep(Duration::from_secs(1));
        let now = listed(log);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the findings listed kept changing:\n{}", support::read(log));
}

/// What a source of findings holds: each finding in its last state, and every id it ever had.
struct Delivered {
    last: BTreeSet<Row>,
    ever: BTreeSet<String>,
}

impl Delivered {
    fn of(rows: impl IntoIterator<Item = Row>) -> Delivered {
        let mut last: BTreeMap<String, Row> = BTreeMap::new();
        for row in rows {
            last.insert(row[0].clone(), row);
        }
        Delivered {
            ever: last.keys().cloned().collect(),
            last: last.into_values().collect(),
        }
    }
}

/// The findings journal (`src/findings/store.rs`, `Entry`): one `{"type":"finding","finding":…}`
/// line per new or updated finding, in apply order; the last state of each finding wins.
fn journaled(path: &Path) -> Delivered {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Delivered::of(text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| {
        let entry: serde_json::Value = serde_json::from_str(l).expect("a journal line");
        (entry["type"] == "finding").then(|| row(&entry["finding"]))
    }))
}

/// The Kafka sink's topic read from the beginning (OCSF Detection Findings,
/// `src/findings/ocsf.rs`, keyed by identity, so one finding's deliveries are in order on one
/// partition); the last record of each finding wins.
fn sunk(brokers: &str, topic: &str) -> Delivered {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "{topic}: no end reached");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let event: serde_json::Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("record is JSON");
                rows.push(vec![
                    event["finding_info"]["uid"].as_str().expect("uid").to_owned(),
                    event["finding_info"]["analytic"]["uid"]
                        .as_str()
                        .expect("analytic")
                        .to_owned(),
                    event["resources"][0]["uid"].as_str().expect("resource").to_owned(),
                    event["severity"].as_str().expect("severity").to_lowercase(),
                    event["count"].as_u64().expect("count").to_string(),
                ]);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Delivered::of(rows),
            Some(Err(e)) => panic!("{topic}: {e}"),
            None => {}
        }
    }
}

/// The findings of `nhiwatch detect` over `records` sorted by event time (stable: a record
/// delivered twice stays twice), with the runs' lateness: what a run judging in event time
/// raises, whatever order its partitions are fetched in.
fn in_time_order(dir: &Path, records: &[GenRecord]) -> BTreeSet<Row> {
    let mut sorted: Vec<&GenRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.time);
    let input = dir.join("in-time-order.ndjson");
    let text: String = sorted.iter().map(|r| format!("{}\n", r.line)).collect();
    std::fs::write(&input, text).expect("input");
    let config = dir.join("in-time-order.toml");
    std::fs::write(
        &config,
        format!(
            "[engine]\nlateness_seconds = 172800\n[dead_letter]\npath = \"{}\"\n",
            dir.join("in-time-order-dead-letter.ndjson").display()
        ),
    )
    .expect("config");
    let output = dir.join("in-time-order-findings.ndjson");
    let run = support::nhiwatch()
        .args(["detect", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .env("NHIWATCH_PSEUDONYM_KEY", crate::durability::KEY)
        .output()
        .expect("detect runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    support::lines(&output)
        .iter()
        .map(|l| row(&serde_json::from_str(l).expect("a finding")))
        .collect()
}

/// Asserts that `got` (a source of the faulted run) is `want` (the same source of the
/// uninterrupted run) in its last state, and that every id it ever held is one `want` has.
fn same(source: &str, want: &BTreeSet<Row>, got: &BTreeSet<Row>, ever: &BTreeSet<String>, case: &str) {
    let ids: BTreeSet<&String> = want.iter().map(|r| &r[0]).collect();
    let phantoms: Vec<&String> = ever.iter().filter(|id| !ids.contains(id)).collect();
    let missing: Vec<&Row> = want.difference(got).collect();
    let extra: Vec<&Row> = got.difference(want).collect();
    let by_detector = |rows: &[&Row]| {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for r in rows {
            *n.entry(r[1].clone()).or_default() += 1;
        }
        n
    };
    assert!(
        phantoms.is_empty() && missing.is_empty() && extra.is_empty(),
        "{case}: the faulted run's {source} differs from the uninterrupted run's ({} findings):\n\
         {} ids delivered that the uninterrupted run never raised: {:?}\n\
         missing {} {:?}: {missing:#?}\nextra {} {:?}: {extra:#?}",
        want.len(),
        phantoms.len(),
        phantoms.iter().take(10).collect::<Vec<_>>(),
        missing.len(),
        by_detector(&missing),
        extra.len(),
        by_detector(&extra),
    );
}

/// A small xorshift generator (the seed is printed with every failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `from..to` milliseconds.
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from))
    }
}

/// All of `traffic` produced before any consumer starts; an uninterrupted run (group
/// `reference`) reads it to the end; then a run (group `faulted`) killed with SIGKILL `kills`
/// times — 0.3–1 s after it began taking in records until one kill came before the killed
/// process's first commit point (up to three kills more for that), then 20–250 ms after each
/// process's first commit point — restarted each time, and left to finish. The findings of both, from the journal, the API and
/// the Kafka sink, are compared.
fn killed_early_and_often_raises_what_one_run_raises(
    brokers: &str,
    batch: usize,
    traffic: &Traffic,
    kills: usize,
    create_topic: impl Fn(&str, i32),
) {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    for &(stream, partitions) in &traffic.partitions {
        create_topic(stream.topic(), partitions);
    }
    for group in ["reference", "faulted"] {
        create_topic(&format!("findings-{group}"), 1);
    }
    let records = traffic.records();
    let total = records.len() as i64;
    produce(brokers, traffic, &records, batch);
    let produced = started.elapsed();

    // The reference, alone on the machine: read to the end, then its API, then stopped (which
    // drains its sink).
    let reference_log = dir.path().join("reference.log");
    let reference = start(&config(dir.path(), brokers, "reference", traffic), &reference_log);
    caught_up(brokers, "reference", traffic, total, &reference_log, "reference");
    settled(&reference_log, traffic, "reference");
    let reference_listed = listed_settled(&reference_log);
    stop(reference, &reference_log);
    let read_by_reference = started.elapsed();

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos());
    let mut rng = Rng(u64::from(seed) | 1);
    let faulted = config(dir.path(), brokers, "faulted", traffic);
    let log = dir.path().join("faulted.log");
    // (ms after the first record or the first commit point, records taken in, committed, before
    // this process's first commit point) at each kill.
    let mut killed: Vec<(u128, u64, i64, bool)> = Vec::new();
    let mut before = 0;
    let mut service: Reaped = start(&faulted, &log);
    // `kills` kills, and more (three at most) until one came before the killed process's first
    // commit point: the phase of the commit timer at the first record is not the test's to set.
    let early = |killed: &[(u128, u64, i64, bool)]| killed.iter().any(|k| k.3);
    loop {
        // Once it takes in records (or has nothing left to take in).
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(&log, "nhiwatch_records_total").unwrap_or(0) == 0 && committed(brokers, "faulted", traffic) < total
        {
            assert!(
                Instant::now() < deadline,
                "no records taken in:\n{}",
                support::read(&log)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Until one kill came before its process's first commit point: 0.3–1 s after the first
        // record. Then after the process made progress durable (so the restart resumes mid-stream,
        // where the topics' positions differ from a start at the beginning): 20–250 ms after its
        // first commit point.
        let after = if early(&killed) {
            while committed(brokers, "faulted", traffic) <= before && before < total {
                assert!(
                    Instant::now() < deadline,
                    "no commit after {before}:\n{}",
                    support::read(&log)
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // A process resumed from a checkpoint reads the rest of the stream in about a
            // second: kill it within that.
            rng.millis(20, 250)
        } else {
            rng.millis(300, 1000)
        };
        std::thread::sleep(after);
        let taken = metric(&log, "nhiwatch_records_total").unwrap_or(0);
        let _ = service.0.kill();
        let _ = service.0.wait();
        let now = committed(brokers, "faulted", traffic);
        killed.push((after.as_millis(), taken, now, taken > 0 && now == before));
        before = now;
        let more = killed.len() < kills || (!early(&killed) && killed.len() < kills + 3 && before < total);
        if !more {
            // The last start joins once the killed member's session (6 s) is over: tansu 0.6
            // may otherwise leave the newcomer with no partitions and never rebalance again
            // (seen once in five runs; `durability.rs` restarts the same way).
            std::thread::sleep(Duration::from_secs(7));
        }
        service = start(&faulted, &log);
        if !more {
            break;
        }
    }
    let case = format!(
        "seed {seed}, kills (ms after the first record or commit, taken in, committed, before its first commit point) \
         {killed:?} of {total}"
    );
    caught_up(brokers, "faulted", traffic, total, &log, &case);
    settled(&log, traffic, &case);
    let faulted_listed = listed_settled(&log);
    stop(service, &log);
    assert!(
        early(&killed),
        "{case}: a kill came before the killed process's first commit point, after it took in records"
    );
    // A process that made progress durable, killed before the end: its restart resumes from a
    // checkpoint mid-stream. (A process resumed so reads the rest in about a second, so the
    // later kills may come after the end.)
    assert!(
        killed.iter().any(|k| !k.3 && k.1 > 0 && k.2 < total),
        "{case}: a kill came after a commit point and before the end of the stream"
    );
    eprintln!(
        "produced in {produced:?}, reference read in {:?}, faulted done in {:?}; {case}",
        read_by_reference - produced,
        started.elapsed() - read_by_reference
    );

    let reference_journal = journaled(&dir.path().join("reference-findings.ndjson"));
    let detectors: BTreeSet<&str> = reference_journal.last.iter().map(|f| f[1].as_str()).collect();
    assert!(
        detectors.len() >= 3,
        "the traffic raises findings of several detectors: {detectors:?}"
    );
    // The uninterrupted run itself judged in event time, whatever the fetch order: it raises
    // what `detect` raises over the same records read in time order.
    assert_eq!(
        reference_journal.last,
        in_time_order(dir.path(), &records),
        "the uninterrupted run raises the findings of its records in event-time order ({case})"
    );
    let reference_sunk = sunk(brokers, "findings-reference");
    assert_eq!(
        reference_sunk.last, reference_journal.last,
        "the reference's sink holds its journal's findings"
    );
    assert_eq!(
        reference_listed, reference_journal.last,
        "the reference's API lists its journal's findings"
    );

    let faulted_journal = journaled(&dir.path().join("faulted-findings.ndjson"));
    let faulted_sunk = sunk(brokers, "findings-faulted");
    same(
        "journal",
        &reference_journal.last,
        &faulted_journal.last,
        &faulted_journal.ever,
        &case,
    );
    same(
        "API",
        &reference_listed,
        &faulted_listed,
        &faulted_listed.iter().map(|r| r[0].clone()).collect(),
        &case,
    );
    same(
        "Kafka sink",
        &reference_sunk.last,
        &faulted_sunk.last,
        &faulted_sunk.ever,
        &case,
    );
}

/// Unequal partition counts: `fhir-audit` in 12 partitions (eight identities of about 3.5 MB:
/// four stay empty), `gateway-access` in 4, `idp-audit` in 12 (about 450 KB each): per fetch (at
/// most 1 MB of a partition) the identity provider's topic runs through its 14 days while the
/// others advance a few days. (40 identities, 14
/// days: about 39,000 records, 41 MB; a debug build reads them in about 4 s, so kills 0.3–2 s
/// after the first record fall within the catch-up.)
fn uneven() -> Traffic {
    Traffic {
        identities: 40,
        days: 14,
        partitions: [(Stream::FhirAudit, 12), (Stream::Gateway, 4), (Stream::Idp, 12)],
    }
}

/// A backlog where the identity provider's topic runs far ahead: `idp-audit` in 24 small
/// partitions (about 250 KB each) comes whole, all 14 days, in the first fetch, while
/// `fhir-audit` (eight identities of about 3.5 MB, one a partition) and `gateway-access` (2
/// partitions) come a few days at a time: token grants are read a week and more of event time
/// before the data accesses they cover.
fn backlog() -> Traffic {
    Traffic {
        identities: 40,
        days: 14,
        partitions: [(Stream::FhirAudit, 8), (Stream::Gateway, 2), (Stream::Idp, 24)],
    }
}

#[test]
fn unevenly_fetched_topics_killed_early_and_often_on_the_embedded_broker() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    killed_early_and_often_raises_what_one_run_raises(
        &cluster.bootstrap_servers(),
        10_000,
        &uneven(),
        5,
        |topic, partitions| cluster.create_topic(topic, partitions, 1).expect("topic"),
    );
}

#[test]
fn unevenly_fetched_topics_killed_early_and_often_on_tansu() {
    let (_tansu, brokers) = support::tansu();
    // One record per batch: tansu 0.6 answers a fetch from inside a batch with the next one
    // (see `durability.rs`), and restarts resume at committed offsets.
    killed_early_and_often_raises_what_one_run_raises(&brokers, 1, &uneven(), 5, |topic, partitions| {
        support::create_topic(&brokers, topic, partitions)
    });
}

#[test]
fn a_backlog_with_one_topic_far_ahead_killed_during_catch_up_on_the_embedded_broker() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    killed_early_and_often_raises_what_one_run_raises(
        &cluster.bootstrap_servers(),
        10_000,
        &backlog(),
        5,
        |topic, partitions| cluster.create_topic(topic, partitions, 1).expect("topic"),
    );
}

#[test]
fn a_backlog_with_one_topic_far_ahead_killed_during_catch_up_on_tansu() {
    let (_tansu, brokers) = support::tansu();
    killed_early_and_often_raises_what_one_run_raises(&brokers, 1, &backlog(), 5, |topic, partitions| {
        support::create_topic(&brokers, topic, partitions)
    });
}
