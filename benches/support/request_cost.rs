//! What each delivery costs the API server, from its own `apiserver_request_total`: the requests to the
//! resources a delivery touches, per verb, refusals apart by code.

use super::request_total::samples;
use kube::Client;
use std::collections::BTreeMap;

pub type Counts = BTreeMap<String, f64>;

/// `apiserver_request_total` summed per `VERB resource[/subresource]`, for the resources a delivery
/// costs.
pub async fn request_counts(client: &Client) -> Counts {
    let req = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("request");
    let text = client.request_text(req).await.expect("GET /metrics");
    let mut counts = Counts::new();
    for sample in samples(&text) {
        let (verb, resource) = (sample.label("verb"), sample.resource());
        let counted = matches!(
            resource.split('/').next().unwrap_or_default(),
            "webhookdeliveries" | "webhookroutes" | "jobs" | "events"
        );
        if !counted || verb == "WATCH" || resource == "jobs/status" {
            continue;
        }
        let mut what = format!("{verb} {resource}");
        // Refusals apart (a 409 is a write the server fenced off or found done already).
        let code = sample.label("code");
        if !code.starts_with('2') {
            what += &format!(" ({code})");
        }
        *counts.entry(what).or_default() += sample.value;
    }
    counts
}

pub fn per_delivery(before: &Counts, after: &Counts, deliveries: usize) -> String {
    let mut out = String::from("| request | per delivery |\n|---|---|\n");
    let (mut writes, mut reads) = (0.0, 0.0);
    for (what, n) in after {
        let d = n - before.get(what).copied().unwrap_or(0.0);
        if d <= 0.0 {
            continue;
        }
        let per = d / deliveries.max(1) as f64;
        if what.starts_with("GET ") || what.starts_with("LIST ") {
            reads += per;
        } else {
            writes += per;
        }
        out += &format!("| {what} | {per:.2} |\n");
    }
    out += &format!("| **writes / reads** | **{writes:.2} / {reads:.2}** |\n");
    out
}
