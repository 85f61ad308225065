//! Exactly once through crashes, on a real API server: 400 events from 8 senders that retry whatever was
//! refused or got no answer (as App Store Connect would), while the operator process is SIGKILLed three
//! times and started again. Every event must end as one delivery with one Job, none failed.

use super::{NS, Operator, event, signed};
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use asc_webhook_operator::resources::WebhookDelivery;
use asc_webhook_operator::resources::delivery::Phase;

const EVENTS: usize = 400;
const SENDERS: usize = 8;
const KILLS: usize = 3;

async fn sender(first: usize, url: watch::Receiver<String>, accepted: Arc<AtomicUsize>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    for i in (first..EVENTS).step_by(SENDERS) {
        let (body, signature) = signed(event(&format!("crash-{i}")));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let base = url.borrow().clone();
            let sent = http
                .post(format!("{base}/hooks/{NS}/route-2"))
                .header(asc_webhook_operator::asc::signature::HEADER, &signature)
                .body(body.clone())
                .send()
                .await;
            if sent.is_ok_and(|r| matches!(r.status().as_u16(), 200 | 202)) {
                break;
            }
            assert!(Instant::now() < deadline, "event crash-{i} never accepted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        accepted.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs the burst with three SIGKILLs; panics unless every event is one delivery with one Job and no
/// delivery failed. The operator left running, and what was found.
pub async fn run(client: &Client, kubeconfig: &str, mut op: Operator) -> (Operator, String) {
    let (url_tx, url_rx) = watch::channel(op.url.clone());
    let accepted = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| tokio::spawn(sender(s, url_rx.clone(), accepted.clone())))
        .collect();
    for kill in 1..=KILLS {
        let at = kill * EVENTS / (KILLS + 1);
        while accepted.load(Ordering::SeqCst) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        op.kill();
        op = Operator::start(kubeconfig).await;
        url_tx.send_replace(op.url.clone());
    }
    for s in senders {
        s.await.expect("sender");
    }
    let deliveries: Api<WebhookDelivery> = Api::namespaced(client.clone(), NS);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    loop {
        let ours: Vec<WebhookDelivery> = deliveries
            .list(&ListParams::default().labels("asc.webhooks.dev/route=route-2"))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let with_job = ours
            .iter()
            .filter(|d| {
                d.status.as_ref().is_some_and(|s| {
                    !s.actions.is_empty() && s.actions.iter().all(|a| a.job_name.is_some())
                })
            })
            .count();
        if with_job == EVENTS || started.elapsed() > Duration::from_secs(120) {
            let events: HashSet<_> = ours.iter().map(|d| d.spec.event_id.clone()).collect();
            let failed = ours
                .iter()
                .filter(|d| d.status.as_ref().is_some_and(|s| s.phase == Phase::Failed))
                .count();
            let mut per_delivery: BTreeMap<String, usize> = BTreeMap::new();
            for job in jobs.list(&ListParams::default()).await.expect("Jobs").items {
                let labels = job.metadata.labels.unwrap_or_default();
                if let Some(d) = labels
                    .get("asc.webhooks.dev/delivery")
                    .filter(|d| d.starts_with("route-2-"))
                {
                    *per_delivery.entry(d.clone()).or_default() += 1;
                }
            }
            let doubled = per_delivery.values().filter(|n| **n != 1).count();
            let found = format!(
                "{} deliveries for {} events ({} distinct), {with_job} with their Job, {} Jobs for {} deliveries, {doubled} doubled, {failed} failed",
                ours.len(),
                EVENTS,
                events.len(),
                per_delivery.values().sum::<usize>(),
                per_delivery.len()
            );
            assert!(
                ours.len() == EVENTS
                    && events.len() == EVENTS
                    && with_job == EVENTS
                    && per_delivery.len() == EVENTS
                    && doubled == 0
                    && failed == 0,
                "exactly once broke: {found}"
            );
            return (op, found);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
