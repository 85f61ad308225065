//! Micro-benchmarks of the receiver's per-request work, one step at a time, on every committed event
//! fixture: signature verification over the raw bytes, event parsing, building the `WebhookDelivery`, and
//! the deterministic delivery/Job names.
//!
//! Run: `cargo bench --bench hot_path` (a few seconds per group; criterion's own flags work after `--`,
//! e.g. `cargo bench --bench hot_path -- signature`). See BENCHMARKS.md for the numbers and what they mean.

use asc_webhook_operator::asc::event::WebhookEvent;
use asc_webhook_operator::asc::signature;
use asc_webhook_operator::naming;
use asc_webhook_operator::receiver::record::build_delivery;
use asc_webhook_operator::resources::{SecretKeySelector, WebhookRoute, WebhookRouteSpec};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

const SECRET: &[u8] = b"k3tSx0mJ7vQ2pL9wR4zN8cF1bH6dY5aE";

/// Every event fixture, as `(file stem, raw bytes)`, in name order.
fn fixtures() -> Vec<(String, Bytes)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/asc/events");
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("fixture names are UTF-8")
                .to_owned();
            let raw = std::fs::read(&path).expect("fixture is readable");
            (stem, Bytes::from(raw))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

fn route() -> WebhookRoute {
    let mut route = WebhookRoute::new(
        "release",
        WebhookRouteSpec {
            secret_ref: SecretKeySelector {
                name: "asc-webhook".into(),
                key: "secret".into(),
                namespace: None,
            },
            credential_ref: None,
            rules: vec![],
            delivery_history_limit: None,
        },
    );
    route.metadata.namespace = Some("ios".into());
    route.metadata.uid = Some("7d3c1e4a-2f4e-4b9d-8c5f-1a2b3c4d5e6f".into());
    route
}

fn signature_verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("signature/verify");
    for (name, body) in fixtures() {
        let header = signature::sign(SECRET, &body);
        // Guard against benchmarking the error path by accident.
        signature::verify(SECRET, &body, Some(&header)).expect("fixture signs and verifies");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            b.iter(|| {
                signature::verify(black_box(SECRET), black_box(body), Some(black_box(&header)))
            })
        });
    }
    group.finish();

    // The refusal paths a flood of forged requests takes.
    let body = fixtures().remove(0).1;
    let wrong = signature::sign(b"not-the-secret", &body);
    let mut group = c.benchmark_group("signature/refuse");
    group.bench_function("mismatch", |b| {
        b.iter(|| {
            signature::verify(black_box(SECRET), black_box(&body), Some(black_box(&wrong)))
                .unwrap_err()
        })
    });
    group.bench_function("malformed", |b| {
        b.iter(|| {
            signature::verify(
                black_box(SECRET),
                black_box(&body),
                Some(black_box("sha1=00")),
            )
            .unwrap_err()
        })
    });
    group.finish();
}

fn event_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("event/parse");
    for (name, body) in fixtures() {
        WebhookEvent::parse(body.clone()).expect("fixture parses");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(&name), &body, |b, body| {
            // Cloning `Bytes` is a reference-count increment, as in the receiver.
            b.iter(|| WebhookEvent::parse(black_box(body.clone())).expect("parses"))
        });
    }
    group.finish();
}

fn record_build_delivery(c: &mut Criterion) {
    let route = route();
    let mut group = c.benchmark_group("record/build_delivery");
    for (name, body) in fixtures() {
        let event = WebhookEvent::parse(body).expect("fixture parses");
        group.bench_with_input(BenchmarkId::from_parameter(&name), &event, |b, event| {
            b.iter(|| {
                build_delivery(
                    black_box(&route),
                    black_box(event),
                    Some("b6c2a1d0-3e4f-4a5b-8c7d-9e0f1a2b3c4d"),
                    "2026-01-01T00:00:00Z",
                )
            })
        });
    }
    group.finish();
}

fn names(c: &mut Criterion) {
    let mut group = c.benchmark_group("naming");
    let event_id = "0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e";
    group.bench_function("delivery_name", |b| {
        b.iter(|| naming::delivery_name(black_box("release"), black_box(event_id)))
    });
    group.bench_function("job_name", |b| {
        b.iter(|| {
            naming::job_name(
                black_box("release"),
                black_box("submit"),
                black_box(event_id),
            )
        })
    });
    // A route name long enough that the Job name must be shortened to fit a label.
    let long_route = "a-very-long-route-name-that-someone-chose-for-their-release-pipeline";
    group.bench_function("job_name/truncated", |b| {
        b.iter(|| {
            naming::job_name(
                black_box(long_route),
                black_box("submit"),
                black_box(event_id),
            )
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------------------
// PLACE FOR: rule matching (`controllers::matching`) and Job building (`actions::job`).
// Those modules are being written; add `rules/match` and `job/build` groups here once they are exported
// from the library (`pub mod controllers; pub mod actions;` in src/lib.rs), and list them in
// `criterion_group!` below.
// ---------------------------------------------------------------------------------------------------------

fn config() -> Criterion {
    // Short by default so the whole file runs in well under a minute on a 2-core machine; criterion's
    // `--measurement-time`/`--warm-up-time` flags still override these.
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = signature_verify, event_parse, record_build_delivery, names
}
criterion_main!(hot_path);
