//! A corpus of bad input mixed with good: every good event comes through, every bad record (or
//! bad element of a page or Bundle) is in the dead letter with the right reason and its
//! coordinates, blank records and entries that are not audit events are counted as skipped, and
//! the pipeline goes on.

use std::collections::BTreeMap;
use std::io::Write;

use nhiwatch::ingest::dead_letter::{DeadLetter, FileDeadLetter, Letter};
use nhiwatch::ingest::file::read_lines;
use nhiwatch::runtime::{Normalize, Stats};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::*;

#[test]
fn bad_records_are_dead_lettered_with_reasons_and_good_ones_pass() {
    let good_gateway = r#"{"ts":"2026-01-05T10:00:00Z","request_id":"r-1","client_id":"lab-feed","method":"GET","path":"/fhir/Patient/9","status":200,"patients":["9"]}"#;
    let good_balp = read(&external().join("ihe-balp/AuditEvent-ex-auditBasicReadClient.json")).replace('\n', " ");
    let good_okta_array = read(&external().join("elastic-okta/okta-system.json.log")).replace('\n', " ");
    let huge = format!(
        r#"{{"ts":"2026-01-05T10:00:00Z","client_id":"x","method":"GET","path":"/fhir/{}"}}"#,
        "A".repeat(20_000)
    );
    // (line bytes, expected reason or None for good)
    let corpus: Vec<(Vec<u8>, Option<&str>)> = vec![
        (good_gateway.as_bytes().to_vec(), None),
        (b"{\"ts\": \"2026-01-05T10:00:00Z\", \"client_id\": ".to_vec(), Some("malformed_json")),
        (b"{\"hello\": \"world\"}".to_vec(), Some("unknown_format")),
        (good_balp.as_bytes().to_vec(), None),
        (huge.into_bytes(), Some("oversized")),
        (b"{\"ts\":\"2026-01-05T10:00:00Z\",\"client_id\":\"a\",\"method\":\"GET\",\"path\":\"/fhir/Patient\",\"status\":\"ok\"}".to_vec(), Some("wrong_type")),
        (vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'], Some("not_utf8")),
        (b"{\"ts\":\"yesterday\",\"client_id\":\"a\",\"method\":\"GET\",\"path\":\"/fhir/Patient\"}".to_vec(), Some("bad_timestamp")),
        (b"{\"ts\":\"2026-01-05T10:00:00Z\",\"method\":\"GET\",\"client_id\":\"\",\"path\":\"/fhir/Patient\"}".to_vec(), Some("missing_field")),
        (good_okta_array.as_bytes().to_vec(), None),
        (b"<AuditEvent xmlns=\"http://hl7.org/fhir\"><id value=\"x\"/>".to_vec(), Some("malformed_xml")),
        (b"{\"resourceType\":\"Patient\",\"id\":\"p\"}".to_vec(), Some("not_audit_event")),
        // Recognised by its opening, refused by the parse.
        (b"{\"resourceType\":\"AuditEvent\",\"id\":".to_vec(), Some("malformed_json")),
        (b"just some text".to_vec(), Some("unknown_format")),
        // Nothing to judge: skipped as `empty`, not dead-lettered.
        (b"[]".to_vec(), None),
        (b"   ".to_vec(), None),
        (good_gateway.replace("r-1", "r-2").into_bytes(), None),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("mixed.ndjson");
    let mut file = std::fs::File::create(&input).expect("create");
    for (line, _) in &corpus {
        file.write_all(line).expect("write");
        file.write_all(b"\n").expect("write");
    }
    drop(file);

    let dead_path = dir.path().join("dead.ndjson");
    let mut pipeline = Normalize::new(
        normalizer(),
        Box::new(FileDeadLetter::open(&dead_path).expect("open")),
        16_384,
    );
    let mut events = Vec::new();
    let reader = std::io::BufReader::new(std::fs::File::open(&input).expect("open"));
    let name = input.display().to_string();
    read_lines(reader, &name, 16_384, |record| {
        pipeline.process(record, &mut |e| events.push(e))
    })
    .expect("reads");
    pipeline.flush().expect("flush");

    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "r-1",
            "ex-auditBasicReadClient",
            "faf7398a-4f77-11ea-97fb-5925e98228bd",
            "3aeede38-4f67-11ea-abd3-1f5d113f2546",
            "3af594f9-4f67-11ea-abd3-1f5d113f2546",
            "r-2"
        ],
        "every good event, in order"
    );
    assert!(events.iter().all(|e| e.source.as_ref().is_some_and(|s| s.name == name)));
    assert_eq!(events[0].source.as_ref().map(|s| s.offset), Some(1));

    let letters: Vec<Value> = std::fs::read_to_string(&dead_path)
        .expect("dead letter written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letters are JSON"))
        .collect();
    let expected: Vec<(i64, &str)> = corpus
        .iter()
        .enumerate()
        .filter_map(|(i, (_, reason))| reason.map(|r| (i as i64 + 1, r)))
        .collect();
    let got: Vec<(i64, &str)> = letters
        .iter()
        .map(|l| {
            (
                l["source"]["offset"].as_i64().expect("line"),
                l["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    assert_eq!(got, expected, "every bad line, with its line number and reason");
    for letter in &letters {
        assert_eq!(letter["source"]["name"], name.as_str());
        assert!(letter["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let by_line: BTreeMap<i64, &Value> = letters
        .iter()
        .map(|l| (l["source"]["offset"].as_i64().unwrap_or(0), l))
        .collect();
    assert_eq!(
        by_line[&2]["raw"],
        String::from_utf8_lossy(&corpus[1].0).as_ref(),
        "raw bytes kept"
    );
    assert_eq!(by_line[&7]["raw_base64"], "eyL//iJ9", "non-UTF-8 kept as base64");
    assert_eq!(by_line[&5]["raw_truncated"], true);
    assert_eq!(by_line[&5]["length"], corpus[4].0.len());
    assert!(
        by_line[&6]["error"].as_str().is_some_and(|e| e.contains("`status`")),
        "the wrong field is named"
    );

    let stats = pipeline.stats();
    assert_eq!(stats.records, corpus.len() as u64);
    assert_eq!(stats.events, 6);
    assert_eq!(stats.dead_lettered(), expected.len() as u64);
    assert_eq!(stats.dead_letters.get("unknown_format"), Some(&2));
    assert_eq!(stats.skipped, BTreeMap::from([("empty", 2)]));
    assert_accounted(stats);
}

/// Every entry counted once: events, dead letter or skipped.
fn assert_accounted(stats: &Stats) {
    assert_eq!(
        stats.entries,
        stats.accepted + stats.dead_lettered() + stats.skipped_total(),
        "{stats:?}"
    );
    assert!(
        stats.entries >= stats.records && stats.events >= stats.accepted,
        "{stats:?}"
    );
}

/// Runs `lines` through a pipeline writing its dead letter to `dead`; the events and the letters.
fn through_pipeline(lines: &[String], dead: &std::path::Path) -> (Vec<nhiwatch::event::Event>, Vec<Value>, Stats) {
    let mut pipeline = Normalize::new(
        normalizer(),
        Box::new(FileDeadLetter::open(dead).expect("open")),
        nhiwatch::normalize::DEFAULT_MAX_RECORD_BYTES,
    );
    let mut events = Vec::new();
    let text = lines.join("\n");
    read_lines(
        text.as_bytes(),
        "in.ndjson",
        nhiwatch::normalize::DEFAULT_MAX_RECORD_BYTES,
        |record| pipeline.process(record, &mut |e| events.push(e)),
    )
    .expect("reads");
    pipeline.flush().expect("flush");
    let letters = std::fs::read_to_string(dead)
        .expect("dead letter")
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letters are JSON"))
        .collect();
    (events, letters, pipeline.stats().clone())
}

/// A letter's line, element index, reason and raw text.
fn letter_of(l: &Value) -> (i64, Option<u64>, &str, &str) {
    (
        l["source"]["offset"].as_i64().expect("line"),
        l["element"].as_u64(),
        l["reason"].as_str().expect("reason"),
        l["raw"].as_str().expect("raw"),
    )
}

/// Issue 19: an Okta page or a FHIR Bundle with one bad element was dead-lettered whole, its
/// good elements lost; the non-AuditEvent entries of a Bundle vanished uncounted. Each element
/// is an entry now: the good ones pass, each bad one is a dead letter of its own with its index
/// and its own text, and the rest is counted as skipped.
#[test]
fn a_bad_element_of_a_page_or_bundle_costs_only_itself() {
    let mut page: Vec<Value> =
        serde_json::from_str(&read(&external().join("elastic-okta/okta-system.json.log"))).expect("an Okta page");
    assert_eq!(page.len(), 3);
    page[1]["published"] = Value::from("last Tuesday");
    let bad_okta = page[1].to_string();
    let page = Value::from(page).to_string();

    let balp = read(&external().join("ihe-balp/AuditEvent-ex-auditBasicReadClient.json"));
    let balp: Value = serde_json::from_str(&balp).expect("BALP JSON");
    let mut bad_balp = balp.clone();
    bad_balp.as_object_mut().expect("object").remove("recorded");
    let bad_balp = bad_balp.to_string();
    let outcome = r#"{"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}"#;
    let bundle = format!(
        r#"{{"resourceType": "Bundle", "type": "searchset", "entry": [{{"resource": {balp}}}, {{"resource": {bad_balp}}}, {outcome}]}}"#
    );

    let xml = read(&external().join("hl7-fhir-core-auditevent/audit-event-example-search.xml"));
    let xml = xml.trim_start_matches(|c| c != '>').trim_start_matches('>').trim();
    let xml = xml.replace('\n', " ");
    let bad_xml = xml.replace("<recorded value=", "<recorded ignored=");
    let xml_bundle = format!(
        r#"<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource>{bad_xml}</resource></entry><entry><resource>{xml}</resource></entry><entry><resource><Patient/></resource></entry></Bundle>"#
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (events, letters, stats) = through_pipeline(&[page, bundle, xml_bundle], &dir.path().join("dead.ndjson"));
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "faf7398a-4f77-11ea-97fb-5925e98228bd",
            "3af594f9-4f67-11ea-abd3-1f5d113f2546",
            "ex-auditBasicReadClient",
            "example-search"
        ],
        "the good elements of each"
    );
    let letters: Vec<_> = letters.iter().map(letter_of).collect();
    assert_eq!(
        letters,
        [
            (1, Some(1), "bad_timestamp", bad_okta.as_str()),
            (2, Some(1), "missing_field", bad_balp.as_str()),
            (3, Some(0), "missing_field", bad_xml.as_str()),
        ],
        "each bad element on its own, with its line, index and text"
    );
    assert_eq!(stats.records, 3);
    assert_eq!((stats.entries, stats.accepted), (9, 4));
    assert_eq!(stats.skipped, BTreeMap::from([("not_audit_event", 2)]));
    assert_accounted(&stats);
}

/// A record nested `depth` deep, as FHIR XML or JSON.
fn deep_xml(depth: usize) -> String {
    format!(
        r#"<AuditEvent xmlns="http://hl7.org/fhir"><id value="deep"/>{}{}</AuditEvent>"#,
        "<x>".repeat(depth),
        "</x>".repeat(depth)
    )
}

fn deep_json(depth: usize) -> String {
    format!(
        r#"{{"resourceType": "AuditEvent", "id": "deep", "extension": {}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

fn gateway_line(id: &str) -> String {
    format!(
        r#"{{"ts":"2026-01-05T10:00:00Z","request_id":"{id}","client_id":"lab-feed","method":"GET","path":"/fhir/Patient/9","status":200,"patients":["9"]}}"#
    )
}

/// Issue 19: a FHIR AuditEvent in XML nested 65,000 deep overflowed the stack of `run` and
/// `detect` before it could be dead-lettered (from Kafka, it would be read again after every
/// restart). Nesting beyond the limit is refused as `too_deep` in XML and JSON alike, and the
/// records around it pass: through the pipeline, and through the real binary.
#[test]
fn records_nested_100k_deep_are_dead_lettered_and_the_records_around_them_pass() {
    let lines = [
        gateway_line("r-1"),
        deep_xml(100_000),
        gateway_line("r-2"),
        deep_json(100_000),
        format!("[{}, {}]", gateway_line("r-3"), deep_json(100_000)),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let (events, letters, stats) = through_pipeline(&lines, &dir.path().join("dead.ndjson"));
    let ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["r-1", "r-2", "r-3"]);
    let letters: Vec<_> = letters
        .iter()
        .map(|l| {
            let (line, element, reason, _) = letter_of(l);
            (line, element, reason)
        })
        .collect();
    assert_eq!(
        letters,
        [(2, None, "too_deep"), (4, None, "too_deep"), (5, Some(1), "too_deep")]
    );
    assert_accounted(&stats);

    let input = dir.path().join("deep.ndjson");
    std::fs::write(&input, lines.join("\n")).expect("write");
    let dead = dir.path().join("detect-dead.ndjson");
    let out = nhiwatch()
        .env("NHIWATCH__DEAD_LETTER__PATH", &dead)
        .arg("detect")
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("findings.ndjson"))
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("records 5  events 3  dead letters 3  "), "{stderr}");
    let reasons: Vec<String> = lines_of(&dead)
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON")["reason"].to_string())
        .collect();
    assert_eq!(reasons, ["\"too_deep\""; 3]);
}

fn lines_of(path: &std::path::Path) -> Vec<String> {
    read(path).lines().map(str::to_owned).collect()
}

/// A letter's reason and element.
type Reason = (&'static str, Option<usize>);

/// A dead letter that keeps each letter's reason and element.
#[derive(Clone, Default)]
struct Kept(std::sync::Arc<std::sync::Mutex<Vec<Reason>>>);

impl DeadLetter for Kept {
    fn send(&mut self, letter: &Letter<'_>) -> std::io::Result<()> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .push((letter.reason, letter.element));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line of a mixed input and what it must come to.
#[derive(Debug, Clone)]
enum Line {
    Good,
    Bad,
    Blank,
    EmptyPage,
    Deep,
    /// A page of good (`true`) and bad elements.
    Page(Vec<bool>),
    /// A Bundle of good and bad AuditEvents (`Some`) and other resources (`None`).
    Bundle(Vec<Option<bool>>),
}

fn line_strategy() -> impl Strategy<Value = Line> {
    prop_oneof![
        4 => Just(Line::Good),
        2 => Just(Line::Bad),
        1 => Just(Line::Blank),
        1 => Just(Line::EmptyPage),
        1 => Just(Line::Deep),
        2 => prop::collection::vec(any::<bool>(), 1..6).prop_map(Line::Page),
        2 => prop::collection::vec(prop::option::of(any::<bool>()), 1..6).prop_map(Line::Bundle),
    ]
}

fn audit_event(id: &str, good: bool) -> String {
    let recorded = if good { "2026-01-05T09:00:00Z" } else { "soon" };
    format!(
        r#"{{"resourceType": "AuditEvent", "id": "{id}", "recorded": "{recorded}", "agent": [{{"type": {{"coding": [{{"code": "110153"}}]}}, "who": {{"display": "lab-feed"}}}}]}}"#
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Issue 19: records in = events + dead letters + skipped, always — counted by entry, since
    /// a page or Bundle holds several: every entry is accepted (its events come out), a dead
    /// letter with its reason (and its index within a page or Bundle), or skipped with its
    /// reason.
    #[test]
    fn every_entry_is_an_event_a_dead_letter_or_skipped(lines in prop::collection::vec(line_strategy(), 0..24)) {
        let kept = Kept::default();
        let mut pipeline = Normalize::new(normalizer(), Box::new(kept.clone()), 1 << 20);
        let (mut entries, mut accepted, mut dead, mut skipped) = (0u64, 0u64, 0u64, 0u64);
        let mut text = String::new();
        for (n, line) in lines.iter().enumerate() {
            let id = |i: usize| format!("r-{n}-{i}");
            let record = match line {
                Line::Good => { accepted += 1; gateway_line(&id(0)) }
                Line::Bad => { dead += 1; format!("{{\"ts\": \"2026-01-05T10:00:00Z\", \"client_id\": {n}") }
                Line::Blank => { skipped += 1; " \t".to_owned() }
                Line::EmptyPage => { skipped += 1; "[]".to_owned() }
                Line::Deep => { dead += 1; if n % 2 == 0 { deep_json(1_000) } else { deep_xml(1_000) } }
                Line::Page(elements) => {
                    let items: Vec<String> = elements.iter().enumerate().map(|(i, good)| {
                        if *good { accepted += 1; gateway_line(&id(i)) } else { dead += 1; r#"{"hello": "world"}"#.to_owned() }
                    }).collect();
                    entries += elements.len() as u64 - 1;
                    format!("[{}]", items.join(", "))
                }
                Line::Bundle(resources) => {
                    let items: Vec<String> = resources.iter().enumerate().map(|(i, r)| {
                        let resource = match r {
                            Some(good) => {
                                if *good { accepted += 1 } else { dead += 1 }
                                audit_event(&id(i), *good)
                            }
                            None => { skipped += 1; r#"{"resourceType": "Provenance"}"#.to_owned() }
                        };
                        format!(r#"{{"resource": {resource}}}"#)
                    }).collect();
                    entries += resources.len() as u64 - 1;
                    format!(r#"{{"resourceType": "Bundle", "entry": [{}]}}"#, items.join(", "))
                }
            };
            entries += 1;
            text.push_str(&record);
            text.push('\n');
        }
        let mut events = 0u64;
        read_lines(text.as_bytes(), "mixed", 1 << 20, |record| pipeline.process(record, &mut |_| events += 1))
            .expect("reads");
        let stats = pipeline.stats();
        prop_assert_eq!(stats.records, lines.len() as u64);
        prop_assert_eq!(
            (stats.entries, stats.accepted, stats.dead_lettered(), stats.skipped_total()),
            (entries, accepted, dead, skipped)
        );
        prop_assert_eq!(stats.entries, stats.accepted + stats.dead_lettered() + stats.skipped_total());
        prop_assert_eq!(events, accepted, "one event per accepted entry here");
        let letters = kept.0.lock().expect("letters").clone();
        prop_assert_eq!(letters.len() as u64, dead);
        prop_assert!(letters.iter().all(|(reason, _)| nhiwatch::normalize::ParseError::REASONS.contains(reason)));
    }
}

/// The dead letter's Kafka form (`dead_letter.topic`): the raw bytes as the value, the reason,
/// the parser's message, the coordinates and the element as headers, on the embedded broker.
#[test]
fn a_dead_letter_topic_keeps_the_raw_bytes_and_says_why_in_headers() {
    use nhiwatch::event::Origin;
    use nhiwatch::kafka::dead_letter::KafkaDeadLetter;
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::message::Headers as _;

    let broker = nhiwatch::kafka::embedded::Embedded::start().expect("broker");
    broker.create_topic("dead", 1).expect("topic");
    let cfg = nhiwatch::config::KafkaConfig {
        brokers: broker.brokers(),
        ..nhiwatch::config::Settings::load(None).expect("defaults").raw.kafka
    };
    let mut dead = KafkaDeadLetter::new(&cfg, "dead").expect("producer");
    let origin = Origin {
        name: "fhir-audit".into(),
        partition: Some(2),
        offset: 41,
    };
    let raw = b"{\"resourceType\":\"Bundle\",\"entry\":[oops";
    dead.send(&Letter::new("malformed_json", "expected value at line 1".into(), &origin, raw, None).element(3))
        .expect("sent");
    dead.flush().expect("acknowledged");

    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&["dead"]).expect("subscribe");
    let message = (0..100)
        .find_map(|_| consumer.poll(std::time::Duration::from_millis(200)))
        .expect("a dead letter within 20 s")
        .expect("no error");
    assert_eq!(message.payload(), Some(&raw[..]));
    let headers: BTreeMap<String, String> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            )
        })
        .collect();
    assert_eq!(headers["nhiwatch.reason"], "malformed_json");
    assert_eq!(headers["nhiwatch.error"], "expected value at line 1");
    assert_eq!(headers["nhiwatch.element"], "3");
    assert!(headers["nhiwatch.source"].contains("fhir-audit"), "{headers:?}");
    assert!(!headers.contains_key("nhiwatch.length"), "{headers:?}");
}

/// Normalizing side by side (issue 22) changes nothing: a mixed corpus of good, bad, paged and
/// bundled records, repeated past several workers' share, gives through `normalize_all` on four
/// threads the same events in the same order, the same dead letters (reason and element) in the
/// same order, and the same counts as record by record on one.
#[test]
fn normalizing_on_several_threads_gives_what_one_gives_in_the_same_order() {
    let good_balp = read(&external().join("ihe-balp/AuditEvent-ex-auditBasicReadClient.json")).replace('\n', " ");
    let okta_page = read(&external().join("elastic-okta/okta-system.json.log")).replace('\n', " ");
    let mut lines = Vec::new();
    for n in 0..700 {
        lines.push(match n % 7 {
            0 => gateway_line(&format!("g-{n}")),
            1 => good_balp.clone(),
            2 => format!("{{\"ts\": \"2026-01-05T10:00:00Z\", \"client_id\": {n}"),
            3 => okta_page.clone(),
            4 => format!("[{}, {{\"hello\": \"world\"}}]", gateway_line(&format!("p-{n}"))),
            5 => " ".to_owned(),
            _ => format!(
                r#"{{"resourceType": "Bundle", "entry": [{{"resource": {}}}]}}"#,
                audit_event(&format!("b-{n}"), n % 2 == 0)
            ),
        });
    }
    let text = lines.join("\n");
    let origin = nhiwatch::event::Origin {
        name: "mixed".into(),
        partition: None,
        offset: 0,
    };
    let records: Vec<nhiwatch::ingest::Record<'_>> = lines
        .iter()
        .map(|l| nhiwatch::ingest::Record {
            bytes: l.as_bytes(),
            origin: &origin,
            oversized_len: None,
            received: None,
        })
        .collect();

    let one_kept = Kept::default();
    let mut one = Normalize::new(normalizer(), Box::new(one_kept.clone()), 1 << 20);
    let mut one_events = Vec::new();
    read_lines(text.as_bytes(), "mixed", 1 << 20, |record| {
        one.process(record, &mut |e| {
            one_events.push(serde_json::to_string(&e).expect("json"))
        })
    })
    .expect("reads");

    let many_kept = Kept::default();
    let mut many = Normalize::new(normalizer(), Box::new(many_kept.clone()), 1 << 20).with_workers(4);
    let mut many_events = Vec::new();
    let normalized = many.normalize_all(&records);
    assert_eq!(normalized.len(), records.len());
    for (record, n) in records.iter().zip(normalized) {
        many.apply(record, n, &mut |e| {
            many_events.push(serde_json::to_string(&e).expect("json"))
        })
        .expect("applied");
    }
    assert!(one_events.len() > 500, "{}", one_events.len());
    // Each event names its record's coordinates; the file reader numbers lines from 1, the
    // hand-made records here all say offset 0: compare without them.
    let strip = |events: &[String]| -> Vec<serde_json::Value> {
        events
            .iter()
            .map(|e| {
                let mut v: serde_json::Value = serde_json::from_str(e).expect("json");
                v.as_object_mut().expect("object").remove("source");
                v
            })
            .collect()
    };
    let (many_events, one_events) = (strip(&many_events), strip(&one_events));
    assert_eq!(many_events.len(), one_events.len());
    if let Some(i) = (0..one_events.len()).find(|&i| many_events[i] != one_events[i]) {
        panic!("event {i} differs: {} vs {}", many_events[i], one_events[i]);
    }
    assert_eq!(
        *many_kept.0.lock().expect("letters"),
        *one_kept.0.lock().expect("letters")
    );
    let (a, b) = (one.stats(), many.stats());
    assert_eq!(
        (
            a.records,
            a.entries,
            a.accepted,
            a.events,
            &a.dead_letters,
            &a.skipped,
            &a.by_format
        ),
        (
            b.records,
            b.entries,
            b.accepted,
            b.events,
            &b.dead_letters,
            &b.skipped,
            &b.by_format
        )
    );
}
