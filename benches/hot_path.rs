//! Micro-benchmarks of the per-event work, one step at a time, on every committed event fixture: signature
//! verification over the raw bytes, event parsing, building the `WebhookDelivery`, the deterministic
//! delivery/Job names, rule matching and Job building against the rules in `examples/`, and the whole
//! receiver handler in process next to a bare axum handler.
//!
//! Run: `cargo bench --bench hot_path` (a few seconds per group; criterion's own flags work after `--`,
//! e.g. `cargo bench --bench hot_path -- signature`). See BENCHMARKS.md for the numbers and what they mean.

mod support;

use asc_webhook_operator::actions::EventContext;
use asc_webhook_operator::actions::job::{ApiKeyEnv, build_job};
use asc_webhook_operator::asc::event::WebhookEvent;
use asc_webhook_operator::asc::signature;
use asc_webhook_operator::controllers::matching::{EventFacts, matching_rules};
use asc_webhook_operator::metrics::{Metrics, OutcomeLabels, RequestLabels};
use asc_webhook_operator::naming;
use asc_webhook_operator::receiver::record::build_delivery;
use asc_webhook_operator::receiver::secret_cache::{SecretCache, SecretId};
use asc_webhook_operator::receiver::{Answer, Receiver, ReceiverConfig};
use asc_webhook_operator::resources::route::Rule;
use asc_webhook_operator::resources::{SecretKeySelector, WebhookRoute};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::BodyExt;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::{BodyTemplate, MemSink, NAMESPACE, ROUTE, SECRET, WRONG_SECRET, event_id};
use tower::ServiceExt;

/// Every event fixture, as `(file stem, raw bytes)`, in name order.
fn fixtures() -> Vec<(String, Bytes)> {
    let dir = support::events_dir();
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
    support::route(NAMESPACE, ROUTE, 1)
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

/// The whole receiver handler against the bare handler, in process (no socket, no HTTP parsing): the
/// receiver's own cost per request, all checks and the in-memory store included. Building and signing each
/// request happens in criterion's untimed setup.
fn handler_in_process(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (routes, secrets) = support::backends(1000);
    let sink = Arc::new(MemSink::default());
    let receiver = Receiver::new(
        Arc::new(routes),
        Arc::new(secrets),
        sink.clone(),
        ReceiverConfig::default(),
        Metrics::new(),
    )
    .router();
    let bare = support::bare_router();
    let template = BodyTemplate::fixture("build-upload-complete");
    let next = AtomicU64::new(1);
    let request = |id: &str, secret: &[u8]| {
        let body = template.body(id);
        Request::post(format!("/hooks/{NAMESPACE}/{ROUTE}"))
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .header(signature::HEADER, signature::sign(secret, &body))
            .header("x-apple-request-uuid", id)
            .body(Body::from(body))
            .expect("request")
    };
    let fresh = || request(&event_id(next.fetch_add(1, Ordering::Relaxed)), SECRET);
    let send = |router: &axum::Router, req: Request<Body>, want: StatusCode| {
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await.expect("infallible");
            assert_eq!(response.status(), want);
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        }
    };

    let mut group = c.benchmark_group("handler/in_process");
    group.bench_function("bare", |b| {
        b.to_async(&runtime).iter_batched(
            fresh,
            |req| send(&bare, req, StatusCode::OK),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("receiver/new_event", |b| {
        b.to_async(&runtime).iter_batched(
            fresh,
            |req| send(&receiver, req, StatusCode::ACCEPTED),
            BatchSize::SmallInput,
        )
    });
    let stored = sink.len();
    assert!(stored > 0, "no delivery was stored");
    let repeated = event_id(0);
    runtime.block_on(send(
        &receiver,
        request(&repeated, SECRET),
        StatusCode::ACCEPTED,
    ));
    group.bench_function("receiver/duplicate_event", |b| {
        b.to_async(&runtime).iter_batched(
            || request(&repeated, SECRET),
            |req| send(&receiver, req, StatusCode::OK),
            BatchSize::SmallInput,
        )
    });
    // Past the per-route budget of failed signatures every forged request is a cheap 429.
    for _ in 0..ReceiverConfig::default().failed_signatures_per_minute + 1 {
        let forged = request(
            &event_id(next.fetch_add(1, Ordering::Relaxed)),
            WRONG_SECRET,
        );
        runtime
            .block_on(receiver.clone().oneshot(forged))
            .expect("infallible");
    }
    group.bench_function("receiver/forged_rate_limited", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                request(
                    &event_id(next.fetch_add(1, Ordering::Relaxed)),
                    WRONG_SECRET,
                )
            },
            |req| send(&receiver, req, StatusCode::TOO_MANY_REQUESTS),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// The receiver's other per-request steps, one by one, to account for the in-process handler's time.
fn handler_pieces(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("handler/pieces");
    group.bench_function("now_rfc3339", |b| {
        b.iter(asc_webhook_operator::time::now_rfc3339)
    });
    let metrics = Metrics::new();
    // The label is made once per route (`receiver::routes`); a request clones the `Arc`.
    let label: Arc<str> = Arc::from(format!("{NAMESPACE}/{ROUTE}"));
    group.bench_function("metrics/count_and_time_request", |b| {
        b.iter(|| {
            let route = black_box(&label).clone();
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route,
                    outcome: "accepted",
                })
                .inc();
            metrics
                .request_duration
                .get_or_create(&OutcomeLabels {
                    outcome: "accepted",
                })
                .observe(black_box(0.000_2));
        })
    });
    let name = naming::delivery_name(ROUTE, "0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e");
    group.bench_function("answer/accepted_json", |b| {
        b.to_async(&runtime).iter(|| async {
            let response = Answer::Accepted(black_box(name.clone())).into_response();
            response.into_body().collect().await.expect("body")
        })
    });
    let (_, secrets) = support::backends(1000);
    let cache = SecretCache::new(Arc::new(secrets), Duration::from_secs(30), Metrics::new());
    let secret = SecretId::new(NAMESPACE, "asc-webhook");
    group.bench_function("secret_cache/hit", |b| {
        b.to_async(&runtime).iter(|| async {
            cache
                .get(black_box(&secret), "secret")
                .await
                .expect("secret")
        })
    });
    group.bench_function("body_read_timeout_wrapper", |b| {
        b.to_async(&runtime).iter(|| async {
            tokio::time::timeout(Duration::from_secs(10), async { black_box(1) })
                .await
                .expect("in time")
        })
    });
    group.finish();
}

/// The rules of every route in `examples/` (the five workflows of README.md).
fn example_routes() -> Vec<WebhookRoute> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut routes: Vec<WebhookRoute> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path().join("route.yaml");
            let text = std::fs::read_to_string(&path).ok()?;
            Some(serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        })
        .collect();
    routes.sort_by_key(|r| r.metadata.name.clone());
    assert!(!routes.is_empty(), "no example routes in {}", dir.display());
    routes
}

/// Rule matching (`controllers::matching`): every fixture event against every rule of every example route.
fn rule_matching(c: &mut Criterion) {
    let rules: Vec<Rule> = example_routes()
        .into_iter()
        .flat_map(|r| r.spec.rules)
        .collect();
    let events: Vec<WebhookEvent> = fixtures()
        .into_iter()
        .map(|(_, body)| WebhookEvent::parse(body).expect("fixture parses"))
        .collect();
    let facts: Vec<EventFacts<'_>> = events
        .iter()
        .map(|e| EventFacts {
            event_type: e.event_type.as_str(),
            new_state: e.new_state.as_deref(),
            old_state: e.old_state.as_deref(),
        })
        .collect();
    let matched: usize = facts.iter().map(|f| matching_rules(&rules, *f).len()).sum();
    assert!(matched > 0, "no fixture matches any example rule");
    let mut group = c.benchmark_group("rules");
    group.throughput(Throughput::Elements(facts.len() as u64));
    group.bench_function(
        format!("match/{}_events_x_{}_rules", facts.len(), rules.len()),
        |b| {
            b.iter(|| {
                facts
                    .iter()
                    .map(|f| matching_rules(black_box(&rules), black_box(*f)).len())
                    .sum::<usize>()
            })
        },
    );
    group.finish();
}

/// Job building (`actions::job::build_job`): the submit-after-processing example's Job for a COMPLETE build
/// upload, with the fastlane API-key variables injected.
fn job_building(c: &mut Criterion) {
    let routes = example_routes();
    let (route, rule, template) = routes
        .iter()
        .find_map(|r| {
            r.spec.rules.iter().find_map(|rule| {
                let job = rule.job.as_ref()?;
                Some((r, rule.name.clone(), job.template.clone()))
            })
        })
        .expect("an example route with a job rule");
    let mut route = route.clone();
    route.metadata.namespace = Some(NAMESPACE.into());
    route.metadata.uid = Some("7d3c1e4a-2f4e-4b9d-8c5f-1a2b3c4d5e6f".into());
    let body =
        std::fs::read(support::events_dir().join("build-upload-complete.json")).expect("fixture");
    let event = WebhookEvent::parse(Bytes::from(body)).expect("fixture parses");
    let delivery = build_delivery(&route, &event, None, "2026-01-01T00:00:00Z");
    let ctx = EventContext {
        delivery: &delivery,
        enrichment: None,
    };
    let api_key = ApiKeyEnv {
        key_id: "TEST2K9Q7X".into(),
        issuer_id: Some("57246542-96fe-1a63-e053-0824d011072a".into()),
        private_key: SecretKeySelector {
            name: "team-key".into(),
            key: "AuthKey.p8".into(),
            namespace: None,
        },
    };
    build_job(&rule, &template, &ctx, Some(&api_key)).expect("example template builds");
    let mut group = c.benchmark_group("job");
    group.bench_function("build/submit_after_processing", |b| {
        b.iter(|| {
            build_job(
                black_box(&rule),
                black_box(&template),
                black_box(&ctx),
                Some(&api_key),
            )
            .expect("builds")
        })
    });
    group.finish();
}

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
    targets = signature_verify, event_parse, record_build_delivery, names, rule_matching,
        job_building, handler_in_process, handler_pieces
}
criterion_main!(hot_path);
