//! Exactly once through crashes in a burst: the operator process is SIGKILLed three times while 400
//! events arrive, and senders retry what was refused (as App Store Connect retries a delivery that got
//! no answer). Every event ends as one delivery with one Job, none doubled, none failed.

use crate::harness::*;
use asc_webhook_operator::resources::delivery::Phase;
use asc_webhook_operator::resources::names::LABEL_DELIVERY;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const EVENTS: usize = 400;
const SENDERS: usize = 8;
const KILLS: usize = 3;

const JOB_RULE: &str = "    - name: build\n      match: {eventTypes: [BUILD_UPLOAD_STATE_UPDATED]}\n      enrich: Never\n      job:\n        template:\n          spec:\n            template:\n              spec:\n                restartPolicy: Never\n                containers: [{name: run, image: busybox}]\n";

fn event(i: usize) -> Vec<u8> {
    format!(
        r#"{{"data":{{"type":"buildUploadStateUpdated","id":"crash-{i}","attributes":{{"oldState":"PROCESSING","newState":"COMPLETE"}}}}}}"#
    )
    .into_bytes()
}

/// Sends its share of the events one after another to whichever operator runs now, each until it is
/// accepted (202) or known (200); a refused connection or a 5xx is tried again, as Apple does.
async fn sender(first: usize, url: watch::Receiver<String>, accepted: Arc<AtomicUsize>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in (first..EVENTS).step_by(SENDERS) {
        let body = event(i);
        let signature =
            asc_webhook_operator::asc::signature::sign(WEBHOOK_SECRET.as_bytes(), &body);
        loop {
            let base = url.borrow().clone();
            let sent = client
                .post(format!("{base}/hooks/{NS}/r"))
                .header(asc_webhook_operator::asc::signature::HEADER, &signature)
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 202)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        accepted.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sigkills_during_a_burst_of_400_events_leave_one_delivery_and_one_job_each() {
    let api = fake_api().await;
    put_secret(&api, "hook-secret", &[("secret", WEBHOOK_SECRET)]).await;
    // Every finished delivery kept, so the end can count them.
    route_with(&api, "r", JOB_RULE, "  deliveryHistoryLimit: 1000\n").await;
    let dir = tempfile::tempdir().unwrap();
    let mut op = Process::start(&api, dir.path(), &[]).await;
    wait_route_ready(&api, "r").await;
    let (url_tx, url_rx) = watch::channel(op.url.clone());
    let accepted = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(s, url_rx.clone(), accepted.clone())))
        .collect();
    for kill in 1..=KILLS {
        let at = kill * EVENTS / (KILLS + 1);
        eventually("the burst gets that far", Duration::from_secs(60), || {
            let n = accepted.load(Ordering::SeqCst);
            async move { (n >= at).then_some(()) }
        })
        .await;
        op.kill().await;
        op = Process::start(&api, dir.path(), &[]).await;
        url_tx.send_replace(op.url.clone());
    }
    for s in senders {
        s.await.unwrap();
    }

    let ran = |api: &testkit::apiserver::FakeApiServer| {
        deliveries(api)
            .iter()
            .filter(|d| {
                d.status.as_ref().is_some_and(|s| {
                    s.phase == Phase::Running && s.actions.iter().all(|a| a.job_name.is_some())
                })
            })
            .count()
    };
    eventually(
        "every delivery records its Job",
        Duration::from_secs(90),
        || {
            let n = ran(&api);
            async move { (n == EVENTS).then_some(()) }
        },
    )
    .await;
    let all = deliveries(&api);
    assert_eq!(all.len(), EVENTS, "one delivery per event");
    let events: HashSet<_> = all.iter().map(|d| d.spec.event_id.clone()).collect();
    assert_eq!(events.len(), EVENTS, "no event twice");
    let mut jobs_per_delivery: BTreeMap<String, usize> = BTreeMap::new();
    for job in jobs(&api) {
        let labels = job.metadata.labels.unwrap_or_default();
        *jobs_per_delivery
            .entry(labels.get(LABEL_DELIVERY).cloned().unwrap_or_default())
            .or_default() += 1;
    }
    let doubled: Vec<_> = jobs_per_delivery.iter().filter(|(_, n)| **n != 1).collect();
    assert!(doubled.is_empty(), "Jobs doubled: {doubled:?}");
    assert_eq!(jobs_per_delivery.len(), EVENTS, "one Job per delivery");
    for d in &all {
        let recorded = d.status.as_ref().and_then(|s| s.actions.first());
        let job = recorded
            .and_then(|a| a.job_name.as_deref())
            .unwrap_or_default();
        complete_job(&api, job, true).await;
    }
    eventually("every delivery succeeds", Duration::from_secs(90), || {
        let phases: Vec<_> = deliveries(&api)
            .into_iter()
            .map(|d| d.status.map(|s| s.phase))
            .collect();
        async move {
            let failed = phases.iter().filter(|p| **p == Some(Phase::Failed)).count();
            assert_eq!(failed, 0, "no delivery failed");
            phases
                .iter()
                .all(|p| *p == Some(Phase::Succeeded))
                .then_some(())
        }
    })
    .await;
    assert_eq!(deliveries(&api).len(), EVENTS);
    assert_eq!(jobs(&api).len(), EVENTS);
    op.kill().await;
}
