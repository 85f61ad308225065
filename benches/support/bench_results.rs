//! The control-plane benchmark's results table.

use super::{BURST, IN_FLIGHT, ROUTES, latency_events, quantiles};
use hdrhistogram::Histogram;
use std::time::Duration;

/// What a run measured; `None` where a knob left the phase out.
#[derive(Default)]
pub struct Results {
    pub one_create: Option<Histogram<u64>>,
    pub bare_rate: Option<f64>,
    pub pipeline: Option<(Histogram<u64>, f64)>,
    pub latency: Option<Histogram<u64>>,
    pub one_rule: Option<f64>,
    pub spread: Option<f64>,
    pub restart: Option<(usize, Duration)>,
    pub tables: Vec<String>,
}

impl Results {
    pub fn print(&self) {
        let row = |what: String, value: Option<String>| {
            if let Some(v) = value {
                println!("| {what} | {v} |");
            }
        };
        let rate = |r: &Option<f64>, unit: &str| r.map(|r| format!("{r:.0} {unit}"));
        println!("control_plane (real API server from E2E_KUBECONFIG)");
        println!("| measure | value |\n|---|---|");
        row(
            "bare client: one small create, p50 / p99".into(),
            self.one_create.as_ref().map(quantiles),
        );
        row(
            format!("bare client: {BURST} Jobs, {IN_FLIGHT} in flight"),
            rate(&self.bare_rate, "Jobs/s"),
        );
        if let Some((latency, rate)) = &self.pipeline {
            row(
                "bare client, what exactly-once needs: delivery create → Job create, p50 / p99 (one at a time)".into(),
                Some(quantiles(latency)),
            );
            row(
                format!(
                    "bare client, what exactly-once needs: {BURST} events × 3 writes, {IN_FLIGHT} in flight"
                ),
                Some(format!("{rate:.0} events/s")),
            );
        }
        row(
            format!(
                "signed POST → Job exists, p50 / p99 ({} one at a time)",
                latency_events()
            ),
            self.latency.as_ref().map(quantiles),
        );
        row(
            format!("burst of {BURST} events to one Job rule, {IN_FLIGHT} senders"),
            rate(&self.one_rule, "Jobs/s"),
        );
        row(
            format!("burst of {BURST} events over {ROUTES} routes"),
            rate(&self.spread, "Jobs/s"),
        );
        if let Some((history, took)) = self.restart {
            row(
                format!("restart with {history} finished deliveries: next event → Job after ready"),
                Some(format!("{:.0} ms", took.as_secs_f64() * 1000.0)),
            );
        }
        for table in &self.tables {
            println!("\n{table}");
        }
    }
}
