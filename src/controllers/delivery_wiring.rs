//! The delivery controller's wiring for one term: the cache of unfinished deliveries, the Job events
//! that may wake one, and the controller over both.

use super::{
    Context, Process, controller_config, delivery, error_policy, instrumented, report,
    shared_watch, slim_cache, watch_reporter,
};
use crate::resources::names::{LABEL_FINISHED, LABEL_MANAGED_BY, MANAGED_BY};
use crate::resources::{WebhookDelivery, WebhookRoute};
use crate::watch_retry::{LIST_PAGE_SIZE, api, retrying};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use std::future::Future;
use std::sync::Arc;

/// The watch of managed Jobs. Every Job event (deletions included) is remembered before it triggers
/// its delivery, so the outcome of a Job that finished and was then removed by its TTL is still known.
fn job_events(
    ctx: &Arc<Context>,
    ns: Option<&str>,
) -> impl futures::Stream<Item = Result<Job, watcher::Error>> + Send + use<> {
    let jobs_cfg = watcher::Config::default()
        .labels(&format!("{LABEL_MANAGED_BY}={MANAGED_BY}"))
        .page_size(LIST_PAGE_SIZE);
    let job_ctx = ctx.clone();
    retrying(
        watcher(api::<Job>(&ctx.client, ns), jobs_cfg),
        watch_reporter("delivery", "jobs", &ctx.metrics),
    )
    .inspect(move |e| match e {
        watcher::Event::Apply(j) | watcher::Event::InitApply(j) => {
            job_ctx.job_facts.remember(j, false)
        }
        watcher::Event::Delete(j) => job_ctx.job_facts.remember(j, true),
        _ => {}
    })
    .map(Ok)
    .touched_objects()
}

/// Whether `job`'s owning delivery is in `unfinished` (the cache of unfinished deliveries).
fn owner_is_unfinished(unfinished: &Store<WebhookDelivery>, job: &Job) -> bool {
    let namespace = job.namespace().unwrap_or_default();
    job.owner_references().iter().any(|o| {
        o.kind == "WebhookDelivery"
            && unfinished
                .get(&ObjectRef::new(&o.name).within(&namespace))
                .is_some()
    })
}

/// The delivery cache (unfinished deliveries only); apart from `run` so `run` reads as the watches and
/// the controllers they feed.
pub(super) fn delivery_cache(
    process: &Process,
    ns: Option<&str>,
) -> (
    Store<WebhookDelivery>,
    impl futures::Stream<Item = Result<WebhookDelivery, watcher::Error>> + Send + use<>,
) {
    // Only unfinished deliveries: finished ones are labelled and leave the cache.
    let unfinished = watcher::Config::default()
        .any_semantic()
        .labels(&format!("!{LABEL_FINISHED}"));
    slim_cache(
        api::<WebhookDelivery>(&process.client, ns),
        unfinished,
        delivery::suspend::scheduling_copy,
        watch_reporter("delivery", "webhookdeliveries", &process.metrics),
    )
}

/// The Job events that may wake a delivery.
fn job_wakeups(
    ctx: &Arc<Context>,
    ns: Option<&str>,
) -> impl futures::Stream<Item = Result<Job, watcher::Error>> + Send + use<> {
    // A Job wakes its delivery only while that delivery is unfinished (in the cache): at start-up every
    // Job of a long history arrives at once, and their finished deliveries must not queue ahead of new
    // work. An unfinished delivery not cached yet loses nothing: its own arrival wakes it.
    let unfinished_owners = ctx.stores.unfinished.clone();
    futures::TryStreamExt::try_filter(job_events(ctx, ns), move |job| {
        futures::future::ready(owner_is_unfinished(&unfinished_owners, job))
    })
}

/// The delivery controller, woken by its deliveries, their Jobs, objects of resource actions and spec
/// changes of routes; apart from `run` for the same reason.
fn delivery_controller<S>(
    ctx: &Arc<Context>,
    delivery_stream: impl futures::Stream<Item = Result<WebhookDelivery, watcher::Error>>
    + Send
    + 'static,
    job_events: impl futures::Stream<Item = Result<Job, watcher::Error>> + Send + 'static,
    route_changes: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    woken: impl futures::Stream<Item = ObjectRef<WebhookDelivery>> + Send + 'static,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    // A route's spec change (resuming it, above all) looks again at the deliveries it holds. Status
    // writes do not bump the generation, so the route controller's own writes trigger nothing here.
    let delivery_store = ctx.stores.unfinished.clone();
    let held = delivery_store.clone();
    let mut spec_changed = shared_watch::generation_changed::<WebhookRoute>();
    let route_changes = route_changes.filter(move |r| futures::future::ready(spec_changed(r)));
    // A delivery's own status writes wake no pass (see `delivery::wakes_on`).
    let delivery_stream =
        delivery_stream.predicate_filter(delivery::wakes_on, PredicateConfig::default());
    let deliveries = Controller::for_stream(delivery_stream, delivery_store)
        .owns_stream(job_events)
        .reconcile_on(woken)
        .watches_shared_stream(route_changes, move |route| {
            delivery::suspend::held_of_route(&route, held.state().iter().map(|d| d.as_ref()))
        })
        .with_config(controller_config(ctx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |d, c| instrumented(d, c, "delivery", delivery::reconcile),
            error_policy,
            ctx.clone(),
        );
    Box::pin(report(deliveries, "delivery", ctx.metrics.clone(), None))
}

/// The delivery controller of one term with what wakes it: the Jobs of unfinished deliveries, the objects
/// of resource actions (one metadata watch per kind in use, started as routes name kinds) and the routes'
/// spec changes.
pub(super) fn deliveries_of_term<S>(
    ctx: &Arc<Context>,
    namespace: Option<String>,
    delivery_stream: impl futures::Stream<Item = Result<WebhookDelivery, watcher::Error>>
    + Send
    + 'static,
    route_changes: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let (wakeups, woken) = futures::channel::mpsc::channel(1024);
    let job_events = job_wakeups(ctx, namespace.as_deref());
    ctx.resource_kinds
        .start(ctx.client.clone(), namespace, wakeups, ctx.metrics.clone());
    delivery_controller(
        ctx,
        delivery_stream,
        job_events,
        route_changes,
        woken,
        shutdown,
    )
}
