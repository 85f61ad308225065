//! Replays the committed fuzz seeds (`fuzz/corpus/<target>/seed-*`) and any saved crash inputs
//! (`fuzz/regressions/<target>/*`) through the very checks the cargo-fuzz targets run, so the properties hold
//! under a plain `cargo test` on every machine, and a crash found by fuzzing stays fixed once its input is
//! saved. Each seed's name states the outcome it must have (see `scripts/make-fuzz-seeds.py`).

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `(file name, bytes)` of every file in `dir` whose name starts with `prefix`, sorted by name.
fn inputs(dir: &Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_owned();
            name.starts_with(prefix)
                .then(|| (name, std::fs::read(&p).expect("readable input")))
        })
        .collect();
    out.sort();
    out
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    inputs(&Path::new(ROOT).join("fuzz/corpus").join(target), "seed-")
}

fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    inputs(&Path::new(ROOT).join("fuzz/regressions").join(target), "")
}

/// A fuzz target's body: panics on a broken property, returns which way the input went.
type Check = fn(&[u8]) -> bool;

/// Runs `check` on every seed and asserts the outcome its name promises.
fn replay_seeds(target: &str, check: Check, yes: &str, no: &str, at_least: usize) {
    let seeds = seeds(target);
    assert!(
        seeds.len() >= at_least,
        "{target}: {} seeds, expected at least {at_least}; run scripts/make-fuzz-seeds.py",
        seeds.len()
    );
    for (name, data) in &seeds {
        let expected = if name.starts_with(yes) || name.ends_with(yes) {
            true
        } else if name.starts_with(no) || name.ends_with(no) {
            false
        } else {
            panic!("{target}/{name}: the name must state the expected outcome ({yes} or {no})")
        };
        assert_eq!(check(data), expected, "{target}/{name}");
    }
}

#[test]
fn signature_seeds_hold_the_properties_and_verify_as_named() {
    replay_seeds(
        "signature_header",
        checks::signature_header,
        "-valid",
        "-invalid",
        20,
    );
}

#[test]
fn every_published_signature_vector_is_a_seed() {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/asc/signature-vectors.json"))
            .expect("vectors");
    let vectors: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let count = vectors["vectors"].as_array().expect("vector list").len();
    let from_vectors = seeds("signature_header")
        .iter()
        .filter(|(name, _)| name.starts_with("seed-v"))
        .count();
    assert_eq!(from_vectors, count, "rerun scripts/make-fuzz-seeds.py");
}

#[test]
fn event_seeds_hold_the_properties_and_parse_as_named() {
    replay_seeds(
        "event_parse",
        checks::event_parse,
        "seed-ok-",
        "seed-err-",
        20,
    );
}

#[test]
fn every_event_fixture_is_an_event_seed_byte_for_byte() {
    let seeds = seeds("event_parse");
    let dir: PathBuf = Path::new(ROOT).join("tests/fixtures/asc/events");
    let mut fixtures = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("name");
        let want = std::fs::read(&path).expect("fixture");
        let seed = seeds
            .iter()
            .find(|(name, _)| name == &format!("seed-ok-{stem}"))
            .unwrap_or_else(|| panic!("no seed for {stem}; rerun scripts/make-fuzz-seeds.py"));
        assert_eq!(seed.1, want, "seed for {stem} differs from the fixture");
        fixtures += 1;
    }
    assert!(fixtures >= 10);
}

#[test]
fn rule_matching_seeds_hold_the_properties_and_match_as_named() {
    replay_seeds(
        "rule_matching",
        checks::rule_matching,
        "seed-match-",
        "seed-nomatch-",
        15,
    );
}

#[test]
fn saved_fuzz_findings_stay_fixed() {
    let targets: [(&str, Check); 3] = [
        ("signature_header", checks::signature_header),
        ("event_parse", checks::event_parse),
        ("rule_matching", checks::rule_matching),
    ];
    for (target, check) in targets {
        for (name, data) in regressions(target) {
            // A regression input only has to pass the target's properties without panicking.
            let _ = std::panic::catch_unwind(|| check(&data))
                .unwrap_or_else(|_| panic!("fuzz/regressions/{target}/{name} fails again"));
        }
    }
}

/// Found by the `event_parse` fuzzer (`fuzz/regressions/event_parse/invalid-utf8-in-unknown-field`): a body
/// with a byte sequence that is not UTF-8 inside a field the parser skips (`"attri[utes": {...}`) was
/// accepted, because serde_json does not validate what it skips; `raw_str()` then fell back to `""`, so the
/// receiver answered 202 and stored the delivery with an empty payload. RFC 8259 requires UTF-8, and
/// docs/RESOURCES.md answers "body not an ASC event (bad JSON)" with 400.
#[test]
fn a_body_that_is_not_utf8_is_refused_not_stored_empty() {
    let path = Path::new(ROOT).join("fuzz/regressions/event_parse/invalid-utf8-in-unknown-field");
    let body = std::fs::read(path).expect("regression input");
    assert!(
        std::str::from_utf8(&body).is_err(),
        "the input must stay non-UTF-8"
    );
    let parsed = asc_webhook_operator::asc::event::WebhookEvent::parse(bytes::Bytes::from(body));
    assert!(
        parsed.is_err(),
        "accepted a body that is not UTF-8; its payload would be stored as \"\""
    );
}
