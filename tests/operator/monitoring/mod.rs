//! What the operator ships for monitoring: the alert rules (charts/…/files/prometheus-rules.yaml, also
//! rendered as a PrometheusRule), the Grafana dashboard (charts/…/files/grafana-dashboard.json) and the
//! metrics they read. promtool (Debian's `prometheus` package, installed by `.ci/install-tools`) checks
//! the rules, runs their unit tests (tests/fixtures/monitoring/alerts_test.yaml) and lints a scrape; every
//! PromQL expression must name only metric families a scrape of the operator declares, so a renamed
//! metric breaks a test instead of a dashboard.

mod scenario;

use crate::harness::ROOT;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const RULES: &str = "charts/asc-webhook-operator/files/prometheus-rules.yaml";
pub const DASHBOARD: &str = "charts/asc-webhook-operator/files/grafana-dashboard.json";
pub const RULE_TESTS: &str = "tests/fixtures/monitoring/alerts_test.yaml";
/// Unit tests of the opt-in release timing alerts, with the chart's default thresholds.
pub const RELEASE_TIMING_RULE_TESTS: &str = "tests/fixtures/monitoring/release_timing_test.yaml";
/// The dashboard's release timing panels: their metrics have series only once builds and versions were
/// timed, so tests/operator/release_timing.rs checks them against the scrapes of a whole release.
pub const RELEASE_TIMING_PANELS: &[&str] = &[
    "Build processing time",
    "Review: waiting and in review",
    "Time in current state (in flight)",
    "State timeline of recent versions",
    "Runner time saved",
];

/// promtool from PATH (`bash .ci/test` puts it there). Missing: a failure under CI (`CI=true`, or
/// `ASC_REQUIRE_TOOLS` set, as `.ci/test` does), else `None` and a loud note, so a laptop without
/// Debian's package still runs the other tests.
pub fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("CI").is_ok_and(|v| v == "true")
            || std::env::var_os("ASC_REQUIRE_TOOLS").is_some();
        assert!(
            !required,
            "promtool not found on PATH: run `bash .ci/test` (its install-tools installs Debian's \
             prometheus package, which ships /usr/bin/promtool)"
        );
        eprintln!(
            "SKIPPING the promtool part of this test: promtool is not on PATH (see .ci/install-tools)"
        );
    }
    found
}

/// Runs promtool with `args` in `dir`, feeding `stdin`; panics with its output unless it succeeds.
pub fn run_promtool(promtool: &Path, dir: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operator serves OpenMetrics text; promtool 2.42 lints only the Prometheus 0.0.4 text format. The
/// one difference that matters here is naming: an OpenMetrics counter family `x` has samples `x_total`,
/// which 0.0.4 names its family by. `# UNIT` and `# EOF` have no 0.0.4 form and are dropped.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Family → type, from the `# TYPE` lines of a scrape.
pub fn families(scrape: &str) -> BTreeMap<String, String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// Whether `sample` is a series name the family `family` of type `kind` exposes.
fn exposes(family: &str, kind: &str, sample: &str) -> bool {
    let Some(suffix) = sample.strip_prefix(family) else {
        return false;
    };
    match kind {
        "counter" => suffix == "_total",
        "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
        "info" => suffix == "_info",
        _ => suffix.is_empty(),
    }
}

/// Series names of `sample_names` no family of `scrape` exposes.
pub fn unknown_names<'a>(scrape: &str, sample_names: &'a BTreeSet<String>) -> Vec<&'a str> {
    let families = families(scrape);
    sample_names
        .iter()
        .filter(|n| !families.iter().any(|(f, k)| exposes(f, k, n)))
        .map(String::as_str)
        .collect()
}

/// Keywords that are neither metrics nor functions (besides [`LABEL_LISTS`]).
const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "inf", "nan"];
/// Keywords followed by a parenthesised list of label names, not an expression.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Drops string literals and the insides of `{…}` (matchers) and `[…]` (ranges), which hold label names
/// and durations, never metric names.
fn strip_literals(expr: &str) -> String {
    let mut out = String::new();
    let (mut quote, mut depth) = (None::<char>, 0usize);
    let mut chars = expr.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'' | '`') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth = depth.saturating_sub(1),
            (None, c) if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The metric names a PromQL expression selects (Grafana's `$__…` range variables allowed): every
/// identifier that is neither a function or aggregation (followed by `(` or `by`/`without`), nor a
/// keyword, nor inside a label list.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = strip_literals(expr);
    let chars: Vec<char> = text.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if ident(c) || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if !(c.is_ascii_digit() || c == '$') {
                tokens.push(word);
            }
        } else if c == '(' || c == ')' {
            tokens.push(c.to_string());
            i += 1;
        } else {
            i += 1;
        }
    }
    let mut names = BTreeSet::new();
    let mut skip_list = false;
    let mut depth_of_list = 0usize;
    let mut depth = 0usize;
    for (n, t) in tokens.iter().enumerate() {
        let next = tokens.get(n + 1).map(String::as_str);
        if t == "(" {
            depth += 1;
            continue;
        }
        if t == ")" {
            depth = depth.saturating_sub(1);
            skip_list = skip_list && depth > depth_of_list;
            continue;
        }
        if skip_list {
            continue;
        }
        if LABEL_LISTS.contains(&t.as_str()) {
            skip_list = true;
            depth_of_list = depth;
            continue;
        }
        let function = matches!(next, Some("(" | "by" | "without"));
        if !function && !KEYWORDS.contains(&t.as_str()) {
            names.insert(t.clone());
        }
    }
    names
}

/// The chart's PrometheusRule rendered with the release timing alerts and `set` (more `--set` values).
pub fn release_timing_rule(set: &str) -> Value {
    let set = format!("prometheusRule.enabled=true,prometheusRule.releaseTiming.enabled=true{set}");
    crate::chart::template(&["--set", &set])
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule")
}

/// Every PromQL expression of the opt-in release timing alerts (default thresholds), by alert name.
pub fn release_timing_rule_expressions() -> Vec<(String, String)> {
    let rule = release_timing_rule("");
    rule["spec"]["groups"][1]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let name = r["alert"].as_str().unwrap().to_owned();
            (name, r["expr"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every PromQL expression of the alert rules, by alert name.
pub fn rule_expressions() -> BTreeMap<String, String> {
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap())
            .unwrap();
    let mut out = BTreeMap::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().or(rule["record"].as_str()).unwrap();
            out.insert(name.to_owned(), rule["expr"].as_str().unwrap().to_owned());
        }
    }
    out
}

pub fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(ROOT).join(DASHBOARD)).unwrap())
        .expect("the dashboard is valid JSON")
}

/// Every query of the dashboard: panel targets, and the selectors of `label_values(…, label)` variables.
pub fn dashboard_expressions() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            out.push((title.to_owned(), t["expr"].as_str().unwrap().to_owned()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(inner) = q.and_then(|q| q.strip_prefix("label_values(")) {
            let selector = inner.rsplit_once(',').map(|(s, _)| s).unwrap_or(inner);
            out.push((format!("variable {}", v["name"]), selector.to_owned()));
        }
    }
    out
}

#[test]
fn the_metric_name_reader_skips_functions_labels_strings_and_ranges() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"$ns/b_total"}[$__rate_interval]))) > 30 and on(job) max without (pod) (c) or sum(d_total offset 5m)"#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["a_bucket".into(), "c".into(), "d_total".into()])
    );
}

#[test]
fn a_sample_name_must_fit_its_family_type() {
    let scrape =
        "# TYPE x_requests counter\n# TYPE x_lag_seconds histogram\n# TYPE x_up gauge\n# EOF\n";
    let asked: BTreeSet<String> = [
        "x_requests_total",
        "x_requests",
        "x_lag_seconds_bucket",
        "x_up",
        "x_up_total",
        "y",
    ]
    .map(String::from)
    .into();
    assert_eq!(
        unknown_names(scrape, &asked),
        ["x_requests", "x_up_total", "y"]
    );
}

#[test]
fn classic_text_names_counter_families_by_their_samples() {
    let om = "# HELP a Things.\n# TYPE a counter\n# UNIT a seconds\na_total 1\n# TYPE b gauge\nb 2\n# EOF\n";
    assert_eq!(
        classic_text(om),
        "# HELP a_total Things.\n# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 2\n"
    );
}

#[test]
fn the_dashboard_is_valid_json_with_a_title_and_a_unit_on_every_panel() {
    let d = dashboard();
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 7, "the panels the README describes");
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let unit = p["fieldConfig"]["defaults"]["unit"].as_str();
        assert!(unit.is_some_and(|u| !u.is_empty()), "{title}: no unit");
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "{title}: duplicate id"
        );
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "{title}: no query"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the chosen data source"
        );
    }
    let vars: BTreeSet<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "namespace", "route"] {
        assert!(vars.contains(v), "templated on {v}");
    }
}

#[test]
fn every_query_selects_a_metric_and_filters_by_the_chosen_namespace_and_route() {
    for (title, expr) in dashboard_expressions() {
        assert!(!metric_names(&expr).is_empty(), "{title}: {expr}");
    }
    let per_route = [
        "Events received per route and type",
        "Deliveries by phase",
        "Signed POST → action started",
        "Events recovered by catch-up",
        "Route and webhook state",
    ]
    .iter()
    .chain(RELEASE_TIMING_PANELS)
    .copied()
    .collect::<Vec<_>>();
    for (title, expr) in dashboard_expressions() {
        if per_route.contains(&title.as_str()) {
            assert!(
                expr.contains("$namespace") && expr.contains("$route"),
                "{title} follows the namespace and route variables: {expr}"
            );
        }
    }
}

/// The heading anchors of docs/RUNBOOK.md (GitHub's rule for plain-word headings: lower case).
pub fn runbook_anchors() -> BTreeSet<String> {
    std::fs::read_to_string(Path::new(ROOT).join("docs/RUNBOOK.md"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect()
}

#[test]
fn every_alert_names_its_object_and_links_a_runbook_section() {
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap())
            .unwrap();
    let anchors = runbook_anchors();
    let tests = std::fs::read_to_string(Path::new(ROOT).join(RULE_TESTS)).unwrap();
    let mut alerts = 0;
    for rule in rules["groups"][0]["rules"].as_array().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        alerts += 1;
        let a = &rule["annotations"];
        assert!(
            a["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}"
        );
        let description = a["description"].as_str().unwrap();
        assert!(
            ["$labels.route", "$labels.credential", "$labels.job"]
                .iter()
                .any(|l| description.contains(l)),
            "{name}: the description names what is wrong"
        );
        let url = a["runbook_url"].as_str().unwrap();
        let anchor = url.strip_prefix("docs/RUNBOOK.md#").unwrap();
        assert!(
            anchors.contains(anchor),
            "{name}: no RUNBOOK section {anchor}"
        );
        assert_eq!(anchor, name.to_lowercase(), "{name}: its own section");
        assert!(rule["labels"]["severity"].is_string(), "{name}: a severity");
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has promtool unit tests"
        );
    }
    assert!(alerts >= 8, "the alerts issue 26 lists");
}

/// `promtool check rules` and `promtool test rules` on `rules` (a rule file's text), next to the unit
/// tests, as `rules.yaml`.
pub fn check_and_test_rules(rules: &str) {
    check_and_test_rules_with(rules, RULE_TESTS);
}

/// [`check_and_test_rules`] with the unit tests of `tests` (a path from the repository root).
pub fn check_and_test_rules_with(rules: &str, tests: &str) {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    std::fs::copy(
        Path::new(ROOT).join(tests),
        dir.path().join("alerts_test.yaml"),
    )
    .unwrap();
    run_promtool(
        &promtool,
        dir.path(),
        &["check", "rules", "rules.yaml"],
        None,
    );
    run_promtool(
        &promtool,
        dir.path(),
        &["test", "rules", "alerts_test.yaml"],
        None,
    );
}

#[test]
fn the_plain_rule_file_passes_promtool_check_and_its_unit_tests() {
    check_and_test_rules(&std::fs::read_to_string(Path::new(ROOT).join(RULES)).unwrap());
}
