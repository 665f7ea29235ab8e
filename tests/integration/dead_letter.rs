//! A corpus of bad input mixed with good: every good event comes through, every bad record is in
//! the dead letter with the right reason and its coordinates, and the pipeline goes on.

use std::collections::BTreeMap;
use std::io::Write;

use nhiwatch::ingest::dead_letter::FileDeadLetter;
use nhiwatch::ingest::file::read_lines;
use nhiwatch::pipeline::Pipeline;
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
        (b"[]".to_vec(), Some("empty")),
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
    let mut pipeline = Pipeline::new(
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
}
