//! The real binary: `check-config`, `generate`, and `run` over generated files.

use crate::support::*;

/// `nhiwatch generate` of `identities` integrations over `days` with `seed` into `out`.
fn generate(out: &std::path::Path, identities: u32, days: u32, seed: u64) {
    let result = nhiwatch()
        .args([
            "generate",
            "--identities",
            &identities.to_string(),
            "--days",
            &days.to_string(),
        ])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(out)
        .output()
        .expect("runs");
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
}

#[test]
fn check_config_names_file_key_and_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[kafka]\ntopics = [\"a\"]\ngroup = \"x\"\n").expect("write");
    let out = nhiwatch().arg("check-config").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), format!("{}: unknown key `kafka.group`", bad.display()));

    // The registry a configuration names is checked too, down to the entry and key.
    let registry = dir.path().join("registry.toml");
    std::fs::write(
        &registry,
        "[[integration]]\nid = \"a\"\napproved_networks = [\"10.0.0.0/33\"]\n",
    )
    .expect("write");
    let with_registry = dir.path().join("with-registry.toml");
    std::fs::write(
        &with_registry,
        format!("[engine]\nregistry = {:?}\n", registry.display().to_string()),
    )
    .expect("write");
    let out = nhiwatch()
        .arg("check-config")
        .arg(&with_registry)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        // The key that named the file and where it was set, then the file's own problem.
        format!(
            "engine.registry (set in {}): {}: integration[0].approved_networks: \"10.0.0.0/33\" is not a CIDR network",
            with_registry.display(),
            registry.display()
        )
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[kafka]\nbrokers = \"10.0.0.1:9093\"\n").expect("write");
    let out = nhiwatch().arg("check-config").arg(&good).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("{}: valid", good.display())));
}

#[test]
fn run_refuses_to_start_without_a_pseudonymisation_key() {
    let out = nhiwatch().args(["run", "--input", "-"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pseudonymisation key"));
}

/// Stdin can be read once: naming it twice is refused at once (before, the second read waited
/// forever for a lock the first held).
#[test]
fn stdin_named_twice_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["detect", "-i", "-", "-i", "-", "-o", "-"],
        vec!["run", "-i", "-", "-i", "-"],
    ] {
        let mut child = nhiwatch()
            .args(&args)
            .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
            .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dead.ndjson"))
            .env("NHIWATCH__HTTP__LISTEN", "")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs");
        // Stdin stays open: a command that tried to read it twice would never end.
        let _stdin = child.stdin.take();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} still running after 20 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        assert!(!status.success(), "{args:?}");
        assert!(
            stderr.contains("stdin (`-`) is named more than once"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_group_roles_read_kafka_only() {
    for role in ["rekey", "detect"] {
        let out = nhiwatch()
            .args(["run", "--role", role, "--input", "-"])
            .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("--role {role} reads Kafka; --input is for --role all")),
            "{stderr}"
        );
    }
}

#[test]
fn generate_then_run_over_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    generate(&data, 9, 3, 11);
    let labels: serde_json::Value = serde_json::from_str(&read(&data.join("labels.json"))).expect("labels JSON");
    assert!(
        labels
            .as_array()
            .is_some_and(|l| l.iter().all(|x| x["identity"].is_string() && x["start"].is_string()))
    );
    let registry: toml::Table = read(&data.join("registry.toml")).parse().expect("registry is TOML");
    assert_eq!(
        registry["integration"].as_array().map(Vec::len),
        Some(9),
        "every generated integration but the stranger"
    );

    let files = generated_inputs(&data);
    let lines_in: usize = files.iter().map(|f| lines(f).len()).sum();
    let events_path = dir.path().join("events.ndjson");
    let mut cmd = nhiwatch();
    cmd.env("NHIWATCH_PSEUDONYM_KEY", "a-key-for-this-test-only")
        .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dl.ndjson"));
    cmd.arg("run").arg("--events-out").arg(&events_path);
    for f in &files {
        cmd.arg("--input").arg(f);
    }
    let out = cmd.output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events = lines(&events_path);
    assert_eq!(events.len(), lines_in, "one event per generated line");
    assert!(
        stderr.contains(&format!("records {lines_in}  events {lines_in}  dead letters 0")),
        "{stderr}"
    );
    assert!(
        !events.iter().any(|e| e.contains("\"pt-")),
        "patient ids never leave the normalizer"
    );
}

#[test]
fn generate_detect_score_is_exact_and_reproducible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    generate(&data, 12, 45, 4);
    let inputs = generated_inputs(&data);
    let detect = |output: &std::path::Path| {
        let out = nhiwatch()
            .env("NHIWATCH_PSEUDONYM_KEY", "integration-tests-only-key")
            .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dead.ndjson"))
            .arg("detect")
            .arg("-i")
            .args(&inputs)
            .arg("--registry")
            .arg(data.join("registry.toml"))
            .arg("-o")
            .arg(output)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (a, b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    let summary = detect(&a);
    detect(&b);
    // 15 labels: one anomaly of each of the 12 detectors' kinds, `credential_sharing` labelled
    // `new_network` too, and two more `phi_volume` runs (unusual for the hour: issue 20); people's
    // failed sign-ins among them raise nothing. 16 findings: the scope drift is two problems, one
    // per permission (a token granted `system/*.cruds` outside approval, then the integration's
    // first delete, `Patient.d`). The generator delivers some records twice, each right after the
    // first: every repeat of a judged record is dropped.
    let repeats = judged_repeats(&inputs);
    assert!(repeats > 0, "the scenario repeats records");
    assert!(
        summary.contains(&format!("dead letters 0  late 0  duplicates {repeats}  findings 16")),
        "{summary}"
    );
    let findings = read(&a);
    assert_eq!(findings, read(&b), "same input, same findings, byte for byte");
    for line in findings.lines() {
        let f: serde_json::Value = serde_json::from_str(line).expect("finding JSON");
        for field in ["id", "detector", "severity", "event_time"] {
            assert!(f[field].is_string(), "{field} in {line}");
        }
        assert!(f["identity"]["id"].is_string());
    }
    let out = nhiwatch()
        .arg("score")
        .arg("--labels")
        .arg(data.join("labels.json"))
        .arg("--findings")
        .arg(&a)
        .output()
        .expect("runs");
    let table = String::from_utf8_lossy(&out.stdout);
    let all = table.lines().find(|l| l.starts_with("all")).expect("total line");
    assert_eq!(
        all.split_whitespace().collect::<Vec<_>>(),
        ["all", "15", "15", "16", "16", "1.000", "1.000", "1.000"],
        "{table}"
    );
}

/// Issue 18, item 9: exports overlap and pipelines deliver again, so a record may come twice. The
/// same records with each one delivered twice in a row give the same findings, byte for byte
/// (their counts, evidence and baselines included), and every repeat of a judged record (a
/// non-human identity's, not a person's sign-in: README, "Only non-human identities are
/// judged") is counted under `duplicates`.
#[test]
fn detect_judges_a_record_delivered_twice_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    generate(&data, 12, 45, 4);
    let inputs = generated_inputs(&data);
    let twice = dir.path().join("twice");
    std::fs::create_dir(&twice).expect("mkdir");
    let mut doubled = Vec::new();
    let (mut records, mut judged) = (0usize, 0usize);
    for input in &inputs {
        let mut text = String::new();
        for line in lines(input) {
            text.push_str(&format!("{line}\n{line}\n"));
            records += 1;
            judged += judged_events(&line);
        }
        let path = twice.join(input.file_name().expect("a file"));
        std::fs::write(&path, text).expect("write");
        doubled.push(path);
    }
    let detect = |inputs: &[std::path::PathBuf], output: &std::path::Path| {
        let out = nhiwatch()
            .env("NHIWATCH_PSEUDONYM_KEY", "integration-tests-only-key")
            .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dead.ndjson"))
            .arg("detect")
            .arg("-i")
            .args(inputs)
            .arg("--registry")
            .arg(data.join("registry.toml"))
            .arg("-o")
            .arg(output)
            .output()
            .expect("runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let (a, b) = (dir.path().join("once.ndjson"), dir.path().join("twice.ndjson"));
    detect(&inputs, &a);
    let summary = detect(&doubled, &b);
    assert!(judged > 0 && judged <= records);
    // The generator already delivers some records twice (each right after the first): doubled,
    // such a record comes four times, three of them repeats.
    let expected = format!(
        "records {}  events {}  dead letters 0  late 0  duplicates {}  findings 16",
        2 * records,
        2 * records,
        judged + judged_repeats(&inputs)
    );
    assert!(summary.contains(&expected), "{expected}\n{summary}");
    // Evidence names the file and line it was read from, which differ between the two inputs.
    let findings = |path: &std::path::Path| -> Vec<serde_json::Value> {
        lines(path)
            .iter()
            .map(|line| {
                let mut f: serde_json::Value = serde_json::from_str(line).expect("finding JSON");
                for e in f["evidence"].as_array_mut().expect("evidence") {
                    e.as_object_mut().expect("object").remove("source");
                }
                f
            })
            .collect()
    };
    let once = findings(&a);
    assert_eq!(once.len(), 16);
    assert!(findings(&b) == once, "a record delivered twice is judged once");
}

/// Events of a record that the engine judges: a non-human identity's, not a person's sign-in
/// (README, "Only non-human identities are judged").
fn judged_events(line: &str) -> usize {
    normalize(line)
        .expect("generated records normalize")
        .iter()
        .filter(|e| e.identity_type.is_non_human() && e.kind != nhiwatch::event::EventKind::SignIn)
        .count()
}

/// Judged events of the records the generated `inputs` deliver a second time, right after the
/// first (at-least-once delivery).
fn judged_repeats(inputs: &[std::path::PathBuf]) -> usize {
    inputs
        .iter()
        .flat_map(|f| {
            let lines = lines(f);
            lines
                .windows(2)
                .filter(|w| w[0] == w[1])
                .map(|w| judged_events(&w[1]))
                .collect::<Vec<_>>()
        })
        .sum()
}

/// `nhiwatch bench` in a small configuration, so it keeps working: every phase ran and
/// reported what it measured (no assertion on time).
#[test]
fn the_benchmark_runs_every_phase_on_the_embedded_broker_against_kcat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = nhiwatch()
        .args([
            "bench",
            "--events",
            "5000",
            "--identities",
            "50",
            "--state-identities",
            "2000",
            "--latency-seconds",
            "1",
            "--partitions",
            "4",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| nhiwatch / kcat |"), "{stdout}");
    let f: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("JSON");
    assert_eq!(f["events"], 5000);
    assert_eq!(f["identities"], 50);
    assert_eq!(f["broker"], "embedded");
    assert_eq!(f["state_identities"], 2000);
    for key in [
        "produce_events_per_s",
        "kcat_events_per_s",
        "nhiwatch_events_per_s",
        "one_worker_events_per_s",
        "ratio_to_kcat",
        "paced_events_per_s",
        "state_bytes_per_identity",
    ] {
        assert!(f[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {}", f[key]);
    }
    assert!(f["paced_events"].as_u64().is_some_and(|n| n > 0));
    let latency: Vec<f64> = f["latency_ms"]
        .as_array()
        .expect("latency")
        .iter()
        .map(|v| v.as_f64().expect("ms"))
        .collect();
    assert!(
        latency[0] > 0.0 && latency[0] <= latency[1] && latency[1] <= latency[2],
        "{latency:?}"
    );
}

/// Issue 19: a `client_id` of `etl\n… WARN … FAKE ENTRY\x1b[31m` forged a log line and wrote raw
/// ESC and NUL to the log, the run summary and the tables. Through the real binary, `run` (whose
/// log reports the finding the identity raises) and `detect`: stdout and stderr hold no control
/// character but the lines' own newlines, nor a bidirectional override, and the log has the one
/// line it should.
#[test]
fn source_strings_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let forged = "etl\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\u{1b}[31m\0\u{202e}gpj.exe\u{9b}";
    let input = dir.path().join("forged.ndjson");
    let line = serde_json::json!({"ts": "2026-01-05T10:00:00Z", "request_id": "r-1", "client_id": forged,
        "method": "GET", "path": "/fhir/Patient/9", "status": 200});
    std::fs::write(&input, format!("{line}\n")).expect("write");
    let registry = dir.path().join("registry.toml");
    std::fs::write(&registry, "[[integration]]\nid = \"known\"\nowner = \"x\"\n").expect("write");
    let escaped = "etl\\n2026-01-05T10:00:00Z  WARN nhiwatch: FAKE ENTRY\\u{1b}[31m\\0\\u{202e}gpj.exe\\u{9b}";
    let clean = |what: &str, text: &str| {
        let bad: Vec<char> = text
            .chars()
            .filter(|&c| c != '\n' && nhiwatch::terminal::is_unsafe(c))
            .collect();
        assert!(bad.is_empty(), "{what} holds {bad:?}:\n{text}");
        assert!(
            !text.lines().any(|l| l.starts_with("2026-01-05T10:00:00Z")),
            "{what} has a forged line:\n{text}"
        );
    };

    let out = nhiwatch()
        .env("NHIWATCH_PSEUDONYM_KEY", "a-key-for-this-test-only")
        .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dl.ndjson"))
        .env("NHIWATCH__ENGINE__REGISTRY", &registry)
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--findings-out")
        .arg(dir.path().join("findings.ndjson"))
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    clean("run's stdout", &stdout);
    clean("run's stderr", &stderr);
    // A log line opens with its time and level.
    let logged: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words
                .next()
                .is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok())
                && words.next() == Some("WARN")
        })
        .collect();
    assert_eq!(logged.len(), 1, "one log line, for the finding:\n{stderr}");
    assert!(
        logged[0].contains(&format!("Unregistered identity {escaped} accessed ")),
        "{}",
        logged[0]
    );
    assert!(logged[0].contains(&format!("identity={escaped}")), "{}", logged[0]);
    assert!(
        stderr.lines().any(|l| l.trim_start().starts_with(escaped)),
        "the summary lists the identity, escaped:\n{stderr}"
    );
    // The log line, the summary (counts, one format, one identity) and one detector.
    assert_eq!(stderr.lines().count(), 8, "{stderr}");

    let out = nhiwatch()
        .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dl.ndjson"))
        .arg("detect")
        .arg("-i")
        .arg(&input)
        .arg("--registry")
        .arg(&registry)
        .arg("-o")
        .arg(dir.path().join("detected.ndjson"))
        .output()
        .expect("runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    clean("detect's stdout", &stdout);
    clean("detect's stderr", &stderr);
    assert!(stderr.contains("findings 1"), "{stderr}");
    // The findings file is data: the identity is in it as it came, JSON-escaped.
    let finding: serde_json::Value =
        serde_json::from_str(&read(&dir.path().join("detected.ndjson"))).expect("one finding");
    assert_eq!(finding["identity"]["id"], forged);
}

/// Issue 19: the dead letter (raw records, patient data among them) was created 0644, and the
/// findings journal likewise. Every file of records, events or findings that `run` and `detect`
/// create is their owner's only, and the archive's root directory too (the object store creates
/// its Parquet files as the umask allows).
#[test]
fn files_of_records_events_and_findings_are_created_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.ndjson");
    let good = r#"{"ts":"2026-01-05T10:00:00Z","request_id":"r-1","client_id":"lab-feed","method":"GET","path":"/fhir/Patient/9","status":200}"#;
    std::fs::write(&input, format!("{good}\nnot a record\n")).expect("write");
    let registry = dir.path().join("registry.toml");
    std::fs::write(&registry, "[[integration]]\nid = \"known\"\nowner = \"x\"\n").expect("write");
    let out = nhiwatch()
        .env("NHIWATCH_PSEUDONYM_KEY", "a-key-for-this-test-only")
        .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("run-dead.ndjson"))
        .env("NHIWATCH__HTTP__FINDINGS_JOURNAL", dir.path().join("journal.ndjson"))
        .env("NHIWATCH__ENGINE__REGISTRY", &registry)
        .env("NHIWATCH__ARCHIVE__LOCATION", dir.path().join("archive"))
        .arg("run")
        .arg("--input")
        .arg(&input)
        .arg("--findings-out")
        .arg(dir.path().join("findings.ndjson"))
        .arg("--events-out")
        .arg(dir.path().join("events.ndjson"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = nhiwatch()
        .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("detect-dead.ndjson"))
        .arg("detect")
        .arg("-i")
        .arg(&input)
        .arg("--registry")
        .arg(&registry)
        .arg("-o")
        .arg(dir.path().join("detected.ndjson"))
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |name: &str| {
        let meta = std::fs::metadata(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        meta.permissions().mode() & 0o777
    };
    for file in [
        "run-dead.ndjson",
        "journal.ndjson",
        "findings.ndjson",
        "events.ndjson",
        "detect-dead.ndjson",
        "detected.ndjson",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    assert_eq!(mode("archive"), 0o700);
    assert_eq!(lines(&dir.path().join("run-dead.ndjson")).len(), 1);
    assert_eq!(
        lines(&dir.path().join("journal.ndjson")).len(),
        1,
        "the unregistered identity's finding"
    );
}

/// `query`, `attest` and `replay` read an archive: a location with nothing archived (a typo, an
/// empty directory) is an error naming it, and is left as it was (before, each created the
/// directory and answered `count(*) = 0` or "0 identical, 0 different" with exit 0).
#[test]
fn read_only_commands_refuse_a_location_without_an_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("registry.toml");
    std::fs::write(&registry, "[[integration]]\nid = \"lab-interface\"\n").expect("registry");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("empty dir");
    for location in [dir.path().join("typo"), empty.clone()] {
        let loc = location.to_str().expect("utf-8");
        let reg = registry.to_str().expect("utf-8");
        let out_file = dir.path().join("out");
        let out = out_file.to_str().expect("utf-8");
        for args in [
            vec!["query", "--archive", loc, "SELECT count(*) FROM events"],
            vec!["attest", "--archive", loc, "--registry", reg, "--out", out],
            vec![
                "replay",
                "--archive",
                loc,
                "--registry",
                reg,
                "--from",
                "2026-01-01T00:00:00Z",
                "--to",
                "2026-01-02T00:00:00Z",
                "--output",
                out,
            ],
        ] {
            let run = nhiwatch()
                .args(&args)
                .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(
                !run.status.success(),
                "{args:?} succeeded: {}",
                String::from_utf8_lossy(&run.stdout)
            );
            assert!(
                stderr.contains(&format!("no archive at {loc}: no events/ or findings/ partitions")),
                "{args:?}: {stderr}"
            );
        }
        assert_eq!(location.exists(), location == empty, "{} created", location.display());
        assert_eq!(
            std::fs::read_dir(&empty).expect("dir").count(),
            0,
            "nothing created inside"
        );
    }
}

/// Times on the command line may be dates (the start of the day, UTC) or RFC 3339; a period
/// needs its unit; a refusal says which forms are accepted (before: "premature end of input"
/// for a date, and humantime's "30sec" suggestion for `--period 30`).
#[test]
fn dates_are_times_and_periods_need_a_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let missing = missing.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        let out = nhiwatch()
            .args(args)
            .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out = dir.path().join("out");
    let out = out.to_str().expect("utf-8");
    // Dates parse: the command gets as far as the archive.
    for (from, to) in [
        ("2026-01-15", "2026-01-16"),
        ("2026-01-15T00:00:00Z", "2026-01-16T00:00:00+01:00"),
    ] {
        let err = run(&[
            "replay",
            "--archive",
            missing,
            "--from",
            from,
            "--to",
            to,
            "--output",
            out,
        ]);
        assert!(err.contains("no archive at"), "{from} {to}: {err}");
    }
    let registry = dir.path().join("registry.toml");
    std::fs::write(&registry, "[[integration]]\nid = \"lab-interface\"\n").expect("registry");
    let registry = registry.to_str().expect("utf-8");
    let err = run(&[
        "attest",
        "--archive",
        missing,
        "--registry",
        registry,
        "--to",
        "2026-03-01",
        "--out",
        out,
    ]);
    assert!(err.contains("no archive at"), "{err}");
    let err = run(&["replay", "--from", "15/01/2026", "--to", "2026-01-16", "--output", out]);
    assert!(
        err.contains(
            "\"15/01/2026\" is not a time: give a date (2026-01-15, the start of that day UTC) or an RFC 3339 time"
        ),
        "{err}"
    );
    let err = run(&["attest", "--period", "30", "--out", out]);
    assert!(
        err.contains("\"30\" has no unit: give a number and a unit: 90d, 12weeks, 3months, 36h"),
        "{err}"
    );
    assert!(!err.contains("30sec"), "{err}");
}

/// The options a user carries from one command to the next are spelled the same everywhere:
/// `-o/--output` (with `--out` accepted) for output, `-c/--config` for configuration (demo and
/// check-config included); `run` and `detect` name the key they need in their help; `query`
/// names the `integrations` table and its saved queries.
#[test]
fn options_are_spelled_alike_across_commands() {
    let help = |command: &str| {
        let out = nhiwatch().args([command, "--help"]).output().expect("runs");
        assert!(out.status.success(), "{command}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for command in ["detect", "replay", "generate", "attest"] {
        let text = help(command);
        assert!(text.contains("-o, --output <"), "{command}: {text}");
        assert!(text.contains("`--out` is accepted too"), "{command}: {text}");
    }
    for command in ["run", "demo", "detect", "query", "replay", "attest", "check-config"] {
        assert!(help(command).contains("-c, --config <"), "{command}");
    }
    for command in ["run", "detect"] {
        assert!(help(command).contains("NHIWATCH_PSEUDONYM_KEY"), "{command}");
    }
    let top = String::from_utf8_lossy(&nhiwatch().arg("--help").output().expect("runs").stdout).into_owned();
    let query_line = top
        .lines()
        .find(|l| l.trim_start().starts_with("query"))
        .expect("query listed");
    assert!(query_line.contains("`integrations`"), "{query_line}");
    assert!(help("query").contains("--saved <SAVED>"));

    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, sub) in [("-o", "a"), ("--output", "b"), ("--out", "c")] {
        let out = dir.path().join(sub);
        let run = nhiwatch()
            .args(["generate", "--identities", "2", "--days", "1", flag])
            .arg(&out)
            .output()
            .expect("runs");
        assert!(run.status.success(), "{flag}: {}", String::from_utf8_lossy(&run.stderr));
        assert!(out.join("registry.toml").is_file(), "{flag}");
    }
    let config = dir.path().join("nhiwatch.toml");
    std::fs::write(&config, "[engine]\nlearning_days = 3\n").expect("config");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[engine]\nlearning_days = \"three\"\n").expect("config");
    for args in [
        vec!["check-config"],
        vec!["check-config", "-c"],
        vec!["check-config", "--config"],
    ] {
        let ok = nhiwatch().args(&args).arg(&config).output().expect("runs");
        assert!(ok.status.success(), "{args:?}: {}", String::from_utf8_lossy(&ok.stderr));
        let refused = nhiwatch().args(&args).arg(&bad).output().expect("runs");
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("engine.learning_days"),
            "{args:?}"
        );
    }
}

/// `detect` over input of which nothing could be read fails, naming where the records went;
/// a partly unreadable input succeeds and still names the dead letter.
#[test]
fn detect_names_the_dead_letter_and_fails_when_nothing_was_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.ndjson");
    let input = dir.path().join("input.ndjson");
    std::fs::write(&input, "not json\n{\"neither\": \"a known format\"}\n").expect("input");
    let detect = |input: &std::path::Path| {
        nhiwatch()
            .args(["detect", "-o", "-", "-i"])
            .arg(input)
            .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
            .env("NHIWATCH__DEAD_LETTER__PATH", &dead)
            .output()
            .expect("runs")
    };
    let out = detect(&input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "2 record(s) could not be read; each is in the dead letter, {}",
            dead.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: no event could be read from the input"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&dead).expect("dead letter").lines().count(), 2);

    // One readable record (the gateway line of the README's example format) among them: success.
    let gateway = r#"{"ts":"2026-01-05T10:00:00Z","client_id":"lab-interface","method":"GET","path":"/fhir/Observation","status":200}"#;
    std::fs::write(&input, format!("not json\n{gateway}\n")).expect("input");
    let out = detect(&input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 record(s) could not be read; each is in the dead letter"),
        "{stderr}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// GET `path` on 127.0.0.1:`port`: status and body, or None while nothing listens.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()))
}

/// `run` over files: an input that cannot be opened fails the run before the HTTP server
/// starts; reading stdin, `/readyz` is ready while it reads (before: "starting" forever, as
/// it waited for a Kafka lag that a file has not).
#[test]
fn a_file_run_checks_its_inputs_first_and_is_ready_while_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let run = |input: &str| {
        nhiwatch()
            .args(["run", "--input", input])
            .env("NHIWATCH_PSEUDONYM_KEY", "a key of at least sixteen bytes")
            .env("NHIWATCH__DEAD_LETTER__PATH", dir.path().join("dead.ndjson"))
            .env("NHIWATCH__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("NHIWATCH__LOG__FILTER", "info")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("runs")
    };
    let missing = dir.path().join("nope.ndjson");
    let out = run(missing.to_str().expect("utf-8")).wait_with_output().expect("ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nope.ndjson"), "{stderr}");
    assert!(!stderr.contains("Serving the HTTP API"), "{stderr}");

    let mut child = run("-");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Polled until ready (between the server's start and the first read it says "starting").
    let answer = loop {
        let answer = get(port, "/readyz");
        if answer.as_ref().is_some_and(|(status, _)| *status == 200) || std::time::Instant::now() > deadline {
            break answer.expect("an HTTP server within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer.1).expect("JSON"),
        serde_json::json!({"status": "ready"})
    );
    drop(child.stdin.take());
    let status = child.wait().expect("ends");
    assert!(status.success());
}

/// Every `nhiwatch …` command in the README's shell examples parses as the command line it
/// shows (options spelled as the commands take them today); environment assignments before it
/// and comments after it are not part of it.
#[test]
fn the_readme_examples_are_command_lines_nhiwatch_takes() {
    use clap::Parser as _;
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let line = line.split(" #").next().unwrap_or_default().trim_end();
        if let Some(start) = line.strip_suffix('\\') {
            pending.push_str(start);
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let words: Vec<&str> = whole
            .split_whitespace()
            .skip_while(|w| w.contains('=') && !w.starts_with('-'))
            .collect();
        if words.first() == Some(&"nhiwatch") {
            commands.push(words.iter().map(|w| w.trim_matches('"').to_owned()).collect::<Vec<_>>());
        }
    }
    assert!(commands.len() >= 8, "{commands:?}");
    // What the README says of the demo is what the code does.
    let words = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(&format!(
            "the demo's reorder bound is {} hours",
            nhiwatch::demo::REORDER_HOURS
        )),
        "the README's reorder bound"
    );
    for args in &commands {
        if let Err(e) = nhiwatch::cli::Cli::try_parse_from(args) {
            panic!("README: `{}` does not parse: {e}", args.join(" "));
        }
    }
}

/// A bad value is blamed on where it came from: the environment variable that set it (before:
/// "defaults" or the configuration file); paths in a configuration file are relative to that
/// file, and a bad file it names is reported with the key and the file that named it.
#[test]
fn errors_name_the_source_of_the_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).expect("dir");
    let config = conf_dir.join("nhiwatch.toml");
    std::fs::write(&config, "[engine]\nregistry = \"registry.toml\"\n").expect("config");
    std::fs::write(
        conf_dir.join("registry.toml"),
        "[[integration]]\nid = \"lab-interface\"\n",
    )
    .expect("registry");
    let check = |env: &[(&str, &str)]| {
        let mut cmd = nhiwatch();
        // Started elsewhere: the registry is found beside the configuration, not here.
        cmd.current_dir(dir.path()).arg("check-config").arg(&config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = check(&[]);
    assert!(ok, "{err}");

    let (ok, err) = check(&[("NHIWATCH_PSEUDONYM_KEY", "short")]);
    assert!(!ok);
    assert!(
        err.contains(
            "environment variable NHIWATCH_PSEUDONYM_KEY: key `pseudonymisation.key`: must be at least 16 bytes"
        ),
        "{err}"
    );
    let (ok, err) = check(&[("NHIWATCH__ENGINE__LEARNING_DAYS", "three")]);
    assert!(!ok);
    assert!(
        err.contains("environment variable NHIWATCH__ENGINE__LEARNING_DAYS: key `engine.learning_days`"),
        "{err}"
    );

    std::fs::write(conf_dir.join("registry.toml"), "[[integration]]\nid = 7\n").expect("registry");
    let (ok, err) = check(&[]);
    assert!(!ok);
    assert!(
        err.contains(&format!("engine.registry (set in {}): ", config.display())),
        "{err}"
    );
    assert!(
        err.contains(&conf_dir.join("registry.toml").display().to_string()),
        "{err}"
    );
}
