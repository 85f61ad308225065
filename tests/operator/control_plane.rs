//! A control plane that goes away and comes back, and an operator restarted on a long history: on the
//! fake API server with a real server's faults on (writes wait 5 ms as for etcd, an outage refuses
//! connections and drops the watch history, as a restarted kube-apiserver does).

use crate::harness::*;
use crate::world::World;
use asc_webhook_operator::resources::delivery::Phase;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A real server's write, as etcd with fsync on answers it on a fast disk.
const WRITE_LATENCY: Duration = Duration::from_millis(5);
/// The id of the fixture's event, replaced to make distinct events.
const FIXTURE_EVENT_ID: &str = "0b7d3c1e-4a2f-4e6b-9d8c-5f1a2b3c4d5e";

/// Event `n`: the `build-upload-complete` fixture under its own id, so each is a delivery of its own.
fn event(w: &World, n: u32) -> Vec<u8> {
    let body = String::from_utf8(fixture_for_mock("build-upload-complete", &w.asc)).unwrap();
    assert!(body.contains(FIXTURE_EVENT_ID), "the fixture's id changed");
    body.replace(
        FIXTURE_EVENT_ID,
        &format!("00000000-0000-4000-8000-{n:012}"),
    )
    .into_bytes()
}

/// Jobs owned by delivery `delivery`.
fn jobs_of(w: &World, delivery: &str) -> usize {
    jobs(&w.api)
        .iter()
        .filter(|j| {
            j.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "WebhookDelivery" && o.name == delivery)
        })
        .count()
}

async fn wait_job_of(w: &World, delivery: &str, within: Duration) {
    eventually(&format!("delivery {delivery} has its Job"), within, || {
        let n = jobs_of(w, delivery);
        async move { (n > 0).then_some(()) }
    })
    .await;
}

/// Log lines so far that say a watch failed (every wording this operator has used).
fn watch_failure_lines() -> usize {
    crate::logs::captured()
        .lines()
        .filter(|l| l.contains("watch interrupted") || l.contains("cannot watch"))
        .count()
}

/// The outage: a control-plane upgrade that takes its API server and etcd away for 20 s. Not
/// shortened: how long the operator's retries have backed off by the time the server is back is what
/// recovery depends on, and a shorter outage would hide a backoff that outgrows it.
const OUTAGE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_control_plane_outage_is_quiet_and_every_controller_works_within_seconds_of_its_return() {
    crate::logs::init();
    let w = World::example_on_fake("submit-after-processing", &["--leader-election"]).await;
    w.wait_route_ready().await;
    w.fake().set_write_latency(WRITE_LATENCY);
    let before = w.deliver(&event(&w, 1)).await;
    wait_job_of(&w, &before, Duration::from_secs(10)).await;

    let lines_before = watch_failure_lines();
    w.fake().begin_outage().await;
    let asked = Instant::now();
    let (status, answer) =
        w.op.post(&w.route_name(), &event(&w, 2), WEBHOOK_SECRET)
            .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the receiver says 503 at once while the API server is down: {:?}",
        asked.elapsed()
    );
    tokio::time::sleep(OUTAGE).await;
    let noise = watch_failure_lines() - lines_before;
    eprintln!("outage {OUTAGE:?}: {noise} watch-failure lines");

    w.fake().end_outage();
    let back = Instant::now();
    // The event refused during the outage comes again (Apple retries), and a new one arrives.
    let retried = w.deliver(&event(&w, 2)).await;
    let fresh = w.deliver(&event(&w, 3)).await;
    wait_job_of(&w, &retried, Duration::from_secs(30)).await;
    wait_job_of(&w, &fresh, Duration::from_secs(30)).await;
    let recovered = back.elapsed();
    // Every controller, not just the delivery's: the route controller counts the new deliveries.
    let route = w.route_name();
    eventually(
        "the route counts the deliveries",
        Duration::from_secs(30),
        || {
            let r = get_route(&w.api, &route);
            async move {
                let v = serde_json::to_value(&r.status).ok()?;
                let received = v.pointer("/deliveries/received").and_then(Value::as_i64);
                (received >= Some(3)).then_some(())
            }
        },
    )
    .await;
    let counted = back.elapsed();
    eprintln!("back after the outage → Jobs {recovered:?}, route counted {counted:?}");

    assert!(
        noise <= 40,
        "a 20 s outage logged {noise} watch-failure lines; a few per watch per minute are enough"
    );
    assert!(
        recovered <= Duration::from_secs(10),
        "new events became Jobs {recovered:?} after the API server was back"
    );
    assert!(
        counted <= Duration::from_secs(10),
        "the route controller caught up {counted:?} after the API server was back"
    );
    for d in [&before, &retried, &fresh] {
        assert_eq!(jobs_of(&w, d), 1, "delivery {d} ran once");
    }
    assert_eq!(
        deliveries(&w.api).len(),
        3,
        "nothing accepted was lost or doubled"
    );
    w.op.stop().await;
}

/// Reconciles so far of objects no longer in their controller's cache (logged at debug).
fn reconciles_of_gone_objects() -> usize {
    crate::logs::captured()
        .lines()
        .filter(|l| l.contains("object gone before its reconcile"))
        .count()
}

/// A finished delivery and its finished Job, copied as the `n`-th of a long history.
fn history_copy(delivery: &Value, job: &Value, n: usize) -> (Value, Value) {
    let name = format!("history-{n:05}");
    let mut d = delivery.clone();
    let mut j = job.clone();
    for obj in [&mut d, &mut j] {
        let meta = obj["metadata"].as_object_mut().unwrap();
        for gone in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
        ] {
            meta.remove(gone);
        }
        meta.insert("name".into(), Value::from(name.clone()));
    }
    d["spec"]["eventId"] = Value::from(format!("history-event-{n}"));
    if let Some(status) = d["status"].as_object_mut() {
        status.insert("jobName".into(), Value::from(name.clone()));
    }
    (d, j)
}

#[tokio::test]
async fn restarted_on_two_thousand_finished_deliveries_the_next_event_queues_behind_none_of_them() {
    let w = World::example_on_fake("submit-after-processing", &[]).await;
    w.wait_route_ready().await;
    let first = w.deliver(&event(&w, 1)).await;
    wait_job_of(&w, &first, Duration::from_secs(10)).await;
    let job_name = jobs(&w.api)[0].metadata.name.clone().unwrap();
    complete_job(&w.api, &job_name, true).await;
    w.wait_phase(&first, Phase::Succeeded).await;
    let World {
        api,
        asc,
        hooks,
        op,
        secret_values,
    } = w;
    op.stop().await;

    let fake = match &api {
        crate::cluster::TestCluster::Fake(f) => f,
        crate::cluster::TestCluster::Real(_) => unreachable!("example_on_fake"),
    };
    let delivery = fake.get_object("webhookdeliveries", NS, &first).unwrap();
    let job = fake.get_object("jobs", NS, &job_name).unwrap();
    for n in 0..2000 {
        let (d, mut j) = history_copy(&delivery, &job, n);
        let stored = fake.put_object("webhookdeliveries", d).unwrap();
        j["metadata"]["ownerReferences"][0]["name"] = stored["metadata"]["name"].clone();
        j["metadata"]["ownerReferences"][0]["uid"] = stored["metadata"]["uid"].clone();
        fake.put_object("jobs", j).unwrap();
    }
    fake.set_write_latency(WRITE_LATENCY);

    let gone_before = reconciles_of_gone_objects();
    let origin = origin_flags(&asc);
    let op = Operator::start(&api, &flags(&[], &origin)).await;
    let w = World {
        api,
        asc,
        hooks,
        op,
        secret_values,
    };
    w.op.wait_ready().await;
    let ready = Instant::now();
    let next = w.deliver(&event(&w, 2)).await;
    // What is asserted is what queued ahead of it, not how soon: a debug build listing 2,000 deliveries and
    // 2,000 Jobs on the one thread it shares with the fake API server takes half a minute on a loaded
    // 2-core machine.
    wait_job_of(&w, &next, Duration::from_secs(90)).await;
    let took = ready.elapsed();
    let queued_for_nothing = reconciles_of_gone_objects() - gone_before;
    assert!(
        queued_for_nothing < 100,
        "{queued_for_nothing} reconciles of finished deliveries were queued at start-up, ahead of the new \
         event (its Job came {took:?} after ready; a debug build sharing one thread with the fake API \
         server is no measure of speed: the 1 s goal is the release build's)"
    );
    w.op.stop().await;
}
