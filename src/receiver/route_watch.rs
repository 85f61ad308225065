//! The receiver's route table, fed by its own watch on every replica, and the replica's readiness that
//! follows from it: ready once the table synced, unready while routes cannot be read.

use super::admin::Readiness;
use super::routes::{RouteForReceiver, RouteTable};
use crate::metrics::Metrics;
use futures::StreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Starts the receiver's route table, fed by its own watch, and what makes the replica ready once it
/// synced.
pub fn start_route_table(
    client: &Client,
    namespace: Option<&str>,
    readiness: &Readiness,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Arc<RouteTable> {
    // Only what the receiver reads of each route is parsed (`RouteForReceiver`).
    let routes_api: Api<RouteForReceiver> = crate::watch_retry::api(client, namespace);
    let routes_probe = routes_api.clone();
    // The receiver's own table (not a reflector store): each route is prepared once as it arrives, and
    // lookups borrow the request's path.
    let routes = Arc::new(RouteTable::default());
    let route_stream = {
        let readiness = readiness.clone();
        let routes = routes.clone();
        // A watch that fails for want of CRDs or rights is shown by `/readyz` until it works again.
        let failed = {
            let readiness = readiness.clone();
            crate::watch_retry::reporter("receiver", "webhookroutes", metrics, move |problem| {
                if problem.needs_action() {
                    readiness.set_problem(problem.message().to_owned());
                }
            })
        };
        let events = watcher(
            routes_api,
            watcher::Config::default()
                .any_semantic()
                .page_size(crate::watch_retry::LIST_PAGE_SIZE),
        );
        crate::watch_retry::retrying(events, failed).for_each(move |event| {
            routes.apply(event);
            readiness.clear_problem();
            futures::future::ready(())
        })
    };
    tokio::spawn(route_stream);
    tokio::spawn(crate::watch_retry::probe_while_waiting(
        client.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(probe_while_unready(
        routes_probe,
        readiness.clone(),
        shutdown.clone(),
    ));
    {
        let routes = routes.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            routes.wait_until_ready().await;
            tracing::info!(routes = routes.len(), "route store synced");
            readiness.set_ready();
            crate::memory::release_free_memory();
        });
    }
    routes
}

/// How often an unready replica checks whether it may read routes again.
const UNREADY_PROBE: Duration = Duration::from_secs(2);

/// A route watch that failed for want of rights resumes without any event when nothing changed
/// meanwhile (a resumed watch sends only changes), so its success alone would leave the replica unready
/// until some route changes. While a problem is recorded, a LIST of one route every
/// [`UNREADY_PROBE`] tells when the rights are back. Nothing is requested while ready.
async fn probe_while_unready(
    routes: Api<RouteForReceiver>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let one = kube::api::ListParams::default().limit(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(UNREADY_PROBE) => {}
            () = shutdown.cancelled() => return,
        }
        if readiness.has_problem() && routes.list_metadata(&one).await.is_ok() {
            tracing::info!("routes readable again; ready");
            readiness.clear_problem();
        }
    }
}
