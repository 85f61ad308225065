//! The controllers: deliveries into work, routes and credentials into truthful status. They run on the
//! leader only; the receiver runs on every replica.

pub mod asc_webhook;
pub mod context;
pub mod credential;
pub mod delivery;
pub mod delivery_index;
pub mod error;
pub mod impersonation;
pub mod matching;
pub mod resource_kinds;
pub mod route;
pub mod route_status;
pub mod seen;
pub mod shared_watch;
mod status;
pub mod throttle;

pub use context::{Context, Process, Settings, Stores};
pub use error::Error;

use crate::metrics::{ControllerLabels, Metrics, ReconcileLabels, WatchLabels};
use crate::resources::names::{
    ANNOTATION_LAST_APPLIED, LABEL_FINISHED, LABEL_MANAGED_BY, MANAGED_BY,
};
use crate::resources::{AscCredential, WebhookDelivery, WebhookRoute};
use crate::watch_retry::{Admit, LogLimit, retrying};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Wraps a reconciler with metrics and failure bookkeeping.
async fn instrumented<K, F, Fut>(
    obj: Arc<K>,
    ctx: Arc<Context>,
    controller: &'static str,
    f: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let started = Instant::now();
    let k = key(obj.as_ref());
    let result = f(obj, ctx.clone()).await;
    crate::memory::note_work();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&ControllerLabels { controller })
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            controller,
            result: label,
        })
        .inc();
    if result.is_ok() {
        ctx.backoffs.succeeded(&k);
    }
    result
}

fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoffs.failed(&key(obj.as_ref()));
    tracing::warn!(object = %key(obj.as_ref()), error = %crate::controllers::credential::error_chain(error), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Bounded concurrency: each reconcile holds API connections, and a burst (1,000 routes at start-up)
/// must not open a connection per object.
fn controller_config(ctx: &Context) -> controller::Config {
    controller::Config::default().concurrency(ctx.settings.max_concurrent_reconciles)
}

/// Objects per page of a watch's initial list (kube's default is 500): every page arrives as one body and
/// is parsed in full before the caches keep their slim copies, so a smaller page lowers the transient peak
/// of start-up and of every re-list, for a few more requests then.
pub const LIST_PAGE_SIZE: u32 = 100;

/// A controller's own cache, without what reconciles never read: `managedFields` (trees as large as the
/// object once server-side apply writes status) and kubectl's last-applied copy of the whole object.
fn slim_cache<K>(
    api: Api<K>,
    config: watcher::Config,
    mut slim: impl FnMut(&mut K) + Send + 'static,
    report: impl FnMut(&watcher::Error) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, config.page_size(LIST_PAGE_SIZE)).modify(move |obj: &mut K| {
        let meta = obj.meta_mut();
        meta.managed_fields = None;
        if let Some(a) = meta.annotations.as_mut() {
            a.remove(ANNOTATION_LAST_APPLIED);
        }
        slim(obj);
    });
    let stream = reflector(writer, retrying(events, report)).applied_objects();
    (reader, stream)
}

/// Logs and counts what a controller's stream yields besides successful reconciles: watch errors
/// (with what to do about missing CRDs or RBAC) and runner errors. Failed reconciles are logged by
/// `error_policy` already.
async fn report<K, S>(stream: S, controller: &'static str, watched: &'static str, metrics: Metrics)
where
    K: Resource,
    S: futures::Stream<
            Item = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>,
        >,
{
    let mut limit = LogLimit::default();
    stream
        .for_each(|result| {
            match result {
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(%obj, controller, "object gone before its reconcile")
                }
                Err(controller::Error::QueueError(e)) => {
                    watch_failed(controller, watched, &e, &metrics, &mut limit)
                }
                Err(e) => {
                    metrics
                        .watch_errors
                        .get_or_create(&WatchLabels { stream: controller })
                        .inc();
                    tracing::error!(controller, error = %e, "controller runner failed");
                }
            }
            futures::future::ready(())
        })
        .await;
}

/// What one watch does with its errors: counts each, and logs a few a minute (with the count of those
/// left out), at error with what to do when a person has to act.
fn watch_reporter(
    controller: &'static str,
    watched: &'static str,
    metrics: &Metrics,
) -> impl FnMut(&watcher::Error) + Send + use<> {
    let metrics = metrics.clone();
    let mut limit = LogLimit::default();
    move |e| watch_failed(controller, watched, e, &metrics, &mut limit)
}

fn watch_failed(
    controller: &'static str,
    watched: &str,
    e: &watcher::Error,
    metrics: &Metrics,
    limit: &mut LogLimit,
) {
    metrics
        .watch_errors
        .get_or_create(&WatchLabels { stream: controller })
        .inc();
    let Admit::Log { suppressed } = limit.admit(std::time::Instant::now()) else {
        return;
    };
    let problem = crate::diagnose::watch_problem(watched, e);
    if problem.needs_action() {
        tracing::error!(
            controller,
            watched,
            problem = problem.message(),
            suppressed,
            "controller cannot watch its resources"
        );
    } else {
        tracing::warn!(controller, watched, error = %e, suppressed, "controller watch interrupted; retrying with backoff");
    }
}

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
        Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => {
            job_ctx.job_facts.remember(j, false)
        }
        Ok(watcher::Event::Delete(j)) => job_ctx.job_facts.remember(j, true),
        _ => {}
    })
    .touched_objects()
}

/// How often at most deliveries' changes wake their route's reconcile (its status write).
const ROUTE_STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The route controller: each route's readiness, counts and pruning, woken by its deliveries (one watch
/// of every delivery feeds the index it counts from) and by the credentials it names.
fn route_controller<S>(
    ctx: &Arc<Context>,
    ns: Option<&str>,
    routes_to_status: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    credential_events: impl futures::Stream<Item = Result<AscCredential, watcher::Error>>
    + Send
    + 'static,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = ctx.client.clone();
    let route_store = ctx.stores.routes.clone();
    let route_controller = Controller::for_shared_stream(routes_to_status, route_store.clone());
    // One watch of every delivery feeds the index the route controller counts from, and says which
    // route to look at again: no LIST per reconcile.
    let delivery_events = retrying(
        watcher(
            api::<WebhookDelivery>(&client, ns),
            watcher::Config::default()
                .any_semantic()
                .page_size(LIST_PAGE_SIZE),
        ),
        watch_reporter("route", "webhookdeliveries", &ctx.metrics),
    );
    // A route's status is written at most once a second for its deliveries' changes, not once per change.
    let route_triggers = throttle::per_key(
        ctx.deliveries.clone().follow(delivery_events),
        ROUTE_STATUS_EVERY,
    );
    // Route and credential conditions are exported from these caches while the controllers run.
    let state_metrics = ctx
        .metrics
        .state
        .export_from(route_store.clone(), ctx.stores.credentials.clone());
    let routes = route_controller
        .reconcile_on(route_triggers)
        .watches_stream(credential_events, move |cred| {
            let cred_ns = cred.namespace();
            let cred_name = cred.name_any();
            route_store
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace() == cred_ns
                        && r.spec
                            .credential_ref
                            .as_ref()
                            .is_some_and(|c| c.name == cred_name)
                })
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        })
        .with_config(controller_config(ctx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |r, c| instrumented(r, c, "route", route::reconcile),
            error_policy,
            ctx.clone(),
        );
    let routes = report(
        routes,
        "route",
        "webhookroutes (or webhookdeliveries, asccredentials)",
        ctx.metrics.clone(),
    );
    Box::pin(async move {
        routes.await;
        drop(state_metrics);
    })
}

/// The credential controller: each credential's key and its verification against App Store Connect.
fn credential_controller<S>(
    ctx: &Arc<Context>,
    ns: Option<&str>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    let client = ctx.client.clone();
    let (credential_store, credential_stream) = slim_cache(
        api::<AscCredential>(&client, ns),
        watcher::Config::default().any_semantic(),
        |_| {},
        watch_reporter("credential", "asccredentials", &ctx.metrics),
    );
    let credentials = Controller::for_stream(credential_stream, credential_store)
        .with_config(controller_config(ctx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |c, x| instrumented(c, x, "credential", credential::reconcile),
            error_policy,
            ctx.clone(),
        );
    Box::pin(report(
        credentials,
        "credential",
        "asccredentials",
        ctx.metrics.clone(),
    ))
}

/// The App Store Connect webhook controller over the shared routes.
fn webhook_controller<S>(
    ctx: &Arc<Context>,
    routes_to_register: futures::channel::mpsc::Receiver<Arc<WebhookRoute>>,
    webhook_store: Store<WebhookRoute>,
    shutdown: S,
) -> futures::future::BoxFuture<'static, ()>
where
    S: Future<Output = ()> + Send + Sync + Clone + 'static,
{
    // Its own controller and queue over the shared routes: it runs on a different schedule (slow App Store
    // Connect re-reads) and must not wait behind the route controller's delivery-driven reconciles.
    // Once the receiver is ready again after a problem, Apple's deliveries meanwhile may have failed:
    // every route makes a catch-up pass at once instead of at its next interval.
    let recovered = ctx.ready_again().map(|rx| {
        let ctx = ctx.clone();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
        .map(move |()| {
            tracing::info!("receiver ready again: catching up every route");
            ctx.caught_up.forget_all();
        })
        .boxed()
    });
    let routes_to_register =
        routes_to_register.filter(|r| futures::future::ready(asc_webhook::state::concerns(r)));
    let webhooks = Controller::for_shared_stream(routes_to_register, webhook_store)
        .reconcile_all_on(recovered.unwrap_or_else(|| futures::stream::pending().boxed()))
        .with_config(controller_config(ctx))
        .graceful_shutdown_on(shutdown.clone())
        .run(
            |r, c| instrumented(r, c, "app-store-connect-webhook", asc_webhook::reconcile),
            error_policy,
            ctx.clone(),
        );
    Box::pin(report(
        webhooks,
        "app-store-connect-webhook",
        "webhookroutes",
        ctx.metrics.clone(),
    ))
}

/// Waits for the controllers to stop, or drops them a grace period after shutdown.
async fn stop_with(
    controllers: impl Future<Output = ()>,
    route_watch: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) {
    // A controller whose store never synced (its CRD is missing) waits for that store even after
    // shutdown; a pod must still stop, so after a grace period the controllers are dropped, which
    // cancels whatever they still run.
    let stopped = async {
        // The shared route watch runs as long as the controllers it feeds.
        tokio::pin!(controllers);
        tokio::select! {
            () = &mut controllers => {}
            () = route_watch => controllers.await,
        }
    };
    let overdue = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = stopped => {}
        () = overdue => tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time after shutdown; dropping them"),
    }
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
fn delivery_cache(
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
    Box::pin(report(
        deliveries,
        "delivery",
        "webhookdeliveries (or Jobs)",
        ctx.metrics.clone(),
    ))
}

/// Time the controllers get to finish running reconciles once shutdown is requested.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs the four controllers for one leadership term, until `shutdown` resolves. The term's stores,
/// index and memories are built here and dropped when it ends: only `process` outlives the term.
pub async fn run(
    process: Arc<Process>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = process.client.clone();
    let ns = namespace.as_deref();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));

    let (delivery_store, delivery_stream) = delivery_cache(&process, ns);
    // One watch and one cache of routes for the three controllers that follow them.
    let (route_store, route_stream) = slim_cache(
        api::<WebhookRoute>(&client, ns),
        watcher::Config::default().any_semantic(),
        |_| {},
        watch_reporter("route", "webhookroutes", &process.metrics),
    );
    // `retrying` took the errors already: none reach the fan-out.
    let (route_watch, [route_changes, routes_to_status, routes_to_register]) =
        shared_watch::fan_out(route_stream, |_: &watcher::Error| {});
    let (credential_store, credential_events) = slim_cache(
        api::<AscCredential>(&client, ns),
        watcher::Config::default().any_semantic(),
        |_| {},
        watch_reporter("route", "asccredentials", &process.metrics),
    );
    let stores = Stores {
        credentials: credential_store,
        routes: route_store,
        unfinished: delivery_store,
    };
    let ctx = Arc::new(Context::for_term(process, stores));

    // Objects of resource actions: one metadata watch per kind in use, started as routes name kinds.
    let (wakeups, woken) = futures::channel::mpsc::channel(1024);
    ctx.resource_kinds.start(
        client.clone(),
        namespace.clone(),
        wakeups,
        ctx.metrics.clone(),
    );
    let job_events = job_wakeups(&ctx, ns);
    let deliveries = delivery_controller(
        &ctx,
        delivery_stream,
        job_events,
        route_changes,
        woken,
        shutdown.clone(),
    );

    let routes = route_controller(
        &ctx,
        ns,
        routes_to_status,
        credential_events,
        shutdown.clone(),
    );

    let credentials = credential_controller(&ctx, ns, shutdown.clone());

    let webhooks = webhook_controller(
        &ctx,
        routes_to_register,
        ctx.stores.routes.clone(),
        shutdown.clone(),
    );

    let controllers = async {
        tokio::join!(deliveries, routes, credentials, webhooks);
    };
    stop_with(controllers, route_watch, shutdown).await;
    ctx.resource_kinds.stop();
}
